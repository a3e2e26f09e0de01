//! Integration tests: the real gateway on ephemeral ports, real WebSocket and gRPC clients.

mod common;

mod channels;
mod connect;
mod grpc;
mod lifecycle;
mod limits;
mod publish;
