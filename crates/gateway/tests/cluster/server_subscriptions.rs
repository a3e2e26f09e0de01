//! Server-side subscriptions across nodes: a `Subscribe` on one node reaches the user's
//! connections on every node over NATS; the kept subscription lives in Redis, so a
//! reconnect to another node restores it and recovers; `Unsubscribe` anywhere ends it.

use herald_client::{Client, ConnectOptions, ReceivedPublication};
use herald_protocol::reply::SubscribeResult;
use herald_testkit::client::{next_publication, next_push};
use herald_testkit::grpc::{Grpc, subscribe_request, unsubscribe_request};
use herald_testkit::tokens::{claims, sign};
use herald_testkit::within;
use serde_json::json;

use crate::nodes::{Node, cluster};

const ROOM: &str = "org:acme:room:42";

fn token(user: &str) -> String {
    sign(&claims(user, &["acme"], &[], 3600))
}

async fn connect(url: &str, user: &str, subs: serde_json::Value) -> Client {
    let client = within("upgrade", Client::open(ConnectOptions::new(url)))
        .await
        .expect("upgrade");
    within(
        "connect",
        client.request("connect", json!({"token": token(user), "subs": subs})),
    )
    .await
    .expect("connects");
    client
}

async fn subscribed(client: &Client) -> SubscribeResult<ReceivedPublication> {
    let push = next_push(client, "a subscribe push", |push| push.subscribe.is_some()).await;
    assert_eq!(push.channel.as_deref(), Some(ROOM));
    push.subscribe.expect("a subscribe push")
}

/// gRPC `Subscribe` of alice's connections (or the one connection `client`) to `channel`,
/// which must succeed.
async fn subscribe_alice(grpc: &mut Grpc, channel: &str, client: &str) {
    let request = subscribe_request("alice", channel, client);
    within("gRPC Subscribe", grpc.subscribe(request))
        .await
        .expect("Subscribe");
}

/// Proves `client` got nothing of `ROOM` since its last push: a publication through `node`
/// on a public channel it subscribes to now is its next push.
async fn nothing_of_room_before(node: &Node, grpc: &mut Grpc, client: &Client, marker: &str) {
    within("subscribe marker", client.subscribe(marker))
        .await
        .expect("public subscribe");
    node.publish(grpc, marker, 1, "").await.expect("publish");
    let push = within("next push", client.next_push()).await.expect("open");
    assert_eq!(
        (push.channel.as_deref(), push.publication.is_some()),
        (Some(marker), true),
        "nothing of {ROOM} came first: {push:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_on_one_node_reaches_the_user_on_another_and_survives_a_move() {
    let (_nats, _redis, nodes) = cluster(2).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let on_b = connect(&b.ws_url, "alice", json!({})).await;
    let on_a = connect(&a.ws_url, "alice", json!({})).await;

    let mut grpc_a = a.grpc().await;
    subscribe_alice(&mut grpc_a, ROOM, "").await;
    subscribed(&on_b).await;
    subscribed(&on_a).await;
    let mut epoch = String::new();
    for n in 1..=2 {
        a.publish(&mut grpc_a, ROOM, n, "").await.expect("publish");
        for client in [&on_b, &on_a] {
            let publication = next_publication(client).await;
            assert_eq!(publication.offset, n);
            epoch = publication.epoch;
        }
    }

    // Alice's phone drops off node B, misses two, and comes back through node A.
    within("close", on_b.close()).await.expect("closes");
    for n in 3..=4 {
        a.publish(&mut grpc_a, ROOM, n, "").await.expect("publish");
    }
    let moved = connect(
        &a.ws_url,
        "alice",
        json!({ ROOM: {"offset": 2, "epoch": epoch} }),
    )
    .await;
    let restored = subscribed(&moved).await;
    assert!(
        restored.recovered,
        "kept in Redis, recovered on another node"
    );
    let offsets: Vec<u64> = restored.publications.iter().map(|p| p.offset).collect();
    assert_eq!(offsets, [3, 4]);

    // Unsubscribe through node B ends it on node A's connections.
    let mut grpc_b = b.grpc().await;
    let request = unsubscribe_request("alice", ROOM, "");
    within("Unsubscribe on node B", grpc_b.unsubscribe(request))
        .await
        .expect("Unsubscribe");
    for client in [&moved, &on_a] {
        let push = next_push(client, "an unsubscribe push", |push| {
            push.unsubscribe.is_some()
        })
        .await;
        assert_eq!(push.unsubscribe.unwrap().code, 2000);
    }
    let later = connect(&b.ws_url, "alice", json!({})).await;
    // Nothing kept any more: no restored subscription.
    nothing_of_room_before(b, &mut grpc_b, &later, "public:later").await;
}

/// A `Subscribe` or `Unsubscribe` naming one connection reaches that connection on the
/// other node, and none of the user's others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_scoped_change_on_one_node_reaches_that_connection_on_another() {
    let (_nats, _redis, nodes) = cluster(2).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let (web, web_result) = within("connect", Client::connect(&b.ws_url, &token("alice")))
        .await
        .expect("connects");
    let (phone, phone_result) = within("connect", Client::connect(&b.ws_url, &token("alice")))
        .await
        .expect("connects");
    let mut grpc_a = a.grpc().await;
    subscribe_alice(&mut grpc_a, ROOM, &web_result.client).await;
    subscribed(&web).await;
    // A user's changes apply in order: the phone's first push is its own, so the one
    // naming the web connection did not reach it.
    let other = "org:acme:room:43";
    subscribe_alice(&mut grpc_a, other, &phone_result.client).await;
    let push = next_push(&phone, "a subscribe push", |push| push.subscribe.is_some()).await;
    assert_eq!(push.channel.as_deref(), Some(other));
    subscribe_alice(&mut grpc_a, ROOM, &phone_result.client).await;
    subscribed(&phone).await;

    let request = unsubscribe_request("alice", ROOM, &web_result.client);
    within("Unsubscribe web", grpc_a.unsubscribe(request))
        .await
        .expect("Unsubscribe");
    let push = next_push(&web, "an unsubscribe push", |push| {
        push.unsubscribe.is_some()
    })
    .await;
    assert_eq!(push.channel.as_deref(), Some(ROOM));
    assert_eq!(push.unsubscribe.unwrap().code, 2000);
    // The phone keeps the room: it gets the next publication, the web connection does not.
    a.publish(&mut grpc_a, ROOM, 1, "").await.expect("publish");
    assert_eq!(next_publication(&phone).await.offset, 1);
    nothing_of_room_before(a, &mut grpc_a, &web, "public:web").await;
}

