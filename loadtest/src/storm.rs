//! `storm`: a reconnect storm the server drives. N subscribed clients of channels with
//! history receive some publications; then every one is dropped at once with gRPC
//! `Disconnect` (4200, reconnect now), more publications are made while they are away, and
//! all reconnect together, subscribe with `recover` from their last offset and must get
//! `recovered: true` and every publication they missed, in order. Reports the time until
//! all have recovered, connects a second, and the gateway's RSS per connection after each
//! storm against the steady value.
//!
//! Each client binds its socket to one of several loopback addresses (127.0.0.2, .3, ...)
//! before connecting, so that tens of thousands of connections, made again and again, do
//! not run out of ephemeral ports towards the one server port.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use herald_api::v1::{DisconnectRequest, PublishRequest};
use herald_client::CloseInfo;
use herald_protocol::CloseCode;
use herald_protocol::command::StreamPosition;
use herald_protocol::reply::{ReceivedPublication, SubscribeResult};
use herald_testkit::grpc::Grpc;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::conn::{Event, LeanConn};
use crate::gateway::{Target, TargetArgs};
use crate::procfs;
use crate::report::{Report, machine, secs};

/// Longest a phase (all connected, all caught up, all closed, all recovered) may take.
const PHASE_TIMEOUT: Duration = Duration::from_secs(180);
/// Longest one connection may take to upgrade, connect and subscribe.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, clap::Args)]
pub struct StormArgs {
    /// Subscribed clients, all dropped at once in each storm
    #[arg(long, default_value_t = 15_000)]
    connections: usize,
    /// Channels the clients are spread over (client i subscribes to channel i % N)
    #[arg(long, default_value_t = 10)]
    channels: usize,
    /// Channel name prefix (a namespace with history); channel k is `<prefix><k>`
    #[arg(long, default_value = "bench:storm:")]
    channel_prefix: String,
    /// Users the clients are spread over (client i is user `storm-<i % N>`); one
    /// `Disconnect` call per user drops them
    #[arg(long, default_value_t = 100)]
    users: usize,
    /// Publications to each channel before the steady reading, and again while the
    /// clients are away in each storm
    #[arg(long, default_value_t = 5)]
    publications: usize,
    /// Storms, one after another
    #[arg(long, default_value_t = 1)]
    storms: usize,
    /// Connections opened at once in the first connect phase
    #[arg(long, default_value_t = 200)]
    concurrency: usize,
    /// Reconnects in flight at once in a storm; 0 = all clients at once
    #[arg(long, default_value_t = 0)]
    reconnect_concurrency: usize,
    /// Loopback source addresses to spread the clients over (127.0.0.2 onwards); 0 = let
    /// the kernel choose (127.0.0.1)
    #[arg(long, default_value_t = 50)]
    source_addrs: u8,
    /// Seconds to let the gateway settle before each RSS reading
    #[arg(long, default_value_t = 2)]
    settle: u64,
    #[command(flatten)]
    target: TargetArgs,
}

pub async fn run(args: StormArgs) -> Result<()> {
    if args.connections == 0 || args.channels == 0 || args.users == 0 {
        bail!("--connections, --channels and --users must be at least 1");
    }
    if args.publications == 0 {
        bail!("--publications must be at least 1: recovery is checked on them");
    }
    if args.source_addrs > 250 {
        bail!("--source-addrs goes up to 250 (127.0.0.2 to 127.0.0.251)");
    }
    procfs::check_open_file_limit(args.connections)?;
    let ticks = procfs::clock_ticks_per_sec();
    Target::run_with(&args.target, async |target| {
        measure(&args, target, ticks).await
    })
    .await
}

/// What every client of a run shares.
struct Spec {
    ws_url: String,
    server: SocketAddr,
    source_addrs: u8,
    channel_prefix: String,
    channels: usize,
}

impl Spec {
    fn channel(&self, client: usize) -> String {
        format!("{}{}", self.channel_prefix, client % self.channels)
    }

