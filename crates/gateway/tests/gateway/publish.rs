//! Publish → delivery, offsets, recovery, idempotency, client publish, history.

use herald_api::v1::{HistoryRequest, PublishRequest};
use herald_client::StreamPosition;
use herald_testkit::client::next_push;
use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn publish_reaches_every_subscriber_of_the_channel_and_no_one_else() {
    let gateway = TestGateway::start().await;
    let mut subscribers = Vec::new();
    for n in 0..5 {
        let client = gateway.member(&format!("user{n}")).await;
        within("subscribe", client.subscribe("org:acme:ch:general"))
            .await
            .unwrap();
        subscribers.push(client);
    }
    let bystander = gateway.member("bystander").await;
    within("subscribe", bystander.subscribe("org:acme:ch:random"))
        .await
        .unwrap();

    // Data is delivered as published, in compact form: unicode and markup untouched.
    let raw = r#"{"text": "héllo <script>alert(1)</script>",  "n":[1, 2]}"#;
    let request = PublishRequest {
        channel: "org:acme:ch:general".into(),
        event: "message.created".into(),
        data: raw.as_bytes().to_vec(),
        idempotency_key: String::new(),
    };
    let position = within("publish", gateway.grpc().await.publish(request))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(position.offset, 1);
    for subscriber in &subscribers {
        let publication = next_publication(subscriber).await;
        assert_eq!(publication.event, "message.created");
        assert_eq!(
            publication.data.get(),
            r#"{"text":"héllo <script>alert(1)</script>","n":[1,2]}"#
        );
        assert_eq!(
            (publication.offset, publication.epoch.as_str()),
            (1, position.epoch.as_str())
        );
        assert!(publication.ts > 0);
        assert_eq!(publication.from, None, "server publishes carry no sender");
    }
    gateway
        .publish("org:acme:ch:random", "marker", json!({}))
        .await;
    assert_eq!(
        next_publication(&bystander).await.event,
        "marker",
        "the bystander saw nothing before its own channel's marker"
    );
}

#[tokio::test]
async fn offsets_are_contiguous_and_delivered_in_order() {
    let gateway = TestGateway::start().await;
    let alice = gateway.member("alice").await;
    let subscribed = within("subscribe", alice.subscribe("org:acme:ch:general"))
        .await
        .unwrap();
    assert_eq!(
        (
            subscribed.offset,
            subscribed.recoverable,
            subscribed.recovered
        ),
        (0, true, false)
    );
    for n in 1..=20u64 {
        assert_eq!(
            gateway
                .publish("org:acme:ch:general", "n", json!(n))
                .await
                .offset,
            n
        );
    }
    for n in 1..=20u64 {
        let publication = next_publication(&alice).await;
        assert_eq!(publication.offset, n);
        assert_eq!(publication.data.get(), n.to_string());
    }
}

#[tokio::test]
async fn concurrent_publishers_still_deliver_every_offset_once_in_order() {
    let gateway = TestGateway::start().await;
    let alice = gateway.member("alice").await;
    within("subscribe", alice.subscribe("org:acme:ch:busy"))
        .await
        .unwrap();
    let publishers = four_publishers_of_25(&gateway, "org:acme:ch:busy").await;
    for publisher in publishers {
        within("publishers", publisher).await.unwrap();
    }
    for offset in 1..=100u64 {
        assert_eq!(next_publication(&alice).await.offset, offset);
    }
}

/// Four gRPC publishers of 25 publications each on `channel`, started at once.
async fn four_publishers_of_25(
    gateway: &TestGateway,
    channel: &'static str,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut publishers = Vec::new();
    for p in 0..4 {
        let mut grpc = gateway.grpc().await;
        publishers.push(tokio::spawn(async move {
            for n in 0..25 {
                let request = PublishRequest {
                    channel: channel.into(),
                    event: "n".into(),
                    data: format!("[{p},{n}]").into_bytes(),
                    idempotency_key: String::new(),
                };
                grpc.publish(request).await.expect("publish");
            }
        }));
    }
    publishers
}

