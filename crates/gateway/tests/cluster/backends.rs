//! Real `redis-server` and `nats-server` processes on free loopback ports, each with its
//! own temporary directory, that a test can stop (SIGKILL, as a crash) and start again on
//! the same ports. A server is killed when its value drops, also when a test panics.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// Every wait on a server (start, a command, a monitoring request) is bounded by this.
const WAIT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(20);

/// A `redis-server` without persistence, so a restart loses everything (like a failover to
/// an empty replica).
pub struct RedisServer {
    port: u16,
    process: Process,
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers PING.
    pub async fn start() -> RedisServer {
        let port = free_ports::<1>()[0];
        let process = Process::new("redis-server", port);
        let mut server = RedisServer { port, process };
        server.spawn().await;
        server
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL: nothing is saved) and waits for it to exit.
    pub async fn stop(&mut self) {
        self.process.stop().await;
    }

    /// Starts the server again on the same port, stopping it first if it runs.
    pub async fn restart(&mut self) {
        self.process.stop().await;
        self.spawn().await;
    }

    /// Bytes Redis uses for `key` (`MEMORY USAGE`, every element counted).
    pub async fn memory_usage(&self, key: &str) -> u64 {
        self.command(&["MEMORY", "USAGE", key, "SAMPLES", "0"])
            .await
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("MEMORY USAGE {key}: no such key"))
    }

    /// Deletes every key.
    pub async fn flushall(&self) {
        let reply = self.command(&["FLUSHALL"]).await;
        assert_eq!(reply, "OK", "FLUSHALL");
    }

    /// Sends one command and returns its reply as text: a simple string, an error (with
    /// its `-`), an integer, a bulk string (`(nil)` for none), or an array's items one per
    /// line.
    pub async fn command(&self, args: &[&str]) -> String {
        // QUIT after the command, so the reply ends where the connection does.
        let mut request = String::new();
        for command in [args, &["QUIT"]] {
            request.push_str(&format!("*{}\r\n", command.len()));
            for arg in command {
                request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
            }
        }
        let reply = bounded(&format!("Redis {args:?}"), async {
            let mut stream = TcpStream::connect(("127.0.0.1", self.port)).await?;
            stream.write_all(request.as_bytes()).await?;
            let mut reply = Vec::new();
            stream.read_to_end(&mut reply).await?;
            std::io::Result::Ok(reply)
        })
        .await
        .unwrap_or_else(|error| panic!("Redis {args:?} on port {}: {error}", self.port));
        let (text, _) =
            parse_resp(&reply).unwrap_or_else(|| panic!("unparsable reply to {args:?}: {reply:?}"));
        text
    }

    async fn spawn(&mut self) {
        let port = self.port.to_string();
        let dir = self.process.dir.clone();
        self.process.spawn(|command| {
            command
                .args(["--port", &port, "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(&dir);
        });
        let port = self.port;
        self.process
            .wait_ready(|| async move { redis_pong(port).await })
            .await;
    }
}

/// A `nats-server` with its monitoring endpoint.
pub struct NatsServer {
    port: u16,
    monitoring_port: u16,
    process: Process,
}

impl NatsServer {
    /// Starts a server on free ports and waits until both the client and the monitoring
    /// port answer.
    pub async fn start() -> NatsServer {
        let [port, monitoring_port] = free_ports::<2>();
        let process = Process::new("nats-server", port);
        let mut server = NatsServer {
            port,
            monitoring_port,
            process,
        };
        server.spawn().await;
        server
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn monitoring_port(&self) -> u16 {
        self.monitoring_port
    }

    pub fn monitoring_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.monitoring_port)
    }

    /// Kills the server and waits for it to exit.
    pub async fn stop(&mut self) {
        self.process.stop().await;
    }

    /// Starts the server again on the same ports, stopping it first if it runs.
    pub async fn restart(&mut self) {
        self.process.stop().await;
        self.spawn().await;
    }

    /// Subscriptions held by client connections. The server's own (system account)
    /// subscriptions, which `/subsz` also counts, are left out, so a fresh server has 0.
    pub async fn subscriptions(&self) -> u64 {
        let body = self.monitoring_get("/connz?limit=100000").await;
        let connz: serde_json::Value = serde_json::from_slice(&body)
            .unwrap_or_else(|error| panic!("/connz is not JSON ({error}): {body:?}"));
        connz["connections"]
            .as_array()
            .expect("/connz lists connections")
            .iter()
            .map(|connection| connection["subscriptions"].as_u64().unwrap_or(0))
            .sum()
    }

    /// The body of a monitoring endpoint (HTTP/1.0, so the body ends with the connection).
    async fn monitoring_get(&self, path: &str) -> Vec<u8> {
        let response = bounded(&format!("GET {path}"), http_get(self.monitoring_port, path))
            .await
            .unwrap_or_else(|error| panic!("GET {path} on NATS monitoring: {error}"));
        let start = response
            .windows(4)
            .position(|window| window == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("GET {path}: no HTTP body in {response:?}"));
        assert!(
            response.starts_with(b"HTTP/1.0 200") || response.starts_with(b"HTTP/1.1 200"),
            "GET {path}: {}",
            String::from_utf8_lossy(&response[..start])
        );
        response[start + 4..].to_vec()
    }

    async fn spawn(&mut self) {
        let (port, monitoring) = (self.port, self.monitoring_port);
        self.process.spawn(|command| {
            command
                .args(["-a", "127.0.0.1"])
                .args(["-p", &port.to_string()])
                .args(["-m", &monitoring.to_string()]);
        });
        self.process
            .wait_ready(|| async move {
                nats_info(port).await && http_get(monitoring, "/healthz").await.is_ok()
            })
            .await;
    }
}

