//! Server-side subscriptions (gRPC `Subscribe` / `Unsubscribe`): every connection of a user
//! or one connection, no token claim needed, kept for the user and restored with recovery
//! on reconnect, ended with an `unsubscribe` push (2000).

use herald_client::{Client, ConnectOptions, Push};
use herald_protocol::reply::{ConnectResult, SubscribeResult};
use herald_testkit::client::next_push;
use herald_testkit::grpc::{subscribe_request, unsubscribe_request};
use serde_json::json;
use tonic::Code;

use crate::common::*;

/// Not in anyone's `channels` claim: only the server can subscribe a user to it.
const ROOM: &str = "org:acme:room:7";

/// gRPC `Subscribe`, which must succeed.
async fn subscribe(grpc: &mut Grpc, user: &str, channel: &str, client: &str) {
    within(
        "gRPC Subscribe",
        grpc.subscribe(subscribe_request(user, channel, client)),
    )
    .await
    .expect("Subscribe");
}

/// gRPC `Unsubscribe`, which must succeed.
async fn unsubscribe(grpc: &mut Grpc, user: &str, channel: &str, client: &str) {
    within(
        "gRPC Unsubscribe",
        grpc.unsubscribe(unsubscribe_request(user, channel, client)),
    )
    .await
    .expect("Unsubscribe");
}

/// A member of `acme` with no channel claims.
fn token(gateway: &TestGateway, user: &str) -> String {
    gateway.token(user, &["acme"], &[])
}

async fn connect(gateway: &TestGateway, user: &str) -> (Client, ConnectResult) {
    within(
        "connect",
        Client::connect(&gateway.ws_url, &token(gateway, user)),
    )
    .await
    .expect("connects")
}

/// Connects sending `subs`, the positions of the server-side subscriptions held.
async fn reconnect(gateway: &TestGateway, user: &str, subs: serde_json::Value) -> Client {
    let client = gateway
        .open(ConnectOptions::new(&gateway.ws_url))
        .await
        .expect("upgrade");
    let params = json!({"token": token(gateway, user), "subs": subs});
    within("connect with subs", client.request("connect", params))
        .await
        .expect("connects");
    client
}

async fn subscribed(
    client: &Client,
    channel: &str,
) -> SubscribeResult<herald_client::ReceivedPublication> {
    let push = next_push(client, "a subscribe push", |push| push.subscribe.is_some()).await;
    assert_eq!(push.channel.as_deref(), Some(channel));
    push.subscribe.expect("a subscribe push")
}

async fn unsubscribed(client: &Client) -> Push {
    next_push(client, "an unsubscribe push", |push| {
        push.unsubscribe.is_some()
    })
    .await
}

/// Proves a client got nothing of `ROOM` so far: a publication on a public channel it
/// subscribes to now is the next push.
async fn nothing_of_room_before(gateway: &TestGateway, client: &Client, marker: &str) {
    within("subscribe marker", client.subscribe(marker))
        .await
        .expect("public subscribe");
    gateway.publish(marker, "marker", json!({})).await;
    let push = within("next push", client.next_push()).await.expect("open");
    assert_eq!(
        push.publication.as_ref().map(|p| p.event.as_str()),
        Some("marker"),
        "nothing of {ROOM} came first: {push:?}"
    );
}

#[tokio::test]
async fn subscribe_reaches_every_connection_of_the_user_without_a_claim() {
    let gateway = TestGateway::start().await;
    let (alice_web, _) = connect(&gateway, "alice").await;
    let (alice_phone, _) = connect(&gateway, "alice").await;
    let (bob, _) = connect(&gateway, "bob").await;
    assert_eq!(
        error_code(within("client subscribe", alice_web.subscribe(ROOM)).await),
        103,
        "no claim: the client cannot subscribe itself"
    );

    let mut grpc = gateway.grpc().await;
    subscribe(&mut grpc, "alice", ROOM, "").await;
    for alice in [&alice_web, &alice_phone] {
        let result = subscribed(alice, ROOM).await;
        assert!(result.recoverable && !result.recovered);
    }
    gateway
        .publish(ROOM, "message", json!({"text": "hi"}))
        .await;
    for alice in [&alice_web, &alice_phone] {
        let publication = next_publication(alice).await;
        assert_eq!(
            (publication.event.as_str(), publication.offset),
            ("message", 1)
        );
    }
    nothing_of_room_before(&gateway, &bob, "public:bob").await;

    // A second Subscribe of the same channel changes nothing for connections that have it.
    subscribe(&mut grpc, "alice", ROOM, "").await;
    gateway
        .publish(ROOM, "message", json!({"text": "again"}))
        .await;
    let publication = next_publication(&alice_web).await;
    assert_eq!(
        publication.offset, 2,
        "no second subscribe push, no duplicate"
    );
}

