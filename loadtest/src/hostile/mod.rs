//! `hostile`: many connections send generated abuse (mutated commands, forged tokens,
//! forbidden requests, floods, oversize frames, protocol violations, slowloris heads, silent
//! sockets) while healthy subscribers count the publications a gRPC publisher sends them.
//! Reports the frames sent, whether the node survived, forbidden requests accepted, healthy
//! deliveries, RSS before and after, and how the gateway closed the hostile connections.
//!
//! The spawned node runs with the shipped limits (100 commands a minute, 64 KiB messages,
//! 5 s to `connect`, 1,000 unauthenticated connections a node and 32 an address...), so most
//! hostile connections are closed quickly; each worker opens the next one at once. Hostile
//! sockets come from loopback addresses of their own (see `sockets`), the silent storm more
//! of them an address than the per-address cap admits. The run fails on a crash, an
//! accepted forbidden request, a healthy delivery short of 100% or RSS growth past
//! `--max-rss-growth-mib`. Generation is seeded (`--seed`, printed) so a failure reproduces.

mod attacks;
mod generate;
mod healthy;
mod sockets;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::gateway::{Credentials, NodeSpec, Target, TargetArgs};
use crate::report::{Report, machine, secs};
use crate::{process, procfs, report};
use attacks::{Attack, Shared, Stats};
use sockets::Sources;

/// The channel the healthy subscribers watch: public, with history (so offsets show loss).
pub const HEALTHY_CHANNEL: &str = "bench:healthy";

/// The spawned node's namespaces: `bench` (the healthy channel), `chat` (clients publish,
/// per org) and `secret` (subscription tokens only), on top of the built-in `public`,
/// `user` and `org`.
const HOSTILE_CONFIG: &str = r#"[namespaces.bench]
access = "public"
history_size = 100
history_ttl = 300

[namespaces.chat]
access = "org_member"
client_publish = true
history_size = 10
history_ttl = 60

[namespaces.secret]
access = "token"
"#;

/// The shipped limits, which the other scenarios lift: per connection, and the caps on
/// connections that have not authenticated yet (node-wide and per client address).
const SHIPPED_LIMITS: [(&str, &str); 6] = [
    ("HERALD_COMMANDS_PER_MINUTE", "100"),
    ("HERALD_CLIENT_QUEUE_BYTES", "1048576"),
    ("HERALD_MAX_CONNECTIONS", "100000"),
    ("HERALD_MAX_CONNECTIONS_PER_USER", "100"),
    ("HERALD_MAX_PENDING_CONNECTIONS", "1000"),
    ("HERALD_MAX_PENDING_PER_IP", "32"),
];

/// Loopback address blocks (`127.<block>.x.y`) of the hostile workers, the slowloris and
/// the silent sockets; the healthy subscribers stay on 127.0.0.1.
const WORKER_BLOCK: u8 = 1;
const SLOWLORIS_BLOCK: u8 = 2;
const SILENT_BLOCK: u8 = 3;

/// Longest one hostile connection may take, whatever it does.
const ATTACK_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, clap::Args)]
pub struct HostileArgs {
    /// Hostile frames to send (WebSocket messages and raw frames, pings included)
    #[arg(long, default_value_t = 1_000_000)]
    frames: u64,
    /// Hostile connections open at once
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Seed of the generator [default: from the clock]; printed, so a run can be repeated
    #[arg(long)]
    seed: Option<u64>,
    /// Hostile user ids to draw from (`evil-<n mod users>`); 0 = a new user per connection
    #[arg(long, default_value_t = 0)]
    users: u64,
    /// Healthy subscribers on bench:healthy
    #[arg(long, default_value_t = 4)]
    healthy_subscribers: usize,
    /// Publications a second to the healthy subscribers (gRPC), throughout the attack
    #[arg(long, default_value_t = 20.0)]
    publish_rate: f64,
    /// Slowloris sockets: an HTTP upgrade head trickled a byte every 500 ms, never finished
    #[arg(long, default_value_t = 32)]
    slowloris: usize,
    /// WebSockets opened without a token that never send a frame
    #[arg(long, default_value_t = 256)]
    silent: usize,
    /// Seconds slowloris and silent sockets are held at most (they start with the attack)
    #[arg(long, default_value_t = 15)]
    hold_secs: u64,
    /// Slowloris and silent sockets opened from one address (against a gateway on
    /// loopback: 127.2.x.y and 127.3.x.y). The default is over the shipped per-address cap
    /// on unauthenticated connections (32), so the silent storm meets it
    #[arg(long, default_value_t = 40)]
    per_address: usize,
    /// Most the gateway's RSS may grow from before the attack to after it, MiB; the run
    /// fails past it. Generous: memory grows with the distinct hostile users (see README)
    #[arg(long, default_value_t = 128)]
    max_rss_growth_mib: u64,
    #[command(flatten)]
    target: TargetArgs,
}

