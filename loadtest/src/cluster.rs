//! `cluster`: two gateway nodes in cluster mode on a `nats-server` and a `redis-server` of
//! their own; N subscribers on node B, M publications over gRPC on node A. Measures what
//! crossing nodes costs: deliveries per second, publish on A → receipt on B, and the CPU of
//! each node (and of NATS and Redis).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use herald_testkit::backends::{NatsServer, RedisServer, ServerOptions};
use herald_testkit::process::Process;

use crate::delivery::{self, LoadArgs, Tally};
use crate::gateway::{BENCH_CONFIG, Credentials, NodeSpec, SpawnArgs, Target};
use crate::process::{self, Servers, run_dir};
use crate::procfs;
use crate::report::{self, Report, machine};

#[derive(Debug, clap::Args)]
#[command(mut_arg("channel", |arg| arg
    .default_value("bench:cluster")
    .help("The channel (one with history, so node A assigns offsets in Redis)")))]
pub struct ClusterArgs {
    #[command(flatten)]
    load: LoadArgs,
    #[command(flatten)]
    spawn: SpawnArgs,
    #[command(flatten)]
    backends: BackendArgs,
}

/// Where the cluster's NATS and Redis come from.
#[derive(Debug, Clone, clap::Args)]
pub struct BackendArgs {
    /// The `nats-server` binary [default: on PATH, else /usr/bin or /usr/sbin]
    #[arg(long, value_name = "PATH")]
    nats_server_bin: Option<PathBuf>,
    /// The `redis-server` binary [default: on PATH, else /usr/bin or /usr/sbin]
    #[arg(long, value_name = "PATH")]
    redis_server_bin: Option<PathBuf>,
}

/// Everything a run spawns; each process is killed when dropped.
pub struct Cluster {
    nats: NatsServer,
    redis: RedisServer,
    /// Takes the publications.
    pub a: Target,
    /// Holds the subscribers.
    pub b: Target,
}

impl Cluster {
    pub async fn start(spawn: &SpawnArgs, backends: &BackendArgs) -> Result<Cluster> {
        let options = |binary: &Option<PathBuf>| -> Result<ServerOptions> {
            Ok(ServerOptions {
                binary: binary.clone(),
                dir: Some(run_dir()?),
                ready_timeout: Duration::from_secs(spawn.ready_timeout),
            })
        };
        let started = Instant::now();
        let nats = NatsServer::start_with(&options(&backends.nats_server_bin)?)
            .await
            .context("the cluster scenario runs its own NATS (or pass --nats-server-bin)")?;
        announce(nats.process(), &nats.url(), started);
        let started = Instant::now();
        let redis = RedisServer::start_with(&options(&backends.redis_server_bin)?)
            .await
            .context("the cluster scenario runs its own Redis (or pass --redis-server-bin)")?;
        announce(redis.process(), &redis.url(), started);
        let credentials = Credentials::generate();
        let node = async |name: &str, id: &str| {
            let env = [
                ("HERALD_NODE_ID", format!("loadtest-{id}")),
                ("HERALD_NATS_URL", nats.url()),
                ("HERALD_REDIS_URL", redis.url()),
            ];
            let log_file = format!("herald-{id}.log");
            let spec = NodeSpec {
                name,
                log_file: &log_file,
                env: &env,
                config: BENCH_CONFIG,
            };
            Target::spawn(spawn, &credentials, &spec).await
        };
        let a = node("node A", "a").await?;
        let b = node("node B", "b").await?;
        Ok(Cluster { nats, redis, a, b })
    }

    /// Node A, node B, nats-server, redis-server.
    fn pids(&self) -> [Option<u32>; 4] {
        [
            self.a.pid,
            self.b.pid,
            self.nats.process().map(|process| process.pid()),
            self.redis.process().map(|process| process.pid()),
        ]
    }

    pub fn check_alive(&mut self) -> Result<()> {
        self.a.check_alive()?;
        self.b.check_alive()?;
        for backend in [self.nats.process_mut(), self.redis.process_mut()] {
            backend.context("a backend was stopped")?.check_alive()?;
        }
        Ok(())
    }
}

impl Servers for Cluster {
    fn print_log_tails(&self) {
        self.a.print_log_tails();
        self.b.print_log_tails();
        for process in [self.nats.process(), self.redis.process()]
            .into_iter()
            .flatten()
        {
            process.print_log_tail();
        }
    }

    /// Stops the nodes first, so they do not log the backends going away.
    async fn shutdown(self) {
        self.a.shutdown().await;
        self.b.shutdown().await;
        drop(self.nats);
        drop(self.redis);
    }
}

