//! Presence, online status and typing in Redis: [`Presence`] for [`RedisState`].
//!
//! Keys. A channel's keys share its hash tag, an org's keys the org's, so every script
//! touches one Redis Cluster slot:
//! - `herald:{C}:members`: hash, connection id → [`Member`] as JSON;
//! - `herald:{C}:members:expiry`: sorted set, connection id → expiry (Unix ms);
//! - `herald:{C}:typers`: hash, user → [`Typer`] as JSON, and `herald:{C}:typers:expiry`,
//!   user → expiry; both keys expire with the last typer;
//! - `herald:org:{O}:conns:<user>`: sorted set, connection id → expiry: the user's
//!   connections counting towards being online in org `O`;
//! - `herald:org:{O}:users`: sorted set, user → a time at or before the earliest expiry of
//!   the user's connections (when the sweeper must look at the user again);
//! - `herald:org:{O}:status`: hash, user → status, for users with a live connection;
//! - `herald:org:{O}:seen`: hash, user → last seen (Unix ms), written when they go offline.
//!
//! A connection is live while its expiry is after now, as in memory. Each node refreshes
//! its own connections' expiries ([`Presence::refresh`]); the entries of a node that
//! stopped doing so expire, and are already left out of reads until the sweeper removes
//! them and reports them.
//!
//! Sweeping without SCAN. Two sweep indexes, `herald:presence:channels` (channel → due)
//! and `herald:presence:orgs` (org → due), hold for each channel and org with entries a
//! due time at or before the earliest expiry in it. Adding an entry lowers the due time
//! (`ZADD LT`); a refresh only pushes expiries later, so the due time stays early enough
//! and goes stale: the sweeper visits a channel whose due time passed, removes what
//! expired and moves the due time to the earliest remaining expiry, or removes the channel
//! from the index when it is empty. A live channel is so visited about once per TTL.
//!
//! The indexes are other slots than the channels' keys, so an index update cannot be in
//! the same script as the change it follows. Ordering makes up for it: a join updates the
//! index after its script added the member, and the sweeper removes an index entry only if
//! its score did not change since it read it, then looks at the channel once more and puts
//! the entry back if it has members. Whatever the interleaving, a channel with members ends
//! with an index entry. Refreshes also `ZADD LT` their channels and orgs to the index,
//! which restores an entry lost to a sweeper that died between the two steps. (Only with
//! TTLs that differ between calls can the sweeper move a due time past an entry added
//! meanwhile; that entry is then swept late, never lost. Herald uses one TTL.)
//!
//! A member's presence state (`setPresenceState`) is a field of its JSON, so it expires,
//! is refreshed and is removed with the entry; the node rewrites the JSON and `state` sets
//! it only if the entry is still the one read.
//!
//! Scripts (`lua/presence_*.lua`), each on one slot: `join`; `remove` (leave, stop typing);
//! `state` (a member's presence state, compare and set); `live` (members, typers);
//! `typing` (start); `connected`, `disconnected` and `status`, the atomic status
//! transitions; `statuses`; `sweep_channel` and `sweep_org`, which remove what expired and
//! return it; `settle`, the sweep index's compare-and-set; `unlock`. `refresh` is plain `ZADD XX CH` commands in one pipeline, one per key (the
//! connections of a channel on this node share one), plus one `ZADD LT` per sweep index.
//!
//! Healing. `CH` makes each `ZADD` answer how many entries it extended: fewer than sent
//! means Redis lost some (restart, FLUSHALL) or the sweeper removed them while their node
//! was cut off. Only then, `restore_members` and `restore_connections` (one per channel or
//! user with something missing, pipelined) re-create what is missing from the node's own
//! connections and return it, so each re-created entry is reported once; the channels and
//! orgs go back in the sweep indexes after them. `status` also counts its caller's
//! connection again when the user has none, so `setStatus` never silently does nothing.
//!
//! One sweeper at a time: `herald:presence:sweeper` is a lock (`SET NX PX`) holding the
//! node id; the others' `sweep` returns nothing. The lock saves work only: removing an
//! entry is one script, and whoever removes it reports it, so an entry is reported once
//! even if two sweeps overlap (a lock that expired mid-sweep, or `leave` racing the
//! sweeper).
//!
//! Expiries are the nodes' wall clocks (Unix ms passed to the scripts): node clocks must
//! agree to well within the TTL.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use fred::clients::{Pipeline, WithOptions};
use fred::prelude::{ClientLike, HashesInterface, KeysInterface, SortedSetsInterface, Value};
use fred::types::scripts::Script;
use fred::types::sorted_sets::Ordering as ZaddOrdering;
use fred::types::{ClusterHash, CustomCommand, Expiration, SetOptions};
use fred::util::redis_keyslot;
use herald_protocol::ChannelName;
use serde_json::value::RawValue;

use super::StateError;
use super::presence::{
    Expired, LiveConnection, Member, Presence, Restored, Status, StatusChange, TYPING_TTL, Typer,
    UserStatus,
};
use super::redis::{RedisState, array, malformed, millis, text, timed, unavailable};
use crate::clock::unix_millis;
use crate::random::random_token;