/// A server process: its binary, its directory (working directory and log), and the
/// running child, killed on drop.
struct Process {
    name: &'static str,
    binary: PathBuf,
    dir: PathBuf,
    child: Option<Child>,
}

impl Process {
    fn new(name: &'static str, port: u16) -> Process {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "herald-{name}-{}-{port}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|error| panic!("create {}: {error}", dir.display()));
        Process {
            name,
            binary: find_binary(name),
            dir,
            child: None,
        }
    }

    fn log(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    fn spawn(&mut self, args: impl FnOnce(&mut Command)) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())
            .expect("server log opens");
        let mut command = Command::new(&self.binary);
        args(&mut command);
        command
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle clones"))
            .stderr(log)
            .kill_on_drop(true);
        let child = command
            .spawn()
            .unwrap_or_else(|error| panic!("spawn {}: {error}", self.binary.display()));
        self.child = Some(child);
    }

    /// Polls `ready` until it holds, failing with the server's log if the process exits
    /// or [`WAIT`] passes first.
    async fn wait_ready<F, Fut>(&mut self, ready: F)
    where
        F: Fn() -> Fut,
        Fut: Future<Output = bool>,
    {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let child = self.child.as_mut().expect("spawned");
            if let Some(status) = child.try_wait().expect("child status") {
                panic!(
                    "{} exited during startup ({status}); log:\n{}",
                    self.name,
                    read_log(&self.log())
                );
            }
            if ready().await {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "{} not ready after {WAIT:?}; log:\n{}",
                    self.name,
                    read_log(&self.log())
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            bounded(&format!("{} to exit", self.name), child.kill())
                .await
                .unwrap_or_else(|error| panic!("kill {}: {error}", self.name));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            // `kill_on_drop` would too; killing here makes it explicit and immediate, and
            // `try_wait` reaps it when it is already gone.
            let _ = child.start_kill();
            let _ = child.try_wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `name` on PATH or in the usual system directories (redis-server is in /usr/bin and
/// nats-server in /usr/sbin on Debian, not always on a test runner's PATH).
fn find_binary(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{name} not found; install it: apt-get install redis-server nats-server \
                 (./scripts/test does this)"
            )
        })
}

/// `N` distinct free loopback ports (all held open together, so they differ).
fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
        .collect();
    std::array::from_fn(|i| listeners[i].local_addr().expect("local addr").port())
}

async fn bounded<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, future)
        .await
        .unwrap_or_else(|_| panic!("timed out after {WAIT:?} waiting for {what}"))
}