/// Says which backend was started where, and how long it took to answer.
fn announce(process: Option<&Process>, url: &str, started: Instant) {
    if let Some(process) = process {
        eprintln!(
            "spawned {} pid {} on {url}, log {}; ready after {:.2?}",
            process.name(),
            process.pid(),
            process.log_path().display(),
            started.elapsed()
        );
    }
}

pub async fn run(args: ClusterArgs) -> Result<()> {
    args.load.check()?;
    let ticks = procfs::clock_ticks_per_sec();
    process::run_with(
        Cluster::start(&args.spawn, &args.backends).await?,
        async |cluster| measure(&args.load, cluster, ticks).await,
    )
    .await
}

async fn measure(load: &LoadArgs, cluster: &mut Cluster, ticks: u64) -> Result<()> {
    let (n, m) = (load.subscribers, load.publications);
    let mut report = Report::new(load.title("cluster"));
    report.line(
        "path",
        format!(
            "gRPC Publish on node A -> Redis {} + NATS {} -> node B -> {n} subscribers",
            cluster.redis.url(),
            cluster.nats.url()
        ),
    );
    let subscribers = delivery::subscribe(
        &mut cluster.b,
        load,
        "cluster",
        "node B",
        ticks,
        &mut report,
    )
    .await?;

    // The warm-up publish goes to a channel with history too, so node A has loaded its
    // Redis script before the measured publications.
    let grpc = delivery::publisher(&cluster.a, &format!("{}-warmup", load.channel)).await?;
    // CPU time of node A, node B, nats-server, redis-server and this process.
    let [pa, pb, pn, pr] = cluster.pids();
    let cpu_times = || -> Result<Vec<Duration>> {
        [pa, pb, pn, pr, None]
            .into_iter()
            .map(|pid| procfs::cpu_time(pid, ticks))
            .collect()
    };
    let cpu_start = cpu_times()?;
    let published = delivery::publish(&grpc, load).await?;
    let deliveries = subscribers.collect(load).await?;
    let cpu_used: Vec<Duration> = cpu_times()?
        .iter()
        .zip(&cpu_start)
        .map(|(end, start)| end.saturating_sub(*start))
        .collect();
    cluster.check_alive()?;

    let tally = Tally::new(&deliveries, &published, load);
    tally.report(
        &mut report,
        &published,
        load,
        [
            "latency server ts (A) -> receipt on B",
            "latency publish call on A -> receipt on B",
        ],
    );
    let per = |used: Duration, count: usize| used.as_micros() as f64 / count.max(1) as f64;
    let a_per_publication = per(cpu_used[0], m);
    let b_per_delivery = per(cpu_used[1], tally.delivered);
    let cpu_line = |used| report::cpu(used, tally.wall, ticks);
    report.line("node A CPU (publish: Redis + NATS)", cpu_line(cpu_used[0]));
    report.line(
        "node A CPU per publication",
        format!("{a_per_publication:.1} us"),
    );
    report.line("node B CPU (deliver)", cpu_line(cpu_used[1]));
    report.line("node B CPU per delivery", format!("{b_per_delivery:.3} us"));
    report.line("nats-server CPU", cpu_line(cpu_used[2]));
    report.line("redis-server CPU", cpu_line(cpu_used[3]));
    report.line(
        "load generator CPU (same phase)",
        format!("{:.0} ms", cpu_used[4].as_secs_f64() * 1000.0),
    );
    report.line("machine", machine());
    report.print();
    println!(
        "  note: server `ts` is node A's, with millisecond resolution, so the `server ts` \
         figures read up to 1 ms high; both nodes, NATS, Redis and the load generator share \
         the CPUs."
    );

    tally.check_complete()?;
    if tally.duplicates > 0 || tally.out_of_order > 0 {
        bail!(
            "{} duplicate and {} out-of-order deliveries: each node must deliver each \
             publication once, in offset order",
            tally.duplicates,
            tally.out_of_order
        );
    }
    println!(
        "RESULT scenario=cluster subscribers={n} publications={m} window={} \
         deliveries_per_sec={:.0} p50_ms={} p99_ms={} e2e_p50_ms={} e2e_p99_ms={} \
         node_a_cpu_us_per_publication={a_per_publication:.1} \
         node_b_cpu_us_per_delivery={b_per_delivery:.3}",
        load.window.max(1),
        tally.per_sec,
        report::quantile_ms(&tally.from_ts, 0.5),
        report::quantile_ms(&tally.from_ts, 0.99),
        report::quantile_ms(&tally.from_send, 0.5),
        report::quantile_ms(&tally.from_send, 0.99),
    );
    Ok(())
}
