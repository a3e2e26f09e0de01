//! A spawned server process (a gateway node, `nats-server`, `redis-server`): its log file, a
//! bounded wait until it is ready, and a kill when its value drops, so a failed test, an
//! error or Ctrl-C (which drops what was running) never leaves it behind.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::process::{Child, Command};

/// How long one readiness probe may take, and the pause between probes.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
const PROBE_INTERVAL: Duration = Duration::from_millis(20);

/// A spawned child process writing stdout and stderr to its log file; killed, and its log
/// removed, when dropped.
pub struct Process {
    /// How messages name it: "gateway", "node A", "redis-server".
    name: String,
    pid: u32,
    log_path: PathBuf,
    child: Child,
}

impl Process {
    /// Spawns `command` with stdin closed and stdout and stderr appended to `log_path`
    /// (its directory is created).
    pub fn spawn(name: &str, mut command: Command, log_path: PathBuf) -> Result<Process> {
        if let Some(dir) = log_path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        let program = command.as_std().get_program().to_owned();
        let spawned = command
            .spawn()
            .with_context(|| format!("spawning {}", Path::new(&program).display()))
            .and_then(|child| {
                let pid = child
                    .id()
                    .with_context(|| format!("the {name} exited as soon as it started"))?;
                Ok((child, pid))
            });
        let (child, pid) = spawned.inspect_err(|_| remove_log(&log_path))?;
        Ok(Process {
            name: name.to_owned(),
            pid,
            log_path,
            child,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Runs `probe` until it succeeds, the process exits, or `timeout` passes; `what` names
    /// the probe in the error (e.g. "/readyz"). A probe's error is its last answer. The
    /// error carries the log's last lines.
    pub async fn wait_ready<F: Future<Output = Result<()>>>(
        &mut self,
        timeout: Duration,
        what: &str,
        mut probe: impl FnMut() -> F,
    ) -> Result<()> {
        let started = Instant::now();
        loop {
            self.check_alive()?;
            let last = match tokio::time::timeout(PROBE_TIMEOUT, probe()).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(error)) => error.to_string(),
                Err(_) => format!("no answer within {PROBE_TIMEOUT:?}"),
            };
            if started.elapsed() > timeout {
                bail!(
                    "the {} was not ready after {timeout:?} (last {what}: {last}); log {}:\n{}",
                    self.name,
                    self.log_path.display(),
                    self.log_tail()
                );
            }
            tokio::time::sleep(PROBE_INTERVAL).await;
        }
    }

    /// Fails if the process has exited, with its status and log tail.
    pub fn check_alive(&mut self) -> Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => bail!(
                "the {} (pid {}) exited with {status}; log {}:\n{}",
                self.name,
                self.pid,
                self.log_path.display(),
                self.log_tail()
            ),
            Err(error) => bail!("cannot check the {} process: {error}", self.name),
        }
    }

    /// The last lines of the log.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Prints the log's last lines to stderr (after a failed run).
    pub fn print_log_tail(&self) {
        eprintln!(
            "{} log {} (last lines):\n{}",
            self.name,
            self.log_path.display(),
            self.log_tail()
        );
    }

    /// SIGKILL (nothing saved, no drain) and a wait, at most `limit`, for the exit.
    pub async fn kill(&mut self, limit: Duration) -> Result<()> {
        let _ = self.child.start_kill();
        tokio::time::timeout(limit, self.child.wait())
            .await
            .with_context(|| format!("the {} did not exit within {limit:?}", self.name))?
            .with_context(|| format!("waiting for the {} to exit", self.name))?;
        Ok(())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // `kill_on_drop` would too; killing here makes it immediate, and `try_wait` reaps
        // the child when it is already gone.
        let _ = self.child.start_kill();
        let _ = self.child.try_wait();
        remove_log(&self.log_path);
    }
}

/// Removes a log, and its directory with it once that is empty.
fn remove_log(log_path: &Path) {
    let _ = std::fs::remove_file(log_path);
    if let Some(dir) = log_path.parent() {
        let _ = std::fs::remove_dir(dir);
    }
}

/// A directory path in the temporary directory unique to this process and call:
/// `<prefix>-<pid>-<n>` (not created).
pub fn unique_dir(prefix: &str) -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    std::env::temp_dir().join(format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ))
}

/// `name` on `PATH`, else in the usual system directories (Debian puts `redis-server` in
/// /usr/bin and `nats-server` in /usr/sbin, which is not on every user's `PATH`).
pub fn find_binary(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}
