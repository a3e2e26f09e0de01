//! A server the load generator spawns (a gateway node, `nats-server`, `redis-server`): its
//! log file, a bounded wait until it is ready, and a kill when it drops, so an error or
//! Ctrl-C (which drops the running scenario) never leaves it behind.
//!
//! Every process of one run logs to its own file in one directory,
//! `herald-loadtest-<pid>` in the temporary directory; a process removes its log when it
//! drops, and the directory goes with the last one.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::process::{Child, Command};

/// How long one readiness probe may take, and the pause between probes.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
const PROBE_INTERVAL: Duration = Duration::from_millis(50);

/// A spawned child process; killed when dropped.
pub struct Process {
    /// How messages name it: "gateway", "node A", "nats-server".
    pub name: String,
    pub pid: u32,
    pub log_path: PathBuf,
    child: Child,
}

impl Process {
    /// The directory of this run's logs (and working directory of its processes), created.
    pub fn run_dir() -> Result<PathBuf> {
        let dir = std::env::temp_dir().join(format!("herald-loadtest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(dir)
    }

    /// Spawns `command` with stdin closed and stdout and stderr into `<run dir>/<log_file>`.
    pub fn spawn(name: &str, mut command: Command, log_file: &str) -> Result<Process> {
        let log_path = Process::run_dir()?.join(log_file);
        let log = std::fs::File::create(&log_path)
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

    /// Runs `probe` until it succeeds, the process exits, or `timeout` passes; `what` names
    /// the probe in the error (e.g. "/readyz"). A probe's error is its last answer.
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
                Ok(Ok(())) => {
                    eprintln!("{} ready after {:.2?}", self.name, started.elapsed());
                    return Ok(());
                }
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

    /// Kills the process and waits (bounded) for it to exit; the log goes on drop.
    pub async fn shutdown(mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // `kill_on_drop` kills the child after this.
        remove_log(&self.log_path);
    }
}

/// Removes a log, and the run directory with it once that is empty.
fn remove_log(log_path: &Path) {
    let _ = std::fs::remove_file(log_path);
    if let Some(dir) = log_path.parent() {
        let _ = std::fs::remove_dir(dir);
    }
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
    result
}

/// `name` on `PATH`, else in /usr/bin or /usr/sbin (Debian puts `nats-server` in /usr/sbin,
/// which is not on every user's `PATH`).
pub fn find_binary(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}
