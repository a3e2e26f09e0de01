//! Real `redis-server` and `nats-server` processes on free loopback ports, each logging to
//! its own directory, that a test can stop (SIGKILL, as a crash) and start again on the same
//! ports. A server is killed when its value drops, also when a test panics.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use fred::prelude::{Builder, ClientLike, Config, Value};
use fred::types::{ClusterHash, CustomCommand};
use tokio::io::AsyncBufReadExt;
use tokio::net::TcpStream;
use tokio::process::Command;

use crate::ports::free_addrs;
use crate::process::{Process, find_binary, unique_dir};
use crate::{WAIT, within};

/// How a server is started.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// The binary [default: found on `PATH` or in the system directories].
    pub binary: Option<PathBuf>,
    /// Its working directory, where its log goes [default: a new temporary directory].
    pub dir: Option<PathBuf>,
    /// How long it may take to answer after a start.
    pub ready_timeout: Duration,
}

impl Default for ServerOptions {
    fn default() -> ServerOptions {
        ServerOptions {
            binary: None,
            dir: None,
            ready_timeout: WAIT,
        }
    }
}

/// What a server needs to start again the same way: binary, directory, readiness patience.
struct Launch {
    name: &'static str,
    binary: PathBuf,
    dir: PathBuf,
    ready_timeout: Duration,
}

impl Launch {
    fn new(name: &'static str, options: &ServerOptions) -> Result<Launch> {
        let binary = match &options.binary {
            Some(binary) => binary.clone(),
            None => find_binary(name).with_context(|| {
                format!(
                    "{name} not found on PATH or in the system directories; install it: \
                     apt-get install redis-server nats-server (./scripts/test does this)"
                )
            })?,
        };
        let dir = options
            .dir
            .clone()
            .unwrap_or_else(|| unique_dir(&format!("herald-{name}")));
        Ok(Launch {
            name,
            binary,
            dir,
            ready_timeout: options.ready_timeout,
        })
    }

    fn spawn(&self, args: &[String]) -> Result<Process> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        let mut command = Command::new(&self.binary);
        command.args(args).current_dir(&self.dir);
        let log = self.dir.join(format!("{}.log", self.name));
        Process::spawn(self.name, command, log)
    }
}

/// A `redis-server` without persistence, so a restart loses everything (like a failover to
/// an empty replica).
pub struct RedisServer {
    port: u16,
    launch: Launch,
    process: Option<Process>,
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers PING.
    pub async fn start() -> RedisServer {
        RedisServer::start_with(&ServerOptions::default())
            .await
            .unwrap_or_else(|error| panic!("{error:#}"))
    }

    /// Like [`RedisServer::start`], as `options` say, failing with the server's log.
    pub async fn start_with(options: &ServerOptions) -> Result<RedisServer> {
        let [addr] = free_addrs().context("finding a free port")?;
        let mut server = RedisServer {
            port: addr.port(),
            launch: Launch::new("redis-server", options)?,
            process: None,
        };
        server.spawn().await?;
        Ok(server)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The running process (none while stopped).
    pub fn process(&self) -> Option<&Process> {
        self.process.as_ref()
    }

    /// The running process, to check on it (none while stopped).
    pub fn process_mut(&mut self) -> Option<&mut Process> {
        self.process.as_mut()
    }

    /// Kills the server (SIGKILL: nothing is saved) and waits for it to exit.
    pub async fn stop(&mut self) {
        stop(&mut self.process).await;
    }

    /// Starts the server again on the same port, stopping it first if it runs.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.spawn()
            .await
            .unwrap_or_else(|error| panic!("{error:#}"));
    }

    /// Whether the server answers PING.
    pub async fn answers(&self) -> bool {
        matches!(
            tokio::time::timeout(Duration::from_secs(2), self.send(&["PING"])).await,
            Ok(Ok(reply)) if reply == "PONG"
        )
    }

    /// Bytes Redis uses for `key` (`MEMORY USAGE`, every element counted).
    pub async fn memory_usage(&self, key: &str) -> u64 {
        self.command(&["MEMORY", "USAGE", key, "SAMPLES", "0"])
            .await
            .parse()
            .unwrap_or_else(|_| panic!("MEMORY USAGE {key}: no such key"))
    }

    /// Deletes every key.
    pub async fn flushall(&self) {
        let reply = self.command(&["FLUSHALL"]).await;
        assert_eq!(reply, "OK", "FLUSHALL");
    }

