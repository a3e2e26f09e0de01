//! Herald client protocol v1: what crosses the WebSocket, and nothing else.
//!
//! Channel names, the commands a client sends, the replies and pushes the server sends,
//! error codes and close codes. Pure data and encoding, no I/O, so the gateway, the Rust
//! client and the load generator share one definition.

pub mod binary;
pub mod channel;
pub mod codec;
pub mod codes;
pub mod command;
pub mod json;
pub mod presence;
pub mod publication;
pub mod reply;
pub mod socketio;
#[cfg(test)]
mod typescript;

pub use channel::{ChannelError, ChannelName};
pub use codec::{Codec, SUBPROTOCOL_JSON, SUBPROTOCOL_PROTO};
pub use codes::{CloseCode, ErrorCode, Reconnect};
pub use command::{Command, CommandError, FrameError, Method};
pub use publication::Publication;

/// Default limit for one client message and for one publication's data, in bytes.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Default limit for JSON nesting depth in client-supplied data.
pub const DEFAULT_MAX_JSON_DEPTH: usize = 32;
