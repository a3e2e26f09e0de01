//! Every setting, declared once: its key, type, default, description, whether it may carry
//! credentials, its check, and how the Helm chart sets it. The flags, the config file's keys,
//! `herald config --print-env`, `herald config --settings` (JSON for the chart check,
//! Markdown for the README's Configuration table) all come from here.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::namespace::Namespaces;
use super::setting::DefaultValue::{Text, Unset};
use super::setting::{Helm, Setting, at_least, off_or_at_least_two, settings};
use super::{BackendUrl, ConfigError, LogFormat, Secret};

/// The config file's own setting: read before the file, so the file cannot set it.
const CONFIG_FILE: Setting = Setting {
    key: "config",
    env: "HERALD_CONFIG",
    flag: "config",
    in_file: false,
    default: Unset("`./herald.toml` if present"),
    doc: "config file",
    value_name: Some("PATH"),
    helm: Helm::NotAValue(
        "always /etc/herald/herald.toml, the mounted ConfigMap rendered from `config`",
    ),
    ..Setting::BASE
};

settings! {
    CONFIG_FILE;

    http_addr: SocketAddr {
        default: Text("0.0.0.0:8080"),
        doc: "WebSocket `/ws`, Socket.IO `/socket.io/`, the SSE fallback `/sse` + `/rpc`, `/healthz`, `/readyz`",
        value_name: Some("ADDR"),
        helm: Helm::ListenPort("containerPorts.http"),
    }
    grpc_addr: SocketAddr {
        default: Text("0.0.0.0:50051"),
        doc: "gRPC API",
        value_name: Some("ADDR"),
        helm: Helm::ListenPort("containerPorts.grpc"),
    }
    metrics_addr: SocketAddr {
        default: Text("0.0.0.0:9090"),
        doc: "Prometheus `/metrics` (always plain HTTP)",
        value_name: Some("ADDR"),
        helm: Helm::ListenPort("containerPorts.metrics"),
    }
    tls_cert: Option<PathBuf> {
        default: Unset("none (plain)"),
        doc: "PEM certificate chain file, leaf first; with `HERALD_TLS_KEY`, the HTTP port (WebSocket, SSE, health) serves TLS only, and the pair is reloaded when the files change (checked every 5 s; see [TLS in the node](#tls-in-the-node))",
        value_name: Some("PATH"),
        helm: Helm::NotAValue(
            "with tls.enabled, /etc/herald-tls/tls.crt from the mounted Secret tls.secretName",
        ),
    }
    tls_key: Option<PathBuf> {
        doc: "PEM private key file (PKCS#8, PKCS#1 or SEC1) of `HERALD_TLS_CERT`",
        value_name: Some("PATH"),
        helm: Helm::NotAValue(
            "with tls.enabled, /etc/herald-tls/tls.key from the mounted Secret tls.secretName",
        ),
    }
    grpc_tls: bool {
        default: Text("false"),
        doc: "`true`: the gRPC port serves TLS only too, with the same certificate (needs `HERALD_TLS_CERT` and `HERALD_TLS_KEY`)",
        value_name: Some("BOOL"),
        helm: Helm::Value("tls.grpc"),
    }
    node_id: Option<String> where node_id_length {
        default: Unset("hostname + random suffix"),
        doc: "node id (1–64 chars), in `connect` results and `Info`",
        helm: Helm::NotAValue(
            "the pod name (downward API): unique, stable for the pod's life, readable in logs",
        ),
    }
    jwt_secret: Option<Secret> where jwt_secret_length {
        doc: "HS256 secret for client tokens, at least 32 characters",
        secret: true,
        helm: Helm::Value("auth.jwtSecret"),
    }
    jwt_public_key: Option<String> {
        doc: "RSA or EC public key, PEM text or a path to a PEM file (RS256 tokens; ES256 for a P-256 key, ES384 for P-384; other curves stop startup)",
        secret: true,
        helm: Helm::Value("auth.jwtPublicKey"),
    }
    jwt_audience: Option<String> {
        doc: "when set, tokens must carry this `aud`",
        helm: Helm::Value("herald.jwtAudience"),
    }
    jwt_issuer: Option<String> {
        doc: "when set, tokens must carry this `iss`",
        helm: Helm::Value("herald.jwtIssuer"),
    }
    api_keys: Vec<Secret> where api_key_lengths {
        doc: "gRPC API keys, comma-separated, each at least 16 characters",
        secret: true,
        helm: Helm::Value("auth.apiKeys"),
    }
    allowed_origins: Vec<String> where allowed_origins_are_origins {
        default: Unset("empty = any"),
        doc: "`Origin`s allowed to open `/ws` and `/sse`, comma-separated, each `scheme://host[:port]` with no path or trailing slash (`https://app.example.com`); another `Origin`, or `Origin: null`, is closed 4003, and a request without `Origin` passes unless it is a cross-site browser request (see [Connection tokens](#connection-tokens)). Required for cookie tokens: empty, or `*` (any origin), never takes them. `null`, or `*` together with origins, is a configuration error",
        helm: Helm::Value("herald.allowedOrigins"),
    }
    log_format: LogFormat {
        default: Text("pretty"),
        doc: "`pretty` or `json`; the level comes from `RUST_LOG` (default `info`)",
        helm: Helm::Value("herald.logFormat"),
    }
    drain_seconds: u64 {
        default: Text("10"),
        doc: "on SIGTERM, connections are closed over this window",
        helm: Helm::Value("herald.drainSeconds"),
    }
    gap_wait_ms: u64 {
        default: Text("100"),
        doc: "how long a node waits for a missing offset before filling it from history",
        helm: Helm::Value("herald.gapWaitMs"),
    }
    fanout_coalesce_ms: u64 {
        default: Text("0"),
        doc: "on a channel whose publications come faster than one fan-out of it takes (many subscribers, many publications a second), a publication that comes within this long of the previous one waits this long and goes out with those queued by then, in one write per subscriber: a fraction of the CPU per delivery, for at most this much added latency; a channel whose fan-out keeps up never waits (0 = off)",
        helm: Helm::Value("herald.fanoutCoalesceMs"),
    }
    presence_ttl_seconds: u64 where (at_least(3)) {
        default: Text("60"),
        doc: "presence and online-status entries expire this long after their node last refreshed them; each node refreshes its connections' entries every third of it and sweeps expired ones as often, so a dead node's users leave within about 1⅓ × this",
        helm: Helm::Value("herald.presenceTtlSeconds"),
    }
    presence_push_limit: u64 {
        default: Text("100"),
        doc: "on a channel with more presence members than this (connections, cluster-wide), `join` and `leave` pushes give way to one `presence` diff push a second per node (0 = always one push per join or leave)",
        helm: Helm::Value("herald.presencePushLimit"),
    }
    presence_state_bytes: usize where (at_least(1)) {
        default: Text("1024"),
        doc: "largest presence state a connection attaches to its membership of a channel (`setPresenceState`), in bytes of compact JSON (over: error 107)",
        helm: Helm::Value("herald.presenceStateBytes"),
    }
    server_subscription_ttl_seconds: u64 where (at_least(1)) {
        default: Text("86400"),
        doc: "a user's server-side subscriptions (gRPC `Subscribe` without `client`) are kept this long after the last `Subscribe` or the user's last connect, and restored on every connect of the user meanwhile",
        helm: Helm::Value("herald.serverSubscriptionTtlSeconds"),
    }
    nats_url: Option<BackendUrl> {
        default: Unset("none (standalone)"),
        doc: "NATS server URL(s), comma-separated (`nats://user:pass@host:4222`, `tls://…`); cluster mode, together with `HERALD_REDIS_URL`",
        secret: true,
        helm: Helm::Value("cluster.natsUrl"),
    }
    redis_url: Option<BackendUrl> {
        default: Unset("none (standalone)"),
        doc: "Redis URL: `redis://[:password@]host:6379[/db]`, `rediss://…` (TLS), `redis-sentinel://…`, `redis-cluster://…`; cluster mode, together with `HERALD_NATS_URL`",
        secret: true,
        helm: Helm::Value("cluster.redisUrl"),
    }
    max_connections: usize {
        default: Text("100000"),
        doc: "authenticated connections per node, 0 = unlimited (over: `connect` gets error 106, close 4101)",
        helm: Helm::Value("herald.maxConnections"),
    }
    max_connections_per_user: usize {
        default: Text("100"),
        doc: "connections per user on one node, 0 = unlimited (over: error 106, close 4101)",
        helm: Helm::Value("herald.maxConnectionsPerUser"),
    }
    max_subscriptions: usize {
        default: Text("50"),
        doc: "subscriptions per connection (over: error 106)",
        helm: Helm::Value("herald.maxSubscriptions"),
    }
    commands_per_minute: u32 where (at_least(1)) {
        default: Text("100"),
        doc: "client commands per minute per connection, a token bucket with bursts of the same size",
        helm: Helm::Value("herald.commandsPerMinute"),
    }
    max_message_bytes: usize where (at_least(1024)) {
        default: Text("65536"),
        doc: "largest client message and publication `data`",
        helm: Helm::Value("herald.maxMessageBytes"),
    }
    max_json_depth: usize {
        default: Text("32"),
        doc: "deepest JSON nesting in publication `data`",
        helm: Helm::Value("herald.maxJsonDepth"),
    }
    client_queue_bytes: usize {
        default: Text("1048576"),
        doc: "bytes queued for one connection before it is closed 4201; a quarter of it is the reply budget, the most one `history`, recovery or `presence` page carries",
        helm: Helm::Value("herald.clientQueueBytes"),
    }
    ping_interval_seconds: u64 where (at_least(1)) {
        default: Text("25"),
        doc: "WebSocket Ping interval",
        helm: Helm::Value("herald.pingIntervalSeconds"),
    }
    pong_timeout_seconds: u64 where (at_least(1)) {
        default: Text("20"),
        doc: "no Pong within this: close 4202",
        helm: Helm::Value("herald.pongTimeoutSeconds"),
    }
    connect_timeout_seconds: u64 where (at_least(1)) {
        default: Text("5"),
        doc: "no valid `connect` within this after the upgrade: close 4001 (at least 1)",
        helm: Helm::Value("herald.connectTimeoutSeconds"),
    }
    max_pending_connections: usize where (off_or_at_least_two("unlimited")) {
        default: Text("1000"),
        doc: "connections not authenticated yet (from TCP accept to a successful `connect`, see [Limits](#limits)) per node, 0 = unlimited, else at least 2 (an SSE handshake takes two connections); over: the TCP connection is closed at accept",
        helm: Helm::Value("herald.maxPendingConnections"),
    }
    max_pending_per_ip: usize where (off_or_at_least_two("off")) {
        default: Text("32"),
        doc: "the same per client IP (IPv6: per /64), 0 = off, else at least 2. The TCP peer address: behind an L7 load balancer or proxy every client has the proxy's IP, so set 0 there (or at least the proxy's concurrent handshakes)",
        helm: Helm::Value("herald.maxPendingPerIp"),
    }
    header_read_timeout_seconds: u64 where (at_least(1)) {
        default: Text("5"),
        doc: "HTTP and metrics ports: a request head must arrive within this, and a keep-alive connection idle this long is closed (at least 1)",
        helm: Helm::Value("herald.headerReadTimeoutSeconds"),
    }
    backend_addr: Option<String> where backend_addr_is_url {
        default: Unset("none (`rpc` answers 108)"),
        doc: "the app's `herald.v1.Backend` gRPC endpoint that client `rpc` commands call, `http://host:port` or `https://…` (TLS; see `HERALD_BACKEND_TLS_CA`); see [The app's backend](#the-apps-backend-rpc)",
        value_name: Some("URL"),
        helm: Helm::Value("herald.backendAddr"),
    }
    backend_timeout_ms: u64 where (at_least(1)) {
        default: Text("5000"),
        doc: "an `rpc` the backend has not answered within this (waiting for a concurrency slot included) gets error 113",
        helm: Helm::Value("herald.backendTimeoutMs"),
    }
    backend_token: Option<Secret> {
        doc: "sent to the backend on every call as `authorization: Bearer <token>`",
        secret: true,
        helm: Helm::Value("auth.backendToken"),
    }
    backend_tls_ca: Option<PathBuf> {
        default: Unset("none (the webpki roots)"),
        doc: "PEM file of the CA certificate(s) to trust for an `https://` backend",
        value_name: Some("PATH"),
        helm: Helm::Value("herald.backendTlsCa"),
    }
    backend_methods: Vec<String> where backend_methods_are_patterns {
        default: Unset("empty = all"),
        doc: "`rpc` methods clients may call, comma-separated; an entry ending in `*` matches by prefix (`message:*`); another method gets error 104",
        helm: Helm::Value("herald.backendMethods"),
    }
    backend_max_concurrency: usize where (at_least(1)) {
        default: Text("256"),
        doc: "backend calls in flight per node; more wait for a slot within their timeout",
        helm: Helm::Value("herald.backendMaxConcurrency"),
    }
    rpc_per_minute: u32 where (at_least(1)) {
        default: Text("60"),
        doc: "`rpc` commands per minute per connection, a token bucket with bursts of the same size (each also counts against `HERALD_COMMANDS_PER_MINUTE`; over: error 110)",
        helm: Helm::Value("herald.rpcPerMinute"),
    }
}