#[tokio::test]
async fn a_client_scoped_subscribe_reaches_that_connection_only_and_is_not_kept() {
    let gateway = TestGateway::start().await;
    let (web, web_result) = connect(&gateway, "alice").await;
    let (phone, _) = connect(&gateway, "alice").await;
    let mut grpc = gateway.grpc().await;
    subscribe(&mut grpc, "alice", ROOM, &web_result.client).await;
    subscribed(&web, ROOM).await;
    nothing_of_room_before(&gateway, &phone, "public:phone").await;

    let (later, _) = connect(&gateway, "alice").await;
    nothing_of_room_before(&gateway, &later, "public:later").await;

    // Another user's connection id is not a way into someone else's connection. A user's
    // changes apply in order: once bob's own next one has reached him, the one naming
    // alice's connection has been applied (or refused).
    let (bob, bob_result) = connect(&gateway, "bob").await;
    subscribe(&mut grpc, "bob", "org:acme:room:8", &web_result.client).await;
    subscribe(&mut grpc, "bob", "org:acme:room:9", &bob_result.client).await;
    let push = next_push(&bob, "bob's own subscribe push", |push| {
        push.subscribe.is_some()
    })
    .await;
    assert_eq!(push.channel.as_deref(), Some("org:acme:room:9"));
    gateway.publish(ROOM, "message", json!({})).await;
    let push = within("next push", web.next_push()).await.expect("open");
    assert_eq!(
        push.publication.map(|p| p.offset),
        Some(1),
        "bob's subscribe did not reach alice's connection"
    );
}

/// A server-side subscriber is a member like any other: the others get its `join`, and it
/// may call `presence`, `typing` and `history` on the channel with no claim of its own.
#[tokio::test]
async fn a_server_side_subscriber_has_presence_typing_and_history() {
    let gateway = TestGateway::start().await;
    let bob = gateway.member("bob").await;
    within("bob subscribes", bob.subscribe(ROOM))
        .await
        .expect("bob has the claim");
    gateway
        .publish(ROOM, "message", json!({"text": "before alice"}))
        .await;
    assert_eq!(next_publication(&bob).await.offset, 1);
    let (alice, alice_result) = connect(&gateway, "alice").await;
    let mut grpc = gateway.grpc().await;
    subscribe(&mut grpc, "alice", ROOM, "").await;
    subscribed(&alice, ROOM).await;

    let push = next_push(&bob, "alice's join", |push| push.join.is_some()).await;
    let joined = push.join.unwrap();
    assert_eq!(
        (push.channel.as_deref(), &*joined.user, &*joined.client),
        (Some(ROOM), "alice", alice_result.client.as_str())
    );
    let presence = within("presence", alice.presence(ROOM))
        .await
        .expect("alice may ask");
    let mut users: Vec<&str> = presence.members.iter().map(|m| &*m.user).collect();
    users.sort_unstable();
    assert_eq!(users, ["alice", "bob"]);

    within("typing", alice.typing(ROOM, true))
        .await
        .expect("alice may type");
    let push = next_push(&bob, "alice typing", |push| push.typing.is_some()).await;
    let typing = push.typing.unwrap();
    assert_eq!((&*typing.user, typing.active), ("alice", true));

    let history = within("history", alice.history(ROOM, None, None))
        .await
        .expect("alice may read the history");
    let offsets: Vec<u64> = history.publications.iter().map(|p| p.offset).collect();
    assert_eq!(offsets, [1]);
}

#[tokio::test]
async fn a_kept_subscription_is_restored_on_reconnect_and_recovers_what_was_missed() {
    let gateway = TestGateway::start().await;
    let (alice, _) = connect(&gateway, "alice").await;
    let mut grpc = gateway.grpc().await;
    subscribe(&mut grpc, "alice", ROOM, "").await;
    subscribed(&alice, ROOM).await;
    let mut epoch = String::new();
    for n in 1..=2 {
        gateway.publish(ROOM, "message", json!({"n": n})).await;
        let publication = next_publication(&alice).await;
        assert_eq!(publication.offset, n);
        epoch = publication.epoch;
    }
    within("close", alice.close()).await.expect("closes");
    for n in 3..=4 {
        gateway.publish(ROOM, "message", json!({"n": n})).await;
    }

    let back = reconnect(
        &gateway,
        "alice",
        json!({ ROOM: {"offset": 2, "epoch": epoch} }),
    )
    .await;
    let restored = subscribed(&back, ROOM).await;
    assert!(
        restored.recovered,
        "recovered from the position sent in connect"
    );
    let offsets: Vec<u64> = restored.publications.iter().map(|p| p.offset).collect();
    assert_eq!(offsets, [3, 4], "exactly what was missed, in order");
    gateway.publish(ROOM, "message", json!({"n": 5})).await;
    assert_eq!(next_publication(&back).await.offset, 5);

    // A new device of the user gets it too, without a position: subscribed, not recovered.
    let (tablet, _) = connect(&gateway, "alice").await;
    let fresh = subscribed(&tablet, ROOM).await;
    assert!(!fresh.recovered && fresh.publications.is_empty());
    assert_eq!(fresh.offset, 5);
}

