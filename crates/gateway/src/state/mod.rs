//! Channel state: offsets, epochs, history, idempotency. In memory for a standalone node;
//! the cluster implementation (Redis) implements the same trait, so the hub and the
//! session never know which one runs.

mod kept_subscriptions;
mod memory;
mod memory_presence;
pub mod presence;
mod redis;
mod redis_presence;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use herald_protocol::{ChannelName, Publication};

pub use kept_subscriptions::{Kept, KeptSubscriptions, MemoryKept};
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
    /// Changes whenever the channel's history is lost and restarted. A channel with no
    /// history state reads as an *unpublished* epoch (see [`Position::unpublished`]).
    /// Shared with the publications of the epoch.
    pub epoch: Arc<str>,
}

impl Position {
    /// The position of a channel with no history state, read at `read_ms` (the state's
    /// clock) from the state `source`. Reads never write, so the channel has no epoch
    /// until its first publication creates one; this placeholder lets a reader recover
    /// from it later (see [`unpublished_recovers`]).
    pub fn unpublished(read_ms: u64, source: &str) -> Position {
        Position {
            offset: 0,
            epoch: format!("{UNPUBLISHED}{read_ms}.{source}").into(),
        }
    }
}

/// First character of an unpublished placeholder epoch; never in a real epoch.
const UNPUBLISHED: char = '~';

/// Whether `epoch` is a placeholder for a channel with no history state.
pub fn is_unpublished(epoch: &str) -> bool {
    epoch.starts_with(UNPUBLISHED)
}

/// A real epoch as the states write it: `<created ms>.<source>.<random>`, so recovery
/// from a placeholder can tell how long after the read the epoch began.
pub(crate) fn new_epoch(created_ms: u64, source: &str) -> String {
    format!("{created_ms}.{source}.{}", crate::random::random_token(8))
}

/// (time in ms, source) of a placeholder or of a real epoch; `None` for anything else
/// (epochs written before they carried their creation time).
fn epoch_time(epoch: &str) -> Option<(u64, &str)> {
    let (ms, rest) = epoch
        .strip_prefix(UNPUBLISHED)
        .unwrap_or(epoch)
        .split_once('.')?;
    let source = rest.split('.').next().unwrap_or(rest);
    Some((ms.parse().ok()?, source))
}

/// Whether a reader that saw the unpublished placeholder `read` has missed nothing that a
/// channel now at epoch `current` (real or another placeholder) could have held before its
/// offset 1, given that every epoch lives at least `lifetime` (the channel's history TTL).
///
/// An epoch created and lost since the read would have lived `lifetime` first, so the
/// current epoch (or the current read, when there is none) would begin at least `lifetime`
/// after the read: within less, the current epoch is the first since the read. Different
/// sources (a standalone node's restart) never match. A state that loses data without a
/// restart (Redis without persistence, a failover losing writes) within `lifetime` is not
/// detected, as with any acknowledged write it loses.
pub fn unpublished_recovers(read: &str, current: &str, lifetime: Duration) -> bool {
    let Some((read_ms, read_source)) = is_unpublished(read).then(|| epoch_time(read)).flatten()
    else {
        return false;
    };
    let Some((current_ms, current_source)) = epoch_time(current) else {
        return false;
    };
    read_source == current_source
        && u128::from(current_ms.saturating_sub(read_ms)) < lifetime.as_millis()
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
    /// [`Position::unpublished`], and nothing is written: only publications create state.
    async fn history(
        &self,
        channel: &ChannelName,
        since_offset: u64,
        limit: usize,
    ) -> Result<HistorySlice, StateError>;

    /// The channel's current position ([`Position::unpublished`] if it has none; never
    /// writes).
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

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn an_unpublished_read_recovers_the_first_epoch_created_within_a_lifetime() {
        let read = Position::unpublished(1_000_000, "r").epoch;
        assert!(is_unpublished(&read));
        let first = new_epoch(1_000_000 + 59_999, "r");
        assert!(!is_unpublished(&first));
        assert!(unpublished_recovers(&read, &first, MINUTE));
        // An epoch could have lived a whole lifetime and expired before this one.
        let later = new_epoch(1_000_000 + 60_000, "r");
        assert!(!unpublished_recovers(&read, &later, MINUTE));
        // Still nothing, read again: fine within a lifetime, not after one.
        let again = Position::unpublished(1_000_000 + 30_000, "r").epoch;
        assert!(unpublished_recovers(&read, &again, MINUTE));
        let much_later = Position::unpublished(1_000_000 + 60_000, "r").epoch;
        assert!(!unpublished_recovers(&read, &much_later, MINUTE));
    }

    #[test]
    fn an_unpublished_read_never_recovers_across_sources_or_from_a_real_epoch() {
        let read = Position::unpublished(1_000, "mA").epoch;
        assert!(!unpublished_recovers(
            &read,
            &new_epoch(1_001, "mB"),
            MINUTE
        ));
        assert!(!unpublished_recovers(&read, "legacyEpoch", MINUTE));
        let real = new_epoch(1_000, "r");
        assert!(!unpublished_recovers(&real, &new_epoch(1_001, "r"), MINUTE));
        assert!(!unpublished_recovers(
            "~garbage",
            &new_epoch(1_001, "r"),
            MINUTE
        ));
    }
}
