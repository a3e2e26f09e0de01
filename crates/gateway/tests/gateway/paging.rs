//! No single reply is a slow-consumer close: `history`, recovery, `presence` and gRPC
//! `History` answer in pages bounded by bytes, and say when there is more.

use herald_api::v1::HistoryRequest;
use herald_client::{StreamPosition, SubscribeResult};
use serde_json::json;

use crate::common::*;

const BIG: &str = "org:acme:ch:big";
/// The default reply budget: a quarter of the default 1 MiB queue budget.
const REPLY_BYTES: usize = 256 * 1024;

/// About 60 KB of JSON data, carrying `n`.
fn big_data(n: u64) -> serde_json::Value {
    json!({ "n": n, "pad": "x".repeat(60 * 1000) })
}

/// Publishes `count` publications of ~60 KB on `channel`; returns the epoch.
async fn publish_big(gateway: &TestGateway, channel: &str, count: u64) -> String {
    let mut epoch = String::new();
    for n in 1..=count {
        epoch = gateway.publish(channel, "m", big_data(n)).await.epoch;
    }
    epoch
}

fn n_of(data: &serde_json::value::RawValue) -> u64 {
    let value: serde_json::Value = serde_json::from_str(data.get()).unwrap();
    value["n"].as_u64().expect("data carries n")
}

/// The publications' offsets, checking each carries its own number in its data.
fn offsets(publications: &[herald_client::ReceivedPublication]) -> Vec<u64> {
    publications
        .iter()
        .map(|p| {
            assert_eq!(n_of(&p.data), p.offset, "offset {} data", p.offset);
            p.offset
        })
        .collect()
}

fn data_bytes(publications: &[herald_client::ReceivedPublication]) -> usize {
    publications.iter().map(|p| p.data.get().len()).sum()
}

#[tokio::test]
async fn a_history_larger_than_the_queue_is_answered_in_pages() {
    let gateway = TestGateway::start().await;
    publish_big(&gateway, BIG, 20).await;
    let alice = gateway.member("alice").await;
    let mut got = Vec::new();
    let mut since = 0;
    let mut pages = 0;
    loop {
        let page = within("history page", alice.history(BIG, None, Some(since)))
            .await
            .expect("a history page, not a slow-consumer close");
        pages += 1;
        assert!(
            data_bytes(&page.publications) <= REPLY_BYTES,
            "page {pages} holds {} bytes",
            data_bytes(&page.publications)
        );
        assert!(!page.publications.is_empty(), "page {pages} is empty");
        assert_eq!(page.offset, 20);
        got.extend(offsets(&page.publications));
        since = *got.last().unwrap();
        assert_eq!(page.more, since < 20, "`more` until the channel's offset");
        if !page.more {
            break;
        }
        assert!(pages < 20, "paging makes progress");
    }
    assert_eq!(got, (1..=20).collect::<Vec<_>>());
    assert!(pages >= 5, "1.2 MB in pages of at most 256 KiB: {pages}");

    // `limit` still applies, with `more` when it stopped short.
    let page = within("limited page", alice.history(BIG, Some(2), Some(10)))
        .await
        .unwrap();
    assert_eq!(offsets(&page.publications), vec![11, 12]);
    assert!(page.more);
    within("ping after paging", alice.ping())
        .await
        .expect("the connection is still open");
}

/// Follows a recovering subscribe's `more` with `history` pages up to the result's offset.
async fn recover_all(
    client: &herald_client::Client,
    channel: &str,
    result: &SubscribeResult<herald_client::ReceivedPublication>,
) -> Vec<u64> {
    let mut got = offsets(&result.publications);
    let mut more = result.more;
    while more {
        let since = *got.last().expect("a page before `more`");
        let page = within("history page", client.history(channel, None, Some(since)))
            .await
            .expect("history page");
        assert_eq!(page.epoch, result.epoch);
        assert_eq!(
            page.publications.first().map(|p| p.offset),
            Some(since + 1),
            "pages are contiguous"
        );
        assert!(data_bytes(&page.publications) <= REPLY_BYTES);
        got.extend(
            offsets(&page.publications)
                .into_iter()
                .filter(|offset| *offset <= result.offset),
        );
        more = *got.last().unwrap() < result.offset;
    }
    got
}

