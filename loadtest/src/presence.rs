//! `presence`: the gateway's Redis presence state against a `redis-server` of its own, with
//! no gateway in between: N connections (each its own user, with a 60-byte `info`) join one
//! channel and come online in one org; then listing the channel's members and refreshing
//! every connection are timed, and the commands and Redis memory they cost are counted.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use herald_gateway::envelope::EnvelopeLimits;
use herald_gateway::state::{LiveConnection, Member, Presence, RedisState};
use herald_protocol::ChannelName;
use herald_testkit::backends::{RedisServer, ServerOptions};
use serde_json::value::RawValue;

use crate::process::run_dir;
use crate::report::{Report, machine};

#[derive(Debug, clap::Args)]
pub struct PresenceArgs {
    /// Connections in the channel, each its own user
    #[arg(long, default_value_t = 1000)]
    members: usize,
    /// Times each operation is timed (the median is reported)
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// The `redis-server` binary [default: on PATH, else /usr/bin or /usr/sbin]
    #[arg(long, value_name = "PATH")]
    redis_server_bin: Option<PathBuf>,
    /// Seconds to wait for redis-server to answer
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    ready_timeout: u64,
}

const CHANNEL: &str = "org:bench:ch:crowd";
const ORG: &str = "bench";
const INFO: &str = r#"{"name":"Ada Lovelace","avatar":"https://example.com/a/1234.png"}"#;
/// The gateway's default presence TTL; nodes refresh every third of it.
const TTL: Duration = Duration::from_secs(60);
const LIMITS: EnvelopeLimits = EnvelopeLimits {
    max_data_bytes: 65536,
    max_json_depth: 32,
};

pub async fn run(args: PresenceArgs) -> Result<()> {
    if args.members == 0 || args.rounds == 0 {
        bail!("--members and --rounds must be at least 1");
    }
    let redis = RedisServer::start_with(&ServerOptions {
        binary: args.redis_server_bin.clone(),
        dir: Some(run_dir()?),
        ready_timeout: Duration::from_secs(args.ready_timeout),
    })
    .await
    .context("the presence scenario runs its own Redis (or pass --redis-server-bin)")?;
    let result = measure(&args, &redis).await;
    if result.is_err()
        && let Some(process) = redis.process()
    {
        process.print_log_tail();
    }
    result
}

