//! What `fanout` and `cluster` share: N subscribers on one channel that record every
//! publication they receive, M publications sent over gRPC with a bounded window, and the
//! tally of what arrived (missing, duplicate, out of order, latencies) with its report lines.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;
use herald_api::v1::PublishRequest;
use herald_client::CloseInfo;
use herald_protocol::reply::ReceivedPublication;
use herald_testkit::grpc::Grpc;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::conn::{ClientKind, Conn, Event, Opening, Protocol, Stage};
use crate::connect::{Readers, connect_all};
use crate::gateway::Target;
use crate::procfs;
use crate::report::{self, Report, micros_histogram, record, secs};

/// Longest one publish RPC may take.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(30);

/// The event name of every publication.
pub const EVENT: &str = "loadtest";

/// The subscribers and the publications.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// Subscribers, all on one channel
    #[arg(long, default_value_t = 1000)]
    pub subscribers: usize,
    /// Publications to send over gRPC
    #[arg(long, default_value_t = 200)]
    pub publications: usize,
    /// Size of each publication's JSON data, bytes (at least ~40)
    #[arg(long, default_value_t = 100)]
    pub payload_bytes: usize,
    /// Publications per second; 0 = as fast as the publish window allows
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Publish RPCs in flight at once
    #[arg(long, default_value_t = 1)]
    pub window: usize,
    /// Subprotocol of the subscribers (and of the floor's frames)
    #[arg(long, value_enum, default_value_t = Protocol::Json)]
    pub protocol: Protocol,
    /// The channel
    #[arg(long, default_value = "bench:fanout")]
    pub channel: String,
    /// Connections opened at once
    #[arg(long, default_value_t = 200)]
    pub concurrency: usize,
    /// Subscriber implementation
    #[arg(long, value_enum, default_value_t = ClientKind::Lean)]
    pub client: ClientKind,
    /// Seconds to wait for every delivery after the last publish
    #[arg(long, default_value_t = 60)]
    pub delivery_timeout: u64,
}

impl LoadArgs {
    /// Fails on an empty run, or when the open-file limit cannot hold the subscribers.
    pub fn check(&self) -> Result<()> {
        if self.subscribers == 0 || self.publications == 0 {
            bail!("--subscribers and --publications must be at least 1");
        }
        procfs::check_open_file_limit(self.subscribers)
    }

    /// The title of the report: `<scenario>: N subscribers x M publications of ...`.
    pub fn title(&self, scenario: &str) -> String {
        format!(
            "{scenario}: {} subscribers x {} publications of {} bytes on {} ({:?} client, {})",
            self.subscribers,
            self.publications,
            self.payload_bytes,
            self.channel,
            self.client,
            self.protocol.name()
        )
    }
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
    /// Server `ts` (ms) → receipt, µs (none over Socket.IO, whose events carry no `ts`).
    from_ts_us: Vec<u64>,
    /// Client-side publish call start → receipt, µs.
    from_send_us: Vec<u64>,
    /// When the last publication arrived, if all did.
    completed_at: Option<Instant>,
    /// The first publication of this run received, as the server sent it.
    first: Option<ReceivedPublication>,
    /// `Some(close frame)` if the connection ended.
    closed: Option<Option<CloseInfo>>,
    /// Kept open until the end of the run.
    _conn: Conn,
}

/// The connected subscribers, each read by its own task until it has every publication.
pub struct Subscribers(Readers<Received>);

