//! The gRPC API: authentication, validation, broadcast, disconnect, info.

use herald_api::v1::{BroadcastRequest, DisconnectRequest, InfoRequest, PublishRequest};
use serde_json::json;
use tonic::Code;

use crate::common::*;

fn publish_request(channel: &str, event: &str, data: &[u8]) -> PublishRequest {
    PublishRequest {
        channel: channel.into(),
        event: event.into(),
        data: data.to_vec(),
        idempotency_key: String::new(),
    }
}

#[tokio::test]
async fn every_call_needs_an_api_key() {
    let gateway = TestGateway::start().await;
    for key in [None, Some("wrong-key-wrong-key")] {
        let mut grpc = gateway.grpc_with_key(key).await;
        let status = within(
            "publish",
            grpc.publish(publish_request("public:x", "e", b"{}")),
        )
        .await
        .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
        let status = within("info", grpc.info(InfoRequest {})).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
    }
}

#[tokio::test]
async fn invalid_publishes_are_invalid_argument_with_the_reason() {
    let gateway = TestGateway::start().await;
    let mut grpc = gateway.grpc().await;
    let big = format!("\"{}\"", "x".repeat(64 * 1024));
    let deep = format!("{}{}", "[".repeat(40), "]".repeat(40));
    let cases: [(&str, &str, &[u8], &str); 8] = [
        ("org:acme:ch:x", "e", b"{not json", "JSON"),
        ("org:acme:ch:x", "e", &[0xff, 0xfe], "UTF-8"),
        ("org:acme:ch:x", "e", big.as_bytes(), "larger"),
        ("org:acme:ch:x", "e", deep.as_bytes(), "nested"),
        ("org:acme:ch:x", "", b"{}", "event"),
        ("org:acme:ch:x", &"e".repeat(65), b"{}", "event"),
        ("bad channel", "e", b"{}", "channel"),
        ("nowhere:x", "e", b"{}", "namespace"),
    ];
    for (channel, event, data, reason) in cases {
        let status = within(
            "publish",
            grpc.publish(publish_request(channel, event, data)),
        )
        .await
        .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{reason}");
        assert!(
            status.message().contains(reason),
            "{:?} should mention {reason}",
            status.message()
        );
    }
    let mut long_key = publish_request("org:acme:ch:x", "e", b"{}");
    long_key.idempotency_key = "k".repeat(257);
    let status = within("publish", grpc.publish(long_key)).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("idempotency_key"), "{status:?}");
}

#[tokio::test]
async fn broadcast_results_follow_the_order_of_channels() {
    let gateway = TestGateway::start().await;
    let alice = gateway.member("alice").await;
    within("subscribe", alice.subscribe("org:acme:ch:b"))
        .await
        .unwrap();
    gateway.publish("org:acme:ch:b", "warmup", json!(0)).await;
    next_publication(&alice).await;
    let request = BroadcastRequest {
        channels: vec![
            "org:acme:ch:a".into(),
            "org:acme:ch:b".into(),
            "public:c".into(),
        ],
        event: "notice".into(),
        data: b"{\"x\":1}".to_vec(),
        idempotency_key: String::new(),
    };
    let results = within("broadcast", gateway.grpc().await.broadcast(request))
        .await
        .unwrap()
        .into_inner()
        .results;
    let offsets: Vec<u64> = results.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, vec![1, 2, 0]);
    let publication = next_publication(&alice).await;
    assert_eq!(
        (publication.event.as_str(), publication.offset),
        ("notice", 2)
    );
}

#[tokio::test]
async fn disconnect_closes_every_connection_of_the_user() {
    let gateway = TestGateway::start().await;
    let tab1 = gateway.member("alice").await;
    let tab2 = gateway.member("alice").await;
    let bob = gateway.member("bob").await;
    let request = DisconnectRequest {
        user: "alice".into(),
        code: 4001,
        reason: "banned".into(),
    };
    let response = within("disconnect", gateway.grpc().await.disconnect(request))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.connections, 2);
    for tab in [&tab1, &tab2] {
        let info = within("close", tab.closed()).await.expect("a close frame");
        assert_eq!((info.code, info.reason.as_str()), (4001, "banned"));
    }
    assert!(within("ping", bob.ping()).await.is_ok());

    let bad = DisconnectRequest {
        user: "bob".into(),
        code: 1234,
        reason: String::new(),
    };
    let status = within("disconnect", gateway.grpc().await.disconnect(bad))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn info_describes_the_node() {
    let gateway = TestGateway::start().await;
    let alice = gateway.member("alice").await;
    within("subscribe", alice.subscribe("org:acme:ch:a"))
        .await
        .unwrap();
    within("subscribe", alice.subscribe("org:acme"))
        .await
        .unwrap();
    let info = within("info", gateway.grpc().await.info(InfoRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.nodes.len(), 1);
    let node = &info.nodes[0];
    assert_eq!((node.connections, node.subscriptions), (1, 2));
    assert_eq!(node.version, env!("CARGO_PKG_VERSION"));
}
