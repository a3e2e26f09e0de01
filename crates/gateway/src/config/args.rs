//! Configuration flags, each also readable from its `HERALD_*` environment variable.
//! Values stay strings here; `Config::load` parses them and names the key on error.

use std::path::PathBuf;

#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConfigArgs {
    /// TOML config file [default: ./herald.toml when it exists]
    #[arg(long, env = "HERALD_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// WebSocket, /healthz and /readyz listen address [default: 0.0.0.0:8080]
    #[arg(long, env = "HERALD_HTTP_ADDR", value_name = "ADDR")]
    pub http_addr: Option<String>,
    /// gRPC API listen address [default: 0.0.0.0:50051]
    #[arg(long, env = "HERALD_GRPC_ADDR", value_name = "ADDR")]
    pub grpc_addr: Option<String>,
    /// Prometheus /metrics listen address [default: 0.0.0.0:9090]
    #[arg(long, env = "HERALD_METRICS_ADDR", value_name = "ADDR")]
    pub metrics_addr: Option<String>,
    /// PEM certificate chain file for TLS on the HTTP port (wss, https); with --tls-key [default: none, plain]
    #[arg(long, env = "HERALD_TLS_CERT", value_name = "PATH")]
    pub tls_cert: Option<String>,
    /// PEM private key file for --tls-cert [default: none]
    #[arg(long, env = "HERALD_TLS_KEY", value_name = "PATH")]
    pub tls_key: Option<String>,
    /// Serve gRPC over TLS too, with the same certificate (true | false) [default: false]
    #[arg(long, env = "HERALD_GRPC_TLS", value_name = "BOOL")]
    pub grpc_tls: Option<String>,
    /// Unique id of this node [default: hostname + random suffix]
    #[arg(long, env = "HERALD_NODE_ID")]
    pub node_id: Option<String>,
    /// HS256 secret for client JWTs (at least 32 characters)
    #[arg(long, env = "HERALD_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// PEM public key (or a path to one) for RS256/ES256 client JWTs
    #[arg(long, env = "HERALD_JWT_PUBLIC_KEY", hide_env_values = true)]
    pub jwt_public_key: Option<String>,
    /// Required `aud` claim
    #[arg(long, env = "HERALD_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// Required `iss` claim
    #[arg(long, env = "HERALD_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// gRPC API keys, comma-separated
    #[arg(long, env = "HERALD_API_KEYS", hide_env_values = true)]
    pub api_keys: Option<String>,
    /// Allowed Origins for WebSocket and SSE, comma-separated; cookies count only behind a list [default: any]
    #[arg(long, env = "HERALD_ALLOWED_ORIGINS")]
    pub allowed_origins: Option<String>,
    /// pretty | json [default: pretty]
    #[arg(long, env = "HERALD_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// Seconds over which connections are closed on SIGTERM [default: 10]
    #[arg(long, env = "HERALD_DRAIN_SECONDS")]
    pub drain_seconds: Option<String>,
    /// Milliseconds to wait for a missing offset before filling from history [default: 100]
    #[arg(long, env = "HERALD_GAP_WAIT_MS")]
    pub gap_wait_ms: Option<String>,
    /// Seconds presence and online status outlive their node's last refresh [default: 60]
    #[arg(long, env = "HERALD_PRESENCE_TTL_SECONDS")]
    pub presence_ttl_seconds: Option<String>,
    /// NATS server URL(s), comma-separated; with --redis-url selects cluster mode [default: none, standalone]
    #[arg(long, env = "HERALD_NATS_URL", hide_env_values = true)]
    pub nats_url: Option<String>,
    /// Redis URL (redis://, rediss://, redis-sentinel://, redis-cluster://); with --nats-url selects cluster mode [default: none, standalone]
    #[arg(long, env = "HERALD_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// Connections per node, 0 = unlimited [default: 100000]
    #[arg(long, env = "HERALD_MAX_CONNECTIONS")]
    pub max_connections: Option<String>,
    /// Connections per user on one node, 0 = unlimited [default: 100]
    #[arg(long, env = "HERALD_MAX_CONNECTIONS_PER_USER")]
    pub max_connections_per_user: Option<String>,
    /// Subscriptions per connection [default: 50]
    #[arg(long, env = "HERALD_MAX_SUBSCRIPTIONS")]
    pub max_subscriptions: Option<String>,
    /// Commands per minute per connection (token bucket) [default: 100]
    #[arg(long, env = "HERALD_COMMANDS_PER_MINUTE")]
    pub commands_per_minute: Option<String>,
    /// Largest client message and publication, bytes [default: 65536]
    #[arg(long, env = "HERALD_MAX_MESSAGE_BYTES")]
    pub max_message_bytes: Option<String>,
    /// Deepest JSON nesting in published data [default: 32]
    #[arg(long, env = "HERALD_MAX_JSON_DEPTH")]
    pub max_json_depth: Option<String>,
    /// Bytes queued for one connection before it is closed 4201 [default: 1048576]
    #[arg(long, env = "HERALD_CLIENT_QUEUE_BYTES")]
    pub client_queue_bytes: Option<String>,
    /// Seconds between server pings [default: 25]
    #[arg(long, env = "HERALD_PING_INTERVAL_SECONDS")]
    pub ping_interval_seconds: Option<String>,
    /// Seconds to wait for a pong before closing 4202 [default: 20]
    #[arg(long, env = "HERALD_PONG_TIMEOUT_SECONDS")]
    pub pong_timeout_seconds: Option<String>,
    /// Seconds from upgrade to a valid token before closing 4001 [default: 5]
    #[arg(long, env = "HERALD_CONNECT_TIMEOUT_SECONDS")]
    pub connect_timeout_seconds: Option<String>,
    /// Connections not authenticated yet (accept to `connect`) per node, 0 = unlimited [default: 1000]
    #[arg(long, env = "HERALD_MAX_PENDING_CONNECTIONS")]
    pub max_pending_connections: Option<String>,
    /// Connections not authenticated yet per client IP (IPv6: per /64), 0 = unlimited [default: 32]
    #[arg(long, env = "HERALD_MAX_PENDING_PER_IP")]
    pub max_pending_per_ip: Option<String>,
    /// Seconds to receive a request head, and longest idle keep-alive, on the HTTP and metrics ports [default: 5]
    #[arg(long, env = "HERALD_HEADER_READ_TIMEOUT_SECONDS")]
    pub header_read_timeout_seconds: Option<String>,
}
