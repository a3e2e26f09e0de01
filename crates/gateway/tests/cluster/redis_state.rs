//! `RedisState` against a real redis-server: offsets, epochs, history, idempotency,
//! expiry, and what happens when Redis goes away and comes back.

use std::sync::Arc;
use std::time::Duration;

use herald_gateway::envelope::EnvelopeLimits;
use herald_gateway::state::{
    Append, Appended, Duplicate, HistoryPolicy, Position, RedisState, Settlement, State,
    StateError, is_unpublished, unpublished_recovers,
};
use herald_protocol::{ChannelName, Publication};
use herald_testkit::backends::RedisServer;
use herald_testkit::{until, within};
use serde_json::value::RawValue;

pub const LIMITS: EnvelopeLimits = EnvelopeLimits {
    max_data_bytes: 65536,
    max_json_depth: 32,
};
const CHANNEL: &str = "org:acme:ch:general";

pub async fn connect(redis: &RedisServer) -> RedisState {
    let state = RedisState::connect(&redis.url(), LIMITS, Duration::from_secs(5))
        .await
        .expect("URL is valid");
    assert!(state.is_healthy(), "connected within 5 s");
    state
}

pub fn channel(name: &str) -> ChannelName {
    ChannelName::parse(name).unwrap()
}

pub fn publication(name: &str, data: &str) -> Publication {
    Publication {
        channel: channel(name),
        event: Arc::from("message.created"),
        data: Arc::from(RawValue::from_string(data.to_owned()).unwrap()),
        offset: 0,
        epoch: Arc::from(""),
        ts: 1_764_000_000_000,
        from: None,
    }
}

pub fn history(size: usize) -> Option<HistoryPolicy> {
    Some(HistoryPolicy {
        size,
        ttl: Duration::from_secs(300),
    })
}

pub async fn append_to(
    state: &RedisState,
    name: &str,
    n: u64,
    policy: Option<HistoryPolicy>,
    key: Option<&str>,
) -> Result<Appended, StateError> {
    state
        .append(Append {
            publication: publication(name, &format!("{{\"n\":{n}}}")),
            history: policy,
            idempotency_key: key,
        })
        .await
}

/// Appends to [`CHANNEL`] with history 100 and expects a new publication.
async fn append(state: &RedisState, n: u64) -> Publication {
    match append_to(state, CHANNEL, n, history(100), None).await {
        Ok(Appended::New(publication)) => publication,
        other => panic!("expected a new publication, got {other:?}"),
    }
}

async fn offsets(state: &RedisState, since: u64, limit: usize) -> Vec<u64> {
    let slice = state
        .history(&channel(CHANNEL), since, limit)
        .await
        .unwrap();
    slice.publications.iter().map(|p| p.offset).collect()
}

pub fn meta(name: &str) -> String {
    format!("herald:{{{name}}}:meta")
}

