//! Channel state in Redis, shared by every node of a cluster.
//!
//! Per channel, all keys share the hash tag `{<channel>}` so each script touches one Redis
//! Cluster slot:
//! - `herald:{C}:meta`: hash with `epoch` and `offset` (the last assigned offset),
//!   created by a channel's first publication (reads never write);
//! - `herald:{C}:log`: stream of the last `history_size` publications, entry id
//!   `<offset>-0`, field `p` holding [`envelope::encode`] of the publication with offset 0
//!   and no epoch (both come from the entry id and the meta hash on read);
//! - `herald:{C}:idem:<key>`: the first publish with that idempotency key: claimed (with
//!   the publication, on a channel without history) until its broadcast is settled, then
//!   its position (see `lua/append.lua`).
//!
//! Writes that must be atomic are Lua scripts (`lua/`), called by SHA and reloaded on
//! NOSCRIPT. Every command fails fast while disconnected and times out after
//! [`COMMAND_TIMEOUT`], so a publish is refused with `Unavailable` rather than held.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use fred::clients::{Pipeline, WithOptions};
use fred::prelude::{
    Builder, Client, ClientLike, Config, Error as RedisError, ErrorKind, EventInterface,
    HashesInterface, LuaInterface, Options, ReconnectPolicy, Server, Value,
};
use fred::types::scripts::Script;
use fred::types::{ClusterHash, CustomCommand};
use fred::util::redis_keyslot;
use herald_protocol::{ChannelName, Publication};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::task::JoinHandle;

use super::{
    Append, Appended, Duplicate, HistorySlice, IDEMPOTENCY_LEASE, IDEMPOTENCY_WINDOW, Position,
    Settlement, State, StateError,
};
use crate::envelope::{self, EnvelopeLimits};
use crate::metrics;
use crate::random::random_token;

/// Longest any one Redis command may take before the call fails.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// The source tag of epochs and unpublished reads from Redis (see [`super::new_epoch`]).
const SOURCE: &str = "r";
const RECONNECT_MIN_MS: u32 = 100;
const RECONNECT_MAX_MS: u32 = 5_000;

const APPEND_LUA: &str = include_str!("lua/append.lua");
const HISTORY_LUA: &str = include_str!("lua/history.lua");
const SETTLE_LUA: &str = include_str!("lua/settle.lua");

/// State in Redis. Cheap to clone; the connection closes when the last clone drops.
#[derive(Clone)]
pub struct RedisState {
    shared: Arc<Shared>,
}

struct Shared {
    client: Client,
    /// `client` with fail-fast, applied to every command Herald sends.
    commands: WithOptions<Client>,
    limits: EnvelopeLimits,
    healthy: Arc<AtomicBool>,
    health_task: JoinHandle<()>,
    append: Script,
    history: Script,
    settle: Script,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.health_task.abort();
        // QUIT ends fred's reconnect loop, which would otherwise outlive the state.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let client = self.client.clone();
            runtime.spawn(async move {
                let _ = client.quit().await;
            });
        }
    }
}

