//! One configuration struct, from flags, `HERALD_*` environment variables and an optional
//! TOML file, in that order of precedence, over built-in defaults.
//!
//! Each setting is declared once, in `settings.rs`; its flag, variable, file key, parser,
//! check and documentation come from that declaration. Flags and environment variables
//! arrive as text ([`ConfigArgs`]) and are parsed here, so a bad value is reported by the
//! name a user set it under (`HERALD_HTTP_ADDR`, or the file's key), not by a parser's
//! internal name.

mod args;
mod dev;
mod file;
mod listing;
pub mod namespace;
mod setting;
mod settings;

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::{Serialize, Serializer};

use crate::random::random_token;

pub use listing::{SettingsFormat, settings_listing};
pub use namespace::{Access, ChannelOptions, NamespaceRule, Namespaces};
pub use setting::{DefaultValue, Helm, Setting};
use settings::FileConfig;
use settings::Values;
pub use settings::{ConfigArgs, SETTINGS};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid {key}: {message}")]
    Invalid { key: &'static str, message: String },
    #[error("cannot read config file {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("invalid --{flag}: {message}")]
    InvalidFlag { flag: &'static str, message: String },
    #[error("invalid {key} in {path}: {message}")]
    InvalidInFile {
        key: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error(
        "{0} is not set: serve needs HERALD_JWT_SECRET or HERALD_JWT_PUBLIC_KEY, and HERALD_API_KEYS \
         (or run `herald serve --dev` for a local gateway with generated ones)"
    )]
    Missing(&'static str),
}

/// A secret string: masked in `Debug` and in `herald config` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"****\"")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("****")
    }
}

/// A NATS or Redis URL, which may carry a password: shown with the password masked.
#[derive(Clone, PartialEq, Eq)]
pub struct BackendUrl(String);

impl BackendUrl {
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with any `user:password@` reduced to `user:****@`.
    pub fn masked(&self) -> String {
        self.0
            .split(',')
            .map(|url| match (url.find("://"), url.rfind('@')) {
                (Some(scheme), Some(at)) if at > scheme => {
                    let userinfo = &url[scheme + 3..at];
                    let user = userinfo.split(':').next().unwrap_or_default();
                    let masked = if userinfo.contains(':') {
                        format!("{user}:****")
                    } else {
                        "****".to_owned()
                    };
                    format!("{}{masked}{}", &url[..scheme + 3], &url[at..])
                }
                _ => url.to_owned(),
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl FromStr for BackendUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim().is_empty() {
            return Err("must not be empty".into());
        }
        Ok(Self(s.trim().to_owned()))
    }
}

impl fmt::Debug for BackendUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.masked())
    }
}

impl Serialize for BackendUrl {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.masked())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pretty" => Ok(Self::Pretty),
            "json" => Ok(Self::Json),
            other => Err(format!("expected pretty or json, got {other:?}")),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct JwtConfig {
    /// HS256 secret.
    #[serde(rename = "jwt_secret", skip_serializing_if = "Option::is_none")]
    pub secret: Option<Secret>,
    /// PEM public key (RS256 or ES256).
    #[serde(rename = "jwt_public_key", skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    #[serde(rename = "jwt_audience", skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    #[serde(rename = "jwt_issuer", skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
}

/// How often the TLS certificate and key files are checked for a change.
pub const TLS_RELOAD_INTERVAL: Duration = Duration::from_secs(5);

/// TLS on the HTTP port (and on the gRPC port with `Config::grpc_tls`); see `tls`.
#[derive(Debug, Clone, Serialize)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    #[serde(rename = "tls_cert")]
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    #[serde(rename = "tls_key")]
    pub key: PathBuf,
    /// [`TLS_RELOAD_INTERVAL`]; shorter in tests.
    #[serde(skip)]
    pub reload_interval: Duration,
}

