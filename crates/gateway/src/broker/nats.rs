//! The cluster broker: one NATS message per publication carrying its
//! [envelope](crate::envelope), and interest only where there are local subscribers.
//!
//! Two subjects per channel, told apart by their second token, so NATS permissions can
//! keep services off the nodes' subjects:
//! - `herald.node.<segments>`: node to node (publications with their offsets, presence
//!   events), trusted once NATS permissions allow only nodes to publish there;
//! - `herald.app.<segments>`: ephemeral events from services, checked and re-encoded like
//!   a gRPC publish, their offset, epoch and sender ignored.
//!
//! A node subscribes to both with one wildcard subscription, `herald.*.<segments>`.
//!
//! Server-side subscription changes travel on one subject every node subscribes to,
//! `herald.control` (two tokens, so no channel's `herald.*.<segments>` matches it), node to
//! node like `herald.node.…`.
//!
//! Interest is owned by the hub's channel entry, which serialises changes per channel
//! ([`crate::hub::Interest`]); this broker only keeps the subscription tasks, under a lock
//! that is never held across an await.
//!
//! NATS core is at-most-once: what a node misses (a dropped message, a reconnect) is filled
//! from history by the hub, which the node asks to check every channel after a reconnect.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::connection::State as ConnectionState;
use async_trait::async_trait;
use futures_util::StreamExt;
use herald_protocol::{ChannelName, Publication};
use serde::Deserialize;
use serde::de::IgnoredAny;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::{Broker, BrokerError, ChangeSender, Event, Exclude, UserOrder, hand_over};
use crate::envelope::{self, EnvelopeLimits};
use crate::hub::Hub;
use crate::isolate;
use crate::metrics;

/// Subjects of node-to-node messages.
pub const NODE_SUBJECT_PREFIX: &str = "herald.node";
/// Subjects of services' ephemeral events.
pub const APP_SUBJECT_PREFIX: &str = "herald.app";
/// What a node subscribes to per channel: both of the above.
const ANY_SUBJECT_PREFIX: &str = "herald.*";
/// Orders for a user's connections on every node, JSON [`UserOrder`]s.
pub const CONTROL_SUBJECT: &str = "herald.control";

/// Marks a NATS message as a presence event (a JSON push frame) rather than an envelope.
const EVENT_HEADER: &str = "Herald-Event";
/// On an event: the user whose connections skip it.
const EXCLUDE_USER_HEADER: &str = "Herald-Exclude-User";
/// On an event: the connection that skips it.
const EXCLUDE_CLIENT_HEADER: &str = "Herald-Exclude-Client";

/// How long a publish may wait for room in the client's outbound queue.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error("invalid HERALD_NATS_URL: {0}")]
    Url(String),
}

pub struct NatsBroker {
    client: async_nats::Client,
    hub: Arc<Hub>,
    limits: EnvelopeLimits,
    /// One reader task per subscribed channel; the task owns the NATS subscription, so
    /// aborting it unsubscribes.
    readers: Mutex<HashMap<ChannelName, JoinHandle<()>>>,
    /// Reads `herald.control` into the node's change queue.
    changes: JoinHandle<()>,
    connected: Arc<AtomicBool>,
}

impl Drop for NatsBroker {
    fn drop(&mut self) {
        self.changes.abort();
    }
}

