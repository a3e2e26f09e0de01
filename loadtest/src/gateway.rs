//! The gateway under test: `herald serve` child processes on free loopback ports with
//! generated credentials (one standalone node, or cluster nodes given NATS and Redis), or an
//! already running gateway given by URL and credentials.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use herald_api::BearerToken;
use herald_api::v1::herald_client::HeraldClient;
use herald_gateway::auth::{Authenticator, Claims};
use herald_gateway::clock::unix_seconds;
use herald_testkit::grpc::Grpc;
use herald_testkit::ports::free_addrs;
use herald_testkit::process::Process;
use herald_testkit::tokens::authenticator;
use tokio::process::Command;
use tonic::transport::Channel;

use crate::process::{self, Servers, run_dir};

/// How gateway nodes are spawned.
#[derive(Debug, Clone, clap::Args)]
pub struct SpawnArgs {
    /// The `herald` binary to spawn [default: `herald` next to this executable]. Only this
    /// process is killed on exit: if it is a wrapper, it must `exec` the gateway.
    #[arg(long, value_name = "PATH")]
    pub herald_bin: Option<PathBuf>,
    /// Seconds to wait for a spawned gateway's /readyz
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    pub ready_timeout: u64,
    /// An environment variable for the spawned gateway on top of the generated ones (e.g.
    /// `HERALD_CONNECT_TIMEOUT_SECONDS=120`); repeatable
    #[arg(long = "gateway-env", value_name = "KEY=VALUE", value_parser = parse_env)]
    pub gateway_env: Vec<(String, String)>,
}

fn parse_env(assignment: &str) -> Result<(String, String), String> {
    match assignment.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("{assignment:?} is not KEY=VALUE")),
    }
}

impl SpawnArgs {
    /// The `herald` binary, checked to exist.
    fn bin(&self) -> Result<PathBuf> {
        let bin = match &self.herald_bin {
            Some(path) => path.clone(),
            None => std::env::current_exe()
                .context("locating this executable")?
                .with_file_name("herald"),
        };
        if !bin.is_file() {
            bail!(
                "gateway binary {} not found: build it with `cargo build --release -p \
                 herald-gateway` or pass --herald-bin",
                bin.display()
            );
        }
        // The node runs in the run directory: a relative path must not be read from there.
        std::path::absolute(&bin).with_context(|| format!("resolving {}", bin.display()))
    }
}

/// Where the gateway under test comes from.
#[derive(Debug, Clone, clap::Args)]
pub struct TargetArgs {
    #[command(flatten)]
    pub spawn: SpawnArgs,
    /// Target a running gateway instead of spawning one: its WebSocket URL (ws://host:port/ws)
    #[arg(long, requires_all = ["grpc_url", "api_key", "jwt_secret"])]
    pub ws_url: Option<String>,
    /// gRPC URL of the running gateway (http://host:port)
    #[arg(long, requires = "ws_url")]
    pub grpc_url: Option<String>,
    /// gRPC API key of the running gateway
    #[arg(long, requires = "ws_url")]
    pub api_key: Option<String>,
    /// HS256 JWT secret of the running gateway, to sign client tokens
    #[arg(long, requires = "ws_url")]
    pub jwt_secret: Option<String>,
    /// Pid of the running gateway, to read its CPU time and RSS from /proc
    #[arg(long, requires = "ws_url")]
    pub gateway_pid: Option<u32>,
}

/// The JWT secret and gRPC API key of spawned nodes: generated once per run and shared by
/// every node, as nodes of one cluster share them.
pub struct Credentials {
    secret: String,
    api_key: String,
}

impl Credentials {
    pub fn generate() -> Credentials {
        Credentials {
            secret: random_hex(48),
            api_key: random_hex(32),
        }
    }
}

/// One node to spawn.
pub struct NodeSpec<'a> {
    /// How messages name it: "gateway", "node A".
    pub name: &'a str,
    /// Its log file, in the run directory.
    pub log_file: &'a str,
    /// Environment on top of the generated addresses, credentials and limits (e.g.
    /// `HERALD_NATS_URL`); it may override them.
    pub env: &'a [(&'a str, String)],
    /// The `herald.toml` it loads.
    pub config: &'a str,
}

