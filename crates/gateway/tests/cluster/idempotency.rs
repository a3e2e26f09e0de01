//! Idempotent retries after a failed publish: a key answers "already done" only once its
//! publication was broadcast. Against `RedisState` (the claim and its settlement) and end
//! to end through a node, with the faults that used to lose a retried publish: NATS down
//! during the first attempt, and a Redis reply lost after the script ran.

use std::time::Duration;

use futures_util::StreamExt;
use herald_api::v1::client::Publication as WirePublication;
use herald_gateway::state::{Appended, Duplicate, IDEMPOTENCY_WINDOW, Position, Settlement, State};
use herald_testkit::backends::{NatsServer, RedisServer};
use herald_testkit::within;
use prost::Message;

use crate::follower::Follower;
use crate::nodes::Node;
use crate::redis_state::{append_to, channel, connect, history, meta};

const CHANNEL: &str = "org:acme:ch:idem";
const EPHEMERAL: &str = "public:idem";

fn idem(channel: &str, key: &str) -> String {
    format!("herald:{{{channel}}}:idem:{key}")
}

/// Moves a claim on a channel without history back to time 0, so its lease is over
/// without waiting it out.
async fn expire_lease(redis: &RedisServer, channel: &str, key: &str) {
    let script = "local v = redis.call('GET', KEYS[1]) \
                  local sep = string.find(v, ':', 2, true) \
                  return redis.call('SET', KEYS[1], 'e0' .. string.sub(v, sep), 'KEEPTTL')";
    let reply = redis
        .command(&["EVAL", script, "1", &idem(channel, key)])
        .await;
    assert_eq!(reply, "OK", "claim rewritten");
}

