//! Cluster tests: real `redis-server` and `nats-server` processes on free ports, killed and
//! restarted mid-run.

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
mod rpc;
mod server_subscriptions;