impl RedisState {
    /// Connects to `url` (`redis://`, `rediss://`, `redis-sentinel://`, `redis-cluster://`).
    ///
    /// Waits up to `first_connect` for the first connection; when it is not up by then the
    /// state is returned anyway, unhealthy, and keeps reconnecting (exponential backoff,
    /// 100 ms to 5 s), so a node can start before Redis does. Only a URL fred cannot use is
    /// an error.
    pub async fn connect(
        url: &str,
        limits: EnvelopeLimits,
        first_connect: Duration,
    ) -> Result<RedisState, StateError> {
        // fred's message names the problem, not the URL, which may hold a password.
        let invalid =
            |error: RedisError| StateError::Unavailable(format!("invalid Redis URL: {error}"));
        // fred reads any other scheme (http://...) as plain Redis; that is a typo, not a server.
        let scheme = url
            .split_once("://")
            .map(|(scheme, _)| scheme.to_ascii_lowercase());
        if !scheme.is_some_and(|scheme| scheme.starts_with("redis") || scheme.starts_with("valkey"))
        {
            return Err(StateError::Unavailable(
                "invalid Redis URL: the scheme must be redis, rediss, redis-cluster or redis-sentinel"
                    .into(),
            ));
        }
        let mut config = Config::from_url(url).map_err(invalid)?;
        // Retry the first connection too, under the reconnect policy below.
        config.fail_fast = false;
        let client = Builder::from_config(config)
            .with_performance_config(|performance| {
                performance.default_command_timeout = COMMAND_TIMEOUT;
            })
            .with_connection_config(|connection| {
                connection.connection_timeout = COMMAND_TIMEOUT;
                connection.internal_command_timeout = COMMAND_TIMEOUT;
                // A connection that stops answering (no RST, e.g. a partition) is
                // dropped and redialled instead of failing every command until TCP gives up.
                connection.unresponsive.max_timeout = Some(COMMAND_TIMEOUT * 2);
                connection.unresponsive.interval = Duration::from_secs(1);
            })
            .set_policy(ReconnectPolicy::new_exponential(
                0,
                RECONNECT_MIN_MS,
                RECONNECT_MAX_MS,
                2,
            ))
            .build()
            .map_err(invalid)?;

        metrics::gauge!(metrics::STATE_UP).set(0.0);
        let healthy = Arc::new(AtomicBool::new(false));
        // Subscribed before connecting so the first connection's event is not missed.
        let health_task = tokio::spawn(track_health(
            client.clone(),
            client.reconnect_rx(),
            client.error_rx(),
            healthy.clone(),
        ));
        // `init` starts the connection task on its first poll; the task outlives the
        // timeout and keeps reconnecting.
        match tokio::time::timeout(first_connect, client.init()).await {
            // Set here too: the health task may not have seen the connection event yet.
            Ok(Ok(_connection_task)) => {
                set_health(&healthy, true);
            }
            // Only a configuration error ends fred's retries (e.g. a cluster URL for a
            // standalone server): waiting would not help.
            Ok(Err(error)) => {
                health_task.abort();
                return Err(StateError::Unavailable(format!(
                    "Redis connection failed for good: {error}"
                )));
            }
            Err(_) => tracing::warn!(
                timeout = ?first_connect,
                "Redis not reachable yet; starting unready and retrying"
            ),
        }

        let commands = client.with_options(&Options {
            fail_fast: true,
            ..Options::default()
        });
        Ok(RedisState {
            shared: Arc::new(Shared {
                client,
                commands,
                limits,
                healthy,
                health_task,
                append: Script::from_lua(APPEND_LUA),
                history: Script::from_lua(HISTORY_LUA),
                settle: Script::from_lua(SETTLE_LUA),
            }),
        })
    }

    /// EVALSHA, loading the script when the server lacks it (first use, a restart, a
    /// failover, SCRIPT FLUSH). Sent as a custom command because fred's `evalsha` is not
    /// available with per-command options, and it must fail fast like the rest.
    pub(super) async fn eval(
        &self,
        script: &Script,
        keys: Vec<String>,
        args: Vec<Value>,
    ) -> Result<Value, RedisError> {
        self.check_connected()?;
        // Every key shares one hash tag, so the first key names the slot.
        let slot = keys.first().map_or(0, |key| redis_keyslot(key.as_bytes()));
        let mut command = Vec::with_capacity(2 + keys.len() + args.len());
        command.push(Value::from(script.sha1().clone()));
        command.push(Value::Integer(keys.len() as i64));
        command.extend(keys.into_iter().map(Value::from));
        command.extend(args);
        let evalsha = || {
            let name = CustomCommand::new_static("EVALSHA", ClusterHash::Custom(slot), false);
            self.shared
                .commands
                .custom::<Value, Value>(name, command.clone())
        };
        match evalsha().await {
            Err(error) if error.details().starts_with("NOSCRIPT") => {
                let lua = script.lua().cloned().unwrap_or_default();
                self.shared.client.script_load_cluster::<(), _>(lua).await?;
                evalsha().await
            }
            result => result,
        }
    }

    /// The client with fail-fast, for commands sent outside [`RedisState::eval`] (pipelines).
    pub(super) fn commands(&self) -> &WithOptions<Client> {
        &self.shared.commands
    }

