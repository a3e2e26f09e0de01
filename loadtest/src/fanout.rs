//! `fanout`: N subscribers on one channel, M publications over gRPC; throughput,
//! end-to-end latency and gateway CPU per delivery.

use anyhow::Result;

use crate::delivery::{self, LoadArgs, Tally};
use crate::gateway::{Target, TargetArgs};
use crate::procfs;
use crate::report::{self, Report, machine};

#[derive(Debug, clap::Args)]
pub struct FanoutArgs {
    #[command(flatten)]
    load: LoadArgs,
    #[command(flatten)]
    target: TargetArgs,
}

pub async fn run(args: FanoutArgs) -> Result<()> {
    args.load.check()?;
    let ticks = procfs::clock_ticks_per_sec();
    Target::run_with(&args.target, async |target| {
        measure(&args.load, target, ticks).await
    })
    .await
}

async fn measure(load: &LoadArgs, target: &mut Target, ticks: u64) -> Result<()> {
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
    report.line("machine", machine());
    report.print();
    println!(
        "  note: server `ts` has millisecond resolution, so the `server ts -> receipt` figures \
         read up to 1 ms high; the load generator shares the CPUs with the gateway."
    );

    tally.check_complete()?;
    println!(
        "RESULT scenario=fanout subscribers={n} publications={m} deliveries_per_sec={:.0} \
         p50_ms={} p99_ms={} cpu_us_per_delivery={}",
        tally.per_sec,
        report::ms(tally.from_ts.value_at_quantile(0.5)),
        report::ms(tally.from_ts.value_at_quantile(0.99)),
        cpu_per_delivery.map_or("n/a".to_owned(), |us| format!("{us:.3}"))
    );
    Ok(())
}