    /// Sends one command on a connection of its own (so it goes through even while another
    /// client is paused or blocked) and returns its reply as text: a string or integer,
    /// `(nil)` for none, or an array's items one per line. Fails the test on an error reply.
    pub async fn command(&self, args: &[&str]) -> String {
        self.query(args)
            .await
            .unwrap_or_else(|error| panic!("{error:#}"))
    }

    /// [`RedisServer::command`] for callers that handle errors, bounded by [`WAIT`].
    pub async fn query(&self, args: &[&str]) -> Result<String> {
        tokio::time::timeout(WAIT, self.send(args))
            .await
            .with_context(|| format!("no reply within {WAIT:?}"))
            .and_then(|reply| reply)
            .with_context(|| format!("Redis {args:?} on port {}", self.port))
    }

    async fn send(&self, args: &[&str]) -> Result<String> {
        let (command, args) = args.split_first().context("an empty command")?;
        // No reconnect policy: on a server that is down the command fails, it does not wait.
        let client = Builder::from_config(Config::from_url(&self.url())?).build()?;
        client.init().await?;
        let command = CustomCommand::new(command.to_string(), ClusterHash::Random, false);
        let reply = client.custom::<Value, _>(command, args.to_vec()).await;
        let _ = client.quit().await;
        Ok(text(reply?))
    }

    async fn spawn(&mut self) -> Result<()> {
        let dir = self.launch.dir.to_string_lossy().into_owned();
        let args = [
            "--port",
            &self.port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            &dir,
        ]
        .map(str::to_owned);
        let mut process = self.launch.spawn(&args)?;
        let timeout = self.launch.ready_timeout;
        // On failure `process` drops here, which kills it.
        process
            .wait_ready(timeout, "PING", || async {
                if self.answers().await {
                    Ok(())
                } else {
                    bail!("no PONG")
                }
            })
            .await?;
        self.process = Some(process);
        Ok(())
    }
}

/// A reply as text, the way `redis-cli` prints it (arrays one item a line).
fn text(reply: Value) -> String {
    match reply {
        Value::Null => "(nil)".to_owned(),
        Value::Array(items) => items.into_iter().map(text).collect::<Vec<_>>().join("\n"),
        other => other
            .as_str_lossy()
            .map(|text| text.into_owned())
            .unwrap_or_else(|| format!("{other:?}")),
    }
}

/// A `nats-server` with its monitoring endpoint.
pub struct NatsServer {
    port: u16,
    monitoring_port: u16,
    /// A configuration file's text (say, an `authorization` block), kept for restarts.
    config: Option<String>,
    launch: Launch,
    process: Option<Process>,
}

impl NatsServer {
    /// Starts a server on free ports and waits until both the client and the monitoring
    /// port answer.
    pub async fn start() -> NatsServer {
        NatsServer::start_with(&ServerOptions::default())
            .await
            .unwrap_or_else(|error| panic!("{error:#}"))
    }

    /// Like [`NatsServer::start`], as `options` say, failing with the server's log.
    pub async fn start_with(options: &ServerOptions) -> Result<NatsServer> {
        NatsServer::launch(options, None).await
    }

    /// Like [`NatsServer::start`], with `config` as its configuration file (addresses and
    /// ports still come from the command line, which overrides the file).
    pub async fn start_with_config(config: &str) -> NatsServer {
        NatsServer::launch(&ServerOptions::default(), Some(config.to_owned()))
            .await
            .unwrap_or_else(|error| panic!("{error:#}"))
    }

