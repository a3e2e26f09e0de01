//! Fan-out between nodes over NATS: every subscriber on every node gets each publication
//! once, in offset order; idempotency holds across nodes; interest follows subscribers;
//! services may publish ephemeral events straight to NATS.

use std::time::Duration;

use herald_api::v1::client::Publication as WirePublication;
use herald_testkit::within;
use prost::Message;

use crate::follower::Follower;
use crate::nodes::{Node, cluster, cluster_with, seq_request};

fn contiguous(from: u64, to: u64) -> Vec<u64> {
    (from..=to).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_on_any_node_reaches_every_subscriber_once_in_order() {
    let (_nats, _redis, nodes) = cluster(3).await;
    every_subscriber_gets_each_publication_once_in_order(&nodes).await;
}

/// Publications that come together are fanned out together (`HERALD_FANOUT_COALESCE_MS`):
/// the same sequence reaches every subscriber.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coalesced_publications_reach_every_subscriber_once_in_order() {
    let (_nats, _redis, nodes) = cluster_with(3, &[("HERALD_FANOUT_COALESCE_MS", "50")]).await;
    every_subscriber_gets_each_publication_once_in_order(&nodes).await;
}

async fn every_subscriber_gets_each_publication_once_in_order(nodes: &[Node]) {
    let channel = "org:acme:ch:fanout";
    let mut followers = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        for j in 0..2 {
            let sub = format!("user-{i}-{j}");
            followers.push(Follower::start(&sub, vec![node.ws_url.clone()], channel).await);
        }
    }

    let mut grpc = nodes[0].grpc().await;
    for n in 1..=20 {
        let position = nodes[0].publish(&mut grpc, channel, n, "").await.unwrap();
        assert_eq!(position.offset, n, "offsets are contiguous from 1");
    }
    // Concurrent publishers on two nodes interleave; every subscriber must still see one
    // contiguous sequence.
    let mut publishers = Vec::new();
    for (p, node) in [&nodes[0], &nodes[0], &nodes[1], &nodes[1]]
        .into_iter()
        .enumerate()
    {
        let mut grpc = node.grpc().await;
        publishers.push(tokio::spawn(async move {
            for i in 0..20 {
                let n = 100 + p as u64 * 20 + i;
                grpc.publish(seq_request(channel, n, ""))
                    .await
                    .expect("publish");
            }
        }));
    }
    for publisher in publishers {
        within("concurrent publishers", publisher).await.unwrap();
    }
    let total = 20 + 4 * 20;
    for follower in &mut followers {
        let received = follower
            .wait_until("every offset", |r| r.publications.len() >= total)
            .await;
        let epoch = received.last_epoch().unwrap().to_owned();
        assert_eq!(
            received.offsets(&epoch),
            contiguous(1, total as u64),
            "one epoch, every offset once, in order"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_idempotency_key_on_two_nodes_publishes_once() {
    let (_nats, _redis, nodes) = cluster(2).await;
    let channel = "org:acme:ch:idempotent";
    let mut follower = Follower::start("watcher", vec![nodes[1].ws_url.clone()], channel).await;
    let (mut a, mut b) = (nodes[0].grpc().await, nodes[1].grpc().await);
    let first = nodes[0]
        .publish(&mut a, channel, 1, "order-42")
        .await
        .unwrap();
    let retry = nodes[1]
        .publish(&mut b, channel, 2, "order-42")
        .await
        .unwrap();
    assert_eq!((retry.offset, &retry.epoch), (first.offset, &first.epoch));
    let next = nodes[1].publish(&mut b, channel, 3, "").await.unwrap();
    assert_eq!(next.offset, first.offset + 1, "the retry took no offset");
    let received = follower
        .wait_until("two publications", |r| r.publications.len() >= 2)
        .await;
    assert_eq!(received.values(), vec![1, 3], "the retry was not delivered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_subscribes_to_nats_only_for_channels_with_local_subscribers() {
    let (nats, _redis, nodes) = cluster(3).await;
    let channel = "org:acme:ch:interest";
    // Each node's one standing subscription: `herald.control`, server-side subscription
    // changes.
    let control = nodes.len() as u64;
    assert_eq!(
        nats.subscriptions().await,
        control,
        "no channel interest before subscribers"
    );

    let on_a = Follower::start("a1", vec![nodes[0].ws_url.clone()], channel).await;
    let also_on_a = Follower::start("a2", vec![nodes[0].ws_url.clone()], channel).await;
    assert_eq!(
        nats.subscriptions().await,
        control + 1,
        "one subject per node, not per socket"
    );
    let on_b = Follower::start("b1", vec![nodes[1].ws_url.clone()], channel).await;
    assert_eq!(nats.subscriptions().await, control + 2);

    let mut grpc = nodes[2].grpc().await;
    for n in 1..=5 {
        nodes[2].publish(&mut grpc, channel, n, "").await.unwrap();
    }
    let mut on_b = on_b;
    on_b.wait_until("five publications", |r| r.publications.len() >= 5)
        .await;
    let idle = nodes[2].metrics().await;
    assert!(
        !idle.contains("herald_nats_messages_received_total{"),
        "node-2 has no subscribers and received NATS traffic:\n{idle}"
    );

    drop((on_a, also_on_a, on_b));
    within("interest to drop after the last subscriber left", async {
        while nats.subscriptions().await != control {
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_may_publish_ephemeral_events_straight_to_nats() {
    let (nats, _redis, nodes) = cluster(2).await;
    let channel = "org:acme:ch:direct";
    let mut followers = vec![
        Follower::start("a", vec![nodes[0].ws_url.clone()], channel).await,
        Follower::start("b", vec![nodes[1].ws_url.clone()], channel).await,
    ];
    let service = within("NATS connect", async_nats::connect(nats.url()))
        .await
        .expect("NATS connects");
    let subject = "herald.app.org.acme.ch.direct";
    // Garbage is dropped by every node without harming anyone.
    service
        .publish(subject, bytes::Bytes::from_static(b"\xff\x01not protobuf"))
        .await
        .unwrap();
    let not_json = WirePublication {
        event: "typing".into(),
        data: b"{\"user\":".to_vec(),
        ..Default::default()
    };
    service
        .publish(subject, not_json.encode_to_vec().into())
        .await
        .unwrap();
    let typing = WirePublication {
        event: "typing".into(),
        data: br#"{"n":7,"user":"ada"}"#.to_vec(),
        ..Default::default()
    };
    service
        .publish(subject, typing.encode_to_vec().into())
        .await
        .unwrap();
    service.flush().await.unwrap();
    for follower in &mut followers {
        let received = follower
            .wait_until("the ephemeral event", |r| !r.publications.is_empty())
            .await;
        assert_eq!(received.values(), vec![7]);
        assert_eq!(received.publications[0].1, 0, "ephemeral: no offset");
    }
    let metrics = nodes[0].metrics().await;
    assert!(
        metrics.contains("herald_nats_messages_received_total{result=\"invalid\"} 2"),
        "{metrics}"
    );
}
