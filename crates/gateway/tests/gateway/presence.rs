//! The shared presence suite against a standalone node (in-memory state).

use std::net::SocketAddr;
use std::time::Instant;

use herald_client::Client;
use herald_testkit::presence_suite::{self as suite, Deployment};

use crate::common::{TestGateway, claims, error_code, within};

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
async fn refresh_moves_status_and_presence_with_the_claims() {
    suite::refresh_moves_status_and_presence_with_the_claims(&TestGateway::start().await).await;
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

#[tokio::test]
async fn presence_state_is_listed_pushed_and_ends() {
    suite::presence_state_is_listed_pushed_and_ends(&TestGateway::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_members_join_and_leave() {
    suite::a_thousand_members_join_and_leave(&TestGateway::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crowd_gets_batched_presence_diffs() {
    let gateway = TestGateway::with(|config| config.presence_push_limit = 5).await;
    suite::a_crowd_gets_batched_presence_diffs(&gateway, 5).await;
}

/// Over the push limit a state change goes out in the channel's `presence` diff, netted:
/// the last of a connection's changes within the interval.
#[tokio::test]
async fn state_changes_in_a_crowd_go_out_in_presence_diffs() {
    let gateway = TestGateway::with(|config| config.presence_push_limit = 2).await;
    let channel = "org:acme:ch:crowd";
    let watcher = suite::connect(&gateway, 0, "watcher").await;
    watcher.subscribe(channel).await.unwrap();
    let mut crowd = Vec::new();
    for i in 0..3 {
        let (client, id) = suite::connect_with_id(&gateway, 0, &format!("user-{i}")).await;
        client.subscribe(channel).await.unwrap();
        crowd.push((client, id));
    }
    let (setter, setter_id) = &crowd[2];
    within("the setter's join in a diff", async {
        loop {
            let push = watcher.next_push().await.expect("watcher connected");
            let joins = push.presence.map(|diff| diff.joins).unwrap_or_default();
            if joins.iter().any(|m| &*m.client == setter_id.as_str()) {
                return;
            }
        }
    })
    .await;
    suite::set_state(setter, channel, serde_json::json!("first")).await;
    suite::set_state(setter, channel, serde_json::json!("last")).await;
    let states = within("the state in a diff", async {
        let mut states = Vec::new();
        loop {
            let push = watcher.next_push().await.expect("watcher connected");
            assert!(
                push.state.is_none(),
                "a state push past the limit: {push:?}"
            );
            let Some(diff) = push.presence else { continue };
            states.extend(
                diff.states
                    .into_iter()
                    .filter(|s| &*s.client == setter_id.as_str())
                    .map(|s| s.state.map(|s| s.get().to_owned())),
            );
            if states.last() == Some(&Some(r#""last""#.to_owned())) {
                return states;
            }
        }
    })
    .await;
    // The two changes came within a second (250 ms apart): usually one diff holds the
    // last only; a diff may have gone out between them.
    assert!(states.len() <= 2, "{states:?}");
    assert_eq!(
        suite::listed_state(&watcher, channel, setter_id).await,
        Some(Some(r#""last""#.to_owned()))
    );
}

/// The `status` pushes about `user` among `pushes`.
fn statuses_of<'a>(pushes: &'a [herald_client::Push], user: &str) -> Vec<&'a str> {
    pushes
        .iter()
        .filter_map(|push| suite::status_of(push, user))
        .collect()
}

#[tokio::test]
async fn set_status_pushes_are_throttled_per_user_and_the_last_one_wins() {
    let gateway = TestGateway::start().await;
    let watcher = suite::connect(&gateway, 0, "watcher").await;
    watcher.subscribe("org:acme").await.unwrap();
    let mut tabs = Vec::new();
    for _ in 0..3 {
        tabs.push(suite::connect(&gateway, 0, "alice").await);
    }
    suite::next_push(&watcher, "alice online", |p| {
        suite::status_of(p, "alice").is_some()
    })
    .await;
    // Twelve changes from three tabs in a burst, each one different from the one before.
    let sent = ["away", "online", "busy"].repeat(4);
    let started = Instant::now();
    for (tab, status) in tabs.iter().cycle().zip(&sent) {
        tab.set_status(status).await.unwrap();
    }
    let burst = started.elapsed();
    let mut pushes = vec![
        suite::next_push(&watcher, "alice's last status", |p| {
            suite::status_of(p, "alice") == Some("busy")
        })
        .await,
    ];
    suite::marker(&gateway, "org:acme", 1).await;
    pushes.extend(suite::pushes_until_marker(&watcher, 1).await);
    let seen = statuses_of(&pushes, "alice");
    assert_eq!(
        seen.last(),
        Some(&"busy"),
        "the last status set wins: {seen:?}"
    );
    // The old code pushed all twelve: now a burst of three, one a second, and the last.
    let allowed = burst.as_secs() as usize + 4;
    assert!(
        seen.len() <= allowed,
        "{} status pushes for a burst of 12 in {burst:?}: {seen:?}",
        seen.len()
    );
}

/// Alice's `tabs` (one or more connections) take turns: one stops typing, the next starts,
/// ten times, then the last one stops. Bob, watching, gets one stop now and then at most a
/// start and a stop per further second, however many tabs share the throttle.
async fn assert_typing_throttled(gateway: &TestGateway, channel: &str, tabs: &[Client]) {
    for tab in tabs {
        tab.subscribe(channel).await.unwrap();
    }
    let bob = suite::connect(gateway, 0, "bob").await;
    bob.subscribe(channel).await.unwrap();
    tabs[0].typing(channel, true).await.unwrap();
    let push = suite::next_push(&bob, "alice typing", |p| p.typing.is_some()).await;
    assert!(push.typing.unwrap().active);
    let started = Instant::now();
    for turn in 0..10 {
        tabs[turn % tabs.len()]
            .typing(channel, false)
            .await
            .unwrap();
        tabs[(turn + 1) % tabs.len()]
            .typing(channel, true)
            .await
            .unwrap();
    }
    tabs[10 % tabs.len()].typing(channel, false).await.unwrap();
    let burst = started.elapsed();
    suite::marker(gateway, channel, 1).await;
    let pushes = suite::pushes_until_marker(&bob, 1).await;
    let typing: Vec<bool> = pushes
        .iter()
        .filter_map(|push| push.typing.as_ref().map(|typing| typing.active))
        .collect();
    assert_eq!(typing.last(), Some(&false), "the typer stopped: {typing:?}");
    // The old code pushed all 21.
    let allowed = 1 + 2 * burst.as_secs() as usize;
    assert!(
        typing.len() <= allowed,
        "{} typing pushes for 21 updates from {} tabs in {burst:?}: {typing:?}",
        typing.len(),
        tabs.len()
    );
}

#[tokio::test]
async fn typing_stop_does_not_let_the_next_start_through_early() {
    let gateway = TestGateway::start().await;
    let alice = suite::connect(&gateway, 0, "alice").await;
    assert_typing_throttled(&gateway, "org:acme:ch:typing", &[alice]).await;
}

/// The throttle is per user: tabs that take turns get no more pushes out than one tab.
#[tokio::test]
async fn typing_is_throttled_per_user_across_connections() {
    let gateway = TestGateway::start().await;
    let tabs = [
        suite::connect(&gateway, 0, "alice").await,
        suite::connect(&gateway, 0, "alice").await,
        suite::connect(&gateway, 0, "alice").await,
    ];
    assert_typing_throttled(&gateway, "org:acme:ch:typing-tabs", &tabs).await;
}

#[tokio::test]
async fn a_token_with_control_characters_in_its_claims_is_refused() {
    let gateway = TestGateway::start().await;
    let cases = [
        claims("eve\r\nHerald-Exclude-User: bob", &["acme"], &[], 3600),
        claims("eve", &["acme\n"], &[], 3600),
        claims("eve", &["acme"], &["org:acme:\r*"], 3600),
    ];
    for claims in cases {
        let token = gateway.sign(claims.clone());
        let refused = within("connect", Client::connect(&gateway.ws_url, &token)).await;
        assert_eq!(error_code(refused), 101, "{claims:?} accepted");
    }
}

#[tokio::test]
async fn a_typing_start_held_back_after_a_stop_is_pushed_when_its_second_ends() {
    let gateway = TestGateway::start().await;
    let channel = "org:acme:ch:typing-again";
    let alice = suite::connect(&gateway, 0, "alice").await;
    alice.subscribe(channel).await.unwrap();
    let bob = suite::connect(&gateway, 0, "bob").await;
    bob.subscribe(channel).await.unwrap();
    for active in [true, false] {
        alice.typing(channel, active).await.unwrap();
        let push = suite::next_push(&bob, "alice's typing update", |p| p.typing.is_some()).await;
        assert_eq!(push.typing.unwrap().active, active);
    }
    // Sent a message, typing the next one at once: not lost to the throttle.
    alice.typing(channel, true).await.unwrap();
    let push = suite::next_push(&bob, "alice typing again", |p| p.typing.is_some()).await;
    assert!(push.typing.unwrap().active);
}