impl NodeSpec<'static> {
    /// A standalone node, as `fanout` and `idle` spawn by default.
    pub const GATEWAY: NodeSpec<'static> = NodeSpec {
        name: "gateway",
        log_file: "herald.log",
        env: &[],
        config: BENCH_CONFIG,
    };
}

/// The gateway under test and how to reach it.
pub struct Target {
    pub ws_url: String,
    pub grpc_url: String,
    api_key: String,
    /// The HS256 secret client tokens are signed with.
    secret: String,
    auth: Authenticator,
    /// Pid whose CPU time and RSS are measured, when known.
    pub pid: Option<u32>,
    /// The spawned gateway, killed when dropped.
    pub spawned: Option<Spawned>,
}

impl Target {
    /// Starts (or attaches to) the gateway, runs `measure` against it, prints the gateway's
    /// last log lines if that fails, and stops the gateway.
    pub async fn run_with(
        args: &TargetArgs,
        measure: impl AsyncFnOnce(&mut Target) -> Result<()>,
    ) -> Result<()> {
        process::run_with(Target::start(args).await?, measure).await
    }

    /// Spawns a standalone gateway, or describes the running one the arguments name.
    pub async fn start(args: &TargetArgs) -> Result<Target> {
        let Some(ws_url) = &args.ws_url else {
            return Target::spawn(&args.spawn, &Credentials::generate(), &NodeSpec::GATEWAY).await;
        };
        let secret = args.jwt_secret.clone().unwrap_or_default();
        Ok(Target {
            ws_url: ws_url.clone(),
            grpc_url: args.grpc_url.clone().unwrap_or_default(),
            api_key: args.api_key.clone().unwrap_or_default(),
            auth: authenticator(&secret)?,
            secret,
            pid: args.gateway_pid,
            spawned: None,
        })
    }

    /// Spawns one `herald serve` node with `credentials` and waits until it is ready.
    pub async fn spawn(
        args: &SpawnArgs,
        credentials: &Credentials,
        node: &NodeSpec<'_>,
    ) -> Result<Target> {
        let spawned = Spawned::start(
            &args.bin()?,
            credentials,
            node,
            &args.gateway_env,
            Duration::from_secs(args.ready_timeout),
        )
        .await?;
        Ok(Target {
            ws_url: format!("ws://{}/ws", spawned.http_addr),
            grpc_url: format!("http://{}", spawned.grpc_addr),
            api_key: credentials.api_key.clone(),
            secret: credentials.secret.clone(),
            auth: authenticator(&credentials.secret)?,
            pid: Some(spawned.process.pid()),
            spawned: Some(spawned),
        })
    }

    /// A connection token for user `sub`, allowed on `channel`: for `org:<org>:...` it
    /// carries `orgs: [org]` and `channels: ["org:<org>:*"]`; `public:` needs no claims.
    pub fn token(&self, sub: &str, channel: &str) -> Result<String> {
        let mut orgs = Vec::new();
        let mut channels = Vec::new();
        let mut segments = channel.split(':');
        if let (Some("org"), Some(org)) = (segments.next(), segments.next()) {
            orgs.push(org.into());
            channels.push(format!("org:{org}:*").into());
        }
        let claims = Claims {
            sub: sub.into(),
            exp: unix_seconds() + 3 * 3600,
            orgs,
            channels,
            info: None,
        };
        self.auth.sign(&claims).context("signing a client token")
    }

    /// The HS256 secret client tokens are signed with (for scenarios that forge tokens).
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// A gRPC client that sends the API key with every call.
    pub async fn grpc(&self) -> Result<Grpc> {
        let channel = Channel::from_shared(self.grpc_url.clone())
            .with_context(|| format!("bad gRPC URL {:?}", self.grpc_url))?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .connect()
            .await
            .with_context(|| format!("connecting to gRPC at {}", self.grpc_url))?;
        let key = BearerToken::new(&self.api_key).context("API key is not valid metadata")?;
        Ok(HeraldClient::with_interceptor(channel, key))
    }

    /// Fails if the spawned gateway has exited, with its status and log tail.
    pub fn check_alive(&mut self) -> Result<()> {
        match &mut self.spawned {
            Some(spawned) => spawned.process.check_alive(),
            None => Ok(()),
        }
    }
}

