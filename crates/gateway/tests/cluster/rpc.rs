//! Client `rpc` in a cluster: every node calls the same backend, on behalf of the
//! connections it holds.

use herald_client::Client;
use herald_testkit::backends::{NatsServer, RedisServer};
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
