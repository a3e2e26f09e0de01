//! Integration tests: the real gateway on ephemeral ports, real WebSocket and gRPC clients.

mod common;

mod admission;
mod binary;
mod channels;
mod connect;
mod framing;
mod grpc;
mod lifecycle;
mod limits;
mod operator;
mod paging;
mod presence;
mod publish;
mod reauth;
mod rpc;
mod server_subscriptions;
mod socketio;
mod sse;
mod tls;