    /// Refuses a command while the connection is known lost. fred's own fail-fast check
    /// misses the first reconnect delay, during which it still reports itself connected
    /// and a command would wait out its whole timeout.
    pub(super) fn check_connected(&self) -> Result<(), RedisError> {
        if self.shared.healthy.load(Ordering::Relaxed) {
            Ok(())
        } else {
            Err(RedisError::new(
                ErrorKind::Canceled,
                "not connected to Redis",
            ))
        }
    }

    async fn read(
        &self,
        channel: &ChannelName,
        since_offset: u64,
        limit: usize,
    ) -> Result<HistorySlice, StateError> {
        let keys = vec![meta_key(channel), log_key(channel)];
        let args = vec![
            Value::from(since_offset.to_string()),
            Value::from(clamp(limit)),
        ];
        let reply = self
            .eval(&self.shared.history, keys, args)
            .await
            .map_err(unavailable)?;
        let [epoch, offset, entries, now] = array::<4>(reply)?;
        if text(&epoch)?.is_empty() {
            return Ok(HistorySlice {
                publications: Vec::new(),
                position: Position::unpublished(integer(&now)?, SOURCE),
            });
        }
        let epoch: Arc<str> = Arc::from(text(&epoch)?);
        let position = Position {
            offset: integer(&offset)?,
            epoch: epoch.to_string(),
        };
        let publications = entries
            .into_array()
            .into_iter()
            .map(|entry| self.decode_entry(channel, &epoch, entry))
            .collect::<Result<_, _>>()?;
        Ok(HistorySlice {
            publications,
            position,
        })
    }

    /// One XRANGE entry, `[id, ["p", bytes]]`, back into a publication.
    fn decode_entry(
        &self,
        channel: &ChannelName,
        epoch: &Arc<str>,
        entry: Value,
    ) -> Result<Publication, StateError> {
        let [id, fields] = array::<2>(entry)?;
        let id = text(&id)?;
        let offset = id
            .strip_suffix("-0")
            .and_then(|offset| offset.parse().ok())
            .ok_or_else(|| malformed(format!("stream entry id {id}")))?;
        let [_, payload] = array::<2>(fields)?;
        self.decode_stored(
            channel,
            offset,
            epoch,
            &payload,
            &format!("history entry {id}"),
        )
    }

    /// A stored envelope (offset 0, no epoch) back into the publication at `offset`.
    fn decode_stored(
        &self,
        channel: &ChannelName,
        offset: u64,
        epoch: &Arc<str>,
        payload: &Value,
        what: &str,
    ) -> Result<Publication, StateError> {
        let payload = payload
            .as_bytes()
            .ok_or_else(|| malformed(format!("{what} without payload")))?;
        let mut publication = envelope::decode(channel.clone(), payload, self.shared.limits)
            .map_err(|error| {
                StateError::Unavailable(format!("undecodable {what} of {channel}: {error}"))
            })?;
        publication.offset = offset;
        publication.epoch = epoch.clone();
        Ok(publication)
    }
}

/// Keeps `healthy` and the `STATE_UP` gauge in step with fred's connection events: a
/// (re)connection makes it healthy, a connection error or a failed reconnect unhealthy.
async fn track_health(
    client: Client,
    mut connected: broadcast::Receiver<Server>,
    mut errors: broadcast::Receiver<(RedisError, Option<Server>)>,
    healthy: Arc<AtomicBool>,
) {
    loop {
        let (up, error) = tokio::select! {
            event = connected.recv() => match event {
                Ok(_) => (true, None),
                Err(RecvError::Lagged(_)) => (client.is_connected(), None),
                Err(RecvError::Closed) => return,
            },
            event = errors.recv() => match event {
                Ok((error, _)) => (false, Some(error)),
                Err(RecvError::Lagged(_)) => (client.is_connected(), None),
                Err(RecvError::Closed) => return,
            },
        };
        // Logged on changes only: a Redis that stays down fails every reconnect attempt.
        if set_health(&healthy, up) {
            match error {
                None => tracing::info!("Redis connected"),
                Some(error) => tracing::warn!(%error, "Redis connection lost; reconnecting"),
            }
        }
    }
}

/// Updates `healthy` and the `STATE_UP` gauge; true when that changed the state.
fn set_health(healthy: &AtomicBool, up: bool) -> bool {
    metrics::gauge!(metrics::STATE_UP).set(if up { 1.0 } else { 0.0 });
    healthy.swap(up, Ordering::Relaxed) != up
}

