//! `herald-loadtest`: load generator and benchmarks for Herald, on loopback.
//!
//! - `fanout`: N subscribers on one channel, M publications over gRPC: deliveries per
//!   second, end-to-end latency, gateway CPU per delivery.
//! - `idle`: N authenticated, subscribed, idle connections: gateway RSS per connection.
//!
//! By default each scenario spawns the `herald` binary next to this executable on free
//! loopback ports with generated credentials, and kills it on exit. Every wait is bounded.
//! Each prints one line per measured number and a final `RESULT ...` line.

mod conn;
mod connect;
mod fanout;
mod gateway;
mod idle;
mod procfs;
mod report;

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
    /// N subscribers on one channel, M publications over gRPC: throughput, latency, CPU.
    Fanout(fanout::FanoutArgs),
    /// N idle subscribed connections: gateway memory per connection.
    Idle(idle::IdleArgs),
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
        }
    };
    // On Ctrl-C, return normally so the spawned gateway is killed on drop.
    tokio::select! {
        result = scenario => result,
        _ = tokio::signal::ctrl_c() => bail!("interrupted"),
    }
}
