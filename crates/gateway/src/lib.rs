//! Herald gateway node: WebSocket sessions, local fan-out, broker and state, gRPC API.
//!
//! `server` binds and runs a node; everything else is one concern a module, as listed in
//! the README's architecture section.

pub mod admission;
pub mod api;
pub mod auth;
pub mod broker;
pub mod clock;
pub mod config;
pub mod connections;
pub mod dev;
pub mod envelope;
pub mod error;
pub mod hub;
pub mod metrics;
pub mod node;
pub mod outbox;
pub mod paging;
pub mod presence;
pub mod random;
pub mod server;
pub mod session;
pub mod sse;
pub mod state;
pub mod tls;
pub mod ws;

pub use config::Config;
pub use server::Server;
