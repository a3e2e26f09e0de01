//! The binary subprotocol `herald.v1.proto`: negotiation, every method and push over
//! binary frames, mixed codecs on one channel, and the frames each codec refuses.

use herald_client::{Client, ConnectOptions};
use herald_protocol::binary::pb;
use herald_protocol::{Codec, SUBPROTOCOL_JSON, SUBPROTOCOL_PROTO};
use herald_testkit::client::next_push;
use prost::Message as _;

use crate::common::*;

const CHANNEL: &str = "org:acme:ch:general";

/// A binary client of `sub`, member of org `acme`, connected.
async fn binary_member(gateway: &TestGateway, sub: &str) -> Client {
    let client = gateway
        .open(ConnectOptions::new(&gateway.ws_url).binary())
        .await
        .expect("upgrade");
    let token = gateway.token(sub, &["acme"], &["org:acme:*"]);
    within("connect", client.handshake(Some(&token)))
        .await
        .expect("connect over protobuf");
    client
}

#[tokio::test]
async fn a_client_offering_proto_gets_it_and_json_stays_the_default() {
    let gateway = TestGateway::start().await;
    let alice = binary_member(&gateway, "alice").await;
    assert_eq!(alice.subprotocol(), Some(SUBPROTOCOL_PROTO));
    assert_eq!(alice.codec(), Codec::Proto);

    let bob = gateway.member("bob").await;
    assert_eq!(bob.subprotocol(), Some(SUBPROTOCOL_JSON));

    // Offering both: the binary one wins. Offering none: JSON, as before. (One unknown gets
    // no subprotocol either, which the tungstenite client itself refuses.)
    let mut both = ConnectOptions::new(&gateway.ws_url);
    both.subprotocols = vec![SUBPROTOCOL_JSON.into(), SUBPROTOCOL_PROTO.into()];
    let both = gateway.open(both).await.unwrap();
    assert_eq!(both.codec(), Codec::Proto);
    {
        let mut options = ConnectOptions::new(&gateway.ws_url);
        options.subprotocols = vec![];
        let client = gateway.open(options).await.unwrap();
        assert_eq!(client.codec(), Codec::Json);
        let token = gateway.token("carol", &["acme"], &["org:acme:*"]);
        within("connect", client.handshake(Some(&token)))
            .await
            .unwrap();
        within("ping", client.ping()).await.unwrap();
    }
}