impl NatsBroker {
    /// Connects to `url` (comma-separated for several servers). The connection is retried
    /// forever in the background: a node starts (not ready) while NATS is unreachable.
    /// `reconnected` is notified each time the connection comes back, so the node can fill
    /// from history what it missed meanwhile.
    pub async fn connect(
        url: &str,
        node_id: &str,
        hub: Arc<Hub>,
        limits: EnvelopeLimits,
        reconnected: Arc<Notify>,
        changes: ChangeSender,
    ) -> Result<NatsBroker, NatsError> {
        let connected = Arc::new(AtomicBool::new(false));
        metrics::gauge!(metrics::BROKER_UP).set(0.0);
        let events = connected.clone();
        let client = async_nats::ConnectOptions::new()
            .name(format!("herald {node_id}"))
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(2))
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis((100 * 2u64.saturating_pow(attempts.min(6) as u32)).min(5000))
            })
            .event_callback(move |event| {
                let (connected, reconnected) = (events.clone(), reconnected.clone());
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            tracing::info!("NATS connected");
                            connected.store(true, Ordering::Relaxed);
                            metrics::gauge!(metrics::BROKER_UP).set(1.0);
                            reconnected.notify_one();
                        }
                        async_nats::Event::Disconnected => {
                            tracing::warn!("NATS disconnected");
                            connected.store(false, Ordering::Relaxed);
                            metrics::gauge!(metrics::BROKER_UP).set(0.0);
                        }
                        async_nats::Event::SlowConsumer(sid) => {
                            tracing::warn!(
                                sid,
                                "NATS subscription fell behind; gaps are filled from history"
                            );
                        }
                        other => tracing::info!(event = %other, "NATS event"),
                    }
                }
            })
            .connect(url)
            .await
            .map_err(|e| NatsError::Url(e.to_string()))?;
        // Queued until the first connection, and renewed by the client on every reconnect.
        let control = client
            .subscribe(CONTROL_SUBJECT)
            .await
            .map_err(|e| NatsError::Url(e.to_string()))?;
        Ok(NatsBroker {
            client,
            hub,
            limits,
            readers: Mutex::new(HashMap::new()),
            changes: tokio::spawn(read_changes(control, changes)),
            connected,
        })
    }

    fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
            && self.client.connection_state() == ConnectionState::Connected
    }

    fn readers(&self) -> std::sync::MutexGuard<'_, HashMap<ChannelName, JoinHandle<()>>> {
        // Nothing panics while holding this lock; a poisoned map is still a valid map.
        self.readers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Returns once the server has processed everything this client sent before: NATS
    /// handles one connection's operations in order, so a message to a fresh inbox comes
    /// back only after them.
    async fn round_trip(&self) -> Result<(), BrokerError> {
        let unavailable =
            |e: &dyn std::fmt::Display| BrokerError::Unavailable(format!("NATS: {e}"));
        let inbox = self.client.new_inbox();
        let mut echo = self
            .client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| unavailable(&e))?;
        self.client
            .publish(inbox, bytes::Bytes::new())
            .await
            .map_err(|e| unavailable(&e))?;
        match echo.next().await {
            Some(_) => Ok(()),
            None => Err(unavailable(&"the connection closed")),
        }
    }
}

#[async_trait]
impl Broker for NatsBroker {
    async fn publish(&self, publication: &Publication) -> Result<(), BrokerError> {
        if !self.is_connected() {
            return Err(BrokerError::Unavailable("NATS is not connected".into()));
        }
        let started = Instant::now();
        let subject = publication.channel.subject(NODE_SUBJECT_PREFIX);
        let body = envelope::encode(publication);
        let sent = async {
            self.client
                .publish(subject, body)
                .await
                .map_err(|e| e.to_string())?;
            self.client.flush().await.map_err(|e| e.to_string())
        };
        bounded(sent).await?;
        metrics::histogram!(metrics::NATS_PUBLISH_DURATION).record(started.elapsed().as_secs_f64());
        Ok(())
    }

    async fn publish_event(&self, event: &Event) -> Result<(), BrokerError> {
        if !self.is_connected() {
            return Err(BrokerError::Unavailable("NATS is not connected".into()));
        }
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(EVENT_HEADER, "1");
        let exclude = match &event.exclude {
            Some(Exclude::User(user)) => Some((EXCLUDE_USER_HEADER, user)),
            Some(Exclude::Client(client)) => Some((EXCLUDE_CLIENT_HEADER, client)),
            None => None,
        };
        if let Some((name, value)) = exclude {
            // async-nats panics on a header value with CR or LF; its parser reports them.
            let value: async_nats::HeaderValue = value
                .parse()
                .map_err(|_| BrokerError::Unencodable(format!("{name} value {value:?}")))?;
            headers.insert(name, value);
        }
        let sent = self.client.publish_with_headers(
            event.channel.subject(NODE_SUBJECT_PREFIX),
            headers,
            event.push.clone(),
        );
        bounded(sent).await
    }