impl Servers for Target {
    /// Prints the spawned gateway's last log lines.
    fn print_log_tails(&self) {
        if let Some(spawned) = &self.spawned {
            spawned.process.print_log_tail();
        }
    }

    /// Kills the spawned gateway (bounded) and removes its log.
    async fn shutdown(self) {
        if let Some(mut spawned) = self.spawned {
            let _ = spawned.process.kill(Duration::from_secs(5)).await;
        }
    }
}

/// A `herald serve` child process; killed when dropped.
pub struct Spawned {
    pub process: Process,
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    /// Its Prometheus endpoint (`/metrics`).
    pub metrics_addr: SocketAddr,
}

/// The spawned nodes' config file: a `bench` namespace with history (offsets, so order and
/// loss are checked) and no presence, so the numbers measure delivery rather than the
/// join pushes of a thousand-member presence channel (n²/2 of them).
pub const BENCH_CONFIG: &str = r#"[namespaces.bench]
access = "public"
history_size = 100
history_ttl = 300
"#;

impl Spawned {
    async fn start(
        bin: &std::path::Path,
        credentials: &Credentials,
        node: &NodeSpec<'_>,
        extra_env: &[(String, String)],
        ready_timeout: Duration,
    ) -> Result<Spawned> {
        let [http_addr, grpc_addr, metrics_addr] =
            free_addrs().context("binding a free loopback port")?;
        let mut command = Command::new(bin);
        // The run directory holds only the load generator's own herald.toml.
        let run_dir = run_dir()?;
        std::fs::write(run_dir.join("herald.toml"), node.config)
            .context("writing the bench herald.toml")?;
        command.arg("serve").current_dir(&run_dir);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("HERALD_") {
                command.env_remove(key);
            }
        }
        command
            .env("HERALD_HTTP_ADDR", http_addr.to_string())
            .env("HERALD_GRPC_ADDR", grpc_addr.to_string())
            .env("HERALD_METRICS_ADDR", metrics_addr.to_string())
            .env("HERALD_JWT_SECRET", &credentials.secret)
            .env("HERALD_API_KEYS", &credentials.api_key)
            .env("HERALD_MAX_CONNECTIONS", "0")
            .env("HERALD_MAX_CONNECTIONS_PER_USER", "0")
            // Every simulated client connects from loopback, many at once.
            .env("HERALD_MAX_PENDING_CONNECTIONS", "0")
            .env("HERALD_MAX_PENDING_PER_IP", "0")
            .env("HERALD_COMMANDS_PER_MINUTE", "1000000")
            .env("HERALD_CLIENT_QUEUE_BYTES", (64 << 20).to_string())
            // Plain log lines, for the log tail printed on errors.
            .env("NO_COLOR", "1")
            .envs(node.env.iter().map(|(key, value)| (key, value)))
            .envs(extra_env.iter().map(|(key, value)| (key, value)));
        let mut process = Process::spawn(node.name, command, run_dir.join(node.log_file))?;
        eprintln!(
            "spawned {} pid {}: ws://{http_addr}/ws, gRPC {grpc_addr}, log {}",
            node.name,
            process.pid(),
            process.log_path().display()
        );
        let started = Instant::now();
        process
            .wait_ready(ready_timeout, "/readyz", || async move {
                match herald_testkit::http::get(http_addr, "/readyz").await?.0 {
                    200 => Ok(()),
                    status => bail!("HTTP {status}"),
                }
            })
            .await?;
        eprintln!("{} ready after {:.2?}", node.name, started.elapsed());
        Ok(Spawned {
            process,
            http_addr,
            grpc_addr,
            metrics_addr,
        })
    }
}

/// `len` hex characters from the standard library's randomly keyed hasher.
fn random_hex(len: usize) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut out = String::with_capacity(len + 16);
    let mut round = 0u64;
    while out.len() < len {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u128(nanos);
        hasher.write_u64(round);
        hasher.write_u32(std::process::id());
        out.push_str(&format!("{:016x}", hasher.finish()));
        round += 1;
    }
    out.truncate(len);
    out
}
