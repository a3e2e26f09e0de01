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

use async_nats::ServerAddr;
use async_nats::connection::State as ConnectionState;
use async_trait::async_trait;
use futures_util::StreamExt;
use herald_protocol::{ChannelName, Publication};
use serde::Deserialize;
use serde::de::IgnoredAny;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::gathered::Gathered;
use super::{Broker, BrokerError, ChangeSender, Event, Exclude, UserOrder, hand_over};
use crate::config::BackendUrl;
use crate::envelope::{self, EnvelopeLimits};
use crate::hub::Hub;
use crate::isolate;
use crate::metrics;
use crate::pace::Coalesce;

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

/// How a node authenticates to NATS, from `HERALD_NATS_URL`.
#[derive(Debug, PartialEq, Eq)]
enum Credentials {
    /// `nats://user:password@host`.
    User { user: String, password: String },
    /// `nats://token@host`.
    Token(String),
}

/// The servers of a comma-separated `HERALD_NATS_URL`, and the credentials they carry.
/// async-nats reads neither a list from one string nor the `user:password@` or `token@` of a
/// URL (nats-io/nats.rs#1623), so both are taken here. Credentials are per connection, not
/// per server: URLs that carry any must carry the same.
fn servers(url: &str) -> Result<(Vec<ServerAddr>, Option<Credentials>), NatsError> {
    let mut servers = Vec::new();
    let mut credentials = None;
    for address in url.split(',').map(str::trim) {
        let server: ServerAddr = address
            .parse()
            .map_err(|e| NatsError::Url(format!("{}: {e}", mask(address))))?;
        let decoded = |part: &str| {
            percent_encoding::percent_decode_str(part)
                .decode_utf8()
                .map(|part| part.into_owned())
                .map_err(|_| {
                    NatsError::Url(format!("{}: credentials are not UTF-8", mask(address)))
                })
        };
        let carried = match (server.username(), server.password()) {
            (None, _) => None,
            (Some(user), Some(password)) => Some(Credentials::User {
                user: decoded(user)?,
                password: decoded(password)?,
            }),
            (Some(token), None) => Some(Credentials::Token(decoded(token)?)),
        };
        match (&credentials, carried) {
            (_, None) => {}
            (None, carried) => credentials = carried,
            (Some(first), Some(other)) if *first == other => {}
            (Some(_), Some(_)) => {
                return Err(NatsError::Url(
                    "the URLs carry different credentials; one connection has one user".into(),
                ));
            }
        }
        servers.push(server);
    }
    Ok((servers, credentials))
}

/// An address as errors show it: without its password or token.
fn mask(address: &str) -> String {
    address
        .parse::<BackendUrl>()
        .map_or_else(|_| address.to_owned(), |url| url.masked())
}