const CHANNELS_INDEX: &str = "herald:presence:channels";
const ORGS_INDEX: &str = "herald:presence:orgs";
const SWEEPER_LOCK: &str = "herald:presence:sweeper";
/// How long the sweeper lock lasts if its holder never releases it (a crash).
const SWEEPER_LOCK_TTL: Duration = Duration::from_secs(10);
/// A sweep stops starting new batches after this, well within the lock.
const SWEEP_BUDGET: Duration = Duration::from_secs(5);
/// Expiry of the sweep indexes, renewed by every write to them and every refresh: they only
/// outlive the presence they index if no node refreshes or joins for this long.
const INDEX_TTL: Duration = Duration::from_secs(3600);
/// How long a channel's or an org's presence keys outlive the latest entry refreshed in
/// them, in presence TTLs: time for the sweeper to report a stopped node's entries.
const KEY_TTLS: u32 = 3;
/// Due channels (or orgs) swept per pipeline.
const SWEEP_BATCH: i64 = 200;
/// Reads of a member's entry before setting its state gives up on an entry that keeps
/// changing.
const STATE_ATTEMPTS: usize = 3;
/// Entries one sweep script removes at most, so a script never blocks Redis for long; a
/// channel with more stays due and is visited again.
const SWEEP_SCRIPT_LIMIT: i64 = 1000;

struct Scripts {
    join: Script,
    remove: Script,
    leave: Script,
    state: Script,
    live: Script,
    typing: Script,
    connected: Script,
    disconnected: Script,
    status: Script,
    statuses: Script,
    sweep_channel: Script,
    sweep_org: Script,
    settle: Script,
    unlock: Script,
    restore_members: Script,
    restore_connections: Script,
}

static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    join: Script::from_lua(include_str!("lua/presence_join.lua")),
    remove: Script::from_lua(include_str!("lua/presence_remove.lua")),
    leave: Script::from_lua(include_str!("lua/presence_leave.lua")),
    state: Script::from_lua(include_str!("lua/presence_state.lua")),
    live: Script::from_lua(include_str!("lua/presence_live.lua")),
    typing: Script::from_lua(include_str!("lua/presence_typing.lua")),
    connected: Script::from_lua(include_str!("lua/presence_connected.lua")),
    disconnected: Script::from_lua(include_str!("lua/presence_disconnected.lua")),
    status: Script::from_lua(include_str!("lua/presence_status.lua")),
    statuses: Script::from_lua(include_str!("lua/presence_statuses.lua")),
    sweep_channel: Script::from_lua(include_str!("lua/presence_sweep_channel.lua")),
    sweep_org: Script::from_lua(include_str!("lua/presence_sweep_org.lua")),
    settle: Script::from_lua(include_str!("lua/presence_settle.lua")),
    unlock: Script::from_lua(include_str!("lua/presence_unlock.lua")),
    restore_members: Script::from_lua(include_str!("lua/presence_restore_members.lua")),
    restore_connections: Script::from_lua(include_str!("lua/presence_restore_connections.lua")),
});

/// What a sweep index lists.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Swept {
    Channels,
    Orgs,
}

impl Swept {
    fn index(self) -> &'static str {
        match self {
            Swept::Channels => CHANNELS_INDEX,
            Swept::Orgs => ORGS_INDEX,
        }
    }

    /// The sorted set whose first score is the entry's next due time.
    fn due_key(self, name: &str) -> String {
        match self {
            Swept::Channels => members_expiry_key(name),
            Swept::Orgs => users_key(name),
        }
    }
}

impl RedisState {
    /// Runs `script` once per call in one pipeline (one round trip), each EVALSHA routed
    /// to its first key's slot. A call the server answers NOSCRIPT (it did not run) goes
    /// again through [`RedisState::eval`], which loads the script.
    async fn eval_batch(
        &self,
        script: &Script,
        calls: Vec<(Vec<String>, Vec<Value>)>,
    ) -> Result<Vec<Value>, StateError> {
        if calls.is_empty() {
            return Ok(Vec::new());
        }
        self.check_connected().map_err(unavailable)?;
        let pipeline = Pipeline::from(self.commands().clone());
        for (keys, args) in &calls {
            let slot = keys.first().map_or(0, |key| redis_keyslot(key.as_bytes()));
            let mut command = Vec::with_capacity(2 + keys.len() + args.len());
            command.push(Value::from(script.sha1().clone()));
            command.push(Value::Integer(keys.len() as i64));
            command.extend(keys.iter().map(|key| Value::from(key.as_str())));
            command.extend(args.iter().cloned());
            let name = CustomCommand::new_static("EVALSHA", ClusterHash::Custom(slot), false);
            let _: () = pipeline.custom(name, command).await.map_err(unavailable)?;
        }
        let replies = pipeline.try_all::<Value>().await;
        if replies.len() != calls.len() {
            // fred answers a failed send with a single error.
            let error = replies.into_iter().find_map(Result::err);
            return Err(error.map_or_else(|| malformed("pipeline reply count"), unavailable));
        }
        let mut values = Vec::with_capacity(calls.len());
        for (reply, (keys, args)) in replies.into_iter().zip(calls) {
            values.push(match reply {
                Ok(value) => value,
                Err(error) if error.details().starts_with("NOSCRIPT") => {
                    self.eval(script, keys, args).await.map_err(unavailable)?
                }
                Err(error) => return Err(unavailable(error)),
            });
        }
        Ok(values)
    }