/// Connects and subscribes every subscriber (users `<scenario>-<i>`) to `target`, and
/// reports the connect phase: its time and rate and, when `target`'s pid is known, the CPU
/// and memory it cost `target` (`name` in the report, e.g. "gateway").
pub async fn subscribe(
    target: &mut Target,
    load: &LoadArgs,
    scenario: &str,
    name: &str,
    ticks: u64,
    report: &mut Report,
) -> Result<Subscribers> {
    let n = load.subscribers;
    let pid = target.pid;
    let rss_idle = pid.map(|pid| procfs::rss_kib(Some(pid))).transpose()?;
    eprintln!("connecting {n} subscribers to {}", load.channel);
    let cpu_before = pid
        .map(|pid| procfs::cpu_time(Some(pid), ticks))
        .transpose()?;
    let started = Instant::now();
    let subscribers = connect(target, load, scenario).await?;
    let connect_time = started.elapsed();
    report.line("subscribers connected+subscribed", n);
    report.line("connect phase", secs(connect_time));
    report.line(
        "connects/s",
        format!("{:.0}", n as f64 / connect_time.as_secs_f64()),
    );
    if let (Some(pid), Some(before)) = (pid, cpu_before) {
        let used = procfs::cpu_time(Some(pid), ticks)? - before;
        report.line(
            format!("{name} CPU per connect+subscribe"),
            format!("{:.1} us", used.as_micros() as f64 / n as f64),
        );
        let rss = procfs::rss_kib(Some(pid))?;
        report.line(format!("{name} RSS with subscribers"), format!("{rss} KiB"));
        if let Some(idle) = rss_idle {
            report.line(
                format!("{name} RSS per subscriber"),
                format!("{:.2} KiB", rss.saturating_sub(idle) as f64 / n as f64),
            );
        }
    }
    Ok(subscribers)
}

/// Connects and subscribes every subscriber (users `<scenario>-<i>`) to `target`, each
/// read by its own task until it has every publication; reports nothing.
pub async fn connect(target: &mut Target, load: &LoadArgs, scenario: &str) -> Result<Subscribers> {
    let readers = connect_all(
        target,
        Opening {
            kind: load.client,
            codec: load.protocol.codec(),
            stage: Stage::Subscribe,
        },
        load.subscribers,
        load.concurrency,
        &format!("{scenario}-"),
        |_| load.channel.clone(),
        |conn, cancelled| receive(conn, load.publications, cancelled),
    )
    .await?;
    Ok(Subscribers(readers))
}

impl Subscribers {
    /// Subscribers already connected (to the floor server), each read by its own task as
    /// [`subscribe`]'s are, until it has all `publications`.
    pub fn read(conns: Vec<Conn>, publications: usize) -> Subscribers {
        let (cancel, cancelled) = watch::channel(false);
        let mut tasks = JoinSet::new();
        for conn in conns {
            tasks.spawn(receive(conn, publications, cancelled.clone()));
        }
        Subscribers(Readers { tasks, cancel })
    }
}

/// A gRPC client of `target`, its connection warmed up by one publish to `warmup_channel`,
/// which nobody watches.
pub async fn publisher(target: &Target, warmup_channel: &str) -> Result<Grpc> {
    let mut grpc = target.grpc().await?;
    let warmup = grpc
        .publish(PublishRequest {
            channel: warmup_channel.into(),
            event: "warmup".into(),
            data: b"{}".to_vec(),
            idempotency_key: String::new(),
        })
        .await;
    if let Err(status) = warmup {
        eprintln!(
            "warm-up publish to {warmup_channel} failed (continuing): {:?} {}",
            status.code(),
            status.message()
        );
    }
    Ok(grpc)
}

/// The publish phase.
pub struct Published {
    /// Publish RPC latencies, µs.
    rpc_latency: Histogram<u64>,
    first_publish: Instant,
    publish_time: Duration,
}

impl Published {
    /// A publish phase without RPCs (the floor's, which writes the frames itself).
    pub fn without_rpc(first_publish: Instant, publish_time: Duration) -> Published {
        Published {
            rpc_latency: micros_histogram(),
            first_publish,
            publish_time,
        }
    }

    /// Publications per second over the publish phase.
    pub fn rate(&self, publications: usize) -> f64 {
        publications as f64 / self.publish_time.as_secs_f64()
    }
}

