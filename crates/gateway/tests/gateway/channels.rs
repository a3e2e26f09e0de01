//! Namespace rules, allowed and denied, and channel names.

use crate::common::*;

#[tokio::test]
async fn namespace_rules_allow_and_deny() {
    let gateway = TestGateway::start().await;
    let alice = gateway
        .client(&gateway.token("alice", &["acme"], &["org:acme:ch:*"]))
        .await;
    let outsider = gateway
        .client(&gateway.token("eve", &["other"], &["org:other:*"]))
        .await;

    for channel in [
        "public:lobby",
        "user:alice",
        "org:acme",
        "org:acme:ch:general",
    ] {
        within(channel, alice.subscribe(channel))
            .await
            .unwrap_or_else(|e| panic!("alice may subscribe {channel}: {e}"));
    }
    for channel in [
        "user:bob",
        "org:acme:dm:bob",
        "org:other",
        "org:other:ch:general",
    ] {
        assert_eq!(
            error_code(within(channel, alice.subscribe(channel)).await),
            103,
            "alice may not subscribe {channel}"
        );
    }
    within("public", outsider.subscribe("public:lobby"))
        .await
        .unwrap();
    assert_eq!(
        error_code(within("org", outsider.subscribe("org:acme")).await),
        103
    );
    assert_eq!(
        error_code(within("user", outsider.subscribe("user:alice")).await),
        103
    );
}

#[tokio::test]
async fn subscription_token_grants_one_channel_to_one_user() {
    let gateway = TestGateway::start().await;
    let bob = gateway.client(&gateway.token("bob", &[], &[])).await;
    let token = gateway.subscription_token("bob", "org:acme:ch:private");
    within(
        "with token",
        bob.subscribe_with("org:acme:ch:private", Some(&token), None),
    )
    .await
    .unwrap();
    let other_channel = within(
        "other channel",
        bob.subscribe_with("org:acme:ch:other", Some(&token), None),
    )
    .await;
    assert_eq!(error_code(other_channel), 103);

    let eve = gateway.client(&gateway.token("eve", &[], &[])).await;
    assert_eq!(
        error_code(
            within(
                "stolen token",
                eve.subscribe_with("org:acme:ch:private", Some(&token), None)
            )
            .await
        ),
        103
    );
    assert_eq!(
        error_code(
            within(
                "garbage token",
                eve.subscribe_with("org:acme:ch:private", Some("x.y.z"), None)
            )
            .await
        ),
        103
    );
}

#[tokio::test]
async fn invalid_or_unknown_channels_get_102() {
    let gateway = TestGateway::start().await;
    let alice = gateway.member("alice").await;
    for channel in [
        "",
        "org:acme:a.b",
        "org::x",
        "nonamespace:x",
        "org:acme:*",
        &"x".repeat(201),
    ] {
        assert_eq!(
            error_code(within("subscribe", alice.subscribe(channel)).await),
            102,
            "{channel:?}"
        );
    }
}

#[tokio::test]
async fn double_subscribe_and_subscription_limit() {
    let gateway = TestGateway::with(|c| c.limits.max_subscriptions = 3).await;
    let alice = gateway.member("alice").await;
    within("first", alice.subscribe("org:acme:ch:a"))
        .await
        .unwrap();
    assert_eq!(
        error_code(within("again", alice.subscribe("org:acme:ch:a")).await),
        105
    );
    within("second", alice.subscribe("org:acme:ch:b"))
        .await
        .unwrap();
    within("third", alice.subscribe("org:acme:ch:c"))
        .await
        .unwrap();
    assert_eq!(
        error_code(within("fourth", alice.subscribe("org:acme:ch:d")).await),
        106
    );
    within("unsubscribe", alice.unsubscribe("org:acme:ch:a"))
        .await
        .unwrap();
    within("fourth after unsubscribe", alice.subscribe("org:acme:ch:d"))
        .await
        .unwrap();
}