#[async_trait]
impl State for RedisState {
    async fn append(&self, append: Append<'_>) -> Result<Appended, StateError> {
        timed("append", async {
            let mut publication = append.publication;
            let channel = publication.channel.clone();
            let mut keys = vec![meta_key(&channel), log_key(&channel)];
            if let Some(key) = append.idempotency_key {
                keys.push(idempotency_key(&channel, key));
            }
            let (payload, size, ttl) = match append.history {
                // Stored without offset and epoch: they live in the id and the meta hash.
                Some(policy) => {
                    let stored = Publication {
                        offset: 0,
                        epoch: Arc::from(""),
                        ..publication.clone()
                    };
                    (envelope::encode(&stored), clamp(policy.size), policy.ttl)
                }
                // Kept in the claim, so a retry can send what this call may not.
                None if append.idempotency_key.is_some() => {
                    (envelope::encode(&publication), -1, Duration::ZERO)
                }
                None => (Bytes::new(), -1, Duration::ZERO),
            };
            let args = vec![
                Value::Bytes(payload),
                Value::from(format!("{SOURCE}.{}", random_token(8))),
                Value::from(size),
                Value::from(millis(ttl)),
                Value::from(millis(IDEMPOTENCY_WINDOW)),
                Value::from(millis(IDEMPOTENCY_LEASE)),
            ];
            let reply = self
                .eval(&self.shared.append, keys, args)
                .await
                .map_err(unavailable)?;
            let mut reply = reply.into_array().into_iter();
            let (Some(kind), Some(offset), Some(epoch)) =
                (reply.next(), reply.next(), reply.next())
            else {
                return Err(malformed("append reply of fewer than 3 items"));
            };
            let position = Position {
                offset: integer(&offset)?,
                epoch: text(&epoch)?.to_owned(),
            };
            match text(&kind)? {
                "new" => {
                    if append.history.is_some() {
                        publication.offset = position.offset;
                        publication.epoch = Arc::from(position.epoch);
                    }
                    Ok(Appended::New(publication))
                }
                "sent" => Ok(Appended::Duplicate(Duplicate::Sent(position))),
                "busy" => Ok(Appended::Duplicate(Duplicate::InFlight)),
                "unsent" => {
                    let payload = reply
                        .next()
                        .ok_or_else(|| malformed("unsent duplicate without payload"))?;
                    let epoch = Arc::from(position.epoch);
                    let first = self.decode_stored(
                        &channel,
                        position.offset,
                        &epoch,
                        &payload,
                        "idempotency claim",
                    )?;
                    Ok(Appended::Duplicate(Duplicate::Unsent(first)))
                }
                other => Err(malformed(format!("append reply kind {other:?}"))),
            }
        })
        .await
    }

    async fn settle(
        &self,
        channel: &ChannelName,
        key: &str,
        settlement: Settlement,
    ) -> Result<(), StateError> {
        timed("settle", async {
            let value = match settlement {
                Settlement::Broadcast(position) => {
                    format!("d{}:{}", position.offset, position.epoch)
                }
                Settlement::Release => String::new(),
            };
            let keys = vec![idempotency_key(channel, key)];
            self.eval(&self.shared.settle, keys, vec![Value::from(value)])
                .await
                .map_err(unavailable)?;
            Ok(())
        })
        .await
    }

    async fn history(
        &self,
        channel: &ChannelName,
        since_offset: u64,
        limit: usize,
    ) -> Result<HistorySlice, StateError> {
        timed("history", self.read(channel, since_offset, limit)).await
    }

    async fn position(&self, channel: &ChannelName) -> Result<Position, StateError> {
        timed("position", async {
            Ok(self.read(channel, 0, 0).await?.position)
        })
        .await
    }