async fn measure(args: &PresenceArgs, redis: &RedisServer) -> Result<()> {
    let n = args.members;
    let state = RedisState::connect(&redis.url(), LIMITS, Duration::from_secs(5))
        .await
        .context("connecting to Redis")?;
    let channel = ChannelName::parse(CHANNEL).context("the bench channel name")?;
    let info: Arc<RawValue> = Arc::from(RawValue::from_string(INFO.to_owned())?);
    let mut connections = Vec::with_capacity(n);
    eprintln!("joining {n} connections to {CHANNEL} and org {ORG}");
    for i in 0..n {
        let (user, client): (Arc<str>, Arc<str>) = (
            Arc::from(format!("user-{i}")),
            Arc::from(format!("client-{i:016}")),
        );
        let member = Member {
            user: user.clone(),
            client: client.clone(),
            info: Some(info.clone()),
            joined_at: i as i64,
            state: None,
        };
        state.join(&channel, &member, TTL).await?;
        state.connected(ORG, &user, &client, TTL).await?;
        connections.push(LiveConnection {
            client,
            user,
            info: Some(info.clone()),
            channels: vec![channel.clone()],
            states: Vec::new(),
            orgs: vec![Arc::from(ORG)],
            statuses: Vec::new(),
        });
    }

    let mut listing = Vec::with_capacity(args.rounds);
    for _ in 0..args.rounds {
        let started = Instant::now();
        let members = state.members(&channel).await?;
        listing.push(started.elapsed());
        if members.len() != n {
            bail!("listed {} members of {n}", members.len());
        }
    }
    let mut refreshing = Vec::with_capacity(args.rounds);
    let mut commands = Vec::new();
    for _ in 0..args.rounds {
        redis.query(&["CONFIG", "RESETSTAT"]).await?;
        let started = Instant::now();
        state.refresh(&connections, TTL).await?;
        refreshing.push(started.elapsed());
        commands = commands_since_reset(redis).await?;
    }

    let mut member_bytes = 0;
    for key in ["members", "members:expiry"] {
        member_bytes += memory_usage(redis, &format!("herald:{{{CHANNEL}}}:{key}")).await?;
    }
    let mut user_bytes = 0;
    for key in ["users", "status"] {
        user_bytes += memory_usage(redis, &format!("herald:org:{{{ORG}}}:{key}")).await?;
    }
    // Each user's connections key is alike: one measured, counted n times.
    user_bytes +=
        n as u64 * memory_usage(redis, &format!("herald:org:{{{ORG}}}:conns:user-0")).await?;

    let total: u64 = commands.iter().map(|(_, calls)| calls).sum();
    let breakdown: Vec<String> = commands
        .iter()
        .map(|(command, calls)| format!("{calls} {command}"))
        .collect();
    let per_connection = total as f64 / n as f64;
    let mut report = Report::new(format!(
        "presence: {n} connections in one channel and one org, Redis presence state"
    ));
    report.line(
        "list members (median)",
        format!("{:.2?}", median(&mut listing)),
    );
    report.line(
        "refresh every connection (median)",
        format!("{:.2?}", median(&mut refreshing)),
    );
    report.line(
        "commands per refresh",
        format!("{total} ({})", breakdown.join(", ")),
    );
    report.line(
        "commands per connection per minute",
        format!(
            "{:.2} (a refresh every {:?})",
            per_connection * 3.0,
            TTL / 3
        ),
    );
    report.line(
        "Redis memory per channel member",
        format!("{} B", member_bytes / n as u64),
    );
    report.line(
        "Redis memory per online user",
        format!("{} B", user_bytes / n as u64),
    );
    report.line("machine", machine());
    report.print();
    println!(
        "RESULT scenario=presence members={n} list_ms={:.3} refresh_ms={:.3} \
         commands_per_refresh={total} member_bytes={} user_bytes={}",
        median(&mut listing).as_secs_f64() * 1000.0,
        median(&mut refreshing).as_secs_f64() * 1000.0,
        member_bytes / n as u64,
        user_bytes / n as u64,
    );
    Ok(())
}

fn median(durations: &mut [Duration]) -> Duration {
    durations.sort();
    durations[durations.len() / 2]
}

/// Calls of each command Redis ran since `CONFIG RESETSTAT`, leaving out the load
/// generator's own (`CONFIG`, `INFO`) and connection handling.
async fn commands_since_reset(redis: &RedisServer) -> Result<Vec<(String, u64)>> {
    let stats = redis.query(&["INFO", "commandstats"]).await?;
    let mut calls = Vec::new();
    for line in stats.lines() {
        let Some((command, fields)) = line
            .strip_prefix("cmdstat_")
            .and_then(|line| line.split_once(':'))
        else {
            continue;
        };
        // Redis 7 names subcommands `config|resetstat`.
        let name = command.split('|').next().unwrap_or(command);
        if matches!(
            name,
            "config" | "info" | "quit" | "ping" | "client" | "hello"
        ) {
            continue;
        }
        let count = fields
            .strip_prefix("calls=")
            .and_then(|rest| rest.split(',').next())
            .and_then(|count| count.parse::<u64>().ok())
            .with_context(|| format!("unreadable command stats: {line}"))?;
        calls.push((command.to_owned(), count));
    }
    Ok(calls)
}

async fn memory_usage(redis: &RedisServer, key: &str) -> Result<u64> {
    let reply = redis
        .query(&["MEMORY", "USAGE", key, "SAMPLES", "0"])
        .await?;
    reply
        .parse()
        .with_context(|| format!("MEMORY USAGE {key}: {reply}"))
}
