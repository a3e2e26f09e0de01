//! Client `rpc` in a cluster: every node calls the same backend, on behalf of the
//! connections it holds.

use herald_client::{Client, ClientError};
use herald_testkit::backends::{NatsServer, RedisServer};
use herald_testkit::ports::free_addrs;
use herald_testkit::rpc_backend::TestBackend;
use herald_testkit::tokens::{SECRET, authenticator, claims};
use herald_testkit::within;
use serde_json::json;

use crate::nodes::Node;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_works_on_every_node_of_the_cluster() {
    let backend = TestBackend::start().await;
    let nats = NatsServer::start().await;
    let redis = RedisServer::start().await;
    let url = backend.url();
    let settings = [("HERALD_BACKEND_ADDR", url.as_str())];
    let nodes = [
        Node::start_with("node-a", &nats, &redis, &settings).await,
        Node::start_with("node-b", &nats, &redis, &settings).await,
    ];
    let auth = authenticator(SECRET).unwrap();
    for (user, node) in [("alice", &nodes[0]), ("bob", &nodes[1])] {
        let token = auth.sign(&claims(user, &["acme"], &[], 3600)).unwrap();
        let (client, connected) = within("connect", Client::connect(&node.ws_url, &token))
            .await
            .unwrap();
        let echoed = within("rpc", client.rpc("echo", json!({"from": user})))
            .await
            .unwrap();
        assert_eq!(
            (&echoed["user"], &echoed["node"], &echoed["data"]),
            (&json!(user), &json!(node.id), &json!({"from": user}))
        );
        assert_eq!(echoed["client"], connected.client.as_str());
        let received = backend.next_request().await;
        assert_eq!(received.request.node, node.id);
    }
}

fn server_error(result: Result<serde_json::Value, ClientError>) -> (u32, String, bool) {
    match result {
        Err(ClientError::Server(body)) => (body.code, body.message, body.temporary),
        other => panic!("expected a server error, got {other:?}"),
    }
}

/// What goes wrong at the backend reaches a client on any node as it does standalone: its
/// own error passed through, a timeout (113), and a node whose backend is down (112).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_errors_timeouts_and_outages_reach_clients_on_every_node() {
    let backend = TestBackend::start().await;
    let nats = NatsServer::start().await;
    let redis = RedisServer::start().await;
    let url = backend.url();
    let settings = [
        ("HERALD_BACKEND_ADDR", url.as_str()),
        ("HERALD_BACKEND_TIMEOUT_MS", "1500"),
    ];
    let _a = Node::start_with("node-a", &nats, &redis, &settings).await;
    let b = Node::start_with("node-b", &nats, &redis, &settings).await;
    // Bound, read and released: nothing listens there.
    let [nowhere] = free_addrs::<1>().unwrap();
    let nowhere = format!("http://{nowhere}");
    let c = Node::start_with(
        "node-c",
        &nats,
        &redis,
        &[("HERALD_BACKEND_ADDR", &nowhere)],
    )
    .await;
    let auth = authenticator(SECRET).unwrap();
    let token = auth.sign(&claims("bob", &["acme"], &[], 3600)).unwrap();
    let (on_b, _) = within("connect", Client::connect(&b.ws_url, &token))
        .await
        .unwrap();
    let (on_c, _) = within("connect", Client::connect(&c.ws_url, &token))
        .await
        .unwrap();

    let refused = within("rpc", on_b.rpc("refuse", json!({}))).await;
    assert_eq!(
        server_error(refused),
        (1403, "refused by the backend".to_owned(), false)
    );
    let (code, _, temporary) = server_error(within("rpc", on_b.rpc("hold", json!(null))).await);
    assert_eq!((code, temporary), (113, true));
    let (code, message, temporary) = server_error(within("rpc", on_c.rpc("echo", json!(1))).await);
    assert_eq!((code, temporary), (112, true), "{message}");

    // Each node counts its own calls, by result.
    let metrics = b.metrics().await;
    for series in [
        r#"herald_backend_requests_total{method="refuse",result="error"} 1"#,
        r#"herald_backend_requests_total{method="hold",result="timeout"} 1"#,
    ] {
        assert!(metrics.contains(series), "{series} in {metrics}");
    }
    let metrics = c.metrics().await;
    let series = r#"herald_backend_requests_total{method="echo",result="unavailable"} 1"#;
    assert!(metrics.contains(series), "{series} in {metrics}");
}
