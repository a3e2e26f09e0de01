//! The frames a session exchanges with its client, whatever carries them: a WebSocket
//! (`http::ws` adapts its messages) or the SSE fallback (events out, POSTs in). The session
//! and its writer know only these.

use bytes::Bytes;
use herald_protocol::CloseCode;

/// What the client sent.
#[derive(Debug)]
pub enum ClientFrame {
    /// One or more newline-separated JSON commands; the session checks the bytes are UTF-8.
    Text(Bytes),
    /// One or more length-delimited protobuf commands (`herald.v1.proto`).
    Binary(Bytes),
    /// The client's own ping, with its payload: the session answers it, and it costs a
    /// rate-limit token.
    Ping(Bytes),
    /// The answer to the session's heartbeat.
    Pong,
    /// The client closed.
    Close,
}

/// What the session's writer sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerFrame {
    /// One or more newline-separated JSON messages.
    Text(Bytes),
    /// One or more length-delimited protobuf messages (`herald.v1.proto`).
    Binary(Bytes),
    /// The heartbeat, which the client answers with a pong.
    Ping,
    /// The answer to the client's ping.
    Pong(Bytes),
    /// Bytes already framed for the transport: the rest of a direct write.
    Framed(Bytes),
    /// The last frame.
    Close { code: CloseCode, reason: String },
}

/// A transport that failed or refused what the client sent.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct TransportError {
    /// How to close a connection whose frame the transport refused; `None` when the
    /// connection is gone (reset, end of stream).
    pub close: Option<CloseCode>,
    pub message: String,
}

impl TransportError {
    /// The connection is gone: nothing to close.
    pub fn gone(message: impl Into<String>) -> Self {
        Self {
            close: None,
            message: message.into(),
        }
    }
}