    /// The address client `i` binds to, with the server's address.
    fn source(&self, client: usize) -> Option<(IpAddr, SocketAddr)> {
        if self.source_addrs == 0 {
            return None;
        }
        let host = 2 + (client % usize::from(self.source_addrs)) as u8;
        Some((IpAddr::V4(Ipv4Addr::new(127, 0, 0, host)), self.server))
    }
}

/// What the clients are to do, as the run goes on.
#[derive(Clone, Default)]
struct Phase {
    /// 0 before the first storm, then the storm's number.
    round: usize,
    /// The last offset of each channel in this round, once its publications are made:
    /// a client is caught up when it has everything up to it.
    targets: Option<Arc<Vec<u64>>>,
}

/// What a client tells the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Connected and subscribed (first round) or recovered (later rounds).
    Subscribed,
    /// Has every publication of the round.
    CaughtUp,
    /// The server closed the connection (with 4200, as asked).
    Closed,
}

enum Note {
    Done(Step),
    Failed(usize, String),
}

async fn measure(args: &StormArgs, target: &mut Target, ticks: u64) -> Result<()> {
    let n = args.connections;
    let Some(pid) = target.pid else {
        bail!(
            "storm measures the gateway's RSS: let it spawn the gateway, or pass --gateway-pid \
             with --ws-url"
        );
    };
    let spec = Arc::new(Spec {
        server: server_addr(&target.ws_url).await?,
        ws_url: target.ws_url.clone(),
        source_addrs: args.source_addrs,
        channel_prefix: args.channel_prefix.clone(),
        channels: args.channels,
    });
    let settle = Duration::from_secs(args.settle);
    let cpu = || procfs::cpu_time(Some(pid), ticks);
    let mut grpc = target.grpc().await?;
    let mut report = Report::new(format!(
        "storm: {n} clients over {} channels ({}0..) and {} users, {} publications a channel \
         a round, {} source addresses",
        args.channels, args.channel_prefix, args.users, args.publications, args.source_addrs
    ));

    tokio::time::sleep(settle).await;
    let rss_before = procfs::rss_kib(Some(pid))?;
    eprintln!("gateway RSS before connecting: {rss_before} KiB; connecting {n} clients");

    let (phase, phase_rx) = watch::channel(Phase::default());
    let (notes_tx, mut notes) = mpsc::unbounded_channel();
    let connects = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let reconnects = match args.reconnect_concurrency {
        0 => None,
        limit => Some(Arc::new(Semaphore::new(limit))),
    };
    let mut clients = JoinSet::new();
    let started = Instant::now();
    let cpu_start = cpu()?;
    for i in 0..n {
        let token = target.token(&format!("storm-{}", i % args.users), &spec.channel(i))?;
        let client = Client {
            index: i,
            spec: spec.clone(),
            token,
            phase: phase_rx.clone(),
            notes: notes_tx.clone(),
        };
        let (connects, reconnects) = (connects.clone(), reconnects.clone());
        clients.spawn(async move {
            if let Err(error) = client.run(&connects, reconnects.as_deref()).await {
                let _ = client.notes.send(Note::Failed(client.index, error));
            }
        });
    }
    drop(notes_tx);
    wait_all(
        &mut notes,
        n,
        &[Step::Subscribed],
        "connect and subscribe",
        target,
    )
    .await?;
    let connect_time = started.elapsed();
    let connect_cpu = cpu()? - cpu_start;
    eprintln!("all {n} subscribed in {connect_time:.2?}; publishing");

    let targets = publish(&mut grpc, args, 0).await?;
    phase.send_replace(Phase {
        round: 0,
        targets: Some(targets),
    });
    wait_all(
        &mut notes,
        n,
        &[Step::CaughtUp],
        "first publications",
        target,
    )
    .await?;
    tokio::time::sleep(settle).await;
    target.check_alive()?;
    let rss_steady = procfs::rss_kib(Some(pid))?;
    let steady = per_connection(rss_steady, rss_before, n);
    eprintln!("steady: gateway RSS {rss_steady} KiB, {steady:.2} KiB per connection");

    report.line("clients subscribed", n);
    report.line("first connect + subscribe", secs(connect_time));
    report.line(
        "first connects/s",
        format!("{:.0}", n as f64 / connect_time.as_secs_f64()),
    );
    report.line(
        "gateway CPU per first connect+subscribe",
        format!("{:.1} us", connect_cpu.as_micros() as f64 / n as f64),
    );
    report.line("gateway RSS before", format!("{rss_before} KiB"));
    report.line(
        "gateway RSS steady",
        format!("{rss_steady} KiB, {steady:.2} KiB per connection"),
    );

    let mut after = steady;
    let mut slowest = Duration::ZERO;
    for storm in 1..=args.storms {
        let cpu_start = cpu()?;
        let dropped = Instant::now();
        disconnect_all(&grpc, args.users).await?;
        wait_all(
            &mut notes,
            n,
            &[Step::Closed],
            "every client closed",
            target,
        )
        .await?;
        let all_closed = dropped.elapsed();
        // Made while every client is away: each must recover them from history. The
        // clients reconnect as soon as they see the round's targets.
        let targets = publish(&mut grpc, args, storm).await?;
        phase.send_replace(Phase {
            round: storm,
            targets: Some(targets),
        });
        let [resubscribed, recovered] = wait_all(
            &mut notes,
            n,
            &[Step::Subscribed, Step::CaughtUp],
            "reconnect and recover",
            target,
        )
        .await?[..] else {
            unreachable!("one time per step")
        };
        let storm_cpu = cpu()? - cpu_start;
        slowest = slowest.max(recovered);
        tokio::time::sleep(settle).await;
        target.check_alive()?;
        let rss = procfs::rss_kib(Some(pid))?;
        after = per_connection(rss, rss_before, n);
        eprintln!(
            "storm {storm}: all {n} recovered {recovered:.2?} after reconnecting began; \
             gateway RSS {rss} KiB, {after:.2} KiB per connection ({:.2}x steady)",
            after / steady
        );
        report.line(
            format!("storm {storm}: Disconnect calls -> every client closed"),
            secs(all_closed),
        );
        report.line(
            format!("storm {storm}: reconnect + subscribe with recover, all"),
            format!(
                "{} ({:.0} connects/s)",
                secs(resubscribed),
                n as f64 / resubscribed.as_secs_f64()
            ),
        );
        report.line(
            format!("storm {storm}: all recovered and caught up"),
            secs(recovered),
        );
        report.line(
            format!("storm {storm}: gateway CPU per reconnect+recover"),
            format!("{:.1} us", storm_cpu.as_micros() as f64 / n as f64),
        );
        report.line(
            format!("storm {storm}: gateway RSS after"),
            format!(
                "{rss} KiB, {after:.2} KiB per connection ({:.2}x steady)",
                after / steady
            ),
        );
    }
    report.line("machine", machine());
    report.print();
    // The clients close as their tasks are aborted; the gateway is killed right after.
    clients.abort_all();
    println!(
        "RESULT scenario=storm connections={n} storms={} rss_kib_per_connection={steady:.2} \
         rss_kib_per_connection_after_storms={after:.2} ratio={:.2} slowest_recovery_s={:.2} \
         recovery_connects_per_s={:.0}",
        args.storms,
        after / steady,
        slowest.as_secs_f64(),
        n as f64 / slowest.as_secs_f64().max(f64::EPSILON)
    );
    Ok(())
}

