//! Presence, online status and typing, node side: turns what connections do (subscribe,
//! leave, open, close, `setStatus`, `typing`) into state changes and the pushes they cause,
//! and runs the node's three background jobs: refreshing its connections' entries, sweeping
//! entries whose node stopped refreshing them (a crashed node's users), and ending typing
//! indicators that got no update for [`TYPING_TTL`].
//!
//! Events are ephemeral: they go through the broker to every node with subscribers of the
//! channel, at most once. A failure to push one is logged, never the command's failure.
//!
//! The node's connections are the truth and the stored entries a copy that can be lost
//! (Redis restarted empty or flushed) or swept (the node was cut off from Redis longer than
//! the TTL). The refresher re-creates what is missing and announces it once, as a `join`
//! and a `status` push; it keeps the statuses users set through this node for that.
//!
//! On a channel with more members than the push limit, joins and leaves go out as batched
//! diffs instead (see [`crate::presence_diff`]), so a crowd joining costs a push a second.
//!
//! A member's presence state (`setPresenceState`) is stored in its entry and pushed as a
//! `state` event (or in the diff) where joins and leaves are. The node keeps the states of
//! its own connections too, so that an entry it re-creates comes back with its state.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use herald_protocol::ChannelName;
use herald_protocol::reply::{ChannelEvent, PresenceMember, StatePush, TypingPush, encode_event};
use serde_json::value::RawValue;
use tokio::time::Instant;

use crate::auth::Claims;
use crate::broker::{Broker, Event, Exclude};
use crate::clock::unix_millis;
use crate::config::{ChannelOptions, Config};
use crate::connections::{Connection, Connections};
use crate::isolate::isolated;
use crate::presence_diff::{DIFF_INTERVAL, Diffs};
use crate::state::UserStatus;
use crate::state::presence::TYPING_TTL;
use crate::state::{
    Expired, LiveConnection, Member, Presence, Restored, StateError, Status, StatusChange, Typer,
};

/// At most one typing push a second per user and channel; extra updates only extend it.
const TYPING_PUSH_INTERVAL: Duration = Duration::from_secs(1);
/// `setStatus` changes pushed per user and org: bursts of [`STATUS_PUSH_BURST`], then one a
/// second; the last one held back goes out when a token is back.
const STATUS_PUSH_INTERVAL: Duration = Duration::from_secs(1);
/// Status pushes a user may make at once before the one-a-second rate applies.
const STATUS_PUSH_BURST: f64 = 3.0;
/// How often the node looks for typing indicators that ran out.
const TYPING_SWEEP_INTERVAL: Duration = Duration::from_millis(250);
/// Connections refreshed per round trip.
const REFRESH_BATCH: usize = 1000;
/// A connection changes its presence state in a channel at most once per this (error 110).
pub const STATE_INTERVAL: Duration = Duration::from_millis(250);

/// A `setPresenceState` refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum SetStateError {
    #[error("presence state changed more often than once every 250 ms")]
    Throttled,
    #[error(transparent)]
    State(#[from] StateError),
}

/// The presence state one of this node's connections set in a channel.
struct LocalState {
    set_at: Instant,
    state: Option<Arc<RawValue>>,
}

/// A typing indicator held by one of this node's connections.
struct LocalTyper {
    client: Arc<str>,
    last_update: Instant,
    /// A start held back by the push throttle (it came within a second of the last pushed
    /// one): the typing job pushes it when the second ends, unless it stopped meanwhile.
    deferred: Option<Typer>,
}

/// A user's `setStatus` pushes on one org, through this node: a token bucket of
/// [`STATUS_PUSH_BURST`] refilled one a [`STATUS_PUSH_INTERVAL`], so a person toggling their
/// status sees every change at once and a script flooding it gets one a second.
struct StatusThrottle {
    tokens: f64,
    refilled: Instant,
    /// The status subscribers last saw from this node.
    pushed: Status,
    /// The latest change held back until the bucket has a token again.
    pending: Option<StatusChange>,
}

impl StatusThrottle {
    fn refill(&mut self, now: Instant) {
        let earned =
            now.duration_since(self.refilled).as_secs_f64() / STATUS_PUSH_INTERVAL.as_secs_f64();
        self.tokens = (self.tokens + earned).min(STATUS_PUSH_BURST);
        self.refilled = now;
    }
}