#[tokio::test]
async fn resubscribe_recovers_missed_publications() {
    let gateway = TestGateway::start().await;
    let channel = "org:acme:ch:general";
    let alice = gateway.member("alice").await;
    within("subscribe", alice.subscribe(channel)).await.unwrap();
    gateway.publish(channel, "m", json!(1)).await;
    gateway.publish(channel, "m", json!(2)).await;
    next_publication(&alice).await;
    let last = next_publication(&alice).await.position();
    within("close", alice.close()).await.unwrap();

    for n in 3..=5 {
        gateway.publish(channel, "m", json!(n)).await;
    }
    let alice = gateway.member("alice").await;
    let result = within(
        "recover",
        alice.subscribe_with(channel, None, Some(last.clone())),
    )
    .await
    .unwrap();
    assert!(result.recovered);
    let offsets: Vec<u64> = result.publications.iter().map(|p| p.offset).collect();
    assert_eq!(offsets, vec![3, 4, 5]);
    assert_eq!(result.offset, 5);

    // Live publications continue after the recovered ones, without duplicates.
    gateway.publish(channel, "m", json!(6)).await;
    assert_eq!(next_publication(&alice).await.offset, 6);

    let stale = gateway.member("bob").await;
    let wrong_epoch = StreamPosition {
        offset: 2,
        epoch: "not-the-epoch".into(),
    };
    let result = within(
        "wrong epoch",
        stale.subscribe_with(channel, None, Some(wrong_epoch)),
    )
    .await
    .unwrap();
    assert!(!result.recovered);
    assert!(result.publications.is_empty());
    assert_eq!(result.offset, 6);
}

#[tokio::test]
async fn recovery_fails_honestly_when_history_no_longer_covers_the_gap() {
    let gateway = TestGateway::with(|c| {
        c.namespaces.get_mut("org").unwrap().options.history_size = 3;
    })
    .await;
    let channel = "org:acme:ch:general";
    let first = gateway.publish(channel, "m", json!(1)).await;
    for n in 2..=10 {
        gateway.publish(channel, "m", json!(n)).await;
    }
    let alice = gateway.member("alice").await;
    let position = StreamPosition {
        offset: first.offset,
        epoch: first.epoch.clone(),
    };
    let result = within(
        "recover",
        alice.subscribe_with(channel, None, Some(position)),
    )
    .await
    .unwrap();
    assert!(!result.recovered, "offsets 2..7 are gone");
    assert!(result.publications.is_empty());
    assert_eq!(
        (result.offset, result.epoch.as_str()),
        (10, first.epoch.as_str())
    );

    let bob = gateway.member("bob").await;
    let position = StreamPosition {
        offset: 7,
        epoch: first.epoch.clone(),
    };
    let result = within("recover", bob.subscribe_with(channel, None, Some(position)))
        .await
        .unwrap();
    assert!(result.recovered);
    assert_eq!(
        result
            .publications
            .iter()
            .map(|p| p.offset)
            .collect::<Vec<_>>(),
        vec![8, 9, 10]
    );
}

#[tokio::test]
async fn channels_without_history_have_no_offsets() {
    let gateway = TestGateway::start().await;
    let alice = gateway.member("alice").await;
    let result = within("subscribe", alice.subscribe("public:lobby"))
        .await
        .unwrap();
    assert_eq!(
        (result.offset, result.recoverable, result.epoch.as_str()),
        (0, false, "")
    );
    let position = gateway
        .publish("public:lobby", "hello", json!({"a": 1}))
        .await;
    assert_eq!((position.offset, position.epoch.as_str()), (0, ""));
    let publication = next_publication(&alice).await;
    assert_eq!(
        (publication.offset, publication.event.as_str()),
        (0, "hello")
    );
    assert_eq!(
        error_code(within("history", alice.history("public:lobby", None, None)).await),
        108
    );
}

/// A standalone Publish answers once its publication is queued for the channel's fan-out,
/// not after it: one publisher's publications, on a channel with no offsets to reorder
/// them by, and the presence events raised after them still arrive in the order sent.
#[tokio::test]
async fn one_publishers_publications_and_later_events_arrive_in_publish_order() {
    let gateway = TestGateway::start().await;
    let alice = gateway.member("alice").await;
    within("subscribe", alice.subscribe("public:lobby"))
        .await
        .unwrap();
    let sent = 300;
    for n in 0..sent {
        gateway.publish("public:lobby", "n", json!(n)).await;
    }
    for n in 0..sent {
        let publication = next_publication(&alice).await;
        assert_eq!(publication.data.get(), n.to_string(), "publication {n}");
    }

    let channel = "org:acme:ch:general";
    within("subscribe", alice.subscribe(channel)).await.unwrap();
    let bob = gateway.member("bob").await;
    within("subscribe", bob.subscribe(channel)).await.unwrap();
    next_push(&alice, "bob's join", |push| push.join.is_some()).await;
    for n in 0..50 {
        gateway.publish(channel, "n", json!(n)).await;
    }
    within("unsubscribe", bob.unsubscribe(channel))
        .await
        .unwrap();
    for n in 0..50 {
        let push = next_push(&alice, "a publication or bob's leave", |push| {
            push.publication.is_some() || push.leave.is_some()
        })
        .await;
        let publication = push
            .publication
            .unwrap_or_else(|| panic!("bob's leave came before publication {n}"));
        assert_eq!(publication.data.get(), n.to_string());
    }
    next_push(&alice, "bob's leave", |push| push.leave.is_some()).await;
}

