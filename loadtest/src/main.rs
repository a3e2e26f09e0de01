//! `herald-loadtest`: load generator and benchmarks for Herald, on loopback.
//!
//! - `fanout`: N subscribers on one channel, M publications over gRPC: deliveries per
//!   second, end-to-end latency, gateway CPU per delivery, and that CPU as a ratio to the
//!   floor (the same frames written to the same kind of sockets by one plain thread).
//! - `idle`: N authenticated, subscribed, idle connections: gateway RSS per connection.
//! - `cluster`: like `fanout`, across two cluster-mode nodes: subscribers on node B,
//!   publications on node A, over a `nats-server` and a `redis-server` of its own.
//! - `hostile`: a million generated hostile frames (mutated commands, forged tokens,
//!   forbidden requests, floods, slowloris) while healthy subscribers count deliveries.
//! - `sweep`: latency against load: the maximum publication rate, then fixed-rate phases
//!   from 10% to 100% of it, standalone or across the cluster; JSON, Markdown and an SVG plot.
//! - `wire`: bytes per delivery in JSON and protobuf, encoding time, and what
//!   permessage-deflate would save, without a gateway.
//! - `storm`: a reconnect storm the server drives: N subscribed clients dropped at once
//!   with gRPC `Disconnect` reconnect and recover what they missed; time, connects/s, RSS.
//! - `presence`: the Redis presence state of N connections in one channel, without a
//!   gateway: listing and refresh times, commands and memory per connection.
//!
//! By default each scenario spawns the `herald` binary next to this executable on free
//! loopback ports with generated credentials (and `cluster` its NATS and Redis), and kills
//! what it spawned on exit, also on an error or Ctrl-C. Every wait is bounded.
//! Each prints one line per measured number and a final `RESULT ...` line.

mod cluster;
mod conn;
mod connect;
mod delivery;
mod fanout;
mod floor;
mod gateway;
mod hostile;
mod idle;
mod plot;
mod presence;
mod process;
mod procfs;
mod report;
mod rpc;
mod socketio;
mod storm;
mod sweep;
mod wire;

use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "herald-loadtest",
    version,
    about = "Load generator and benchmarks for Herald"
)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// N subscribers on one channel, M publications over gRPC: throughput, latency, CPU,
    /// and that CPU as a ratio to the floor (the same frames written by one plain thread).
    Fanout(fanout::FanoutArgs),
    /// N idle subscribed connections: gateway memory per connection.
    Idle(idle::IdleArgs),
    /// Subscribers on node B, publications on node A of a two-node cluster with its own
    /// NATS and Redis: cross-node throughput, latency, CPU of each node.
    Cluster(cluster::ClusterArgs),
    /// Hostile clients against one node while healthy subscribers count their deliveries:
    /// node crashes, forbidden requests accepted, healthy deliveries, RSS, close codes.
    Hostile(hostile::HostileArgs),
    /// N connections' presence in Redis (its own redis-server, no gateway): time to list
    /// the members and to refresh every connection, commands and memory per connection.
    Presence(presence::PresenceArgs),
    /// Latency against load: the maximum publication rate, then fixed-rate phases from
    /// 1/steps to 100% of it; p50/p99/p99.9 of publish -> receipt as JSON, Markdown, SVG.
    Sweep(sweep::SweepArgs),
    /// A reconnect storm the server drives: N subscribed clients dropped at once with gRPC
    /// Disconnect (4200) reconnect and recover the publications they missed; time until
    /// all have recovered, connects/s, gateway RSS per connection after it against steady.
    Storm(storm::StormArgs),
    /// Client → backend `rpc` through the gateway against the same calls straight to the
    /// backend: calls/s, round-trip latency of both, gateway CPU per call.
    Rpc(rpc::RpcArgs),
    /// Bytes per delivery in JSON and protobuf, encoding time, and what permessage-deflate
    /// would save (each message alone, or with context takeover), without a gateway.
    Wire(wire::WireArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<()> {
    let scenario = async {
        match Cli::parse().scenario {
            Scenario::Fanout(args) => fanout::run(args).await,
            Scenario::Idle(args) => idle::run(args).await,
            Scenario::Cluster(args) => cluster::run(args).await,
            Scenario::Hostile(args) => hostile::run(args).await,
            Scenario::Presence(args) => presence::run(args).await,
            Scenario::Sweep(args) => sweep::run(args).await,
            Scenario::Storm(args) => storm::run(args).await,
            Scenario::Rpc(args) => rpc::run(args).await,
            Scenario::Wire(args) => wire::run(args),
        }
    };
    // On Ctrl-C, return normally so what the scenario spawned is killed on drop.
    tokio::select! {
        result = scenario => result,
        _ = tokio::signal::ctrl_c() => bail!("interrupted"),
    }
}
