//! The gateway core shared by every connection and the gRPC API: configuration, token
//! verification, the hub, the broker and the state, and the one publish path.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use herald_protocol::publication::{raw_json, validate_event};
use herald_protocol::{ChannelName, Publication};
use serde_json::value::RawValue;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::auth::{Authenticator, KeyError};
use crate::backend::{Backend, BackendSetupError};
use crate::broker::{
    Broker, BrokerError, CHANGE_QUEUE, MemoryBroker, NatsBroker, NatsError, UserOrder,
};
use crate::clock::unix_millis;
use crate::config::{ChannelOptions, Config, NamespaceRule};
use crate::connections::{Connection, Connections, Heartbeat, SWEEP_INTERVAL};
use crate::envelope::EnvelopeLimits;
use crate::error::{CLIENT_KEY_PREFIX, HistoryError, MAX_IDEMPOTENCY_KEY_BYTES, PublishError};
use crate::hub::{Hub, Interest};
use crate::isolate::isolated;
use crate::metrics;
use crate::presence::PresenceService;
use crate::socketio_recovery::RecoveryKey;
use crate::state::{
    Append, Appended, Duplicate, HistoryPolicy, HistorySlice, Kept, KeptSubscriptions, MemoryKept,
    MemoryState, Position, Presence, RedisState, Settlement, State, StateError,
};

