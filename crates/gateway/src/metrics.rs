//! Every metric Herald exports, named in one place, and the Prometheus recorder.
//!
//! Call sites use the constants here, never string literals, so the README's metric table
//! and the code cannot drift apart without this file changing.

use std::sync::OnceLock;

use ::metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
pub use ::metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Open WebSocket connections (gauge).
pub const CONNECTIONS: &str = "herald_connections";
/// Channel subscriptions held by connections (gauge).
pub const SUBSCRIPTIONS: &str = "herald_subscriptions";
/// Publications accepted, by origin (`api` or `client`) (counter).
pub const PUBLICATIONS: &str = "herald_publications_total";
/// Messages queued to connections by fan-out (counter).
pub const DELIVERIES: &str = "herald_deliveries_total";
/// Client commands, by method and result (`ok` or an error name) (counter).
pub const CLIENT_COMMANDS: &str = "herald_client_commands_total";
/// Connections closed by the server, by close code (counter).
pub const DISCONNECTS: &str = "herald_disconnects_total";
/// Time from a publish request to hand-off to the broker (histogram, seconds).
pub const PUBLISH_DURATION: &str = "herald_publish_duration_seconds";
/// Connections closed because their queue overflowed (counter).
pub const SLOW_CONSUMER_CLOSES: &str = "herald_slow_consumer_closes_total";
/// Publications dropped by a node because it had already delivered that offset (counter).
pub const DUPLICATES_DROPPED: &str = "herald_duplicates_dropped_total";
/// Offset gaps filled from history, by result (`filled` or `lost`) (counter).
pub const GAP_FILLS: &str = "herald_gap_fills_total";
/// gRPC calls, by method and status code (counter).
pub const GRPC_REQUESTS: &str = "herald_grpc_requests_total";
/// 1 while the broker is connected, 0 otherwise (gauge).
pub const BROKER_UP: &str = "herald_broker_up";
/// 1 while the state backend is reachable, 0 otherwise (gauge).
pub const STATE_UP: &str = "herald_state_up";
/// NATS publish round trips (flushed to the server), seconds (histogram).
pub const NATS_PUBLISH_DURATION: &str = "herald_nats_publish_duration_seconds";
/// Messages received from NATS, by result (`delivered` or `invalid`) (counter).
pub const NATS_MESSAGES: &str = "herald_nats_messages_received_total";
/// NATS subject subscriptions held by this node (gauge).
pub const NATS_SUBSCRIPTIONS: &str = "herald_nats_subscriptions";
/// Redis calls, by operation (`append`, `history`, `position`, `positions`, and
/// `presence_*` for presence, status and typing), seconds (histogram).
pub const REDIS_DURATION: &str = "herald_redis_duration_seconds";
/// Redis calls that failed, by operation (counter).
pub const REDIS_ERRORS: &str = "herald_redis_errors_total";
/// Periodic position checks that found undelivered publications (counter).
pub const POSITION_CHECK_CATCHUPS: &str = "herald_position_check_catchups_total";
/// Calls of the app's backend for client `rpc` commands, by method (its name for listed
/// methods and the first 64 seen, `other` after) and result (`ok`, `error`, `unavailable`,
/// `timeout`, `not_allowed`, `rejected`) (counter).
pub const BACKEND_REQUESTS: &str = "herald_backend_requests_total";
/// Backend calls from the command to the answer (a call slot's wait included), by method,
/// seconds (histogram).
pub const BACKEND_DURATION: &str = "herald_backend_duration_seconds";

/// HTTP connections that have not authenticated yet: from accept to the end of the
/// WebSocket or SSE handshake, or to their close; by `port` (`http`, or `metrics`, where
/// no connection authenticates) (gauge).
pub const PENDING_CONNECTIONS: &str = "herald_pending_connections";
/// New connections closed at accept because the pending budget was full, by `cap`
/// (`node` or `address`) and `port` (counter).
pub const PENDING_REFUSED: &str = "herald_pending_refused_total";
/// Entries a background job skipped because their work panicked, by `job` (counter).
pub const JOB_PANICS: &str = "herald_job_panics_total";