    async fn launch(options: &ServerOptions, config: Option<String>) -> Result<NatsServer> {
        let [addr, monitoring] = free_addrs().context("finding free ports")?;
        let mut server = NatsServer {
            port: addr.port(),
            monitoring_port: monitoring.port(),
            config,
            launch: Launch::new("nats-server", options)?,
            process: None,
        };
        server.spawn().await?;
        Ok(server)
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The URL with a user and password, for a server started with an `authorization` block.
    pub fn url_as(&self, user: &str, password: &str) -> String {
        format!("nats://{user}:{password}@127.0.0.1:{}", self.port)
    }

    pub fn monitoring_port(&self) -> u16 {
        self.monitoring_port
    }

    pub fn monitoring_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.monitoring_port)
    }

    /// The running process (none while stopped).
    pub fn process(&self) -> Option<&Process> {
        self.process.as_ref()
    }

    /// The running process, to check on it (none while stopped).
    pub fn process_mut(&mut self) -> Option<&mut Process> {
        self.process.as_mut()
    }

    /// Kills the server and waits for it to exit.
    pub async fn stop(&mut self) {
        stop(&mut self.process).await;
    }

    /// Starts the server again on the same ports, stopping it first if it runs.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.spawn()
            .await
            .unwrap_or_else(|error| panic!("{error:#}"));
    }

    /// Whether the server greets a client with `INFO`.
    pub async fn answers(&self) -> bool {
        let greeting = async {
            let stream = TcpStream::connect(("127.0.0.1", self.port)).await?;
            let mut line = String::new();
            tokio::io::BufReader::new(stream)
                .read_line(&mut line)
                .await?;
            std::io::Result::Ok(line.starts_with("INFO "))
        };
        matches!(
            tokio::time::timeout(Duration::from_secs(2), greeting).await,
            Ok(Ok(true))
        )
    }

    /// Subscriptions held by client connections. The server's own (system account)
    /// subscriptions, which `/subsz` also counts, are left out, so a fresh server has 0.
    pub async fn subscriptions(&self) -> u64 {
        let body = self.monitoring_get("/connz?limit=100000").await;
        let connz: serde_json::Value = serde_json::from_str(&body)
            .unwrap_or_else(|error| panic!("/connz is not JSON ({error}): {body:?}"));
        connz["connections"]
            .as_array()
            .expect("/connz lists connections")
            .iter()
            .map(|connection| connection["subscriptions"].as_u64().unwrap_or(0))
            .sum()
    }

    /// The body of a monitoring endpoint.
    async fn monitoring_get(&self, path: &str) -> String {
        let (status, body) = within(
            &format!("GET {path}"),
            crate::http::get(self.monitoring_addr(), path),
        )
        .await
        .unwrap_or_else(|error| panic!("GET {path} on NATS monitoring: {error:#}"));
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    fn monitoring_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.monitoring_port))
    }

    async fn spawn(&mut self) -> Result<()> {
        let mut args = [
            "-a",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-m",
            &self.monitoring_port.to_string(),
        ]
        .map(str::to_owned)
        .to_vec();
        if let Some(config) = &self.config {
            std::fs::create_dir_all(&self.launch.dir)
                .with_context(|| format!("creating {}", self.launch.dir.display()))?;
            let path = self.launch.dir.join("nats.conf");
            std::fs::write(&path, config).with_context(|| format!("writing {}", path.display()))?;
            args.extend(["-c".to_owned(), path.to_string_lossy().into_owned()]);
        }
        let mut process = self.launch.spawn(&args)?;
        let timeout = self.launch.ready_timeout;
        let monitoring = self.monitoring_addr();
        let server = &*self;
        process
            .wait_ready(timeout, "INFO and /healthz", || async move {
                if !server.answers().await {
                    bail!("no INFO greeting");
                }
                match crate::http::get(monitoring, "/healthz").await?.0 {
                    200 => Ok(()),
                    status => bail!("/healthz answered {status}"),
                }
            })
            .await?;
        self.process = Some(process);
        Ok(())
    }
}

async fn stop(process: &mut Option<Process>) {
    if let Some(mut process) = process.take() {
        process
            .kill(WAIT)
            .await
            .unwrap_or_else(|error| panic!("{error:#}"));
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

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
        let mut stream = tokio::io::BufReader::new(stream);
        let mut line = String::new();
        stream.read_line(&mut line).await.unwrap();
        stream
            .get_mut()
            .write_all(b"CONNECT {\"verbose\":false}\r\nSUB a 1\r\nSUB b.> 2\r\nPING\r\n")
            .await
            .unwrap();
        line.clear();
        within("PONG", stream.read_line(&mut line)).await.unwrap();
        assert_eq!(line, "PONG\r\n");
        assert_eq!(nats.subscriptions().await, 2);

        nats.stop().await;
        assert!(!nats.answers().await, "a stopped server does not answer");
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
        assert!(!redis.answers().await, "a stopped server does not answer");
        redis.restart().await;
        assert_eq!(redis.url(), format!("redis://127.0.0.1:{}", redis.port()));
        assert_eq!(
            redis.command(&["EXISTS", "k"]).await,
            "0",
            "nothing persisted"
        );
    }
}