pub struct PresenceService {
    state: Arc<dyn Presence>,
    broker: Arc<dyn Broker>,
    config: Arc<Config>,
    node_id: Arc<str>,
    typing: DashMap<(ChannelName, Arc<str>), LocalTyper>,
    /// (channel, user) → when `active: true` was last pushed. Kept apart from `typing` so
    /// that `active: false` does not reset the throttle.
    typing_pushes: DashMap<(ChannelName, Arc<str>), Instant>,
    /// (org, user) → the throttle of `setStatus` pushes.
    status_pushes: DashMap<(Arc<str>, Arc<str>), StatusThrottle>,
    /// (org, user) → the status the user last set through this node, kept while the user
    /// has a connection here, so that re-created entries come back with it.
    statuses: DashMap<(Arc<str>, Arc<str>), Status>,
    /// (channel, connection id) → the presence state the connection last set there, kept
    /// until it leaves the channel.
    states: DashMap<(ChannelName, Arc<str>), LocalState>,
    /// Joins, leaves and state changes of big channels, pushed as one diff a channel every
    /// [`DIFF_INTERVAL`].
    diffs: Diffs,
}

impl PresenceService {
    pub fn new(
        state: Arc<dyn Presence>,
        broker: Arc<dyn Broker>,
        config: Arc<Config>,
        node_id: Arc<str>,
    ) -> Arc<Self> {
        Arc::new(Self {
            diffs: Diffs::new(config.presence_push_limit),
            state,
            broker,
            config,
            node_id,
            typing: DashMap::new(),
            typing_pushes: DashMap::new(),
            status_pushes: DashMap::new(),
            statuses: DashMap::new(),
            states: DashMap::new(),
        })
    }

    /// Who is typing in a channel.
    pub async fn typers(&self, channel: &ChannelName) -> Result<Vec<Typer>, StateError> {
        self.state.typers(channel).await
    }

    /// The statuses of `users` in `org`.
    pub async fn statuses(
        &self,
        org: &str,
        users: &[Arc<str>],
    ) -> Result<Vec<UserStatus>, StateError> {
        self.state.statuses(org, users).await
    }

    fn ttl(&self) -> Duration {
        self.config.presence_ttl
    }

    /// A channel's members, each with their user's status on `org:<org>…` channels.
    pub async fn members(
        &self,
        channel: &ChannelName,
    ) -> Result<Vec<(Member, Option<Status>)>, StateError> {
        let members = self.state.members(channel).await?;
        let Some(org) = org_of(channel) else {
            return Ok(members.into_iter().map(|m| (m, None)).collect());
        };
        let statuses = self.state.statuses(org, &distinct_users(&members)).await?;
        Ok(members
            .into_iter()
            .map(|member| {
                let status = statuses
                    .iter()
                    .find(|status| status.user == member.user)
                    .map(|status| status.status);
                (member, status)
            })
            .collect())
    }

    /// Distinct users and connections in a channel's presence.
    pub async fn stats(&self, channel: &ChannelName) -> Result<(u64, u64), StateError> {
        let members = self.state.members(channel).await?;
        Ok((distinct_users(&members).len() as u64, members.len() as u64))
    }

    /// A subscription was made: the connection joins the channel's presence.
    pub async fn joined(
        &self,
        channel: &ChannelName,
        options: &ChannelOptions,
        connection: &Connection,
    ) -> Result<(), StateError> {
        if !options.presence {
            return Ok(());
        }
        let member = Member {
            user: connection.claims().sub.clone(),
            client: connection.id.clone(),
            info: connection.claims().info.clone(),
            joined_at: unix_millis(),
            state: None,
        };
        let joined = self
            .state
            .join_counted(channel, &member, self.ttl())
            .await?;
        if let Some(members) = joined
            && options.join_leave
            && !self.diffs.join(channel, &member, members)
        {
            // The joiner's own connection learns it joined from its subscribe reply.
            let event = ChannelEvent::Join(PresenceMember::new(&member, None));
            self.push(
                channel,
                &event,
                Some(Exclude::Client(member.client.clone())),
            )
            .await;
        }
        Ok(())
    }