fn per_connection(rss: u64, before: u64, n: usize) -> f64 {
    rss.saturating_sub(before) as f64 / n as f64
}

/// The server's socket address, from its WebSocket URL.
async fn server_addr(ws_url: &str) -> Result<SocketAddr> {
    let request = ws_url
        .into_client_request()
        .with_context(|| format!("bad WebSocket URL {ws_url:?}"))?;
    let uri = request.uri();
    let host = uri.host().context("no host in the WebSocket URL")?;
    let port = uri.port_u16().unwrap_or(80);
    tokio::net::lookup_host((host.trim_matches(['[', ']']), port))
        .await
        .with_context(|| format!("resolving {host}"))?
        .next()
        .with_context(|| format!("{host} has no address"))
}

/// Publishes `--publications` to every channel; returns each channel's last offset.
async fn publish(grpc: &mut Grpc, args: &StormArgs, round: usize) -> Result<Arc<Vec<u64>>> {
    let mut targets = Vec::with_capacity(args.channels);
    for channel in 0..args.channels {
        let mut last = 0;
        for seq in 0..args.publications {
            let response = grpc
                .publish(PublishRequest {
                    channel: format!("{}{channel}", args.channel_prefix),
                    event: "storm".into(),
                    data: format!(r#"{{"round":{round},"seq":{seq}}}"#).into_bytes(),
                    idempotency_key: String::new(),
                })
                .await
                .with_context(|| format!("publishing to channel {channel}"))?;
            last = response.into_inner().offset;
        }
        if last == 0 {
            bail!(
                "{}{channel} has no history (offset 0): --channel-prefix must name a \
                 namespace with history",
                args.channel_prefix
            );
        }
        targets.push(last);
    }
    Ok(Arc::new(targets))
}

/// Drops every client: one `Disconnect` (4200, reconnect now) per user, all at once.
async fn disconnect_all(grpc: &Grpc, users: usize) -> Result<()> {
    let mut calls = JoinSet::new();
    for user in 0..users {
        let mut grpc = grpc.clone();
        calls.spawn(async move {
            grpc.disconnect(DisconnectRequest {
                user: format!("storm-{user}"),
                code: CloseCode::Shutdown.code().into(),
                reason: "storm".into(),
            })
            .await
        });
    }
    while let Some(call) = calls.join_next().await {
        call?.context("Disconnect")?;
    }
    Ok(())
}

/// Waits until `n` clients have done each of `steps` (in any interleaving), within
/// [`PHASE_TIMEOUT`]; returns how long after the call each step was complete. Fails on the
/// first client failure.
async fn wait_all(
    notes: &mut mpsc::UnboundedReceiver<Note>,
    n: usize,
    steps: &[Step],
    what: &str,
    target: &mut Target,
) -> Result<Vec<Duration>> {
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + PHASE_TIMEOUT;
    let mut counts = vec![0; steps.len()];
    let mut done: Vec<Option<Duration>> = vec![None; steps.len()];
    let mut progress = Instant::now();
    while done.iter().any(Option::is_none) {
        let note = match tokio::time::timeout_at(deadline, notes.recv()).await {
            Ok(Some(note)) => note,
            Ok(None) => bail!("{what}: the clients are gone ({counts:?} of {n})"),
            Err(_) => {
                target.check_alive()?;
                bail!("{what}: only {counts:?} of {n} within {PHASE_TIMEOUT:?}")
            }
        };
        let step = match note {
            Note::Done(step) => step,
            Note::Failed(client, error) => {
                target.check_alive()?;
                bail!("{what}: client {client} failed: {error}");
            }
        };
        let Some(k) = steps.iter().position(|&s| s == step) else {
            bail!("{what}: a client reported {step:?}, out of order");
        };
        counts[k] += 1;
        if counts[k] == n {
            done[k] = Some(started.elapsed());
        }
        if progress.elapsed() > Duration::from_secs(2) {
            eprintln!("  {what}: {counts:?} of {n} ({:.1?})", started.elapsed());
            progress = Instant::now();
        }
    }
    Ok(done.into_iter().flatten().collect())
}

/// One client: connects, follows its channel, and after every drop reconnects and
/// recovers.
struct Client {
    index: usize,
    spec: Arc<Spec>,
    token: String,
    phase: watch::Receiver<Phase>,
    notes: mpsc::UnboundedSender<Note>,
}

impl Client {
    async fn run(
        &self,
        connects: &Semaphore,
        reconnects: Option<&Semaphore>,
    ) -> Result<(), String> {
        let mut phase = self.phase.clone();
        let (mut conn, mut position) = {
            let _permit = connects.acquire().await.map_err(|e| e.to_string())?;
            let (conn, result) = self.open(None).await?;
            let position = StreamPosition {
                offset: result.offset,
                epoch: result.epoch,
            };
            (conn, position)
        };
        self.note(Step::Subscribed);
        for round in 0.. {
            match self
                .follow(&mut conn, &mut position, &mut phase, round)
                .await?
            {
                Some(info) if info.code == CloseCode::Shutdown.code() => {}
                close => return Err(format!("closed unexpectedly: {close:?}")),
            }
            drop(conn);
            self.note(Step::Closed);
            phase
                .wait_for(|p| p.round > round)
                .await
                .map_err(|_| "the run ended".to_owned())?;
            let _permit = match reconnects {
                Some(limit) => Some(limit.acquire().await.map_err(|e| e.to_string())?),
                None => None,
            };
            let (recovered, result) = self.open(Some(&position)).await?;
            if !result.recovered {
                return Err(format!("not recovered from {position:?}"));
            }
            if result.more {
                return Err("recovery needs more than one page".into());
            }
            for publication in &result.publications {
                advance(&mut position, publication)?;
            }
            conn = recovered;
            self.note(Step::Subscribed);
        }
        Ok(())
    }

    async fn open(
        &self,
        recover: Option<&StreamPosition>,
    ) -> Result<(LeanConn, SubscribeResult<ReceivedPublication>), String> {
        let spec = &self.spec;
        let channel = spec.channel(self.index);
        let open = LeanConn::open_from(
            spec.source(self.index),
            &spec.ws_url,
            herald_protocol::Codec::Json,
            &self.token,
            &channel,
            recover,
        );
        match tokio::time::timeout(CONNECT_TIMEOUT, open).await {
            Ok(Ok(opened)) => Ok(opened),
            Ok(Err((step, error))) => Err(format!("{step}: {error}")),
            Err(_) => Err(format!("no connect + subscribe within {CONNECT_TIMEOUT:?}")),
        }
    }

    /// Reads the connection until the server closes it, checking every publication follows
    /// the one before; says when it has the round's publications.
    async fn follow(
        &self,
        conn: &mut LeanConn,
        position: &mut StreamPosition,
        phase: &mut watch::Receiver<Phase>,
        round: usize,
    ) -> Result<Option<CloseInfo>, String> {
        let channel = self.index % self.spec.channels;
        let mut caught_up = false;
        loop {
            if !caught_up {
                let target = {
                    let phase = phase.borrow_and_update();
                    phase
                        .targets
                        .as_ref()
                        .filter(|_| phase.round == round)
                        .map(|targets| targets[channel])
                };
                if target.is_some_and(|target| position.offset >= target) {
                    caught_up = true;
                    self.note(Step::CaughtUp);
                }
            }
            tokio::select! {
                changed = phase.changed(), if !caught_up => {
                    changed.map_err(|_| "the run ended".to_owned())?;
                }
                event = conn.next_event() => match event {
                    Event::Push(push) => {
                        if let Some(publication) = &push.publication {
                            advance(position, publication)?;
                        }
                    }
                    Event::Closed(info) => return Ok(info),
                },
            }
        }
    }

    fn note(&self, step: Step) {
        let _ = self.notes.send(Note::Done(step));
    }
}

/// Moves `position` past `publication`, which must be the next one in the same epoch (or
/// the first one, whose epoch replaces the placeholder of a channel read unpublished).
fn advance(position: &mut StreamPosition, publication: &ReceivedPublication) -> Result<(), String> {
    if position.offset == 0 && publication.offset == 1 && position.epoch.starts_with('~') {
        position.epoch.clone_from(&publication.epoch);
    }
    if publication.epoch != position.epoch || publication.offset != position.offset + 1 {
        return Err(format!(
            "publication {}/{} after {}/{}: a gap, a duplicate or a new epoch",
            publication.offset, publication.epoch, position.offset, position.epoch
        ));
    }
    position.offset = publication.offset;
    Ok(())
}
