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

use super::{Append, Appended, HistorySlice, IDEMPOTENCY_WINDOW, Position, State, StateError};
use crate::config::random_token;

const SWEEP_INTERVAL: Duration = Duration::from_secs(5);

struct ChannelHistory {
    epoch: Arc<str>,
    offset: u64,
    publications: VecDeque<Publication>,
    expires_at: Instant,
}

impl ChannelHistory {
    fn new() -> Self {
        Self {
            epoch: Arc::from(random_token(8)),
            offset: 0,
            publications: VecDeque::new(),
            expires_at: Instant::now() + Duration::from_secs(3600),
        }
    }

    fn position(&self) -> Position {
        Position {
            offset: self.offset,
            epoch: self.epoch.to_string(),
        }
    }
}

#[derive(Default)]
struct Inner {
    channels: HashMap<ChannelName, ChannelHistory>,
    idempotency: HashMap<(ChannelName, Box<str>), (Position, Instant)>,
    /// (expiry, key) so the sweeper finds expired idempotency keys without a full scan.
    idempotency_expiry: BTreeSet<(Instant, ChannelName, Box<str>)>,
}

impl Inner {
    /// The live history of a channel, created (with a new epoch) when missing or expired.
    fn channel(&mut self, channel: &ChannelName, now: Instant) -> &mut ChannelHistory {
        let entry = self
            .channels
            .entry(channel.clone())
            .or_insert_with(ChannelHistory::new);
        if entry.expires_at <= now {
            *entry = ChannelHistory::new();
        }
        entry
    }

    fn sweep(&mut self, now: Instant) {
        self.channels.retain(|_, history| history.expires_at > now);
        while let Some(first) = self.idempotency_expiry.first() {
            if first.0 > now {
                break;
            }
            let (_, channel, key) = self.idempotency_expiry.pop_first().expect("not empty");
            self.idempotency.remove(&(channel, key));
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
        inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .sweep(Instant::now());
    }
}

#[async_trait]
impl State for MemoryState {
    async fn append(&self, append: Append<'_>) -> Result<Appended, StateError> {
        let now = Instant::now();
        let mut inner = self.lock();
        let mut publication = append.publication;
        let channel = publication.channel.clone();
        if let Some(key) = append.idempotency_key
            && let Some((position, expires)) =
                inner.idempotency.get(&(channel.clone(), Box::from(key)))
            && *expires > now
        {
            return Ok(Appended::Duplicate(position.clone()));
        }
        let position = match append.history {
            None => Position::default(),
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
                history.position()
            }
        };
        if let Some(key) = append.idempotency_key {
            let expires = now + IDEMPOTENCY_WINDOW;
            inner
                .idempotency
                .insert((channel.clone(), Box::from(key)), (position, expires));
            inner
                .idempotency_expiry
                .insert((expires, channel, Box::from(key)));
        }
        Ok(Appended::New(publication))
    }

    async fn history(
        &self,
        channel: &ChannelName,
        since_offset: u64,
        limit: usize,
    ) -> Result<HistorySlice, StateError> {
        let mut inner = self.lock();
        let history = inner.channel(channel, Instant::now());
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
        Ok(self.lock().channel(channel, Instant::now()).position())
    }

    async fn positions(
        &self,
        channels: &[ChannelName],
    ) -> Result<Vec<Option<Position>>, StateError> {
        let inner = self.lock();
        let now = Instant::now();
        Ok(channels
            .iter()
            .map(|channel| {
                inner
                    .channels
                    .get(channel)
                    .filter(|history| history.expires_at > now)
                    .map(ChannelHistory::position)
            })
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

    #[tokio::test]
    async fn idempotency_key_returns_first_position() {
        let state = MemoryState::new();
        let Appended::New(first) = append(&state, 1, Some("k")).await else {
            panic!("new")
        };
        let Appended::Duplicate(position) = append(&state, 2, Some("k")).await else {
            panic!("duplicate")
        };
        assert_eq!(position.offset, first.offset);
        assert_eq!(position.epoch, &*first.epoch);
        let Appended::New(other) = append(&state, 3, Some("k2")).await else {
            panic!("new")
        };
        assert_eq!(other.offset, 2);
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
        assert_ne!(after.epoch, before.epoch);
    }
}
