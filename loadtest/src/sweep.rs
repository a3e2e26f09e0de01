//! `sweep`: latency against load. The first phase publishes as fast as the publish window
//! allows, which measures the maximum publication rate; then fixed-rate phases at 1/steps,
//! 2/steps, ..., 100% of it. Each phase connects N fresh subscribers to a channel of its
//! own, so nothing crosses phases, and records every delivery's publish call → receipt
//! time in an HDR histogram. Standalone, or with `--cluster` across the two nodes of the
//! `cluster` scenario (subscribers on B, publications on A). Writes JSON, Markdown and an
//! SVG plot under `--out-dir`, with a live progress line on stderr while it runs.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use herald_testkit::grpc::Grpc;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::cluster::{BackendArgs, Cluster};
use crate::delivery::{self, LoadArgs, Tally};
use crate::gateway::{Target, TargetArgs};
use crate::plot::{self, Series};
use crate::process;
use crate::procfs;
use crate::report::{Report, machine, ms};

#[derive(Debug, clap::Args)]
#[command(mut_arg("channel", |arg| arg
    .default_value("bench:sweep")
    .help("The channel prefix: each phase publishes on `<channel>-<phase>`")))]
#[command(mut_arg("publications", |arg| arg.help("Publications to send over gRPC in each phase")))]
#[command(mut_arg("rate", |arg| arg.hide(true)))]
pub struct SweepArgs {
    #[command(flatten)]
    load: LoadArgs,
    #[command(flatten)]
    target: TargetArgs,
    /// Across two cluster-mode nodes with their own NATS and Redis (subscribers on node B,
    /// publications on node A), as the `cluster` scenario, instead of one standalone node
    #[arg(long, conflicts_with = "ws_url")]
    cluster: bool,
    #[command(flatten)]
    backends: BackendArgs,
    /// Fixed-rate phases after the maximum: at 1/steps, 2/steps, ..., 100% of it
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// Where `sweep-<standalone|cluster>.{json,md,svg}` are written
    #[arg(long, default_value = "loadtest/results", value_name = "DIR")]
    out_dir: PathBuf,
}

/// What the latency of every phase measures.
const LATENCY: &str = "publish call -> receipt";

/// One run, as written to JSON.
#[derive(Serialize)]
struct Sweep {
    /// `standalone` or `cluster`.
    setup: &'static str,
    path: String,
    command: String,
    machine: String,
    measured_at_unix: u64,
    subscribers: usize,
    publications_per_phase: usize,
    payload_bytes: usize,
    window: usize,
    latency: &'static str,
    /// Publications per second of the first phase, as fast as the window allows.
    max_rate: f64,
    phases: Vec<Phase>,
}

/// One phase's load and what it measured; latencies in µs.
#[derive(Serialize)]
struct Phase {
    /// Share of the maximum rate; `None` for the phase that measured it.
    percent: Option<u32>,
    /// Publications per second asked for; `None` for as fast as the window allows.
    target_rate: Option<f64>,
    reached_rate: f64,
    deliveries: usize,
    p50_us: u64,
    p99_us: u64,
    p999_us: u64,
    max_us: u64,
    /// CPU of the node that delivers (node B in the cluster), when its pid is known.
    cpu_us_per_delivery: Option<f64>,
}

impl Phase {
    fn name(&self) -> String {
        match self.percent {
            Some(percent) => format!("{percent}%"),
            None => "max".into(),
        }
    }
}

