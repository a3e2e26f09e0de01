//! A publication: one event on one channel, as stored in history and delivered to clients.

use std::sync::Arc;

use serde::Serialize;
use serde_json::value::RawValue;

use crate::channel::ChannelName;

/// One event on one channel. Cheap to clone; every field is shared.
///
/// Serializes as the `pub` object of the protocol: `data` is the published JSON value
/// itself, written verbatim; `offset`/`epoch` are omitted on channels without history and
/// `from` on server publishes, as proto3's JSON mapping omits defaults.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export_to = "wire.ts"))]
pub struct Publication {
    #[serde(skip)]
    pub channel: ChannelName,
    pub event: Arc<str>,
    #[cfg_attr(test, ts(type = "unknown"))]
    pub data: Arc<RawValue>,
    #[serde(skip_serializing_if = "is_zero")]
    #[cfg_attr(test, ts(as = "Option<u64>", optional))]
    pub offset: u64,
    #[serde(skip_serializing_if = "str::is_empty")]
    #[cfg_attr(test, ts(as = "Option<Arc<str>>", optional))]
    pub epoch: Arc<str>,
    /// Server time of the publish, Unix milliseconds.
    pub ts: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional))]
    pub from: Option<Arc<str>>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Longest event name, in characters.
pub const MAX_EVENT_CHARS: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("event must be 1-{MAX_EVENT_CHARS} characters")]
    Length,
    #[error("event must not contain control characters")]
    Control,
}

/// Checks an event name: 1-64 characters, no control characters.
pub fn validate_event(event: &str) -> Result<(), EventError> {
    let chars = event.chars().count();
    if chars == 0 || chars > MAX_EVENT_CHARS {
        return Err(EventError::Length);
    }
    if event.chars().any(char::is_control) {
        return Err(EventError::Control);
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DataError {
    #[error("data is larger than {0} bytes")]
    TooLarge(usize),
    #[error("data is not valid UTF-8")]
    NotUtf8,
    #[error("data is not valid JSON: {0}")]
    NotJson(String),
    #[error("data is nested deeper than {0} levels")]
    TooDeep(usize),
}

/// Checks publication data (valid JSON, within size and depth limits) and returns it as a
/// shared raw JSON value in compact form: whitespace outside strings is removed (see
/// [`crate::json::compact`]), nothing else is rewritten.
pub fn validate_data(
    data: &[u8],
    max_bytes: usize,
    max_depth: usize,
) -> Result<Arc<RawValue>, DataError> {
    if data.len() > max_bytes {
        return Err(DataError::TooLarge(max_bytes));
    }
    let text = std::str::from_utf8(data).map_err(|_| DataError::NotUtf8)?;
    raw_json(text.to_owned(), max_bytes, max_depth)
}

/// Like [`validate_data`], for data that is already a string.
pub fn raw_json(
    text: String,
    max_bytes: usize,
    max_depth: usize,
) -> Result<Arc<RawValue>, DataError> {
    if text.len() > max_bytes {
        return Err(DataError::TooLarge(max_bytes));
    }
    if crate::json::nesting_depth(&text) > max_depth {
        return Err(DataError::TooDeep(max_depth));
    }
    let raw = RawValue::from_string(text).map_err(|e| DataError::NotJson(e.to_string()))?;
    Ok(Arc::from(compact_raw(raw)))
}

/// A valid raw JSON value in compact form, so it can be written into a frame verbatim.
pub fn compact_raw(raw: Box<RawValue>) -> Box<RawValue> {
    let compacted = match crate::json::compact(raw.get()) {
        std::borrow::Cow::Borrowed(_) => return raw,
        std::borrow::Cow::Owned(compacted) => compacted,
    };
    // Compacting valid JSON keeps it valid; the fallback is unreachable.
    RawValue::from_string(compacted).unwrap_or(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_checks() {
        assert!(validate_data(br#"{"text":"hi"}"#, 100, 32).is_ok());
        assert_eq!(
            validate_data(b"{\"a\":1", 100, 32)
                .unwrap_err()
                .to_string()
                .split(':')
                .next(),
            Some("data is not valid JSON")
        );
        assert_eq!(
            validate_data(&[0xff, 0xfe], 100, 32).unwrap_err(),
            DataError::NotUtf8
        );
        assert_eq!(
            validate_data(&[b' '; 101], 100, 32).unwrap_err(),
            DataError::TooLarge(100)
        );
        let deep = format!("{}{}", "[".repeat(33), "]".repeat(33));
        assert_eq!(
            validate_data(deep.as_bytes(), 1000, 32).unwrap_err(),
            DataError::TooDeep(32)
        );
        assert!(validate_data(b"{} {}", 100, 32).is_err());
        assert!(
            validate_data(b"1 2", 100, 32).is_err(),
            "checked before compacting"
        );
        assert_eq!(
            validate_data(b"{\"a\":\n1,\r\n\"b\":\t2}", 100, 32)
                .unwrap()
                .get(),
            r#"{"a":1,"b":2}"#
        );
    }

    #[test]
    fn event_checks() {
        assert!(validate_event("message.created").is_ok());
        assert_eq!(validate_event(""), Err(EventError::Length));
        assert_eq!(validate_event(&"x".repeat(65)), Err(EventError::Length));
        assert_eq!(validate_event("a\nb"), Err(EventError::Control));
    }
}
