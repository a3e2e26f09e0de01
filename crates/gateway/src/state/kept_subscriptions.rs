//! Server-side subscriptions kept per user (gRPC `Subscribe` without a client), so a user's
//! reconnecting connections are put back in them. In memory for a standalone node; one Redis
//! set per user in a cluster. Each user's set expires `ttl` after its last change or read
//! (a `Subscribe`, or a connect of the user), so users who never come back cost nothing.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use fred::prelude::{KeysInterface, SetsInterface};
use herald_protocol::ChannelName;

use super::StateError;
use super::redis::{RedisState, timed, unavailable};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kept {
    Added,
    /// The user already has this many kept subscriptions.
    Full,
}

#[async_trait]
pub trait KeptSubscriptions: Send + Sync + 'static {
    /// Keeps `channel` for `user` (unless the user already keeps `max` others) and moves
    /// the expiry of all of the user's to `ttl` from now.
    async fn keep(
        &self,
        user: &str,
        channel: &ChannelName,
        max: usize,
        ttl: Duration,
    ) -> Result<Kept, StateError>;

    async fn forget(&self, user: &str, channel: &ChannelName) -> Result<(), StateError>;

    /// The user's kept subscriptions, their expiry moved to `ttl` from now.
    async fn kept(&self, user: &str, ttl: Duration) -> Result<Vec<ChannelName>, StateError>;
}

/// Each user's kept channels and when they expire.
type Users = HashMap<Box<str>, (Instant, BTreeSet<ChannelName>)>;

/// The standalone store.
#[derive(Default, Clone)]
pub struct MemoryKept {
    users: Arc<Mutex<Users>>,
}

/// Above this many users, each `keep` first drops the expired ones (there is no sweeper).
const PRUNE_ABOVE: usize = 1024;

impl MemoryKept {
    fn lock(&self) -> std::sync::MutexGuard<'_, Users> {
        self.users
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl KeptSubscriptions for MemoryKept {
    async fn keep(
        &self,
        user: &str,
        channel: &ChannelName,
        max: usize,
        ttl: Duration,
    ) -> Result<Kept, StateError> {
        let now = Instant::now();
        let mut users = self.lock();
        if users.len() > PRUNE_ABOVE {
            users.retain(|_, (expires, _)| *expires > now);
        }
        let (expires, channels) = users
            .entry(Box::from(user))
            .or_insert_with(|| (now, BTreeSet::new()));
        if *expires <= now {
            channels.clear();
        }
        *expires = now + ttl;
        if !channels.contains(channel) && channels.len() >= max {
            return Ok(Kept::Full);
        }
        channels.insert(channel.clone());
        Ok(Kept::Added)
    }

    async fn forget(&self, user: &str, channel: &ChannelName) -> Result<(), StateError> {
        let mut users = self.lock();
        if let Some((_, channels)) = users.get_mut(user) {
            channels.remove(channel);
            if channels.is_empty() {
                users.remove(user);
            }
        }
        Ok(())
    }

    async fn kept(&self, user: &str, ttl: Duration) -> Result<Vec<ChannelName>, StateError> {
        let now = Instant::now();
        let mut users = self.lock();
        let Some((expires, channels)) = users.get_mut(user) else {
            return Ok(vec![]);
        };
        if *expires <= now {
            users.remove(user);
            return Ok(vec![]);
        }
        *expires = now + ttl;
        Ok(channels.iter().cloned().collect())
    }
}

fn key(user: &str) -> String {
    format!("herald:user:{{{user}}}:subs")
}

fn seconds(ttl: Duration) -> i64 {
    ttl.as_secs().max(1) as i64
}

#[async_trait]
impl KeptSubscriptions for RedisState {
    async fn keep(
        &self,
        user: &str,
        channel: &ChannelName,
        max: usize,
        ttl: Duration,
    ) -> Result<Kept, StateError> {
        timed("kept_keep", async {
            let key = key(user);
            let commands = self.commands();
            let kept: bool = commands
                .sismember(&key, channel.as_str())
                .await
                .map_err(unavailable)?;
            let count: usize = commands.scard(&key).await.map_err(unavailable)?;
            // Not atomic with the add: two concurrent Subscribes may pass `max` by one,
            // which only bounds a backend's own calls.
            if !kept && count >= max {
                let _: () = commands
                    .expire(&key, seconds(ttl), None)
                    .await
                    .map_err(unavailable)?;
                return Ok(Kept::Full);
            }
            let _: () = commands
                .sadd(&key, channel.as_str())
                .await
                .map_err(unavailable)?;
            let _: () = commands
                .expire(&key, seconds(ttl), None)
                .await
                .map_err(unavailable)?;
            Ok(Kept::Added)
        })
        .await
    }

    async fn forget(&self, user: &str, channel: &ChannelName) -> Result<(), StateError> {
        timed("kept_forget", async {
            let _: () = self
                .commands()
                .srem(key(user), channel.as_str())
                .await
                .map_err(unavailable)?;
            Ok(())
        })
        .await
    }

    async fn kept(&self, user: &str, ttl: Duration) -> Result<Vec<ChannelName>, StateError> {
        timed("kept_list", async {
            let key = key(user);
            let commands = self.commands();
            let names: Vec<String> = commands.smembers(&key).await.map_err(unavailable)?;
            if names.is_empty() {
                return Ok(vec![]);
            }
            let _: () = commands
                .expire(&key, seconds(ttl), None)
                .await
                .map_err(unavailable)?;
            // Only names Herald wrote are in the set; one that no longer parses is skipped.
            Ok(names
                .iter()
                .filter_map(|name| ChannelName::parse(name).ok())
                .collect())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(name: &str) -> ChannelName {
        ChannelName::parse(name).unwrap()
    }

    #[tokio::test]
    async fn memory_keeps_up_to_max_and_expires() {
        let store = MemoryKept::default();
        let ttl = Duration::from_secs(60);
        assert_eq!(
            store.keep("u", &channel("a:1"), 2, ttl).await.unwrap(),
            Kept::Added
        );
        assert_eq!(
            store.keep("u", &channel("a:2"), 2, ttl).await.unwrap(),
            Kept::Added
        );
        assert_eq!(
            store.keep("u", &channel("a:1"), 2, ttl).await.unwrap(),
            Kept::Added,
            "keeping one already kept is not a new one"
        );
        assert_eq!(
            store.keep("u", &channel("a:3"), 2, ttl).await.unwrap(),
            Kept::Full
        );
        store.forget("u", &channel("a:1")).await.unwrap();
        assert_eq!(store.kept("u", ttl).await.unwrap(), vec![channel("a:2")]);
        assert!(store.kept("other", ttl).await.unwrap().is_empty());

        store
            .keep("v", &channel("a:1"), 2, Duration::ZERO)
            .await
            .unwrap();
        assert!(
            store.kept("v", ttl).await.unwrap().is_empty(),
            "an expired user's subscriptions are gone"
        );
    }
}
