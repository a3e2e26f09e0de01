//! Presence, status and typing for a standalone node: maps under one mutex, never held
//! across an `.await`. Expiry times are wall-clock Unix milliseconds, as in Redis, so both
//! implementations behave alike; the node's sweeper removes what expired.

use std::collections::HashMap;
use std::sync::{Arc, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use herald_protocol::ChannelName;
use serde_json::value::RawValue;

use super::presence::{
    Expired, LiveConnection, Member, Presence, Restored, Status, StatusChange, TYPING_TTL, Typer,
    UserStatus,
};
use super::{MemoryState, StateError};
use crate::clock::unix_millis;

#[derive(Default)]
pub(super) struct PresenceMaps {
    /// channel → connection id → (member, expiry).
    channels: HashMap<ChannelName, HashMap<Arc<str>, (Member, i64)>>,
    /// org → user → connections and status.
    orgs: HashMap<Arc<str>, HashMap<Arc<str>, UserEntry>>,
    /// channel → user → (typer, expiry).
    typing: HashMap<ChannelName, HashMap<Arc<str>, (Typer, i64)>>,
}

/// How long an offline user's last-seen time is kept (as the Redis state's `seen` hash).
const LAST_SEEN_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

struct UserEntry {
    /// Connection id → expiry.
    connections: HashMap<Arc<str>, i64>,
    status: Status,
    last_seen: i64,
}

impl UserEntry {
    fn is_online(&self, now: i64) -> bool {
        self.connections.values().any(|expiry| *expiry > now)
    }

    fn read(&self, user: &Arc<str>, now: i64) -> UserStatus {
        if self.is_online(now) {
            UserStatus {
                user: user.clone(),
                status: self.status,
                last_seen: 0,
            }
        } else {
            UserStatus {
                user: user.clone(),
                status: Status::Offline,
                last_seen: self.last_seen,
            }
        }
    }
}

fn expiry(now: i64, ttl: Duration) -> i64 {
    now + ttl.as_millis() as i64
}

/// The status the user set through this node in `org`, if any.
fn known_status(connection: &LiveConnection, org: &str) -> Option<Status> {
    connection
        .statuses
        .iter()
        .find(|(known, _)| &**known == org)
        .map(|(_, status)| *status)
}

fn change(org: &str, user: &Arc<str>, status: Status, last_seen: i64) -> StatusChange {
    StatusChange {
        org: Arc::from(org),
        status: UserStatus {
            user: user.clone(),
            status,
            last_seen,
        },
    }
}

impl MemoryState {
    fn presence(&self) -> MutexGuard<'_, PresenceMaps> {
        // As with the history map: a poisoned lock is used as is.
        self.presence
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl Presence for MemoryState {
    async fn join_counted(
        &self,
        channel: &ChannelName,
        member: &Member,
        ttl: Duration,
    ) -> Result<Option<u64>, StateError> {
        let now = unix_millis();
        let mut maps = self.presence();
        let members = maps.channels.entry(channel.clone()).or_default();
        match members.get_mut(&member.client) {
            Some((_, expires)) if *expires > now => Ok(None),
            _ => {
                members.insert(member.client.clone(), (member.clone(), expiry(now, ttl)));
                // Entries expired but not swept yet count too: a threshold needs no more.
                Ok(Some(members.len() as u64))
            }
        }
    }

    async fn leave_counted(
        &self,
        channel: &ChannelName,
        client: &str,
    ) -> Result<Option<(Member, u64)>, StateError> {
        let mut maps = self.presence();
        let Some(members) = maps.channels.get_mut(channel) else {
            return Ok(None);
        };
        let left = members.remove(client).map(|(member, _)| member);
        let count = members.len() as u64;
        if members.is_empty() {
            maps.channels.remove(channel);
        }
        Ok(left.map(|member| (member, count)))
    }

    async fn set_state(
        &self,
        channel: &ChannelName,
        client: &str,
        state: Option<Arc<RawValue>>,
    ) -> Result<Option<u64>, StateError> {
        let now = unix_millis();
        let mut maps = self.presence();
        let Some(members) = maps.channels.get_mut(channel) else {
            return Ok(None);
        };
        match members.get_mut(client) {
            Some((member, expires)) if *expires > now => member.state = state,
            _ => return Ok(None),
        }
        Ok(Some(members.len() as u64))
    }

    async fn members(&self, channel: &ChannelName) -> Result<Vec<Member>, StateError> {
        let now = unix_millis();
        let maps = self.presence();
        let mut members: Vec<Member> = maps
            .channels
            .get(channel)
            .into_iter()
            .flat_map(|members| members.values())
            .filter(|(_, expires)| *expires > now)
            .map(|(member, _)| member.clone())
            .collect();
        members.sort_by(|a, b| (a.joined_at, &a.client).cmp(&(b.joined_at, &b.client)));
        Ok(members)
    }

    async fn connected(
        &self,
        org: &str,
        user: &str,
        client: &str,
        ttl: Duration,
    ) -> Result<Option<StatusChange>, StateError> {
        let now = unix_millis();
        let mut maps = self.presence();
        let user: Arc<str> = Arc::from(user);
        let entry = maps
            .orgs
            .entry(Arc::from(org))
            .or_default()
            .entry(user.clone())
            .or_insert_with(|| UserEntry {
                connections: HashMap::new(),
                status: Status::Online,
                last_seen: 0,
            });
        entry.connections.retain(|_, expires| *expires > now);
        let first = entry.connections.is_empty();
        entry
            .connections
            .insert(Arc::from(client), expiry(now, ttl));
        if !first {
            return Ok(None);
        }
        entry.status = Status::Online;
        Ok(Some(change(org, &user, Status::Online, 0)))
    }

    async fn disconnected(
        &self,
        org: &str,
        user: &str,
        client: &str,
    ) -> Result<Option<StatusChange>, StateError> {
        let now = unix_millis();
        let mut maps = self.presence();
        let Some(entry) = maps.orgs.get_mut(org).and_then(|users| users.get_mut(user)) else {
            return Ok(None);
        };
        if entry.connections.remove(client).is_none() {
            return Ok(None);
        }
        entry.connections.retain(|_, expires| *expires > now);
        if !entry.connections.is_empty() {
            return Ok(None);
        }
        entry.last_seen = now;
        Ok(Some(change(org, &Arc::from(user), Status::Offline, now)))
    }

    async fn set_status(
        &self,
        org: &str,
        user: &str,
        client: &str,
        status: Status,
        ttl: Duration,
    ) -> Result<Option<StatusChange>, StateError> {
        if status == Status::Offline {
            return Ok(None);
        }
        let now = unix_millis();
        let mut maps = self.presence();
        let user: Arc<str> = Arc::from(user);
        let entry = maps
            .orgs
            .entry(Arc::from(org))
            .or_default()
            .entry(user.clone())
            .or_insert_with(|| UserEntry {
                connections: HashMap::new(),
                status: Status::Online,
                last_seen: 0,
            });
        if !entry.is_online(now) {
            // The caller's connection is live: count it again, as in Redis.
            entry.connections.retain(|_, expires| *expires > now);
            entry
                .connections
                .insert(Arc::from(client), expiry(now, ttl));
        } else if entry.status == status {
            return Ok(None);
        }
        entry.status = status;
        Ok(Some(change(org, &user, status, 0)))
    }

    async fn statuses(&self, org: &str, users: &[Arc<str>]) -> Result<Vec<UserStatus>, StateError> {
        let now = unix_millis();
        let maps = self.presence();
        let known = maps.orgs.get(org);
        Ok(users
            .iter()
            .map(|user| match known.and_then(|users| users.get(user)) {
                Some(entry) => entry.read(user, now),
                None => UserStatus {
                    user: user.clone(),
                    status: Status::Offline,
                    last_seen: 0,
                },
            })
            .collect())
    }

    async fn start_typing(&self, channel: &ChannelName, typer: &Typer) -> Result<(), StateError> {
        let now = unix_millis();
        self.presence()
            .typing
            .entry(channel.clone())
            .or_default()
            .insert(typer.user.clone(), (typer.clone(), expiry(now, TYPING_TTL)));
        Ok(())
    }

    async fn stop_typing(&self, channel: &ChannelName, user: &str) -> Result<bool, StateError> {
        let now = unix_millis();
        let mut maps = self.presence();
        let Some(typers) = maps.typing.get_mut(channel) else {
            return Ok(false);
        };
        let was_typing = typers
            .remove(user)
            .is_some_and(|(_, expires)| expires > now);
        if typers.is_empty() {
            maps.typing.remove(channel);
        }
        Ok(was_typing)
    }

    async fn typers(&self, channel: &ChannelName) -> Result<Vec<Typer>, StateError> {
        let now = unix_millis();
        Ok(self
            .presence()
            .typing
            .get(channel)
            .into_iter()
            .flat_map(|typers| typers.values())
            .filter(|(_, expires)| *expires > now)
            .map(|(typer, _)| typer.clone())
            .collect())
    }

    async fn refresh(
        &self,
        live: &[LiveConnection],
        ttl: Duration,
    ) -> Result<Restored, StateError> {
        let now = unix_millis();
        let expires = expiry(now, ttl);
        let mut maps = self.presence();
        let mut restored = Restored::default();
        for connection in live {
            for channel in &connection.channels {
                let members = maps.channels.entry(channel.clone()).or_default();
                match members.get_mut(&connection.client) {
                    Some((_, at)) => *at = expires,
                    None => {
                        let member = Member {
                            user: connection.user.clone(),
                            client: connection.client.clone(),
                            info: connection.info.clone(),
                            joined_at: now,
                            state: connection.state_in(channel.as_str()),
                        };
                        members.insert(connection.client.clone(), (member.clone(), expires));
                        restored.members.push((channel.clone(), member));
                    }
                }
            }
            for org in &connection.orgs {
                let entry = maps
                    .orgs
                    .entry(org.clone())
                    .or_default()
                    .entry(connection.user.clone())
                    .or_insert_with(|| UserEntry {
                        connections: HashMap::new(),
                        status: Status::Online,
                        last_seen: 0,
                    });
                if let Some(at) = entry.connections.get_mut(&connection.client) {
                    *at = expires;
                    continue;
                }
                let was_online = entry.is_online(now);
                entry.connections.insert(connection.client.clone(), expires);
                restored.connections.push((
                    org.clone(),
                    connection.user.clone(),
                    connection.client.clone(),
                ));
                if !was_online {
                    entry.status = known_status(connection, org).unwrap_or(Status::Online);
                    restored
                        .statuses
                        .push(change(org, &connection.user, entry.status, 0));
                }
            }
        }
        Ok(restored)
    }

    async fn sweep(&self, _node_id: &str) -> Result<Vec<Expired>, StateError> {
        let now = unix_millis();
        let mut maps = self.presence();
        let mut expired = Vec::new();
        maps.channels.retain(|channel, members| {
            members.retain(|_, (member, expires)| {
                let live = *expires > now;
                if !live {
                    expired.push(Expired::Left {
                        channel: channel.clone(),
                        member: member.clone(),
                    });
                }
                live
            });
            !members.is_empty()
        });
        let forget_before = now - LAST_SEEN_RETENTION.as_millis() as i64;
        for (org, users) in &mut maps.orgs {
            // Offline users are kept for their last-seen time only as long as Redis keeps it.
            users.retain(|_, entry| {
                !entry.connections.is_empty() || entry.last_seen >= forget_before
            });
            for (user, entry) in users.iter_mut() {
                let before = entry.connections.len();
                let last = entry.connections.values().copied().max().unwrap_or(now);
                entry.connections.retain(|_, expires| *expires > now);
                if before > 0 && entry.connections.is_empty() {
                    entry.last_seen = last.min(now);
                    expired.push(Expired::Offline(change(
                        org,
                        user,
                        Status::Offline,
                        entry.last_seen,
                    )));
                }
            }
        }
        maps.orgs.retain(|_, users| !users.is_empty());
        maps.typing.retain(|_, typers| {
            typers.retain(|_, (_, expires)| *expires > now);
            !typers.is_empty()
        });
        Ok(expired)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(60);

    fn live(client: &str, user: &str, status: Option<Status>) -> LiveConnection {
        LiveConnection {
            client: Arc::from(client),
            user: Arc::from(user),
            info: None,
            channels: vec![ChannelName::parse("org:acme:ch:general").unwrap()],
            states: Vec::new(),
            orgs: vec![Arc::from("acme")],
            statuses: status.map(|s| (Arc::from("acme"), s)).into_iter().collect(),
        }
    }

    #[tokio::test]
    async fn offline_users_are_forgotten_after_the_last_seen_retention() {
        let state = MemoryState::new();
        for user in ["alice", "bob"] {
            state.connected("acme", user, user, TTL).await.unwrap();
            state.disconnected("acme", user, user).await.unwrap();
        }
        // Bob went offline longer ago than the retention.
        let long_ago = unix_millis() - LAST_SEEN_RETENTION.as_millis() as i64 - 1;
        state
            .presence()
            .orgs
            .get_mut("acme")
            .unwrap()
            .get_mut("bob")
            .unwrap()
            .last_seen = long_ago;
        state.sweep("n1").await.unwrap();
        let users: Vec<String> = state.presence().orgs["acme"]
            .keys()
            .map(|user| user.to_string())
            .collect();
        assert_eq!(users, vec!["alice"]);

        state
            .presence()
            .orgs
            .get_mut("acme")
            .unwrap()
            .get_mut("alice")
            .unwrap()
            .last_seen = long_ago;
        state.sweep("n1").await.unwrap();
        assert!(
            state.presence().orgs.is_empty(),
            "an org without users is dropped"
        );
    }

    // As in Redis: a refresh re-creates what a live connection is missing, reported once.
    #[tokio::test]
    async fn a_refresh_recreates_missing_entries_once_with_the_known_status() {
        let state = MemoryState::new();
        let connections = [live("c1", "alice", Some(Status::Away))];
        let restored = state.refresh(&connections, TTL).await.unwrap();
        let members: Vec<(&str, &str)> = restored
            .members
            .iter()
            .map(|(channel, member)| (channel.as_str(), &*member.client))
            .collect();
        assert_eq!(members, vec![("org:acme:ch:general", "c1")]);
        assert_eq!(restored.connections.len(), 1);
        assert_eq!(
            restored.statuses,
            vec![change("acme", &Arc::from("alice"), Status::Away, 0)]
        );
        let channel = &connections[0].channels[0];
        assert_eq!(state.members(channel).await.unwrap().len(), 1);
        assert_eq!(
            state.statuses("acme", &[Arc::from("alice")]).await.unwrap()[0].status,
            Status::Away
        );
        assert!(state.refresh(&connections, TTL).await.unwrap().is_empty());
    }

    fn member(client: &str) -> Member {
        Member {
            user: Arc::from("alice"),
            client: Arc::from(client),
            info: None,
            joined_at: 1,
            state: None,
        }
    }

    #[tokio::test]
    async fn a_state_is_set_on_live_members_only_and_goes_with_the_entry() {
        let state = MemoryState::new();
        let channel = ChannelName::parse("org:acme:ch:general").unwrap();
        let mood: Arc<RawValue> = Arc::from(RawValue::from_string("\"ok\"".into()).unwrap());
        assert_eq!(
            state
                .set_state(&channel, "c1", Some(mood.clone()))
                .await
                .unwrap(),
            None,
            "not a member"
        );
        state.join(&channel, &member("c1"), TTL).await.unwrap();
        state.join(&channel, &member("c2"), TTL).await.unwrap();
        assert_eq!(
            state.set_state(&channel, "c1", Some(mood)).await.unwrap(),
            Some(2)
        );
        let members = state.members(&channel).await.unwrap();
        let states: Vec<Option<&str>> = members
            .iter()
            .map(|m| m.state.as_deref().map(RawValue::get))
            .collect();
        assert_eq!(states, [Some("\"ok\""), None]);
        state.set_state(&channel, "c1", None).await.unwrap();
        assert!(state.members(&channel).await.unwrap()[0].state.is_none());

        // An expired entry is no member to set a state on.
        state
            .presence()
            .channels
            .get_mut(&channel)
            .unwrap()
            .get_mut("c2")
            .unwrap()
            .1 = 0;
        assert_eq!(state.set_state(&channel, "c2", None).await.unwrap(), None);
    }

    // As in Redis: a re-created member comes back with the state its connection set.
    #[tokio::test]
    async fn a_refresh_recreates_a_member_with_its_state() {
        let state = MemoryState::new();
        let mut connection = live("c1", "alice", None);
        let channel = connection.channels[0].clone();
        let mood: Arc<RawValue> = Arc::from(RawValue::from_string("[1]".into()).unwrap());
        connection.states = vec![(channel.clone(), mood)];
        let restored = state.refresh(&[connection], TTL).await.unwrap();
        let restored_state = restored.members[0].1.state.as_deref().map(RawValue::get);
        assert_eq!(restored_state, Some("[1]"));
        let listed = state.members(&channel).await.unwrap();
        assert_eq!(listed[0].state.as_deref().map(RawValue::get), Some("[1]"));
    }

    #[tokio::test]
    async fn set_status_counts_an_uncounted_connection() {
        let state = MemoryState::new();
        let set = state
            .set_status("acme", "alice", "c1", Status::Busy, TTL)
            .await
            .unwrap();
        assert_eq!(
            set,
            Some(change("acme", &Arc::from("alice"), Status::Busy, 0))
        );
        assert_eq!(
            state.connected("acme", "alice", "c1", TTL).await.unwrap(),
            None,
            "c1 is counted"
        );
        assert_eq!(
            state
                .set_status("acme", "alice", "c1", Status::Busy, TTL)
                .await
                .unwrap(),
            None
        );
    }
}
