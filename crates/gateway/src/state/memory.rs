//! In-process state for a standalone node. One mutex over a map of channels: every
//! operation is a few map and deque operations, never held across an `.await`. Expired
//! history and idempotency keys are removed by one background sweeper, which stops when
//! the state is dropped.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use herald_protocol::{ChannelName, Publication};
use tokio::time::Instant;

use super::{
    Append, Appended, Duplicate, HistorySlice, IDEMPOTENCY_LEASE, IDEMPOTENCY_WINDOW, Position,
    Settlement, State, StateError, new_epoch,
};
use crate::isolate::isolated_sync;
use crate::random::random_token;

const SWEEP_INTERVAL: Duration = Duration::from_secs(5);

struct ChannelHistory {
    epoch: Arc<str>,
    offset: u64,
    publications: VecDeque<Publication>,
    expires_at: Instant,
}

impl ChannelHistory {
    /// A new epoch; its expiry is set by the publication that creates it.
    fn new(clock: &Clock, now: Instant) -> Self {
        Self {
            epoch: Arc::from(new_epoch(clock.millis(now), &clock.source)),
            offset: 0,
            publications: VecDeque::new(),
            expires_at: now,
        }
    }

    fn position(&self) -> Position {
        Position {
            offset: self.offset,
            epoch: self.epoch.clone(),
        }
    }
}

/// What an idempotency key holds, as in Redis (`lua/append.lua`).
enum Claim {
    /// Claimed on a channel with history: the publication is in it at this position.
    Stored(Position),
    /// Claimed on a channel without history: the publication itself, to send again.
    Held {
        publication: Publication,
        claimed_at: Instant,
    },
    /// Broadcast: the position a retry answers.
    Broadcast(Position),
}

type IdempotencyKey = (ChannelName, Box<str>);

/// The time epochs and unpublished reads carry: wall-clock milliseconds, advanced by the
/// runtime's clock (so paused-time tests move it), tagged with this state's own source so
/// that a restarted node, which lost everything, never matches an earlier read.
struct Clock {
    source: String,
    started: Instant,
    started_ms: u64,
}

impl Default for Clock {
    fn default() -> Self {
        let started_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| {
                u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
            });
        Self {
            source: format!("m{}", random_token(6)),
            started: Instant::now(),
            started_ms,
        }
    }
}

impl Clock {
    fn millis(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.started).as_millis();
        self.started_ms
            .saturating_add(u64::try_from(elapsed).unwrap_or(u64::MAX))
    }
}

#[derive(Default)]
struct Inner {
    clock: Clock,
    channels: HashMap<ChannelName, ChannelHistory>,
    /// Each key's claim and when it expires.
    idempotency: HashMap<IdempotencyKey, (Claim, Instant)>,
    /// (expiry, key) so the sweeper finds expired idempotency keys without a full scan.
    idempotency_expiry: BTreeSet<(Instant, ChannelName, Box<str>)>,
}

impl Inner {
    /// The live history of a channel, created (with a new epoch) when missing or expired.
    /// Only a publication calls it: reads never create state.
    fn channel(&mut self, channel: &ChannelName, now: Instant) -> &mut ChannelHistory {
        let entry = self
            .channels
            .entry(channel.clone())
            .or_insert_with(|| ChannelHistory::new(&self.clock, now));
        if entry.expires_at <= now {
            *entry = ChannelHistory::new(&self.clock, now);
        }
        entry
    }

    /// The live history of a channel, if it has one.
    fn live(&self, channel: &ChannelName, now: Instant) -> Option<&ChannelHistory> {
        self.channels
            .get(channel)
            .filter(|history| history.expires_at > now)
    }

    /// What a read answers for a channel with no history state.
    fn unpublished(&self, now: Instant) -> Position {
        Position::unpublished(self.clock.millis(now), &self.clock.source)
    }

    /// What a retry with a live key gets, taking over a claim it is to send; `None` when
    /// the key is new (or expired).
    fn duplicate(&mut self, key: &IdempotencyKey, now: Instant) -> Option<Duplicate> {
        let (claim, expires) = self.idempotency.get_mut(key)?;
        if *expires <= now {
            return None;
        }
        match claim {
            Claim::Broadcast(position) => Some(Duplicate::Sent(position.clone())),
            Claim::Held {
                publication,
                claimed_at,
            } => {
                if now.duration_since(*claimed_at) < IDEMPOTENCY_LEASE {
                    return Some(Duplicate::InFlight);
                }
                *claimed_at = now;
                Some(Duplicate::Unsent(publication.clone()))
            }
            Claim::Stored(position) => {
                let stored = self
                    .channels
                    .get(&key.0)
                    .filter(|history| history.expires_at > now && *history.epoch == *position.epoch)
                    .and_then(|history| {
                        history
                            .publications
                            .iter()
                            .find(|publication| publication.offset == position.offset)
                    });
                if let Some(publication) = stored {
                    return Some(Duplicate::Unsent(publication.clone()));
                }
                // Trimmed, expired or lost with its epoch: nothing is left to send.
                let position = position.clone();
                *claim = Claim::Broadcast(position.clone());
                Some(Duplicate::Sent(position))
            }
        }
    }