/// Sends every publication, at most `window` RPCs in flight (and at `rate`, when set),
/// saying so on stderr.
pub async fn publish(grpc: &Grpc, load: &LoadArgs) -> Result<Published> {
    eprintln!("publishing {} publications", load.publications);
    let published = send(grpc, load, |_| {}).await?;
    eprintln!(
        "published in {:.2?}; waiting for deliveries",
        published.publish_time
    );
    Ok(published)
}

/// [`publish`] without a word, calling `on_sent` with the count sent so far after each.
pub async fn send(
    grpc: &Grpc,
    load: &LoadArgs,
    mut on_sent: impl FnMut(usize),
) -> Result<Published> {
    let m = load.publications;
    let first_publish = Instant::now();
    let mut rpc_latency = micros_histogram();
    let mut in_flight = JoinSet::new();
    for seq in 0..m {
        if load.rate > 0.0 {
            let due = first_publish + Duration::from_secs_f64(seq as f64 / load.rate);
            tokio::time::sleep_until(due.into()).await;
        }
        while in_flight.len() >= load.window.max(1) {
            let joined = in_flight.join_next().await.expect("tasks in flight");
            record(&mut rpc_latency, joined??);
        }
        let request = PublishRequest {
            channel: load.channel.clone(),
            event: EVENT.into(),
            data: payload(seq, load.payload_bytes).into_bytes(),
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
        on_sent(seq + 1);
    }
    while let Some(joined) = in_flight.join_next().await {
        record(&mut rpc_latency, joined??);
    }
    let publish_time = first_publish.elapsed();
    Ok(Published {
        rpc_latency,
        first_publish,
        publish_time,
    })
}

impl Subscribers {
    /// Waits for every subscriber to have every publication, at most `delivery_timeout`
    /// seconds, then stops the rest; returns what each saw.
    pub async fn collect(self, load: &LoadArgs) -> Result<Deliveries> {
        let Readers { mut tasks, cancel } = self.0;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(load.delivery_timeout);
        let mut results = Vec::with_capacity(load.subscribers);
        let mut timed_out = false;
        loop {
            let joined = if timed_out {
                tokio::time::timeout(Duration::from_secs(10), tasks.join_next())
                    .await
                    .context("subscriber tasks did not stop after cancellation")?
            } else {
                match tokio::time::timeout_at(deadline, tasks.join_next()).await {
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
        Ok(Deliveries {
            results,
            timed_out,
            collected_at: Instant::now(),
        })
    }
}

/// What every subscriber saw.
pub struct Deliveries {
    results: Vec<Received>,
    /// Whether the wait for deliveries gave up.
    timed_out: bool,
    collected_at: Instant,
}

impl Deliveries {
    /// A publication of this run as the server sent it, if any arrived.
    pub fn sample(&self) -> Option<&ReceivedPublication> {
        self.results.iter().find_map(|r| r.first.as_ref())
    }
}

/// The counts and latencies of a run.
pub struct Tally {
    subscribers: usize,
    expected: usize,
    pub delivered: usize,
    pub duplicates: usize,
    foreign: usize,
    pub out_of_order: usize,
    other_pushes: usize,
    /// Subscribers that got every publication.
    complete: usize,
    closes: String,
    /// First publish to last delivery (or to giving up).
    pub wall: Duration,
    all_delivered: bool,
    timed_out: bool,
    delivery_timeout: u64,
    /// Server `ts` → receipt, µs.
    pub from_ts: Histogram<u64>,
    /// Publish call start → receipt, µs.
    pub from_send: Histogram<u64>,
    pub per_sec: f64,
}

impl Tally {
    pub fn new(deliveries: &Deliveries, published: &Published, load: &LoadArgs) -> Tally {
        let (n, results) = (load.subscribers, &deliveries.results);
        let delivered: usize = results.iter().map(|r| r.distinct).sum();
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
        let waited = deliveries.collected_at - published.first_publish;
        let wall = last_delivery.map_or(waited, |last| last - published.first_publish);
        let mut from_ts = micros_histogram();
        let mut from_send = micros_histogram();
        for r in results {
            r.from_ts_us.iter().for_each(|&us| record(&mut from_ts, us));
            r.from_send_us
                .iter()
                .for_each(|&us| record(&mut from_send, us));
        }
        Tally {
            subscribers: n,
            expected: n * load.publications,
            delivered,
            duplicates: results.iter().map(|r| r.duplicates).sum(),
            foreign: results.iter().map(|r| r.foreign).sum(),
            out_of_order: results.iter().map(|r| r.out_of_order).sum(),
            other_pushes: results.iter().map(|r| r.other_pushes).sum(),
            complete,
            closes: report::closes(&closes),
            wall,
            all_delivered: last_delivery.is_some(),
            timed_out: deliveries.timed_out,
            delivery_timeout: load.delivery_timeout,
            from_ts,
            from_send,
            per_sec: delivered as f64 / wall.as_secs_f64(),
        }
    }

    /// The report lines from the publish phase to the latencies; `latency_names` name the
    /// server `ts` → receipt and the publish call → receipt latencies.
    pub fn report(
        &self,
        report: &mut Report,
        published: &Published,
        load: &LoadArgs,
        latency_names: [&str; 2],
    ) {
        let m = load.publications;
        report.line("publications published", m);
        report.line(
            "publish phase",
            format!(
                "{} ({:.0} publications/s, window {})",
                secs(published.publish_time),
                m as f64 / published.publish_time.as_secs_f64(),
                load.window.max(1)
            ),
        );
        report.latency("publish RPC latency", &published.rpc_latency);
        report.line("deliveries expected", self.expected);
        report.line("deliveries received", self.delivered);
        report.line("deliveries missing", self.missing());
        report.line(
            "subscribers with every publication",
            format!("{} of {}", self.complete, self.subscribers),
        );
        report.line("duplicate deliveries", self.duplicates);
        report.line("out-of-order deliveries (by offset)", self.out_of_order);
        if self.foreign > 0 {
            report.line("foreign publications", self.foreign);
        }
        if self.other_pushes > 0 {
            report.line("other pushes (unsubscribe/disconnect)", self.other_pushes);
        }
        report.line("connections closed by the server", &self.closes);
        report.line(
            if self.all_delivered {
                "first publish -> last delivery"
            } else {
                "first publish -> gave up"
            },
            secs(self.wall),
        );
        report.line("deliveries/s", format!("{:.0}", self.per_sec));
        report.latency(latency_names[0], &self.from_ts);
        report.latency(latency_names[1], &self.from_send);
    }

    /// Deliveries expected and not received.
    pub fn missing(&self) -> usize {
        self.expected - self.delivered
    }

    /// Fails unless every subscriber got every publication.
    pub fn check_complete(&self) -> Result<()> {
        let (expected, delivered) = (self.expected, self.delivered);
        if delivered < expected || self.complete < self.subscribers {
            bail!(
                "incomplete run: {delivered} of {expected} deliveries ({} missing); {} of {} \
                 subscribers got every publication; closes: {}{}",
                expected - delivered,
                self.complete,
                self.subscribers,
                self.closes,
                if self.timed_out {
                    format!(
                        " (gave up {} s after the last publish)",
                        self.delivery_timeout
                    )
                } else {
                    String::new()
                }
            );
        }
        Ok(())
    }
}

/// JSON data of `bytes` bytes (or just over, if too small): `seq`, the send time, padding.
pub fn payload(seq: usize, bytes: usize) -> String {
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
    let mut first = None;
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
        // Socket.IO events carry no server `ts` (0 here).
        if publication.ts > 0 {
            from_ts_us.push(now_us.saturating_sub(publication.ts as u64 * 1000));
        }
        from_send_us.push(now_us.saturating_sub(sent_us));
        first.get_or_insert(publication);
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
        first,
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
