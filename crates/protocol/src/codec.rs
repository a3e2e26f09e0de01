//! The codec of a connection, chosen by its WebSocket subprotocol: `herald.v1.json` (text
//! frames, the default) or `herald.v1.proto` (binary frames, see [`crate::binary`]), or by
//! its URL: Socket.IO at `/socket.io/` (text frames, see [`crate::socketio`]). All carry
//! the same commands, replies and pushes; a session, the hub and the writer use this and
//! never a format directly.

use bytes::Bytes;

use crate::binary::{self, ResultBody};
use crate::codes::{CloseCode, ErrorCode};
use crate::command::{self, Command, CommandError, FrameError};
use crate::publication::Publication;
use crate::reply::{self, ChannelEvent, RpcResult, SubscribeResult};
use crate::socketio;

/// The JSON subprotocol, the default when a client names none.
pub const SUBPROTOCOL_JSON: &str = "herald.v1.json";

/// The binary subprotocol: protobuf of the same shapes.
pub const SUBPROTOCOL_PROTO: &str = "herald.v1.proto";

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Codec {
    #[default]
    Json,
    Proto,
    /// Engine.IO v4 + Socket.IO v5 over a WebSocket.
    SocketIo,
}

/// A client frame that carries no commands: see [`Codec::control`].
pub use crate::socketio::Control;

impl Codec {
    /// The codecs of `/ws`, the binary one first: the server prefers it when a client
    /// offers both.
    pub const ALL: [Codec; 2] = [Codec::Proto, Codec::Json];

    /// Its WebSocket subprotocol; Socket.IO has none.
    pub fn subprotocol(self) -> Option<&'static str> {
        match self {
            Codec::Json => Some(SUBPROTOCOL_JSON),
            Codec::Proto => Some(SUBPROTOCOL_PROTO),
            Codec::SocketIo => None,
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
    /// in protobuf, whose messages carry their length. `None`: one message a frame
    /// (Engine.IO over a WebSocket).
    pub fn separator(self) -> Option<&'static [u8]> {
        match self {
            Codec::Json => Some(b"\n"),
            Codec::Proto => Some(b""),
            Codec::SocketIo => None,
        }
    }

    /// The heartbeat as a data message, for codecs whose protocol pings in band (Engine.IO);
    /// `None` for a WebSocket Ping.
    pub fn ping(self) -> Option<Bytes> {
        match self {
            Codec::SocketIo => Some(Bytes::from_static(socketio::PING)),
            Codec::Json | Codec::Proto => None,
        }
    }

    /// Whether a client frame is an in-band pong or goodbye rather than commands.
    pub fn control(self, frame: &[u8]) -> Option<Control> {
        match self {
            Codec::SocketIo => socketio::control(frame),
            Codec::Json | Codec::Proto => None,
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
            Codec::SocketIo => socketio::parse_frame(frame),
        }
    }

    pub fn result<T: ResultBody>(self, id: u64, result: &T) -> Bytes {
        match self {
            Codec::Json => reply::encode_result(id, result),
            Codec::Proto => binary::encode_result(id, result),
            Codec::SocketIo => socketio::encode_result(id, result),
        }
    }

    pub fn error(self, id: u64, code: ErrorCode, message: &str) -> Bytes {
        match self {
            Codec::Json => reply::encode_error(id, code, message),
            Codec::Proto => binary::encode_error(id, code, message),
            Codec::SocketIo => socketio::encode_error(id, code.code(), message),
        }
    }

    /// An error reply with a code that is not an [`ErrorCode`]: the app's backend's own.
    pub fn raw_error(self, id: u64, code: u32, message: &str, temporary: bool) -> Bytes {
        match self {
            Codec::Json => reply::encode_raw_error(id, code, message, temporary),
            Codec::Proto => binary::encode_raw_error(id, code, message, temporary),
            Codec::SocketIo => socketio::encode_error(id, code, message),
        }
    }

    /// An `rpc` result: `{"data": ...}`, or for Socket.IO the data itself as the ack.
    pub fn rpc_result(self, id: u64, result: &RpcResult) -> Bytes {
        match self {
            Codec::SocketIo => socketio::encode_rpc_result(id, &result.data),
            Codec::Json | Codec::Proto => self.result(id, result),
        }
    }

    pub fn publication(self, publication: &Publication) -> Bytes {
        match self {
            Codec::Json => reply::encode_publication(publication),
            Codec::Proto => binary::encode_publication(publication),
            Codec::SocketIo => socketio::encode_publication(publication),
        }
    }

    pub fn event(self, channel: &str, event: &ChannelEvent) -> Bytes {
        match self {
            Codec::Json => reply::encode_event(channel, event),
            Codec::Proto => binary::encode_event(channel, event),
            Codec::SocketIo => from_json(&reply::encode_event(channel, event)),
        }
    }

    pub fn unsubscribe(self, channel: &str, code: u32, reason: &str) -> Bytes {
        match self {
            Codec::Json => reply::encode_unsubscribe(channel, code, reason),
            Codec::Proto => binary::encode_unsubscribe(channel, code, reason),
            Codec::SocketIo => from_json(&reply::encode_unsubscribe(channel, code, reason)),
        }
    }

    /// The `subscribe` push of a server-side subscription.
    pub fn subscribe(self, channel: &str, result: &SubscribeResult<Publication>) -> Bytes {
        match self {
            Codec::Json => reply::encode_subscribe(channel, result),
            Codec::Proto => binary::encode_subscribe(channel, result),
            Codec::SocketIo => from_json(&reply::encode_subscribe(channel, result)),
        }
    }

    pub fn disconnect(self, code: CloseCode, reason: &str) -> Bytes {
        match self {
            Codec::Json => reply::encode_disconnect(code, reason),
            Codec::Proto => binary::encode_disconnect(code, reason),
            Codec::SocketIo => socketio::encode_disconnect(code),
        }
    }
}

/// A push this crate encoded as JSON, in Socket.IO.
fn from_json(push: &[u8]) -> Bytes {
    // Every push `reply` encodes has a Socket.IO form; an empty message is never sent.
    socketio::transcode_push(push).unwrap_or_default()
}