/// With `HERALD_FANOUT_COALESCE_MS`, publications that come together go out together:
/// each subscriber still gets every one once, in order, on a channel with history (four
/// publishers at once) and on one without (one publisher), and one subscribing halfway
/// through gets every one published after its reply.
#[tokio::test]
async fn coalesced_publications_arrive_once_and_in_order() {
    let gateway =
        TestGateway::with(|config| config.fanout_coalesce = std::time::Duration::from_millis(50))
            .await;
    let (busy, lobby) = ("org:acme:ch:busy", "public:lobby");
    let mut subscribers = Vec::new();
    for n in 0..3 {
        let client = gateway.member(&format!("user{n}")).await;
        for channel in [busy, lobby] {
            within("subscribe", client.subscribe(channel))
                .await
                .unwrap();
        }
        subscribers.push(client);
    }
    let publishers = four_publishers_of_25(&gateway, busy).await;
    let late = gateway.member("late").await;
    for n in 0..100 {
        gateway.publish(lobby, "n", json!(n)).await;
        if n == 50 {
            within("subscribe", late.subscribe(lobby)).await.unwrap();
        }
    }
    for publisher in publishers {
        within("publishers", publisher).await.unwrap();
    }
    let lobby_from = |from: usize| -> Vec<String> { (from..100).map(|n| n.to_string()).collect() };
    for (i, subscriber) in subscribers.iter().enumerate() {
        let (mut offsets, mut lobby_data) = (Vec::new(), Vec::new());
        while offsets.len() < 100 || lobby_data.len() < 100 {
            let push = next_push(subscriber, "a publication", |p| p.publication.is_some()).await;
            let publication = push.publication.unwrap();
            match push.channel.as_deref() {
                Some("public:lobby") => lobby_data.push(publication.data.get().to_owned()),
                _ => offsets.push(publication.offset),
            }
        }
        assert_eq!(offsets, (1..=100).collect::<Vec<_>>(), "subscriber {i}");
        assert_eq!(lobby_data, lobby_from(0), "subscriber {i}");
    }
    // Those still on their way when it subscribed may come too (a channel without history
    // has no position to cut them at), each once, in order.
    let mut late_data = Vec::new();
    while late_data.last().map(String::as_str) != Some("99") {
        late_data.push(next_publication(&late).await.data.get().to_owned());
    }
    let first: usize = late_data[0].parse().unwrap();
    assert!(first <= 51, "the late subscriber missed {first}");
    assert_eq!(late_data, lobby_from(first), "the late subscriber");
}

