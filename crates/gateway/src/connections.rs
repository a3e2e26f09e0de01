//! Live connections: the handle the hub fans out to, and the node's registry of them.
//!
//! A [`Connection`] is what other tasks hold: its [`Outbox`] (the queue to its writer),
//! its claims, and the little state the sweeper needs.
//!
//! One sweeper per node handles every connection's heartbeat and token expiry, and the
//! expiry of subscriptions made with a subscription token, instead of a timer per
//! connection or per subscription.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use dashmap::DashMap;
use herald_protocol::{ChannelName, CloseCode, Codec, socketio};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::auth::Claims;
use crate::clock::unix_seconds;
use crate::isolate::isolated_sync;
use crate::metrics;
pub use crate::outbox::Outbox;
use crate::socketio_recovery::Cursor;

/// The shared handle of one authenticated connection.
pub struct Connection {
    pub id: Arc<str>,
    /// Replaced by `refresh` (same `sub`); read without a lock, also by fan-out.
    claims: ArcSwap<Claims>,
    pub outbox: Arc<Outbox>,
    /// How its messages are encoded, chosen by the WebSocket subprotocol.
    pub codec: Codec,
    /// Token expiry, Unix seconds (moves on `refresh`).
    expires_at: AtomicI64,
    /// Milliseconds since the registry's start: when the outstanding ping was sent (0 =
    /// none outstanding), and when the next one is due.
    ping_sent_at: AtomicU64,
    next_ping_at: AtomicU64,
    /// Its subscriptions and those ended from outside, under one lock: one lock less keeps
    /// the struct in a smaller allocator size class (160 bytes with its reference counts,
    /// not 192), which every connection pays.
    subscriptions: Mutex<Subscriptions>,
    evicted_ready: Notify,
}

#[derive(Default)]
struct Subscriptions {
    /// Channels this connection is subscribed to. The hub removes entries on server-side
    /// unsubscribes, so it is shared rather than owned by the session.
    channels: Vec<ChannelName>,
    /// Subscriptions ended from outside the session (hub evictions, expired subscription
    /// tokens), for the session to finish in order with its own commands.
    evicted: Vec<Ending>,
    /// A Socket.IO connection's offset (what it recovers from), moved by every publication
    /// it is sent; boxed, and absent on other codecs.
    cursor: Option<Box<Cursor>>,
}

/// A subscription ended from outside the session, for the session to finish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// The hub removed the subscription and pushed 2500: leave the channel's presence.
    Evicted(ChannelName),
    /// The subscription token's `exp` passed: unsubscribe with 2401, unless it was
    /// refreshed (or the channel subscribed again) meanwhile.
    TokenExpired(ChannelName),
}

impl Connection {
    /// The connection's current claims (a `refresh` replaces them; `sub` never changes).
    pub fn claims(&self) -> Arc<Claims> {
        self.claims.load_full()
    }

    /// The current claims without a reference count, for fan-out: hold it only briefly.
    pub fn claims_now(&self) -> arc_swap::Guard<Arc<Claims>> {
        self.claims.load()
    }

