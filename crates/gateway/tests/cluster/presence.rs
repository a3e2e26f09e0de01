//! The shared presence suite against two nodes (Redis state, NATS between them), and what
//! only a cluster can show: a killed node's users leave and go offline, once.

use std::net::SocketAddr;
use std::time::Duration;

use crate::backends::{NatsServer, RedisServer};
use crate::common::within;
use crate::nodes::Node;
use crate::presence_suite::{self as suite, Deployment, connect, next_push};

struct Cluster {
    _nats: NatsServer,
    _redis: RedisServer,
    nodes: Vec<Node>,
}

impl Cluster {
    async fn start() -> Cluster {
        let nats = NatsServer::start().await;
        let redis = RedisServer::start().await;
        let nodes = vec![
            Node::start("node-a", &nats, &redis).await,
            Node::start("node-b", &nats, &redis).await,
        ];
        Cluster {
            _nats: nats,
            _redis: redis,
            nodes,
        }
    }
}

impl Deployment for Cluster {
    fn ws_url(&self, node: usize) -> String {
        self.nodes[node % self.nodes.len()].ws_url.clone()
    }

    fn grpc_addr(&self, node: usize) -> SocketAddr {
        self.nodes[node % self.nodes.len()].grpc
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tabs_make_one_online_and_one_offline_transition() {
    suite::two_tabs_make_one_online_and_one_offline_transition(&Cluster::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_status_reaches_the_org_once_per_change() {
    suite::set_status_reaches_the_org_once_per_change(&Cluster::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_lists_members_across_nodes_with_join_and_leave() {
    suite::presence_lists_members_across_nodes_with_join_and_leave(&Cluster::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_is_pushed_to_others_rate_limited_and_ends() {
    suite::typing_is_pushed_to_others_rate_limited_and_ends(&Cluster::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_members_join_and_leave() {
    suite::a_thousand_members_join_and_leave(&Cluster::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_users_leave_and_go_offline_once() {
    let mut cluster = Cluster::start().await;
    let channel = "org:acme:ch:survivors";
    let watcher = connect(&cluster, 0, "watcher").await;
    watcher.subscribe("org:acme").await.unwrap();
    watcher.subscribe(channel).await.unwrap();
    let alice = connect(&cluster, 1, "alice").await;
    alice.subscribe(channel).await.unwrap();
    next_push(&watcher, "alice's join", |p| p.join.is_some()).await;
    assert_eq!(watcher.presence(channel).await.unwrap().members.len(), 2);

    cluster.nodes[1].kill().await;
    // TTL 3 s, refreshed and swept every second: well within the bounded wait.
    let mut left = 0;
    let mut offline = 0;
    within("alice to leave and go offline", async {
        while left == 0 || offline == 0 {
            let push = watcher.next_push().await.expect("watcher connected");
            if push.leave.as_ref().is_some_and(|m| m.user == "alice") {
                left += 1;
            }
            if push
                .status
                .as_ref()
                .is_some_and(|s| s.user == "alice" && s.status == "offline")
            {
                offline += 1;
            }
        }
    })
    .await;
    assert_eq!(watcher.presence(channel).await.unwrap().members.len(), 1);
    // Nothing more about alice, though both nodes' sweepers keep running.
    tokio::time::sleep(Duration::from_secs(3)).await;
    while let Ok(Some(push)) =
        tokio::time::timeout(Duration::from_millis(100), watcher.next_push()).await
    {
        let about_alice = push.leave.as_ref().is_some_and(|m| m.user == "alice")
            || push.status.as_ref().is_some_and(|s| s.user == "alice");
        assert!(!about_alice, "announced twice: {push:?}");
    }
}