    /// `setPresenceState`: the state of the connection's membership of `channel` (a
    /// channel with presence it is subscribed to), pushed where joins and leaves are.
    pub async fn set_state(
        &self,
        channel: &ChannelName,
        options: &ChannelOptions,
        connection: &Connection,
        state: Option<Arc<RawValue>>,
    ) -> Result<(), SetStateError> {
        let now = Instant::now();
        match self.states.entry((channel.clone(), connection.id.clone())) {
            Entry::Occupied(local) if now.duration_since(local.get().set_at) < STATE_INTERVAL => {
                return Err(SetStateError::Throttled);
            }
            entry => {
                entry.insert(LocalState {
                    set_at: now,
                    state: state.clone(),
                });
            }
        }
        // Not a member in the store (it lost the entry): the next refresh re-creates it
        // with this state, and announces it.
        let Some(members) = self
            .state
            .set_state(channel, &connection.id, state.clone())
            .await?
        else {
            return Ok(());
        };
        if !options.join_leave {
            return Ok(());
        }
        let push = StatePush {
            user: connection.claims().sub.clone(),
            client: connection.id.clone(),
            state,
        };
        if !self.diffs.state(channel, &push, members) {
            self.push(channel, &ChannelEvent::State(push), None).await;
        }
        Ok(())
    }

