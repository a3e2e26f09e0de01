//! `idle`: N authenticated, subscribed, idle connections; gateway RSS per connection.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use herald_client::CloseInfo;
use tokio::sync::watch;

use crate::conn::{ClientKind, Conn, Event, Opening, Protocol, Stage};
use crate::connect::{Readers, connect_all};
use crate::gateway::{Target, TargetArgs};
use crate::procfs;
use crate::report::{self, Report, machine, secs};

#[derive(Debug, clap::Args)]
pub struct IdleArgs {
    /// Connections to open and keep idle
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// Channels the connections are spread over (connection i subscribes to channel i % N)
    #[arg(long, default_value_t = 10)]
    channels: usize,
    /// Channel name prefix; channel k is `<prefix><k>`
    #[arg(long, default_value = "bench:idle:")]
    channel_prefix: String,
    /// Connections opened at once
    #[arg(long, default_value_t = 200)]
    concurrency: usize,
    /// Client implementation
    #[arg(long, value_enum, default_value_t = ClientKind::Lean)]
    client: ClientKind,
    /// Protocol of the connections
    #[arg(long, value_enum, default_value_t = Protocol::Json)]
    protocol: Protocol,
    /// How far each connection goes before it is held (the lean client): measuring each
    /// stage gives the breakdown of a connection's memory. Stopping before `connect` needs
    /// a longer connect timeout: `--gateway-env HERALD_CONNECT_TIMEOUT_SECONDS=600`
    #[arg(long, value_enum, default_value_t = Stage::Subscribe)]
    stage: Stage,
    /// Seconds to let the gateway settle before each RSS reading
    #[arg(long, default_value_t = 2)]
    settle: u64,
    /// Storms after the steady reading: every connection drops at once and all reconnect
    /// and resubscribe together; the RSS after each shows what the allocator keeps
    #[arg(long, default_value_t = 0)]
    storms: usize,
    #[command(flatten)]
    target: TargetArgs,
}

pub async fn run(args: IdleArgs) -> Result<()> {
    let n = args.connections;
    if n == 0 || args.channels == 0 {
        bail!("--connections and --channels must be at least 1");
    }
    procfs::check_open_file_limit(n)?;
    let ticks = procfs::clock_ticks_per_sec();
    Target::run_with(&args.target, async |target| {
        measure(&args, target, ticks).await
    })
    .await
}