    fn sweep(&mut self, now: Instant) {
        self.channels.retain(|_, history| history.expires_at > now);
        while let Some(first) = self.idempotency_expiry.first() {
            if first.0 > now {
                break;
            }
            let (_, channel, key) = self.idempotency_expiry.pop_first().expect("not empty");
            let key = (channel, key);
            // The key may have been claimed again since, with a later expiry.
            if self
                .idempotency
                .get(&key)
                .is_some_and(|(_, expires)| *expires <= now)
            {
                self.idempotency.remove(&key);
            }
        }
    }
}

/// State held in this process. Cheap to clone.
#[derive(Clone, Default)]
pub struct MemoryState {
    inner: Arc<Mutex<Inner>>,
    /// Presence, status and typing (see `memory_presence.rs`).
    pub(super) presence: Arc<Mutex<super::memory_presence::PresenceMaps>>,
}

impl MemoryState {
    /// Creates the state and starts its sweeper (which ends when the state is dropped).
    pub fn new() -> Self {
        let state = Self::default();
        let weak = Arc::downgrade(&state.inner);
        tokio::spawn(sweep(weak));
        state
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that
        // matters more than losing the node, so a poisoned lock is used as is.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

async fn sweep(inner: Weak<Mutex<Inner>>) {
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        isolated_sync("memory state sweep", || {
            inner
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .sweep(Instant::now());
        });
    }
}

#[async_trait]
impl State for MemoryState {
    async fn append(&self, append: Append<'_>) -> Result<Appended, StateError> {
        let now = Instant::now();
        let mut inner = self.lock();
        let mut publication = append.publication;
        let channel = publication.channel.clone();
        let key = append
            .idempotency_key
            .map(|key| (channel.clone(), Box::from(key)));
        if let Some(key) = &key
            && let Some(duplicate) = inner.duplicate(key, now)
        {
            return Ok(Appended::Duplicate(duplicate));
        }
        let claim = match append.history {
            None => Claim::Held {
                publication: publication.clone(),
                claimed_at: now,
            },
            Some(policy) => {
                let history = inner.channel(&channel, now);
                history.offset += 1;
                publication.offset = history.offset;
                publication.epoch = history.epoch.clone();
                history.publications.push_back(publication.clone());
                while history.publications.len() > policy.size {
                    history.publications.pop_front();
                }
                history.expires_at = now + policy.ttl;
                Claim::Stored(history.position())
            }
        };
        if let Some((channel, key)) = key {
            let expires = now + IDEMPOTENCY_WINDOW;
            inner
                .idempotency_expiry
                .insert((expires, channel.clone(), key.clone()));
            inner.idempotency.insert((channel, key), (claim, expires));
        }
        Ok(Appended::New(publication))
    }

    async fn settle(
        &self,
        channel: &ChannelName,
        key: &str,
        settlement: Settlement,
    ) -> Result<(), StateError> {
        let now = Instant::now();
        let mut inner = self.lock();
        let key = (channel.clone(), Box::from(key));
        let Some((claim, expires)) = inner.idempotency.get_mut(&key) else {
            return Ok(());
        };
        if *expires <= now || matches!(claim, Claim::Broadcast(_)) {
            return Ok(());
        }
        match settlement {
            Settlement::Broadcast(position) => *claim = Claim::Broadcast(position),
            Settlement::Release => {
                inner.idempotency.remove(&key);
            }
        }
        Ok(())
    }

    async fn history(
        &self,
        channel: &ChannelName,
        since_offset: u64,
        limit: usize,
    ) -> Result<HistorySlice, StateError> {
        let now = Instant::now();
        let inner = self.lock();
        let Some(history) = inner.live(channel, now) else {
            return Ok(HistorySlice {
                publications: Vec::new(),
                position: inner.unpublished(now),
            });
        };
        let publications = history
            .publications
            .iter()
            .filter(|publication| publication.offset > since_offset)
            .take(limit)
            .cloned()
            .collect();
        Ok(HistorySlice {
            publications,
            position: history.position(),
        })
    }

