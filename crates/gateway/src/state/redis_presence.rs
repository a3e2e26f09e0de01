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
//! Scripts (`lua/presence_*.lua`), each on one slot: `join`; `remove` (leave, stop typing);
//! `live` (members, typers); `typing` (start); `connected`, `disconnected` and `status`,
//! the atomic status transitions; `statuses`; `sweep_channel` and `sweep_org`, which
//! remove what expired and return it; `settle`, the sweep index's compare-and-set;
//! `unlock`. `refresh` is plain `ZADD XX` commands in one pipeline, one per key (the
//! connections of a channel on this node share one), plus one `ZADD LT` per sweep index.
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
use fred::clients::Pipeline;
use fred::prelude::{ClientLike, KeysInterface, SortedSetsInterface, Value};
use fred::types::scripts::Script;
use fred::types::sorted_sets::Ordering as ZaddOrdering;
use fred::types::{ClusterHash, CustomCommand, Expiration, SetOptions};
use fred::util::redis_keyslot;
use herald_protocol::ChannelName;

use super::StateError;
use super::presence::{
    Expired, LiveConnection, Member, Presence, Status, StatusChange, TYPING_TTL, Typer, UserStatus,
};
use super::redis::{RedisState, array, malformed, millis, text, timed, unavailable};
use crate::config::random_token;
use crate::node::unix_millis;

const CHANNELS_INDEX: &str = "herald:presence:channels";
const ORGS_INDEX: &str = "herald:presence:orgs";
const SWEEPER_LOCK: &str = "herald:presence:sweeper";
/// How long the sweeper lock lasts if its holder never releases it (a crash).
const SWEEPER_LOCK_TTL: Duration = Duration::from_secs(10);
/// A sweep stops starting new batches after this, well within the lock.
const SWEEP_BUDGET: Duration = Duration::from_secs(5);
/// Due channels (or orgs) swept per pipeline.
const SWEEP_BATCH: i64 = 200;
/// Entries one sweep script removes at most, so a script never blocks Redis for long; a
/// channel with more stays due and is visited again.
const SWEEP_SCRIPT_LIMIT: i64 = 1000;

struct Scripts {
    join: Script,
    remove: Script,
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
}

static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    join: Script::from_lua(include_str!("lua/presence_join.lua")),
    remove: Script::from_lua(include_str!("lua/presence_remove.lua")),
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
        self.commands()
            .zadd::<(), _, _>(
                swept.index(),
                None,
                Some(ZaddOrdering::LessThan),
                false,
                false,
                (due as f64, name),
            )
            .await
            .map_err(unavailable)
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
    async fn join(
        &self,
        channel: &ChannelName,
        member: &Member,
        ttl: Duration,
    ) -> Result<bool, StateError> {
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
            Ok(number(&reply)? == 1)
        })
        .await
    }

    async fn leave(
        &self,
        channel: &ChannelName,
        client: &str,
    ) -> Result<Option<Member>, StateError> {
        timed("presence_leave", async {
            let keys = vec![
                members_key(channel.as_str()),
                members_expiry_key(channel.as_str()),
            ];
            let reply = self
                .eval(&SCRIPTS.remove, keys, vec![Value::from(client)])
                .await
                .map_err(unavailable)?;
            let [member, _] = array::<2>(reply)?;
            if member.is_null() {
                return Ok(None);
            }
            Ok(Some(parse(text(&member)?)?))
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
        status: Status,
    ) -> Result<Option<StatusChange>, StateError> {
        // Offline is what having no connection means, not a status one sets (as in memory).
        if status == Status::Offline {
            return Ok(None);
        }
        timed("presence_set_status", async {
            let keys = vec![conns_key(org, user), status_key(org)];
            let args = vec![
                Value::from(user),
                Value::from(status.as_str()),
                Value::from(unix_millis()),
            ];
            let reply = self
                .eval(&SCRIPTS.status, keys, args)
                .await
                .map_err(unavailable)?;
            Ok((number(&reply)? == 1).then(|| change(org, user, status, 0)))
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

    async fn refresh(&self, live: &[LiveConnection], ttl: Duration) -> Result<(), StateError> {
        if live.is_empty() {
            return Ok(());
        }
        timed("presence_refresh", async {
            self.check_connected().map_err(unavailable)?;
            let expiry = unix_millis().saturating_add(millis(ttl)) as f64;
            // One ZADD per key: the connections of a channel on this node share one.
            let mut keys: HashMap<String, Vec<(f64, Value)>> = HashMap::new();
            let mut channels = HashSet::new();
            let mut orgs = HashSet::new();
            for connection in live {
                let client = Value::from(&*connection.client);
                for channel in &connection.channels {
                    keys.entry(members_expiry_key(channel.as_str()))
                        .or_default()
                        .push((expiry, client.clone()));
                    channels.insert(channel.as_str());
                }
                for org in &connection.orgs {
                    keys.entry(conns_key(org, &connection.user))
                        .or_default()
                        .push((expiry, client.clone()));
                    orgs.insert(&**org);
                }
            }
            let pipeline = Pipeline::from(self.commands().clone());
            let mut sent = 0;
            for (key, members) in keys {
                // XX: an entry that was left, disconnected or swept is not brought back.
                let _: () = pipeline
                    .zadd(key, Some(SetOptions::XX), None, false, false, members)
                    .await
                    .map_err(unavailable)?;
                sent += 1;
            }
            // LT: never later than a due time already there; adds an entry that a sweeper
            // dying mid-sweep lost.
            for (swept, names) in [(Swept::Channels, channels), (Swept::Orgs, orgs)] {
                if names.is_empty() {
                    continue;
                }
                let names: Vec<(f64, Value)> = names
                    .into_iter()
                    .map(|name| (expiry, Value::from(name)))
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
                sent += 1;
            }
            let replies = pipeline.try_all::<Value>().await;
            if replies.len() != sent {
                let error = replies.into_iter().find_map(Result::err);
                return Err(error.map_or_else(|| malformed("pipeline reply count"), unavailable));
            }
            replies
                .into_iter()
                .try_for_each(|reply| reply.map(drop).map_err(unavailable))
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