#[tokio::test]
async fn unsubscribe_ends_it_on_every_connection_and_forgets_it() {
    let gateway = TestGateway::start().await;
    let (web, _) = connect(&gateway, "alice").await;
    let (phone, _) = connect(&gateway, "alice").await;
    let mut grpc = gateway.grpc().await;
    subscribe(&mut grpc, "alice", ROOM, "").await;
    let epoch = subscribed(&web, ROOM).await.epoch;
    subscribed(&phone, ROOM).await;

    unsubscribe(&mut grpc, "alice", ROOM, "").await;
    for alice in [&web, &phone] {
        let push = unsubscribed(alice).await;
        assert_eq!(push.channel.as_deref(), Some(ROOM));
        assert_eq!(push.unsubscribe.unwrap().code, 2000, "do not resubscribe");
    }
    gateway.publish(ROOM, "message", json!({})).await;
    nothing_of_room_before(&gateway, &web, "public:web").await;

    // A reconnecting client that still holds it is told it is gone.
    let back = reconnect(
        &gateway,
        "alice",
        json!({ ROOM: {"offset": 0, "epoch": epoch} }),
    )
    .await;
    let push = unsubscribed(&back).await;
    assert_eq!(
        (push.channel.as_deref(), push.unsubscribe.unwrap().code),
        (Some(ROOM), 2000)
    );
    nothing_of_room_before(&gateway, &back, "public:back").await;
}

#[tokio::test]
async fn a_user_s_changes_apply_in_order() {
    let gateway = TestGateway::start().await;
    let (alice, _) = connect(&gateway, "alice").await;
    let mut grpc = gateway.grpc().await;
    let rooms: Vec<String> = (0..20).map(|n| format!("org:acme:room:{n}")).collect();
    for room in &rooms {
        // Back to back: the unsubscribe must not overtake the subscribe's state reads.
        subscribe(&mut grpc, "alice", room, "").await;
        unsubscribe(&mut grpc, "alice", room, "").await;
    }
    for room in &rooms {
        let push = next_push(&alice, "the subscribe push", |push| {
            push.subscribe.is_some()
        })
        .await;
        assert_eq!(push.channel.as_deref(), Some(room.as_str()));
        let push = unsubscribed(&alice).await;
        assert_eq!(push.channel.as_deref(), Some(room.as_str()));
    }
    for room in &rooms {
        gateway.publish(room, "message", json!({})).await;
    }
    nothing_of_room_before(&gateway, &alice, "public:after").await;
}

#[tokio::test]
async fn a_refresh_does_not_revoke_what_the_backend_granted() {
    let gateway = TestGateway::start().await;
    let (alice, _) = connect(&gateway, "alice").await;
    let mut grpc = gateway.grpc().await;
    subscribe(&mut grpc, "alice", ROOM, "").await;
    subscribed(&alice, ROOM).await;
    // The new token grants nothing more than the old: the room stays, by the backend's say.
    within("refresh", alice.refresh(&token(&gateway, "alice")))
        .await
        .expect("refreshes");
    gateway.publish(ROOM, "message", json!({})).await;
    let push = within("next push", alice.next_push()).await.expect("open");
    assert_eq!(
        push.publication.map(|p| p.offset),
        Some(1),
        "still subscribed after the refresh, no 2403"
    );
}

#[tokio::test]
async fn bad_requests_are_refused_with_the_reason() {
    let gateway = TestGateway::with(|config| config.limits.max_subscriptions = 2).await;
    let mut grpc = gateway.grpc().await;
    let status = within("no user", grpc.subscribe(subscribe_request("", ROOM, "")))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let status = within(
        "unknown namespace",
        grpc.subscribe(subscribe_request("alice", "nowhere:x", "")),
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("namespace"),
        "{}",
        status.message()
    );
    for room in ["org:acme:room:1", "org:acme:room:2"] {
        subscribe(&mut grpc, "alice", room, "").await;
    }
    let status = within(
        "over the limit",
        grpc.subscribe(subscribe_request("alice", "org:acme:room:3", "")),
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
}

#[tokio::test]
async fn the_binary_subprotocol_gets_the_same_pushes() {
    let gateway = TestGateway::start().await;
    let client = gateway
        .open(ConnectOptions::new(&gateway.ws_url).binary())
        .await
        .expect("upgrade");
    within("connect", client.handshake(Some(&token(&gateway, "alice"))))
        .await
        .expect("connects");
    let mut grpc = gateway.grpc().await;
    subscribe(&mut grpc, "alice", ROOM, "").await;
    let result = subscribed(&client, ROOM).await;
    assert!(result.recoverable);
    gateway.publish(ROOM, "message", json!({"n": 1})).await;
    assert_eq!(next_publication(&client).await.offset, 1);
    unsubscribe(&mut grpc, "alice", ROOM, "").await;
    assert_eq!(unsubscribed(&client).await.unsubscribe.unwrap().code, 2000);
}