async fn redis_pong(port: u16) -> bool {
    let attempt = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
        stream.write_all(b"PING\r\n").await?;
        let mut reply = [0; 7];
        stream.read_exact(&mut reply).await?;
        std::io::Result::Ok(&reply == b"+PONG\r\n")
    };
    matches!(tokio::time::timeout(POLL * 10, attempt).await, Ok(Ok(true)))
}

async fn nats_info(port: u16) -> bool {
    let attempt = async {
        let stream = TcpStream::connect(("127.0.0.1", port)).await?;
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).await?;
        std::io::Result::Ok(line.starts_with("INFO "))
    };
    matches!(tokio::time::timeout(POLL * 10, attempt).await, Ok(Ok(true)))
}

async fn http_get(port: u16, path: &str) -> std::io::Result<Vec<u8>> {
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect(address).await?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    Ok(response)
}

/// One RESP2 reply from the start of `bytes`, as text, and the bytes after it.
fn parse_resp(bytes: &[u8]) -> Option<(String, &[u8])> {
    let end = bytes.windows(2).position(|window| window == b"\r\n")?;
    let line = std::str::from_utf8(&bytes[1..end]).ok()?;
    let rest = &bytes[end + 2..];
    match bytes.first()? {
        b'+' | b':' => Some((line.to_owned(), rest)),
        b'-' => Some((format!("-{line}"), rest)),
        b'$' => {
            let Ok(len) = line.parse::<usize>() else {
                return Some(("(nil)".to_owned(), rest));
            };
            let value = String::from_utf8_lossy(rest.get(..len)?).into_owned();
            Some((value, rest.get(len + 2..)?))
        }
        b'*' => {
            let count = line.parse::<i64>().ok()?;
            let mut items = Vec::new();
            let mut rest = rest;
            for _ in 0..count.max(0) {
                let (item, after) = parse_resp(rest)?;
                items.push(item);
                rest = after;
            }
            Some((items.join("\n"), rest))
        }
        _ => None,
    }
}

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|error| format!("(no log: {error})"))
}

#[tokio::test]
async fn nats_server_counts_client_subscriptions_and_restarts_on_its_ports() {
    let mut nats = NatsServer::start().await;
    assert_eq!(
        nats.subscriptions().await,
        0,
        "a fresh server has no client subscriptions"
    );
    assert!(
        nats.monitoring_url()
            .ends_with(&nats.monitoring_port().to_string())
    );

    // A raw NATS client: CONNECT, two SUBs, and PING so the PONG proves they are applied.
    let port: u16 = nats.url().rsplit(':').next().unwrap().parse().unwrap();
    let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut stream = BufReader::new(stream);
    let mut line = String::new();
    stream.read_line(&mut line).await.unwrap();
    stream
        .get_mut()
        .write_all(b"CONNECT {\"verbose\":false}\r\nSUB a 1\r\nSUB b.> 2\r\nPING\r\n")
        .await
        .unwrap();
    line.clear();
    bounded("PONG", stream.read_line(&mut line)).await.unwrap();
    assert_eq!(line, "PONG\r\n");
    assert_eq!(nats.subscriptions().await, 2);

    nats.stop().await;
    assert!(!nats_info(port).await, "a stopped server does not answer");
    nats.restart().await;
    assert_eq!(nats.url(), format!("nats://127.0.0.1:{port}"));
    assert_eq!(
        nats.subscriptions().await,
        0,
        "subscriptions died with the server"
    );
}

#[tokio::test]
async fn redis_server_flushes_and_restarts_empty_on_its_port() {
    let mut redis = RedisServer::start().await;
    assert_eq!(redis.command(&["SET", "k", "v"]).await, "OK");
    assert_eq!(redis.command(&["GET", "k"]).await, "v");
    redis.flushall().await;
    assert_eq!(redis.command(&["GET", "k"]).await, "(nil)");
    assert_eq!(redis.command(&["SET", "k", "v"]).await, "OK");

    redis.stop().await;
    assert!(
        !redis_pong(redis.port()).await,
        "a stopped server does not answer"
    );
    redis.restart().await;
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{}", redis.port()));
    assert_eq!(
        redis.command(&["EXISTS", "k"]).await,
        "0",
        "nothing persisted"
    );
}
