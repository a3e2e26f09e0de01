//! `herald`: run a gateway node, print its configuration, mint a token, or call a live
//! node's gRPC API as an operator (publish, presence, disconnect).

use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use herald_gateway::Server;
use herald_gateway::auth::{
    Authenticator, Claims, SubscriptionClaims, check_channel_pattern, expires_in,
};
use herald_gateway::config::{Config, ConfigArgs, LogFormat, SettingsFormat, settings_listing};
use herald_gateway::dev_backend::DevBackend;
use herald_gateway::operator::Operator;

/// jemalloc returns memory after a burst of connections (a reconnect storm) where the
/// system allocator keeps it; measured with `herald-loadtest idle --storms`.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(name = "herald", version, about = "Herald real-time gateway")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a gateway node.
    Serve {
        /// Development mode: generate a JWT secret and API key if unset, bind loopback only,
        /// and log an example token and publish command.
        #[arg(long)]
        dev: bool,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Print the effective configuration (secrets masked) and exit.
    Config {
        /// Print every HERALD_* variable with its flag and effective value instead, one per
        /// line: `HERALD_HTTP_ADDR --http-addr 0.0.0.0:8080` (empty value: unset).
        #[arg(long)]
        print_env: bool,
        /// Print every setting's declaration instead (variable, flag, file key, default,
        /// meaning, whether secret, Helm value): `json` for tools, `markdown` for the README.
        #[arg(long, value_name = "FORMAT", conflicts_with = "print_env")]
        settings: Option<SettingsFormat>,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Print a client token signed with the configured HS256 secret.
    Token {
        /// User id (`sub`).
        #[arg(long)]
        sub: String,
        /// Org the user belongs to (repeatable).
        #[arg(long = "org")]
        orgs: Vec<String>,
        /// Channel the user may subscribe to; a last segment `*` (`org:acme:*`) matches one or
        /// more whole segments (repeatable).
        #[arg(long = "channel")]
        channels: Vec<String>,
        /// Print a subscription token for this one channel instead of a connection token.
        #[arg(long, value_name = "CHANNEL", conflicts_with_all = ["orgs", "channels", "info"])]
        subscription: Option<String>,
        /// User info shown to others, a JSON object, e.g. '{"name":"Ada"}'.
        #[arg(long)]
        info: Option<String>,
        /// Lifetime, e.g. 30m, 1h, 7d.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Publish an event to a channel through a node's gRPC API (with the configured API key).
    Publish {
        #[arg(long)]
        channel: String,
        #[arg(long)]
        event: String,
        /// The event's data, JSON.
        #[arg(long, default_value = "{}")]
        data: String,
        /// Makes a retry of this command safe: the same key on the channel within 5 minutes
        /// is published once.
        #[arg(long)]
        idempotency_key: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Print a channel's presence members (or only their counts) from a node's gRPC API.
    Presence {
        #[arg(long)]
        channel: String,
        /// Only the number of users and connections.
        #[arg(long)]
        stats: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Close every connection of a user, on every node, with a close code.
    Disconnect {
        #[arg(long)]
        user: String,
        /// 4000-4299; 4200 (reconnect now) by default, 4001 to make it get a new token.
        #[arg(long, default_value_t = 4200)]
        code: u32,
        #[arg(long, default_value = "")]
        reason: String,
        #[command(flatten)]
        target: Target,
    },
}

/// Which node an operator command calls, and with which key.
#[derive(clap::Args)]
struct Target {
    /// The node's gRPC URL (default: the configured HERALD_GRPC_ADDR, on loopback when it
    /// listens on every interface).
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    /// The API key is the first of HERALD_API_KEYS, from the environment or these settings.
    #[command(flatten)]
    config: ConfigArgs,
}

impl Target {
    async fn operator(&self) -> anyhow::Result<Operator> {
        let config = Config::load(&self.config)?;
        Ok(Operator::connect(&config, self.url.clone()).await?)
    }
}

/// After `serve` returns, how long tasks still running on blocking threads (a DNS lookup,
/// say) may delay the exit.
const BLOCKING_TASKS_GRACE: Duration = Duration::from_secs(1);

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(run(Cli::parse()));
    // Dropping the runtime would wait for blocking tasks without limit, past the drain.
    runtime.shutdown_timeout(BLOCKING_TASKS_GRACE);
    result
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { dev, config } => serve(dev, &config).await,
        Command::Config {
            settings: Some(format),
            ..
        } => {
            print!("{}", settings_listing(format));
            Ok(())
        }
        Command::Config {
            print_env, config, ..
        } => {
            let config = Config::load(&config)?;
            if print_env {
                print!("{}", config.to_env_listing());
            } else {
                print!("{}", config.to_masked_toml());
            }
            Ok(())
        }
        Command::Token {
            sub,
            orgs,
            channels,
            subscription,
            info,
            ttl,
            config,
        } => {
            let config = Config::load(&config)?;
            let auth = Authenticator::new(&config.jwt)?;
            let token = match subscription {
                Some(channel) => auth.sign_subscription(&SubscriptionClaims {
                    sub,
                    channel,
                    exp: expires_in(ttl),
                    aud: None,
                    iss: None,
                }),
                None => auth.sign(&token_claims(sub, orgs, channels, info.as_deref(), ttl)?),
            };
            let Some(token) = token else {
                bail!("HERALD_JWT_SECRET is not set: `herald token` signs with the HS256 secret");
            };
            println!("{token}");
            Ok(())
        }
        Command::Publish {
            channel,
            event,
            data,
            idempotency_key,
            target,
        } => {
            let mut operator = target.operator().await?;
            let published = operator
                .publish(channel, event, &data, idempotency_key)
                .await?;
            println!("{published}");
            Ok(())
        }
        Command::Presence {
            channel,
            stats,
            target,
        } => {
            let presence = target.operator().await?.presence(channel, stats).await?;
            println!("{presence}");
            Ok(())
        }
        Command::Disconnect {
            user,
            code,
            reason,
            target,
        } => {
            let mut operator = target.operator().await?;
            let closed = operator.disconnect(user, code, reason).await?;
            println!("{closed}");
            Ok(())
        }
    }
}

async fn serve(dev: bool, args: &ConfigArgs) -> anyhow::Result<()> {
    let mut config = Config::load(args)?;
    if dev {
        config = config.into_dev();
    }
    init_logging(config.log_format);
    config.require_credentials()?;
    // Before binding: once the node answers, a SIGTERM drains it instead of killing it.
    let shutdown = shutdown_signal().context("cannot install the signal handlers")?;
    // The demo's backend publishes through the gRPC port, which it reaches in plain text.
    let dev_backend = if dev && config.backend.addr.is_none() && !config.grpc_tls {
        let backend = DevBackend::bind()
            .await
            .context("cannot bind the dev backend")?;
        config.backend.addr = Some(backend.url()?);
        Some(backend)
    } else {
        None
    };
    let server = Server::bind(config.clone()).await?;
    if let Some(backend) = dev_backend {
        let api_key = config
            .api_keys
            .first()
            .map(|k| k.expose())
            .unwrap_or_default();
        backend.spawn(server.grpc_addr(), api_key)?;
    }
    if dev {
        log_dev_help(&config, &server)?;
    }
    server.run(shutdown).await?;
    Ok(())
}

fn token_claims(
    sub: String,
    orgs: Vec<String>,
    channels: Vec<String>,
    info: Option<&str>,
    ttl: Duration,
) -> anyhow::Result<Claims> {
    for pattern in &channels {
        check_channel_pattern(pattern)?;
    }
    let info = info
        .map(|info| serde_json::value::RawValue::from_string(info.to_owned()))
        .transpose()
        .context("--info must be a JSON object")?;
    Ok(Claims {
        sub: sub.into(),
        exp: expires_in(ttl),
        orgs: orgs.into_iter().map(Into::into).collect(),
        channels: channels.into_iter().map(Into::into).collect(),
        info: info.map(Into::into),
    })
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Pretty => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Prints what a developer needs to try the gateway right away. Dev mode only: these are
/// throwaway credentials bound to loopback.
fn log_dev_help(config: &Config, server: &Server) -> anyhow::Result<()> {
    let auth = Authenticator::new(&config.jwt)?;
    let claims = token_claims(
        "dev-user".into(),
        vec!["acme".into()],
        vec!["org:acme:*".into()],
        Some(r#"{"name":"Dev User"}"#),
        Duration::from_secs(24 * 3600),
    )?;
    let token = auth.sign(&claims).unwrap_or_default();
    let secret = config
        .jwt
        .secret
        .as_ref()
        .map(|s| s.expose())
        .unwrap_or("(public key configured)");
    let api_key = config
        .api_keys
        .first()
        .map(|k| k.expose())
        .unwrap_or_default();
    let (http, grpc, metrics) = (
        server.http_addr(),
        server.grpc_addr(),
        server.metrics_addr(),
    );
    // With HERALD_TLS_*: the HTTP port speaks only TLS; the metrics port stays plain.
    let (web, ws) = match config.tls {
        Some(_) => ("https", "wss"),
        None => ("http", "ws"),
    };
    let backend = match &config.backend.addr {
        Some(addr) => format!("the backend at {addr}"),
        None => "no backend: set HERALD_BACKEND_ADDR".to_owned(),
    };
    let grpc_transport = if config.grpc_tls {
        "-insecure"
    } else {
        "-plaintext"
    };
    eprintln!(
        "\n\
        ================= Herald dev mode (loopback only, throwaway secrets) =================\n\
        Demo chat:  {web}://{http}/   (open it in two browser windows)\n\
        WebSocket:  {ws}://{http}/ws      health: {web}://{http}/healthz  readyz: {web}://{http}/readyz\n\
        gRPC:       {grpc}        metrics: http://{metrics}/metrics\n\
        JWT secret: {secret}\n\
        API key:    {api_key}\n\
        Example token (user dev-user, org acme, channels org:acme:*, 24 h):\n  {token}\n\n\
        Connect and subscribe (e.g. with websocat):\n  \
        websocat -H 'Sec-WebSocket-Protocol: herald.v1.json' {ws}://{http}/ws\n  \
        {{\"id\":1,\"connect\":{{\"token\":\"{token}\"}}}}\n  \
        {{\"id\":2,\"subscribe\":{{\"channel\":\"org:acme:ch:general\"}}}}\n  \
        {{\"id\":3,\"rpc\":{{\"method\":\"message:send\",\"data\":{{\"channel\":\"org:acme:ch:general\",\"text\":\"hi\"}}}}}}\n  \
        (rpc calls {backend}; the built-in dev backend checks message:send and publishes it over gRPC)\n\n\
        Publish (grpcurl; data is base64 of {{\"text\":\"hello\"}}):\n  \
        grpcurl {grpc_transport} -import-path proto -proto herald/v1/api.proto \\\n    \
        -H 'authorization: Bearer {api_key}' \\\n    \
        -d '{{\"channel\":\"org:acme:ch:general\",\"event\":\"message.created\",\"data\":\"eyJ0ZXh0IjoiaGVsbG8ifQ==\"}}' \\\n    \
        {grpc} herald.v1.Herald/Publish\n\n\
        More tokens: HERALD_JWT_SECRET='{secret}' herald token --sub alice --org acme --channel 'org:acme:*'\n\
        =====================================================================================\n"
    );
    Ok(())
}

/// Installs the SIGTERM and Ctrl-C handlers now (a signal that arrives before the returned
/// future is first polled is not lost) and returns a future that completes on either.
#[cfg(unix)]
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
        tracing::info!("shutdown signal received");
    })
}

/// Completes on Ctrl-C.
#[cfg(not(unix))]
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutdown signal received");
    })
}
