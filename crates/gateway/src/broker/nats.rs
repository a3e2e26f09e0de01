//! The cluster broker: one NATS subject per channel (`org:acme:ch:general` ↔
//! `herald.org.acme.ch.general`), one NATS message per publication carrying its
//! [envelope](crate::envelope), and interest only where there are local subscribers.
//!
//! Interest changes are serialized under one lock and an unsubscribe re-checks the hub
//! under it, so a subscribe and the last unsubscribe of a channel that cross cannot leave
//! a node with local subscribers and no NATS subscription.
//!
//! NATS core is at-most-once: what a node misses (a dropped message, a reconnect) is filled
//! from history by the hub, which the node asks to check every channel after a reconnect.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_nats::connection::State as ConnectionState;
use async_trait::async_trait;
use futures_util::StreamExt;
use herald_protocol::{ChannelName, Publication};
use tokio::sync::{Mutex, Notify};
use tokio::task::JoinHandle;

use super::{Broker, BrokerError, Event, Exclude};
use crate::envelope::{self, EnvelopeLimits};
use crate::hub::Hub;
use crate::metrics;

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
    interest: Mutex<HashMap<ChannelName, JoinHandle<()>>>,
    connected: Arc<AtomicBool>,
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
        Ok(NatsBroker {
            client,
            hub,
            limits,
            interest: Mutex::new(HashMap::new()),
            connected,
        })
    }

    fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
            && self.client.connection_state() == ConnectionState::Connected
    }
}

#[async_trait]
impl Broker for NatsBroker {
    async fn publish(&self, publication: &Publication) -> Result<(), BrokerError> {
        if !self.is_connected() {
            return Err(BrokerError::Unavailable("NATS is not connected".into()));
        }
        let started = Instant::now();
        let subject = publication.channel.subject();
        let body = envelope::encode(publication);
        let sent = async {
            self.client
                .publish(subject, body)
                .await
                .map_err(|e| e.to_string())?;
            self.client.flush().await.map_err(|e| e.to_string())
        };
        match tokio::time::timeout(PUBLISH_TIMEOUT, sent).await {
            Ok(Ok(())) => {
                metrics::histogram!(metrics::NATS_PUBLISH_DURATION)
                    .record(started.elapsed().as_secs_f64());
                Ok(())
            }
            Ok(Err(error)) => Err(BrokerError::Unavailable(format!("NATS publish: {error}"))),
            Err(_) => Err(BrokerError::Unavailable("NATS publish timed out".into())),
        }
    }

    async fn publish_event(&self, event: &Event) -> Result<(), BrokerError> {
        if !self.is_connected() {
            return Err(BrokerError::Unavailable("NATS is not connected".into()));
        }
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(EVENT_HEADER, "1");
        match &event.exclude {
            Some(Exclude::User(user)) => headers.insert(EXCLUDE_USER_HEADER, user.as_ref()),
            Some(Exclude::Client(client)) => headers.insert(EXCLUDE_CLIENT_HEADER, client.as_ref()),
            None => {}
        }
        let sent =
            self.client
                .publish_with_headers(event.channel.subject(), headers, event.push.clone());
        match tokio::time::timeout(PUBLISH_TIMEOUT, sent).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(BrokerError::Unavailable(format!("NATS publish: {error}"))),
            Err(_) => Err(BrokerError::Unavailable("NATS publish timed out".into())),
        }
    }

    async fn subscribe(&self, channel: &ChannelName) -> Result<(), BrokerError> {
        let mut interest = self.interest.lock().await;
        if interest
            .get(channel)
            .is_some_and(|task| !task.is_finished())
        {
            return Ok(());
        }
        let subscriber = self
            .client
            .subscribe(channel.subject())
            .await
            .map_err(|e| BrokerError::Unavailable(format!("NATS subscribe: {e}")))?;
        // The SUB must be on the wire before the subscriber reads the channel's position,
        // or a publication in between could reach no one on this node until the next check.
        tokio::time::timeout(PUBLISH_TIMEOUT, self.client.flush())
            .await
            .map_err(|_| BrokerError::Unavailable("NATS flush timed out".into()))?
            .map_err(|e| BrokerError::Unavailable(format!("NATS flush: {e}")))?;
        let task = tokio::spawn(read_subject(
            channel.clone(),
            subscriber,
            self.hub.clone(),
            self.limits,
        ));
        interest.insert(channel.clone(), task);
        metrics::gauge!(metrics::NATS_SUBSCRIPTIONS).set(interest.len() as f64);
        Ok(())
    }

    async fn unsubscribe(&self, channel: &ChannelName) -> Result<(), BrokerError> {
        let mut interest = self.interest.lock().await;
        // A subscriber may have joined since the last one left.
        if self.hub.subscriber_count(channel) > 0 {
            return Ok(());
        }
        if let Some(task) = interest.remove(channel) {
            task.abort();
        }
        metrics::gauge!(metrics::NATS_SUBSCRIPTIONS).set(interest.len() as f64);
        Ok(())
    }

    fn is_healthy(&self) -> bool {
        self.is_connected()
    }
}

/// Delivers one channel's NATS messages to the hub until the subscription ends.
async fn read_subject(
    channel: ChannelName,
    mut subscriber: async_nats::Subscriber,
    hub: Arc<Hub>,
    limits: EnvelopeLimits,
) {
    while let Some(message) = subscriber.next().await {
        if let Some(headers) = message
            .headers
            .as_ref()
            .filter(|h| h.get(EVENT_HEADER).is_some())
        {
            deliver_event(&channel, headers, message.payload, &hub);
            continue;
        }
        match envelope::decode(channel.clone(), &message.payload, limits) {
            Ok(mut publication) => {
                metrics::counter!(metrics::NATS_MESSAGES, "result" => "delivered").increment(1);
                if publication.ts == 0 {
                    // Services publishing straight to NATS may leave the time to us.
                    publication.ts = crate::node::unix_millis();
                }
                hub.deliver(publication);
            }
            Err(error) => {
                metrics::counter!(metrics::NATS_MESSAGES, "result" => "invalid").increment(1);
                tracing::warn!(%channel, %error, "dropped an invalid NATS message");
            }
        }
    }
}

/// A presence event from another node: a push frame, checked to be JSON before it is
/// written into client streams verbatim.
fn deliver_event(
    channel: &ChannelName,
    headers: &async_nats::HeaderMap,
    push: bytes::Bytes,
    hub: &Hub,
) {
    if serde_json::from_slice::<serde::de::IgnoredAny>(&push).is_err() {
        metrics::counter!(metrics::NATS_MESSAGES, "result" => "invalid").increment(1);
        tracing::warn!(%channel, "dropped a NATS event that is not JSON");
        return;
    }
    metrics::counter!(metrics::NATS_MESSAGES, "result" => "delivered").increment(1);
    let header = |name: &str| headers.get(name).map(|value| Arc::from(value.as_str()));
    let exclude = header(EXCLUDE_USER_HEADER)
        .map(Exclude::User)
        .or_else(|| header(EXCLUDE_CLIENT_HEADER).map(Exclude::Client));
    hub.deliver_event(&Event {
        channel: channel.clone(),
        push,
        exclude,
    });
}