    /// Replaces the claims (on `refresh`), returning the previous ones.
    pub fn replace_claims(&self, claims: Claims) -> Arc<Claims> {
        self.claims.swap(Arc::new(claims))
    }

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
        self.lock_subscriptions().channels.len()
    }

    pub fn is_subscribed(&self, channel: &ChannelName) -> bool {
        self.lock_subscriptions().channels.contains(channel)
    }

    /// The channels this connection is subscribed to.
    pub fn subscriptions(&self) -> Vec<ChannelName> {
        self.lock_subscriptions().channels.clone()
    }

    /// The subscribed channels that pass `keep`.
    pub fn subscriptions_where(&self, keep: impl Fn(&ChannelName) -> bool) -> Vec<ChannelName> {
        let subscriptions = self.lock_subscriptions();
        subscriptions
            .channels
            .iter()
            .filter(|channel| keep(channel))
            .cloned()
            .collect()
    }

    /// Records a subscription; false if it was already there.
    pub fn add_subscription(&self, channel: &ChannelName) -> bool {
        let mut subscriptions = self.lock_subscriptions();
        let subscriptions = &mut *subscriptions;
        let channels = &mut subscriptions.channels;
        if channels.contains(channel) {
            return false;
        }
        // Most connections subscribe to one channel: room for one, not the four a first
        // push makes room for.
        if channels.capacity() == 0 {
            channels.reserve_exact(1);
        }
        channels.push(channel.clone());
        if let Some(cursor) = &mut subscriptions.cursor {
            cursor.hold(channel);
        }
        true
    }

    /// Forgets a subscription; false if there was none. A Socket.IO connection whose offset
    /// held the channel is sent its new offset first, ahead of whatever tells it the
    /// subscription ended.
    pub fn remove_subscription(&self, channel: &ChannelName) -> bool {
        let offset = {
            let mut subscriptions = self.lock_subscriptions();
            let channels = &mut subscriptions.channels;
            let before = channels.len();
            channels.retain(|c| c != channel);
            if before == channels.len() {
                return false;
            }
            let cursor = subscriptions.cursor.as_deref_mut();
            cursor.and_then(|cursor| cursor.release(channel).then(|| cursor.render()))
        };
        if let Some(offset) = offset {
            self.send(socketio::encode_offset(&offset));
        }
        true
    }

    /// Records, in a Socket.IO connection's offset, the grant of a channel joined (or
    /// refreshed) with a subscription token: `grant` makes it.
    pub fn grant(&self, channel: &ChannelName, grant: impl FnOnce() -> String) {
        if let Some(cursor) = self.lock_subscriptions().cursor.as_deref_mut() {
            cursor.grant(channel, grant());
        }
    }

    /// Moves a just-answered subscription's position in a Socket.IO connection's offset:
    /// the `herald:offset` event to send ahead of the answer when that changed the offset.
    pub fn answered(&self, channel: &ChannelName, epoch: &Arc<str>, offset: u64) -> Option<Bytes> {
        // Every subscribe passes here: other codecs skip the lock.
        if self.codec != Codec::SocketIo {
            return None;
        }
        let mut subscriptions = self.lock_subscriptions();
        let cursor = subscriptions.cursor.as_mut()?;
        cursor
            .advance(channel, epoch, offset)
            .then(|| socketio::encode_offset(&cursor.render()))
    }

    /// A publication of `channel` for a Socket.IO connection: `event`, the shared encoding,
    /// with the connection's offset appended, after moving it to `position` (the
    /// publication's epoch and offset, `None` on a channel without history). `None` on
    /// other codecs: they take the shared bytes.
    pub fn own_publication(
        &self,
        channel: &ChannelName,
        position: Option<(&Arc<str>, u64)>,
        event: impl FnOnce() -> Bytes,
    ) -> Option<Bytes> {
        if self.codec != Codec::SocketIo {
            return None;
        }
        let offset = {
            let mut subscriptions = self.lock_subscriptions();
            let cursor = subscriptions.cursor.as_mut()?;
            if let Some((epoch, offset)) = position {
                cursor.advance(channel, epoch, offset);
            }
            cursor.render()
        };
        Some(socketio::with_offset(&event(), &offset))
    }

    /// Records a server-side eviction from `channel` (the subscription is already removed)
    /// and wakes the session.
    pub fn evicted(&self, channel: &ChannelName) {
        self.end(Ending::Evicted(channel.clone()));
    }

    /// Hands a subscription's end to the session and wakes it.
    pub fn end(&self, ending: Ending) {
        self.lock_subscriptions().evicted.push(ending);
        self.evicted_ready.notify_one();
    }

    /// Completes when an eviction is waiting to be taken.
    pub async fn eviction(&self) {
        self.evicted_ready.notified().await
    }

    /// The subscriptions ended from outside since the last call.
    pub fn take_evicted(&self) -> Vec<Ending> {
        std::mem::take(&mut self.lock_subscriptions().evicted)
    }

    pub fn take_subscriptions(&self) -> Vec<ChannelName> {
        std::mem::take(&mut self.lock_subscriptions().channels)
    }

    fn lock_subscriptions(&self) -> std::sync::MutexGuard<'_, Subscriptions> {
        // Nothing panics while holding this lock; poisoned lists are still valid lists.
        self.subscriptions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
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

/// One subscription authorised by a subscription token.
struct TokenSubscription {
    channel: ChannelName,
    /// The token's `exp`, Unix seconds (moves on `subRefresh`).
    expires_at: i64,
    /// The session was told it expired (and has not handled it yet).
    notified: bool,
}