    /// Lowers (or adds) an entry's due time in a sweep index. Called after the script
    /// that added the entry's member or connection, never before (see the module doc).
    async fn index(&self, swept: Swept, name: &str, due: i64) -> Result<(), StateError> {
        self.check_connected().map_err(unavailable)?;
        let pipeline = Pipeline::from(self.commands().clone());
        let _: () = pipeline
            .zadd(
                swept.index(),
                None,
                Some(ZaddOrdering::LessThan),
                false,
                false,
                (due as f64, name),
            )
            .await
            .map_err(unavailable)?;
        let _: () = pipeline
            .pexpire(swept.index(), millis(INDEX_TTL), None)
            .await
            .map_err(unavailable)?;
        pipeline.all::<Value>().await.map_err(unavailable)?;
        Ok(())
    }

    /// Sweeps one index until nothing in it is due at `now` or the budget is spent,
    /// adding what expired to `expired`.
    async fn sweep_index(
        &self,
        swept: Swept,
        now: i64,
        deadline: Instant,
        expired: &mut Vec<Expired>,
    ) -> Result<(), StateError> {
        loop {
            self.check_connected().map_err(unavailable)?;
            let due: Value = self
                .commands()
                .zrangebyscore(
                    swept.index(),
                    "-inf",
                    now as f64,
                    true,
                    Some((0, SWEEP_BATCH)),
                )
                .await
                .map_err(unavailable)?;
            let due = scored(due)?;
            if due.is_empty() {
                return Ok(());
            }
            let calls = due
                .iter()
                .map(|(name, _)| sweep_call(swept, name, now))
                .collect();
            let script = match swept {
                Swept::Channels => &SCRIPTS.sweep_channel,
                Swept::Orgs => &SCRIPTS.sweep_org,
            };
            let replies = self.eval_batch(script, calls).await?;
            let mut settle = Vec::with_capacity(due.len() * 3);
            for ((name, read), reply) in due.iter().zip(replies) {
                let [gone, next] = array::<2>(reply)?;
                match swept {
                    Swept::Channels => report_left(name, gone, expired),
                    Swept::Orgs => report_offline(name, gone, expired)?,
                }
                let next = if next.is_null() {
                    String::new()
                } else {
                    score(&next)?.to_string()
                };
                settle.extend([
                    Value::from(name.as_str()),
                    Value::from(read.to_string()),
                    Value::from(next),
                ]);
            }
            let removed = self
                .eval(&SCRIPTS.settle, vec![swept.index().to_owned()], settle)
                .await
                .map_err(unavailable)?;
            let removed = removed
                .into_array()
                .iter()
                .map(|name| text(name).map(str::to_owned))
                .collect::<Result<Vec<_>, _>>()?;
            self.recheck(swept, &removed).await?;
            if Instant::now() >= deadline {
                return Ok(());
            }
        }
    }

    /// Puts back in the index the entries just removed as empty that got a member or a
    /// connection between the sweep script and the removal.
    async fn recheck(&self, swept: Swept, removed: &[String]) -> Result<(), StateError> {
        if removed.is_empty() {
            return Ok(());
        }
        let pipeline = Pipeline::from(self.commands().clone());
        for name in removed {
            let _: () = pipeline
                .zrange(swept.due_key(name), 0, 0, None, false, None, true)
                .await
                .map_err(unavailable)?;
        }
        let replies = pipeline.try_all::<Value>().await;
        if replies.len() != removed.len() {
            let error = replies.into_iter().find_map(Result::err);
            return Err(error.map_or_else(|| malformed("pipeline reply count"), unavailable));
        }
        for (name, reply) in removed.iter().zip(replies) {
            if let Some((_, due)) = scored(reply.map_err(unavailable)?)?.first() {
                self.index(swept, name, *due).await?;
            }
        }
        Ok(())
    }

