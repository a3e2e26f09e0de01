//! Herald gateway node: WebSocket sessions, local fan-out, broker and state, gRPC API.
//!
//! `server` binds and runs a node; everything else is one concern a module, as listed in
//! the README's architecture section.

mod api;
pub mod auth;
mod backend;
pub mod broker;
pub mod clock;
pub mod config;
mod connections;
pub mod dev_backend;
mod disconnect;
pub mod envelope;
mod error;
mod http;
pub mod hub;
mod isolate;
mod metrics;
pub mod node;
pub mod operator;
mod outbox;
mod pace;
mod paging;
mod presence;
mod presence_diff;
pub mod random;
mod server;
mod server_subscriptions;
pub mod session;
mod shared_push;
mod socketio_recovery;
pub mod state;
pub mod tls;
mod wire;

pub use config::Config;
pub use server::Server;