    /// A subscription ended (unsubscribe, server unsubscribe or disconnect).
    pub async fn left(&self, channel: &ChannelName, connection: &Connection) {
        self.states
            .remove(&(channel.clone(), connection.id.clone()));
        let Some((_, options)) = self.config.channel_rule(channel) else {
            return;
        };
        let key = (channel.clone(), connection.claims().sub.clone());
        if options.typing
            && self
                .typing
                .remove_if(&key, |_, typer| typer.client == connection.id)
                .is_some()
        {
            self.stop_typing(channel, &connection.claims().sub, true)
                .await;
        }
        if !options.presence {
            return;
        }
        match self.state.leave_counted(channel, &connection.id).await {
            Ok(Some((member, left))) if options.join_leave => {
                if !self.diffs.leave(channel, &member, left + 1) {
                    let event = ChannelEvent::Leave(PresenceMember::new(&member, None));
                    self.push(channel, &event, None).await;
                }
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%channel, %error, "presence leave failed; the entry expires")
            }
        }
    }

    /// A connection was authenticated: it counts towards its user being online in each of
    /// the token's orgs.
    pub async fn opened(&self, connection: &Connection) {
        for org in &connection.claims().orgs {
            let change = self
                .state
                .connected(org, &connection.claims().sub, &connection.id, self.ttl())
                .await;
            if let Ok(Some(_)) = change {
                // The user's first connection resets their status to online.
                self.statuses
                    .remove(&(org.clone(), connection.claims().sub.clone()));
            }
            self.announce(change).await;
        }
    }

    /// A connection ended.
    pub async fn closed(&self, connection: &Connection) {
        for org in &connection.claims().orgs {
            let change = self
                .state
                .disconnected(org, &connection.claims().sub, &connection.id)
                .await;
            self.announce(change).await;
        }
    }

    /// A `refresh` replaced the connection's claims (`before` were the old ones): it stops
    /// counting towards its user being online in the orgs it left, and starts in the new ones.
    pub async fn orgs_changed(&self, connection: &Connection, before: &Claims) {
        let now = connection.claims();
        for org in before.orgs.iter().filter(|org| !now.is_member_of(org)) {
            let change = self.state.disconnected(org, &now.sub, &connection.id).await;
            self.announce(change).await;
        }
        for org in now.orgs.iter().filter(|org| !before.is_member_of(org)) {
            let change = self
                .state
                .connected(org, &now.sub, &connection.id, self.ttl())
                .await;
            if let Ok(Some(_)) = change {
                self.statuses.remove(&(org.clone(), now.sub.clone()));
            }
            self.announce(change).await;
        }
    }

    /// `setStatus`: the user's status in every org of the token.
    pub async fn set_status(
        &self,
        connection: &Connection,
        status: Status,
    ) -> Result<(), StateError> {
        let claims = connection.claims();
        for org in &claims.orgs {
            let user = &claims.sub;
            self.statuses.insert((org.clone(), user.clone()), status);
            let change = self
                .state
                .set_status(org, user, &connection.id, status, self.ttl())
                .await?;
            if let Some(change) = change {
                self.announce_throttled(change).await;
            }
        }
        Ok(())
    }

    /// `typing`: starts, extends or ends the connection's user's typing indicator.
    pub async fn typing(
        &self,
        channel: &ChannelName,
        connection: &Connection,
        active: bool,
    ) -> Result<(), StateError> {
        let user = connection.claims().sub.clone();
        let key = (channel.clone(), user.clone());
        if !active {
            // A deferred start was never pushed: dropping it is enough.
            let was_local = self
                .typing
                .remove(&key)
                .is_some_and(|(_, local)| local.deferred.is_none());
            let was_stored = self.state.stop_typing(channel, &user).await?;
            if was_local || was_stored {
                self.push_typing(channel, &Typer { user, info: None }, false)
                    .await;
            }
            return Ok(());
        }
        let now = Instant::now();
        let typer = Typer {
            user,
            info: connection.claims().info.clone(),
        };
        let throttled = match self.typing_pushes.entry(key.clone()) {
            Entry::Occupied(mut pushed) => {
                let throttled = now.duration_since(*pushed.get()) < TYPING_PUSH_INTERVAL;
                if !throttled {
                    pushed.insert(now);
                }
                throttled
            }
            Entry::Vacant(vacant) => {
                vacant.insert(now);
                false
            }
        };
        if throttled {
            // Extends an indicator subscribers see; one stopped within the second starts
            // again only when the second ends, so start/stop cannot flood them.
            let mut local = self.typing.entry(key).or_insert_with(|| LocalTyper {
                client: connection.id.clone(),
                last_update: now,
                deferred: Some(typer),
            });
            local.client = connection.id.clone();
            local.last_update = now;
            return Ok(());
        }
        self.typing.insert(
            key,
            LocalTyper {
                client: connection.id.clone(),
                last_update: now,
                deferred: None,
            },
        );
        self.state.start_typing(channel, &typer).await?;
        self.push_typing(channel, &typer, true).await;
        Ok(())
    }

    /// Ends a typing indicator this node held (`was_local`) or the state still has. The
    /// stored entry may have expired a moment before the node's own timer ran out, so what
    /// the node knew is enough to tell subscribers.
    async fn stop_typing(&self, channel: &ChannelName, user: &Arc<str>, was_local: bool) {
        let was_stored = match self.state.stop_typing(channel, user).await {
            Ok(was_stored) => was_stored,
            Err(error) => {
                tracing::debug!(%channel, %error, "typing stop failed; it expires");
                false
            }
        };
        if was_local || was_stored {
            let typer = Typer {
                user: user.clone(),
                info: None,
            };
            self.push_typing(channel, &typer, false).await;
        }
    }

    async fn push_typing(&self, channel: &ChannelName, typer: &Typer, active: bool) {
        let event = ChannelEvent::Typing(TypingPush::new(typer, active));
        self.push(channel, &event, Some(Exclude::User(typer.user.clone())))
            .await;
    }

    /// Pushes a `setStatus` change unless one went out for the user and org in the last
    /// second; then it waits for [`Self::flush_statuses`], replacing any held before.
    async fn announce_throttled(&self, change: StatusChange) {
        let now = Instant::now();
        let key = (change.org.clone(), change.status.user.clone());
        {
            let mut throttle = self
                .status_pushes
                .entry(key)
                .or_insert_with(|| StatusThrottle {
                    tokens: STATUS_PUSH_BURST,
                    refilled: now,
                    pushed: change.status.status,
                    pending: None,
                });
            throttle.refill(now);
            if throttle.tokens < 1.0 {
                throttle.pending = Some(change);
                return;
            }
            throttle.tokens -= 1.0;
            throttle.pending = None;
        }
        self.announce(Ok(Some(change))).await;
    }

    /// Pushes the status changes held back once their user's budget allows; forgets idle
    /// throttles.
    async fn flush_statuses(&self) {
        let now = Instant::now();
        let mut due = Vec::new();
        self.status_pushes.retain(|_, throttle| {
            throttle.refill(now);
            let Some(change) = throttle.pending.take() else {
                // Full again: nothing to remember.
                return throttle.tokens < STATUS_PUSH_BURST;
            };
            if throttle.tokens < 1.0 {
                throttle.pending = Some(change);
                return true;
            }
            // Back to what subscribers saw last (away, busy, away): nothing to tell.
            if change.status.status != throttle.pushed {
                throttle.tokens -= 1.0;
                due.push(change);
            }
            true
        });
        for change in due {
            isolated("status push", self.announce(Ok(Some(change)))).await;
        }
    }

    /// Pushes a status change on `org:<org>`.
    async fn announce(&self, change: Result<Option<StatusChange>, StateError>) {
        let change = match change {
            Ok(Some(change)) => change,
            Ok(None) => return,
            Err(error) => {
                tracing::warn!(%error, "status update failed; the entry expires");
                return;
            }
        };
        // Whatever went out last (an offline, a reconnect) supersedes a held-back change.
        if let Some(mut throttle) = self
            .status_pushes
            .get_mut(&(change.org.clone(), change.status.user.clone()))
        {
            throttle.pushed = change.status.status;
            throttle.pending = None;
        }
        let Ok(channel) = ChannelName::parse(&format!("org:{}", change.org)) else {
            return;
        };
        let event = ChannelEvent::Status(change.status);
        self.push(&channel, &event, None).await;
    }

    async fn push(&self, channel: &ChannelName, event: &ChannelEvent, exclude: Option<Exclude>) {
        let event = Event {
            channel: channel.clone(),
            push: encode_event(channel.as_str(), event),
            exclude,
        };
        if let Err(error) = self.broker.publish_event(&event).await {
            tracing::debug!(%channel, %error, "presence event not pushed");
        }
    }

    /// Starts the refresher, the sweeper and the typing expiry; they stop when the service
    /// is dropped.
    pub fn spawn_jobs(self: &Arc<Self>, connections: Arc<Connections>) {
        let every = self.ttl() / 3;
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(service) = weak.upgrade() else {
                    return;
                };
                isolated("presence refresh", service.refresh(&connections)).await;
                isolated("presence sweep", service.sweep()).await;
            }
        });
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(DIFF_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(service) = weak.upgrade() else {
                    return;
                };
                isolated("presence diffs", service.push_diffs()).await;
            }
        });
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(TYPING_SWEEP_INTERVAL);
            loop {
                tick.tick().await;
                let Some(service) = weak.upgrade() else {
                    return;
                };
                isolated("typing expiry", service.expire_typing()).await;
                isolated("status flush", service.flush_statuses()).await;
            }
        });
    }

    /// Pushes the joins, leaves and state changes collected for big channels, one diff a
    /// channel (split into pushes of at most the writer's frame cap, so a diff is never a
    /// bigger frame than the writer builds anyway).
    async fn push_diffs(&self) {
        let budget = crate::session::frame_cap(&self.config.limits);
        for (channel, diff) in self.diffs.take() {
            for push in crate::presence_diff::encode(&channel, diff, budget) {
                let event = Event {
                    channel: channel.clone(),
                    push,
                    exclude: None,
                };
                if let Err(error) = self.broker.publish_event(&event).await {
                    tracing::debug!(%channel, %error, "presence diff not pushed");
                }
            }
        }
    }

    /// Extends the entries of every live connection, in batches of one round trip each,
    /// and announces the entries the state had to re-create.
    async fn refresh(&self, connections: &Connections) {
        // Only nodes where someone set a status pay for looking statuses up.
        let any_status = !self.statuses.is_empty();
        // A state whose connection left while setting it.
        self.states.retain(|(channel, client), _| {
            connections
                .get(client)
                .is_some_and(|connection| connection.is_subscribed(channel))
        });
        let mut states: HashMap<Arc<str>, Vec<(ChannelName, Arc<RawValue>)>> = HashMap::new();
        for local in self.states.iter() {
            let ((channel, client), local) = local.pair();
            if let Some(state) = &local.state {
                states
                    .entry(client.clone())
                    .or_default()
                    .push((channel.clone(), state.clone()));
            }
        }
        let mut users = HashSet::new();
        let (handles, live): (Vec<Arc<Connection>>, Vec<LiveConnection>) = connections
            .all()
            .into_iter()
            .filter_map(|connection| {
                let user = connection.claims().sub.clone();
                let live = LiveConnection {
                    channels: connection.subscriptions_where(|channel| {
                        self.config
                            .channel_rule(channel)
                            .is_some_and(|(_, options)| options.presence)
                    }),
                    states: states.remove(&connection.id).unwrap_or_default(),
                    orgs: connection.claims().orgs.clone(),
                    statuses: connection
                        .claims()
                        .orgs
                        .iter()
                        .filter(|_| any_status)
                        .filter_map(|org| {
                            let status = self.statuses.get(&(org.clone(), user.clone()))?;
                            Some((org.clone(), *status))
                        })
                        .collect(),
                    client: connection.id.clone(),
                    info: connection.claims().info.clone(),
                    user: user.clone(),
                };
                if any_status {
                    users.insert(user);
                }
                (!live.channels.is_empty() || !live.orgs.is_empty()).then_some((connection, live))
            })
            .unzip();
        // A user with no connection here any more: their status is another node's to keep.
        // (`of_user` catches a connection opened since the snapshot.)
        self.statuses
            .retain(|(_, user), _| users.contains(user) || !connections.of_user(user).is_empty());
        for (batch, handles) in live
            .chunks(REFRESH_BATCH)
            .zip(handles.chunks(REFRESH_BATCH))
        {
            match self.state.refresh(batch, self.ttl()).await {
                Ok(restored) if restored.is_empty() => {}
                Ok(restored) => self.announce_restored(restored, handles, connections).await,
                Err(error) => {
                    tracing::warn!(%error, "presence refresh failed");
                    return;
                }
            }
        }
    }

    /// Announces re-created entries once: a `join` for a member (on channels with
    /// join_leave), the `status` of a user back online. An entry re-created for a
    /// connection that left or closed while the refresh ran is removed again: its own
    /// `left` or `closed` found nothing to remove. (One that ends between this check and
    /// its registration's drop stays until it expires, then the sweeper reports it.)
    async fn announce_restored(
        &self,
        restored: Restored,
        batch: &[Arc<Connection>],
        connections: &Connections,
    ) {
        let registered: HashSet<Arc<str>> = connections
            .all()
            .into_iter()
            .map(|connection| connection.id.clone())
            .collect();
        let by_id: HashMap<&str, &Arc<Connection>> = batch
            .iter()
            .map(|connection| (&*connection.id, connection))
            .collect();
        // A channel has at least as many members as were restored in it at once.
        let restored_in = count_by_channel(restored.members.iter().map(|(channel, _)| channel));
        for (channel, member) in restored.members {
            let still_member = registered.contains(&member.client)
                && by_id
                    .get(&*member.client)
                    .is_some_and(|connection| connection.is_subscribed(&channel));
            if !still_member {
                if let Err(error) = self.state.leave(&channel, &member.client).await {
                    tracing::warn!(%channel, %error, "presence leave failed; the entry expires");
                }
                continue;
            }
            let join_leave = self
                .config
                .channel_rule(&channel)
                .is_some_and(|(_, options)| options.join_leave);
            let at_least = restored_in.get(&channel).copied().unwrap_or(1);
            if join_leave && !self.diffs.join(&channel, &member, at_least) {
                let event = ChannelEvent::Join(PresenceMember::new(&member, None));
                let exclude = Some(Exclude::Client(member.client.clone()));
                self.push(&channel, &event, exclude).await;
            }
        }
        for change in restored.statuses {
            self.announce(Ok(Some(change))).await;
        }
        for (org, user, client) in restored.connections {
            if !registered.contains(&client) {
                let change = self.state.disconnected(&org, &user, &client).await;
                self.announce(change).await;
            }
        }
    }

    /// Removes entries whose node stopped refreshing them, and pushes what they mean.
    async fn sweep(&self) {
        let expired = match self.state.sweep(&self.node_id).await {
            Ok(expired) => expired,
            Err(error) => {
                tracing::debug!(%error, "presence sweep skipped");
                return;
            }
        };
        // A channel had at least as many members as expired in it at once.
        let expired_in = count_by_channel(expired.iter().filter_map(|expired| match expired {
            Expired::Left { channel, .. } => Some(channel),
            Expired::Offline(_) => None,
        }));
        for expired in expired {
            isolated("presence sweep", self.report_expired(expired, &expired_in)).await;
        }
    }

    async fn report_expired(&self, expired: Expired, expired_in: &HashMap<ChannelName, u64>) {
        match expired {
            Expired::Left { channel, member } => {
                let join_leave = self
                    .config
                    .channel_rule(&channel)
                    .is_some_and(|(_, options)| options.join_leave);
                let at_least = expired_in.get(&channel).copied().unwrap_or(1);
                if join_leave && !self.diffs.leave(&channel, &member, at_least) {
                    let event = ChannelEvent::Leave(PresenceMember::new(&member, None));
                    self.push(&channel, &event, None).await;
                }
            }
            Expired::Offline(change) => self.announce(Ok(Some(change))).await,
        }
    }

    /// Ends the typing indicators of this node's connections that got no update in time.
    async fn expire_typing(&self) {
        let now = Instant::now();
        let mut ended = Vec::new();
        self.typing.retain(|key, typer| {
            let live = now.duration_since(typer.last_update) < TYPING_TTL;
            if !live {
                ended.push(key.clone());
            }
            live
        });
        self.typing_pushes
            .retain(|_, pushed| now.duration_since(*pushed) < TYPING_PUSH_INTERVAL);
        for (channel, user) in ended {
            isolated("typing expiry", self.stop_typing(&channel, &user, true)).await;
        }
        // Starts held back by the throttle whose second has ended.
        let mut due = Vec::new();
        for mut local in self.typing.iter_mut() {
            if local.deferred.is_some() && !self.typing_pushes.contains_key(local.key()) {
                let typer = local.deferred.take();
                due.extend(typer.map(|typer| (local.key().0.clone(), typer)));
            }
        }
        for (channel, typer) in due {
            self.typing_pushes
                .insert((channel.clone(), typer.user.clone()), now);
            isolated("deferred typing start", async {
                if let Err(error) = self.state.start_typing(&channel, &typer).await {
                    tracing::warn!(%channel, %error, "typing start failed");
                }
                self.push_typing(&channel, &typer, true).await;
            })
            .await;
        }
    }
}

