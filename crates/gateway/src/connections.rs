//! Live connections: the handle the hub fans out to, and the node's registry of them.
//!
//! A [`Connection`] is what other tasks hold: its [`Outbox`] (the queue to its writer),
//! its claims, and the little state the sweeper needs.
//!
//! One sweeper per node handles every connection's heartbeat and token expiry, instead of
//! a timer per connection.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use herald_protocol::{ChannelName, CloseCode};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::auth::{Claims, unix_now};
use crate::metrics;
pub use crate::outbox::{Outbound, Outbox};

/// The shared handle of one authenticated connection.
pub struct Connection {
    pub id: Arc<str>,
    pub claims: Arc<Claims>,
    pub outbox: Arc<Outbox>,
    /// Token expiry, Unix seconds (moves on `refresh`).
    expires_at: AtomicI64,
    /// Milliseconds since the registry's start: when the outstanding ping was sent (0 =
    /// none outstanding), and when the next one is due.
    ping_sent_at: AtomicU64,
    next_ping_at: AtomicU64,
    /// Channels this connection is subscribed to. The hub removes entries on server-side
    /// unsubscribes, so it is shared rather than owned by the session.
    pub subscriptions: Mutex<Vec<ChannelName>>,
    /// Channels the hub evicted this connection from, for its session to leave their
    /// presence in order with its own commands.
    evicted: Mutex<Vec<ChannelName>>,
    evicted_ready: Notify,
}

impl Connection {
    /// Queues one message; false when the connection is closing.
    pub fn send(&self, message: Bytes) -> bool {
        self.outbox.send(message)
    }

    /// Closes the connection with `code` (once).
    pub fn close(&self, code: CloseCode) {
        self.outbox.close(code)
    }

    pub fn is_closing(&self) -> bool {
        self.outbox.is_closing()
    }

    pub fn set_expires_at(&self, unix_seconds: i64) {
        self.expires_at.store(unix_seconds, Ordering::Relaxed);
    }

    pub fn subscription_count(&self) -> usize {
        self.lock_subscriptions().len()
    }

    pub fn is_subscribed(&self, channel: &ChannelName) -> bool {
        self.lock_subscriptions().contains(channel)
    }

    /// Records a subscription; false if it was already there.
    pub fn add_subscription(&self, channel: &ChannelName) -> bool {
        let mut subscriptions = self.lock_subscriptions();
        if subscriptions.contains(channel) {
            return false;
        }
        subscriptions.push(channel.clone());
        true
    }

    /// Forgets a subscription; false if there was none.
    pub fn remove_subscription(&self, channel: &ChannelName) -> bool {
        let mut subscriptions = self.lock_subscriptions();
        let before = subscriptions.len();
        subscriptions.retain(|c| c != channel);
        before != subscriptions.len()
    }

    /// Records a server-side eviction from `channel` (the subscription is already removed)
    /// and wakes the session.
    pub fn evicted(&self, channel: &ChannelName) {
        lock(&self.evicted).push(channel.clone());
        self.evicted_ready.notify_one();
    }

    /// Completes when an eviction is waiting to be taken.
    pub async fn eviction(&self) {
        self.evicted_ready.notified().await
    }

    /// The channels evicted from since the last call.
    pub fn take_evicted(&self) -> Vec<ChannelName> {
        std::mem::take(&mut *lock(&self.evicted))
    }

    pub fn take_subscriptions(&self) -> Vec<ChannelName> {
        std::mem::take(&mut *self.lock_subscriptions())
    }

    fn lock_subscriptions(&self) -> std::sync::MutexGuard<'_, Vec<ChannelName>> {
        lock(&self.subscriptions)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Nothing panics while holding these locks; a poisoned list is still a valid list.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("too many connections for this user")]
    PerUser,
}

/// Heartbeat timing.
#[derive(Debug, Clone, Copy)]
pub struct Heartbeat {
    pub interval: Duration,
    pub timeout: Duration,
}

/// The node's connections, by id, with per-user counts.
pub struct Connections {
    by_id: DashMap<Arc<str>, Arc<Connection>>,
    per_user: DashMap<Arc<str>, usize>,
    max_per_user: usize,
    heartbeat: Heartbeat,
    clock: Instant,
}