    async fn position(&self, channel: &ChannelName) -> Result<Position, StateError> {
        let now = Instant::now();
        let inner = self.lock();
        Ok(inner
            .live(channel, now)
            .map_or_else(|| inner.unpublished(now), ChannelHistory::position))
    }

    async fn positions(
        &self,
        channels: &[ChannelName],
    ) -> Result<Vec<Option<Position>>, StateError> {
        let inner = self.lock();
        let now = Instant::now();
        Ok(channels
            .iter()
            .map(|channel| inner.live(channel, now).map(ChannelHistory::position))
            .collect())
    }

    fn is_healthy(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::HistoryPolicy;

    fn publication(channel: &str, n: u32) -> Publication {
        Publication {
            channel: ChannelName::parse(channel).unwrap(),
            event: Arc::from("e"),
            data: Arc::from(serde_json::value::RawValue::from_string(n.to_string()).unwrap()),
            offset: 0,
            epoch: Arc::from(""),
            ts: 0,
            from: None,
        }
    }

    fn policy(size: usize) -> Option<HistoryPolicy> {
        Some(HistoryPolicy {
            size,
            ttl: Duration::from_secs(60),
        })
    }

    async fn append(state: &MemoryState, n: u32, key: Option<&str>) -> Appended {
        let append = Append {
            publication: publication("org:a:b", n),
            history: policy(3),
            idempotency_key: key,
        };
        state.append(append).await.unwrap()
    }

    #[tokio::test]
    async fn offsets_are_contiguous_and_history_is_capped() {
        let state = MemoryState::new();
        for n in 1..=5 {
            let Appended::New(publication) = append(&state, n, None).await else {
                panic!("new")
            };
            assert_eq!(publication.offset, u64::from(n));
        }
        let channel = ChannelName::parse("org:a:b").unwrap();
        let slice = state.history(&channel, 0, 100).await.unwrap();
        let offsets: Vec<u64> = slice.publications.iter().map(|p| p.offset).collect();
        assert_eq!(offsets, vec![3, 4, 5]);
        assert_eq!(slice.position.offset, 5);
        let slice = state.history(&channel, 3, 1).await.unwrap();
        assert_eq!(slice.publications[0].offset, 4);
        assert_eq!(slice.publications.len(), 1);
    }

    fn data(publication: &Publication) -> &str {
        publication.data.get()
    }

    #[tokio::test]
    async fn a_retry_answers_the_first_position_once_it_was_broadcast() {
        let state = MemoryState::new();
        let Appended::New(first) = append(&state, 1, Some("k")).await else {
            panic!("new")
        };
        // Not settled yet (its node failed, or never saw the reply): the retry gets the
        // stored publication to send, and takes no new offset.
        let Appended::Duplicate(Duplicate::Unsent(again)) = append(&state, 2, Some("k")).await
        else {
            panic!("unsent")
        };
        assert_eq!(
            (again.offset, &again.epoch, data(&again)),
            (1, &first.epoch, "1")
        );
        let position = Position {
            offset: first.offset,
            epoch: first.epoch.clone(),
        };
        state
            .settle(&first.channel, "k", Settlement::Broadcast(position.clone()))
            .await
            .unwrap();
        let Appended::Duplicate(Duplicate::Sent(sent)) = append(&state, 3, Some("k")).await else {
            panic!("sent")
        };
        assert_eq!(sent, position);
        // A release after the broadcast was recorded changes nothing.
        state
            .settle(&first.channel, "k", Settlement::Release)
            .await
            .unwrap();
        let Appended::Duplicate(Duplicate::Sent(sent)) = append(&state, 4, Some("k")).await else {
            panic!("still sent")
        };
        assert_eq!(sent, position);
        let Appended::New(other) = append(&state, 5, Some("k2")).await else {
            panic!("new")
        };
        assert_eq!(other.offset, 2);
    }

    #[tokio::test]
    async fn a_claim_whose_publication_left_history_answers_its_position() {
        let state = MemoryState::new();
        let Appended::New(first) = append(&state, 1, Some("k")).await else {
            panic!("new")
        };
        for n in 2..=4 {
            append(&state, n, None).await;
        }
        let Appended::Duplicate(Duplicate::Sent(position)) = append(&state, 9, Some("k")).await
        else {
            panic!("trimmed away: nothing to send")
        };
        assert_eq!((position.offset, &*position.epoch), (1, &*first.epoch));
    }

    #[tokio::test(start_paused = true)]
    async fn without_history_a_claim_is_leased_then_sent_by_a_retry_or_released() {
        let state = MemoryState::new();
        let ephemeral = |n| Append {
            publication: publication("org:a:typing", n),
            history: None,
            idempotency_key: Some("e"),
        };
        let Appended::New(first) = state.append(ephemeral(1)).await.unwrap() else {
            panic!("new")
        };
        assert_eq!((first.offset, &*first.epoch), (0, ""));
        // The first publish may still be sending it: sending it too could deliver it twice.
        let retry = state.append(ephemeral(2)).await.unwrap();
        assert!(
            matches!(retry, Appended::Duplicate(Duplicate::InFlight)),
            "{retry:?}"
        );
        tokio::time::advance(IDEMPOTENCY_LEASE).await;
        let Appended::Duplicate(Duplicate::Unsent(held)) =
            state.append(ephemeral(3)).await.unwrap()
        else {
            panic!("unsent after the lease")
        };
        assert_eq!(data(&held), "1", "the first publication, not the retry's");
        // The retry now holds the claim, with a lease of its own.
        let retry = state.append(ephemeral(4)).await.unwrap();
        assert!(
            matches!(retry, Appended::Duplicate(Duplicate::InFlight)),
            "{retry:?}"
        );

        // Its broadcast failed: released, the next retry is a new publish.
        state
            .settle(&first.channel, "e", Settlement::Release)
            .await
            .unwrap();
        let Appended::New(fresh) = state.append(ephemeral(5)).await.unwrap() else {
            panic!("new after a release")
        };
        assert_eq!(data(&fresh), "5");
        state
            .settle(
                &first.channel,
                "e",
                Settlement::Broadcast(Position::default()),
            )
            .await
            .unwrap();
        let Appended::Duplicate(Duplicate::Sent(position)) =
            state.append(ephemeral(6)).await.unwrap()
        else {
            panic!("sent")
        };
        assert_eq!(position, Position::default());
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_claimed_again_after_expiry_outlives_the_old_expiry() {
        // No background sweeper: this test sweeps when it means to.
        let state = MemoryState::default();
        append(&state, 1, Some("k")).await;
        tokio::time::advance(IDEMPOTENCY_WINDOW).await;
        let Appended::New(second) = append(&state, 2, Some("k")).await else {
            panic!("expired: new")
        };
        // The sweeper meets the first claim's expiry; the second claim must survive it.
        state.lock().sweep(Instant::now());
        let Appended::Duplicate(Duplicate::Unsent(again)) = append(&state, 3, Some("k")).await
        else {
            panic!("the second claim is remembered")
        };
        assert_eq!(again.offset, second.offset);
    }

    #[tokio::test(start_paused = true)]
    async fn expired_history_gets_a_new_epoch() {
        let state = MemoryState::new();
        let channel = ChannelName::parse("org:a:b").unwrap();
        append(&state, 1, None).await;
        let before = state.position(&channel).await.unwrap();
        tokio::time::advance(Duration::from_secs(61)).await;
        let after = state.position(&channel).await.unwrap();
        assert_eq!(after.offset, 0);
        assert!(crate::state::is_unpublished(&after.epoch), "{after:?}");
        let Appended::New(next) = append(&state, 2, None).await else {
            panic!("new")
        };
        assert_eq!(next.offset, 1);
        assert_ne!(*next.epoch, *before.epoch);
    }

    #[tokio::test]
    async fn reads_of_unknown_channels_leave_no_state() {
        let state = MemoryState::new();
        for n in 0..1_000 {
            let channel = ChannelName::parse(&format!("user:me:{}", random_token(12))).unwrap();
            let slice = state.history(&channel, n % 3, 10).await.unwrap();
            assert!(slice.publications.is_empty());
            assert_eq!(slice.position.offset, 0);
            assert!(crate::state::is_unpublished(&slice.position.epoch));
            let position = state.position(&channel).await.unwrap();
            assert!(crate::state::is_unpublished(&position.epoch));
            assert_eq!(state.positions(&[channel]).await.unwrap(), vec![None]);
        }
        assert_eq!(
            state.lock().channels.len(),
            0,
            "no channel entry written by a read"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_before_the_first_publication_recovers_it() {
        let state = MemoryState::new();
        let channel = ChannelName::parse("org:a:b").unwrap();
        let read = state.position(&channel).await.unwrap();
        tokio::time::advance(Duration::from_secs(10)).await;
        let Appended::New(first) = append(&state, 1, None).await else {
            panic!("new")
        };
        let ttl = Duration::from_secs(60);
        assert!(crate::state::unpublished_recovers(
            &read.epoch,
            &first.epoch,
            ttl
        ));
        // A restarted node (another state) never matches a read of the one before.
        let restarted = MemoryState::new();
        let Appended::New(other) = append(&restarted, 1, None).await else {
            panic!("new")
        };
        assert!(!crate::state::unpublished_recovers(
            &read.epoch,
            &other.epoch,
            ttl
        ));
    }
}