    async fn publish_change(&self, change: &UserOrder) -> Result<(), BrokerError> {
        if !self.is_connected() {
            return Err(BrokerError::Unavailable("NATS is not connected".into()));
        }
        let body =
            serde_json::to_vec(change).map_err(|e| BrokerError::Unencodable(e.to_string()))?;
        let sent = async {
            self.client
                .publish(CONTROL_SUBJECT, body.into())
                .await
                .map_err(|e| e.to_string())?;
            self.client.flush().await.map_err(|e| e.to_string())
        };
        bounded(sent).await
    }

    async fn subscribe(&self, channel: &ChannelName) -> Result<(), BrokerError> {
        // Fail fast rather than wait out the round trip's timeout, which every other subscriber of
        // the channel would queue behind.
        if !self.is_connected() {
            return Err(BrokerError::Unavailable("NATS is not connected".into()));
        }
        let subscriber = self
            .client
            .subscribe(channel.subject(ANY_SUBJECT_PREFIX))
            .await
            .map_err(|e| BrokerError::Unavailable(format!("NATS subscribe: {e}")))?;
        // The server must hold the SUB before the subscriber reads the channel's position
        // and hears its subscribe reply: a publication or presence event another node sends
        // in between would otherwise reach no one on this node (a flush only puts the SUB
        // on the wire). On failure the subscription drops, which unsubscribes.
        tokio::time::timeout(PUBLISH_TIMEOUT, self.round_trip())
            .await
            .map_err(|_| BrokerError::Unavailable("NATS round trip timed out".into()))??;
        let task = tokio::spawn(read_subject(
            channel.clone(),
            subscriber,
            self.hub.clone(),
            self.limits,
        ));
        let mut readers = self.readers();
        if let Some(previous) = readers.insert(channel.clone(), task) {
            previous.abort();
        }
        metrics::gauge!(metrics::NATS_SUBSCRIPTIONS).set(readers.len() as f64);
        Ok(())
    }

    async fn unsubscribe(&self, channel: &ChannelName) -> Result<(), BrokerError> {
        let mut readers = self.readers();
        if let Some(task) = readers.remove(channel) {
            task.abort();
        }
        metrics::gauge!(metrics::NATS_SUBSCRIPTIONS).set(readers.len() as f64);
        Ok(())
    }

    fn is_healthy(&self) -> bool {
        self.is_connected()
    }
}

/// Bounds a send to NATS by `PUBLISH_TIMEOUT`.
async fn bounded<E: std::fmt::Display>(
    send: impl Future<Output = Result<(), E>>,
) -> Result<(), BrokerError> {
    match tokio::time::timeout(PUBLISH_TIMEOUT, send).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(BrokerError::Unavailable(format!("NATS publish: {error}"))),
        Err(_) => Err(BrokerError::Unavailable("NATS publish timed out".into())),
    }
}

/// Hands every user order on `herald.control` to the node.
async fn read_changes(control: async_nats::Subscriber, changes: ChangeSender) {
    isolate::for_each("NATS user orders", control, |message| {
        match serde_json::from_slice::<UserOrder>(&message.payload) {
            Ok(order) => hand_over(&changes, order),
            Err(error) => tracing::debug!(%error, "dropped an invalid user order"),
        }
        std::future::ready(())
    })
    .await;
}

/// Delivers one channel's NATS messages to the hub until the subscription ends.
async fn read_subject(
    channel: ChannelName,
    subscriber: async_nats::Subscriber,
    hub: Arc<Hub>,
    limits: EnvelopeLimits,
) {
    isolate::for_each("NATS deliveries", subscriber, |message| {
        let under = |prefix: &str| {
            message
                .subject
                .as_str()
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('.'))
        };
        let outcome = if under(NODE_SUBJECT_PREFIX) {
            match message
                .headers
                .as_ref()
                .filter(|h| h.get(EVENT_HEADER).is_some())
            {
                Some(headers) => deliver_event(&channel, headers, message.payload, &hub),
                None => deliver_publication(&channel, &message.payload, limits, &hub),
            }
        } else if under(APP_SUBJECT_PREFIX) {
            deliver_app_event(&channel, &message.payload, limits, &hub)
        } else {
            Err(InvalidMessage::Subject)
        };
        let result = match outcome {
            Ok(()) => "delivered",
            Err(error) => {
                // Debug, not warn: whoever may publish on NATS controls how often this
                // happens; the counter below is the signal.
                tracing::debug!(%channel, subject = %message.subject, %error, "dropped an invalid NATS message");
                "invalid"
            }
        };
        metrics::counter!(metrics::NATS_MESSAGES, "result" => result).increment(1);
        std::future::ready(())
    })
    .await;
}