pub async fn run(args: SweepArgs) -> Result<()> {
    args.load.check()?;
    if args.load.rate > 0.0 {
        bail!("sweep sets each phase's rate itself; --rate does not apply");
    }
    if args.steps == 0 {
        bail!("--steps must be at least 1");
    }
    std::fs::create_dir_all(&args.out_dir)
        .with_context(|| format!("creating {}", args.out_dir.display()))?;
    let ticks = procfs::clock_ticks_per_sec();
    let warmup = format!("{}-warmup", args.load.channel);
    let n = args.load.subscribers;
    if args.cluster {
        let cluster = Cluster::start(&args.target.spawn, &args.backends).await?;
        process::run_with(cluster, async |cluster| {
            // The warm-up channel has history too, so node A has loaded its Redis script.
            let grpc = delivery::publisher(&cluster.a, &warmup).await?;
            let path =
                format!("gRPC Publish on node A -> Redis + NATS -> node B -> {n} subscribers");
            let sweep = sweep(&args, "cluster", path, &mut cluster.b, &grpc, ticks).await?;
            cluster.check_alive()?;
            finish(&args, &sweep)
        })
        .await
    } else {
        Target::run_with(&args.target, async |target| {
            let grpc = delivery::publisher(target, &warmup).await?;
            let path = format!("gRPC Publish -> gateway -> {n} subscribers");
            let sweep = sweep(&args, "standalone", path, target, &grpc, ticks).await?;
            finish(&args, &sweep)
        })
        .await
    }
}

/// Runs every phase with subscribers on `target` and publications through `grpc`.
async fn sweep(
    args: &SweepArgs,
    setup: &'static str,
    path: String,
    target: &mut Target,
    grpc: &Grpc,
    ticks: u64,
) -> Result<Sweep> {
    let load = &args.load;
    let m = load.publications;
    let progress = ProgressBar::new((m * (args.steps + 1)) as u64);
    progress.set_style(
        ProgressStyle::with_template(
            "{prefix} {elapsed_precise} [{bar:24}] {pos}/{len} publications  {msg}",
        )?
        .progress_chars("=> "),
    );
    progress.set_prefix(format!("sweep {setup}"));
    progress.enable_steady_tick(Duration::from_millis(250));
    let run = |percent, rate| {
        let mut load = load.clone();
        load.rate = rate;
        load.channel = match percent {
            Some(percent) => format!("{}-{percent}", load.channel),
            None => format!("{}-max", load.channel),
        };
        load
    };

    let max = phase(target, grpc, &run(None, 0.0), None, ticks, &progress).await?;
    let max_rate = max.reached_rate;
    let mut phases = vec![max];
    for step in 1..=args.steps {
        let percent = (100 * step / args.steps) as u32;
        let rate = max_rate * step as f64 / args.steps as f64;
        let done = phase(
            target,
            grpc,
            &run(Some(percent), rate),
            Some(percent),
            ticks,
            &progress,
        )
        .await?;
        phases.push(done);
    }
    progress.finish_and_clear();

    let command = std::iter::once("herald-loadtest".to_owned())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ");
    Ok(Sweep {
        setup,
        path,
        command,
        machine: machine(),
        measured_at_unix: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        subscribers: load.subscribers,
        publications_per_phase: m,
        payload_bytes: load.payload_bytes,
        window: load.window.max(1),
        latency: LATENCY,
        max_rate,
        phases,
    })
}

/// One phase: fresh subscribers on `load.channel`, `load.publications` at `load.rate`.
async fn phase(
    target: &mut Target,
    grpc: &Grpc,
    load: &LoadArgs,
    percent: Option<u32>,
    ticks: u64,
    progress: &ProgressBar,
) -> Result<Phase> {
    let name = match percent {
        Some(percent) => format!("{percent}% ({:.1}/s)", load.rate),
        None => "max".into(),
    };
    progress.set_message(format!("{name}: connecting {}", load.subscribers));
    let subscribers = delivery::connect(target, load, "sweep").await?;
    progress.set_message(format!("{name}: publishing"));
    let pid = target.pid;
    let cpu_start = pid
        .map(|pid| procfs::cpu_time(Some(pid), ticks))
        .transpose()?;
    let published = delivery::send(grpc, load, |_| progress.inc(1)).await?;
    progress.set_message(format!("{name}: waiting for deliveries"));
    let deliveries = subscribers.collect(load).await?;
    let cpu = match (pid, cpu_start) {
        (Some(pid), Some(start)) => Some(procfs::cpu_time(Some(pid), ticks)? - start),
        _ => None,
    };
    target.check_alive()?;
    let tally = Tally::new(&deliveries, &published, load);
    // The subscribers close before the next phase opens its own.
    drop(deliveries);
    tally
        .check_complete()
        .with_context(|| format!("phase {name}"))?;
    if tally.duplicates > 0 || tally.out_of_order > 0 {
        bail!(
            "phase {name}: {} duplicate and {} out-of-order deliveries",
            tally.duplicates,
            tally.out_of_order
        );
    }
    let latency = &tally.from_send;
    let done = Phase {
        percent,
        target_rate: (load.rate > 0.0).then_some(round(load.rate, 1)),
        reached_rate: round(published.rate(load.publications), 1),
        deliveries: tally.delivered,
        p50_us: latency.value_at_quantile(0.5),
        p99_us: latency.value_at_quantile(0.99),
        p999_us: latency.value_at_quantile(0.999),
        max_us: latency.max(),
        cpu_us_per_delivery: cpu
            .map(|used| round(used.as_micros() as f64 / tally.delivered.max(1) as f64, 3)),
    };
    // Above the progress line, and also when stderr is no terminal (which hides the line).
    progress.suspend(|| {
        eprintln!(
            "{name}: {:.1} publications/s, p50 {} p99 {} p99.9 {} ms",
            done.reached_rate,
            ms(done.p50_us),
            ms(done.p99_us),
            ms(done.p999_us)
        )
    });
    Ok(done)
}

