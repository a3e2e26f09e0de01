//! `rpc`: client → backend calls through the gateway against the same calls made straight
//! to the backend. A `herald.v1.Backend` (testkit's recorder: `bench` answers `null`) runs in
//! this process; the spawned gateway gets `HERALD_BACKEND_ADDR` pointing at it. First the
//! load generator calls the backend itself over gRPC (the floor: what a call costs without
//! Herald), then N WebSocket clients each make their calls through `rpc`, one at a time.
//! Reports calls a second, p50/p90/p99 of the round trip of both, and the gateway's CPU
//! time per call. The gateway's per-connection rpc and command rates are raised so the
//! limiter is not what is measured.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;
use herald_api::v1::RpcRequest;
use herald_api::v1::backend_client::BackendClient;
use herald_client::Client;
use herald_testkit::rpc_backend::TestBackend;
use serde_json::json;
use tokio::task::JoinSet;

use crate::gateway::{Target, TargetArgs};
use crate::procfs;
use crate::report::{Report, cpu, machine, micros_histogram, record};

/// Longest one phase may take.
const PHASE_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, clap::Args)]
pub struct RpcArgs {
    /// WebSocket clients, each making its calls one after another
    #[arg(long, default_value_t = 100)]
    clients: usize,
    /// Calls per client
    #[arg(long, default_value_t = 200)]
    calls: usize,
    /// Size of each call's JSON `data`, bytes
    #[arg(long, default_value_t = 100)]
    payload_bytes: usize,
    #[command(flatten)]
    target: TargetArgs,
}

pub async fn run(mut args: RpcArgs) -> Result<()> {
    if args.target.ws_url.is_some() {
        bail!("rpc spawns its gateway (it points it at its own backend): drop --ws-url");
    }
    let backend = TestBackend::start().await;
    let env = &mut args.target.spawn.gateway_env;
    env.push(("HERALD_BACKEND_ADDR".into(), backend.url()));
    // Throughput, not the per-connection limits, is measured (a `--gateway-env` wins).
    for key in ["HERALD_RPC_PER_MINUTE", "HERALD_COMMANDS_PER_MINUTE"] {
        if !env.iter().any(|(set, _)| set == key) {
            env.push((key.into(), "1000000".into()));
        }
    }
    let data = json!({ "text": "x".repeat(args.payload_bytes.saturating_sub(12)) });
    let direct = direct_calls(&backend, &args, &data).await?;
    Target::run_with(&args.target, async |target: &mut Target| {
        let through = gateway_calls(target, &args, &data).await?;
        let calls = (args.clients * args.calls) as f64;
        let mut report = Report::new(format!(
            "rpc: {} clients x {} calls, {} bytes of data",
            args.clients, args.calls, args.payload_bytes
        ));
        report.line("machine", machine());
        report.line("direct calls/s", format!("{:.0}", calls / direct.wall.as_secs_f64()));
        report.latency("direct round trip", &direct.latency);
        report.line("herald calls/s", format!("{:.0}", calls / through.wall.as_secs_f64()));
        report.latency("herald round trip", &through.latency);
        report.line("gateway CPU", cpu(through.cpu, through.wall, procfs::clock_ticks_per_sec()));
        let cpu_per_call = through.cpu.as_secs_f64() * 1e6 / calls;
        report.line("gateway CPU per call", format!("{cpu_per_call:.1} µs"));
        report.print();
        let p50 = |h: &Histogram<u64>| h.value_at_quantile(0.5) as f64 / 1000.0;
        let p99 = |h: &Histogram<u64>| h.value_at_quantile(0.99) as f64 / 1000.0;
        println!(
            "RESULT scenario=rpc clients={} calls={} direct_calls_per_sec={:.0} direct_p50_ms={:.3} direct_p99_ms={:.3} herald_calls_per_sec={:.0} herald_p50_ms={:.3} herald_p99_ms={:.3} gateway_cpu_us_per_call={cpu_per_call:.1}",
            args.clients,
            args.calls,
            calls / direct.wall.as_secs_f64(),
            p50(&direct.latency),
            p99(&direct.latency),
            calls / through.wall.as_secs_f64(),
            p50(&through.latency),
            p99(&through.latency),
        );
        Ok(())
    })
    .await
}

struct Phase {
    wall: Duration,
    latency: Histogram<u64>,
    /// The gateway's CPU time over the phase (zero for the direct phase).
    cpu: Duration,
}

/// The same calls, with the same concurrency, straight to the backend.
async fn direct_calls(
    backend: &TestBackend,
    args: &RpcArgs,
    data: &serde_json::Value,
) -> Result<Phase> {
    let channel = tonic::transport::Channel::from_shared(backend.url())?
        .connect()
        .await
        .context("connecting to the backend")?;
    let request = RpcRequest {
        user: "bench".into(),
        method: "bench".into(),
        data: data.to_string().into_bytes(),
        ..RpcRequest::default()
    };
    let started = Instant::now();
    let mut callers = JoinSet::new();
    for _ in 0..args.clients {
        let mut client = BackendClient::new(channel.clone());
        let (request, calls) = (request.clone(), args.calls);
        callers.spawn(async move {
            let mut latency = micros_histogram();
            for _ in 0..calls {
                let sent = Instant::now();
                client.rpc(request.clone()).await?;
                record(&mut latency, sent.elapsed().as_micros() as u64);
            }
            Ok::<_, tonic::Status>(latency)
        });
    }
    let latency = gather(callers).await?;
    Ok(Phase {
        wall: started.elapsed(),
        latency,
        cpu: Duration::ZERO,
    })
}

/// Every client connects, then all make their calls through the gateway at once.
async fn gateway_calls(target: &Target, args: &RpcArgs, data: &serde_json::Value) -> Result<Phase> {
    let mut clients = Vec::with_capacity(args.clients);
    for i in 0..args.clients {
        let token = target.token(&format!("rpc-{i}"), "public:rpc")?;
        let (client, _) = Client::connect(&target.ws_url, &token)
            .await
            .with_context(|| format!("client {i} connects"))?;
        clients.push(client);
    }
    let ticks = procfs::clock_ticks_per_sec();
    let cpu_before = procfs::cpu_time(target.pid, ticks)?;
    let started = Instant::now();
    let mut callers = JoinSet::new();
    for client in clients {
        let (data, calls) = (data.clone(), args.calls);
        callers.spawn(async move {
            let mut latency = micros_histogram();
            for _ in 0..calls {
                let sent = Instant::now();
                client.rpc("bench", data.clone()).await?;
                record(&mut latency, sent.elapsed().as_micros() as u64);
            }
            Ok::<_, herald_client::ClientError>(latency)
        });
    }
    let latency = gather(callers).await?;
    let wall = started.elapsed();
    let cpu = procfs::cpu_time(target.pid, ticks)?.saturating_sub(cpu_before);
    Ok(Phase { wall, latency, cpu })
}

/// Waits for every caller, bounded, and merges their histograms.
async fn gather<E: std::error::Error + Send + Sync + 'static>(
    mut callers: JoinSet<Result<Histogram<u64>, E>>,
) -> Result<Histogram<u64>> {
    let mut latency = micros_histogram();
    tokio::time::timeout(PHASE_TIMEOUT, async {
        while let Some(caller) = callers.join_next().await {
            latency.add(caller??)?;
        }
        Ok::<_, anyhow::Error>(())
    })
    .await
    .context("calls did not finish in time")??;
    Ok(latency)
}
