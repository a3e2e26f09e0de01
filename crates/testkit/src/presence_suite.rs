//! Presence, online status and typing, as a client sees them. The same tests run against a
//! standalone node (in-memory state; "node 1" is node 0 again) and a two-node cluster
//! (Redis state, NATS between the nodes), so both implementations behave alike.

use std::collections::{BTreeSet, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use herald_api::v1::{PresenceRequest, UserStatusRequest};
use herald_client::{Client, Push};
use serde_json::json;

pub use crate::client::next_push;
use crate::grpc::grpc_client;
use crate::tokens::{API_KEY, claims, sign};
use crate::within;

/// Where the gateway under test runs.
pub trait Deployment {
    /// The WebSocket URL of node `i` (wrapping around: a standalone deployment has one).
    fn ws_url(&self, i: usize) -> String;
    /// The gRPC address of node `i` (wrapping around).
    fn grpc_addr(&self, i: usize) -> SocketAddr;
}

/// A client of user `sub` (member of org `acme`, channels `org:acme:*`, info with a name)
/// on node `node`.
pub async fn connect(d: &impl Deployment, node: usize, sub: &str) -> Client {
    connect_with_id(d, node, sub).await.0
}

/// [`connect`], with the connection id.
pub async fn connect_with_id(d: &impl Deployment, node: usize, sub: &str) -> (Client, String) {
    let mut claims = claims(sub, &["acme"], &["org:acme:*"], 3600);
    claims.info = Some(
        serde_json::value::RawValue::from_string(json!({ "name": sub.to_uppercase() }).to_string())
            .unwrap()
            .into(),
    );
    let token = sign(&claims);
    let (client, connected) = within("connect", Client::connect(&d.ws_url(node), &token))
        .await
        .expect("client connects");
    (client, connected.client)
}

pub fn status_of<'a>(push: &'a Push, user: &str) -> Option<&'a str> {
    push.status
        .as_ref()
        .filter(|status| *status.user == *user)
        .map(|status| status.status.as_str())
}

fn any_status(push: &Push) -> bool {
    push.status.is_some()
}

/// A publication pushed on `channel` marks a point in a client's stream: what came before
/// it came before.
pub async fn marker(d: &impl Deployment, channel: &str, n: u64) {
    let mut grpc = grpc_client(d.grpc_addr(0), Some(API_KEY)).await;
    let request = herald_api::v1::PublishRequest {
        channel: channel.into(),
        event: "marker".into(),
        data: format!("{{\"marker\":{n}}}").into_bytes(),
        idempotency_key: String::new(),
    };
    within("marker publish", grpc.publish(request))
        .await
        .expect("publish");
}

/// The pushes a client got before the marker publication `n`.
pub async fn pushes_until_marker(client: &Client, n: u64) -> Vec<Push> {
    let mut before = Vec::new();
    within("the marker publication", async {
        loop {
            let push = client.next_push().await.expect("connection open");
            let is_marker = push.publication.as_ref().is_some_and(|p| {
                p.event == "marker" && p.data.get() == format!("{{\"marker\":{n}}}")
            });
            if is_marker {
                return;
            }
            before.push(push);
        }
    })
    .await;
    before
}

pub async fn two_tabs_make_one_online_and_one_offline_transition(d: &impl Deployment) {
    let watcher = connect(d, 0, "watcher").await;
    watcher.subscribe("org:acme").await.unwrap();

    let tab1 = connect(d, 0, "alice").await;
    let push = next_push(&watcher, "alice online", any_status).await;
    assert_eq!(status_of(&push, "alice"), Some("online"));
    let tab2 = connect(d, 1, "alice").await;
    // Bob's arrival is the next status push: alice's second tab announced nothing.
    let bob = connect(d, 0, "bob").await;
    let push = next_push(&watcher, "bob online", any_status).await;
    assert_eq!(status_of(&push, "bob"), Some("online"), "{push:?}");

    tab1.close().await.unwrap();
    bob.close().await.unwrap();
    let push = next_push(&watcher, "bob offline", any_status).await;
    assert_eq!(
        status_of(&push, "bob"),
        Some("offline"),
        "alice still has a tab: {push:?}"
    );
    assert!(push.status.unwrap().last_seen > 0);

    tab2.close().await.unwrap();
    let push = next_push(&watcher, "alice offline", any_status).await;
    assert_eq!(status_of(&push, "alice"), Some("offline"));

    let mut grpc = grpc_client(d.grpc_addr(1), Some(API_KEY)).await;
    let request = UserStatusRequest {
        org: "acme".into(),
        users: vec!["alice".into(), "watcher".into(), "nobody".into()],
    };
    let statuses = within("UserStatus", grpc.user_status(request))
        .await
        .unwrap()
        .into_inner()
        .statuses;
    let view: Vec<(&str, &str, bool)> = statuses
        .iter()
        .map(|s| (s.user.as_str(), s.status.as_str(), s.last_seen > 0))
        .collect();
    assert_eq!(
        view,
        vec![
            ("alice", "offline", true),
            ("watcher", "online", false),
            ("nobody", "offline", false)
        ]
    );
}

