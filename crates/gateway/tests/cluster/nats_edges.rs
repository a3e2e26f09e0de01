//! What arrives over NATS is not trusted, and channel interest has one owner.
//!
//! Services publish ephemeral events on `herald.app.<channel>`: their offset, epoch and
//! sender are ignored and their data is checked and compacted. Node subjects
//! (`herald.node.<channel>`) are for nodes only (NATS permissions), but even there a forged
//! offset, an old epoch or a malformed presence event costs no subscriber anything.
//! The permissions README documents are the ones a test runs a cluster with.

use std::time::Duration;

use herald_api::v1::DisconnectRequest;
use herald_api::v1::client::Publication as WirePublication;
use herald_client::Client;
use herald_testkit::backends::{NatsServer, RedisServer};
use herald_testkit::client::{next_publication, next_push};
use herald_testkit::tokens::member_token;
use herald_testkit::within;
use prost::Message;
use tokio::sync::mpsc;

use crate::follower::Follower;
use crate::nodes::{Node, cluster};

/// An envelope as a node or a service encodes it, claiming to be from "ceo".
fn envelope(offset: u64, epoch: &str, data: &[u8]) -> bytes::Bytes {
    WirePublication {
        event: "seq".into(),
        data: data.to_vec(),
        offset,
        epoch: epoch.into(),
        ts: 0,
        from: "ceo".into(),
    }
    .encode_to_vec()
    .into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_malformed_nats_messages_cost_no_subscriber_anything() {
    let (nats, _redis, nodes) = cluster(2).await;
    let channel = "org:acme:ch:trust";
    let mut followers = vec![
        Follower::start("a", vec![nodes[0].ws_url.clone()], channel).await,
        Follower::start("b", vec![nodes[1].ws_url.clone()], channel).await,
    ];
    let mut grpc = nodes[0].grpc().await;
    let first = nodes[0].publish(&mut grpc, channel, 1, "").await.unwrap();
    for follower in &mut followers {
        follower
            .wait_until("offset 1", |r| r.publications.len() == 1)
            .await;
    }

    // A plain client besides the followers, to see the service event's sender.
    let (reader, _) = within(
        "connect",
        Client::connect(&nodes[1].ws_url, &member_token("reader")),
    )
    .await
    .unwrap();
    within("subscribe", reader.subscribe(channel))
        .await
        .unwrap();

    let raw = within("NATS connect", async_nats::connect(nats.url()))
        .await
        .expect("NATS connects");
    let node_subject = "herald.node.org.acme.ch.trust";
    // A service's event claiming an offset, an epoch and a sender, with pretty data: it is
    // delivered as an ephemeral event from no one, compacted.
    raw.publish(
        "herald.app.org.acme.ch.trust",
        envelope(999, "forged", b"{\"n\":\n  77}"),
    )
    .await
    .unwrap();
    // On the nodes' own subject (NATS permissions misconfigured): an offset no state
    // assigns, one far ahead, and one from another epoch.
    raw.publish(
        node_subject,
        envelope(u64::MAX, &first.epoch, b"{\"n\":66}"),
    )
    .await
    .unwrap();
    raw.publish(node_subject, envelope(51, &first.epoch, b"{\"n\":51}"))
        .await
        .unwrap();
    raw.publish(node_subject, envelope(2, "an-old-epoch", b"{\"n\":55}"))
        .await
        .unwrap();
    // Presence events that are not one compact push on this channel.
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Herald-Event", "1");
    for body in [
        &br#"{"id":1,"result":{"fake":true}}"#[..],
        b"{\"push\":{\"channel\":\"org:acme:ch:trust\",\"typing\":\n{}}}",
        br#"{"push":{"channel":"org:acme:ch:other","typing":{}}}"#,
    ] {
        raw.publish_with_headers(node_subject, headers.clone(), body.to_vec().into())
            .await
            .unwrap();
    }
    // Neither a node nor an app subject.
    raw.publish(
        "herald.xyz.org.acme.ch.trust",
        envelope(0, "", b"{\"n\":88}"),
    )
    .await
    .unwrap();
    raw.flush().await.unwrap();

    for follower in &mut followers {
        let received = follower
            .wait_until("the service's event", |r| r.publications.len() == 2)
            .await;
        assert_eq!(
            received.publications[1],
            (String::new(), 0, 77),
            "no offset, no epoch"
        );
    }
    // The first publication after its subscribe (the node subjects' forgeries come after it
    // and none is delivered).
    let event = next_publication(&reader).await;
    assert_eq!(
        (event.data.get(), event.from.as_deref()),
        (r#"{"n":77}"#, None),
        "compact, and from no one"
    );
    // u64::MAX, three events, the foreign subject, and the forged offset 51 once the gap
    // fill found the state never assigned it.
    for node in &nodes {
        node.wait_for_metric(
            r#"herald_nats_messages_received_total{result="invalid"}"#,
            6.0,
        )
        .await;
    }

    let mut grpc = nodes[1].grpc().await;
    for n in 2..=3 {
        nodes[1].publish(&mut grpc, channel, n, "").await.unwrap();
    }
    for follower in &mut followers {
        let received = follower
            .wait_until("offsets 2 and 3", |r| r.publications.len() == 4)
            .await;
        assert_eq!(received.offsets(&first.epoch), vec![1, 2, 3]);
        assert!(
            received.recoveries.is_empty(),
            "no subscriber was sent to resubscribe: {received:?}"
        );
        assert_eq!(received.connections, 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_told_ok_holds_a_nats_subscription_even_when_the_first_attempt_failed() {
    let (mut nats, _redis, nodes) = cluster(2).await;
    let channel = "public:interest";
    let (first, _) = within(
        "connect",
        Client::connect(&nodes[0].ws_url, &member_token("first")),
    )
    .await
    .unwrap();
    let (second, _) = within(
        "connect",
        Client::connect(&nodes[0].ws_url, &member_token("second")),
    )
    .await
    .unwrap();

    // NATS goes away: the first subscriber's interest fails (at once, or after the flush
    // timeout) while the second one joins the channel.
    nats.stop().await;
    let attempts = within("both subscribes", async {
        tokio::join!(first.subscribe(channel), async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            second.subscribe(channel).await
        })
    })
    .await;
    nats.restart().await;
    nodes[0].wait_ready(200).await;
    nodes[1].wait_ready(200).await;

    // Whoever was told OK receives what is published after.
    let subscribed: Vec<&Client> = [(&first, attempts.0.is_ok()), (&second, attempts.1.is_ok())]
        .into_iter()
        .filter_map(|(client, ok)| ok.then_some(client))
        .collect();
    for client in [&first, &second] {
        if !subscribed.iter().any(|c| std::ptr::eq(*c, client)) {
            within("resubscribe", client.subscribe(channel))
                .await
                .expect("subscribe once NATS is back");
        }
    }
    let mut grpc = nodes[1].grpc().await;
    nodes[1].publish(&mut grpc, channel, 1, "").await.unwrap();
    for client in [&first, &second] {
        let publication = herald_testkit::client::next_publication(client).await;
        assert_eq!(publication.event, "seq");
    }
}

/// The nats-server `authorization` block README gives nodes and services, with its two
/// password variables defined.
fn documented_permissions() -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
        .expect("README.md");
    let block = readme
        .split_once("<!-- NATS permissions:")
        .and_then(|(_, rest)| rest.split_once("```text\n"))
        .and_then(|(_, rest)| rest.split_once("```"))
        .map(|(block, _)| block)
        .expect("README's NATS permissions block, after its marker");
    format!(
        "NATS_NODE_PASSWORD: \"node-secret\"\nNATS_SERVICE_PASSWORD: \"service-secret\"\n{block}"
    )
}

/// Waits (bounded) for the server error NATS reports to a client for `what`.
async fn violation(errors: &mut mpsc::UnboundedReceiver<String>, what: &str) {
    within(&format!("NATS to refuse {what}"), async {
        while let Some(error) = errors.recv().await {
            if error.contains(&format!("Permissions Violation for {what}")) {
                return;
            }
        }
        panic!("the service's NATS connection ended");
    })
    .await;
}

/// With exactly README's permissions, nodes run a cluster (subscribe round trips, publications
/// and presence events across nodes, `Disconnect` orders on `herald.control`), and a service
/// can publish ephemeral events but not on the nodes' subjects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_nats_permissions_run_a_cluster_and_keep_services_off_node_subjects() {
    let nats = NatsServer::start_with_config(&documented_permissions()).await;
    let redis = RedisServer::start().await;
    let as_node = nats.url_as("herald", "node-secret");
    // Each start waits for /readyz 200, which needs NATS to have let the node in.
    let nodes = [
        Node::start_with_nats_url("node-0", &as_node, &redis).await,
        Node::start_with_nats_url("node-1", &as_node, &redis).await,
    ];
    let channel = "org:acme:ch:permissions";
    let connect = |node: usize, user: &str| {
        let (url, token) = (nodes[node].ws_url.clone(), member_token(user));
        async move {
            within("connect", Client::connect(&url, &token))
                .await
                .expect("connects")
                .0
        }
    };

    // A subscribe is answered only after its round trip on `_INBOX.>`.
    let alice = connect(1, "alice").await;
    within("subscribe", alice.subscribe(channel))
        .await
        .expect("subscribe");
    let bob = connect(0, "bob").await;
    within("subscribe", bob.subscribe(channel))
        .await
        .expect("subscribe");
    next_push(&alice, "bob's join from the other node", |push| {
        push.join
            .as_ref()
            .is_some_and(|member| &*member.user == "bob")
    })
    .await;
    let mut grpc = nodes[0].grpc().await;
    let first = nodes[0].publish(&mut grpc, channel, 1, "").await.unwrap();
    let publication = next_publication(&alice).await;
    assert_eq!(
        (publication.offset, publication.data.get()),
        (1, r#"{"n":1}"#)
    );

    // A service forges the next publication on the node subject, then sends an event on
    // the app subject. NATS keeps one connection's messages in order, so had the forged
    // one passed, alice would receive it first.
    let (report, mut errors) = mpsc::unbounded_channel();
    let service = within(
        "the service connects",
        async_nats::ConnectOptions::with_user_and_password(
            "service".into(),
            "service-secret".into(),
        )
        .event_callback(move |event| {
            let report = report.clone();
            async move {
                if let async_nats::Event::ServerError(error) = event {
                    let _ = report.send(error.to_string());
                }
            }
        })
        .connect(nats.url()),
    )
    .await
    .expect("the service connects");
    let node_subject = "herald.node.org.acme.ch.permissions";
    service
        .publish(node_subject, envelope(2, &first.epoch, b"{\"n\":666}"))
        .await
        .unwrap();
    service
        .publish(
            "herald.control",
            br#"{"disconnect":{"user":"alice","code":4001,"reason":"forged","origin":"x"}}"#
                .to_vec()
                .into(),
        )
        .await
        .unwrap();
    service
        .publish(
            "herald.app.org.acme.ch.permissions",
            envelope(0, "", b"{\"n\":77}"),
        )
        .await
        .unwrap();
    service.flush().await.unwrap();
    violation(&mut errors, &format!("Publish to \"{node_subject}\"")).await;
    violation(&mut errors, "Publish to \"herald.control\"").await;
    let event = next_publication(&alice).await;
    assert_eq!(
        (event.offset, event.data.get()),
        (0, r#"{"n":77}"#),
        "the service's event, and nothing before it"
    );
    // Nor may it read the nodes' subjects.
    let _denied = service.subscribe("herald.node.>").await.unwrap();
    service.flush().await.unwrap();
    violation(&mut errors, "Subscription to \"herald.node.>\"").await;

    // Offset 2 is the real publication, not the forged one.
    nodes[0].publish(&mut grpc, channel, 2, "").await.unwrap();
    let publication = next_publication(&alice).await;
    assert_eq!(
        (publication.offset, publication.data.get()),
        (2, r#"{"n":2}"#)
    );

    // A Disconnect on node 0 reaches dora on node 1 over `herald.control`.
    let dora = connect(1, "dora").await;
    let request = DisconnectRequest {
        user: "dora".into(),
        code: 4001,
        reason: "account suspended".into(),
    };
    within("Disconnect", grpc.disconnect(request))
        .await
        .expect("Disconnect");
    let closed = within("dora's close", dora.closed()).await.expect("closed");
    assert_eq!(closed.code, 4001);
    within("ping", alice.ping()).await.expect("alice stays");
}