#[tokio::test]
async fn idempotency_key_publishes_once() {
    let gateway = TestGateway::start().await;
    let alice = gateway.member("alice").await;
    within("subscribe", alice.subscribe("org:acme:ch:general"))
        .await
        .unwrap();
    let mut grpc = gateway.grpc().await;
    let request = || PublishRequest {
        channel: "org:acme:ch:general".into(),
        event: "message.created".into(),
        data: b"{\"id\":\"m1\"}".to_vec(),
        idempotency_key: "m1".into(),
    };
    let first = within("publish", grpc.publish(request()))
        .await
        .unwrap()
        .into_inner();
    let retry = within("retry", grpc.publish(request()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first, retry);
    gateway
        .publish("org:acme:ch:general", "marker", json!({}))
        .await;
    assert_eq!(next_publication(&alice).await.offset, first.offset);
    let next = next_publication(&alice).await;
    assert_eq!(next.event, "marker", "the retry delivered nothing");
    assert_eq!(next.offset, first.offset + 1);
}

#[tokio::test]
async fn a_client_publish_with_an_idempotency_key_is_applied_once_and_the_key_is_its_users() {
    let gateway = TestGateway::with(|c| {
        c.namespaces.insert("chat".into(), chat_namespace());
    })
    .await;
    let alice = gateway.member("alice").await;
    let bob = gateway.member("bob").await;
    let channel = "chat:acme:room";
    within("subscribe", bob.subscribe(channel)).await.unwrap();
    async fn publish(client: &herald_client::Client, text: &str) -> serde_json::Value {
        let params = json!({
            "channel": "chat:acme:room",
            "event": "message.created",
            "data": {"text": text},
            "idempotencyKey": "k1",
        });
        let result = within("publish", client.request("publish", params)).await;
        serde_json::from_str::<serde_json::Value>(result.expect("published").get()).unwrap()["offset"].clone()
    }
    let first = publish(&alice, "once").await;
    // A retry (a reply lost to a reconnect) answers the same offset and publishes nothing.
    let retry = publish(&alice, "twice").await;
    assert_eq!(first, retry);
    // Another user's same key is another key.
    let other = publish(&bob, "bob's").await;
    assert_ne!(other, first);
    let texts: Vec<String> = [next_publication(&bob).await, next_publication(&bob).await]
        .iter()
        .map(|p| {
            serde_json::from_str::<serde_json::Value>(p.data.get()).unwrap()["text"].to_string()
        })
        .collect();
    assert_eq!(texts, [r#""once""#, r#""bob's""#]);

    // The backend can neither claim nor collide with a client's key.
    let mut grpc = gateway.grpc().await;
    let request = PublishRequest {
        channel: channel.into(),
        event: "e".into(),
        data: b"{}".to_vec(),
        idempotency_key: "client:5:alice:k1".into(),
    };
    let refused = within("reserved key", grpc.publish(request)).await;
    assert_eq!(
        refused.expect_err("a key in the clients' space").code(),
        tonic::Code::InvalidArgument
    );
}

#[tokio::test]
async fn client_publish_is_stamped_with_sender_and_time_where_allowed() {
    let gateway = TestGateway::with(|c| {
        c.namespaces.insert("chat".into(), chat_namespace());
    })
    .await;
    let alice = gateway.member("alice").await;
    let bob = gateway.member("bob").await;
    within("subscribe", bob.subscribe("chat:acme:room"))
        .await
        .unwrap();
    let before = herald_gateway::clock::unix_millis();
    let data = json!({"text": "hi", "from": "mallory", "ts": 1});
    let result = within(
        "publish",
        alice.publish("chat:acme:room", "message.created", data.clone()),
    )
    .await
    .unwrap();
    assert_eq!(result.offset, 1);
    let publication = next_publication(&bob).await;
    assert_eq!(publication.from.as_deref(), Some("alice"));
    assert!(publication.ts >= before, "the server stamps the time");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(publication.data.get()).unwrap(),
        data
    );

    assert_eq!(
        error_code(
            within(
                "not allowed",
                alice.publish("org:acme:ch:general", "x", json!({}))
            )
            .await
        ),
        103
    );
    assert_eq!(
        error_code(
            within(
                "not a member",
                alice.publish("chat:other:room", "x", json!({}))
            )
            .await
        ),
        103
    );
    assert_eq!(
        error_code(within("bad event", alice.publish("chat:acme:room", "", json!({}))).await),
        107
    );
}

#[tokio::test]
async fn history_pages_forward_over_websocket_and_grpc() {
    let gateway = TestGateway::start().await;
    for n in 1..=7 {
        gateway.publish("org:acme:ch:general", "m", json!(n)).await;
    }
    let alice = gateway.member("alice").await;
    let page = within(
        "history",
        alice.history("org:acme:ch:general", Some(3), Some(2)),
    )
    .await
    .unwrap();
    assert_eq!(
        page.publications
            .iter()
            .map(|p| p.offset)
            .collect::<Vec<_>>(),
        vec![3, 4, 5]
    );
    assert_eq!(page.offset, 7);
    let outsider = gateway.client(&gateway.token("eve", &[], &[])).await;
    assert_eq!(
        error_code(
            within(
                "history",
                outsider.history("org:acme:ch:general", None, None)
            )
            .await
        ),
        103
    );

    let request = HistoryRequest {
        channel: "org:acme:ch:general".into(),
        since_offset: 5,
        limit: 0,
    };
    let history = within("gRPC history", gateway.grpc().await.history(request))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        history
            .publications
            .iter()
            .map(|p| p.offset)
            .collect::<Vec<_>>(),
        vec![6, 7]
    );
    assert_eq!(history.publications[0].data, b"6");
    assert_eq!(history.offset, 7);
}