pub async fn set_status_reaches_the_org_once_per_change(d: &impl Deployment) {
    let watcher = connect(d, 1, "watcher").await;
    watcher.subscribe("org:acme").await.unwrap();
    let alice = connect(d, 0, "alice").await;
    next_push(&watcher, "alice online", |p| {
        status_of(p, "alice").is_some()
    })
    .await;
    alice.set_status("away").await.unwrap();
    let push = next_push(&watcher, "alice away", any_status).await;
    assert_eq!(status_of(&push, "alice"), Some("away"));
    alice.set_status("away").await.unwrap(); // no change, no push
    alice.set_status("busy").await.unwrap();
    let push = next_push(&watcher, "alice busy", any_status).await;
    assert_eq!(status_of(&push, "alice"), Some("busy"));
    let bad = alice.set_status("offline").await.unwrap_err();
    assert_eq!(bad.server_code(), Some(107));
}

pub async fn presence_lists_members_across_nodes_with_join_and_leave(d: &impl Deployment) {
    let channel = "org:acme:ch:presence";
    let alice = connect(d, 0, "alice").await;
    alice.subscribe(channel).await.unwrap();
    let bob = connect(d, 1, "bob").await;
    bob.subscribe(channel).await.unwrap();
    let push = next_push(&alice, "bob's join", |p| p.join.is_some()).await;
    let joined = push.join.unwrap();
    assert_eq!(
        (&*joined.user, push.channel.as_deref()),
        ("bob", Some(channel))
    );
    assert_eq!(joined.info.unwrap().get(), r#"{"name":"BOB"}"#);

    let members = alice.presence(channel).await.unwrap().members;
    let mut users: Vec<(&str, Option<&str>)> = members
        .iter()
        .map(|m| (&*m.user, m.status.map(|s| s.as_str())))
        .collect();
    users.sort();
    assert_eq!(
        users,
        vec![("alice", Some("online")), ("bob", Some("online"))]
    );
    let stats = bob.presence_stats(channel).await.unwrap();
    assert_eq!((stats.users, stats.clients), (2, 2));

    let mut grpc = grpc_client(d.grpc_addr(1), Some(API_KEY)).await;
    let request = PresenceRequest {
        channel: channel.into(),
    };
    let listed = within("gRPC Presence", grpc.presence(request.clone()))
        .await
        .unwrap()
        .into_inner()
        .members;
    assert_eq!(listed.len(), 2);

    bob.unsubscribe(channel).await.unwrap();
    let push = next_push(&alice, "bob's leave", |p| p.leave.is_some()).await;
    assert_eq!(&*push.leave.unwrap().user, "bob");
    let members = alice.presence(channel).await.unwrap().members;
    assert_eq!(members.len(), 1);

    // Only subscribers may look.
    let error = bob.presence(channel).await.unwrap_err();
    assert_eq!(error.server_code(), Some(103));
    let listed = within("gRPC Presence", grpc.presence(request))
        .await
        .unwrap()
        .into_inner()
        .members;
    assert_eq!(listed.len(), 1);
}

pub async fn typing_is_pushed_to_others_rate_limited_and_ends(d: &impl Deployment) {
    let channel = "org:acme:ch:typing";
    let alice = connect(d, 0, "alice").await;
    alice.subscribe(channel).await.unwrap();
    let bob = connect(d, 1, "bob").await;
    bob.subscribe(channel).await.unwrap();

    // Ten updates in a burst: at most two pushes (one now, perhaps one a second later).
    for _ in 0..10 {
        alice.typing(channel, true).await.unwrap();
    }
    let push = next_push(&bob, "alice typing", |p| p.typing.is_some()).await;
    let typing = push.typing.unwrap();
    assert_eq!((&*typing.user, typing.active), ("alice", true));
    assert_eq!(typing.info.unwrap().get(), r#"{"name":"ALICE"}"#);

    // A late subscriber sees who is typing.
    let carol = connect(d, 1, "carol").await;
    let result = carol.subscribe(channel).await.unwrap();
    assert_eq!(result.typing.len(), 1);
    assert_eq!(&*result.typing[0].user, "alice");

    marker(d, channel, 1).await;
    let before = pushes_until_marker(&bob, 1).await;
    let typing_pushes = 1 + before.iter().filter(|p| p.typing.is_some()).count();
    assert!(
        typing_pushes <= 2,
        "{typing_pushes} typing pushes for a burst of 10"
    );
    let echoes = pushes_until_marker(&alice, 1).await;
    assert!(
        echoes.iter().all(|p| p.typing.is_none()),
        "the typer got its own typing: {echoes:?}"
    );

    alice.typing(channel, false).await.unwrap();
    let push = next_push(&bob, "alice stopped", |p| p.typing.is_some()).await;
    assert!(!push.typing.unwrap().active);

    // Without updates a typing indicator ends by itself after 5 s. A start within a second
    // of the last one pushed is not pushed, also after a stop: repeat it, as clients do.
    let started = within("alice typing again", async {
        loop {
            alice.typing(channel, true).await.unwrap();
            let typing = next_push(&bob, "alice typing again", |p| p.typing.is_some());
            if let Ok(push) = tokio::time::timeout(Duration::from_millis(250), typing).await {
                return push;
            }
        }
    })
    .await;
    assert!(started.typing.unwrap().active);
    let ended = within("typing to end by itself", async {
        next_push(&bob, "typing to end", |p| p.typing.is_some()).await
    })
    .await;
    assert!(!ended.typing.unwrap().active);

    // Only members may type.
    let outsider = connect(d, 0, "dave").await;
    let error = outsider.typing(channel, true).await.unwrap_err();
    assert_eq!(error.server_code(), Some(103));
}

pub async fn a_thousand_members_join_and_leave(d: &impl Deployment) {
    let channel = "org:acme:ch:crowd";
    let mut clients = Vec::new();
    for i in 0..1000 {
        let client = connect(d, i % 2, &format!("user-{i}")).await;
        client.subscribe(channel).await.unwrap();
        clients.push(client);
    }
    let looker = &clients[0];
    let members = looker.presence(channel).await.unwrap().members;
    assert_eq!(members.len(), 1000);
    let distinct: HashSet<&str> = members.iter().map(|m| &*m.client).collect();
    assert_eq!(distinct.len(), 1000, "no duplicates");
    let stats = looker.presence_stats(channel).await.unwrap();
    assert_eq!((stats.users, stats.clients), (1000, 1000));

    let watcher = connect(d, 1, "watcher").await;
    watcher.subscribe(channel).await.unwrap();
    for client in clients {
        client.close().await.unwrap();
    }
    within("every member to leave", async {
        loop {
            let stats = watcher.presence_stats(channel).await.unwrap();
            if stats.clients == 1 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

/// A `refresh` whose token drops org `acme`: the user goes offline there, the channel it can
/// no longer read ends with 2403 and others see it leave; a refresh that adds the org back
/// makes the user online again.
pub async fn refresh_moves_status_and_presence_with_the_claims(d: &impl Deployment) {
    let token = |orgs: &[&str], channels: &[&str]| sign(&claims("alice", orgs, channels, 3600));
    let watcher = connect(d, 0, "watcher").await;
    watcher.subscribe("org:acme").await.unwrap();
    watcher.subscribe("org:acme:general").await.unwrap();
    let alice = within(
        "alice connects",
        Client::connect(&d.ws_url(1), &token(&["acme", "beta"], &["org:acme:*"])),
    )
    .await
    .expect("alice connects")
    .0;
    let push = next_push(&watcher, "alice online", any_status).await;
    assert_eq!(status_of(&push, "alice"), Some("online"));
    alice.subscribe("org:acme:general").await.unwrap();
    next_push(&watcher, "alice's join", |push| {
        push.join.as_ref().is_some_and(|m| &*m.user == "alice")
    })
    .await;

    within("refresh", alice.refresh(&token(&["beta"], &[])))
        .await
        .expect("refresh");
    let push = next_push(&alice, "the 2403 unsubscribe", |push| {
        push.unsubscribe.is_some()
    })
    .await;
    assert_eq!(push.channel.as_deref(), Some("org:acme:general"));
    assert_eq!(push.unsubscribe.unwrap().code, 2403);
    let push = next_push(&watcher, "alice leaves and goes offline", |push| {
        push.leave.as_ref().is_some_and(|m| &*m.user == "alice")
            || status_of(push, "alice").is_some()
    })
    .await;
    let push = if push.leave.is_some() {
        next_push(&watcher, "alice offline", any_status).await
    } else {
        push
    };
    assert_eq!(status_of(&push, "alice"), Some("offline"), "{push:?}");

    within("refresh", alice.refresh(&token(&["acme"], &[])))
        .await
        .expect("refresh");
    let push = next_push(&watcher, "alice online again", any_status).await;
    assert_eq!(status_of(&push, "alice"), Some("online"), "{push:?}");
    let mut grpc = grpc_client(d.grpc_addr(0), Some(API_KEY)).await;
    let request = UserStatusRequest {
        org: "acme".into(),
        users: vec!["alice".into()],
    };
    let statuses = within("UserStatus", grpc.user_status(request))
        .await
        .unwrap()
        .into_inner()
        .statuses;
    assert_eq!(statuses[0].status, "online");
}

/// A crowd on a deployment whose presence push limit is `limit` (a few): the joins and
/// leaves past it come as a few batched `presence` diffs, not one push each, and applying
/// every push keeps a watcher's member list equal to the `presence` reply.
pub async fn a_crowd_gets_batched_presence_diffs(d: &impl Deployment, limit: usize) {
    let channel = "org:acme:ch:crowd";
    let watcher = connect(d, 1, "watcher").await;
    watcher.subscribe(channel).await.unwrap();
    let clients = |result: herald_client::PresenceResult| -> BTreeSet<String> {
        result
            .members
            .iter()
            .map(|m| m.client.to_string())
            .collect()
    };
    let mut seen = clients(watcher.presence(channel).await.unwrap());
    let started = Instant::now();
    let mut crowd = Vec::new();
    for i in 0..60 {
        let client = connect(d, i % 2, &format!("user-{i}")).await;
        client.subscribe(channel).await.unwrap();
        crowd.push(client);
    }
    for client in &crowd[..10] {
        client.unsubscribe(channel).await.unwrap();
    }
    // Leaves and comes back within the interval: a diff holds both, the leave applied first.
    crowd[10].unsubscribe(channel).await.unwrap();
    crowd[10].subscribe(channel).await.unwrap();
    crowd.remove(11).close().await.unwrap();
    let expected = 1 + 60 - 10 - 1;

    let (mut single, mut diffs) = (0, 0);
    within("the watcher's list to match the presence reply", async {
        loop {
            let quiet = Duration::from_millis(300);
            match tokio::time::timeout(quiet, watcher.next_push()).await {
                Ok(Some(push)) => {
                    if let Some(joined) = push.join {
                        single += 1;
                        seen.insert(joined.client.to_string());
                    }
                    if let Some(left) = push.leave {
                        single += 1;
                        seen.remove(&*left.client);
                    }
                    if let Some(diff) = push.presence {
                        diffs += 1;
                        for left in diff.leaves {
                            seen.remove(&*left.client);
                        }
                        for joined in diff.joins {
                            seen.insert(joined.client.to_string());
                        }
                    }
                }
                Ok(None) => panic!("the watcher's connection closed"),
                // Nothing came for a while: has every change arrived?
                Err(_) => {
                    let reply = clients(watcher.presence(channel).await.unwrap());
                    if reply.len() == expected && reply == seen {
                        return;
                    }
                }
            }
        }
    })
    .await;
    // Joins up to the limit are pushed one by one (the watcher is the first member).
    assert!(
        single < limit,
        "{single} join/leave pushes with a limit of {limit}"
    );
    // The rest: at most one diff a second per node (two nodes at most), and more than one
    // change each.
    let seconds = started.elapsed().as_secs() as usize + 2;
    assert!(
        diffs >= 1 && diffs <= 2 * seconds,
        "{diffs} presence diffs in about {seconds} s"
    );
}

/// The `state` push about `client` among a client's pushes, as (user, state JSON).
pub fn state_of(push: &Push, client: &str) -> Option<(String, Option<String>)> {
    let state = push.state.as_ref().filter(|s| &*s.client == client)?;
    Some((
        state.user.to_string(),
        state.state.as_ref().map(|s| s.get().to_owned()),
    ))
}

/// The state `client` has in `looker`'s `presence` reply on `channel`, and whether it is a
/// member at all.
pub async fn listed_state(looker: &Client, channel: &str, client: &str) -> Option<Option<String>> {
    let members = looker.presence(channel).await.unwrap().members;
    let member = members.iter().find(|m| &*m.client == client)?;
    Some(member.state.as_ref().map(|s| s.get().to_owned()))
}

/// Sets a presence state, retrying while the 250 ms throttle (error 110) refuses it.
pub async fn set_state(client: &Client, channel: &str, state: serde_json::Value) {
    within("a presence state accepted", async {
        loop {
            match client.set_presence_state(channel, state.clone()).await {
                Ok(()) => return,
                Err(error) if error.server_code() == Some(110) => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(error) => panic!("setPresenceState failed: {error}"),
            }
        }
    })
    .await;
}

/// A member's presence state set on node 0 is listed and pushed on node 1 (to the setter
/// too), throttled, cleared by `null`, and gone once the member leaves; on a channel
/// without join and leave pushes it is listed only.
pub async fn presence_state_is_listed_pushed_and_ends(d: &impl Deployment) {
    let channel = "org:acme:ch:state";
    let (alice, alice_id) = connect_with_id(d, 0, "alice").await;
    alice.subscribe(channel).await.unwrap();
    let bob = connect(d, 1, "bob").await;
    bob.subscribe(channel).await.unwrap();
    assert_eq!(listed_state(&bob, channel, &alice_id).await, Some(None));

    let (first, second) = tokio::join!(
        alice.set_presence_state(channel, json!({ "mood": "coding" })),
        alice.set_presence_state(channel, json!({ "mood": "lunch" })),
    );
    first.unwrap();
    assert_eq!(
        second.unwrap_err().server_code(),
        Some(110),
        "a second change within 250 ms"
    );
    let coding = Some(r#"{"mood":"coding"}"#.to_owned());
    let push = next_push(&bob, "alice's state", |p| state_of(p, &alice_id).is_some()).await;
    assert_eq!(push.channel.as_deref(), Some(channel));
    assert_eq!(
        state_of(&push, &alice_id),
        Some(("alice".to_owned(), coding.clone()))
    );
    let echo = next_push(&alice, "alice's own state", |p| {
        state_of(p, &alice_id).is_some()
    })
    .await;
    assert_eq!(state_of(&echo, &alice_id).unwrap().1, coding);
    assert_eq!(listed_state(&bob, channel, &alice_id).await, Some(coding));
    // The backend sees it too (gRPC Presence, on the other node).
    let mut grpc = grpc_client(d.grpc_addr(1), Some(API_KEY)).await;
    let request = herald_api::v1::PresenceRequest {
        channel: channel.into(),
    };
    let listed = within("gRPC Presence", grpc.presence(request))
        .await
        .expect("presence")
        .into_inner();
    let member = listed.members.iter().find(|m| m.client == alice_id);
    assert_eq!(
        member.expect("alice is listed").state,
        br#"{"mood":"coding"}"#
    );

    set_state(&alice, channel, serde_json::Value::Null).await;
    let push = next_push(&bob, "alice's state cleared", |p| {
        state_of(p, &alice_id).is_some()
    })
    .await;
    assert_eq!(state_of(&push, &alice_id).unwrap().1, None);
    assert_eq!(listed_state(&bob, channel, &alice_id).await, Some(None));

    // It belongs to the membership: a resubscribe starts without it.
    set_state(&alice, channel, json!("away")).await;
    next_push(&bob, "alice away", |p| state_of(p, &alice_id).is_some()).await;
    alice.unsubscribe(channel).await.unwrap();
    next_push(&bob, "alice's leave", |p| p.leave.is_some()).await;
    alice.subscribe(channel).await.unwrap();
    let push = next_push(&bob, "alice's join", |p| p.join.is_some()).await;
    assert!(push.join.unwrap().state.is_none());
    assert_eq!(listed_state(&bob, channel, &alice_id).await, Some(None));

    // Errors: not subscribed (103), no presence (108), too large (107).
    let dave = connect(d, 0, "dave").await;
    let error = dave
        .set_presence_state(channel, json!(1))
        .await
        .unwrap_err();
    assert_eq!(error.server_code(), Some(103));
    dave.subscribe("public:lobby").await.unwrap();
    let error = dave
        .set_presence_state("public:lobby", json!(1))
        .await
        .unwrap_err();
    assert_eq!(error.server_code(), Some(108));
    let error = alice
        .set_presence_state(channel, json!("x".repeat(1100)))
        .await
        .unwrap_err();
    assert_eq!(error.server_code(), Some(107));

    // `org:acme` has presence without join and leave pushes: listed, never pushed.
    alice.subscribe("org:acme").await.unwrap();
    bob.subscribe("org:acme").await.unwrap();
    set_state(&alice, "org:acme", json!([1, 2])).await;
    assert_eq!(
        listed_state(&bob, "org:acme", &alice_id).await,
        Some(Some("[1,2]".to_owned()))
    );
    marker(d, "org:acme", 1).await;
    let before = pushes_until_marker(&bob, 1).await;
    assert!(
        before.iter().all(|p| p.state.is_none()),
        "a state push where joins and leaves are not pushed: {before:?}"
    );
}