/// Per-connection and per-node limits.
#[derive(Debug, Clone, Serialize)]
pub struct Limits {
    /// Connections per node; 0 = unlimited.
    pub max_connections: usize,
    /// Connections per user on one node; 0 = unlimited.
    pub max_connections_per_user: usize,
    pub max_subscriptions: usize,
    pub commands_per_minute: u32,
    pub max_message_bytes: usize,
    pub max_json_depth: usize,
    /// Bytes queued for one connection before it is closed as a slow consumer.
    pub client_queue_bytes: usize,
    #[serde(rename = "ping_interval_seconds", serialize_with = "as_secs")]
    pub ping_interval: Duration,
    #[serde(rename = "pong_timeout_seconds", serialize_with = "as_secs")]
    pub pong_timeout: Duration,
    /// From upgrade to a successful `connect` (the handshake).
    #[serde(rename = "connect_timeout_seconds", serialize_with = "as_secs")]
    pub connect_timeout: Duration,
    /// Connections not authenticated yet, per node; 0 = unlimited.
    pub max_pending_connections: usize,
    /// Connections not authenticated yet, per client IP (IPv6: per /64); 0 = unlimited.
    pub max_pending_per_ip: usize,
    /// To receive a request head on the HTTP and metrics ports; also the longest a
    /// keep-alive connection waits idle for its next request.
    #[serde(rename = "header_read_timeout_seconds", serialize_with = "as_secs")]
    pub header_read_timeout: Duration,
    /// `rpc` commands a minute per connection (each also a command).
    pub rpc_per_minute: u32,
}

/// The app's backend that client `rpc` commands call (see `backend`).
#[derive(Debug, Clone, Serialize)]
pub struct BackendConfig {
    /// `http://…` or `https://…`; `None`: `rpc` is not configured.
    #[serde(rename = "backend_addr", skip_serializing_if = "Option::is_none")]
    pub addr: Option<String>,
    /// For one call, from the command to the backend's answer (a concurrency slot included).
    #[serde(rename = "backend_timeout_ms", serialize_with = "as_millis")]
    pub timeout: Duration,
    /// Sent as `authorization: Bearer <token>`.
    #[serde(rename = "backend_token", skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
    /// CA certificates (PEM) to trust for an `https://` backend; `None`: the webpki roots.
    #[serde(rename = "backend_tls_ca", skip_serializing_if = "Option::is_none")]
    pub tls_ca: Option<PathBuf>,
    /// Allowed methods, `*` suffix = prefix; empty = all.
    #[serde(rename = "backend_methods")]
    pub methods: Vec<String>,
    /// Calls in flight per node.
    #[serde(rename = "backend_max_concurrency")]
    pub max_concurrency: usize,
}

impl Limits {
    /// The most one paged reply carries (a `history`, recovery or `presence` page): a quarter
    /// of the connection's queue budget, so a reply alone never overflows the queue. A page
    /// always holds at least one item, even a larger one.
    pub fn reply_bytes(&self) -> usize {
        (self.client_queue_bytes / 4).max(1)
    }
}

/// The effective configuration of a node. Serializes with the config file's keys, so
/// `herald config` output is a valid `herald.toml` (with secrets masked).
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub node_id: String,
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    /// TLS on the HTTP (and optionally gRPC) port; `None` = plain.
    #[serde(flatten)]
    pub tls: Option<TlsConfig>,
    /// gRPC over TLS too, with the HTTP port's certificate (needs `tls`).
    pub grpc_tls: bool,
    #[serde(flatten)]
    pub jwt: JwtConfig,
    pub api_keys: Vec<Secret>,
    /// Allowed `Origin`s for WebSocket and SSE; empty or `*` = any (and no cookie tokens).
    pub allowed_origins: Vec<String>,
    pub log_format: LogFormat,
    #[serde(rename = "drain_seconds", serialize_with = "as_secs")]
    pub drain: Duration,
    /// How long a node waits for a missing offset before filling the gap from history.
    #[serde(rename = "gap_wait_ms", serialize_with = "as_millis")]
    pub gap_wait: Duration,
    /// Publications of a channel that come within this of each other go out together.
    #[serde(rename = "fanout_coalesce_ms", serialize_with = "as_millis")]
    pub fanout_coalesce: Duration,
    /// Presence and online-status entries expire this long after their node last
    /// refreshed them (it refreshes every third of it).
    #[serde(rename = "presence_ttl_seconds", serialize_with = "as_secs")]
    pub presence_ttl: Duration,
    /// Members above which a channel's joins and leaves go out as batched diffs; 0 = never.
    pub presence_push_limit: u64,
    /// Largest presence state (`setPresenceState`), in bytes of compact JSON.
    pub presence_state_bytes: usize,
    /// How long a user's server-side subscriptions are kept after the last `Subscribe` or
    /// the user's last connect.
    #[serde(rename = "server_subscription_ttl_seconds", serialize_with = "as_secs")]
    pub server_subscription_ttl: Duration,
    /// Cluster mode: NATS for fan-out between nodes (with `redis_url`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nats_url: Option<BackendUrl>,
    /// Cluster mode: Redis for offsets, history and idempotency (with `nats_url`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_url: Option<BackendUrl>,
    #[serde(flatten)]
    pub limits: Limits,
    #[serde(flatten)]
    pub backend: BackendConfig,
    pub namespaces: Namespaces,
    /// Development mode: generated secrets, loopback only.
    #[serde(skip)]
    pub dev: bool,
    /// The config file that was read, if any.
    #[serde(skip)]
    pub config_file: Option<PathBuf>,
}

