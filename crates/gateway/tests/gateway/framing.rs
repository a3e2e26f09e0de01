//! No byte sequence Herald accepts can put a raw `\n` or `\r` into a frame: JSON is
//! compacted where it enters (gRPC, client publish, token `info`), and what is not JSON is
//! refused. Server frames separate messages with newlines, so one raw newline in `data`
//! would split a publication into unparseable lines, live and in every later history read.

use herald_api::v1::{HistoryRequest, PublishRequest};
use herald_client::{Push, StreamPosition};
use serde_json::value::RawValue;

use crate::common::*;

const CHANNEL: &str = "org:acme:ch:general";
const PRETTY: &str = "{\"a\":\n1,\r\n\"b\":\t2, \"s\": \"x y\\n\"}";
const COMPACT: &str = r#"{"a":1,"b":2,"s":"x y\n"}"#;

fn publish_request(data: &str) -> PublishRequest {
    PublishRequest {
        channel: CHANNEL.into(),
        event: "message.created".into(),
        data: data.as_bytes().to_vec(),
        idempotency_key: String::new(),
    }
}

#[tokio::test]
async fn pretty_printed_data_is_compacted_live_in_history_and_in_recovery() {
    let gateway = TestGateway::start().await;
    let alice = gateway.member("alice").await;
    let subscribed = within("subscribe", alice.subscribe(CHANNEL)).await.unwrap();
    let mut grpc = gateway.grpc().await;
    within("publish", grpc.publish(publish_request(PRETTY)))
        .await
        .expect("pretty-printed JSON is valid JSON");

    // Live.
    let live = next_publication(&alice).await;
    assert_eq!(live.data.get(), COMPACT);

    // In history, over the client protocol and over gRPC.
    let history = within("history", alice.history(CHANNEL, None, None))
        .await
        .unwrap();
    assert_eq!(history.publications[0].data.get(), COMPACT);
    let history = within(
        "gRPC history",
        grpc.history(HistoryRequest {
            channel: CHANNEL.into(),
            since_offset: 0,
            limit: 0,
        }),
    )
    .await
    .unwrap()
    .into_inner();
    assert_eq!(history.publications[0].data, COMPACT.as_bytes());

    // In recovery.
    let bob = gateway.member("bob").await;
    let recovered = within(
        "recover",
        bob.subscribe_with(
            CHANNEL,
            None,
            Some(StreamPosition {
                offset: 0,
                epoch: subscribed.epoch.clone(),
            }),
        ),
    )
    .await
    .unwrap();
    assert!(recovered.recovered);
    assert_eq!(recovered.publications[0].data.get(), COMPACT);

    // A raw newline inside a string is not JSON: refused, nothing stored.
    let refused = within("publish", grpc.publish(publish_request("\"a\nb\"")))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        within("history", alice.history(CHANNEL, None, None))
            .await
            .unwrap()
            .offset,
        1
    );
}

#[tokio::test]
async fn token_info_with_newlines_is_compacted_in_presence_pushes_and_results() {
    let gateway = TestGateway::start().await;
    let bob = gateway.member("bob").await;
    within("subscribe", bob.subscribe(CHANNEL)).await.unwrap();

    let mut claims = claims("alice", &["acme"], &["org:acme:*"], 3600);
    claims.info = Some(
        RawValue::from_string("{\n  \"name\": \"Ada\"\r\n}".into())
            .unwrap()
            .into(),
    );
    let alice = gateway.client(&gateway.sign(claims)).await;
    within("subscribe", alice.subscribe(CHANNEL)).await.unwrap();

    let join = within("the join push", async {
        loop {
            match bob.next_push().await {
                Some(Push {
                    join: Some(member), ..
                }) => return member,
                Some(_) => continue,
                None => panic!("bob's connection ended"),
            }
        }
    })
    .await;
    assert_eq!(&*join.user, "alice");
    assert_eq!(join.info.unwrap().get(), r#"{"name":"Ada"}"#);

    let presence = within("presence", bob.presence(CHANNEL)).await.unwrap();
    let alice = presence
        .members
        .iter()
        .find(|m| &*m.user == "alice")
        .expect("alice is present");
    assert_eq!(alice.info.as_ref().unwrap().get(), r#"{"name":"Ada"}"#);
}