#[tokio::test]
async fn recovering_six_megabytes_pages_through_history_while_live_pushes_flow() {
    let gateway = TestGateway::start().await;
    let epoch = publish_big(&gateway, BIG, 100).await;
    let alice = gateway.member("alice").await;
    let recover = StreamPosition { offset: 0, epoch };
    let result = within(
        "recovering subscribe",
        alice.subscribe_with(BIG, None, Some(recover)),
    )
    .await
    .expect("a recovering subscribe is not a slow-consumer close");
    assert!(result.recovered, "history covers the gap");
    assert!(result.more, "6 MB do not fit one reply");
    assert_eq!(result.offset, 100);
    assert!(data_bytes(&result.publications) <= REPLY_BYTES);
    assert_eq!(result.publications.first().map(|p| p.offset), Some(1));

    // Live publications go on while the client pages: they arrive as pushes, after the
    // result's offset, and history pages never need to go past it.
    for n in 101..=103 {
        gateway.publish(BIG, "m", big_data(n)).await;
    }
    let got = recover_all(&alice, BIG, &result).await;
    assert_eq!(got, (1..=100).collect::<Vec<_>>());
    for n in 101..=103 {
        let publication = next_publication(&alice).await;
        assert_eq!(
            publication.offset, n,
            "live pushes after the result's offset"
        );
    }
}

#[tokio::test]
async fn a_recovery_that_history_no_longer_covers_sends_no_page() {
    let gateway = TestGateway::with(|c| {
        c.namespaces.get_mut("org").unwrap().options.history_size = 5;
    })
    .await;
    let epoch = publish_big(&gateway, BIG, 8).await;
    let alice = gateway.member("alice").await;
    let recover = StreamPosition { offset: 1, epoch };
    let result = within("subscribe", alice.subscribe_with(BIG, None, Some(recover)))
        .await
        .unwrap();
    assert!(!result.recovered && !result.more);
    assert!(result.publications.is_empty());
}

#[tokio::test]
async fn grpc_history_pages_six_megabytes_under_the_grpc_message_limit() {
    let gateway = TestGateway::start().await;
    publish_big(&gateway, BIG, 100).await;
    let mut grpc = gateway.grpc().await;
    let mut got = Vec::new();
    let mut since = 0;
    loop {
        let request = HistoryRequest {
            channel: BIG.into(),
            since_offset: since,
            limit: 0,
        };
        let page = within("gRPC History", grpc.history(request))
            .await
            .expect("a response within gRPC's 4 MiB default")
            .into_inner();
        let bytes: usize = page.publications.iter().map(|p| p.data.len()).sum();
        assert!(bytes <= 1024 * 1024, "a page of {bytes} bytes");
        for publication in &page.publications {
            let value: serde_json::Value = serde_json::from_slice(&publication.data).unwrap();
            assert_eq!(value["n"], publication.offset);
            got.push(publication.offset);
        }
        since = *got.last().expect("a non-empty page");
        assert_eq!(page.more, since < page.offset);
        if !page.more {
            break;
        }
    }
    assert_eq!(got, (1..=100).collect::<Vec<_>>());
}

#[tokio::test]
async fn presence_of_a_big_org_pages_with_a_cursor() {
    // A 64 KiB queue: 16 KiB replies, so 40 members with 1 KB of `info` take three pages.
    let gateway = TestGateway::with(|c| c.limits.client_queue_bytes = 64 * 1024).await;
    let channel = "org:acme";
    let mut clients = Vec::new();
    for n in 0..40 {
        let mut claims = claims(&format!("user{n:02}"), &["acme"], &[], 3600);
        let info = json!({ "name": format!("User {n}"), "bio": "b".repeat(1000) });
        claims.info = Some(
            serde_json::value::RawValue::from_string(info.to_string())
                .unwrap()
                .into(),
        );
        let client = gateway.client(&gateway.sign(claims)).await;
        within("subscribe", client.subscribe(channel))
            .await
            .unwrap();
        clients.push(client);
    }
    let looker = &clients[0];
    let mut members = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = within(
            "presence page",
            looker.presence_page(channel, cursor.as_deref()),
        )
        .await
        .expect("a presence page, not a slow-consumer close");
        pages += 1;
        assert!(!page.members.is_empty());
        let bytes: usize = page
            .members
            .iter()
            .map(|m| serde_json::to_vec(m).unwrap().len())
            .sum();
        assert!(bytes <= 16 * 1024, "page {pages}: {bytes} bytes");
        members.extend(page.members);
        assert_eq!(page.more, page.cursor.is_some());
        if !page.more {
            break;
        }
        cursor = page.cursor;
        assert!(pages < 40, "paging makes progress");
    }
    assert!(pages >= 3, "40 members of 1 KB in 16 KiB pages: {pages}");
    let order: Vec<(i64, String)> = members
        .iter()
        .map(|m| (m.joined_at, m.client.to_string()))
        .collect();
    let mut sorted = order.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(order, sorted, "oldest first, each connection once");
    let mut users: Vec<&str> = members.iter().map(|m| &*m.user).collect();
    users.sort_unstable();
    let expected: Vec<String> = (0..40).map(|n| format!("user{n:02}")).collect();
    assert_eq!(users, expected);

    // The client's `presence` follows every page; a bad cursor is a bad request.
    let all = within("presence", looker.presence(channel)).await.unwrap();
    assert_eq!(all.members.len(), 40);
    assert_eq!(
        error_code(within("bad cursor", looker.presence_page(channel, Some("nope"))).await),
        107
    );
}