    /// Re-creates what a refresh found missing: the members of `channels` and the org
    /// connections of `users` (each with the batch's connections in it) that are not there,
    /// in two pipelines of scripts sent at once, then puts their channels and orgs back in
    /// the sweep indexes (after the scripts, see the module doc).
    async fn restore(
        &self,
        channels: &[&(&str, Vec<&LiveConnection>)],
        users: &[&((&str, &str), Vec<&LiveConnection>)],
        now: i64,
        expiry: i64,
    ) -> Result<Restored, StateError> {
        let mut member_calls = Vec::with_capacity(channels.len());
        for (channel, connections) in channels.iter().copied() {
            let mut args = Vec::with_capacity(1 + 2 * connections.len());
            args.push(Value::from(expiry));
            for connection in connections {
                let member = Member {
                    user: connection.user.clone(),
                    client: connection.client.clone(),
                    info: connection.info.clone(),
                    joined_at: now,
                    state: connection.state_in(channel),
                };
                args.push(Value::from(&*connection.client));
                args.push(Value::from(json(&member)?));
            }
            let keys = vec![members_key(channel), members_expiry_key(channel)];
            member_calls.push((keys, args));
        }
        let connection_calls = users
            .iter()
            .copied()
            .map(|((org, user), connections)| {
                let known = connections.iter().find_map(|connection| {
                    connection
                        .statuses
                        .iter()
                        .find(|(known, _)| &**known == *org)
                        .map(|(_, status)| status.as_str())
                });
                let mut args = Vec::with_capacity(4 + connections.len());
                args.extend([
                    Value::from(*user),
                    Value::from(expiry),
                    Value::from(now),
                    Value::from(known.unwrap_or("")),
                ]);
                args.extend(
                    connections
                        .iter()
                        .map(|connection| Value::from(&*connection.client)),
                );
                let keys = vec![conns_key(org, user), users_key(org), status_key(org)];
                (keys, args)
            })
            .collect();
        let (member_replies, connection_replies) = tokio::try_join!(
            self.eval_batch(&SCRIPTS.restore_members, member_calls),
            self.eval_batch(&SCRIPTS.restore_connections, connection_calls)
        )?;

        let mut restored = Restored::default();
        let mut channel_names = HashSet::new();
        for ((name, _), reply) in channels.iter().copied().zip(member_replies) {
            let members = reply.into_array();
            if members.is_empty() {
                continue;
            }
            let channel = ChannelName::parse(name)
                .map_err(|_| malformed(format!("channel name {name:?}")))?;
            for member in members {
                restored
                    .members
                    .push((channel.clone(), parse(text(&member)?)?));
            }
            channel_names.insert(*name);
        }
        let mut org_names = HashSet::new();
        for (((org, user), _), reply) in users.iter().copied().zip(connection_replies) {
            let [added, status] = array::<2>(reply)?;
            let added = added.into_array();
            if added.is_empty() {
                continue;
            }
            org_names.insert(*org);
            let (org, user): (Arc<str>, Arc<str>) = (Arc::from(*org), Arc::from(*user));
            for client in added {
                restored
                    .connections
                    .push((org.clone(), user.clone(), Arc::from(text(&client)?)));
            }
            if !status.is_null() {
                let status = text(&status)?;
                let status =
                    Status::parse(status).ok_or_else(|| malformed(format!("status {status:?}")))?;
                restored.statuses.push(change(&org, &user, status, 0));
            }
        }
        let pipeline = Pipeline::from(self.commands().clone());
        let sent = index_into(&pipeline, Swept::Channels, channel_names, expiry).await?
            + index_into(&pipeline, Swept::Orgs, org_names, expiry).await?;
        // Not a failure of the refresh: what was re-created must still be announced, and
        // the next refresh's `ZADD LT` puts the index entries back.
        if sent > 0
            && let Err(error) = pipeline.all::<Value>().await
        {
            tracing::warn!(%error, "sweep index not updated after re-creating presence");
        }
        if restored.is_empty() {
            return Ok(restored);
        }
        tracing::info!(
            members = restored.members.len(),
            connections = restored.connections.len(),
            "presence entries re-created: the store lost them, or swept them while this node was cut off"
        );
        Ok(restored)
    }

    async fn sweep_locked(&self, now: i64) -> Result<Vec<Expired>, (StateError, Vec<Expired>)> {
        let deadline = Instant::now() + SWEEP_BUDGET;
        let mut expired = Vec::new();
        for swept in [Swept::Channels, Swept::Orgs] {
            if let Err(error) = self.sweep_index(swept, now, deadline, &mut expired).await {
                return Err((error, expired));
            }
        }
        Ok(expired)
    }
}

#[async_trait]
impl Presence for RedisState {
    async fn join_counted(
        &self,
        channel: &ChannelName,
        member: &Member,
        ttl: Duration,
    ) -> Result<Option<u64>, StateError> {
        timed("presence_join", async {
            let now = unix_millis();
            let expiry = now.saturating_add(millis(ttl));
            let keys = vec![
                members_key(channel.as_str()),
                members_expiry_key(channel.as_str()),
            ];
            let args = vec![
                Value::from(&*member.client),
                Value::from(json(member)?),
                Value::from(expiry),
                Value::from(now),
            ];
            let reply = self
                .eval(&SCRIPTS.join, keys, args)
                .await
                .map_err(unavailable)?;
            // Also when it was a member already: a retry after this step failed lands here.
            self.index(Swept::Channels, channel.as_str(), expiry)
                .await?;
            let members = number(&reply)?;
            Ok((members > 0).then_some(members as u64))
        })
        .await
    }

    async fn leave_counted(
        &self,
        channel: &ChannelName,
        client: &str,
    ) -> Result<Option<(Member, u64)>, StateError> {
        timed("presence_leave", async {
            let keys = vec![
                members_key(channel.as_str()),
                members_expiry_key(channel.as_str()),
            ];
            let args = vec![Value::from(client), Value::from(unix_millis())];
            let reply = self
                .eval(&SCRIPTS.leave, keys, args)
                .await
                .map_err(unavailable)?;
            let [member, left] = array::<2>(reply)?;
            if member.is_null() {
                return Ok(None);
            }
            Ok(Some((parse(text(&member)?)?, number(&left)?.max(0) as u64)))
        })
        .await
    }

