//! Faults mid-stream: a node killed, NATS restarted, Redis flushed and stopped. Publishing
//! goes on throughout; every subscriber ends with every publication once, in order, or is
//! told honestly (`recovered: false`) that it cannot have them.

use std::time::Duration;

use herald_testkit::backends::{NatsServer, RedisServer};
use herald_testkit::within;
use tokio::task::JoinHandle;

use crate::follower::Follower;
use crate::nodes::{Node, seq_request};

/// Publishes `{"n": from..=to}` on `node`, one every `pace`, retrying a failed publish with
/// the same idempotency key (as a real publisher would).
async fn publish_stream(
    node: &Node,
    channel: &'static str,
    from: u64,
    to: u64,
    pace: Duration,
) -> JoinHandle<()> {
    let mut grpc = node.grpc().await;
    let node_id = node.id.clone();
    tokio::spawn(async move {
        for n in from..=to {
            let request = seq_request(channel, n, &format!("{node_id}-{n}"));
            let mut attempts = 0;
            while let Err(status) = grpc.publish(request.clone()).await {
                attempts += 1;
                assert!(attempts < 100, "publish {n} kept failing: {status}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            tokio::time::sleep(pace).await;
        }
    })
}

fn contiguous(from: u64, to: u64) -> Vec<u64> {
    (from..=to).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_of_a_killed_node_recover_everything_on_another() {
    let nats = NatsServer::start().await;
    let redis = RedisServer::start().await;
    let a = Node::start("node-a", &nats, &redis).await;
    let mut b = Node::start("node-b", &nats, &redis).await;
    let channel = "org:acme:ch:kill";
    let mut on_b = Vec::new();
    for i in 0..3 {
        let urls = vec![b.ws_url.clone(), a.ws_url.clone()];
        on_b.push(Follower::start(&format!("b{i}"), urls, channel).await);
    }
    let mut on_a = Follower::start("a0", vec![a.ws_url.clone()], channel).await;

    let total = 80;
    let publisher = publish_stream(&a, channel, 1, total, Duration::from_millis(10)).await;
    on_b[0]
        .wait_until("some publications before the kill", |r| {
            r.publications.len() >= 20
        })
        .await;
    b.kill().await;
    within("the publisher", publisher).await.unwrap();

    for follower in on_b.iter_mut().chain(std::iter::once(&mut on_a)) {
        let received = follower
            .wait_until("every publication", |r| r.values().last() == Some(&total))
            .await;
        let epoch = received.last_epoch().unwrap().to_owned();
        assert_eq!(received.offsets(&epoch), contiguous(1, total));
        assert_eq!(received.values(), contiguous(1, total));
        assert!(received.recoveries.iter().all(|r| *r), "{received:?}");
    }
    for follower in &on_b {
        assert!(
            follower.received().connections >= 2,
            "reconnected to node-a"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_restart_loses_nothing() {
    let mut nats = NatsServer::start().await;
    let redis = RedisServer::start().await;
    let a = Node::start("node-a", &nats, &redis).await;
    let b = Node::start("node-b", &nats, &redis).await;
    let channel = "org:acme:ch:nats-restart";
    let mut followers = vec![
        Follower::start("a0", vec![a.ws_url.clone()], channel).await,
        Follower::start("b0", vec![b.ws_url.clone()], channel).await,
        Follower::start("b1", vec![b.ws_url.clone()], channel).await,
    ];

    let total = 60;
    let publisher = publish_stream(&a, channel, 1, total, Duration::from_millis(20)).await;
    followers[1]
        .wait_until("some publications before the restart", |r| {
            r.publications.len() >= 15
        })
        .await;
    nats.stop().await;
    a.wait_ready(503).await;
    b.wait_ready(503).await;
    tokio::time::sleep(Duration::from_millis(300)).await; // publishing goes on meanwhile
    nats.restart().await;
    a.wait_ready(200).await;
    b.wait_ready(200).await;
    within("the publisher", publisher).await.unwrap();

    for follower in &mut followers {
        let received = follower
            .wait_until("every publication", |r| r.values().last() == Some(&total))
            .await;
        let epoch = received.last_epoch().unwrap().to_owned();
        assert_eq!(received.offsets(&epoch), contiguous(1, total));
        assert_eq!(received.connections, 1, "sockets stayed open");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_redis_state_is_reported_and_a_stopped_redis_fails_publishes() {
    let nats = NatsServer::start().await;
    let mut redis = RedisServer::start().await;
    let a = Node::start("node-a", &nats, &redis).await;
    let b = Node::start("node-b", &nats, &redis).await;
    let channel = "org:acme:ch:redis-faults";
    let mut follower = Follower::start("b0", vec![b.ws_url.clone()], channel).await;
    let mut grpc = a.grpc().await;

    for n in 1..=10 {
        a.publish(&mut grpc, channel, n, "").await.unwrap();
    }
    let before = follower
        .wait_until("ten publications", |r| r.publications.len() >= 10)
        .await;
    let old_epoch = before.last_epoch().unwrap().to_owned();

    // History lost: the channel starts a new epoch and the subscriber learns it cannot
    // recover across it.
    redis.flushall().await;
    let position = a.publish(&mut grpc, channel, 11, "").await.unwrap();
    assert_eq!(position.offset, 1, "offsets restart");
    assert_ne!(position.epoch, old_epoch, "a new epoch");
    let after = follower
        .wait_until("a failed recovery", |r| r.recoveries.contains(&false))
        .await;
    assert!(!after.recoveries.contains(&true), "{after:?}");
    for n in 12..=14 {
        a.publish(&mut grpc, channel, n, "").await.unwrap();
    }
    let after = follower
        .wait_until("publications of the new epoch", |r| {
            r.values().last() == Some(&14)
        })
        .await;
    let new_epoch: Vec<u64> = after.offsets(&position.epoch);
    assert!(
        new_epoch.windows(2).all(|w| w[1] == w[0] + 1) && new_epoch.last() == Some(&4),
        "{after:?}"
    );

    // Redis down: a publish to a history channel fails, and is never delivered later.
    redis.stop().await;
    // Each fails within the publish's bound, rather than waiting for Redis.
    for n in 1000..1003 {
        let status = a.publish(&mut grpc, channel, n, "").await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status}");
    }
    a.wait_ready(503).await;
    redis.restart().await;
    a.wait_ready(200).await;
    b.wait_ready(200).await;
    within("publishing to resume", async {
        while a.publish(&mut grpc, channel, 20, "").await.is_err() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    // The restarted Redis is empty: one more epoch, one more honest failed recovery.
    follower
        .wait_until("a second failed recovery", |r| {
            r.recoveries.iter().filter(|recovered| !**recovered).count() >= 2
        })
        .await;
    a.publish(&mut grpc, channel, 21, "").await.unwrap();
    let last = follower
        .wait_until("the publication after the restart", |r| {
            r.values().contains(&21)
        })
        .await;
    assert!(
        last.values().iter().all(|n| *n < 1000),
        "a failed publish was delivered: {last:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_redis_during_a_gap_fill_is_retried_not_reported_lost() {
    let nats = NatsServer::start().await;
    let redis = RedisServer::start().await;
    // Two seconds of gap wait, so Redis is surely paused when node-b reads the gap.
    let settings = [("HERALD_GAP_WAIT_MS", "2000")];
    let a = Node::start_with("node-a", &nats, &redis, &settings).await;
    let b = Node::start_with("node-b", &nats, &redis, &settings).await;
    let channel = "org:acme:ch:slow";
    let mut follower = Follower::start("f", vec![b.ws_url.clone()], channel).await;
    let mut grpc = a.grpc().await;
    a.publish(&mut grpc, channel, 1, "").await.unwrap();
    follower
        .wait_until("offset 1", |r| r.publications.len() == 1)
        .await;

    // Offset 2 is stored but never broadcast (as if NATS dropped it), so offset 3 opens a gap
    // on node-b; Redis then stalls through node-b's first history read.
    let state = crate::redis_state::connect(&redis).await;
    crate::redis_state::append_to(&state, channel, 2, crate::redis_state::history(100), None)
        .await
        .unwrap();
    a.publish(&mut grpc, channel, 3, "").await.unwrap();
    // Every client's commands wait 6 s: from before node-b's read (2 s) past its 2 s timeout.
    assert_eq!(
        redis.command(&["CLIENT", "PAUSE", "6000", "ALL"]).await,
        "OK"
    );
    let received = follower
        .wait_until("offsets 2 and 3 after Redis woke up", |r| {
            r.publications.len() == 3
        })
        .await;
    let epoch = received.last_epoch().unwrap().to_owned();
    assert_eq!(received.offsets(&epoch), vec![1, 2, 3]);
    assert!(
        received.recoveries.is_empty(),
        "a slow Redis sent the subscriber to resubscribe: {received:?}"
    );
    let metrics = b.metrics().await;
    assert!(
        metrics.contains("herald_gap_fills_total{result=\"lost\"} 0"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("herald_gap_fills_total{result=\"error\"} 0"),
        "the failed attempt is counted as an error: {metrics}"
    );
}