/// Prints the report and writes the JSON, Markdown and SVG.
fn finish(args: &SweepArgs, sweep: &Sweep) -> Result<()> {
    let stem = args.out_dir.join(format!("sweep-{}", sweep.setup));
    let [json, markdown, svg] = ["json", "md", "svg"].map(|ext| stem.with_extension(ext));

    let mut report = Report::new(format!(
        "sweep ({}): {} subscribers x {} publications of {} bytes a phase, window {}",
        sweep.setup,
        sweep.subscribers,
        sweep.publications_per_phase,
        sweep.payload_bytes,
        sweep.window
    ));
    report.line("path", &sweep.path);
    report.line(
        "maximum rate",
        format!("{:.1} publications/s", sweep.max_rate),
    );
    for phase in &sweep.phases {
        report.line(
            format!("{} {LATENCY}", phase.name()),
            format!(
                "{:.1} publications/s: p50 {} p99 {} p99.9 {} max {} ms{}",
                phase.reached_rate,
                ms(phase.p50_us),
                ms(phase.p99_us),
                ms(phase.p999_us),
                ms(phase.max_us),
                phase
                    .cpu_us_per_delivery
                    .map_or(String::new(), |cpu| format!(", {cpu:.3} us CPU a delivery"))
            ),
        );
    }
    report.line("machine", &sweep.machine);

    let text = serde_json::to_string_pretty(sweep)? + "\n";
    write(&json, &text)?;
    let svg_name = svg
        .file_name()
        .map(|name| name.to_string_lossy().into_owned());
    write(&markdown, &to_markdown(sweep, svg_name.as_deref()))?;
    let fixed = || sweep.phases.iter().filter(|phase| phase.percent.is_some());
    let series = |name, quantile: fn(&Phase) -> u64| Series {
        name,
        points: fixed()
            .map(|phase| (phase.reached_rate, quantile(phase) as f64 / 1000.0))
            .collect(),
    };
    plot::latency_svg(
        &svg,
        &format!(
            "Herald {}: {} subscribers, {} B publications",
            sweep.setup, sweep.subscribers, sweep.payload_bytes
        ),
        &format!("{LATENCY}, ms (log scale)"),
        &[
            series("p50", |phase| phase.p50_us),
            series("p99", |phase| phase.p99_us),
            series("p99.9", |phase| phase.p999_us),
        ],
    )?;
    for path in [&json, &markdown, &svg] {
        report.line("written", path.display());
    }
    report.print();

    let list = |quantile: fn(&Phase) -> u64| {
        fixed()
            .map(|phase| ms(quantile(phase)))
            .collect::<Vec<_>>()
            .join(",")
    };
    println!(
        "RESULT scenario=sweep setup={} subscribers={} publications={} max_rate={:.1} \
         steps={} p50_ms={} p99_ms={} p999_ms={}",
        sweep.setup,
        sweep.subscribers,
        sweep.publications_per_phase,
        sweep.max_rate,
        args.steps,
        list(|phase| phase.p50_us),
        list(|phase| phase.p99_us),
        list(|phase| phase.p999_us),
    );
    Ok(())
}