/// How often a cluster node compares its channels' delivered positions with Redis.
const POSITION_CHECK_INTERVAL: Duration = Duration::from_secs(3);
/// How long a starting node waits for Redis before it starts anyway, not ready.
const FIRST_CONNECT_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Nats(#[from] NatsError),
    #[error("HERALD_REDIS_URL: {0}")]
    Redis(StateError),
    #[error(transparent)]
    Backend(#[from] BackendSetupError),
}

/// One publish, from the gRPC API or a client.
pub struct PublishRequest {
    pub channel: String,
    pub event: String,
    /// Validated JSON (see [`Node::parse_data`]).
    pub data: Arc<RawValue>,
    /// The sender, on client publishes.
    pub from: Option<Arc<str>>,
    pub idempotency_key: Option<String>,
}

/// What a node stores in and sends through: in memory standalone, NATS and Redis in a
/// cluster. (Not the app's backend, which `backend.rs` calls.)
struct Backplane {
    broker: Arc<dyn Broker>,
    state: Arc<dyn State>,
    presence: Arc<dyn Presence>,
    kept: Arc<dyn KeptSubscriptions>,
}

/// The node's core: what sessions and the gRPC API may do, as operations. The backends
/// (hub, broker, state) stay behind it.
pub struct Node {
    id: Arc<str>,
    config: Arc<Config>,
    auth: Authenticator,
    hub: Arc<Hub>,
    broker: Arc<dyn Broker>,
    state: Arc<dyn State>,
    kept: Arc<dyn KeptSubscriptions>,
    connections: Arc<Connections>,
    presence: Arc<PresenceService>,
    /// The app's backend for `rpc`, when `HERALD_BACKEND_ADDR` is set.
    backend: Option<Backend>,
    /// Signs and checks Socket.IO session ids.
    recovery_key: RecoveryKey,
    started: Instant,
    draining: AtomicBool,
    /// Cancelled when the node starts draining.
    shutdown: CancellationToken,
}

impl Node {
    /// A standalone node: in-memory broker and state.
    pub fn standalone(config: Config) -> Result<Arc<Node>, NodeError> {
        let memory = MemoryState::new();
        let state: Arc<dyn State> = Arc::new(memory.clone());
        let (hub, idle) = Hub::new(state.clone(), config.gap_wait);
        let (changes, received) = mpsc::channel(CHANGE_QUEUE);
        let broker: Arc<dyn Broker> = Arc::new(MemoryBroker::new(
            hub.clone(),
            changes,
            config.fanout_coalesce,
        ));
        // In-process backends are always up; the same alerts then work in both modes.
        metrics::gauge!(metrics::BROKER_UP).set(1.0);
        metrics::gauge!(metrics::STATE_UP).set(1.0);
        let backplane = Backplane {
            broker,
            state,
            presence: Arc::new(memory),
            kept: Arc::new(MemoryKept::default()),
        };
        Self::new(config, hub, idle, backplane, received)
    }

    /// A cluster node: NATS between nodes, Redis for offsets and history. Starts even when
    /// either is unreachable (not ready until both are); only a malformed URL is an error.
    pub async fn cluster(config: Config) -> Result<Arc<Node>, NodeError> {
        let (Some(nats_url), Some(redis_url)) = (&config.nats_url, &config.redis_url) else {
            unreachable!("Config::validate requires both URLs in cluster mode");
        };
        let limits = EnvelopeLimits {
            max_data_bytes: config.limits.max_message_bytes,
            max_json_depth: config.limits.max_json_depth,
        };
        let redis = RedisState::connect(redis_url.expose(), limits, FIRST_CONNECT_WAIT)
            .await
            .map_err(NodeError::Redis)?;
        let presence: Arc<dyn Presence> = Arc::new(redis.clone());
        let kept: Arc<dyn KeptSubscriptions> = Arc::new(redis.clone());
        let state: Arc<dyn State> = Arc::new(redis);
        let (hub, idle) = Hub::new(state.clone(), config.gap_wait);
        let reconnected = Arc::new(Notify::new());
        let (changes, received) = mpsc::channel(CHANGE_QUEUE);
        let nats = NatsBroker::connect(
            nats_url.expose(),
            &config.node_id,
            hub.clone(),
            limits,
            reconnected.clone(),
            changes,
            config.fanout_coalesce,
        )
        .await?;
        let backplane = Backplane {
            broker: Arc::new(nats),
            state,
            presence,
            kept,
        };
        let node = Self::new(config, hub.clone(), idle, backplane, received)?;
        tokio::spawn(check_positions(Arc::downgrade(&hub), reconnected));
        Ok(node)
    }

    fn new(
        config: Config,
        hub: Arc<Hub>,
        idle: mpsc::UnboundedReceiver<ChannelName>,
        backplane: Backplane,
        changes: mpsc::Receiver<UserOrder>,
    ) -> Result<Arc<Node>, NodeError> {
        let Backplane {
            broker,
            state,
            presence,
            kept,
        } = backplane;
        let backend = config
            .backend
            .addr
            .as_deref()
            .map(|addr| Backend::new(addr, &config.backend, &config.limits))
            .transpose()?;
        let heartbeat = Heartbeat {
            interval: config.limits.ping_interval,
            timeout: config.limits.pong_timeout,
        };
        let connections = Arc::new(Connections::new(
            config.limits.max_connections_per_user,
            heartbeat,
        ));
        connections.spawn_sweeper(SWEEP_INTERVAL);
        let id: Arc<str> = Arc::from(config.node_id.as_str());
        let auth = Authenticator::new(&config.jwt)?;
        // Every node of a cluster has the same API keys: each accepts the others' pids.
        let recovery_secret = match config.api_keys.first() {
            Some(key) => key.expose().to_owned(),
            None => crate::random::random_token(32),
        };
        let recovery_key = RecoveryKey::derive(recovery_secret.as_bytes());
        let config = Arc::new(config);
        let presence = PresenceService::new(presence, broker.clone(), config.clone(), id.clone());
        presence.spawn_jobs(connections.clone());
        let node = Arc::new(Node {
            id,
            auth,
            config,
            presence,
            hub,
            broker,
            state,
            kept,
            connections,
            backend,
            recovery_key,
            started: Instant::now(),
            draining: AtomicBool::new(false),
            shutdown: CancellationToken::new(),
        });
        tokio::spawn(drop_idle_interest(Arc::downgrade(&node), idle));
        tokio::spawn(crate::server_subscriptions::apply_changes(
            Arc::downgrade(&node),
            changes,
        ));
        Ok(node)
    }

    pub fn id(&self) -> &Arc<str> {
        &self.id
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Verifies and signs tokens with the node's keys.
    pub fn auth(&self) -> &Authenticator {
        &self.auth
    }

    /// Issues and checks the session ids of Socket.IO connections.
    pub fn recovery_key(&self) -> &RecoveryKey {
        &self.recovery_key
    }

    /// The connections this node holds.
    pub fn connections(&self) -> &Arc<Connections> {
        &self.connections
    }

    /// Presence, online status and typing.
    pub fn presence(&self) -> &PresenceService {
        &self.presence
    }

    /// The app's backend, when configured.
    pub(crate) fn backend(&self) -> Option<&Backend> {
        self.backend.as_ref()
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Completes when the node starts draining.
    pub async fn draining(&self) {
        self.shutdown.cancelled().await
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
        self.shutdown.cancel();
    }

    /// Ready to take connections: not draining, backends reachable.
    pub fn is_ready(&self) -> bool {
        !self.is_draining() && self.broker.is_healthy() && self.state.is_healthy()
    }

    /// Keeps a server-side subscription of `user`, at most `max_subscriptions` of them.
    pub async fn keep_subscription(
        &self,
        user: &str,
        channel: &ChannelName,
    ) -> Result<Kept, StateError> {
        let max = self.config.limits.max_subscriptions;
        let ttl = self.config.server_subscription_ttl;
        self.kept.keep(user, channel, max, ttl).await
    }

    pub async fn forget_subscription(
        &self,
        user: &str,
        channel: &ChannelName,
    ) -> Result<(), StateError> {
        self.kept.forget(user, channel).await
    }

    /// The server-side subscriptions kept for `user`; reading them keeps them longer.
    pub async fn kept_subscriptions(&self, user: &str) -> Result<Vec<ChannelName>, StateError> {
        let ttl = self.config.server_subscription_ttl;
        self.kept.kept(user, ttl).await
    }

    /// Hands a server-side subscription change to every node, this one included.
    pub async fn publish_change(&self, change: &UserOrder) -> Result<(), BrokerError> {
        self.broker.publish_change(change).await
    }

    /// The namespace rule and options of a channel name.
    pub fn channel(
        &self,
        name: &str,
    ) -> Result<(ChannelName, &NamespaceRule, &ChannelOptions), PublishError> {
        let channel = ChannelName::parse(name)?;
        let (rule, options) = self
            .config
            .channel_rule(&channel)
            .ok_or_else(|| PublishError::UnknownNamespace(channel.namespace().to_owned()))?;
        Ok((channel, rule, options))
    }

    /// Checks publication data against the size and depth limits.
    pub fn parse_data(&self, data: String) -> Result<Arc<RawValue>, PublishError> {
        let limits = &self.config.limits;
        Ok(raw_json(
            data,
            limits.max_message_bytes,
            limits.max_json_depth,
        )?)
    }

    /// The one publish path: validate, record in state (channels with history or an
    /// idempotency key), hand to the broker, settle the idempotency key. Answers only after
    /// all of them.
    ///
    /// An idempotency key answers a retry with the first position only once that publish
    /// was broadcast: until then the retry sends it (again) itself, so a publish that
    /// failed, or whose node never saw Redis's reply, is delivered when retried.
    pub async fn publish(&self, request: PublishRequest) -> Result<Position, PublishError> {
        let started = Instant::now();
        let (channel, _, options) = self.channel(&request.channel)?;
        validate_event(&request.event)?;
        if request.from.is_some() && !options.client_publish {
            return Err(PublishError::NotAllowed);
        }
        let idempotency_key = scoped_key(request.idempotency_key, request.from.as_deref())?;
        let idempotency_key = idempotency_key.as_deref();
        let history = options.has_history().then(|| HistoryPolicy {
            size: options.history_size,
            ttl: options.history_ttl(),
        });
        let mut publication = Publication {
            channel,
            event: Arc::from(request.event),
            data: request.data,
            offset: 0,
            epoch: Arc::from(""),
            ts: unix_millis(),
            from: request.from.clone(),
        };
        if history.is_some() || idempotency_key.is_some() {
            let append = Append {
                publication,
                history,
                idempotency_key,
            };
            publication = match self.state.append(append).await? {
                Appended::New(publication)
                | Appended::Duplicate(Duplicate::Unsent(publication)) => publication,
                Appended::Duplicate(Duplicate::Sent(position)) => return Ok(position),
                Appended::Duplicate(Duplicate::InFlight) => {
                    return Err(PublishError::IdempotencyKeyInFlight);
                }
            };
        }
        let broadcast = self.broker.publish(&publication).await;
        let position = Position {
            offset: publication.offset,
            epoch: publication.epoch.clone(),
        };
        let settlement = match &broadcast {
            Ok(()) => Some(Settlement::Broadcast(position.clone())),
            Err(_) if history.is_none() => Some(Settlement::Release),
            // Stored: the claim stays, and a retry broadcasts it again.
            Err(_) => None,
        };
        if let (Some(key), Some(settlement)) = (idempotency_key, settlement)
            && let Err(error) = self
                .state
                .settle(&publication.channel, key, settlement)
                .await
        {
            // Unsettled, the claim still holds the publication: a retry (after the lease,
            // on a channel without history) sends it; at worst twice, if it was sent.
            tracing::warn!(channel = %publication.channel, %error, "idempotency key not settled");
        }
        if let Err(error) = broadcast {
            // A stored publication is not lost: every node fills it from history (on its
            // position check, or when NATS is back), so the publish stands.
            if history.is_none() {
                return Err(error.into());
            }
            tracing::warn!(channel = %publication.channel, offset = publication.offset, %error, "stored but not broadcast; nodes fill it from history");
        }
        let origin = if request.from.is_some() {
            "client"
        } else {
            "api"
        };
        metrics::counter!(metrics::PUBLICATIONS, "origin" => origin).increment(1);
        metrics::histogram!(metrics::PUBLISH_DURATION).record(started.elapsed().as_secs_f64());
        Ok(position)
    }

    /// A window of a channel's history.
    pub async fn history(
        &self,
        name: &str,
        since_offset: u64,
        limit: Option<u32>,
    ) -> Result<HistorySlice, HistoryError> {
        let channel = ChannelName::parse(name)?;
        let (_, options) = self
            .config
            .channel_rule(&channel)
            .ok_or_else(|| HistoryError::UnknownNamespace(channel.namespace().to_owned()))?;
        if !options.has_history() {
            return Err(HistoryError::NoHistory);
        }
        let limit = match limit {
            None | Some(0) => options.history_size,
            Some(limit) => (limit as usize).min(options.history_size),
        };
        Ok(self.state.history(&channel, since_offset, limit).await?)
    }

    /// A window of a channel the caller already resolved, as the state holds it.
    pub async fn read_history(
        &self,
        channel: &ChannelName,
        since_offset: u64,
        limit: usize,
    ) -> Result<HistorySlice, StateError> {
        self.state.history(channel, since_offset, limit).await
    }

    /// Where a channel's history stands.
    pub async fn position(&self, channel: &ChannelName) -> Result<Position, StateError> {
        self.state.position(channel).await
    }

    /// Adds a pending subscriber (publications are buffered for it until [`Node::activate`])
    /// and makes sure this node receives the channel from the broker.
    pub async fn add_subscriber(
        &self,
        channel: &ChannelName,
        connection: Arc<Connection>,
    ) -> Result<(), BrokerError> {
        let interest = self.hub.add(channel, connection);
        self.ensure_interest(channel, &interest).await
    }

    /// Queues a pending subscriber's reply, then the publications buffered for it newer
    /// than `position`. False when the connection closed meanwhile.
    pub fn activate(
        &self,
        channel: &ChannelName,
        connection: &Arc<Connection>,
        reply: bytes::Bytes,
        position: &Position,
    ) -> bool {
        self.hub.activate(channel, connection, reply, position)
    }

    /// Removes a subscriber; the broker subscription goes with the channel's last one.
    pub async fn remove_subscriber(&self, channel: &ChannelName, connection: &str) {
        if self.hub.remove(channel, connection) {
            self.release_interest(channel).await;
        }
    }

    /// Makes sure this node holds the broker subscription of a channel it has a subscriber
    /// for. Every subscriber calls it: when the first one's attempt failed after others
    /// joined, the next one tries again instead of living without a subscription.
    async fn ensure_interest(
        &self,
        channel: &ChannelName,
        interest: &Interest,
    ) -> Result<(), BrokerError> {
        let mut held = interest.lock().await;
        if !*held {
            self.broker.subscribe(channel).await?;
            *held = true;
        }
        Ok(())
    }

    /// Releases the broker subscription of a channel whose last local subscriber left (if
    /// none joined meanwhile), then forgets the channel's entry.
    async fn release_interest(&self, channel: &ChannelName) {
        let Some(interest) = self.hub.interest(channel) else {
            return;
        };
        let mut held = interest.lock().await;
        if self.hub.subscriber_count(channel) > 0 {
            return;
        }
        if *held {
            if let Err(error) = self.broker.unsubscribe(channel).await {
                tracing::warn!(%channel, %error, "broker unsubscribe failed");
            }
            *held = false;
        }
        self.hub.forget_if_idle(channel, &interest);
    }
}

/// Releases the interest of channels that server-side unsubscribes left empty.
async fn drop_idle_interest(
    node: std::sync::Weak<Node>,
    mut idle: mpsc::UnboundedReceiver<ChannelName>,
) {
    while let Some(channel) = idle.recv().await {
        let Some(node) = node.upgrade() else { return };
        isolated("idle interest release", node.release_interest(&channel)).await;
    }
}

/// Fills what the node missed: every few seconds, and at once when NATS reconnects (it
/// may have been away for a while; async-nats restores the subscriptions itself).
async fn check_positions(hub: std::sync::Weak<Hub>, reconnected: Arc<Notify>) {
    let mut tick = tokio::time::interval(POSITION_CHECK_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = reconnected.notified() => {}
        }
        let Some(hub) = hub.upgrade() else { return };
        isolated("position check", hub.check_positions()).await;
    }
}

/// The idempotency key a publish is stored under: the backend's as it is (but never in the
/// clients' space), a client's prefixed with its user, length first so no two (user, key)
/// pairs meet.
fn scoped_key(key: Option<String>, from: Option<&str>) -> Result<Option<String>, PublishError> {
    let Some(key) = key else { return Ok(None) };
    if key.len() > MAX_IDEMPOTENCY_KEY_BYTES {
        return Err(PublishError::InvalidIdempotencyKey);
    }
    match from {
        Some(user) => Ok(Some(format!(
            "{CLIENT_KEY_PREFIX}{}:{user}:{key}",
            user.len()
        ))),
        None if key.starts_with(CLIENT_KEY_PREFIX) => Err(PublishError::ReservedIdempotencyKey),
        None => Ok(Some(key)),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use herald_protocol::Codec;

    use super::*;
    use crate::auth::Claims;
    use crate::broker::Event;
    use crate::config::ConfigArgs;
    use crate::connections::{Outbox, Registration};

    /// A broker whose first `subscribe` waits until released and then fails (NATS went away
    /// mid-call); every later one succeeds.
    #[derive(Default)]
    struct FirstSubscribeFails {
        entered: Notify,
        release: Notify,
        subscribes: AtomicUsize,
        unsubscribes: AtomicUsize,
    }

    #[async_trait::async_trait]
    impl Broker for FirstSubscribeFails {
        async fn publish(&self, _: &Publication) -> Result<(), BrokerError> {
            Ok(())
        }
        async fn publish_event(&self, _: &Event) -> Result<(), BrokerError> {
            Ok(())
        }
        async fn publish_change(&self, _: &UserOrder) -> Result<(), BrokerError> {
            Ok(())
        }
        async fn subscribe(&self, _: &ChannelName) -> Result<(), BrokerError> {
            if self.subscribes.fetch_add(1, Ordering::SeqCst) == 0 {
                self.entered.notify_one();
                self.release.notified().await;
                return Err(BrokerError::Unavailable("NATS went away".into()));
            }
            Ok(())
        }
        async fn unsubscribe(&self, _: &ChannelName) -> Result<(), BrokerError> {
            self.unsubscribes.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        fn is_healthy(&self) -> bool {
            true
        }
    }

    fn node_on(broker: Arc<dyn Broker>) -> Arc<Node> {
        let config = Config::load(&ConfigArgs::default()).expect("the default config");
        let memory = MemoryState::new();
        let state: Arc<dyn State> = Arc::new(memory.clone());
        let (hub, idle) = Hub::new(state.clone(), config.gap_wait);
        let (_changes, received) = mpsc::channel(CHANGE_QUEUE);
        let backplane = Backplane {
            broker,
            state,
            presence: Arc::new(memory),
            kept: Arc::new(MemoryKept::default()),
        };
        Node::new(config, hub, idle, backplane, received).expect("a node")
    }

    fn connect(node: &Node, user: &str) -> Registration {
        let claims = Claims {
            sub: Arc::from(user),
            exp: i64::MAX,
            orgs: vec![],
            channels: vec![],
            info: None,
        };
        let outbox = Arc::new(Outbox::new(1 << 20, None));
        node.connections()
            .register(Arc::from(user), Arc::new(claims), outbox, Codec::Json)
            .expect("registered")
    }

    /// The first subscriber's broker subscribe fails while a second subscriber waits for the
    /// channel's interest: the second tries again and is told OK only with a subscription.
    /// (Single-threaded: once the second is in the hub, it waits on the interest lock.)
    #[tokio::test]
    async fn a_subscriber_waiting_behind_a_failed_interest_subscribes_again() {
        let broker = Arc::new(FirstSubscribeFails::default());
        let node = node_on(broker.clone());
        let channel = ChannelName::parse("org:acme:ch:general").unwrap();
        let (a, b) = (connect(&node, "a"), connect(&node, "b"));
        let add = |registration: &Registration| {
            let (node, channel) = (node.clone(), channel.clone());
            let connection = registration.connection.clone();
            tokio::spawn(async move { node.add_subscriber(&channel, connection).await })
        };

        let first = add(&a);
        let wait = Duration::from_secs(5);
        tokio::time::timeout(wait, broker.entered.notified())
            .await
            .expect("the first subscribe reaches the broker");
        let second = add(&b);
        tokio::time::timeout(wait, async {
            while node.hub.subscriber_count(&channel) < 2 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the second subscriber joins the hub");
        broker.release.notify_one();

        assert!(first.await.unwrap().is_err(), "the first is told it failed");
        assert_eq!(second.await.unwrap(), Ok(()), "the second is told OK");
        assert_eq!(broker.subscribes.load(Ordering::SeqCst), 2);

        // The failed one leaves (as its session does); the broker subscription is released
        // with the last subscriber, once.
        node.remove_subscriber(&channel, &a.connection.id).await;
        assert_eq!(broker.unsubscribes.load(Ordering::SeqCst), 0);
        node.remove_subscriber(&channel, &b.connection.id).await;
        assert_eq!(broker.unsubscribes.load(Ordering::SeqCst), 1);
        assert!(node.hub.interest(&channel).is_none(), "the entry is gone");
    }

    #[test]
    fn client_keys_are_scoped_to_their_user_and_out_of_the_backends_reach() {
        let alice = scoped_key(Some("k".into()), Some("alice"))
            .unwrap()
            .unwrap();
        let bob = scoped_key(Some("k".into()), Some("bob")).unwrap().unwrap();
        assert_ne!(alice, bob);
        // "a:b" + "c" and "a" + "b:c" are different pairs.
        assert_ne!(
            scoped_key(Some("c".into()), Some("a:b")).unwrap(),
            scoped_key(Some("b:c".into()), Some("a")).unwrap()
        );
        assert_eq!(scoped_key(Some("k".into()), None).unwrap().unwrap(), "k");
        assert!(matches!(
            scoped_key(Some(alice), None),
            Err(PublishError::ReservedIdempotencyKey)
        ));
        assert!(scoped_key(None, Some("alice")).unwrap().is_none());
        assert!(scoped_key(Some("x".repeat(257)), Some("alice")).is_err());
    }
}
