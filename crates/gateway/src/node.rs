//! The gateway core shared by every connection and the gRPC API: configuration, token
//! verification, the hub, the broker and the state, and the one publish path.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use herald_protocol::publication::{raw_json, validate_event};
use herald_protocol::{ChannelName, Publication};
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::auth::Authenticator;
use crate::broker::{Broker, BrokerError, MemoryBroker};
use crate::config::{ChannelOptions, Config, NamespaceRule};
use crate::connections::{Connections, Heartbeat};
use crate::error::{HistoryError, PublishError};
use crate::hub::Hub;
use crate::metrics;
use crate::state::{Append, Appended, HistoryPolicy, HistorySlice, MemoryState, Position, State};

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

pub struct Node {
    pub id: Arc<str>,
    pub config: Arc<Config>,
    pub auth: Authenticator,
    pub hub: Arc<Hub>,
    pub broker: Arc<dyn Broker>,
    pub state: Arc<dyn State>,
    pub connections: Arc<Connections>,
    pub started: Instant,
    draining: AtomicBool,
    /// Cancelled when the node starts draining.
    pub shutdown: CancellationToken,
}

impl Node {
    /// A standalone node: in-memory broker and state.
    pub fn standalone(config: Config) -> Result<Arc<Node>, crate::auth::KeyError> {
        let state: Arc<dyn State> = Arc::new(MemoryState::new());
        let (hub, idle) = Hub::new(state.clone(), config.gap_wait);
        let broker: Arc<dyn Broker> = Arc::new(MemoryBroker::new(hub.clone()));
        Self::new(config, hub, idle, broker, state)
    }

    fn new(
        config: Config,
        hub: Arc<Hub>,
        idle: mpsc::UnboundedReceiver<ChannelName>,
        broker: Arc<dyn Broker>,
        state: Arc<dyn State>,
    ) -> Result<Arc<Node>, crate::auth::KeyError> {
        let heartbeat = Heartbeat {
            interval: config.limits.ping_interval,
            timeout: config.limits.pong_timeout,
        };
        let connections = Arc::new(Connections::new(
            config.limits.max_connections_per_user,
            heartbeat,
        ));
        connections.spawn_sweeper(std::time::Duration::from_secs(1));
        let node = Arc::new(Node {
            id: Arc::from(config.node_id.as_str()),
            auth: Authenticator::new(&config.jwt)?,
            config: Arc::new(config),
            hub,
            broker,
            state,
            connections,
            started: Instant::now(),
            draining: AtomicBool::new(false),
            shutdown: CancellationToken::new(),
        });
        tokio::spawn(drop_idle_interest(Arc::downgrade(&node), idle));
        Ok(node)
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
    /// idempotency key), hand to the broker. Answers only after both.
    pub async fn publish(&self, request: PublishRequest) -> Result<Position, PublishError> {
        let started = Instant::now();
        let (channel, _, options) = self.channel(&request.channel)?;
        validate_event(&request.event)?;
        if request.from.is_some() && !options.client_publish {
            return Err(PublishError::NotAllowed);
        }
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
        if history.is_some() || request.idempotency_key.is_some() {
            let append = Append {
                publication,
                history,
                idempotency_key: request.idempotency_key.as_deref(),
            };
            publication = match self.state.append(append).await? {
                Appended::New(publication) => publication,
                Appended::Duplicate(position) => return Ok(position),
            };
        }
        self.broker.publish(&publication).await?;
        let origin = if request.from.is_some() {
            "client"
        } else {
            "api"
        };
        metrics::counter!(metrics::PUBLICATIONS, "origin" => origin).increment(1);
        metrics::histogram!(metrics::PUBLISH_DURATION).record(started.elapsed().as_secs_f64());
        Ok(Position {
            offset: publication.offset,
            epoch: publication.epoch.to_string(),
        })
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

    /// Registers interest with the broker for a channel's first local subscriber.
    pub async fn interest_added(&self, channel: &ChannelName) -> Result<(), BrokerError> {
        self.broker.subscribe(channel).await
    }

    /// Drops broker interest after a channel's last local subscriber left.
    pub async fn interest_removed(&self, channel: &ChannelName) {
        if let Err(error) = self.broker.unsubscribe(channel).await {
            tracing::warn!(%channel, %error, "broker unsubscribe failed");
        }
    }
}

/// Drops broker interest for channels that server-side unsubscribes left empty.
async fn drop_idle_interest(
    node: std::sync::Weak<Node>,
    mut idle: mpsc::UnboundedReceiver<ChannelName>,
) {
    while let Some(channel) = idle.recv().await {
        let Some(node) = node.upgrade() else { return };
        if node.hub.remove_if_idle(&channel) {
            node.interest_removed(&channel).await;
        }
    }
}

/// Unix time in milliseconds.
pub fn unix_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