pub struct NatsBroker {
    client: async_nats::Client,
    hub: Arc<Hub>,
    limits: EnvelopeLimits,
    /// One reader task per subscribed channel; the task owns the NATS subscription, so
    /// aborting it unsubscribes.
    readers: Mutex<HashMap<ChannelName, JoinHandle<()>>>,
    /// `HERALD_FANOUT_COALESCE_MS`: see [`Coalesce`].
    coalesce: Duration,
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
        coalesce: Duration,
    ) -> Result<NatsBroker, NatsError> {
        let (servers, credentials) = servers(url)?;
        let connected = Arc::new(AtomicBool::new(false));
        metrics::gauge!(metrics::BROKER_UP).set(0.0);
        let events = connected.clone();
        let options = match credentials {
            None => async_nats::ConnectOptions::new(),
            Some(Credentials::User { user, password }) => {
                async_nats::ConnectOptions::with_user_and_password(user, password)
            }
            Some(Credentials::Token(token)) => async_nats::ConnectOptions::with_token(token),
        };
        let client = options
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
            .connect(servers)
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
            coalesce,
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
            self.coalesce,
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

/// Delivers one channel's NATS messages to the hub until the subscription ends; the
/// publications of messages that come within `coalesce` ([`Coalesce`]) are fanned out
/// together.
async fn read_subject(
    channel: ChannelName,
    mut subscriber: async_nats::Subscriber,
    hub: Arc<Hub>,
    limits: EnvelopeLimits,
    coalesce: Duration,
) {
    // A message (or fan-out) whose handling panics is skipped, not the channel's deliveries.
    const JOB: &str = "NATS deliveries";
    let mut coalesce = Coalesce::new(coalesce);
    let mut gathered = Gathered::new(hub.clone(), JOB);
    while let Some(message) = subscriber.next().await {
        let now = tokio::time::Instant::now();
        let start = coalesce.start_at(now, |pause| hub.busy(&channel, now, pause));
        let mut next = Some(message);
        let mut ended = false;
        while let Some(message) = next {
            isolate::isolated_sync(JOB, || {
                take_message(&channel, message, limits, &mut gathered);
            });
            next = None;
            if tokio::time::Instant::now() < start {
                match tokio::time::timeout_at(start, subscriber.next()).await {
                    Ok(Some(message)) => next = Some(message),
                    Ok(None) => ended = true,
                    Err(_elapsed) => {}
                }
            }
        }
        gathered.flush();
        if ended {
            return;
        }
    }
}

/// Checks one NATS message and gathers its publication, or delivers its presence event
/// (after the publications gathered before it).
fn take_message(
    channel: &ChannelName,
    message: async_nats::Message,
    limits: EnvelopeLimits,
    gathered: &mut Gathered,
) {
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
            Some(headers) => {
                event(channel, headers, message.payload.clone()).map(|e| gathered.event(&e))
            }
            None => publication(channel, &message.payload, limits).map(|p| gathered.publication(p)),
        }
    } else if under(APP_SUBJECT_PREFIX) {
        app_event(channel, &message.payload, limits).map(|p| gathered.publication(p))
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
fn publication(
    channel: &ChannelName,
    payload: &[u8],
    limits: EnvelopeLimits,
) -> Result<Publication, InvalidMessage> {
    let publication = envelope::decode(channel.clone(), payload, limits)?;
    // Offsets are Redis integers: anything larger is corrupt, and must not reach the hub's
    // arithmetic.
    if publication.offset > i64::MAX as u64 {
        return Err(InvalidMessage::Offset(publication.offset));
    }
    Ok(publication)
}

/// An ephemeral event from a service: only its event name and data are taken (checked and
/// compacted as a gRPC publish's); it has no offset, no epoch and no sender, and carries this
/// node's time unless it gave one.
fn app_event(
    channel: &ChannelName,
    payload: &[u8],
    limits: EnvelopeLimits,
) -> Result<Publication, InvalidMessage> {
    let mut publication = envelope::decode(channel.clone(), payload, limits)?;
    publication.offset = 0;
    publication.epoch = Arc::from("");
    publication.from = None;
    if publication.ts <= 0 {
        publication.ts = crate::clock::unix_millis();
    }
    Ok(publication)
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
fn event(
    channel: &ChannelName,
    headers: &async_nats::HeaderMap,
    push: bytes::Bytes,
) -> Result<Event, InvalidMessage> {
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
    Ok(Event {
        channel: channel.clone(),
        push,
        exclude,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_url_of_the_list_is_a_server_and_its_credentials_are_the_connections() {
        let (listed, credentials) =
            servers("nats://herald:p%40ss@a:4222, nats://herald:p%40ss@b:4223,c").unwrap();
        let addresses: Vec<_> = listed.iter().map(|s| (s.host(), s.port())).collect();
        assert_eq!(addresses, [("a", 4222), ("b", 4223), ("c", 4222)]);
        assert_eq!(
            credentials,
            Some(Credentials::User {
                user: "herald".into(),
                password: "p@ss".into()
            })
        );
        assert_eq!(
            servers("tls://s3cr3t@a").unwrap().1,
            Some(Credentials::Token("s3cr3t".into()))
        );
        assert_eq!(servers("nats://a:4222").unwrap().1, None);

        let error = servers("nats://u:one@a,nats://u:two@b").unwrap_err();
        assert!(
            error.to_string().contains("different credentials"),
            "{error}"
        );
        let error = servers("nats://u:secret@a:port").unwrap_err().to_string();
        assert!(
            error.contains("u:****@a:port") && !error.contains("secret"),
            "{error}"
        );
    }
}