pub async fn run(args: HostileArgs) -> Result<()> {
    if args.frames == 0 || args.concurrency == 0 || args.healthy_subscribers == 0 {
        bail!("--frames, --concurrency and --healthy-subscribers must be at least 1");
    }
    let seed = args.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    eprintln!("seed {seed} (repeat this run with --seed {seed})");
    procfs::check_open_file_limit(
        args.concurrency + args.slowloris + args.silent + args.healthy_subscribers,
    )?;
    let target = match args.target.ws_url {
        Some(_) => Target::start(&args.target).await?,
        None => {
            let env = SHIPPED_LIMITS.map(|(key, value)| (key, value.to_owned()));
            let node = NodeSpec {
                name: "gateway",
                log_file: "herald.log",
                env: &env,
                config: HOSTILE_CONFIG,
            };
            Target::spawn(&args.target.spawn, &Credentials::generate(), &node).await?
        }
    };
    process::run_with(target, async |target| measure(&args, seed, target).await).await
}

async fn measure(args: &HostileArgs, seed: u64, target: &mut Target) -> Result<()> {
    let ticks = procfs::clock_ticks_per_sec();
    let pid = target.pid;
    let host_port = target
        .ws_url
        .strip_prefix("ws://")
        .and_then(|rest| rest.split('/').next())
        .with_context(|| format!("not a ws:// URL: {}", target.ws_url))?
        .to_owned();
    let mut report = Report::new(format!(
        "hostile: {} frames from {} connections at once, seed {seed}",
        args.frames, args.concurrency
    ));

    eprintln!(
        "connecting {} healthy subscribers",
        args.healthy_subscribers
    );
    let subscribers = healthy::subscribe(target, HEALTHY_CHANNEL, args.healthy_subscribers).await?;
    let grpc = target.grpc().await?;
    let rss_before = pid.map(|pid| procfs::rss_kib(Some(pid))).transpose()?;
    let cpu_before = pid
        .map(|pid| procfs::cpu_time(Some(pid), ticks))
        .transpose()?;

    let (stop, stopped) = watch::channel(false);
    let publisher = tokio::spawn(healthy::publish(
        grpc,
        HEALTHY_CHANNEL.to_owned(),
        args.publish_rate,
        stopped.clone(),
    ));
    let rss_peak = tokio::spawn(sample_rss(pid, stopped.clone()));
    let hold = Duration::from_secs(args.hold_secs);
    let mut held = JoinSet::new();
    let per_address = args.per_address;
    let slowloris_from = Sources::new(&host_port, SLOWLORIS_BLOCK, 1).await;
    let silent_from = Sources::new(&host_port, SILENT_BLOCK, 1).await;
    sockets::slowloris(
        &mut held,
        &host_port,
        |i| slowloris_from.nth(i, per_address),
        args.slowloris,
        hold,
    );
    sockets::silent(
        &mut held,
        (&target.ws_url, &host_port),
        |i| silent_from.nth(i, per_address),
        args.silent,
        hold,
    );

    eprintln!("sending {} hostile frames (seed {seed})", args.frames);
    let shared = Arc::new(Shared {
        ws_url: target.ws_url.clone(),
        sources: Sources::new(&host_port, WORKER_BLOCK, args.concurrency).await,
        host_port,
        forger: generate::Forger::new(target.secret()),
        frames: AtomicU64::new(0),
        users: args.users,
    });
    let halt = Arc::new(AtomicBool::new(false));
    let numbering = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut workers = JoinSet::new();
    for worker_index in 0..args.concurrency {
        workers.spawn(worker(
            shared.clone(),
            seed,
            worker_index as u64,
            args.frames,
            halt.clone(),
            numbering.clone(),
        ));
    }
    let mut stats = Stats::default();
    let mut crashed = None;
    let mut progress = tokio::time::interval(Duration::from_secs(1));
    let mut last_report = Instant::now();
    loop {
        tokio::select! {
            joined = workers.join_next() => match joined {
                Some(joined) => stats.merge(joined.context("hostile worker failed")?),
                None => break,
            },
            _ = progress.tick() => {
                if crashed.is_none() && let Err(error) = target.check_alive() {
                    crashed = Some(format!("{error:#}"));
                    halt.store(true, Ordering::Relaxed);
                }
                if last_report.elapsed() >= Duration::from_secs(5) {
                    eprintln!(
                        "  {} of {} frames ({:.0?})",
                        shared.frames.load(Ordering::Relaxed),
                        args.frames,
                        started.elapsed()
                    );
                    last_report = Instant::now();
                }
            }
        }
    }
    let attack_time = started.elapsed();
    let frames = shared.frames.load(Ordering::Relaxed);
    let cpu_used = match (pid, cpu_before) {
        (Some(pid), Some(before)) if crashed.is_none() => {
            Some(procfs::cpu_time(Some(pid), ticks)? - before)
        }
        _ => None,
    };

    let _ = stop.send(true);
    let published = publisher.await.context("publisher task failed")?;
    let published = match (&crashed, published) {
        (_, Ok(published)) => published,
        (Some(_), Err(error)) => {
            eprintln!("healthy publisher stopped: {error:#}");
            0
        }
        (None, Err(error)) => return Err(error),
    };
    let seen = subscribers
        .finish(published, Duration::from_secs(30))
        .await?;
    let mut held_results: BTreeMap<&str, Vec<sockets::Held>> = BTreeMap::new();
    while let Some(joined) = tokio::time::timeout(hold + Duration::from_secs(15), held.join_next())
        .await
        .context("slowloris and silent sockets did not finish")?
    {
        let (kind, result) = joined.context("held socket task failed")?;
        held_results.entry(kind).or_default().push(result);
    }
    // Hostile sessions wait up to 2 s for a close reply before they are gone.
    tokio::time::sleep(Duration::from_secs(3)).await;
    if crashed.is_none()
        && let Err(error) = target.check_alive()
    {
        crashed = Some(format!("{error:#}"));
    }
    let rss_after = match (pid, &crashed) {
        (Some(pid), None) => Some(procfs::rss_kib(Some(pid))?),
        _ => None,
    };
    let rss_peak = rss_peak.await.context("RSS sampler failed")?;
    let metrics_addr = target.spawned.as_ref().map(|spawned| spawned.metrics_addr);
    let refused_at_accept = match (metrics_addr, &crashed) {
        (Some(addr), None) => Some(pending_refused(addr).await?),
        _ => None,
    };

    // The report.
    report.line("seed", seed);
    report.line(
        "hostile frames sent",
        format!(
            "{frames} in {} ({:.0}/s)",
            secs(attack_time),
            frames as f64 / attack_time.as_secs_f64()
        ),
    );
    let mut by_kind: Vec<_> = stats.frames.iter().collect();
    by_kind.sort_by(|a, b| b.1.cmp(a.1));
    for (kind, count) in by_kind {
        report.line(format!("  {kind}"), count);
    }
    report.line("hostile connections", stats.connections);
    if !stats.open_failures.is_empty() {
        report.line(
            "connections not opened",
            report::closes(&to_usize(&stats.open_failures)),
        );
    }
    report.line(
        "node crashes",
        match &crashed {
            None => "0".to_owned(),
            Some(error) => format!("1: {error}"),
        },
    );
    report.line("forbidden requests sent", stats.forbidden_sent);
    report.line("  refused (error)", stats.forbidden_refused);
    report.line(
        "  refused as too many first (110)",
        stats.forbidden_rate_limited,
    );
    let accepted: u64 = stats.forbidden_accepted.values().sum();
    report.line(
        "  not answered (the connection was closed first)",
        stats.forbidden_sent
            - stats.forbidden_refused
            - stats.forbidden_rate_limited
            - accepted.min(stats.forbidden_sent),
    );
    report.line("forbidden requests accepted", accepted);
    for (what, count) in &stats.forbidden_accepted {
        report.line(format!("  ACCEPTED {what}"), count);
    }
    let healthy = HealthyTally::new(&seen, published);
    healthy.report(&mut report, args.publish_rate);
    let kib = |v: Option<u64>| v.map_or("n/a".to_owned(), |v| format!("{v} KiB"));
    report.line(
        "gateway RSS before (healthy subscribers only)",
        kib(rss_before),
    );
    report.line("gateway RSS peak during the attack", kib(rss_peak));
    report.line("gateway RSS after", kib(rss_after));
    if let Some(used) = cpu_used {
        report.line(
            "gateway CPU during the attack",
            report::cpu(used, attack_time, ticks),
        );
    }
    report.line("how the gateway closed hostile connections", "");
    let mut closes: Vec<_> = stats.closes.iter().collect();
    closes.sort_by(|a, b| b.1.cmp(a.1));
    for (close, count) in closes {
        report.line(format!("  {close}"), count);
    }
    report.line(
        "replies to mutated frames and floods",
        report::closes(&to_usize(&stats.mutation_replies)),
    );
    let unanswered: u64 = stats.unanswered.values().sum();
    report.line(
        "frames with no reply nor close in 10 s",
        match unanswered {
            0 => "0".to_owned(),
            n => format!("{n}: {}", report::closes(&to_usize(&stats.unanswered))),
        },
    );
    let time: Vec<String> = stats
        .time
        .iter()
        .map(|(attack, (count, time))| {
            format!(
                "{attack} {count} x {:.0} ms",
                time.as_secs_f64() * 1000.0 / *count as f64
            )
        })
        .collect();
    report.line("hostile connections by attack, mean time", time.join(", "));
    for (kind, results) in &held_results {
        report.line(format!("{kind} sockets"), held_summary(results, hold));
    }
    if let Some(refused) = &refused_at_accept {
        report.line(
            "closed at accept by the unauthenticated caps (gateway metrics)",
            format!(
                "{} over the node's cap, {} over an address's",
                refused.node, refused.address
            ),
        );
    }
    report.line("machine", machine());
    report.print();

    let rss = |v: Option<u64>| v.map_or("n/a".to_owned(), |v| v.to_string());
    println!(
        "RESULT scenario=hostile seed={seed} frames={frames} crashes={} forbidden_accepted={accepted} \
         healthy_delivered_pct={:.3} rss_before_kib={} rss_peak_kib={} rss_after_kib={}",
        u8::from(crashed.is_some()),
        healthy.percent(),
        rss(rss_before),
        rss(rss_peak),
        rss(rss_after),
    );
    if let Some(error) = crashed {
        bail!("the gateway crashed during the hostile run (seed {seed}): {error}");
    }
    if accepted > 0 {
        bail!("{accepted} forbidden requests were accepted (seed {seed})");
    }
    healthy.check(seed)?;
    if let (Some(before), Some(after)) = (rss_before, rss_after) {
        let growth_mib = after.saturating_sub(before) / 1024;
        if growth_mib > args.max_rss_growth_mib {
            bail!(
                "the gateway's RSS grew {growth_mib} MiB ({before} KiB to {after} KiB), over \
                 --max-rss-growth-mib {} (seed {seed})",
                args.max_rss_growth_mib
            );
        }
    }
    if frames < args.frames {
        bail!("only {frames} of {} frames were sent", args.frames);
    }
    Ok(())
}

