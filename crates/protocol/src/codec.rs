//! The codec of a connection, chosen by its WebSocket subprotocol: `herald.v1.json` (text
//! frames, the default) or `herald.v1.proto` (binary frames, see [`crate::binary`]). Both
//! carry the same commands, replies and pushes; a session, the hub and the writer use this
//! and never a format directly.

use bytes::Bytes;

use crate::binary::{self, ResultBody};
use crate::codes::{CloseCode, ErrorCode};
use crate::command::{self, Command, CommandError, FrameError};
use crate::publication::Publication;
use crate::reply::{self, ChannelEvent, SubscribeResult};

/// The JSON subprotocol, the default when a client names none.
pub const SUBPROTOCOL_JSON: &str = "herald.v1.json";

/// The binary subprotocol: protobuf of the same shapes.
pub const SUBPROTOCOL_PROTO: &str = "herald.v1.proto";

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Codec {
    #[default]
    Json,
    Proto,
}

impl Codec {
    /// Both codecs, the binary one first: the server prefers it when a client offers both.
    pub const ALL: [Codec; 2] = [Codec::Proto, Codec::Json];

    pub fn subprotocol(self) -> &'static str {
        match self {
            Codec::Json => SUBPROTOCOL_JSON,
            Codec::Proto => SUBPROTOCOL_PROTO,
        }
    }

    /// The codec of a negotiated subprotocol; JSON for none or one Herald does not know.
    pub fn negotiated(subprotocol: Option<&str>) -> Codec {
        match subprotocol {
            Some(SUBPROTOCOL_PROTO) => Codec::Proto,
            _ => Codec::Json,
        }
    }

    /// Whether its frames are binary WebSocket frames (text ones otherwise).
    pub fn is_binary(self) -> bool {
        self == Codec::Proto
    }

    /// What goes between two messages coalesced into one frame: a newline in JSON; nothing
    /// in protobuf, whose messages carry their length.
    pub fn separator(self) -> &'static [u8] {
        match self {
            Codec::Json => b"\n",
            Codec::Proto => b"",
        }
    }

    /// Parses one client frame of this codec into its commands; `FrameError` closes the
    /// connection with 4000.
    pub fn parse_frame(
        self,
        frame: &[u8],
    ) -> Result<Vec<Result<Command, CommandError>>, FrameError> {
        match self {
            Codec::Json => {
                let text = std::str::from_utf8(frame).map_err(|e| FrameError(e.to_string()))?;
                command::parse_frame(text)
            }
            Codec::Proto => binary::parse_frame(frame),
        }
    }

    pub fn result<T: ResultBody>(self, id: u64, result: &T) -> Bytes {
        match self {
            Codec::Json => reply::encode_result(id, result),
            Codec::Proto => binary::encode_result(id, result),
        }
    }

    pub fn error(self, id: u64, code: ErrorCode, message: &str) -> Bytes {
        match self {
            Codec::Json => reply::encode_error(id, code, message),
            Codec::Proto => binary::encode_error(id, code, message),
        }
    }

    /// An error reply with a code that is not an [`ErrorCode`]: the app's backend's own.
    pub fn raw_error(self, id: u64, code: u32, message: &str, temporary: bool) -> Bytes {
        match self {
            Codec::Json => reply::encode_raw_error(id, code, message, temporary),
            Codec::Proto => binary::encode_raw_error(id, code, message, temporary),
        }
    }

    pub fn publication(self, publication: &Publication) -> Bytes {
        match self {
            Codec::Json => reply::encode_publication(publication),
            Codec::Proto => binary::encode_publication(publication),
        }
    }

    pub fn event(self, channel: &str, event: &ChannelEvent) -> Bytes {
        match self {
            Codec::Json => reply::encode_event(channel, event),
            Codec::Proto => binary::encode_event(channel, event),
        }
    }

    pub fn unsubscribe(self, channel: &str, code: u32, reason: &str) -> Bytes {
        match self {
            Codec::Json => reply::encode_unsubscribe(channel, code, reason),
            Codec::Proto => binary::encode_unsubscribe(channel, code, reason),
        }
    }

    /// The `subscribe` push of a server-side subscription.
    pub fn subscribe(self, channel: &str, result: &SubscribeResult<Publication>) -> Bytes {
        match self {
            Codec::Json => reply::encode_subscribe(channel, result),
            Codec::Proto => binary::encode_subscribe(channel, result),
        }
    }

    pub fn disconnect(self, code: CloseCode, reason: &str) -> Bytes {
        match self {
            Codec::Json => reply::encode_disconnect(code, reason),
            Codec::Proto => binary::encode_disconnect(code, reason),
        }
    }
}
