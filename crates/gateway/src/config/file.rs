//! The optional TOML config file; `FileConfig` is declared by `settings!`.

use std::path::{Path, PathBuf};

use super::ConfigError;
use super::settings::FileConfig;

const DEFAULT_PATH: &str = "herald.toml";

/// The file to read for `path`: it, or `./herald.toml` when it exists.
pub(super) fn path_in_use(path: Option<&Path>) -> Option<PathBuf> {
    match path {
        Some(path) => Some(path.to_owned()),
        None => Path::new(DEFAULT_PATH)
            .exists()
            .then(|| DEFAULT_PATH.into()),
    }
}

impl FileConfig {
    /// Reads `path` (from [`path_in_use`]); no path, no settings.
    pub fn load(path: Option<&Path>) -> Result<FileConfig, ConfigError> {
        let Some(path) = path else {
            return Ok(FileConfig::default());
        };
        let file_error = |message: String| ConfigError::File {
            path: path.to_owned(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| file_error(e.to_string()))?;
        toml::from_str(&text).map_err(|e| file_error(e.to_string()))
    }
}