#[derive(Debug, thiserror::Error)]
enum InvalidMessage {
    #[error(transparent)]
    Envelope(#[from] envelope::EnvelopeError),
    #[error("offset {0} is beyond any the state assigns")]
    Offset(u64),
    #[error("not a presence push frame for this channel")]
    Event,
    #[error("neither a node nor an app subject")]
    Subject,
}

/// A publication from another node.
fn deliver_publication(
    channel: &ChannelName,
    payload: &[u8],
    limits: EnvelopeLimits,
    hub: &Arc<Hub>,
) -> Result<(), InvalidMessage> {
    let publication = envelope::decode(channel.clone(), payload, limits)?;
    // Offsets are Redis integers: anything larger is corrupt, and must not reach the hub's
    // arithmetic.
    if publication.offset > i64::MAX as u64 {
        return Err(InvalidMessage::Offset(publication.offset));
    }
    hub.deliver(publication);
    Ok(())
}

/// An ephemeral event from a service: only its event name and data are taken (checked and
/// compacted as a gRPC publish's); it has no offset, no epoch and no sender, and carries this
/// node's time unless it gave one.
fn deliver_app_event(
    channel: &ChannelName,
    payload: &[u8],
    limits: EnvelopeLimits,
    hub: &Arc<Hub>,
) -> Result<(), InvalidMessage> {
    let mut publication = envelope::decode(channel.clone(), payload, limits)?;
    publication.offset = 0;
    publication.epoch = Arc::from("");
    publication.from = None;
    if publication.ts <= 0 {
        publication.ts = crate::clock::unix_millis();
    }
    hub.deliver(publication);
    Ok(())
}

/// The shape of a presence event from another node: one push of one kind, on this channel.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventFrame<'a> {
    #[serde(borrow)]
    push: EventPush<'a>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventPush<'a> {
    channel: &'a str,
    join: Option<IgnoredAny>,
    leave: Option<IgnoredAny>,
    presence: Option<IgnoredAny>,
    typing: Option<IgnoredAny>,
    status: Option<IgnoredAny>,
    state: Option<IgnoredAny>,
}

/// A presence event from another node: a push frame, written into client streams verbatim,
/// so it is checked to be exactly one compact push on this channel first.
fn deliver_event(
    channel: &ChannelName,
    headers: &async_nats::HeaderMap,
    push: bytes::Bytes,
    hub: &Hub,
) -> Result<(), InvalidMessage> {
    let frame: EventFrame = serde_json::from_slice(&push).map_err(|_| InvalidMessage::Event)?;
    let kinds = [
        frame.push.join.is_some(),
        frame.push.leave.is_some(),
        frame.push.presence.is_some(),
        frame.push.typing.is_some(),
        frame.push.status.is_some(),
        frame.push.state.is_some(),
    ];
    if frame.push.channel != channel.as_str()
        || kinds.iter().filter(|kind| **kind).count() != 1
        || push.iter().any(|b| matches!(b, b'\n' | b'\r'))
    {
        return Err(InvalidMessage::Event);
    }
    let header = |name: &str| headers.get(name).map(|value| Arc::from(value.as_str()));
    let exclude = header(EXCLUDE_USER_HEADER)
        .map(Exclude::User)
        .or_else(|| header(EXCLUDE_CLIENT_HEADER).map(Exclude::Client));
    hub.deliver_event(&Event {
        channel: channel.clone(),
        push,
        exclude,
    });
    Ok(())
}