#[tokio::test]
async fn a_claim_is_answered_as_done_only_once_settled_as_broadcast() {
    let redis = RedisServer::start().await;
    let state = connect(&redis).await;
    let Ok(Appended::New(first)) = append_to(&state, CHANNEL, 1, history(10), Some("k")).await
    else {
        panic!("new")
    };
    // Not settled (its node failed or never saw the reply): the retry gets the stored
    // publication to send, and takes no new offset.
    let again = append_to(&state, CHANNEL, 2, history(10), Some("k")).await;
    let Ok(Appended::Duplicate(Duplicate::Unsent(unsent))) = again else {
        panic!("expected the unsent first publication, got {again:?}")
    };
    assert_eq!(
        (unsent.offset, &unsent.epoch, unsent.data.get()),
        (1, &first.epoch, r#"{"n":1}"#)
    );
    assert_eq!((&*unsent.event, unsent.ts), (&*first.event, first.ts));

    let position = Position {
        offset: 1,
        epoch: first.epoch.clone(),
    };
    state
        .settle(&first.channel, "k", Settlement::Broadcast(position.clone()))
        .await
        .unwrap();
    // A late release (another attempt's failure) does not undo a broadcast.
    state
        .settle(&first.channel, "k", Settlement::Release)
        .await
        .unwrap();
    let again = append_to(&state, CHANNEL, 3, history(10), Some("k")).await;
    let Ok(Appended::Duplicate(Duplicate::Sent(sent))) = again else {
        panic!("expected sent, got {again:?}")
    };
    assert_eq!(sent, position);
    let slice = state.history(&channel(CHANNEL), 0, 10).await.unwrap();
    assert_eq!(slice.publications.len(), 1, "retries stored nothing");
    let ttl: u64 = redis
        .command(&["PTTL", &idem(CHANNEL, "k")])
        .await
        .parse()
        .unwrap();
    let window = IDEMPOTENCY_WINDOW.as_millis() as u64;
    assert!(
        (window - 10_000..=window).contains(&ttl),
        "settling keeps the window: {ttl} ms"
    );
}

#[tokio::test]
async fn without_history_a_claim_holds_the_publication_for_a_retry_after_its_lease() {
    let redis = RedisServer::start().await;
    let state = connect(&redis).await;
    let Ok(Appended::New(first)) = append_to(&state, EPHEMERAL, 1, None, Some("e")).await else {
        panic!("new")
    };
    assert_eq!((first.offset, &*first.epoch), (0, ""));
    // The first publish may still be sending it: sending it too could deliver it twice.
    let retry = append_to(&state, EPHEMERAL, 2, None, Some("e")).await;
    assert!(
        matches!(retry, Ok(Appended::Duplicate(Duplicate::InFlight))),
        "{retry:?}"
    );

    expire_lease(&redis, EPHEMERAL, "e").await;
    let retry = append_to(&state, EPHEMERAL, 3, None, Some("e")).await;
    let Ok(Appended::Duplicate(Duplicate::Unsent(held))) = retry else {
        panic!("expected the held publication after the lease, got {retry:?}")
    };
    assert_eq!(
        (held.data.get(), held.ts, held.offset),
        (r#"{"n":1}"#, first.ts, 0),
        "the first publication, not the retry's"
    );
    // The retry took the claim over, with a lease of its own.
    let retry = append_to(&state, EPHEMERAL, 4, None, Some("e")).await;
    assert!(
        matches!(retry, Ok(Appended::Duplicate(Duplicate::InFlight))),
        "{retry:?}"
    );

    // Its broadcast failed: released, so the next retry is a new publish.
    state
        .settle(&first.channel, "e", Settlement::Release)
        .await
        .unwrap();
    assert_eq!(redis.command(&["EXISTS", &idem(EPHEMERAL, "e")]).await, "0");
    let Ok(Appended::New(fresh)) = append_to(&state, EPHEMERAL, 5, None, Some("e")).await else {
        panic!("new after a release")
    };
    assert_eq!(fresh.data.get(), r#"{"n":5}"#);
    state
        .settle(
            &fresh.channel,
            "e",
            Settlement::Broadcast(Position::default()),
        )
        .await
        .unwrap();
    let again = append_to(&state, EPHEMERAL, 6, None, Some("e")).await;
    let Ok(Appended::Duplicate(Duplicate::Sent(position))) = again else {
        panic!("expected sent, got {again:?}")
    };
    assert_eq!(position, Position::default());
    assert_eq!(
        redis.command(&["EXISTS", &meta(EPHEMERAL)]).await,
        "0",
        "no history state for a channel without history"
    );
}

#[tokio::test]
async fn a_claim_whose_publication_left_history_answers_its_position() {
    let redis = RedisServer::start().await;
    let state = connect(&redis).await;
    let Ok(Appended::New(first)) = append_to(&state, CHANNEL, 1, history(1), Some("k")).await
    else {
        panic!("new")
    };
    append_to(&state, CHANNEL, 2, history(1), None)
        .await
        .unwrap();
    let again = append_to(&state, CHANNEL, 3, history(1), Some("k")).await;
    let Ok(Appended::Duplicate(Duplicate::Sent(position))) = again else {
        panic!("trimmed away, nothing to send: expected sent, got {again:?}")
    };
    assert_eq!((position.offset, &*position.epoch), (1, &*first.epoch));

    // The same when the epoch was lost: offset 1 of a new epoch is another publication.
    let Ok(Appended::New(lost)) = append_to(&state, CHANNEL, 4, history(10), Some("l")).await
    else {
        panic!("new")
    };
    redis
        .command(&["DEL", &meta(CHANNEL), &format!("herald:{{{CHANNEL}}}:log")])
        .await;
    append_to(&state, CHANNEL, 5, history(10), None)
        .await
        .unwrap();
    let again = append_to(&state, CHANNEL, 6, history(10), Some("l")).await;
    let Ok(Appended::Duplicate(Duplicate::Sent(position))) = again else {
        panic!("epoch lost: expected sent, got {again:?}")
    };
    assert_eq!((position.offset, &*position.epoch), (3, &*lost.epoch));
}

#[tokio::test]
async fn a_key_recorded_before_claims_existed_reads_as_broadcast() {
    let redis = RedisServer::start().await;
    let state = connect(&redis).await;
    // The value an older version wrote, still live during a rolling deploy.
    redis
        .command(&["SET", &idem(CHANNEL, "old"), "7:ep0ch", "PX", "60000"])
        .await;
    let again = append_to(&state, CHANNEL, 1, history(10), Some("old")).await;
    let Ok(Appended::Duplicate(Duplicate::Sent(position))) = again else {
        panic!("expected sent, got {again:?}")
    };
    assert_eq!((position.offset, &*position.epoch), (7, "ep0ch"));
}

/// Every message NATS carries on one channel's subject: what the nodes broadcast.
struct Broadcasts {
    subscriber: async_nats::Subscriber,
    _client: async_nats::Client,
}

impl Broadcasts {
    async fn watch(nats: &NatsServer, subject: &str) -> Broadcasts {
        let client = within("NATS connect", async_nats::connect(nats.url()))
            .await
            .expect("NATS connects");
        let subscriber = client.subscribe(subject.to_owned()).await.unwrap();
        within("NATS flush", client.flush()).await.unwrap();
        Broadcasts {
            subscriber,
            _client: client,
        }
    }

    /// The next broadcast's offset and `n`.
    async fn next(&mut self, what: &str) -> (u64, u64) {
        let message = within(what, self.subscriber.next())
            .await
            .expect("NATS subscription open");
        let publication = WirePublication::decode(message.payload).expect("an envelope");
        let data: serde_json::Value = serde_json::from_slice(&publication.data).unwrap();
        (publication.offset, data["n"].as_u64().unwrap())
    }
}

/// Retries `publish` as a publisher would, until it succeeds (bounded).
async fn retry_until_ok(
    node: &Node,
    grpc: &mut herald_testkit::grpc::Grpc,
    channel: &str,
    n: u64,
    key: &str,
) -> herald_api::v1::PublishResponse {
    within(&format!("a retry of {key} to succeed"), async {
        loop {
            match node.publish(grpc, channel, n, key).await {
                Ok(position) => return position,
                Err(status) => assert_eq!(status.code(), tonic::Code::Unavailable, "{status}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_that_failed_while_nats_was_down_is_delivered_when_retried() {
    let mut nats = NatsServer::start().await;
    let redis = RedisServer::start().await;
    let node = Node::start("node-a", &nats, &redis).await;
    let mut grpc = node.grpc().await;

    nats.stop().await;
    node.wait_ready(503).await;
    let status = node
        .publish(&mut grpc, EPHEMERAL, 1, "k-retry")
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status}");
    // A channel with history stores it and answers (nodes fill it from history later).
    let stored = node
        .publish(&mut grpc, CHANNEL, 1, "h-retry")
        .await
        .unwrap();
    assert_eq!(stored.offset, 1);

    nats.restart().await;
    node.wait_ready(200).await;
    let mut follower = Follower::start("ada", vec![node.ws_url.clone()], EPHEMERAL).await;
    let mut broadcasts = Broadcasts::watch(&nats, "herald.node.org.acme.ch.idem").await;

    let retried = node
        .publish(&mut grpc, EPHEMERAL, 1, "k-retry")
        .await
        .unwrap();
    assert_eq!((retried.offset, retried.epoch.as_str()), (0, ""));
    follower
        .wait_until("the retried publication", |r| r.values() == [1])
        .await;
    // Now it was broadcast: a further retry sends nothing (the marker comes next).
    node.publish(&mut grpc, EPHEMERAL, 1, "k-retry")
        .await
        .unwrap();
    node.publish(&mut grpc, EPHEMERAL, 2, "").await.unwrap();
    let received = follower
        .wait_until("the marker", |r| r.values().contains(&2))
        .await;
    assert_eq!(received.values(), vec![1, 2], "delivered once");

    // The stored one was never broadcast: a retry broadcasts it, once.
    let retried = node
        .publish(&mut grpc, CHANNEL, 9, "h-retry")
        .await
        .unwrap();
    assert_eq!((retried.offset, &retried.epoch), (1, &stored.epoch));
    assert_eq!(broadcasts.next("the re-broadcast").await, (1, 1));
    node.publish(&mut grpc, CHANNEL, 9, "h-retry")
        .await
        .unwrap();
    node.publish(&mut grpc, CHANNEL, 2, "").await.unwrap();
    assert_eq!(
        broadcasts.next("the marker").await,
        (2, 2),
        "the second retry broadcast nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_whose_redis_reply_was_lost_is_delivered_when_retried() {
    let nats = NatsServer::start().await;
    let redis = RedisServer::start().await;
    let node = Node::start("node-a", &nats, &redis).await;
    let mut ephemeral = Follower::start("ada", vec![node.ws_url.clone()], EPHEMERAL).await;
    let mut stored = Follower::start("bob", vec![node.ws_url.clone()], CHANNEL).await;
    let mut broadcasts = Broadcasts::watch(&nats, "herald.node.org.acme.ch.idem").await;
    let (mut grpc, mut other) = (node.grpc().await, node.grpc().await);
    // Loads the scripts, so the paused call below is the script itself.
    node.publish(&mut grpc, "org:acme:ch:warmup", 0, "warmup")
        .await
        .unwrap();

    // Redis holds both scripts past the node's 2 s command timeout, then runs them: the
    // keys are claimed, the publications stored, and the node answered UNAVAILABLE.
    let paused = redis.command(&["CLIENT", "PAUSE", "3000", "WRITE"]).await;
    assert_eq!(paused, "OK");
    let (lost, lost_stored) = tokio::join!(
        node.publish(&mut grpc, EPHEMERAL, 1, "k-lost"),
        node.publish(&mut other, CHANNEL, 1, "h-lost"),
    );
    for status in [lost.unwrap_err(), lost_stored.unwrap_err()] {
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status}");
    }
    within("the paused scripts to run", async {
        while redis.command(&["EXISTS", &idem(EPHEMERAL, "k-lost")]).await != "1"
            || redis.command(&["EXISTS", &idem(CHANNEL, "h-lost")]).await != "1"
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;

    // Without history, the lost attempt still holds its lease: the retry is refused as in
    // flight (not answered as done), then sends the publication once the lease is over.
    let status = node
        .publish(&mut grpc, EPHEMERAL, 1, "k-lost")
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status}");
    assert!(status.message().contains("in progress"), "{status}");
    retry_until_ok(&node, &mut grpc, EPHEMERAL, 1, "k-lost").await;
    ephemeral
        .wait_until("the retried publication", |r| r.values() == [1])
        .await;
    node.publish(&mut grpc, EPHEMERAL, 1, "k-lost")
        .await
        .unwrap();
    node.publish(&mut grpc, EPHEMERAL, 2, "").await.unwrap();
    let received = ephemeral
        .wait_until("the marker", |r| r.values().contains(&2))
        .await;
    assert_eq!(received.values(), vec![1, 2], "delivered once");

    // With history, the retry broadcasts the stored publication at its offset right away.
    let retried = node.publish(&mut grpc, CHANNEL, 9, "h-lost").await.unwrap();
    assert_eq!(retried.offset, 1);
    assert_eq!(broadcasts.next("the re-broadcast").await, (1, 1));
    node.publish(&mut grpc, CHANNEL, 9, "h-lost").await.unwrap();
    node.publish(&mut grpc, CHANNEL, 2, "").await.unwrap();
    assert_eq!(
        broadcasts.next("the marker").await,
        (2, 2),
        "the second retry broadcast nothing"
    );
    let received = stored
        .wait_until("both publications", |r| r.values().contains(&2))
        .await;
    assert_eq!(received.values(), vec![1, 2], "delivered once, in order");
}
