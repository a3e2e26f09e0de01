//! What a scenario spawns (a gateway, a cluster and its backends), as `herald-testkit`
//! processes: each logs to its own file in one directory, `herald-loadtest-<pid>` in the
//! temporary directory, is killed when it drops (so an error or Ctrl-C, which drops the
//! running scenario, never leaves it behind), and removes its log then.

use std::future::Future;
use std::path::PathBuf;

use anyhow::{Context, Result};

/// The directory of this run's logs (and working directory of its processes), created.
pub fn run_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("herald-loadtest-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// What a scenario spawned (a gateway, a cluster): its logs are printed when the scenario
/// fails, and it is stopped when it ends.
pub trait Servers {
    fn print_log_tails(&self);
    fn shutdown(self) -> impl Future<Output = ()>;
}

/// Runs `measure` against `servers`, prints their last log lines if it fails, and stops
/// them.
pub async fn run_with<S: Servers>(
    mut servers: S,
    measure: impl AsyncFnOnce(&mut S) -> Result<()>,
) -> Result<()> {
    let result = measure(&mut servers).await;
    if result.is_err() {
        servers.print_log_tails();
    }
    servers.shutdown().await;
    // The processes took their logs with them; the nodes' herald.toml is the last file.
    if let Ok(dir) = run_dir() {
        let _ = std::fs::remove_file(dir.join("herald.toml"));
        let _ = std::fs::remove_dir(dir);
    }
    result
}
