//! The `herald` binary as a child process: its commands, and `herald serve` on ports the
//! system picks, with its log lines as they come.

use std::net::SocketAddr;
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::tokens::{API_KEY, SECRET};
use crate::within;

/// `bin` (the `herald` binary) with an empty environment but `PATH`, killed on drop.
pub fn herald(bin: &str) -> Command {
    let mut command = Command::new(bin);
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .kill_on_drop(true);
    command
}

/// `herald serve` (binary `bin`) with the test secret and API key, on ports the system
/// picks; not started.
pub fn serve_command(bin: &str) -> Command {
    let mut command = herald(bin);
    command
        .arg("serve")
        .env("HERALD_HTTP_ADDR", "127.0.0.1:0")
        .env("HERALD_GRPC_ADDR", "127.0.0.1:0")
        .env("HERALD_METRICS_ADDR", "127.0.0.1:0")
        .env("HERALD_JWT_SECRET", SECRET)
        .env("HERALD_API_KEYS", API_KEY);
    command
}

/// A `herald serve` started by [`serve`], serving: the process, its log lines, and the
/// addresses it bound.
pub struct Served {
    pub child: Child,
    pub logs: LogLines,
    pub http: SocketAddr,
    pub grpc: SocketAddr,
    pub metrics: SocketAddr,
}

/// Starts `herald serve` (binary `bin`) with the test secret and API key, JSON logs and
/// whatever `configure` adds, on ports the system picks (port 0: no other test can take
/// them in between), and returns once it logs "serving", with the addresses from that line.
pub async fn serve(bin: &str, configure: impl FnOnce(&mut Command)) -> Served {
    let mut command = serve_command(bin);
    command
        .env("HERALD_LOG_FORMAT", "json")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    configure(&mut command);
    let mut child = command.spawn().expect("herald starts");
    let mut logs = LogLines::capture(&mut child);
    let serving: serde_json::Value =
        serde_json::from_str(&logs.line("serving").await).expect("the serving log line is JSON");
    let address = |name: &str| -> SocketAddr {
        serving["fields"][name]
            .as_str()
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("no {name} address in {serving}"))
    };
    Served {
        http: address("http"),
        grpc: address("grpc"),
        metrics: address("metrics"),
        child,
        logs,
    }
}

/// A child's log lines (stdout and stderr), as they come.
pub struct LogLines(tokio::sync::mpsc::UnboundedReceiver<String>);

impl LogLines {
    /// Takes the child's piped stdout and stderr. With `HERALD_TEST_LOGS` set, each line is
    /// also printed, for a test that needs debugging.
    pub fn capture(child: &mut Child) -> LogLines {
        let echo = std::env::var_os("HERALD_TEST_LOGS").is_some();
        let (lines, receiver) = tokio::sync::mpsc::unbounded_channel();
        let stdout = child.stdout.take().map(|out| Box::new(out) as Box<_>);
        let stderr = child.stderr.take().map(|err| Box::new(err) as Box<_>);
        for output in [stdout, stderr].into_iter().flatten() {
            let output: Box<dyn tokio::io::AsyncRead + Unpin + Send> = output;
            let lines = lines.clone();
            // Reads to the end, so the child never blocks on a full pipe.
            tokio::spawn(async move {
                let mut reader = BufReader::new(output).lines();
                while let Ok(Some(line)) = reader.next_line().await {
                    if echo {
                        eprintln!("{line}");
                    }
                    let _ = lines.send(line);
                }
            });
        }
        LogLines(receiver)
    }

    /// Waits for the log line with this message (JSON log format).
    pub async fn message(&mut self, message: &str) {
        self.line(message).await;
    }

    /// Waits for the log line with this message (JSON log format) and returns it.
    pub async fn line(&mut self, message: &str) -> String {
        let wanted = format!("\"message\":\"{message}\"");
        within(&format!("the log line {wanted}"), async {
            loop {
                match self.0.recv().await {
                    Some(line) if line.contains(&wanted) => return line,
                    Some(_) => continue,
                    None => panic!("herald's output ended before {wanted}"),
                }
            }
        })
        .await
    }
}