    async fn set_state(
        &self,
        channel: &ChannelName,
        client: &str,
        state: Option<Arc<RawValue>>,
    ) -> Result<Option<u64>, StateError> {
        timed("presence_set_state", async {
            let keys = vec![
                members_key(channel.as_str()),
                members_expiry_key(channel.as_str()),
            ];
            // Besides its own connection, only a join replacing an expired entry or a
            // refresh re-creating a lost one writes it: another read settles such a race.
            for _ in 0..STATE_ATTEMPTS {
                self.check_connected().map_err(unavailable)?;
                let read: Option<String> = self
                    .commands()
                    .hget(&keys[0], client)
                    .await
                    .map_err(unavailable)?;
                let Some(read) = read else {
                    return Ok(None);
                };
                let mut member: Member = parse(&read)?;
                member.state = state.clone();
                let args = vec![
                    Value::from(client),
                    Value::from(read),
                    Value::from(json(&member)?),
                    Value::from(unix_millis()),
                ];
                let reply = self
                    .eval(&SCRIPTS.state, keys.clone(), args)
                    .await
                    .map_err(unavailable)?;
                match number(&reply)? {
                    -1 => continue,
                    0 => return Ok(None),
                    members => return Ok(Some(members as u64)),
                }
            }
            Err(malformed(
                "presence entry kept changing while its state was set",
            ))
        })
        .await
    }

    async fn members(&self, channel: &ChannelName) -> Result<Vec<Member>, StateError> {
        timed("presence_members", async {
            let keys = vec![
                members_key(channel.as_str()),
                members_expiry_key(channel.as_str()),
            ];
            let reply = self
                .eval(&SCRIPTS.live, keys, vec![Value::from(unix_millis())])
                .await
                .map_err(unavailable)?;
            let mut members = reply
                .into_array()
                .iter()
                .map(|member| parse::<Member>(text(member)?))
                .collect::<Result<Vec<_>, _>>()?;
            members.sort_by(|a, b| (a.joined_at, &a.client).cmp(&(b.joined_at, &b.client)));
            Ok(members)
        })
        .await
    }

    async fn connected(
        &self,
        org: &str,
        user: &str,
        client: &str,
        ttl: Duration,
    ) -> Result<Option<StatusChange>, StateError> {
        timed("presence_connected", async {
            let now = unix_millis();
            let expiry = now.saturating_add(millis(ttl));
            let keys = vec![conns_key(org, user), users_key(org), status_key(org)];
            let args = vec![
                Value::from(user),
                Value::from(client),
                Value::from(expiry),
                Value::from(now),
            ];
            let reply = self
                .eval(&SCRIPTS.connected, keys, args)
                .await
                .map_err(unavailable)?;
            self.index(Swept::Orgs, org, expiry).await?;
            Ok((number(&reply)? == 2).then(|| change(org, user, Status::Online, 0)))
        })
        .await
    }

    async fn disconnected(
        &self,
        org: &str,
        user: &str,
        client: &str,
    ) -> Result<Option<StatusChange>, StateError> {
        timed("presence_disconnected", async {
            let now = unix_millis();
            let keys = vec![
                conns_key(org, user),
                users_key(org),
                status_key(org),
                seen_key(org),
            ];
            let args = vec![Value::from(user), Value::from(client), Value::from(now)];
            let reply = self
                .eval(&SCRIPTS.disconnected, keys, args)
                .await
                .map_err(unavailable)?;
            Ok((number(&reply)? == 1).then(|| change(org, user, Status::Offline, now)))
        })
        .await
    }

    async fn set_status(
        &self,
        org: &str,
        user: &str,
        client: &str,
        status: Status,
        ttl: Duration,
    ) -> Result<Option<StatusChange>, StateError> {
        // Offline is what having no connection means, not a status one sets (as in memory).
        if status == Status::Offline {
            return Ok(None);
        }
        timed("presence_set_status", async {
            let now = unix_millis();
            let expiry = now.saturating_add(millis(ttl));
            let keys = vec![conns_key(org, user), users_key(org), status_key(org)];
            let args = vec![
                Value::from(user),
                Value::from(status.as_str()),
                Value::from(now),
                Value::from(client),
                Value::from(expiry),
            ];
            let reply = self
                .eval(&SCRIPTS.status, keys, args)
                .await
                .map_err(unavailable)?;
            let reply = number(&reply)?;
            if reply == 2 {
                // The connection was counted again: the org is swept again (see `join`).
                self.index(Swept::Orgs, org, expiry).await?;
            }
            Ok((reply > 0).then(|| change(org, user, status, 0)))
        })
        .await
    }

