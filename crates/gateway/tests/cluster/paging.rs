//! Paged recovery with history in Redis: 6 MB of missed publications, read in chunks sized
//! by bytes, come back through replies that each fit the reply budget.

use herald_api::v1::PublishRequest;
use herald_client::{Client, StreamPosition};
use herald_testkit::backends::{NatsServer, RedisServer};
use herald_testkit::tokens::member_token;
use herald_testkit::within;

use crate::nodes::Node;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_megabytes_of_redis_history_recover_in_pages_on_another_node() {
    let nats = NatsServer::start().await;
    let redis = RedisServer::start().await;
    let a = Node::start("node-a", &nats, &redis).await;
    let b = Node::start("node-b", &nats, &redis).await;
    let channel = "org:acme:ch:big";
    let pad = "x".repeat(60 * 1000);
    let mut grpc = a.grpc().await;
    let mut epoch = String::new();
    for n in 1..=100u64 {
        let request = PublishRequest {
            channel: channel.into(),
            event: "m".into(),
            data: serde_json::json!({ "n": n, "pad": pad })
                .to_string()
                .into_bytes(),
            idempotency_key: String::new(),
        };
        epoch = within("publish", grpc.publish(request))
            .await
            .expect("publish")
            .into_inner()
            .epoch;
    }

    let (client, _) = within("connect", Client::connect(&b.ws_url, &member_token("rita")))
        .await
        .expect("connects to node-b");
    let result = within(
        "recovering subscribe",
        client.subscribe_with(channel, None, Some(StreamPosition { offset: 0, epoch })),
    )
    .await
    .expect("a recovering subscribe is not a slow-consumer close");
    assert!(
        result.recovered && result.more,
        "{:?}",
        (result.recovered, result.more)
    );
    assert_eq!(result.offset, 100);
    let mut got: Vec<u64> = result.publications.iter().map(|p| p.offset).collect();
    while got.last() < Some(&100) {
        let since = *got.last().expect("a first page");
        let page = within("history page", client.history(channel, None, Some(since)))
            .await
            .expect("a history page");
        let bytes: usize = page.publications.iter().map(|p| p.data.get().len()).sum();
        assert!(bytes <= 256 * 1024, "a page of {bytes} bytes");
        assert_eq!(
            page.more,
            page.publications.last().map(|p| p.offset) < Some(100)
        );
        for publication in &page.publications {
            let value: serde_json::Value = serde_json::from_str(publication.data.get()).unwrap();
            assert_eq!(value["n"], publication.offset);
            got.push(publication.offset);
        }
    }
    assert_eq!(got, (1..=100).collect::<Vec<_>>());
}
