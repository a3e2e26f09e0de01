//! What arrives over NATS is not trusted, and channel interest has one owner.
//!
//! Services publish ephemeral events on `herald.app.<channel>`: their offset, epoch and
//! sender are ignored and their data is checked and compacted. Node subjects
//! (`herald.node.<channel>`) are for nodes only (NATS permissions), but even there a forged
//! offset, an old epoch or a malformed presence event costs no subscriber anything.

use std::time::Duration;

use herald_api::v1::client::Publication as WirePublication;
use herald_client::Client;
use herald_testkit::http::wait_for_metric;
use herald_testkit::tokens::member_token;
use herald_testkit::within;
use prost::Message;

use crate::follower::Follower;
use crate::nodes::cluster;

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

    let raw = within("NATS connect", async_nats::connect(nats.url()))
        .await
        .expect("NATS connects");
    let node_subject = "herald.node.org.acme.ch.trust";
    let envelope = |offset: u64, epoch: &str, data: &[u8]| -> bytes::Bytes {
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
    };
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
    // u64::MAX, three events, the foreign subject, and the forged offset 51 once the gap
    // fill found the state never assigned it.
    for node in &nodes {
        wait_for_metric(
            node.metrics,
            "herald_nats_messages_received_total{result=\"invalid\"}",
            Duration::from_secs(20),
            |count| count == 6.0,
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
