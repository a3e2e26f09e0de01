//! Errors of the client, and the close frame a connection ended with.

use std::fmt;

use herald_protocol::reply::ErrorBody;
use tokio_tungstenite::tungstenite;

/// The close frame a connection ended with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseInfo {
    /// WebSocket close code: 1000 for a normal close, 4000-4299 for Herald's own.
    pub code: u16,
    pub reason: String,
}

impl fmt::Display for CloseInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:?}", self.code, self.reason)
    }
}

/// Anything a client call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered the command with an error reply.
    #[error("server error {}: {}", .0.code, .0.message)]
    Server(ErrorBody),
    /// The connection is closed; carries the close frame, if the server sent one.
    #[error("connection closed{}", .0.as_ref().map(|c| format!(" ({c})")).unwrap_or_default())]
    Closed(Option<CloseInfo>),
    /// The WebSocket failed: the upgrade was refused, the URL or a header is invalid, I/O...
    #[error("websocket: {0}")]
    WebSocket(#[from] tungstenite::Error),
    /// A reply could not be decoded.
    #[error("cannot decode reply: {0}")]
    Decode(String),
    /// A command that its codec cannot carry (a method or params the protobuf form lacks).
    #[error("cannot encode command: {0}")]
    Encode(String),
    /// A request got no reply within the request timeout.
    #[error("request timed out")]
    Timeout,
}

impl ClientError {
    /// The error code of a [`ClientError::Server`] error.
    pub fn server_code(&self) -> Option<u32> {
        match self {
            Self::Server(body) => Some(body.code),
            _ => None,
        }
    }

    /// The close code of a [`ClientError::Closed`] error that came with a close frame.
    pub fn close_code(&self) -> Option<u16> {
        match self {
            Self::Closed(Some(info)) => Some(info.code),
            _ => None,
        }
    }

    /// The HTTP status when the server refused the WebSocket upgrade (401, 403, 429...).
    pub fn http_status(&self) -> Option<u16> {
        match self {
            Self::WebSocket(tungstenite::Error::Http(response)) => Some(response.status().as_u16()),
            _ => None,
        }
    }
}
