//! One configuration struct, from flags, `HERALD_*` environment variables and an optional
//! TOML file, in that order of precedence, over built-in defaults.
//!
//! Flags and environment variables arrive as strings ([`ConfigArgs`]) and are parsed here,
//! so a bad value is reported by the name a user set it under (`HERALD_HTTP_ADDR`), not by
//! a parser's internal name.

mod args;
mod file;
pub mod namespace;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::{Serialize, Serializer};

use crate::random::random_token;

pub use args::ConfigArgs;
use file::FileConfig;
pub use namespace::{Access, ChannelOptions, NamespaceRule, Namespaces};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid {key}: {message}")]
    Invalid { key: &'static str, message: String },
    #[error("cannot read config file {path}: {message}")]
    File { path: PathBuf, message: String },
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
    /// Presence and online-status entries expire this long after their node last
    /// refreshed them (it refreshes every third of it).
    #[serde(rename = "presence_ttl_seconds", serialize_with = "as_secs")]
    pub presence_ttl: Duration,
    /// Cluster mode: NATS for fan-out between nodes (with `redis_url`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nats_url: Option<BackendUrl>,
    /// Cluster mode: Redis for offsets, history and idempotency (with `nats_url`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_url: Option<BackendUrl>,
    #[serde(flatten)]
    pub limits: Limits,
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
        let file = FileConfig::load(args.config.as_deref())?;
        let pick = Picker;
        let limits = Limits {
            max_connections: pick.value(
                "HERALD_MAX_CONNECTIONS",
                &args.max_connections,
                file.max_connections,
                100_000,
            )?,
            max_connections_per_user: pick.value(
                "HERALD_MAX_CONNECTIONS_PER_USER",
                &args.max_connections_per_user,
                file.max_connections_per_user,
                100,
            )?,
            max_subscriptions: pick.value(
                "HERALD_MAX_SUBSCRIPTIONS",
                &args.max_subscriptions,
                file.max_subscriptions,
                50,
            )?,
            commands_per_minute: pick.value(
                "HERALD_COMMANDS_PER_MINUTE",
                &args.commands_per_minute,
                file.commands_per_minute,
                100,
            )?,
            max_message_bytes: pick.value(
                "HERALD_MAX_MESSAGE_BYTES",
                &args.max_message_bytes,
                file.max_message_bytes,
                herald_protocol::DEFAULT_MAX_MESSAGE_BYTES,
            )?,
            max_json_depth: pick.value(
                "HERALD_MAX_JSON_DEPTH",
                &args.max_json_depth,
                file.max_json_depth,
                herald_protocol::DEFAULT_MAX_JSON_DEPTH,
            )?,
            client_queue_bytes: pick.value(
                "HERALD_CLIENT_QUEUE_BYTES",
                &args.client_queue_bytes,
                file.client_queue_bytes,
                1024 * 1024,
            )?,
            ping_interval: pick.secs(
                "HERALD_PING_INTERVAL_SECONDS",
                &args.ping_interval_seconds,
                file.ping_interval_seconds,
                25,
            )?,
            pong_timeout: pick.secs(
                "HERALD_PONG_TIMEOUT_SECONDS",
                &args.pong_timeout_seconds,
                file.pong_timeout_seconds,
                20,
            )?,
            connect_timeout: pick.secs(
                "HERALD_CONNECT_TIMEOUT_SECONDS",
                &args.connect_timeout_seconds,
                file.connect_timeout_seconds,
                5,
            )?,
            max_pending_connections: pick.value(
                "HERALD_MAX_PENDING_CONNECTIONS",
                &args.max_pending_connections,
                file.max_pending_connections,
                1000,
            )?,
            max_pending_per_ip: pick.value(
                "HERALD_MAX_PENDING_PER_IP",
                &args.max_pending_per_ip,
                file.max_pending_per_ip,
                32,
            )?,
            header_read_timeout: pick.secs(
                "HERALD_HEADER_READ_TIMEOUT_SECONDS",
                &args.header_read_timeout_seconds,
                file.header_read_timeout_seconds,
                5,
            )?,
        };
        let mut namespaces = namespace::default_namespaces();
        let tls = tls_config(&pick, args, &file)?;
        let grpc_tls = pick.value("HERALD_GRPC_TLS", &args.grpc_tls, file.grpc_tls, false)?;
        namespaces.extend(file.namespaces);
        let config = Config {
            node_id: pick.value(
                "HERALD_NODE_ID",
                &args.node_id,
                file.node_id,
                default_node_id(),
            )?,
            http_addr: pick.value(
                "HERALD_HTTP_ADDR",
                &args.http_addr,
                file.http_addr,
                addr(8080),
            )?,
            grpc_addr: pick.value(
                "HERALD_GRPC_ADDR",
                &args.grpc_addr,
                file.grpc_addr,
                addr(50051),
            )?,
            metrics_addr: pick.value(
                "HERALD_METRICS_ADDR",
                &args.metrics_addr,
                file.metrics_addr,
                addr(9090),
            )?,
            tls,
            grpc_tls,
            jwt: JwtConfig {
                secret: pick
                    .optional("HERALD_JWT_SECRET", &args.jwt_secret, file.jwt_secret)?
                    .map(Secret),
                public_key: pick
                    .optional(
                        "HERALD_JWT_PUBLIC_KEY",
                        &args.jwt_public_key,
                        file.jwt_public_key,
                    )?
                    .map(read_pem)
                    .transpose()?,
                audience: pick.optional(
                    "HERALD_JWT_AUDIENCE",
                    &args.jwt_audience,
                    file.jwt_audience,
                )?,
                issuer: pick.optional("HERALD_JWT_ISSUER", &args.jwt_issuer, file.jwt_issuer)?,
            },
            api_keys: pick
                .list("HERALD_API_KEYS", &args.api_keys, file.api_keys)?
                .into_iter()
                .map(Secret)
                .collect(),
            allowed_origins: pick.list(
                "HERALD_ALLOWED_ORIGINS",
                &args.allowed_origins,
                file.allowed_origins,
            )?,
            log_format: pick.value(
                "HERALD_LOG_FORMAT",
                &args.log_format,
                file.log_format,
                LogFormat::Pretty,
            )?,
            drain: pick.secs(
                "HERALD_DRAIN_SECONDS",
                &args.drain_seconds,
                file.drain_seconds,
                10,
            )?,
            gap_wait: Duration::from_millis(pick.value(
                "HERALD_GAP_WAIT_MS",
                &args.gap_wait_ms,
                file.gap_wait_ms,
                100,
            )?),
            presence_ttl: pick.secs(
                "HERALD_PRESENCE_TTL_SECONDS",
                &args.presence_ttl_seconds,
                file.presence_ttl_seconds,
                60,
            )?,
            nats_url: pick
                .optional("HERALD_NATS_URL", &args.nats_url, file.nats_url)?
                .map(BackendUrl),
            redis_url: pick
                .optional("HERALD_REDIS_URL", &args.redis_url, file.redis_url)?
                .map(BackendUrl),
            limits,
            namespaces,
            dev: false,
            config_file: file::path_in_use(args.config.as_deref()),
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: &str| {
            Err(ConfigError::Invalid {
                key,
                message: message.into(),
            })
        };
        if self.limits.max_message_bytes < 1024 {
            return invalid("HERALD_MAX_MESSAGE_BYTES", "must be at least 1024");
        }
        if self.limits.commands_per_minute == 0 {
            return invalid("HERALD_COMMANDS_PER_MINUTE", "must be at least 1");
        }
        if self.limits.ping_interval.is_zero() || self.limits.pong_timeout.is_zero() {
            return invalid(
                "HERALD_PING_INTERVAL_SECONDS",
                "ping interval and pong timeout must be at least 1",
            );
        }
        if self.limits.connect_timeout.is_zero() {
            return invalid("HERALD_CONNECT_TIMEOUT_SECONDS", "must be at least 1");
        }
        // An SSE client's handshake takes two connections at once: the stream, and the
        // `/rpc` POST that carries `connect`.
        if self.limits.max_pending_connections == 1 {
            return invalid(
                "HERALD_MAX_PENDING_CONNECTIONS",
                "must be 0 (unlimited) or at least 2: an SSE handshake takes two connections",
            );
        }
        if self.limits.max_pending_per_ip == 1 {
            return invalid(
                "HERALD_MAX_PENDING_PER_IP",
                "must be 0 (off) or at least 2: an SSE handshake takes two connections",
            );
        }
        if self.limits.header_read_timeout.is_zero() {
            return invalid("HERALD_HEADER_READ_TIMEOUT_SECONDS", "must be at least 1");
        }
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
        if self.presence_ttl < Duration::from_secs(3) {
            return invalid("HERALD_PRESENCE_TTL_SECONDS", "must be at least 3");
        }
        if self.node_id.is_empty() || self.node_id.len() > 64 {
            return invalid("HERALD_NODE_ID", "must be 1-64 characters");
        }
        if self.api_keys.iter().any(|key| key.expose().len() < 16) {
            return invalid(
                "HERALD_API_KEYS",
                "every key must be at least 16 characters",
            );
        }
        if let Some(secret) = &self.jwt.secret
            && secret.expose().len() < 32
        {
            return invalid(
                "HERALD_JWT_SECRET",
                "must be at least 32 characters (256 bits) for HS256",
            );
        }
        if let Err(message) = check_allowed_origins(&self.allowed_origins) {
            return Err(ConfigError::Invalid {
                key: "HERALD_ALLOWED_ORIGINS",
                message,
            });
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

    /// Development mode: generates a JWT secret and an API key when none is set, and binds
    /// loopback only, whatever the addresses say.
    pub fn into_dev(mut self) -> Config {
        self.dev = true;
        self.namespaces
            .entry("demo".into())
            .or_insert_with(crate::http::demo_namespace);
        if self.jwt.secret.is_none() && self.jwt.public_key.is_none() {
            self.jwt.secret = Some(Secret(random_token(48)));
        }
        if self.api_keys.is_empty() {
            self.api_keys.push(Secret(random_token(32)));
        }
        for addr in [
            &mut self.http_addr,
            &mut self.grpc_addr,
            &mut self.metrics_addr,
        ] {
            if !addr.ip().is_loopback() {
                addr.set_ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
            }
        }
        self
    }

    /// Every `HERALD_*` variable with its flag and effective value (secrets masked, empty
    /// when unset), one per line, for deployment tooling to check its settings against.
    pub fn to_env_listing(&self) -> String {
        use clap::Args;
        let table: toml::Table = toml::Table::try_from(self).unwrap_or_default();
        let command = ConfigArgs::augment_args(clap::Command::new("herald"));
        let mut listing = String::new();
        for arg in command.get_arguments() {
            let (Some(env), Some(flag)) = (arg.get_env(), arg.get_long()) else {
                continue;
            };
            let env = env.to_string_lossy();
            let key = env.trim_start_matches("HERALD_").to_lowercase();
            let value = match table.get(&key) {
                Some(toml::Value::String(text)) => text.clone(),
                Some(toml::Value::Array(items)) => items
                    .iter()
                    .map(|item| {
                        item.as_str()
                            .map_or_else(|| item.to_string(), str::to_owned)
                    })
                    .collect::<Vec<_>>()
                    .join(","),
                Some(other) => other.to_string(),
                None if key == "config" => self
                    .config_file
                    .as_ref()
                    .map(|path| path.display().to_string())
                    .unwrap_or_default(),
                None => String::new(),
            };
            listing.push_str(&format!("{env} --{flag} {value}\n"));
        }
        listing
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

/// Resolves one setting: flag or environment value (parsed here) over file over default.
struct Picker;

impl Picker {
    fn optional<T>(
        &self,
        key: &'static str,
        arg: &Option<String>,
        file: Option<T>,
    ) -> Result<Option<T>, ConfigError>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        match arg.as_deref() {
            Some(raw) => raw
                .trim()
                .parse()
                .map(Some)
                .map_err(|e| ConfigError::Invalid {
                    key,
                    message: format!("{raw:?}: {e}"),
                }),
            None => Ok(file),
        }
    }

    fn value<T>(
        &self,
        key: &'static str,
        arg: &Option<String>,
        file: Option<T>,
        default: T,
    ) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        Ok(self.optional(key, arg, file)?.unwrap_or(default))
    }

    fn secs(
        &self,
        key: &'static str,
        arg: &Option<String>,
        file: Option<u64>,
        default: u64,
    ) -> Result<Duration, ConfigError> {
        self.value(key, arg, file, default).map(Duration::from_secs)
    }

    /// A comma-separated flag or environment value, or a file array.
    fn list(
        &self,
        _key: &'static str,
        arg: &Option<String>,
        file: Option<Vec<String>>,
    ) -> Result<Vec<String>, ConfigError> {
        let items = match arg.as_deref() {
            Some(raw) => raw.split(',').map(|s| s.trim().to_owned()).collect(),
            None => file.unwrap_or_default(),
        };
        Ok(items.into_iter().filter(|s| !s.is_empty()).collect())
    }
}

/// Each entry must be an origin as browsers send it (`scheme://host[:port]`): anything else
/// would never match, and the client would see 4003 with no hint why. `*` (any origin, no
/// cookie tokens) must stand alone, so a list never silently loses its cookies. `null` is the
/// origin of sandboxed frames and local files, which any page can produce.
fn check_allowed_origins(origins: &[String]) -> Result<(), String> {
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

/// TLS needs both files.
fn tls_config(
    pick: &Picker,
    args: &ConfigArgs,
    file: &FileConfig,
) -> Result<Option<TlsConfig>, ConfigError> {
    // An empty value (a chart leaving it blank) means unset.
    let path = |key, arg, file: &Option<PathBuf>| {
        pick.optional::<PathBuf>(key, arg, file.clone())
            .map(|path| path.filter(|path| !path.as_os_str().is_empty()))
    };
    let cert = path("HERALD_TLS_CERT", &args.tls_cert, &file.tls_cert)?;
    let key = path("HERALD_TLS_KEY", &args.tls_key, &file.tls_key)?;
    let invalid = |key, message: &str| ConfigError::Invalid {
        key,
        message: message.into(),
    };
    match (cert, key) {
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

fn addr(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port)
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