/// `http://` or `https://` and something after it: tonic takes any URI, and would fail only
/// at the first call.
fn backend_addr_is_url(addr: &Option<String>) -> Result<(), String> {
    let Some(addr) = addr.as_deref().filter(|addr| !addr.is_empty()) else {
        return Ok(());
    };
    let rest = addr
        .strip_prefix("http://")
        .or_else(|| addr.strip_prefix("https://"));
    match rest {
        Some(rest) if !rest.is_empty() => Ok(()),
        _ => Err("must be http://host:port or https://host:port".into()),
    }
}

/// Each entry a method name, or a prefix of one followed by `*` (`*` alone: all).
fn backend_methods_are_patterns(methods: &[String]) -> Result<(), String> {
    for method in methods {
        let prefix = method.strip_suffix('*');
        let valid = match prefix {
            Some("") => true,
            Some(prefix) => herald_protocol::command::valid_rpc_method(prefix),
            None => herald_protocol::command::valid_rpc_method(method),
        };
        if !valid {
            return Err(format!(
                "{method:?} is not a method name (1-64 of A-Z a-z 0-9 _ . : / -), optionally ending in *"
            ));
        }
    }
    Ok(())
}

fn node_id_length(id: &Option<String>) -> Result<(), String> {
    match id {
        Some(id) if id.is_empty() || id.len() > 64 => Err("must be 1-64 characters".into()),
        _ => Ok(()),
    }
}

