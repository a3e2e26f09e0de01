//! A Socket.IO connection's offset: the channels it holds and, for each, the position of
//! the last publication it was sent, written as one string that needs no JSON escaping:
//! `h1;<channel>,<epoch>,<offset>[,<grant>];…` (channel names have no `;` or `,`, epochs
//! and grants neither; a channel without history has an empty epoch and offset 0; a grant
//! stands for the subscription token the channel was joined with).

use std::sync::Arc;

use herald_protocol::ChannelName;
use herald_protocol::command::StreamPosition;

/// The format's tag, first in every offset.
const VERSION: &str = "h1";

/// The longest offset written: it goes out with every publication event and comes back in
/// the reconnect's CONNECT, which must stay well under `HERALD_MAX_MESSAGE_BYTES` (64 KiB),
/// however many channels (of up to 200 bytes each) a connection holds.
pub const MAX_OFFSET_BYTES: usize = 8 * 1024;

/// Written instead of an offset over [`MAX_OFFSET_BYTES`]: not a version [`parse`] reads, so
/// such a connection reconnects to a fresh session (`recovered === false`).
const TOO_LONG: &str = "h1!";

/// The channels a connection holds, in the order it subscribed.
#[derive(Debug, Default)]
pub struct Cursor {
    held: Vec<Held>,
}

#[derive(Debug)]
struct Held {
    channel: ChannelName,
    /// `None` until the subscription is answered: until then the client does not know it
    /// holds the channel, and the offset leaves it out.
    position: Option<(Arc<str>, u64)>,
    /// The grant of a channel joined with a subscription token.
    grant: Option<Box<str>>,
}

impl Cursor {
    /// A subscription begins (not yet answered).
    pub fn hold(&mut self, channel: &ChannelName) {
        if !self.held.iter().any(|held| held.channel == *channel) {
            self.held.push(Held {
                channel: channel.clone(),
                position: None,
                grant: None,
            });
        }
    }

    /// Records the grant of a held channel (joined, or refreshed, with a subscription token).
    pub fn grant(&mut self, channel: &ChannelName, grant: String) {
        if let Some(held) = self.held.iter_mut().find(|held| held.channel == *channel) {
            held.grant = Some(grant.into());
        }
    }

    /// Moves a held channel to `epoch` and `offset`; true when that changed the offset.
    pub fn advance(&mut self, channel: &ChannelName, epoch: &Arc<str>, offset: u64) -> bool {
        let Some(held) = self.held.iter_mut().find(|held| held.channel == *channel) else {
            return false;
        };
        match &mut held.position {
            Some((at, last)) if Arc::ptr_eq(at, epoch) || **at == **epoch => {
                let changed = *last != offset;
                *last = offset;
                changed
            }
            position => {
                *position = Some((epoch.clone(), offset));
                true
            }
        }
    }

    /// A subscription ends; true when the offset held it.
    pub fn release(&mut self, channel: &ChannelName) -> bool {
        let Some(index) = self.held.iter().position(|held| held.channel == *channel) else {
            return false;
        };
        self.held.remove(index).position.is_some()
    }

    /// The offset as the client gets it; [`TOO_LONG`] past [`MAX_OFFSET_BYTES`].
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut offset = String::with_capacity(VERSION.len() + self.held.len() * 48);
        offset.push_str(VERSION);
        for held in &self.held {
            if let Some((epoch, last)) = &held.position {
                let _ = write!(offset, ";{},{epoch},{last}", held.channel.as_str());
                if let Some(grant) = &held.grant {
                    let _ = write!(offset, ",{grant}");
                }
                if offset.len() > MAX_OFFSET_BYTES {
                    return TOO_LONG.to_owned();
                }
            }
        }
        offset
    }
}

/// A channel a reconnecting client held, read back from its offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    pub channel: String,
    /// Where it was in the channel's history; `None` for a channel without history.
    pub position: Option<StreamPosition>,
    /// The grant, for a channel joined with a subscription token.
    pub grant: Option<String>,
}