    async fn statuses(&self, org: &str, users: &[Arc<str>]) -> Result<Vec<UserStatus>, StateError> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        timed("presence_statuses", async {
            let mut keys = Vec::with_capacity(2 + users.len());
            keys.extend([status_key(org), seen_key(org)]);
            keys.extend(users.iter().map(|user| conns_key(org, user)));
            let mut args = Vec::with_capacity(1 + users.len());
            args.push(Value::from(unix_millis()));
            args.extend(users.iter().map(|user| Value::from(&**user)));
            let reply = self
                .eval(&SCRIPTS.statuses, keys, args)
                .await
                .map_err(unavailable)?;
            let reply = reply.into_array();
            if reply.len() != users.len() * 2 {
                return Err(malformed(format!(
                    "{} items for {} users",
                    reply.len(),
                    users.len()
                )));
            }
            users
                .iter()
                .zip(reply.chunks_exact(2))
                .map(|(user, pair)| {
                    let status = text(&pair[0])?;
                    Ok(UserStatus {
                        user: user.clone(),
                        status: Status::parse(status)
                            .ok_or_else(|| malformed(format!("status {status:?}")))?,
                        last_seen: score(&pair[1])?,
                    })
                })
                .collect()
        })
        .await
    }

    async fn start_typing(&self, channel: &ChannelName, typer: &Typer) -> Result<(), StateError> {
        timed("presence_start_typing", async {
            let now = unix_millis();
            let ttl = millis(TYPING_TTL);
            let keys = vec![typers_key(channel), typers_expiry_key(channel)];
            let args = vec![
                Value::from(&*typer.user),
                Value::from(json(typer)?),
                Value::from(now + ttl),
                Value::from(now),
                Value::from(ttl),
            ];
            self.eval(&SCRIPTS.typing, keys, args)
                .await
                .map_err(unavailable)?;
            Ok(())
        })
        .await
    }

    async fn stop_typing(&self, channel: &ChannelName, user: &str) -> Result<bool, StateError> {
        timed("presence_stop_typing", async {
            let keys = vec![typers_key(channel), typers_expiry_key(channel)];
            let reply = self
                .eval(&SCRIPTS.remove, keys, vec![Value::from(user)])
                .await
                .map_err(unavailable)?;
            let [_, expiry] = array::<2>(reply)?;
            Ok(!expiry.is_null() && score(&expiry)? > unix_millis())
        })
        .await
    }

    async fn typers(&self, channel: &ChannelName) -> Result<Vec<Typer>, StateError> {
        timed("presence_typers", async {
            let keys = vec![typers_key(channel), typers_expiry_key(channel)];
            let reply = self
                .eval(&SCRIPTS.live, keys, vec![Value::from(unix_millis())])
                .await
                .map_err(unavailable)?;
            reply
                .into_array()
                .iter()
                .map(|typer| parse(text(typer)?))
                .collect()
        })
        .await
    }

    async fn refresh(
        &self,
        live: &[LiveConnection],
        ttl: Duration,
    ) -> Result<Restored, StateError> {
        if live.is_empty() {
            return Ok(Restored::default());
        }
        timed("presence_refresh", async {
            self.check_connected().map_err(unavailable)?;
            let now = unix_millis();
            let expiry = now.saturating_add(millis(ttl));
            // One ZADD per key: the connections of a channel (or a user's in an org) on
            // this node share one.
            let mut channels: HashMap<&str, Vec<&LiveConnection>> = HashMap::new();
            let mut users: HashMap<(&str, &str), Vec<&LiveConnection>> = HashMap::new();
            for connection in live {
                for channel in &connection.channels {
                    channels
                        .entry(channel.as_str())
                        .or_default()
                        .push(connection);
                }
                for (i, org) in connection.orgs.iter().enumerate() {
                    // A token naming an org twice counts its connection once.
                    if connection.orgs[..i].contains(org) {
                        continue;
                    }
                    users
                        .entry((&**org, &*connection.user))
                        .or_default()
                        .push(connection);
                }
            }
            let channels: Vec<_> = channels.into_iter().collect();
            let users: Vec<_> = users.into_iter().collect();
            let pipeline = Pipeline::from(self.commands().clone());
            let keys = channels
                .iter()
                .map(|(channel, connections)| (members_expiry_key(channel), connections))
                .chain(
                    users
                        .iter()
                        .map(|((org, user), connections)| (conns_key(org, user), connections)),
                );
            for (key, connections) in keys {
                let members: Vec<(f64, Value)> = connections
                    .iter()
                    .map(|connection| (expiry as f64, Value::from(&*connection.client)))
                    .collect();
                // XX: never adds (a member needs its JSON too; `restore` re-creates what
                // is missing). CH: counts the entries whose expiry moved, so fewer than
                // sent means some were missing (or, rarely, kept the same expiry).
                let _: () = pipeline
                    .zadd(key, Some(SetOptions::XX), None, true, false, members)
                    .await
                    .map_err(unavailable)?;
            }
            // LT: never later than a due time already there; adds an entry that a sweeper
            // dying mid-sweep lost.
            let channel_names: HashSet<&str> = channels.iter().map(|(name, _)| *name).collect();
            let org_names: HashSet<&str> = users.iter().map(|((org, _), _)| *org).collect();
            let indexed = index_into(&pipeline, Swept::Channels, channel_names, expiry).await?
                + index_into(&pipeline, Swept::Orgs, org_names.clone(), expiry).await?;
            // Every key expires, a while after the entries refreshed here: the channels'
            // and orgs' keys while they have live entries, the indexes while nodes refresh.
            let key_ttl = millis(ttl.saturating_mul(KEY_TTLS));
            let mut expiring: Vec<(String, i64)> = Vec::new();
            for (channel, _) in &channels {
                expiring.push((members_key(channel), key_ttl));
                expiring.push((members_expiry_key(channel), key_ttl));
            }
            for ((org, user), _) in &users {
                expiring.push((conns_key(org, user), key_ttl));
            }
            for org in &org_names {
                expiring.push((users_key(org), key_ttl));
                expiring.push((status_key(org), key_ttl));
            }
            for index in [CHANNELS_INDEX, ORGS_INDEX] {
                expiring.push((index.to_owned(), millis(INDEX_TTL)));
            }
            for (key, ttl) in &expiring {
                let _: () = pipeline
                    .pexpire(key.as_str(), *ttl, None)
                    .await
                    .map_err(unavailable)?;
            }
            let replies = pipeline.try_all::<Value>().await;
            let sent = channels.len() + users.len() + indexed + expiring.len();
            if replies.len() != sent {
                let error = replies.into_iter().find_map(Result::err);
                return Err(error.map_or_else(|| malformed("pipeline reply count"), unavailable));
            }
            let counts = replies
                .into_iter()
                .map(|reply| number(&reply.map_err(unavailable)?))
                .collect::<Result<Vec<_>, _>>()?;
            let short = |count: i64, connections: &Vec<&LiveConnection>| {
                usize::try_from(count).map_or(true, |count| count < connections.len())
            };
            let missing_members: Vec<_> = channels
                .iter()
                .zip(&counts)
                .filter(|((_, connections), count)| short(**count, connections))
                .map(|(entry, _)| entry)
                .collect();
            let missing_connections: Vec<_> = users
                .iter()
                .zip(&counts[channels.len()..])
                .filter(|((_, connections), count)| short(**count, connections))
                .map(|(entry, _)| entry)
                .collect();
            if missing_members.is_empty() && missing_connections.is_empty() {
                return Ok(Restored::default());
            }
            self.restore(&missing_members, &missing_connections, now, expiry)
                .await
        })
        .await
    }

    async fn sweep(&self, node_id: &str) -> Result<Vec<Expired>, StateError> {
        timed("presence_sweep", async {
            self.check_connected().map_err(unavailable)?;
            let holder = format!("{node_id}:{}", random_token(8));
            let taken: Value = self
                .commands()
                .set(
                    SWEEPER_LOCK,
                    holder.as_str(),
                    Some(Expiration::PX(millis(SWEEPER_LOCK_TTL))),
                    Some(SetOptions::NX),
                    false,
                )
                .await
                .map_err(unavailable)?;
            if taken.is_null() {
                return Ok(Vec::new());
            }
            let result = self.sweep_locked(unix_millis()).await;
            let released = self
                .eval(
                    &SCRIPTS.unlock,
                    vec![SWEEPER_LOCK.to_owned()],
                    vec![Value::from(holder)],
                )
                .await;
            if let Err(error) = released {
                tracing::debug!(%error, "sweeper lock not released; it expires on its own");
            }
            match result {
                Ok(expired) => Ok(expired),
                Err((error, expired)) if expired.is_empty() => Err(error),
                // What was removed is reported: nobody else will.
                Err((error, expired)) => {
                    tracing::warn!(%error, removed = expired.len(), "presence sweep cut short");
                    Ok(expired)
                }
            }
        })
        .await
    }
}

