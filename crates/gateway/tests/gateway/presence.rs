//! The shared presence suite against a standalone node (in-memory state).

use std::net::SocketAddr;

use crate::common::TestGateway;
use crate::presence_suite::{self as suite, Deployment};

impl Deployment for TestGateway {
    fn ws_url(&self, _node: usize) -> String {
        self.ws_url.clone()
    }

    fn grpc_addr(&self, _node: usize) -> SocketAddr {
        self.grpc_addr
    }
}

#[tokio::test]
async fn two_tabs_make_one_online_and_one_offline_transition() {
    suite::two_tabs_make_one_online_and_one_offline_transition(&TestGateway::start().await).await;
}

#[tokio::test]
async fn set_status_reaches_the_org_once_per_change() {
    suite::set_status_reaches_the_org_once_per_change(&TestGateway::start().await).await;
}

#[tokio::test]
async fn presence_lists_members_with_join_and_leave() {
    suite::presence_lists_members_across_nodes_with_join_and_leave(&TestGateway::start().await)
        .await;
}

#[tokio::test]
async fn typing_is_pushed_to_others_rate_limited_and_ends() {
    suite::typing_is_pushed_to_others_rate_limited_and_ends(&TestGateway::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_members_join_and_leave() {
    suite::a_thousand_members_join_and_leave(&TestGateway::start().await).await;
}