/// A user's kept subscriptions are a Redis set that expires
/// `HERALD_SERVER_SUBSCRIPTION_TTL_SECONDS` (24 h) after the last `Subscribe` or connect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_subscriptions_expire_a_day_after_the_last_subscribe_or_connect() {
    const DAY: i64 = 24 * 3600;
    let (_nats, redis, nodes) = cluster(1).await;
    let key = "herald:user:{alice}:subs";
    let ttl = || async { redis.command(&["TTL", key]).await.parse::<i64>().unwrap() };
    let mut grpc = nodes[0].grpc().await;
    subscribe_alice(&mut grpc, ROOM, "").await;
    assert_eq!(redis.command(&["SMEMBERS", key]).await, ROOM);
    let after_subscribe = ttl().await;
    assert!(
        (DAY - 60..=DAY).contains(&after_subscribe),
        "{after_subscribe}"
    );

    // Nearly expired; a connect of the user reads the set, restores it and keeps it longer.
    assert_eq!(redis.command(&["EXPIRE", key, "100"]).await, "1");
    let alice = connect(&nodes[0].ws_url, "alice", json!({})).await;
    subscribed(&alice).await;
    let after_connect = ttl().await;
    assert!((DAY - 60..=DAY).contains(&after_connect), "{after_connect}");
}

/// gRPC `Disconnect` on one node closes the user's connections on every node, with the code
/// and reason; the count is the node's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_on_one_node_closes_the_users_connections_on_every_node() {
    let (_nats, _redis, nodes) = cluster(2).await;
    let here = connect(&nodes[0].ws_url, "dora", json!({})).await;
    let there = connect(&nodes[1].ws_url, "dora", json!({})).await;
    let bystander = connect(&nodes[1].ws_url, "eddie", json!({})).await;
    let mut grpc = nodes[0].grpc().await;
    let request = herald_api::v1::DisconnectRequest {
        user: "dora".into(),
        code: 4001,
        reason: "account suspended".into(),
    };
    let reply = within("Disconnect", grpc.disconnect(request))
        .await
        .expect("disconnect")
        .into_inner();
    assert_eq!(reply.connections, 1, "the called node's own");
    for client in [&here, &there] {
        let closed = within("the close", client.closed()).await.expect("closed");
        assert_eq!(
            (closed.code, closed.reason.as_str()),
            (4001, "account suspended")
        );
    }
    // Someone else on the other node is untouched: a round trip still answers.
    within("ping", bystander.ping()).await.expect("eddie stays");
}
