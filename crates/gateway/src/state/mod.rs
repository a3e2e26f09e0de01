//! Channel state: offsets, epochs, history, idempotency. In memory for a standalone node;
//! the cluster implementation (Redis) implements the same trait, so the hub and the
//! session never know which one runs.

mod memory;
mod memory_presence;
pub mod presence;
mod redis;
mod redis_presence;

use std::time::Duration;

use async_trait::async_trait;
use herald_protocol::{ChannelName, Publication};

pub use memory::MemoryState;
pub use presence::{
    Expired, LiveConnection, Member, Presence, Restored, Status, StatusChange, Typer, UserStatus,
};
pub use redis::RedisState;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// The backend cannot be reached; the caller may retry.
    #[error("state backend unavailable: {0}")]
    Unavailable(String),
}

/// Where a channel's history stands.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Position {
    /// The last assigned offset (0 before the first publication).
    pub offset: u64,
    /// Changes whenever the channel's history is lost and restarted.
    pub epoch: String,
}

/// How a channel keeps history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryPolicy {
    pub size: usize,
    pub ttl: Duration,
}

/// A publication to record.
pub struct Append<'a> {
    /// Offset and epoch are assigned by the state.
    pub publication: Publication,
    /// `None` for channels without history: only the idempotency key is recorded.
    pub history: Option<HistoryPolicy>,
    pub idempotency_key: Option<&'a str>,
}

#[derive(Debug, Clone)]
pub enum Appended {
    /// Recorded, with its offset and epoch when the channel has history. With an
    /// idempotency key, the key is claimed until [`State::settle`] records the broadcast.
    New(Publication),
    /// The idempotency key was seen within the window.
    Duplicate(Duplicate),
}

/// What became of the first publish with an idempotency key.
#[derive(Debug, Clone)]
pub enum Duplicate {
    /// It was broadcast (or nothing of it is left to send): its position; send nothing.
    Sent(Position),
    /// It claimed the key but is not known to have been broadcast (it failed, or its node
    /// never saw the reply): the same publication, to broadcast and settle as if new. The
    /// caller has taken over the claim.
    Unsent(Publication),
    /// A publish with the key, on a channel without history, is still within its
    /// [`IDEMPOTENCY_LEASE`]: sending it too could deliver it twice, so the retry waits.
    InFlight,
}

/// How a claimed idempotency key is settled once its broadcast is over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    /// Broadcast: a retry answers this position and sends nothing.
    Broadcast(Position),
    /// Not broadcast, on a channel without history: the key is forgotten, so a retry is
    /// a new publish. (A channel with history keeps its claim: the publication is stored,
    /// and a retry broadcasts it again.)
    Release,
}

/// A window of history, oldest first.
#[derive(Debug, Clone, Default)]
pub struct HistorySlice {
    pub publications: Vec<Publication>,
    pub position: Position,
}

/// How long an idempotency key is remembered.
pub const IDEMPOTENCY_WINDOW: Duration = Duration::from_secs(300);

/// How long a claim on a channel without history belongs to the publish that made it.
/// Longer than that publish can take to broadcast: the Redis reply (2 s timeout, after
/// which the node gives up and sends nothing) plus the NATS publish (2 s timeout). A
/// retry within it is refused as in flight; after it, the retry sends the publication.
pub const IDEMPOTENCY_LEASE: Duration = Duration::from_secs(5);

#[async_trait]
pub trait State: Send + Sync + 'static {
    /// Records a publication: checks the idempotency key, assigns the next offset, appends
    /// it to history (capped to the policy's size), extends the history's expiry and claims
    /// the key (for a channel without history, with the publication, so a retry can send
    /// it). Atomic.
    async fn append(&self, append: Append<'_>) -> Result<Appended, StateError>;

    /// Settles a key claimed by [`State::append`] (or taken over through
    /// [`Duplicate::Unsent`]) once its broadcast succeeded or failed. A key already
    /// settled as broadcast stays so.
    async fn settle(
        &self,
        channel: &ChannelName,
        idempotency_key: &str,
        settlement: Settlement,
    ) -> Result<(), StateError>;

    /// Publications with offset > `since_offset`, oldest first, at most `limit`, with the
    /// channel's current position. An unknown or expired channel has an empty slice at
    /// offset 0 and a fresh epoch.
    async fn history(
        &self,
        channel: &ChannelName,
        since_offset: u64,
        limit: usize,
    ) -> Result<HistorySlice, StateError>;

    /// The channel's current position (creating its epoch if it has none).
    async fn position(&self, channel: &ChannelName) -> Result<Position, StateError>;

    /// The current positions of several channels in one round trip, `None` for a channel
    /// with no history state (never created, expired or lost). Never creates an epoch: the
    /// node's periodic position check calls it for every local channel with history.
    async fn positions(
        &self,
        channels: &[ChannelName],
    ) -> Result<Vec<Option<Position>>, StateError>;

    /// Whether the backend is reachable (for `/readyz`).
    fn is_healthy(&self) -> bool;
}