fn to_markdown(sweep: &Sweep, svg: Option<&str>) -> String {
    let mut out = format!(
        "# Latency against load: {setup}\n\n\
         `{command}`\n\n\
         {n} subscribers of one channel ({path}), {m} publications of {bytes} bytes a phase, \
         window {window} (publish RPCs in flight). The first phase publishes as fast as that allows: \
         **{max:.1} publications/s**, the maximum; each next phase publishes at a fixed share \
         of it, to fresh subscribers on a channel of its own. Latency is {LATENCY} (the \
         load generator's clock at both ends), every delivery recorded in an HDR histogram. \
         CPU is the delivering node's, per delivery. Machine: {machine}.\n\n\
         | load | publications/s asked | reached | deliveries | p50 ms | p99 ms | p99.9 ms \
         | max ms | CPU µs / delivery |\n\
         |---|---|---|---|---|---|---|---|---|\n",
        setup = sweep.setup,
        command = sweep.command,
        n = sweep.subscribers,
        path = sweep.path,
        m = sweep.publications_per_phase,
        bytes = sweep.payload_bytes,
        window = sweep.window,
        max = sweep.max_rate,
        machine = sweep.machine,
    );
    for phase in &sweep.phases {
        out += &format!(
            "| {} | {} | {:.1} | {} | {} | {} | {} | {} | {} |\n",
            phase.name(),
            phase
                .target_rate
                .map_or("as fast as possible".into(), |rate| format!("{rate:.1}")),
            phase.reached_rate,
            phase.deliveries,
            ms(phase.p50_us),
            ms(phase.p99_us),
            ms(phase.p999_us),
            ms(phase.max_us),
            phase
                .cpu_us_per_delivery
                .map_or("–".into(), |cpu| format!("{cpu:.3}")),
        );
    }
    if let Some(svg) = svg {
        out += &format!("\n![{LATENCY} against publication rate]({svg})\n");
    }
    out
}

fn write(path: &Path, contents: &str) -> Result<()> {
    std::fs::write(path, contents).with_context(|| format!("writing {}", path.display()))
}

fn round(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phase(percent: Option<u32>, target_rate: Option<f64>, p50_us: u64) -> Phase {
        Phase {
            percent,
            target_rate,
            reached_rate: target_rate.unwrap_or(200.0),
            deliveries: 1000,
            p50_us,
            p99_us: 2 * p50_us,
            p999_us: 3 * p50_us,
            max_us: 4 * p50_us,
            cpu_us_per_delivery: None,
        }
    }

    #[test]
    fn markdown_has_a_row_a_phase_and_the_plot() {
        let sweep = Sweep {
            setup: "standalone",
            path: "gRPC Publish -> gateway -> 10 subscribers".into(),
            command: "herald-loadtest sweep --steps 2".into(),
            machine: "2 CPUs".into(),
            measured_at_unix: 0,
            subscribers: 10,
            publications_per_phase: 100,
            payload_bytes: 100,
            window: 1,
            latency: LATENCY,
            max_rate: 200.0,
            phases: vec![
                phase(None, None, 1500),
                phase(Some(50), Some(100.0), 800),
                phase(Some(100), Some(200.0), 1200),
            ],
        };
        let markdown = to_markdown(&sweep, Some("sweep-standalone.svg"));
        let rows: Vec<&str> = markdown.lines().filter(|l| l.starts_with("| ")).collect();
        assert_eq!(rows.len(), 4, "{markdown}");
        assert_eq!(
            rows[1],
            "| max | as fast as possible | 200.0 | 1000 | 1.500 | 3.000 | 4.500 | 6.000 | – |"
        );
        assert_eq!(
            rows[2],
            "| 50% | 100.0 | 100.0 | 1000 | 0.800 | 1.600 | 2.400 | 3.200 | – |"
        );
        assert!(markdown.contains("`herald-loadtest sweep --steps 2`"));
        assert!(
            markdown.ends_with("](sweep-standalone.svg)\n"),
            "{markdown}"
        );
    }
}
