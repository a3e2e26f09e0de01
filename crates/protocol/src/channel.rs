//! Channel names: segments joined by `:`, each 1-64 of `[A-Za-z0-9_@=+-]`, at most 200
//! bytes in all. The first segment is the namespace. A name maps 1:1 to a NATS subject
//! (`org:acme:ch:general` → `herald.node.org.acme.ch.general`), which is why `.`, `*`, `>` and
//! whitespace are not allowed.

use std::{fmt, sync::Arc};

/// Longest channel name, in bytes.
pub const MAX_CHANNEL_BYTES: usize = 200;
/// Longest segment, in bytes.
pub const MAX_SEGMENT_BYTES: usize = 64;

/// A validated channel name. Cheap to clone: the string is shared.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelName(Arc<str>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    #[error("channel name is empty")]
    Empty,
    #[error("channel name is longer than {MAX_CHANNEL_BYTES} bytes")]
    TooLong,
    #[error("channel segment {0} is empty or longer than {MAX_SEGMENT_BYTES} bytes")]
    BadSegmentLength(usize),
    #[error("channel segment {0} has a character outside [A-Za-z0-9_@=+-]")]
    BadCharacter(usize),
}

impl ChannelName {
    pub fn parse(name: &str) -> Result<Self, ChannelError> {
        validate(name)?;
        Ok(Self(Arc::from(name)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first segment: `org` for `org:acme:ch:general`.
    pub fn namespace(&self) -> &str {
        self.segments().next().unwrap_or_default()
    }

    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split(':')
    }

    /// The NATS subject of this channel under `prefix` (tokens joined by `.`, no trailing
    /// dot): `herald.node` and `org:acme:ch:general` give `herald.node.org.acme.ch.general`.
    pub fn subject(&self, prefix: &str) -> String {
        let mut subject = String::with_capacity(prefix.len() + 1 + self.0.len());
        subject.push_str(prefix);
        subject.push('.');
        subject.extend(self.0.chars().map(|c| if c == ':' { '.' } else { c }));
        subject
    }
}

fn validate(name: &str) -> Result<(), ChannelError> {
    if name.is_empty() {
        return Err(ChannelError::Empty);
    }
    if name.len() > MAX_CHANNEL_BYTES {
        return Err(ChannelError::TooLong);
    }
    for (index, segment) in name.split(':').enumerate() {
        if segment.is_empty() || segment.len() > MAX_SEGMENT_BYTES {
            return Err(ChannelError::BadSegmentLength(index));
        }
        if !segment.bytes().all(is_segment_byte) {
            return Err(ChannelError::BadCharacter(index));
        }
    }
    Ok(())
}

fn is_segment_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'@' | b'=' | b'+' | b'-')
}

impl fmt::Display for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

impl serde::Serialize for ChannelName {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl std::str::FromStr for ChannelName {
    type Err = ChannelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_names() {
        for name in [
            "public:lobby",
            "user:alice@example",
            "org:acme:ch:general",
            "a",
            "x:A-b_c=d+e",
        ] {
            assert!(ChannelName::parse(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn rejects_invalid_names() {
        assert_eq!(ChannelName::parse(""), Err(ChannelError::Empty));
        assert_eq!(
            ChannelName::parse("org::x"),
            Err(ChannelError::BadSegmentLength(1))
        );
        assert_eq!(
            ChannelName::parse("org:"),
            Err(ChannelError::BadSegmentLength(1))
        );
        assert_eq!(
            ChannelName::parse("org:a.b"),
            Err(ChannelError::BadCharacter(1))
        );
        assert_eq!(
            ChannelName::parse("org:*"),
            Err(ChannelError::BadCharacter(1))
        );
        assert_eq!(
            ChannelName::parse("org:>"),
            Err(ChannelError::BadCharacter(1))
        );
        assert_eq!(
            ChannelName::parse("org:a b"),
            Err(ChannelError::BadCharacter(1))
        );
        assert_eq!(
            ChannelName::parse("org:é"),
            Err(ChannelError::BadCharacter(1))
        );
        let long_segment = "a".repeat(65);
        assert_eq!(
            ChannelName::parse(&long_segment),
            Err(ChannelError::BadSegmentLength(0))
        );
        let long_name = vec!["abcdefghij"; 20].join(":");
        assert_eq!(ChannelName::parse(&long_name), Err(ChannelError::TooLong));
    }

    #[test]
    fn maps_to_nats_subject() {
        let channel = ChannelName::parse("org:acme:ch:general").unwrap();
        assert_eq!(
            channel.subject("herald.node"),
            "herald.node.org.acme.ch.general"
        );
        assert_eq!(channel.namespace(), "org");
    }
}