async fn measure(args: &IdleArgs, target: &mut Target, ticks: u64) -> Result<()> {
    let n = args.connections;
    let Some(pid) = target.pid else {
        bail!(
            "idle measures the gateway's RSS: let it spawn the gateway, or pass --gateway-pid \
             with --ws-url"
        );
    };
    let settle = Duration::from_secs(args.settle);
    let mut report = Report::new(format!(
        "idle: {n} connections over {} channels ({}0..), {:?} client, {}, up to {:?}",
        args.channels,
        args.channel_prefix,
        args.client,
        args.protocol.name(),
        args.stage
    ));

    tokio::time::sleep(settle).await;
    let rss_before = procfs::rss_kib(Some(pid))?;
    let own_rss_before = procfs::rss_kib(None)?;
    let cpu_before = procfs::cpu_time(Some(pid), ticks)?;
    eprintln!("gateway RSS before connecting: {rss_before} KiB; connecting {n} connections");

    let started = Instant::now();
    let Readers {
        tasks: mut holders,
        cancel,
    } = connect_idle(args, target).await?;
    let connect_time = started.elapsed();
    let connect_cpu = procfs::cpu_time(Some(pid), ticks)? - cpu_before;
    eprintln!(
        "all {n} subscribed in {connect_time:.2?}; letting the gateway settle for {settle:?}"
    );

    tokio::time::sleep(settle).await;
    target.check_alive()?;
    let rss_after = procfs::rss_kib(Some(pid))?;
    let own_rss_after = procfs::rss_kib(None)?;
    // A holder that has finished is a connection the server closed.
    let mut closes: BTreeMap<String, usize> = BTreeMap::new();
    while let Some(finished) = holders.try_join_next() {
        let close = match finished {
            Ok(Some(info)) => info.to_string(),
            Ok(None) => "no close frame".to_owned(),
            Err(error) => format!("holder task failed: {error}"),
        };
        *closes.entry(close).or_default() += 1;
    }
    let closed: usize = closes.values().sum();
    let per_connection = rss_after.saturating_sub(rss_before) as f64 / n as f64;

    report.line("connections subscribed", n);
    report.line("connect + subscribe phase", secs(connect_time));
    report.line(
        "connects/s",
        format!("{:.0}", n as f64 / connect_time.as_secs_f64()),
    );
    report.line(
        "gateway CPU per connect+subscribe",
        format!("{:.1} us", connect_cpu.as_micros() as f64 / n as f64),
    );
    report.line("gateway RSS before", format!("{rss_before} KiB"));
    report.line("gateway RSS after", format!("{rss_after} KiB"));
    report.line(
        "gateway RSS per connection",
        format!("{per_connection:.2} KiB"),
    );
    report.line(
        "load generator RSS per connection",
        format!(
            "{:.2} KiB (client side, for reference)",
            own_rss_after.saturating_sub(own_rss_before) as f64 / n as f64
        ),
    );
    report.line("connections closed by the server", report::closes(&closes));
    report.line("machine", machine());
    report.print();

    if closed > 0 {
        let _ = cancel.send(true);
        bail!("{closed} of {n} idle connections were closed by the server");
    }
    let mut after_storms = per_connection;
    let (mut holders, mut cancel) = (holders, cancel);
    for storm in 1..=args.storms {
        // Every client drops its socket at once; then all come back together.
        let _ = cancel.send(true);
        while tokio::time::timeout(Duration::from_secs(30), holders.join_next())
            .await
            .ok()
            .flatten()
            .is_some()
        {}
        let started = Instant::now();
        let readers = connect_idle(args, target).await?;
        let reconnect_time = started.elapsed();
        (holders, cancel) = (readers.tasks, readers.cancel);
        tokio::time::sleep(settle).await;
        target.check_alive()?;
        let rss = procfs::rss_kib(Some(pid))?;
        after_storms = rss.saturating_sub(rss_before) as f64 / n as f64;
        eprintln!(
            "storm {storm}: {n} reconnected and resubscribed in {reconnect_time:.2?}; \
             gateway RSS {rss} KiB, {after_storms:.2} KiB per connection ({:.2}x steady)",
            after_storms / per_connection
        );
    }
    // The connections close in the background; the gateway is killed right after.
    let _ = cancel.send(true);
    drop(holders);
    println!(
        "RESULT scenario=idle protocol={} connections={n} stage={:?} rss_kib_per_connection={per_connection:.2} channels={} storms={} rss_kib_per_connection_after_storms={after_storms:.2}",
        args.protocol.name(),
        args.stage,
        args.channels,
        args.storms
    );
    Ok(())
}

/// Connects every idle client (user `idle-<i>`, on channel `<prefix><i % channels>`), each
/// held by [`hold`].
async fn connect_idle(args: &IdleArgs, target: &mut Target) -> Result<Readers<Option<CloseInfo>>> {
    let prefix = &args.channel_prefix;
    let channels = args.channels;
    connect_all(
        target,
        Opening {
            kind: args.client,
            codec: args.protocol.codec(),
            stage: args.stage,
        },
        args.connections,
        args.concurrency,
        "idle-",
        |i| format!("{prefix}{}", i % channels),
        hold,
    )
    .await
}

/// Keeps `conn` open and read (so pings are answered) until the run ends (`None`) or the
/// server closes it (`Some(close frame)`).
async fn hold(mut conn: Conn, mut cancelled: watch::Receiver<bool>) -> Option<CloseInfo> {
    loop {
        tokio::select! {
            biased;
            _ = cancelled.wait_for(|&c| c) => return None,
            event = conn.next_event() => match event {
                Event::Closed(info) => return info,
                Event::Push(_) => {}
            },
        }
    }
}