#[tokio::test]
async fn offsets_are_contiguous_from_one_in_one_epoch() {
    let redis = RedisServer::start().await;
    let state = connect(&redis).await;
    let first = append(&state, 1).await;
    assert_eq!(first.offset, 1);
    assert!(!first.epoch.is_empty());
    for n in 2..=5 {
        let publication = append(&state, n).await;
        assert_eq!(
            (publication.offset, &*publication.epoch),
            (n, &*first.epoch)
        );
    }

    // Concurrent publishers never share or skip an offset.
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let state = state.clone();
            tokio::spawn(async move {
                let mut offsets = Vec::new();
                for n in 0..25 {
                    offsets.push(append(&state, n).await.offset);
                }
                offsets
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all.sort_unstable();
    assert_eq!(all, (6..=105).collect::<Vec<u64>>());

    let position = state.position(&channel(CHANNEL)).await.unwrap();
    assert_eq!(
        position,
        Position {
            offset: 105,
            epoch: first.epoch.clone()
        }
    );
    assert_eq!(
        offsets(&state, 0, 1000).await,
        (6..=105).collect::<Vec<u64>>()
    );
}

#[tokio::test]
async fn history_is_capped_and_paged_by_offset() {
    let redis = RedisServer::start().await;
    let state = connect(&redis).await;
    for n in 1..=12 {
        append_to(&state, CHANNEL, n, history(5), None)
            .await
            .unwrap();
    }
    assert_eq!(offsets(&state, 0, 100).await, vec![8, 9, 10, 11, 12]);
    assert_eq!(offsets(&state, 9, 2).await, vec![10, 11], "exclusive start");
    assert_eq!(
        offsets(&state, 3, 2).await,
        vec![8, 9],
        "older ones are gone"
    );
    assert!(offsets(&state, 12, 10).await.is_empty());
    assert_eq!(
        offsets(&state, 10, usize::MAX).await,
        vec![11, 12],
        "no limit"
    );
    let unbounded = append_to(&state, "org:acme:ch:big", 1, history(usize::MAX), None).await;
    assert!(matches!(unbounded, Ok(Appended::New(_))), "{unbounded:?}");

    let slice = state.history(&channel(CHANNEL), 0, 0).await.unwrap();
    assert!(
        slice.publications.is_empty(),
        "limit 0 reads the position only"
    );
    assert_eq!(slice.position.offset, 12);
    let data: Vec<String> = state
        .history(&channel(CHANNEL), 10, 100)
        .await
        .unwrap()
        .publications
        .iter()
        .map(|p| p.data.get().to_owned())
        .collect();
    assert_eq!(data, vec![r#"{"n":11}"#, r#"{"n":12}"#]);
}

#[tokio::test]
async fn publications_round_trip() {
    let redis = RedisServer::start().await;
    let state = connect(&redis).await;
    // Escapes, non-ASCII and number spelling must survive byte for byte (nodes store data
    // compacted; history written before that rule is compacted when read).
    let data = "{\"text\":\"h\u{e9}llo \\\"q\\\"\\n\\u00e9\",\"n\":[1,2.50,-0,1e3,null]}";
    let mut sent = publication(CHANNEL, data);
    sent.event = Arc::from("message.updated");
    sent.ts = 1_764_123_456_789;
    sent.from = Some(Arc::from("alice"));
    let Appended::New(returned) = state
        .append(Append {
            publication: sent.clone(),
            history: history(10),
            idempotency_key: None,
        })
        .await
        .unwrap()
    else {
        panic!("new")
    };
    append(&state, 2).await;

    let slice = state.history(&channel(CHANNEL), 0, 10).await.unwrap();
    let (stored, other) = (&slice.publications[0], &slice.publications[1]);
    for publication in [&returned, stored] {
        assert_eq!(publication.channel.as_str(), CHANNEL);
        assert_eq!(&*publication.event, "message.updated");
        assert_eq!(publication.data.get(), data);
        assert_eq!(publication.ts, 1_764_123_456_789);
        assert_eq!(publication.from.as_deref(), Some("alice"));
        assert_eq!(publication.offset, 1);
        assert_eq!(publication.epoch, returned.epoch);
    }
    assert_eq!(other.from, None, "no sender stays no sender");
    assert_eq!(other.offset, 2);
    assert_eq!(&*slice.position.epoch, &*returned.epoch);
}

#[tokio::test]
async fn an_undecodable_entry_is_an_error_not_a_gap() {
    let redis = RedisServer::start().await;
    let state = connect(&redis).await;
    append(&state, 1).await;
    let log = format!("herald:{{{CHANNEL}}}:log");
    redis
        .command(&["XADD", &log, "2-0", "p", "\u{1}not protobuf"])
        .await;
    let error = state.history(&channel(CHANNEL), 0, 10).await.unwrap_err();
    let StateError::Unavailable(reason) = error;
    assert!(reason.contains("2-0"), "names the entry: {reason}");
    assert_eq!(
        offsets(&state, 0, 1).await,
        vec![1],
        "entries before it still read"
    );
}

#[tokio::test]
async fn an_idempotency_key_returns_the_first_position_and_stores_nothing() {
    let redis = RedisServer::start().await;
    let state = connect(&redis).await;
    let Appended::New(first) = append_to(&state, CHANNEL, 1, history(10), Some("k1"))
        .await
        .unwrap()
    else {
        panic!("new")
    };
    let broadcast = Position {
        offset: first.offset,
        epoch: first.epoch.clone(),
    };
    state
        .settle(&first.channel, "k1", Settlement::Broadcast(broadcast))
        .await
        .unwrap();
    let again = append_to(&state, CHANNEL, 2, history(10), Some("k1")).await;
    let Ok(Appended::Duplicate(Duplicate::Sent(position))) = again else {
        panic!("expected a duplicate, got {again:?}")
    };
    assert_eq!(
        position,
        Position {
            offset: 1,
            epoch: first.epoch.clone()
        }
    );
    let slice = state.history(&channel(CHANNEL), 0, 10).await.unwrap();
    assert_eq!(slice.publications.len(), 1, "the retry stored nothing");
    assert_eq!(slice.publications[0].data.get(), r#"{"n":1}"#);
    assert_eq!(slice.position.offset, 1);
    let Appended::New(other) = append_to(&state, CHANNEL, 3, history(10), Some("k2"))
        .await
        .unwrap()
    else {
        panic!("a new key is new")
    };
    assert_eq!(other.offset, 2);
    let idem = format!("herald:{{{CHANNEL}}}:idem:k1");
    let ttl: u64 = redis.command(&["PTTL", &idem]).await.parse().unwrap();
    assert!(
        (290_000..=300_000).contains(&ttl),
        "remembered for the window: {ttl} ms"
    );

    // A channel without history records the key only: position 0, no epoch, no meta.
    let ephemeral = "org:acme:ch:typing";
    let Appended::New(sent) = append_to(&state, ephemeral, 1, None, Some("e1"))
        .await
        .unwrap()
    else {
        panic!("new")
    };
    assert_eq!((sent.offset, &*sent.epoch), (0, ""));
    state
        .settle(
            &sent.channel,
            "e1",
            Settlement::Broadcast(Position::default()),
        )
        .await
        .unwrap();
    let again = append_to(&state, ephemeral, 2, None, Some("e1")).await;
    let Ok(Appended::Duplicate(Duplicate::Sent(position))) = again else {
        panic!("expected a duplicate, got {again:?}")
    };
    assert_eq!(position, Position::default());
    assert_eq!(redis.command(&["EXISTS", &meta(ephemeral)]).await, "0");
}

#[tokio::test]
async fn flushall_starts_a_new_epoch_from_offset_one() {
    let redis = RedisServer::start().await;
    let state = connect(&redis).await;
    for n in 1..=3 {
        append(&state, n).await;
    }
    let before = state.position(&channel(CHANNEL)).await.unwrap();
    redis.flushall().await;
    let after = append(&state, 4).await;
    assert_eq!(after.offset, 1);
    assert_ne!(after.epoch, before.epoch);
    assert_eq!(offsets(&state, 0, 10).await, vec![1]);
}

#[tokio::test]
async fn positions_reads_many_channels_and_never_creates_one() {
    let redis = RedisServer::start().await;
    let state = connect(&redis).await;
    assert!(state.positions(&[]).await.unwrap().is_empty());
    for n in 1..=3 {
        append(&state, n).await;
    }
    let known = state.position(&channel(CHANNEL)).await.unwrap();
    let unknown = "org:acme:ch:unknown";
    let positions = state
        .positions(&[channel(unknown), channel(CHANNEL), channel(unknown)])
        .await
        .unwrap();
    assert_eq!(positions, vec![None, Some(known.clone()), None]);
    assert_eq!(redis.command(&["EXISTS", &meta(unknown)]).await, "0");

    // Nor does `position`, nor `history`: only a publication creates an epoch.
    let unpublished = state.position(&channel(unknown)).await.unwrap();
    assert_eq!(unpublished.offset, 0);
    assert!(is_unpublished(&unpublished.epoch), "{unpublished:?}");
    let slice = state.history(&channel(unknown), 0, 10).await.unwrap();
    assert!(slice.publications.is_empty() && is_unpublished(&slice.position.epoch));
    assert_eq!(redis.command(&["EXISTS", &meta(unknown)]).await, "0");
    let first = match append_to(&state, unknown, 1, history(100), None).await {
        Ok(Appended::New(publication)) => publication,
        other => panic!("expected a new publication, got {other:?}"),
    };
    assert_eq!(first.offset, 1);
    assert!(
        unpublished_recovers(&unpublished.epoch, &first.epoch, Duration::from_secs(300)),
        "the read recovers the epoch its channel's first publication began: {unpublished:?} {first:?}"
    );
    let positions = state
        .positions(&[channel(CHANNEL), channel(unknown)])
        .await
        .unwrap();
    let created = Position {
        offset: 1,
        epoch: first.epoch.clone(),
    };
    assert_eq!(positions, vec![Some(known), Some(created)]);
}

#[tokio::test]
async fn reads_of_a_thousand_never_seen_channels_write_no_key() {
    let redis = RedisServer::start().await;
    let state = connect(&redis).await;
    append(&state, 1).await;
    let before = redis.command(&["DBSIZE"]).await;
    for n in 0..1_000u64 {
        let name = format!("user:me:never-seen-{n}");
        let slice = state.history(&channel(&name), n % 3, 10).await.unwrap();
        assert!(slice.publications.is_empty() && is_unpublished(&slice.position.epoch));
        let position = state.position(&channel(&name)).await.unwrap();
        assert!(is_unpublished(&position.epoch), "{position:?}");
    }
    assert_eq!(
        redis.command(&["DBSIZE"]).await,
        before,
        "no key written by a read"
    );
}

#[tokio::test]
async fn a_stopped_redis_fails_fast_and_a_restarted_one_works_again() {
    let mut redis = RedisServer::start().await;
    let state = connect(&redis).await;
    append(&state, 1).await;

    redis.stop().await;
    // Fails, rather than waiting for the server to come back.
    let result = within(
        "an append to fail",
        append_to(&state, CHANNEL, 2, history(100), Some("k")),
    )
    .await;
    assert!(
        matches!(result, Err(StateError::Unavailable(_))),
        "expected Unavailable, got {result:?}"
    );
    until("unhealthy", Duration::from_secs(5), || async {
        !state.is_healthy()
    })
    .await;
    within("reads to fail while disconnected", async {
        assert!(state.history(&channel(CHANNEL), 0, 10).await.is_err());
        assert!(state.position(&channel(CHANNEL)).await.is_err());
        assert!(state.positions(&[channel(CHANNEL)]).await.is_err());
    })
    .await;

    redis.restart().await;
    until("healthy again", Duration::from_secs(15), || async {
        state.is_healthy()
    })
    .await;
    // The restarted server is empty (no persistence) and has no scripts loaded.
    let after = append(&state, 3).await;
    assert_eq!(after.offset, 1);
}

#[tokio::test]
async fn a_node_starting_before_redis_becomes_healthy_when_it_appears() {
    let mut redis = RedisServer::start().await;
    redis.stop().await;
    let state = within(
        "a connect to an unreachable server to return",
        RedisState::connect(&redis.url(), LIMITS, Duration::from_millis(300)),
    )
    .await
    .expect("an unreachable server is not an error");
    assert!(!state.is_healthy());
    assert!(
        append_to(&state, CHANNEL, 1, history(10), None)
            .await
            .is_err()
    );

    redis.restart().await;
    until("healthy", Duration::from_secs(15), || async {
        state.is_healthy()
    })
    .await;
    assert_eq!(append(&state, 1).await.offset, 1);
}

#[tokio::test]
async fn an_invalid_url_is_an_error() {
    for url in ["not a url", "http://127.0.0.1:6379"] {
        let result = RedisState::connect(url, LIMITS, Duration::from_millis(100)).await;
        assert!(result.is_err(), "{url} accepted");
    }
}

#[tokio::test]
async fn scripts_are_reloaded_after_script_flush() {
    let redis = RedisServer::start().await;
    let state = connect(&redis).await;
    append(&state, 1).await;
    state.history(&channel(CHANNEL), 0, 10).await.unwrap();
    assert_eq!(redis.command(&["SCRIPT", "FLUSH"]).await, "OK");
    assert_eq!(append(&state, 2).await.offset, 2);
    assert_eq!(redis.command(&["SCRIPT", "FLUSH"]).await, "OK");
    assert_eq!(offsets(&state, 0, 10).await, vec![1, 2]);
}

#[tokio::test]
async fn history_and_its_meta_expire_with_the_ttl() {
    let redis = RedisServer::start().await;
    let state = connect(&redis).await;
    let short = Some(HistoryPolicy {
        size: 10,
        ttl: Duration::from_secs(1),
    });
    let Appended::New(first) = append_to(&state, CHANNEL, 1, short, None).await.unwrap() else {
        panic!("new")
    };
    let log = format!("herald:{{{CHANNEL}}}:log");
    for key in [meta(CHANNEL), log.clone()] {
        let ttl: u64 = redis.command(&["PTTL", &key]).await.parse().unwrap();
        assert!(
            (1..=1000).contains(&ttl),
            "{key} expires with the policy: {ttl} ms"
        );
    }
    until("meta to expire", Duration::from_secs(5), || async {
        redis.command(&["EXISTS", &meta(CHANNEL)]).await == "0"
    })
    .await;
    assert_eq!(redis.command(&["EXISTS", &log]).await, "0");
    assert_eq!(
        state.positions(&[channel(CHANNEL)]).await.unwrap(),
        vec![None]
    );
    let position = state.position(&channel(CHANNEL)).await.unwrap();
    assert_eq!(position.offset, 0);
    assert!(is_unpublished(&position.epoch), "{position:?}");
    let Appended::New(next) = append_to(&state, CHANNEL, 2, short, None).await.unwrap() else {
        panic!("new")
    };
    assert_ne!(next.epoch, first.epoch, "lost history means a new epoch");
}

#[tokio::test]
async fn redis_memory_of_a_full_channel_stays_within_its_budget() {
    let redis = RedisServer::start().await;
    let state = connect(&redis).await;
    // 100 publications of about 100 bytes of data, as the namespaces' default history keeps.
    let data = format!("{{\"text\":\"{}\"}}", "x".repeat(88));
    for _ in 0..150 {
        state
            .append(Append {
                publication: publication(CHANNEL, &data),
                history: history(100),
                idempotency_key: None,
            })
            .await
            .unwrap();
    }
    let log = redis
        .memory_usage(&format!("herald:{{{CHANNEL}}}:log"))
        .await;
    let meta = redis.memory_usage(&meta(CHANNEL)).await;
    append_to(&state, CHANNEL, 1, history(100), Some("order-123456"))
        .await
        .unwrap();
    let idempotency = redis
        .memory_usage(&format!("herald:{{{CHANNEL}}}:idem:order-123456"))
        .await;
    assert!(
        log < 100 * 400,
        "a full history costs {log} B, over 4x its payload"
    );
    assert!(meta < 512 && idempotency < 512, "{meta} B, {idempotency} B");
}

#[tokio::test]
async fn history_stored_with_raw_newlines_is_compacted_when_read() {
    let redis = RedisServer::start().await;
    let state = connect(&redis).await;
    // As a node before the compaction rule stored it: pretty-printed.
    state
        .append(Append {
            publication: publication(CHANNEL, "{\"a\":\n1,\r\n\"b\":\t\"x y\"}"),
            history: history(10),
            idempotency_key: None,
        })
        .await
        .unwrap();
    let slice = state.history(&channel(CHANNEL), 0, 10).await.unwrap();
    assert_eq!(slice.publications[0].data.get(), r#"{"a":1,"b":"x y"}"#);
}
