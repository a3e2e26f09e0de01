//! Fixtures shared by Herald's integration tests (`crates/gateway/tests`) and its load
//! generator (`loadtest`): free loopback ports, spawned processes that die with their value,
//! bounded waits, real `redis-server`, `nats-server` and `herald serve` processes, tokens and
//! clients for the test credentials, a recording `herald.v1.Backend` for `rpc`, and the presence suite both test binaries run.
//!
//! Fixtures a test calls directly panic with a message naming what failed; the building
//! blocks the load generator uses ([`process::Process`], `start_with`) return errors.

pub mod backends;
pub mod client;
pub mod grpc;
pub mod herald;
pub mod http;
pub mod ports;
pub mod presence_suite;
pub mod process;
pub mod rpc_backend;
pub mod tokens;
mod wait;

pub use wait::{WAIT, until, within, within_for};