/// The channels in a client's offset, at most `max`; `None` when it is not an offset this
/// format wrote (or holds more than `max`: no connection could have).
pub fn parse(offset: &str, max: usize) -> Option<Vec<Mark>> {
    let mut entries = offset.split(';');
    if entries.next() != Some(VERSION) {
        return None;
    }
    let mut marks = Vec::new();
    for entry in entries {
        if marks.len() == max {
            return None;
        }
        let mut fields = entry.split(',');
        let (Some(channel), Some(epoch), Some(offset), grant, None) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            return None;
        };
        let offset: u64 = offset.parse().ok()?;
        let position = match epoch {
            "" if offset == 0 => None,
            "" => return None,
            epoch => Some(StreamPosition {
                offset,
                epoch: epoch.to_owned(),
            }),
        };
        marks.push(Mark {
            channel: channel.to_owned(),
            position,
            grant: grant.map(str::to_owned),
        });
    }
    Some(marks)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(name: &str) -> ChannelName {
        ChannelName::parse(name).unwrap()
    }

    #[test]
    fn renders_answered_channels_and_reads_them_back() {
        let mut cursor = Cursor::default();
        let (room, lobby, public) = (
            channel("org:a:room:1"),
            channel("user:u"),
            channel("public:p"),
        );
        let epoch: Arc<str> = Arc::from("1764.r.abc");
        cursor.hold(&room);
        cursor.hold(&lobby);
        cursor.hold(&public);
        assert_eq!(cursor.render(), "h1");
        assert!(cursor.advance(&room, &epoch, 3));
        assert!(!cursor.advance(&room, &Arc::from("1764.r.abc"), 3));
        assert!(cursor.advance(&room, &epoch, 4));
        assert!(cursor.advance(&public, &Arc::from(""), 0));
        assert!(!cursor.advance(&channel("public:never"), &epoch, 1));
        cursor.grant(&public, "1800.tag".into());
        let offset = cursor.render();
        assert_eq!(offset, "h1;org:a:room:1,1764.r.abc,4;public:p,,0,1800.tag");
        assert_eq!(
            parse(&offset, 8).unwrap(),
            vec![
                Mark {
                    channel: "org:a:room:1".into(),
                    position: Some(StreamPosition {
                        offset: 4,
                        epoch: "1764.r.abc".into()
                    }),
                    grant: None,
                },
                Mark {
                    channel: "public:p".into(),
                    position: None,
                    grant: Some("1800.tag".into()),
                },
            ]
        );
        assert!(!cursor.release(&lobby), "never answered");
        assert!(cursor.release(&room));
        assert!(!cursor.release(&room));
        assert_eq!(cursor.render(), "h1;public:p,,0,1800.tag");
    }

    #[test]
    fn an_offset_too_long_to_send_back_is_one_that_does_not_recover() {
        let mut cursor = Cursor::default();
        let epoch: Arc<str> = Arc::from("1764612345678.r.Xq3v9TzL");
        for n in 0..100 {
            let held = channel(&format!("org:acme:ch:{n:0>60}"));
            cursor.hold(&held);
            cursor.advance(&held, &epoch, 1);
        }
        let offset = cursor.render();
        assert_eq!(offset, TOO_LONG);
        assert_eq!(parse(&offset, 1000), None);
    }

    #[test]
    fn refuses_what_it_did_not_write() {
        assert_eq!(parse("h1", 4), Some(vec![]));
        for offset in [
            "",
            "h2;a,e,1",
            "h1;a,e",
            "h1;a,e,1,x,y",
            "h1;a,e,-1",
            "h1;a,,3",
            "h1;a,e,1;b,e,1;c,e,1",
            "hello",
        ] {
            assert_eq!(parse(offset, 2), None, "{offset:?}");
        }
    }
}