impl Connections {
    pub fn new(max_per_user: usize, heartbeat: Heartbeat) -> Self {
        Self {
            by_id: DashMap::new(),
            per_user: DashMap::new(),
            max_per_user,
            heartbeat,
            clock: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        // Never 0, which means "no ping outstanding".
        self.clock.elapsed().as_millis() as u64 + 1
    }

    /// Registers an authenticated connection; the returned guard unregisters it on drop.
    pub fn register(
        self: &Arc<Self>,
        id: Arc<str>,
        claims: Arc<Claims>,
        outbox: Arc<Outbox>,
    ) -> Result<Registration, LimitError> {
        {
            let mut count = self.per_user.entry(claims.sub.clone()).or_insert(0);
            if self.max_per_user > 0 && *count >= self.max_per_user {
                return Err(LimitError::PerUser);
            }
            *count += 1;
        }
        let connection = Arc::new(Connection {
            id: id.clone(),
            expires_at: AtomicI64::new(claims.exp),
            claims,
            outbox,
            ping_sent_at: AtomicU64::new(0),
            next_ping_at: AtomicU64::new(
                self.now_ms() + self.heartbeat.interval.as_millis() as u64,
            ),
            subscriptions: Mutex::new(Vec::new()),
            evicted: Mutex::new(Vec::new()),
            evicted_ready: Notify::new(),
        });
        self.by_id.insert(id, connection.clone());
        metrics::gauge!(metrics::CONNECTIONS).increment(1.0);
        Ok(Registration {
            connections: self.clone(),
            connection,
        })
    }

    fn unregister(&self, connection: &Connection) {
        self.by_id.remove(&connection.id);
        let user = &connection.claims.sub;
        self.per_user.remove_if_mut(user, |_, count| {
            *count -= 1;
            *count == 0
        });
        metrics::gauge!(metrics::CONNECTIONS).decrement(1.0);
    }

    /// A pong arrived: the connection is alive; schedule the next ping.
    pub fn pong(&self, connection: &Connection) {
        connection.ping_sent_at.store(0, Ordering::Relaxed);
        let next = self.now_ms() + self.heartbeat.interval.as_millis() as u64;
        connection.next_ping_at.store(next, Ordering::Relaxed);
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    pub fn all(&self) -> Vec<Arc<Connection>> {
        self.by_id
            .iter()
            .map(|entry| entry.value().clone())
            .collect()
    }

    pub fn of_user(&self, user: &str) -> Vec<Arc<Connection>> {
        self.by_id
            .iter()
            .filter(|entry| &*entry.claims.sub == user)
            .map(|entry| entry.value().clone())
            .collect()
    }

    /// One pass over every connection: send due pings, close those whose pong is late
    /// (4202) or whose token expired (4002).
    pub fn sweep(&self) {
        let now = self.now_ms();
        let now_unix = unix_now();
        let timeout = self.heartbeat.timeout.as_millis() as u64;
        for entry in self.by_id.iter() {
            let connection = entry.value();
            if connection.is_closing() {
                continue;
            }
            if connection.expires_at.load(Ordering::Relaxed) <= now_unix {
                connection.close(CloseCode::TokenExpired);
                continue;
            }
            let sent = connection.ping_sent_at.load(Ordering::Relaxed);
            if sent != 0 {
                if now.saturating_sub(sent) > timeout {
                    connection.close(CloseCode::NoPong);
                }
            } else if now >= connection.next_ping_at.load(Ordering::Relaxed) {
                connection.ping_sent_at.store(now, Ordering::Relaxed);
                connection.outbox.ping();
            }
        }
    }

    /// Runs [`Self::sweep`] every `tick` until the registry is dropped.
    pub fn spawn_sweeper(self: &Arc<Self>, tick: Duration) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(tick);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                interval.tick().await;
                let Some(connections) = weak.upgrade() else {
                    return;
                };
                connections.sweep();
            }
        });
    }
}

/// Keeps a connection registered while it lives.
pub struct Registration {
    connections: Arc<Connections>,
    pub connection: Arc<Connection>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.connections.unregister(&self.connection);
    }
}
