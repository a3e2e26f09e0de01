//! Presence, online status and typing: who is in a channel, who is online in an org, who is
//! typing. Entries expire unless the node holding the connection refreshes them, so a
//! crashed node's users leave on their own; a sweeper (one node at a time) removes expired
//! entries and reports them so the node can push `leave` and `offline`.
//!
//! The node's own connections are the truth, the stored entries a copy: a refresh
//! re-creates the entries of a live connection that the store lost (Redis restarted empty
//! or flushed) or that the sweeper removed while its node was cut off, and reports them
//! so the node announces them again, once.
//!
//! In memory for a standalone node; in Redis for a cluster. Both implement [`Presence`]
//! with the same behaviour, and the same test suite runs against both.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use herald_protocol::ChannelName;

use serde_json::value::RawValue;

use super::StateError;

/// How long a typing indicator lasts without an update.
pub const TYPING_TTL: Duration = Duration::from_secs(5);

pub use herald_protocol::presence::{Member, Status, Typer, UserStatus};

/// A status transition, to push on `org:<org>`.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusChange {
    pub org: Arc<str>,
    pub status: UserStatus,
}

/// Presence and org registrations of one connection this node holds, to refresh (and to
/// re-create when they are missing).
#[derive(Debug, Clone)]
pub struct LiveConnection {
    pub client: Arc<str>,
    pub user: Arc<str>,
    /// The token's `info` claim, for a re-created member.
    pub info: Option<Arc<RawValue>>,
    /// Channels (with presence) the connection has joined.
    pub channels: Vec<ChannelName>,
    /// The presence states it set in some of them, for a re-created member.
    pub states: Vec<(ChannelName, Arc<RawValue>)>,
    /// Orgs the connection counts towards the user's online status in.
    pub orgs: Vec<Arc<str>>,
    /// Statuses the user set through this node, by org: kept when the user's entries are
    /// re-created (else they come back online).
    pub statuses: Vec<(Arc<str>, Status)>,
}

/// What a refresh found missing and re-created, to announce again.
#[derive(Debug, Clone, Default)]
pub struct Restored {
    /// Members put back in a channel's presence (push `join`).
    pub members: Vec<(ChannelName, Member)>,
    /// Connections counted again in an org, as (org, user, client).
    pub connections: Vec<(Arc<str>, Arc<str>, Arc<str>)>,
    /// Users back online in an org, or back to the status they had set (push `status`).
    pub statuses: Vec<StatusChange>,
}

impl LiveConnection {
    /// The presence state the connection set in `channel`, if any.
    pub fn state_in(&self, channel: &str) -> Option<Arc<RawValue>> {
        self.states
            .iter()
            .find(|(set_in, _)| set_in.as_str() == channel)
            .map(|(_, state)| state.clone())
    }
}

impl Restored {
    pub fn is_empty(&self) -> bool {
        self.members.is_empty() && self.connections.is_empty() && self.statuses.is_empty()
    }
}

/// What the sweeper removed because its node stopped refreshing it.
#[derive(Debug, Clone)]
pub enum Expired {
    /// A member left a channel (push `leave`).
    Left {
        channel: ChannelName,
        member: Member,
    },
    /// A user's last connection in an org expired (push `status` offline).
    Offline(StatusChange),
}

#[async_trait]
pub trait Presence: Send + Sync + 'static {
    /// Adds a connection to a channel's presence, expiring after `ttl` unless refreshed.
    /// The channel's members with it (in memory, expired entries not swept yet count too),
    /// or None when it was already a member.
    async fn join_counted(
        &self,
        channel: &ChannelName,
        member: &Member,
        ttl: Duration,
    ) -> Result<Option<u64>, StateError>;

    /// Removes a connection from a channel's presence: its entry if it was a member, and
    /// the members left (counted as [`Self::join_counted`] does).
    async fn leave_counted(
        &self,
        channel: &ChannelName,
        client: &str,
    ) -> Result<Option<(Member, u64)>, StateError>;

    /// [`Self::join_counted`] without the count: false when it was already a member.
    async fn join(
        &self,
        channel: &ChannelName,
        member: &Member,
        ttl: Duration,
    ) -> Result<bool, StateError> {
        Ok(self.join_counted(channel, member, ttl).await?.is_some())
    }

    /// [`Self::leave_counted`] without the count.
    async fn leave(
        &self,
        channel: &ChannelName,
        client: &str,
    ) -> Result<Option<Member>, StateError> {
        Ok(self
            .leave_counted(channel, client)
            .await?
            .map(|(member, _)| member))
    }

    /// Sets (`None`: clears) the presence state of `client`'s membership of `channel`. The
    /// channel's members (counted as [`Self::join_counted`] does), or None when `client` is
    /// not a live member.
    async fn set_state(
        &self,
        channel: &ChannelName,
        client: &str,
        state: Option<Arc<RawValue>>,
    ) -> Result<Option<u64>, StateError>;

    /// The channel's members (unexpired), one entry per connection, oldest first.
    async fn members(&self, channel: &ChannelName) -> Result<Vec<Member>, StateError>;

    /// Counts a connection of `user` towards being online in `org`. The user's first live
    /// connection is a transition to online (the status resets to online); detected
    /// atomically, so two nodes never both announce it.
    async fn connected(
        &self,
        org: &str,
        user: &str,
        client: &str,
        ttl: Duration,
    ) -> Result<Option<StatusChange>, StateError>;

    /// Removes a connection of `user` in `org`. The user's last one is a transition to
    /// offline, with `last_seen` now.
    async fn disconnected(
        &self,
        org: &str,
        user: &str,
        client: &str,
    ) -> Result<Option<StatusChange>, StateError>;

    /// Sets the status (online, away or busy) of `user`, whose connection `client` is live.
    /// A change when it differs from the current one. When the user has no live connection
    /// in the org (the store lost it, or the sweeper removed it), `client` is counted again
    /// for `ttl` and the user is back with this status: a change too.
    async fn set_status(
        &self,
        org: &str,
        user: &str,
        client: &str,
        status: Status,
        ttl: Duration,
    ) -> Result<Option<StatusChange>, StateError>;

    /// The statuses of `users` in `org`, in the order asked (offline when not connected).
    async fn statuses(&self, org: &str, users: &[Arc<str>]) -> Result<Vec<UserStatus>, StateError>;

    /// Records `typer` as typing in `channel` for [`TYPING_TTL`].
    async fn start_typing(&self, channel: &ChannelName, typer: &Typer) -> Result<(), StateError>;

    /// Removes `user` from the channel's typers; true when they were typing.
    async fn stop_typing(&self, channel: &ChannelName, user: &str) -> Result<bool, StateError>;

    /// Who is typing in the channel now (unexpired).
    async fn typers(&self, channel: &ChannelName) -> Result<Vec<Typer>, StateError>;

    /// Extends the expiry of these connections' presence and org entries to `ttl` from
    /// now (one round trip per call, whatever the number of connections), and re-creates
    /// the entries that are missing (more round trips, only then): a member joined at now
    /// with the connection's `info` and its state in the channel, a connection in an org
    /// (the user back online, with their status from `statuses` if any). Reports what it
    /// re-created.
    async fn refresh(&self, live: &[LiveConnection], ttl: Duration)
    -> Result<Restored, StateError>;

    /// Removes expired entries and reports them. Several nodes may call it; at most one
    /// sweeps at a time (the others get nothing), and each entry is reported once.
    async fn sweep(&self, node_id: &str) -> Result<Vec<Expired>, StateError>;
}