/// Subscriptions made with a subscription token, by connection, with their expiries; also
/// server-side subscriptions, with an expiry of `i64::MAX`: neither is the claims' to
/// revoke. Only
/// connections that have one are in it: the others pay nothing, and the sweep scans it only
/// once the earliest expiry has come.
pub struct SubscriptionTokens {
    by_connection: DashMap<Arc<str>, Vec<TokenSubscription>>,
    /// The earliest expiry not yet notified (`i64::MAX` when none).
    earliest: AtomicI64,
}

impl SubscriptionTokens {
    fn new() -> Self {
        Self {
            by_connection: DashMap::new(),
            earliest: AtomicI64::new(i64::MAX),
        }
    }

    /// Records that `connection` subscribed `channel` with a token expiring at `expires_at`.
    pub fn insert(&self, connection: &Arc<str>, channel: &ChannelName, expires_at: i64) {
        let mut entries = self.by_connection.entry(connection.clone()).or_default();
        entries.retain(|entry| entry.channel != *channel);
        entries.push(TokenSubscription {
            channel: channel.clone(),
            expires_at,
            notified: false,
        });
        drop(entries);
        self.earliest.fetch_min(expires_at, Ordering::Relaxed);
    }

    /// The expiry of `connection`'s token subscription to `channel`, if it has one.
    pub fn expiry(&self, connection: &str, channel: &ChannelName) -> Option<i64> {
        let entries = self.by_connection.get(connection)?;
        entries
            .iter()
            .find(|entry| entry.channel == *channel)
            .map(|entry| entry.expires_at)
    }

    /// Moves the expiry of an existing token subscription (`subRefresh`); false if there
    /// is none.
    pub fn extend(&self, connection: &str, channel: &ChannelName, expires_at: i64) -> bool {
        let Some(mut entries) = self.by_connection.get_mut(connection) else {
            return false;
        };
        let Some(entry) = entries.iter_mut().find(|entry| entry.channel == *channel) else {
            return false;
        };
        entry.expires_at = expires_at;
        entry.notified = false;
        drop(entries);
        self.earliest.fetch_min(expires_at, Ordering::Relaxed);
        true
    }

    /// Forgets a token subscription (unsubscribed, evicted).
    pub fn remove(&self, connection: &str, channel: &ChannelName) {
        self.by_connection.remove_if_mut(connection, |_, entries| {
            entries.retain(|entry| entry.channel != *channel);
            entries.is_empty()
        });
    }

    /// Removes the entry if its token has expired (`now` in Unix seconds): true when the
    /// subscription is to end, false when it was refreshed or is not a token one any more.
    pub fn take_expired(&self, connection: &str, channel: &ChannelName, now: i64) -> bool {
        let mut expired = false;
        self.by_connection.remove_if_mut(connection, |_, entries| {
            entries.retain(|entry| {
                let ends = entry.channel == *channel && entry.expires_at <= now;
                expired |= ends;
                !ends
            });
            entries.is_empty()
        });
        expired
    }

    /// Forgets every token subscription of a closed connection.
    pub fn remove_connection(&self, connection: &str) {
        self.by_connection.remove(connection);
    }

    /// The (connection, channel) pairs whose token expired since the last call. Scans only
    /// when the earliest expiry has come.
    fn newly_expired(&self, now: i64) -> Vec<(Arc<str>, ChannelName)> {
        if self.earliest.load(Ordering::Relaxed) > now {
            return Vec::new();
        }
        // Reset before the scan: an insert that races with it lowers `earliest` again.
        self.earliest.store(i64::MAX, Ordering::Relaxed);
        let mut expired = Vec::new();
        for mut entries in self.by_connection.iter_mut() {
            let connection = entries.key().clone();
            for entry in entries.value_mut().iter_mut() {
                if entry.notified {
                    continue;
                }
                if entry.expires_at <= now {
                    entry.notified = true;
                    expired.push((connection.clone(), entry.channel.clone()));
                } else {
                    self.earliest.fetch_min(entry.expires_at, Ordering::Relaxed);
                }
            }
        }
        expired
    }
}

/// The node's connections, by id, with per-user counts.
/// How often the sweeper sends due pings and closes late or expired connections.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

pub struct Connections {
    by_id: DashMap<Arc<str>, Arc<Connection>>,
    /// Subscriptions made with a subscription token, for their expiry.
    pub subscription_tokens: SubscriptionTokens,
    per_user: DashMap<Arc<str>, usize>,
    max_per_user: usize,
    heartbeat: Heartbeat,
    clock: Instant,
}

