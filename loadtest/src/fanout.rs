//! `fanout`: N subscribers on one channel, M publications over gRPC; throughput,
//! end-to-end latency and gateway CPU per delivery.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use herald_api::v1::PublishRequest;
use herald_client::CloseInfo;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::conn::{ClientKind, Conn, Event};
use crate::connect::connect_all;
use crate::gateway::{Target, TargetArgs};
use crate::procfs;
use crate::report::{self, Report, micros_histogram, record, secs};

/// Longest one publish RPC may take.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, clap::Args)]
pub struct FanoutArgs {
    /// Subscribers, all on one channel
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    /// Publications to send over gRPC
    #[arg(long, default_value_t = 200)]
    publications: usize,
    /// Size of each publication's JSON data, bytes (at least ~40)
    #[arg(long, default_value_t = 100)]
    payload_bytes: usize,
    /// Publications per second; 0 = as fast as the publish window allows
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Publish RPCs in flight at once
    #[arg(long, default_value_t = 1)]
    window: usize,
    /// The channel
    #[arg(long, default_value = "org:bench:ch:fanout")]
    channel: String,
    /// Connections opened at once
    #[arg(long, default_value_t = 200)]
    concurrency: usize,
    /// Subscriber implementation
    #[arg(long, value_enum, default_value_t = ClientKind::Lean)]
    client: ClientKind,
    /// Seconds to wait for every delivery after the last publish
    #[arg(long, default_value_t = 60)]
    delivery_timeout: u64,
    #[command(flatten)]
    target: TargetArgs,
}

/// What one subscriber saw.
struct Received {
    /// Distinct publications received.
    distinct: usize,
    duplicates: usize,
    /// Publications whose data was not this run's (`seq` missing or out of range).
    foreign: usize,
    /// Publications delivered with an offset not above the previous one.
    out_of_order: usize,
    /// Other pushes (unsubscribe, disconnect...).
    other_pushes: usize,
    /// Server `ts` (ms) → receipt, µs.
    from_ts_us: Vec<u64>,
    /// Client-side publish call start → receipt, µs.
    from_send_us: Vec<u64>,
    /// When the last publication arrived, if all did.
    completed_at: Option<Instant>,
    /// `Some(close frame)` if the connection ended.
    closed: Option<Option<CloseInfo>>,
    /// Kept open until the end of the run.
    _conn: Conn,
}

pub async fn run(args: FanoutArgs) -> Result<()> {
    let (n, m) = (args.subscribers, args.publications);
    if n == 0 || m == 0 {
        bail!("--subscribers and --publications must be at least 1");
    }
    procfs::check_open_file_limit(n)?;
    let ticks = procfs::clock_ticks_per_sec();
    Target::run_with(&args.target, async |target| {
        measure(&args, target, ticks).await
    })
    .await
}