/// Queues one `ZADD LT` of `names` at `due` in a sweep index: never later than a due time
/// already there, and adds a missing entry. The number of commands queued (0 or 1).
async fn index_into(
    pipeline: &Pipeline<WithOptions<fred::prelude::Client>>,
    swept: Swept,
    names: HashSet<&str>,
    due: i64,
) -> Result<usize, StateError> {
    if names.is_empty() {
        return Ok(0);
    }
    let names: Vec<(f64, Value)> = names
        .into_iter()
        .map(|name| (due as f64, Value::from(name)))
        .collect();
    let _: () = pipeline
        .zadd(
            swept.index(),
            None,
            Some(ZaddOrdering::LessThan),
            false,
            false,
            names,
        )
        .await
        .map_err(unavailable)?;
    Ok(1)
}

/// The keys and arguments of the sweep script for one due channel or org.
fn sweep_call(swept: Swept, name: &str, now: i64) -> (Vec<String>, Vec<Value>) {
    match swept {
        Swept::Channels => (
            vec![members_key(name), members_expiry_key(name)],
            vec![Value::from(now), Value::from(SWEEP_SCRIPT_LIMIT)],
        ),
        Swept::Orgs => (
            vec![users_key(name), status_key(name), seen_key(name)],
            vec![
                Value::from(now),
                Value::from(conns_key(name, "")),
                Value::from(SWEEP_SCRIPT_LIMIT),
            ],
        ),
    }
}

/// The members a channel sweep removed, as `Left` events. An entry that does not decode
/// is logged and skipped: it is gone either way, and failing would lose the others.
fn report_left(channel: &str, gone: Value, expired: &mut Vec<Expired>) {
    let Ok(channel) = ChannelName::parse(channel) else {
        tracing::warn!(channel, "presence of an invalid channel name swept");
        return;
    };
    for member in gone.into_array() {
        match text(&member).and_then(parse::<Member>) {
            Ok(member) => expired.push(Expired::Left {
                channel: channel.clone(),
                member,
            }),
            Err(error) => tracing::warn!(%error, %channel, "undecodable presence entry swept"),
        }
    }
}