impl Connections {
    pub fn new(max_per_user: usize, heartbeat: Heartbeat) -> Self {
        Self {
            by_id: DashMap::new(),
            subscription_tokens: SubscriptionTokens::new(),
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
        codec: Codec,
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
            claims: ArcSwap::new(claims),
            outbox,
            codec,
            ping_sent_at: AtomicU64::new(0),
            next_ping_at: AtomicU64::new(
                self.now_ms() + self.heartbeat.interval.as_millis() as u64,
            ),
            subscriptions: Mutex::new(Subscriptions {
                cursor: (codec == Codec::SocketIo).then(Box::default),
                ..Subscriptions::default()
            }),
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
        self.subscription_tokens.remove_connection(&connection.id);
        let user = &connection.claims.load().sub;
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

    /// One connection by id.
    pub fn get(&self, id: &str) -> Option<Arc<Connection>> {
        self.by_id.get(id).map(|entry| entry.value().clone())
    }

    pub fn of_user(&self, user: &str) -> Vec<Arc<Connection>> {
        // Most nodes of a cluster hold none of a given user's connections: skip the scan.
        if !self.per_user.contains_key(user) {
            return Vec::new();
        }
        self.by_id
            .iter()
            .filter(|entry| &*entry.claims.load().sub == user)
            .map(|entry| entry.value().clone())
            .collect()
    }

    /// One pass over every connection: send due pings, close those whose pong is late
    /// (4202) or whose token expired (4002); then hand expired subscription tokens to their
    /// sessions.
    pub fn sweep(&self) {
        let now = self.now_ms();
        let now_unix = unix_seconds();
        let timeout = self.heartbeat.timeout.as_millis() as u64;
        for entry in self.by_id.iter() {
            isolated_sync("connection sweep", || {
                sweep_one(entry.value(), now, now_unix, timeout);
            });
        }
        for (id, channel) in self.subscription_tokens.newly_expired(now_unix) {
            if let Some(connection) = self.by_id.get(&id) {
                isolated_sync("subscription token expiry", || {
                    connection.end(Ending::TokenExpired(channel));
                });
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

/// One connection's turn in a sweep: close it when its token expired (4002) or its pong is
/// late (4202), or send its ping when due.
fn sweep_one(connection: &Connection, now: u64, now_unix: i64, timeout: u64) {
    if connection.is_closing() {
        return;
    }
    if connection.expires_at.load(Ordering::Relaxed) <= now_unix {
        connection.close(CloseCode::TokenExpired);
        return;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(name: &str) -> ChannelName {
        ChannelName::parse(name).unwrap()
    }

    #[test]
    fn token_subscriptions_are_reported_once_when_they_expire() {
        let tokens = SubscriptionTokens::new();
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        assert!(tokens.newly_expired(100).is_empty(), "empty");
        tokens.insert(&a, &channel("org:x:one"), 10);
        tokens.insert(&a, &channel("org:x:two"), 20);
        tokens.insert(&b, &channel("org:x:one"), 30);
        assert!(tokens.newly_expired(9).is_empty(), "nothing due yet");
        assert_eq!(
            tokens.newly_expired(10),
            vec![(a.clone(), channel("org:x:one"))]
        );
        assert!(tokens.newly_expired(15).is_empty(), "reported once");
        // A refresh moves the end; the earliest expiry follows it down too.
        assert!(tokens.extend(&a, &channel("org:x:two"), 40));
        assert!(!tokens.extend(&a, &channel("org:x:none"), 40));
        assert_eq!(
            tokens.newly_expired(30),
            vec![(b.clone(), channel("org:x:one"))]
        );
        // The session takes an expired one only if it was not refreshed meanwhile.
        assert!(tokens.take_expired(&a, &channel("org:x:one"), 30));
        assert!(!tokens.take_expired(&a, &channel("org:x:two"), 30));
        assert_eq!(tokens.expiry(&a, &channel("org:x:two")), Some(40));
        tokens.remove_connection(&a);
        tokens.remove(&b, &channel("org:x:one"));
        assert!(tokens.by_connection.is_empty(), "nothing left behind");
        assert!(tokens.newly_expired(100).is_empty());
    }
}