    async fn positions(
        &self,
        channels: &[ChannelName],
    ) -> Result<Vec<Option<Position>>, StateError> {
        if channels.is_empty() {
            return Ok(Vec::new());
        }
        timed("positions", async {
            // Plain HMGETs, not a script: a pipeline may span cluster slots, and a read
            // must never create an epoch.
            self.check_connected().map_err(unavailable)?;
            let pipeline = Pipeline::from(self.shared.commands.clone());
            for channel in channels {
                let _: () = pipeline
                    .hmget(meta_key(channel), vec!["epoch", "offset"])
                    .await
                    .map_err(unavailable)?;
            }
            let replies = pipeline.try_all::<Value>().await;
            if replies.len() != channels.len() {
                // fred answers a failed send with a single error.
                let error = replies.into_iter().find_map(Result::err);
                return Err(error.map_or_else(|| malformed("pipeline reply count"), unavailable));
            }
            replies
                .into_iter()
                .map(|reply| {
                    let [epoch, offset] = array::<2>(reply.map_err(unavailable)?)?;
                    if epoch.is_null() {
                        return Ok(None);
                    }
                    Ok(Some(Position {
                        offset: if offset.is_null() {
                            0
                        } else {
                            integer(&offset)?
                        },
                        epoch: text(&epoch)?.to_owned(),
                    }))
                })
                .collect()
        })
        .await
    }

    fn is_healthy(&self) -> bool {
        self.shared.healthy.load(Ordering::Relaxed)
    }
}

/// Records the call's duration and, when it fails, an error, labelled with `op`.
pub(super) async fn timed<T>(
    op: &'static str,
    call: impl Future<Output = Result<T, StateError>>,
) -> Result<T, StateError> {
    let started = Instant::now();
    let result = call.await;
    metrics::histogram!(metrics::REDIS_DURATION, "op" => op)
        .record(started.elapsed().as_secs_f64());
    if result.is_err() {
        metrics::counter!(metrics::REDIS_ERRORS, "op" => op).increment(1);
    }
    result
}

fn meta_key(channel: &ChannelName) -> String {
    format!("herald:{{{channel}}}:meta")
}

fn log_key(channel: &ChannelName) -> String {
    format!("herald:{{{channel}}}:log")
}

fn idempotency_key(channel: &ChannelName, key: &str) -> String {
    format!("herald:{{{channel}}}:idem:{key}")
}

pub(super) fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// A count as Redis takes it (COUNT and MAXLEN are signed 64-bit).
fn clamp(count: usize) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

pub(super) fn unavailable(error: RedisError) -> StateError {
    StateError::Unavailable(error.to_string())
}

/// A reply that does not have the shape the scripts return: a bug or a foreign key.
pub(super) fn malformed(what: impl std::fmt::Display) -> StateError {
    StateError::Unavailable(format!("unexpected Redis reply: {what}"))
}

pub(super) fn array<const N: usize>(value: Value) -> Result<[Value; N], StateError> {
    match value {
        Value::Array(items) => {
            let len = items.len();
            items
                .try_into()
                .map_err(|_| malformed(format!("{len} items, expected {N}")))
        }
        other => Err(malformed(format!("{:?}, expected an array", other.kind()))),
    }
}

pub(super) fn text(value: &Value) -> Result<&str, StateError> {
    match value {
        Value::String(text) => Ok(text),
        Value::Bytes(bytes) => std::str::from_utf8(bytes).map_err(|_| malformed("non-UTF-8 text")),
        other => Err(malformed(format!("{:?}, expected text", other.kind()))),
    }
}

/// A non-negative integer, sent by Redis as an integer or as text (a hash field).
fn integer(value: &Value) -> Result<u64, StateError> {
    match value {
        Value::Integer(n) => u64::try_from(*n).map_err(|_| malformed(format!("negative {n}"))),
        other => text(other)?
            .parse()
            .map_err(|_| malformed(format!("{other:?}, expected an integer"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_the_channel_hash_tag() {
        let channel = ChannelName::parse("org:acme:ch:general").unwrap();
        assert_eq!(meta_key(&channel), "herald:{org:acme:ch:general}:meta");
        assert_eq!(log_key(&channel), "herald:{org:acme:ch:general}:log");
        assert_eq!(
            idempotency_key(&channel, "k{1}"),
            "herald:{org:acme:ch:general}:idem:k{1}"
        );
    }

    #[test]
    fn replies_are_checked_not_trusted() {
        assert!(array::<2>(Value::Array(vec![Value::Null])).is_err());
        assert_eq!(integer(&Value::from("42")).unwrap(), 42);
        assert_eq!(integer(&Value::Integer(7)).unwrap(), 7);
        assert!(integer(&Value::Integer(-1)).is_err());
        assert!(text(&Value::Null).is_err());
    }
}