fn jwt_secret_length(secret: &Option<Secret>) -> Result<(), String> {
    match secret {
        Some(secret) if secret.expose().len() < 32 => {
            Err("must be at least 32 characters (256 bits) for HS256".into())
        }
        _ => Ok(()),
    }
}

fn api_key_lengths(keys: &[Secret]) -> Result<(), String> {
    if keys.iter().any(|key| key.expose().len() < 16) {
        return Err("every key must be at least 16 characters".into());
    }
    Ok(())
}

/// Each entry must be an origin as browsers send it (`scheme://host[:port]`): anything else
/// would never match, and the client would see 4003 with no hint why. `*` (any origin, no
/// cookie tokens) must stand alone, so a list never silently loses its cookies. `null` is the
/// origin of sandboxed frames and local files, which any page can produce.
fn allowed_origins_are_origins(origins: &[String]) -> Result<(), String> {
    if origins.len() > 1 && origins.iter().any(|o| o == "*") {
        return Err(
            "`*` allows any origin (and then no cookie tokens); it cannot be combined with listed origins"
                .into(),
        );
    }
    for origin in origins.iter().filter(|o| *o != "*") {
        if origin.eq_ignore_ascii_case("null") {
            return Err(
                "`null` cannot be allowed: sandboxed frames and local files on any site send it"
                    .into(),
            );
        }
        let is_origin = origin.split_once("://").is_some_and(|(scheme, host)| {
            !scheme.is_empty()
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
                && !host.is_empty()
                && !host.contains(['/', '?', '#', '@', '*'])
                && !host.contains(char::is_whitespace)
        });
        if !is_origin {
            return Err(format!(
                "{origin:?} is not an origin: scheme://host[:port], without a path or trailing slash"
            ));
        }
    }
    Ok(())
}