const PUBLISH_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// An app's handler: milliseconds to its timeout (5 s by default).
const BACKEND_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Installs the process-wide recorder once and returns its handle; later calls (several
/// nodes in one test process) share it.
pub fn install() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(PUBLISH_DURATION.into()), PUBLISH_BUCKETS)
                .expect("buckets are not empty")
                .set_buckets_for_metric(
                    Matcher::Full(NATS_PUBLISH_DURATION.into()),
                    PUBLISH_BUCKETS,
                )
                .expect("buckets are not empty")
                .set_buckets_for_metric(Matcher::Full(REDIS_DURATION.into()), PUBLISH_BUCKETS)
                .expect("buckets are not empty")
                .set_buckets_for_metric(Matcher::Full(BACKEND_DURATION.into()), BACKEND_BUCKETS)
                .expect("buckets are not empty")
                .install_recorder()
                .expect("no other metrics recorder is installed");
            describe();
            // Series show from the first scrape, not only after their first event, so
            // alerts that use increase() see a node's first slow consumer or lost gap.
            gauge!(CONNECTIONS).set(0.0);
            gauge!(SUBSCRIPTIONS).set(0.0);
            gauge!(PENDING_CONNECTIONS, "port" => "http").set(0.0);
            for counter in [
                SLOW_CONSUMER_CLOSES,
                DUPLICATES_DROPPED,
                POSITION_CHECK_CATCHUPS,
            ] {
                counter!(counter).absolute(0);
            }
            for result in ["filled", "lost", "error", "unavailable"] {
                counter!(GAP_FILLS, "result" => result).absolute(0);
            }
            handle
        })
        .clone()
}

fn describe() {
    describe_gauge!(CONNECTIONS, "Open WebSocket connections.");
    describe_gauge!(SUBSCRIPTIONS, "Channel subscriptions held by connections.");
    describe_counter!(
        PUBLICATIONS,
        "Publications accepted, by origin (api, client)."
    );
    describe_counter!(DELIVERIES, "Messages queued to connections by fan-out.");
    describe_counter!(CLIENT_COMMANDS, "Client commands, by method and result.");
    describe_counter!(
        DISCONNECTS,
        "Connections closed by the server, by close code."
    );
    describe_histogram!(
        PUBLISH_DURATION,
        Unit::Seconds,
        "Publish request to broker hand-off."
    );
    describe_counter!(
        SLOW_CONSUMER_CLOSES,
        "Connections closed because their outbound queue overflowed."
    );
    describe_counter!(
        DUPLICATES_DROPPED,
        "Publications dropped as already delivered."
    );
    describe_counter!(
        GAP_FILLS,
        "Offset gaps filled from history, by result (filled, lost)."
    );
    describe_counter!(GRPC_REQUESTS, "gRPC calls, by method and status code.");
    describe_gauge!(BROKER_UP, "1 while the broker is connected.");
    describe_gauge!(STATE_UP, "1 while the state backend is reachable.");
    describe_histogram!(
        NATS_PUBLISH_DURATION,
        Unit::Seconds,
        "NATS publish round trips."
    );
    describe_counter!(
        NATS_MESSAGES,
        "Messages received from NATS, by result (delivered, invalid)."
    );
    describe_gauge!(NATS_SUBSCRIPTIONS, "NATS subject subscriptions held.");
    describe_histogram!(REDIS_DURATION, Unit::Seconds, "Redis calls, by operation.");
    describe_counter!(REDIS_ERRORS, "Redis calls that failed, by operation.");
    describe_gauge!(
        PENDING_CONNECTIONS,
        "Connections not authenticated yet (accept to end of handshake), by port (http, metrics)."
    );
    describe_counter!(
        PENDING_REFUSED,
        "Connections closed at accept, pending budget full, by cap (node, address) and port."
    );
    describe_counter!(
        JOB_PANICS,
        "Entries a background job skipped because their work panicked, by job."
    );
    describe_counter!(
        BACKEND_REQUESTS,
        "Backend calls for client rpc, by method and result (ok, error, unavailable, timeout, not_allowed, rejected)."
    );
    describe_histogram!(
        BACKEND_DURATION,
        Unit::Seconds,
        "Backend calls for client rpc, command to answer, by method."
    );
    describe_counter!(
        POSITION_CHECK_CATCHUPS,
        "Periodic position checks that found undelivered publications."
    );
}