/// The users an org sweep took offline (`[user, last seen, ...]`), as `Offline` events.
fn report_offline(org: &str, gone: Value, expired: &mut Vec<Expired>) -> Result<(), StateError> {
    for pair in gone.into_array().chunks_exact(2) {
        let user = text(&pair[0])?;
        expired.push(Expired::Offline(change(
            org,
            user,
            Status::Offline,
            score(&pair[1])?,
        )));
    }
    Ok(())
}

fn change(org: &str, user: &str, status: Status, last_seen: i64) -> StatusChange {
    StatusChange {
        org: Arc::from(org),
        status: UserStatus {
            user: Arc::from(user),
            status,
            last_seen,
        },
    }
}

fn members_key(channel: &str) -> String {
    format!("herald:{{{channel}}}:members")
}

fn members_expiry_key(channel: &str) -> String {
    format!("herald:{{{channel}}}:members:expiry")
}

fn typers_key(channel: &ChannelName) -> String {
    format!("herald:{{{channel}}}:typers")
}

fn typers_expiry_key(channel: &ChannelName) -> String {
    format!("herald:{{{channel}}}:typers:expiry")
}

/// The user's connections in an org; with an empty user, the prefix of all of them.
fn conns_key(org: &str, user: &str) -> String {
    format!("herald:org:{{{org}}}:conns:{user}")
}

fn users_key(org: &str) -> String {
    format!("herald:org:{{{org}}}:users")
}

fn status_key(org: &str) -> String {
    format!("herald:org:{{{org}}}:status")
}

fn seen_key(org: &str) -> String {
    format!("herald:org:{{{org}}}:seen")
}

fn json(value: &impl serde::Serialize) -> Result<String, StateError> {
    serde_json::to_string(value).map_err(|error| malformed(format!("unencodable entry: {error}")))
}

fn parse<T: serde::de::DeserializeOwned>(json: &str) -> Result<T, StateError> {
    serde_json::from_str(json).map_err(|error| malformed(format!("presence entry: {error}")))
}

/// An integer reply (a script's status code).
fn number(value: &Value) -> Result<i64, StateError> {
    match value {
        Value::Integer(n) => Ok(*n),
        other => Err(malformed(format!(
            "{:?}, expected an integer",
            other.kind()
        ))),
    }
}

/// A sorted set score, Unix ms: text in RESP2, a double in RESP3, an integer from Lua.
fn score(value: &Value) -> Result<i64, StateError> {
    match value {
        Value::Integer(n) => Ok(*n),
        Value::Double(n) => Ok(*n as i64),
        other => text(other)?
            .parse::<f64>()
            .map(|n| n as i64)
            .map_err(|_| malformed(format!("{other:?}, expected a score"))),
    }
}

/// A `WITHSCORES` reply as (member, score) pairs: flat in RESP2, nested in RESP3.
fn scored(value: Value) -> Result<Vec<(String, i64)>, StateError> {
    let items = value.into_array();
    if items.iter().all(|item| matches!(item, Value::Array(_))) {
        return items
            .into_iter()
            .map(|pair| {
                let [member, score_value] = array::<2>(pair)?;
                Ok((text(&member)?.to_owned(), score(&score_value)?))
            })
            .collect();
    }
    if !items.len().is_multiple_of(2) {
        return Err(malformed("odd WITHSCORES reply"));
    }
    items
        .chunks_exact(2)
        .map(|pair| Ok((text(&pair[0])?.to_owned(), score(&pair[1])?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_the_channel_or_org_hash_tag() {
        let channel = ChannelName::parse("org:acme:ch:general").unwrap();
        let slot = redis_keyslot(b"{org:acme:ch:general}");
        for key in [
            members_key(channel.as_str()),
            members_expiry_key(channel.as_str()),
            typers_key(&channel),
            typers_expiry_key(&channel),
        ] {
            assert!(key.starts_with("herald:{org:acme:ch:general}:"), "{key}");
            assert_eq!(redis_keyslot(key.as_bytes()), slot, "{key}");
        }
        let slot = redis_keyslot(b"{acme}");
        for key in [
            conns_key("acme", "alice"),
            conns_key("acme", "{weird}user"),
            users_key("acme"),
            status_key("acme"),
            seen_key("acme"),
        ] {
            assert_eq!(redis_keyslot(key.as_bytes()), slot, "{key}");
        }
        assert_eq!(conns_key("acme", "alice"), "herald:org:{acme}:conns:alice");
    }

    #[test]
    fn scores_read_in_either_protocol() {
        let flat = Value::Array(vec![
            Value::from("a"),
            Value::from("1764000000000"),
            Value::from("b"),
            Value::Double(2.0),
        ]);
        assert_eq!(
            scored(flat).unwrap(),
            vec![("a".into(), 1_764_000_000_000), ("b".into(), 2)]
        );
        let nested = Value::Array(vec![Value::Array(vec![
            Value::from("a"),
            Value::Double(5.0),
        ])]);
        assert_eq!(scored(nested).unwrap(), vec![("a".into(), 5)]);
        assert!(scored(Value::Array(vec![Value::from("a")])).is_err());
        assert!(score(&Value::from("x")).is_err());
    }
}