/// One worker: hostile connections one after another until the frames are sent.
async fn worker(
    shared: Arc<Shared>,
    seed: u64,
    index: u64,
    frames: u64,
    halt: Arc<AtomicBool>,
    numbering: Arc<AtomicU64>,
) -> Stats {
    // Each worker's sequence of attacks follows from the seed and its index.
    let mut rng = StdRng::seed_from_u64(seed ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut stats = Stats::default();
    while !halt.load(Ordering::Relaxed) && shared.frames.load(Ordering::Relaxed) < frames {
        let attack = Attack::pick(&mut rng);
        let n = numbering.fetch_add(1, Ordering::Relaxed);
        let run = attacks::run(attack, &shared, &mut rng, n, &mut stats);
        if tokio::time::timeout(ATTACK_TIMEOUT, run).await.is_err() {
            stats.unanswered(&format!("{attack:?} connection over {ATTACK_TIMEOUT:?}"));
        }
    }
    stats
}

/// `herald_pending_refused_total` of the spawned node, by cap.
struct PendingRefused {
    node: u64,
    address: u64,
}

async fn pending_refused(metrics: std::net::SocketAddr) -> Result<PendingRefused> {
    let scrape = herald_testkit::http::get(metrics, "/metrics");
    let (status, body) = tokio::time::timeout(Duration::from_secs(10), scrape)
        .await
        .context("scraping the gateway's metrics timed out")??;
    if status != 200 {
        bail!("the gateway's /metrics answered HTTP {status}");
    }
    // `herald_pending_refused_total{cap="node",port="http"} 12`
    let count = |cap: &str| {
        let cap = format!("cap=\"{cap}\"");
        body.lines()
            .filter(|line| line.starts_with("herald_pending_refused_total{"))
            .filter(|line| line.contains(&cap) && line.contains("port=\"http\""))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    };
    Ok(PendingRefused {
        node: count("node"),
        address: count("address"),
    })
}

/// Samples the gateway's RSS every 200 ms until `stopped`; the largest value.
async fn sample_rss(pid: Option<u32>, mut stopped: watch::Receiver<bool>) -> Option<u64> {
    let pid = pid?;
    let mut peak = 0;
    loop {
        if let Ok(rss) = procfs::rss_kib(Some(pid)) {
            peak = peak.max(rss);
        }
        tokio::select! {
            _ = stopped.wait_for(|&s| s) => return Some(peak),
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}

fn to_usize<K: Clone + Ord + ToString>(counts: &BTreeMap<K, u64>) -> BTreeMap<String, usize> {
    counts
        .iter()
        .map(|(key, count)| (key.to_string(), *count as usize))
        .collect()
}

/// `N: k closed by the gateway after a–b s (how), m still open after hold`.
fn held_summary(results: &[sockets::Held], hold: Duration) -> String {
    let mut closed: Vec<Duration> = results.iter().filter_map(|h| h.closed_after).collect();
    closed.sort();
    let mut how: BTreeMap<String, usize> = BTreeMap::new();
    for held in results {
        *how.entry(held.how.clone()).or_default() += 1;
    }
    let range = match (closed.first(), closed.last()) {
        (Some(first), Some(last)) => format!(
            " after {:.1}-{:.1} s",
            first.as_secs_f64(),
            last.as_secs_f64()
        ),
        _ => String::new(),
    };
    format!(
        "{}: {} closed{range}, {} open after {} s ({})",
        results.len(),
        closed.len(),
        results.len() - closed.len(),
        hold.as_secs(),
        report::closes(&how)
    )
}

/// What the healthy subscribers got, all together.
struct HealthyTally {
    subscribers: usize,
    published: u64,
    delivered: u64,
    lost: u64,
    duplicates: u64,
    foreign: u64,
    offset_breaks: u64,
    complete: usize,
    closed: Vec<String>,
}

impl HealthyTally {
    fn new(seen: &[healthy::Seen], published: u64) -> HealthyTally {
        HealthyTally {
            subscribers: seen.len(),
            published,
            delivered: seen
                .iter()
                .map(|s| s.in_order.min(published) - s.lost.min(s.in_order.min(published)))
                .sum(),
            lost: seen.iter().map(|s| s.lost).sum(),
            duplicates: seen.iter().map(|s| s.duplicates).sum(),
            foreign: seen.iter().map(|s| s.foreign).sum(),
            offset_breaks: seen.iter().map(|s| s.offset_breaks).sum(),
            complete: seen
                .iter()
                .filter(|s| s.in_order >= published && s.lost == 0)
                .count(),
            closed: seen.iter().filter_map(|s| s.closed.clone()).collect(),
        }
    }

    fn expected(&self) -> u64 {
        self.published * self.subscribers as u64
    }

    fn percent(&self) -> f64 {
        match self.expected() {
            0 => 0.0,
            expected => 100.0 * self.delivered as f64 / expected as f64,
        }
    }

    fn report(&self, report: &mut Report, rate: f64) {
        report.line(
            "healthy publications (gRPC)",
            format!("{} at {rate}/s", self.published),
        );
        report.line(
            "healthy deliveries",
            format!(
                "{} of {} ({:.3}%), {} of {} subscribers complete",
                self.delivered,
                self.expected(),
                self.percent(),
                self.complete,
                self.subscribers
            ),
        );
        report.line(
            "  lost / duplicate / out of offset order / forged",
            format!(
                "{} / {} / {} / {}",
                self.lost, self.duplicates, self.offset_breaks, self.foreign
            ),
        );
        if !self.closed.is_empty() {
            report.line("  healthy subscribers closed", self.closed.join(", "));
        }
    }

    fn check(&self, seed: u64) -> Result<()> {
        let broken = self.lost + self.duplicates + self.offset_breaks + self.foreign;
        if self.published == 0 || self.delivered < self.expected() || broken > 0 {
            bail!(
                "healthy deliveries: {} of {} ({:.3}%), {} lost, {} duplicate, {} out of \
                 offset order, {} forged (seed {seed})",
                self.delivered,
                self.expected(),
                self.percent(),
                self.lost,
                self.duplicates,
                self.offset_breaks,
                self.foreign
            );
        }
        Ok(())
    }
}
