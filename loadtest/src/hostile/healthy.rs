//! The healthy side of a hostile run: subscribers on one channel that check every
//! publication arrives, in order, once, while a gRPC publisher publishes at a steady rate.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use herald_api::v1::PublishRequest;
use herald_testkit::grpc::Grpc;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::conn::{ClientKind, Conn, Event};
use crate::gateway::Target;

/// Longest one publish RPC may take.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(30);

/// What one healthy subscriber saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// Publications received in order (`seq` 0, 1, 2, ...).
    pub in_order: u64,
    /// Publications skipped over: a later `seq` came first.
    pub lost: u64,
    /// Publications that came again, or late.
    pub duplicates: u64,
    /// Publications that are not the publisher's: forged by a client.
    pub foreign: u64,
    /// Offsets that did not follow the previous one.
    pub offset_breaks: u64,
    /// How the connection ended, if it did before the run was over.
    pub closed: Option<String>,
}

/// Healthy subscribers, each read by its own task.
pub struct Subscribers {
    tasks: JoinSet<Seen>,
    /// Each subscriber's count of publications received in order.
    progress: Vec<watch::Receiver<u64>>,
    stop: watch::Sender<bool>,
}

/// Connects `n` subscribers (users `healthy-<i>`) to `channel`.
pub async fn subscribe(target: &Target, channel: &str, n: usize) -> Result<Subscribers> {
    let (stop, stopped) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let mut progress = Vec::new();
    for i in 0..n {
        let token = target.token(&format!("healthy-{i}"), channel)?;
        let conn = Conn::open(
            ClientKind::Lean,
            herald_protocol::Codec::Json,
            &target.ws_url,
            &token,
            channel,
        )
        .await
        .map_err(|(step, error)| anyhow::anyhow!("healthy subscriber {i}: {step}: {error}"))?;
        let (count, counted) = watch::channel(0);
        progress.push(counted);
        tasks.spawn(receive(conn, count, stopped.clone()));
    }
    Ok(Subscribers {
        tasks,
        progress,
        stop,
    })
}

impl Subscribers {
    /// Waits until every subscriber has `published` publications in order (at most
    /// `timeout`), then stops them and returns what each saw.
    pub async fn finish(mut self, published: u64, timeout: Duration) -> Result<Vec<Seen>> {
        let all = async {
            for progress in &mut self.progress {
                // An error means the subscriber's task ended (its connection closed).
                let _ = progress.wait_for(|&n| n >= published).await;
            }
        };
        let _ = tokio::time::timeout(timeout, all).await;
        let _ = self.stop.send(true);
        let mut seen = Vec::new();
        while let Some(joined) =
            tokio::time::timeout(Duration::from_secs(10), self.tasks.join_next())
                .await
                .context("healthy subscribers did not stop")?
        {
            seen.push(joined.context("healthy subscriber task failed")?);
        }
        Ok(seen)
    }
}

async fn receive(
    mut conn: Conn,
    count: watch::Sender<u64>,
    mut stop: watch::Receiver<bool>,
) -> Seen {
    let mut seen = Seen::default();
    let mut last_offset = 0;
    loop {
        let event = tokio::select! {
            biased;
            _ = stop.wait_for(|&s| s) => break,
            event = conn.next_event() => event,
        };
        let publication = match event {
            Event::Push(push) => match push.publication {
                Some(publication) => publication,
                None => continue,
            },
            Event::Closed(info) => {
                seen.closed = Some(info.map_or("no close frame".into(), |i| i.to_string()));
                break;
            }
        };
        if last_offset > 0 && publication.offset != last_offset + 1 {
            seen.offset_breaks += 1;
        }
        last_offset = publication.offset;
        let Some(seq) = parse_seq(publication.data.get()) else {
            seen.foreign += 1;
            continue;
        };
        match seq.cmp(&seen.in_order) {
            std::cmp::Ordering::Equal => seen.in_order += 1,
            std::cmp::Ordering::Less => seen.duplicates += 1,
            std::cmp::Ordering::Greater => {
                seen.lost += seq - seen.in_order;
                seen.in_order = seq + 1;
            }
        }
        let _ = count.send(seen.in_order);
    }
    seen
}

/// The publisher's data: `{"healthy":<seq>}`; forged data never has this shape from a
/// client (clients cannot publish on the channel at all).
fn data(seq: u64) -> Vec<u8> {
    format!(r#"{{"healthy":{seq}}}"#).into_bytes()
}

fn parse_seq(data: &str) -> Option<u64> {
    data.strip_prefix(r#"{"healthy":"#)?
        .strip_suffix('}')?
        .parse()
        .ok()
}

/// Publishes `{"healthy":0}`, `{"healthy":1}`, ... on `channel` at `rate` a second until
/// `stop` is set; returns how many were published. Every publish must succeed.
pub async fn publish(
    grpc: Grpc,
    channel: String,
    rate: f64,
    mut stop: watch::Receiver<bool>,
) -> Result<u64> {
    let interval = Duration::from_secs_f64(1.0 / rate.max(0.1));
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seq = 0;
    loop {
        tokio::select! {
            biased;
            _ = stop.wait_for(|&s| s) => return Ok(seq),
            _ = ticks.tick() => {}
        }
        let request = PublishRequest {
            channel: channel.clone(),
            event: "healthy".into(),
            data: data(seq),
            idempotency_key: String::new(),
        };
        match tokio::time::timeout(PUBLISH_TIMEOUT, grpc.clone().publish(request)).await {
            Ok(Ok(_)) => seq += 1,
            Ok(Err(status)) => bail!(
                "healthy publish {seq} failed: {:?} {}",
                status.code(),
                status.message()
            ),
            Err(_) => bail!("healthy publish {seq} got no answer in {PUBLISH_TIMEOUT:?}"),
        }
    }
}