#[tokio::test]
async fn every_method_answers_over_binary_frames() {
    const CHANNEL: &str = "chat:acme:room";
    let gateway = TestGateway::with(|c| {
        let mut chat = chat_namespace();
        chat.options.presence = true;
        chat.options.typing = true;
        c.namespaces.insert("chat".into(), chat);
    })
    .await;
    let alice = binary_member(&gateway, "alice").await;
    let subscribed = within("subscribe", alice.subscribe(CHANNEL)).await.unwrap();
    assert!(subscribed.recoverable);

    let published = within(
        "client publish",
        alice.publish(
            CHANNEL,
            "message.created",
            serde_json::json!({"text": "hé\n"}),
        ),
    )
    .await
    .unwrap();
    assert_eq!(published.offset, subscribed.offset + 1);
    let live = next_publication(&alice).await;
    assert_eq!(live.data.get(), r#"{"text":"hé\n"}"#);
    assert_eq!(live.from.as_deref(), Some("alice"));
    assert_eq!(live.offset, published.offset);

    let history = within("history", alice.history(CHANNEL, Some(10), None))
        .await
        .unwrap();
    assert_eq!(history.publications.len(), 1);
    assert_eq!(history.publications[0].data.get(), live.data.get());

    let presence = within("presence", alice.presence(CHANNEL)).await.unwrap();
    assert_eq!(&*presence.members[0].user, "alice");
    let stats = within("presence stats", alice.presence_stats(CHANNEL))
        .await
        .unwrap();
    assert_eq!((stats.users, stats.clients), (1, 1));
    within("set status", alice.set_status("away"))
        .await
        .unwrap();
    within("typing", alice.typing(CHANNEL, true)).await.unwrap();
    within(
        "set presence state",
        alice.set_presence_state(CHANNEL, serde_json::json!({"mood": "ok"})),
    )
    .await
    .unwrap();
    let presence = within("presence", alice.presence(CHANNEL)).await.unwrap();
    let state = presence.members[0].state.as_deref().map(|s| s.get());
    assert_eq!(state, Some(r#"{"mood":"ok"}"#));
    assert!(within("ping", alice.ping()).await.unwrap().ts > 0);
    let token = gateway.token("alice", &["acme"], &["org:acme:*"]);
    within("refresh", alice.refresh(&token)).await.unwrap();

    // Error replies carry the same codes as in JSON.
    assert_eq!(
        error_code(within("forbidden", alice.subscribe("chat:other:room")).await),
        103
    );
    assert_eq!(
        error_code(within("twice", alice.subscribe(CHANNEL)).await),
        105
    );
    within("unsubscribe", alice.unsubscribe(CHANNEL))
        .await
        .unwrap();
}

#[tokio::test]
async fn one_publication_reaches_both_codecs_and_presence_events_are_transcoded() {
    let gateway = TestGateway::start().await;
    let alice = binary_member(&gateway, "alice").await;
    let bob = gateway.member("bob").await;
    within("subscribe", alice.subscribe(CHANNEL)).await.unwrap();
    within("subscribe", bob.subscribe(CHANNEL)).await.unwrap();

    gateway
        .publish(CHANNEL, "message.created", serde_json::json!({"n": [1, 2]}))
        .await;
    let (binary, json) = (next_publication(&alice).await, next_publication(&bob).await);
    assert_eq!(binary.data.get(), json.data.get());
    assert_eq!(
        (binary.offset, &binary.epoch, binary.ts),
        (json.offset, &json.epoch, json.ts)
    );

    // A join and a typing push: JSON events, transcoded for the binary subscriber.
    let carol = gateway.member("carol").await;
    within("subscribe", carol.subscribe(CHANNEL)).await.unwrap();
    let join = next_push(&alice, "carol's join", |p| p.join.is_some()).await;
    assert_eq!(&*join.join.unwrap().user, "carol");
    within("typing", carol.typing(CHANNEL, true)).await.unwrap();
    let typing = next_push(&alice, "carol typing", |p| p.typing.is_some()).await;
    assert_eq!(typing.channel.as_deref(), Some(CHANNEL));
    let typing = typing.typing.unwrap();
    assert_eq!((&*typing.user, typing.active), ("carol", true));
    within(
        "set presence state",
        carol.set_presence_state(CHANNEL, serde_json::json!([1])),
    )
    .await
    .unwrap();
    let state = next_push(&alice, "carol's state", |p| p.state.is_some()).await;
    let state = state.state.unwrap();
    assert_eq!(&*state.user, "carol");
    assert_eq!(state.state.as_deref().map(|s| s.get()), Some("[1]"));
}

#[tokio::test]
async fn frames_of_the_wrong_kind_or_undecodable_close_4000() {
    let gateway = TestGateway::start().await;

    // Text on the binary subprotocol, before and after `connect`.
    let fresh = gateway
        .open(ConnectOptions::new(&gateway.ws_url).binary())
        .await
        .unwrap();
    fresh.send_text(r#"{"id":1,"ping":{}}"#).await.unwrap();
    assert_eq!(close_code(&fresh).await, 4000);
    let alice = binary_member(&gateway, "alice").await;
    alice.send_text(r#"{"id":1,"ping":{}}"#).await.unwrap();
    assert_eq!(close_code(&alice).await, 4000);

    // Bytes that are not length-delimited Commands.
    let bob = binary_member(&gateway, "bob").await;
    bob.send_binary(vec![0x05, 0x08]).await.unwrap();
    assert_eq!(close_code(&bob).await, 4000);

    // Binary on JSON, as before.
    let carol = gateway.member("carol").await;
    let ping = pb::Command {
        id: 1,
        method: Some(pb::command::Method::Ping(pb::PingRequest {})),
    };
    carol
        .send_binary(ping.encode_length_delimited_to_vec())
        .await
        .unwrap();
    assert_eq!(close_code(&carol).await, 4000);

    // The message size limit holds, and the disconnect push comes in binary.
    let dave = binary_member(&gateway, "dave").await;
    let large = pb::Command {
        id: 2,
        method: Some(pb::command::Method::Publish(pb::PublishRequest {
            channel: CHANNEL.into(),
            event: "e".into(),
            data: format!("\"{}\"", "x".repeat(70 * 1024)).into_bytes(),
            idempotency_key: String::new(),
        })),
    };
    dave.send_binary(large.encode_length_delimited_to_vec())
        .await
        .unwrap();
    let push = next_push(&dave, "the disconnect push", |p| p.disconnect.is_some()).await;
    assert_eq!(push.disconnect.unwrap().code, 4009);
    assert_eq!(close_code(&dave).await, 4009);

    let erin = binary_member(&gateway, "erin").await;
    within("node still serves", erin.ping()).await.unwrap();
}