fn as_secs<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_secs())
}

fn as_millis<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

impl Config {
    /// Resolves flags and environment (`args`) over the config file over defaults.
    pub fn load(args: &ConfigArgs) -> Result<Config, ConfigError> {
        let path = file::path_in_use(args.config.as_deref());
        let mut file = FileConfig::load(path.as_deref())?;
        let mut namespaces = namespace::default_namespaces();
        namespaces.extend(std::mem::take(&mut file.namespaces));
        let v = Values::resolve(args, file, path.as_deref())?;
        let limits = Limits {
            max_connections: v.max_connections,
            max_connections_per_user: v.max_connections_per_user,
            max_subscriptions: v.max_subscriptions,
            commands_per_minute: v.commands_per_minute,
            max_message_bytes: v.max_message_bytes,
            max_json_depth: v.max_json_depth,
            client_queue_bytes: v.client_queue_bytes,
            ping_interval: Duration::from_secs(v.ping_interval_seconds),
            pong_timeout: Duration::from_secs(v.pong_timeout_seconds),
            connect_timeout: Duration::from_secs(v.connect_timeout_seconds),
            max_pending_connections: v.max_pending_connections,
            max_pending_per_ip: v.max_pending_per_ip,
            header_read_timeout: Duration::from_secs(v.header_read_timeout_seconds),
            rpc_per_minute: v.rpc_per_minute,
        };
        let backend = BackendConfig {
            // An empty value (a chart leaving it blank) means unset.
            addr: v.backend_addr.filter(|addr| !addr.is_empty()),
            timeout: Duration::from_millis(v.backend_timeout_ms),
            token: v.backend_token.filter(|token| !token.expose().is_empty()),
            tls_ca: v.backend_tls_ca.filter(|path| !path.as_os_str().is_empty()),
            methods: v.backend_methods,
            max_concurrency: v.backend_max_concurrency,
        };
        let config = Config {
            node_id: v.node_id.unwrap_or_else(default_node_id),
            http_addr: v.http_addr,
            grpc_addr: v.grpc_addr,
            metrics_addr: v.metrics_addr,
            tls: tls_config(v.tls_cert, v.tls_key)?,
            grpc_tls: v.grpc_tls,
            jwt: JwtConfig {
                secret: v.jwt_secret,
                public_key: v.jwt_public_key.map(read_pem).transpose()?,
                audience: v.jwt_audience,
                issuer: v.jwt_issuer,
            },
            api_keys: v.api_keys,
            allowed_origins: v.allowed_origins,
            log_format: v.log_format,
            drain: Duration::from_secs(v.drain_seconds),
            gap_wait: Duration::from_millis(v.gap_wait_ms),
            fanout_coalesce: Duration::from_millis(v.fanout_coalesce_ms),
            presence_ttl: Duration::from_secs(v.presence_ttl_seconds),
            presence_push_limit: v.presence_push_limit,
            presence_state_bytes: v.presence_state_bytes,
            server_subscription_ttl: Duration::from_secs(v.server_subscription_ttl_seconds),
            nats_url: v.nats_url,
            redis_url: v.redis_url,
            limits,
            backend,
            namespaces,
            dev: false,
            config_file: path,
        };
        config.validate()?;
        Ok(config)
    }

