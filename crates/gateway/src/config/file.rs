//! The optional TOML config file. Unknown keys are errors, so a typo is reported rather than
//! silently ignored.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::namespace::Namespaces;
use super::{ConfigError, LogFormat};

const DEFAULT_PATH: &str = "herald.toml";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileConfig {
    pub node_id: Option<String>,
    pub http_addr: Option<SocketAddr>,
    pub grpc_addr: Option<SocketAddr>,
    pub metrics_addr: Option<SocketAddr>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub grpc_tls: Option<bool>,
    pub jwt_secret: Option<String>,
    pub jwt_public_key: Option<String>,
    pub jwt_audience: Option<String>,
    pub jwt_issuer: Option<String>,
    pub api_keys: Option<Vec<String>>,
    pub allowed_origins: Option<Vec<String>>,
    pub log_format: Option<LogFormat>,
    pub drain_seconds: Option<u64>,
    pub gap_wait_ms: Option<u64>,
    pub presence_ttl_seconds: Option<u64>,
    pub nats_url: Option<String>,
    pub redis_url: Option<String>,
    pub max_connections: Option<usize>,
    pub max_connections_per_user: Option<usize>,
    pub max_subscriptions: Option<usize>,
    pub commands_per_minute: Option<u32>,
    pub max_message_bytes: Option<usize>,
    pub max_json_depth: Option<usize>,
    pub client_queue_bytes: Option<usize>,
    pub ping_interval_seconds: Option<u64>,
    pub pong_timeout_seconds: Option<u64>,
    pub connect_timeout_seconds: Option<u64>,
    pub max_pending_connections: Option<usize>,
    pub max_pending_per_ip: Option<usize>,
    pub header_read_timeout_seconds: Option<u64>,
    #[serde(default)]
    pub namespaces: Namespaces,
}

/// The file `FileConfig::load` reads for `path`: it, or `./herald.toml` when it exists.
pub(super) fn path_in_use(path: Option<&Path>) -> Option<std::path::PathBuf> {
    match path {
        Some(path) => Some(path.to_owned()),
        None => Path::new(DEFAULT_PATH)
            .exists()
            .then(|| DEFAULT_PATH.into()),
    }
}

impl FileConfig {
    /// Reads `path`, or `./herald.toml` when no path is given and it exists.
    pub fn load(path: Option<&Path>) -> Result<FileConfig, ConfigError> {
        let path = match path {
            Some(path) => path,
            None if Path::new(DEFAULT_PATH).exists() => Path::new(DEFAULT_PATH),
            None => return Ok(FileConfig::default()),
        };
        let file_error = |message: String| ConfigError::File {
            path: path.to_owned(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| file_error(e.to_string()))?;
        toml::from_str(&text).map_err(|e| file_error(e.to_string()))
    }
}
