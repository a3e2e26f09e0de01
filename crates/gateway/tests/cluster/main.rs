//! Cluster tests: real `redis-server` and `nats-server` processes on free ports, killed and
//! restarted mid-run.

// The single-node tests' helpers (tokens, gRPC key, bounded waits); not all are used here.
#[allow(dead_code)]
#[path = "../gateway/common.rs"]
mod common;
#[path = "../shared/presence_suite.rs"]
mod presence_suite;

mod backends;
mod follower;
mod nodes;

mod fanout;
mod faults;
mod idempotency;
mod nats_edges;
mod paging;
mod presence;
mod redis_presence;
mod redis_state;