    /// What involves more than one setting; each setting's own checks are in its declaration.
    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: &str| {
            Err(ConfigError::Invalid {
                key,
                message: message.into(),
            })
        };
        match (&self.nats_url, &self.redis_url) {
            (Some(_), None) => {
                return invalid(
                    "HERALD_REDIS_URL",
                    "cluster mode needs both HERALD_NATS_URL and HERALD_REDIS_URL; HERALD_NATS_URL is set, HERALD_REDIS_URL is not",
                );
            }
            (None, Some(_)) => {
                return invalid(
                    "HERALD_NATS_URL",
                    "cluster mode needs both HERALD_NATS_URL and HERALD_REDIS_URL; HERALD_REDIS_URL is set, HERALD_NATS_URL is not",
                );
            }
            _ => {}
        }
        if self.grpc_tls && self.tls.is_none() {
            return invalid(
                "HERALD_GRPC_TLS",
                "gRPC over TLS uses the certificate of HERALD_TLS_CERT and HERALD_TLS_KEY, which are not set",
            );
        }
        for (name, rule) in &self.namespaces {
            if herald_protocol::ChannelName::parse(name).is_err() || name.contains(':') {
                return Err(ConfigError::Invalid {
                    key: "namespaces",
                    message: format!("{name:?} is not a valid namespace name"),
                });
            }
            let options = [Some(&rule.options), rule.root.as_ref()];
            if options
                .into_iter()
                .flatten()
                .any(|o| o.has_history() && o.history_ttl == 0)
            {
                return Err(ConfigError::Invalid {
                    key: "namespaces",
                    message: format!(
                        "{name}: history_ttl must be at least 1 second when history_size > 0"
                    ),
                });
            }
        }
        Ok(())
    }

    /// Checks what `serve` needs beyond a parseable configuration.
    pub fn require_credentials(&self) -> Result<(), ConfigError> {
        if self.jwt.secret.is_none() && self.jwt.public_key.is_none() {
            return Err(ConfigError::Missing("HERALD_JWT_SECRET"));
        }
        if self.api_keys.is_empty() {
            return Err(ConfigError::Missing("HERALD_API_KEYS"));
        }
        Ok(())
    }

    /// The effective configuration as TOML, secrets masked.
    pub fn to_masked_toml(&self) -> String {
        toml::to_string_pretty(self)
            .unwrap_or_else(|e| format!("# cannot render configuration: {e}\n"))
    }

    /// Whether the node runs in cluster mode (NATS and Redis).
    pub fn is_cluster(&self) -> bool {
        self.nats_url.is_some() && self.redis_url.is_some()
    }

    /// The options of a channel, or `None` when its namespace is not configured.
    pub fn channel_rule(
        &self,
        channel: &herald_protocol::ChannelName,
    ) -> Option<(&NamespaceRule, &ChannelOptions)> {
        let rule = self.namespaces.get(channel.namespace())?;
        Some((rule, rule.options_for(channel.segments().count())))
    }
}

/// TLS needs both files. An empty path (a chart leaving it blank) means unset.
fn tls_config(
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
) -> Result<Option<TlsConfig>, ConfigError> {
    let given = |path: Option<PathBuf>| path.filter(|path| !path.as_os_str().is_empty());
    let invalid = |key, message: &str| ConfigError::Invalid {
        key,
        message: message.into(),
    };
    match (given(cert), given(key)) {
        (Some(cert), Some(key)) => Ok(Some(TlsConfig {
            cert,
            key,
            reload_interval: TLS_RELOAD_INTERVAL,
        })),
        (Some(_), None) => Err(invalid(
            "HERALD_TLS_KEY",
            "TLS needs both HERALD_TLS_CERT and HERALD_TLS_KEY; HERALD_TLS_CERT is set, HERALD_TLS_KEY is not",
        )),
        (None, Some(_)) => Err(invalid(
            "HERALD_TLS_CERT",
            "TLS needs both HERALD_TLS_CERT and HERALD_TLS_KEY; HERALD_TLS_KEY is set, HERALD_TLS_CERT is not",
        )),
        (None, None) => Ok(None),
    }
}

/// A PEM given inline, or the path of a file holding one.
fn read_pem(value: String) -> Result<String, ConfigError> {
    if value.contains("-----BEGIN") {
        return Ok(value);
    }
    std::fs::read_to_string(&value).map_err(|e| ConfigError::Invalid {
        key: "HERALD_JWT_PUBLIC_KEY",
        message: format!("neither a PEM nor a readable file {value:?}: {e}"),
    })
}

fn default_node_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "herald".to_owned());
    let host: String = host.chars().take(48).collect();
    format!("{host}-{}", random_token(6).to_lowercase())
}

#[cfg(test)]
mod tests;