async fn measure(args: &FanoutArgs, target: &mut Target, ticks: u64) -> Result<()> {
    let (n, m) = (args.subscribers, args.publications);
    let pid = target.pid;
    let cpu = |pid| procfs::cpu_time(pid, ticks);
    let mut report = Report::new(format!(
        "fanout: {n} subscribers x {m} publications of {} bytes on {} ({:?} client)",
        args.payload_bytes, args.channel, args.client
    ));
    let rss_idle = pid.map(|pid| procfs::rss_kib(Some(pid))).transpose()?;

    // Connect and subscribe every subscriber.
    eprintln!("connecting {n} subscribers to {}", args.channel);
    let gateway_cpu_before_connect = pid.map(|pid| cpu(Some(pid))).transpose()?;
    let started = Instant::now();
    let channel = args.channel.clone();
    let (cancel, cancelled) = watch::channel(false);
    let mut receivers = JoinSet::new();
    connect_all(
        target,
        args.client,
        n,
        args.concurrency,
        "fanout-",
        |_| channel.clone(),
        |conn| {
            receivers.spawn(receive(conn, m, cancelled.clone()));
        },
    )
    .await?;
    let connect_time = started.elapsed();
    report.line("subscribers connected+subscribed", n);
    report.line("connect phase", secs(connect_time));
    report.line(
        "connects/s",
        format!("{:.0}", n as f64 / connect_time.as_secs_f64()),
    );
    if let (Some(pid), Some(before)) = (pid, gateway_cpu_before_connect) {
        let used = cpu(Some(pid))? - before;
        report.line(
            "gateway CPU per connect+subscribe",
            format!("{:.1} us", used.as_micros() as f64 / n as f64),
        );
        let rss = procfs::rss_kib(Some(pid))?;
        report.line("gateway RSS with subscribers", format!("{rss} KiB"));
        if let Some(idle) = rss_idle {
            report.line(
                "gateway RSS per subscriber",
                format!("{:.2} KiB", rss.saturating_sub(idle) as f64 / n as f64),
            );
        }
    }

    // Publish.
    let mut grpc = target.grpc().await?;
    // One publish to a channel nobody watches warms up the gRPC connection.
    let warmup = grpc
        .publish(PublishRequest {
            channel: "public:loadtest-warmup".into(),
            event: "warmup".into(),
            data: b"{}".to_vec(),
            idempotency_key: String::new(),
        })
        .await;
    if let Err(status) = warmup {
        eprintln!(
            "warm-up publish to public:loadtest-warmup failed (continuing): {:?} {}",
            status.code(),
            status.message()
        );
    }
    eprintln!("publishing {m} publications");
    let gateway_cpu_start = pid.map(|pid| cpu(Some(pid))).transpose()?;
    let own_cpu_start = cpu(None)?;
    let first_publish = Instant::now();
    let mut rpc_latency = micros_histogram();
    let mut in_flight = JoinSet::new();
    for seq in 0..m {
        if args.rate > 0.0 {
            let due = first_publish + Duration::from_secs_f64(seq as f64 / args.rate);
            tokio::time::sleep_until(due.into()).await;
        }
        while in_flight.len() >= args.window.max(1) {
            let joined = in_flight.join_next().await.expect("tasks in flight");
            record(&mut rpc_latency, joined??);
        }
        let request = PublishRequest {
            channel: args.channel.clone(),
            event: "loadtest".into(),
            data: payload(seq, args.payload_bytes).into_bytes(),
            idempotency_key: String::new(),
        };
        let mut grpc = grpc.clone();
        in_flight.spawn(async move {
            let sent = Instant::now();
            match tokio::time::timeout(PUBLISH_TIMEOUT, grpc.publish(request)).await {
                Ok(Ok(_)) => Ok(sent.elapsed().as_micros() as u64),
                Ok(Err(status)) => Err(anyhow::anyhow!(
                    "publish {seq} failed: {:?} {}",
                    status.code(),
                    status.message()
                )),
                Err(_) => Err(anyhow::anyhow!(
                    "publish {seq} got no answer in {PUBLISH_TIMEOUT:?}"
                )),
            }
        });
    }
    while let Some(joined) = in_flight.join_next().await {
        record(&mut rpc_latency, joined??);
    }
    let publish_time = first_publish.elapsed();
    eprintln!("published in {publish_time:.2?}; waiting for deliveries");

    // Wait for every subscriber to have every publication, bounded.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.delivery_timeout);
    let mut results = Vec::with_capacity(n);
    let mut timed_out = false;
    loop {
        let joined = if timed_out {
            tokio::time::timeout(Duration::from_secs(10), receivers.join_next())
                .await
                .context("subscriber tasks did not stop after cancellation")?
        } else {
            match tokio::time::timeout_at(deadline, receivers.join_next()).await {
                Ok(joined) => joined,
                Err(_) => {
                    timed_out = true;
                    let _ = cancel.send(true);
                    continue;
                }
            }
        };
        match joined {
            Some(received) => results.push(received.context("subscriber task failed")?),
            None => break,
        }
    }
    let gateway_cpu = match (pid, gateway_cpu_start) {
        (Some(pid), Some(start)) => Some(cpu(Some(pid))? - start),
        _ => None,
    };
    let own_cpu = cpu(None)? - own_cpu_start;
    let waited = first_publish.elapsed();
    target.check_alive()?;

    // Tally.
    let expected = n * m;
    let delivered: usize = results.iter().map(|r| r.distinct).sum();
    let duplicates: usize = results.iter().map(|r| r.duplicates).sum();
    let foreign: usize = results.iter().map(|r| r.foreign).sum();
    let out_of_order: usize = results.iter().map(|r| r.out_of_order).sum();
    let other_pushes: usize = results.iter().map(|r| r.other_pushes).sum();
    let complete = results.iter().filter(|r| r.completed_at.is_some()).count();
    let mut closes: BTreeMap<String, usize> = BTreeMap::new();
    for closed in results.iter().filter_map(|r| r.closed.as_ref()) {
        let key = match closed {
            Some(info) => info.to_string(),
            None => "no close frame".into(),
        };
        *closes.entry(key).or_default() += 1;
    }
    let last_delivery = results
        .iter()
        .filter_map(|r| r.completed_at)
        .max()
        .filter(|_| complete == n);
    let wall = last_delivery.map_or(waited, |last| last - first_publish);
    let mut from_ts = micros_histogram();
    let mut from_send = micros_histogram();
    for r in &results {
        r.from_ts_us.iter().for_each(|&us| record(&mut from_ts, us));
        r.from_send_us
            .iter()
            .for_each(|&us| record(&mut from_send, us));
    }
    let per_sec = delivered as f64 / wall.as_secs_f64();

    report.line("publications published", m);
    report.line(
        "publish phase",
        format!(
            "{} ({:.0} publications/s, window {})",
            secs(publish_time),
            m as f64 / publish_time.as_secs_f64(),
            args.window.max(1)
        ),
    );
    report.latency("publish RPC latency", &rpc_latency);
    report.line("deliveries expected", expected);
    report.line("deliveries received", delivered);
    report.line("deliveries missing", expected - delivered);
    report.line(
        "subscribers with every publication",
        format!("{complete} of {n}"),
    );
    report.line("duplicate deliveries", duplicates);
    report.line("out-of-order deliveries (by offset)", out_of_order);
    if foreign > 0 {
        report.line("foreign publications", foreign);
    }
    if other_pushes > 0 {
        report.line("other pushes (unsubscribe/disconnect)", other_pushes);
    }
    let closes_text = if closes.is_empty() {
        "none".to_owned()
    } else {
        closes
            .iter()
            .map(|(close, count)| format!("{count} x {close}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    report.line("connections closed by the server", &closes_text);
    report.line(
        if last_delivery.is_some() {
            "first publish -> last delivery"
        } else {
            "first publish -> gave up"
        },
        secs(wall),
    );
    report.line("deliveries/s", format!("{per_sec:.0}"));
    report.latency("latency server ts -> receipt", &from_ts);
    report.latency("latency publish call -> receipt", &from_send);
    let cpu_per_delivery =
        gateway_cpu.map(|used| used.as_micros() as f64 / delivered.max(1) as f64);
    match gateway_cpu {
        Some(used) => {
            report.line(
                "gateway CPU (publish + deliver)",
                format!(
                    "{:.0} ms ({:.0}% of one core over the wall time; {ticks} ticks/s)",
                    used.as_secs_f64() * 1000.0,
                    100.0 * used.as_secs_f64() / wall.as_secs_f64()
                ),
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

    if delivered < expected || complete < n {
        bail!(
            "incomplete run: {delivered} of {expected} deliveries ({} missing); {complete} of {n} \
             subscribers got every publication; closes: {closes_text}{}",
            expected - delivered,
            if timed_out {
                format!(
                    " (gave up {} s after the last publish)",
                    args.delivery_timeout
                )
            } else {
                String::new()
            }
        );
    }
    println!(
        "RESULT scenario=fanout subscribers={n} publications={m} deliveries_per_sec={per_sec:.0} \
         p50_ms={} p99_ms={} cpu_us_per_delivery={}",
        report::ms(from_ts.value_at_quantile(0.5)),
        report::ms(from_ts.value_at_quantile(0.99)),
        cpu_per_delivery.map_or("n/a".to_owned(), |us| format!("{us:.3}"))
    );
    Ok(())
}

/// JSON data of `bytes` bytes (or just over, if too small): `seq`, the send time, padding.
fn payload(seq: usize, bytes: usize) -> String {
    let sent_us = unix_micros();
    let bare = format!(r#"{{"seq":{seq},"sent_us":{sent_us},"pad":""}}"#);
    let pad = "x".repeat(bytes.saturating_sub(bare.len()));
    format!(r#"{{"seq":{seq},"sent_us":{sent_us},"pad":"{pad}"}}"#)
}

fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Reads `conn`'s pushes until it has all `m` publications, the connection ends, or the
/// run is cancelled.
async fn receive(mut conn: Conn, m: usize, mut cancelled: watch::Receiver<bool>) -> Received {
    let mut seen = vec![false; m];
    let mut distinct = 0;
    let mut duplicates = 0;
    let mut foreign = 0;
    let mut out_of_order = 0;
    let mut other_pushes = 0;
    let mut from_ts_us = Vec::with_capacity(m);
    let mut from_send_us = Vec::with_capacity(m);
    let mut completed_at = None;
    let mut closed = None;
    let mut last_offset = 0;
    loop {
        let event = tokio::select! {
            biased;
            event = conn.next_event() => event,
            _ = cancelled.wait_for(|&c| c) => break,
        };
        let push = match event {
            Event::Push(push) => push,
            Event::Closed(info) => {
                closed = Some(info);
                break;
            }
        };
        let Some(publication) = push.publication else {
            other_pushes += 1;
            continue;
        };
        let now_us = unix_micros();
        if publication.offset > 0 {
            if publication.offset <= last_offset {
                out_of_order += 1;
            }
            last_offset = publication.offset;
        }
        let parsed = parse_payload(publication.data.get()).filter(|&(seq, _)| seq < m);
        let Some((seq, sent_us)) = parsed else {
            foreign += 1;
            continue;
        };
        if std::mem::replace(&mut seen[seq], true) {
            duplicates += 1;
            continue;
        }
        distinct += 1;
        let ts_us = (publication.ts.max(0) as u64) * 1000;
        from_ts_us.push(now_us.saturating_sub(ts_us));
        from_send_us.push(now_us.saturating_sub(sent_us));
        if distinct == m {
            completed_at = Some(Instant::now());
            break;
        }
    }
    Received {
        distinct,
        duplicates,
        foreign,
        out_of_order,
        other_pushes,
        from_ts_us,
        from_send_us,
        completed_at,
        closed,
        _conn: conn,
    }
}

/// `(seq, sent_us)` from data made by [`payload`] (delivered verbatim by the gateway).
fn parse_payload(data: &str) -> Option<(usize, u64)> {
    fn number(text: &str) -> Option<(u64, &str)> {
        let end = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        Some((text[..end].parse().ok()?, &text[end..]))
    }
    let (seq, rest) = number(data.strip_prefix(r#"{"seq":"#)?)?;
    let (sent_us, _) = number(rest.strip_prefix(r#","sent_us":"#)?)?;
    Some((usize::try_from(seq).ok()?, sent_us))
}

/// CPU model and count, for the report.
pub fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|line| line.strip_prefix("model name"))
                .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{cpus} CPUs, {model}")
}