fn count_by_channel<'a>(
    channels: impl Iterator<Item = &'a ChannelName>,
) -> HashMap<ChannelName, u64> {
    let mut counts = HashMap::new();
    for channel in channels {
        *counts.entry(channel.clone()).or_default() += 1;
    }
    counts
}

fn distinct_users(members: &[Member]) -> Vec<Arc<str>> {
    let mut seen = std::collections::HashSet::new();
    members
        .iter()
        .filter(|member| seen.insert(member.user.clone()))
        .map(|member| member.user.clone())
        .collect()
}

/// The org of an `org:<org>[:…]` channel.
fn org_of(channel: &ChannelName) -> Option<&str> {
    let mut segments = channel.segments();
    (segments.next() == Some("org"))
        .then(|| segments.next())
        .flatten()
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;
    use herald_protocol::Publication;

    use super::*;
    use crate::broker::{BrokerError, UserOrder};
    use crate::config::ConfigArgs;
    use crate::state::MemoryState;

    /// Panics on events that exclude user `bad` (as async-nats once did on a header value
    /// with CR/LF); records the others' excluded users.
    #[derive(Default)]
    struct PanickingBroker {
        pushed_for: Mutex<Vec<String>>,
    }

    #[async_trait]
    impl Broker for PanickingBroker {
        async fn publish(&self, _: &Publication) -> Result<(), BrokerError> {
            Ok(())
        }
        async fn publish_event(&self, event: &Event) -> Result<(), BrokerError> {
            if let Some(Exclude::User(user)) = &event.exclude {
                assert_ne!(&**user, "bad", "a header value the broker cannot encode");
                self.pushed_for.lock().unwrap().push(user.to_string());
            }
            Ok(())
        }
        async fn publish_change(&self, _: &UserOrder) -> Result<(), BrokerError> {
            Ok(())
        }
        async fn subscribe(&self, _: &ChannelName) -> Result<(), BrokerError> {
            Ok(())
        }
        async fn unsubscribe(&self, _: &ChannelName) -> Result<(), BrokerError> {
            Ok(())
        }
        fn is_healthy(&self) -> bool {
            true
        }
    }

    #[tokio::test]
    async fn typing_expiry_survives_an_entry_that_panics() {
        let broker = Arc::new(PanickingBroker::default());
        let config = Config::load(&ConfigArgs::default()).unwrap();
        let service = PresenceService::new(
            Arc::new(MemoryState::new()),
            broker.clone(),
            Arc::new(config),
            Arc::from("node"),
        );
        let channel = ChannelName::parse("org:acme:ch:general").unwrap();
        let ran_out = Instant::now() - TYPING_TTL;
        for user in ["bad", "good"] {
            let typer = LocalTyper {
                client: Arc::from(format!("{user}-client")),
                last_update: ran_out,
                deferred: None,
            };
            service
                .typing
                .insert((channel.clone(), Arc::from(user)), typer);
        }
        service.expire_typing().await;
        assert_eq!(*broker.pushed_for.lock().unwrap(), vec!["good".to_owned()]);
        assert!(service.typing.is_empty(), "both indicators ended");
    }
}