#[tokio::test]
async fn channels_claims_match_whole_segments() {
    let gateway = TestGateway::with(|c| {
        c.namespaces.insert(
            "chat".into(),
            herald_gateway::config::NamespaceRule {
                access: herald_gateway::config::Access::Claim,
                ..chat_namespace()
            },
        );
    })
    .await;
    let alice = gateway
        .client(&gateway.token("alice", &[], &["chat:acme:*"]))
        .await;
    within("own room", alice.subscribe("chat:acme:room"))
        .await
        .unwrap();
    assert_eq!(
        error_code(within("lookalike org", alice.subscribe("chat:acme-evil:room")).await),
        103
    );

    // `chat:acme*` used to grant `chat:acme-evil:…` by prefix; now the token is refused.
    let client = gateway
        .open(herald_client::ConnectOptions::new(&gateway.ws_url))
        .await
        .unwrap();
    let token = gateway.token("mallory", &[], &["chat:acme*"]);
    let refused = within("connect", client.handshake(Some(&token))).await;
    let message = refused.as_ref().map(|_| ()).unwrap_err().to_string();
    assert_eq!(error_code(refused), 101);
    assert!(message.contains("whole last segment"), "{message}");
    assert_eq!(close_code(&client).await, 4001);
}

#[tokio::test]
async fn a_connection_token_is_not_a_subscription_token() {
    let gateway = TestGateway::start().await;
    let token = gateway.token("bob", &["acme"], &[]);
    let bob = gateway.client(&token).await;
    let refused = within(
        "connection token as subscription token",
        bob.subscribe_with("org:acme:ch:private", Some(&token), None),
    )
    .await;
    let message = refused.as_ref().map(|_| ()).unwrap_err().to_string();
    assert_eq!(error_code(refused), 103);
    assert!(message.contains("not a subscription token"), "{message}");
}

/// Reads never create a channel's epoch: a subscribe to a channel nobody published on
/// answers an unpublished position, and the channel's first publication (a new epoch)
/// reaches the live subscriber without a resubscribe and is recovered from that position.
#[tokio::test]
async fn an_unpublished_channel_is_recovered_from_its_first_publication() {
    use herald_client::StreamPosition;

    const CHANNEL: &str = "org:acme:ch:never-seen";
    let gateway = TestGateway::start().await;
    let alice = gateway.member("alice").await;
    let read = within("subscribe", alice.subscribe(CHANNEL)).await.unwrap();
    assert_eq!(read.offset, 0);
    assert!(read.epoch.starts_with('~'), "unpublished: {:?}", read.epoch);
    let empty = within(
        "history",
        alice.history("org:acme:ch:also-never-seen", None, None),
    )
    .await
    .unwrap();
    assert!(empty.publications.is_empty() && empty.offset == 0);

    for n in 1..=2 {
        gateway
            .publish(CHANNEL, "message.created", serde_json::json!({ "n": n }))
            .await;
    }
    let live = within("two live pushes", async {
        let mut offsets = Vec::new();
        while offsets.len() < 2 {
            let push = alice.next_push().await.expect("connection open");
            assert!(push.unsubscribe.is_none(), "no resubscribe: {push:?}");
            if let Some(publication) = push.publication {
                assert_ne!(publication.epoch, read.epoch, "a real epoch");
                offsets.push(publication.offset);
            }
        }
        offsets
    })
    .await;
    assert_eq!(live, vec![1, 2]);

    let bob = gateway.member("bob").await;
    let recover = |epoch: &str| StreamPosition {
        offset: 0,
        epoch: epoch.to_owned(),
    };
    let recovered = within(
        "recovering subscribe",
        bob.subscribe_with(CHANNEL, None, Some(recover(&read.epoch))),
    )
    .await
    .unwrap();
    assert!(recovered.recovered, "nothing was missed: {recovered:?}");
    let offsets: Vec<u64> = recovered.publications.iter().map(|p| p.offset).collect();
    assert_eq!(offsets, vec![1, 2]);
    bob.unsubscribe(CHANNEL).await.unwrap();

    // A read older than the history TTL (5 min here): an epoch could have lived and expired
    // in between, so it is not recovered; nor is a read from another state (a restart).
    let (read_ms, source) = read.epoch[1..].split_once('.').unwrap();
    let old = format!("~{}.{source}", read_ms.parse::<u64>().unwrap() - 3_600_000);
    for epoch in [old, format!("~{read_ms}.other")] {
        let result = within(
            "subscribe",
            bob.subscribe_with(CHANNEL, None, Some(recover(&epoch))),
        )
        .await
        .unwrap();
        assert!(!result.recovered, "{epoch}: {result:?}");
        assert_eq!(result.offset, 2);
        bob.unsubscribe(CHANNEL).await.unwrap();
    }
}
