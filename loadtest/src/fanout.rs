//! `fanout`: N subscribers on one channel, M publications over gRPC; throughput,
//! end-to-end latency and gateway CPU per delivery, then the same fan-out without a gateway
//! (the floor, see `floor.rs`) and the gateway's CPU per delivery as a ratio to it.

use anyhow::{Context, Result};

use crate::delivery::{self, LoadArgs, Tally};
use crate::floor::{self, Floor};
use crate::gateway::{Target, TargetArgs};
use crate::procfs;
use crate::report::{self, Report, machine};

#[derive(Debug, clap::Args)]
pub struct FanoutArgs {
    #[command(flatten)]
    load: LoadArgs,
    #[command(flatten)]
    target: TargetArgs,
    /// Skip the floor phase (the same fan-out written by one plain thread, no gateway),
    /// which runs after the gateway phase and takes about as long as its publish phase
    #[arg(long)]
    no_floor: bool,
}

pub async fn run(args: FanoutArgs) -> Result<()> {
    args.load.check()?;
    if !args.no_floor {
        procfs::check_open_file_limit(2 * args.load.subscribers).context(
            "the floor phase holds both ends of its sockets in this process (--no-floor skips it)",
        )?;
    }
    let ticks = procfs::clock_ticks_per_sec();
    Target::run_with(&args.target, async |target| {
        measure(&args.load, !args.no_floor, target, ticks).await
    })
    .await
}

async fn measure(load: &LoadArgs, with_floor: bool, target: &mut Target, ticks: u64) -> Result<()> {
    let (n, m) = (load.subscribers, load.publications);
    let pid = target.pid;
    let cpu = |pid| procfs::cpu_time(pid, ticks);
    let mut report = Report::new(load.title("fanout"));
    let subscribers =
        delivery::subscribe(target, load, "fanout", "gateway", ticks, &mut report).await?;

    let grpc = delivery::publisher(target, "public:loadtest-warmup").await?;
    let gateway_cpu_start = pid.map(|pid| cpu(Some(pid))).transpose()?;
    let own_cpu_start = cpu(None)?;
    let published = delivery::publish(&grpc, load).await?;
    let deliveries = subscribers.collect(load).await?;
    let gateway_cpu = match (pid, gateway_cpu_start) {
        (Some(pid), Some(start)) => Some(cpu(Some(pid))? - start),
        _ => None,
    };
    let own_cpu = cpu(None)? - own_cpu_start;
    target.check_alive()?;

    let tally = Tally::new(&deliveries, &published, load);
    let sample = deliveries.sample().cloned();
    // The gateway's subscribers close before the floor opens its own.
    drop(deliveries);
    let floor = match (with_floor, sample) {
        (true, Some(sample)) => {
            // At the rate the gateway phase reached: the one asked for, or less when one
            // publish in flight at a time could not keep up with it.
            let reached = published.rate(m);
            let rate = match load.rate {
                rate if rate > 0.0 => rate.min(reached),
                _ => reached,
            };
            Some(floor::measure(load, &sample, rate, ticks).await)
        }
        (true, None) => {
            eprintln!("floor: skipped, the gateway delivered nothing to copy the frames from");
            None
        }
        (false, _) => None,
    };
    tally.report(
        &mut report,
        &published,
        load,
        [
            "latency server ts -> receipt",
            "latency publish call -> receipt",
        ],
    );
    let cpu_per_delivery =
        gateway_cpu.map(|used| used.as_micros() as f64 / tally.delivered.max(1) as f64);
    match gateway_cpu {
        Some(used) => {
            report.line(
                "gateway CPU (publish + deliver)",
                report::cpu(used, tally.wall, ticks),
            );
            report.line(
                "gateway CPU per delivery",
                format!("{:.3} us", cpu_per_delivery.unwrap_or_default()),
            );
        }
        None => report.line("gateway CPU", "not measured (no gateway pid)"),
    }
    report.line(
        "load generator CPU (same phase)",
        format!("{:.0} ms", own_cpu.as_secs_f64() * 1000.0),
    );
    match &floor {
        Some(Ok(floor)) => floor.report(&mut report, cpu_per_delivery, ticks),
        Some(Err(error)) => report.line("floor", format!("failed: {error:#}")),
        None => {}
    }
    report.line("machine", machine());
    report.print();
    println!(
        "  note: server `ts` has millisecond resolution, so the `server ts -> receipt` figures \
         read up to 1 ms high; the load generator shares the CPUs with the gateway."
    );

    tally.check_complete()?;
    // The gateway's figures are printed above even when the floor phase failed.
    let floor = floor.transpose().context("floor phase")?;
    if let Some(floor) = &floor {
        floor.tally.check_complete().context("floor phase")?;
    }
    let number = |value: Option<f64>, decimals: usize| {
        value.map_or("n/a".to_owned(), |value| format!("{value:.decimals$}"))
    };
    println!(
        "RESULT scenario=fanout protocol={} subscribers={n} publications={m} \
         deliveries_per_sec={:.0} p50_ms={} p99_ms={} send_p50_ms={} send_p99_ms={} \
         cpu_us_per_delivery={} floor_cpu_us_per_delivery={} ratio_to_floor={}",
        load.protocol.name(),
        tally.per_sec,
        report::quantile_ms(&tally.from_ts, 0.5),
        report::quantile_ms(&tally.from_ts, 0.99),
        report::quantile_ms(&tally.from_send, 0.5),
        report::quantile_ms(&tally.from_send, 0.99),
        number(cpu_per_delivery, 3),
        number(floor.as_ref().map(Floor::cpu_per_delivery), 3),
        number(floor.as_ref().and_then(|f| f.ratio(cpu_per_delivery)), 2),
    );
    Ok(())
}
