//! Presence, status and typing in `RedisState` against a real redis-server: the trait's
//! semantics, two instances (two nodes) racing, refresh and the sweeper, and the cost of
//! large channels and refreshes.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use herald_gateway::state::presence::TYPING_TTL;
use herald_gateway::state::{
    Expired, LiveConnection, Member, Presence, RedisState, State, StateError, Status, StatusChange,
    Typer, UserStatus,
};
use herald_testkit::backends::RedisServer;
use herald_testkit::{until, within};
use serde_json::value::RawValue;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::redis_state::{LIMITS, channel, connect};

const CHANNEL: &str = "org:acme:ch:general";
const ORG: &str = "acme";
const TTL: Duration = Duration::from_secs(60);

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn member(user: &str, client: &str, joined_at: i64, info: Option<&str>) -> Member {
    Member {
        user: Arc::from(user),
        client: Arc::from(client),
        info: info.map(|info| Arc::from(RawValue::from_string(info.to_owned()).unwrap())),
        joined_at,
        state: None,
    }
}

fn clients(members: &[Member]) -> Vec<&str> {
    members.iter().map(|member| &*member.client).collect()
}

fn status(user: &str, status: Status, last_seen: i64) -> UserStatus {
    UserStatus {
        user: Arc::from(user),
        status,
        last_seen,
    }
}

fn change(user: &str, status: Status, last_seen: i64) -> StatusChange {
    StatusChange {
        org: Arc::from(ORG),
        status: self::status(user, status, last_seen),
    }
}

fn live(client: &str, user: &str, channels: &[&str], orgs: &[&str]) -> LiveConnection {
    LiveConnection {
        client: Arc::from(client),
        user: Arc::from(user),
        info: None,
        channels: channels.iter().map(|name| channel(name)).collect(),
        states: Vec::new(),
        orgs: orgs.iter().map(|org| Arc::from(*org)).collect(),
        statuses: Vec::new(),
    }
}

fn users(names: &[&str]) -> Vec<Arc<str>> {
    names.iter().map(|name| Arc::from(*name)).collect()
}

/// Calls of one Redis command since the last `CONFIG RESETSTAT`.
async fn calls(redis: &RedisServer, command: &str) -> u64 {
    let info = redis.command(&["INFO", "commandstats"]).await;
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map_or(0, |rest| {
            rest.split(',').next().unwrap().parse().expect("a count")
        })
}

#[tokio::test]
async fn members_join_list_and_leave_with_their_info() {
    let redis = RedisServer::start().await;
    let state = connect(&redis).await;
    let general = channel(CHANNEL);
    let alice = member(
        "alice",
        "c-alice",
        2_000,
        Some(r#"{"name":"Alice","n":[1, 2.50]}"#),
    );
    let bob = member("bob", "c-bob", 1_000, None);
    let bob_tab = member("bob", "c-bob-2", 2_000, None);

    assert!(state.join(&general, &alice, TTL).await.unwrap());
    assert!(state.join(&general, &bob, TTL).await.unwrap());
    assert!(state.join(&general, &bob_tab, TTL).await.unwrap());
    assert!(
        !state.join(&general, &alice, TTL).await.unwrap(),
        "a second join of the same connection is not new"
    );

    let members = state.members(&general).await.unwrap();
    assert_eq!(
        clients(&members),
        vec!["c-bob", "c-alice", "c-bob-2"],
        "oldest first, then by connection id"
    );
    assert_eq!(
        members[1].info.as_ref().map(|info| info.get()),
        Some(r#"{"name":"Alice","n":[1, 2.50]}"#),
        "info byte for byte"
    );
    assert!(members[0].info.is_none());
    assert_eq!(
        redis
            .command(&["HLEN", &format!("herald:{{{CHANNEL}}}:members")])
            .await,
        "3"
    );
    assert!(
        state
            .members(&channel("org:acme:ch:empty"))
            .await
            .unwrap()
            .is_empty()
    );

    let left = state
        .leave(&general, "c-alice")
        .await
        .unwrap()
        .expect("a member");
    assert_eq!((&*left.user, left.joined_at), ("alice", 2_000));
    assert_eq!(
        left.info.unwrap().get(),
        r#"{"name":"Alice","n":[1, 2.50]}"#
    );
    assert!(
        state.leave(&general, "c-alice").await.unwrap().is_none(),
        "once"
    );
    assert!(state.leave(&general, "unknown").await.unwrap().is_none());
    assert_eq!(
        clients(&state.members(&general).await.unwrap()),
        vec!["c-bob", "c-bob-2"]
    );
    assert!(
        state.join(&general, &alice, TTL).await.unwrap(),
        "a connection that left can join again"
    );
}

fn states(members: &[Member]) -> Vec<(&str, Option<&str>)> {
    members
        .iter()
        .map(|m| (&*m.client, m.state.as_deref().map(RawValue::get)))
        .collect()
}

fn raw(json: &str) -> Arc<RawValue> {
    Arc::from(RawValue::from_string(json.to_owned()).unwrap())
}

#[tokio::test]
async fn a_members_state_is_set_in_its_entry_and_goes_with_it() {
    let redis = RedisServer::start().await;
    let state = connect(&redis).await;
    let general = channel(CHANNEL);
    let info = r#"{"name":"Alice","n":[1, 2.50]}"#;
    let alice = member("alice", "c-alice", 1_000, Some(info));
    assert_eq!(
        state
            .set_state(&general, "c-alice", Some(raw("1")))
            .await
            .unwrap(),
        None,
        "not a member yet"
    );
    state.join(&general, &alice, TTL).await.unwrap();
    state
        .join(&general, &member("bob", "c-bob", 2_000, None), TTL)
        .await
        .unwrap();
    assert_eq!(
        state
            .set_state(&general, "c-alice", Some(raw(r#"{"mood":"ok"}"#)))
            .await
            .unwrap(),
        Some(2)
    );
    let members = state.members(&general).await.unwrap();
    assert_eq!(
        states(&members),
        [("c-alice", Some(r#"{"mood":"ok"}"#)), ("c-bob", None)]
    );
    assert_eq!(
        members[0].info.as_deref().map(RawValue::get),
        Some(info),
        "info byte for byte after the entry was rewritten"
    );
    state.set_state(&general, "c-alice", None).await.unwrap();
    let members = state.members(&general).await.unwrap();
    assert_eq!(states(&members), [("c-alice", None), ("c-bob", None)]);

    state
        .set_state(&general, "c-alice", Some(raw("[2]")))
        .await
        .unwrap();
    let left = state.leave(&general, "c-alice").await.unwrap().unwrap();
    assert_eq!(left.state.as_deref().map(RawValue::get), Some("[2]"));
    assert_eq!(
        state
            .set_state(&general, "c-alice", Some(raw("3")))
            .await
            .unwrap(),
        None,
        "gone with the member"
    );
    state.join(&general, &alice, TTL).await.unwrap();
    let members = state.members(&general).await.unwrap();
    assert_eq!(states(&members), [("c-alice", None), ("c-bob", None)]);

    // Re-created after Redis lost it: with the state the node knows.
    redis.flushall().await;
    let alice_live = LiveConnection {
        states: vec![(general.clone(), raw(r#""back""#))],
        ..live("c-alice", "alice", &[CHANNEL], &[])
    };
    let restored = state.refresh(&[alice_live], TTL).await.unwrap();
    assert_eq!(
        states(&[restored.members[0].1.clone()]),
        [("c-alice", Some(r#""back""#))]
    );
    let members = state.members(&general).await.unwrap();
    assert_eq!(states(&members), [("c-alice", Some(r#""back""#))]);
}

#[tokio::test]
async fn a_user_is_online_while_any_of_their_connections_is() {
    let redis = RedisServer::start().await;
    let state = connect(&redis).await;

    assert_eq!(
        state.connected(ORG, "alice", "c1", TTL).await.unwrap(),
        Some(change("alice", Status::Online, 0))
    );
    assert_eq!(
        state.connected(ORG, "alice", "c2", TTL).await.unwrap(),
        None
    );
    assert_eq!(
        state.connected(ORG, "alice", "c2", TTL).await.unwrap(),
        None,
        "the same connection twice counts once"
    );
    assert_eq!(state.disconnected(ORG, "alice", "c1").await.unwrap(), None);
    assert_eq!(
        state.statuses(ORG, &users(&["alice"])).await.unwrap(),
        vec![status("alice", Status::Online, 0)]
    );
    assert!(
        state
            .set_status(ORG, "alice", "c2", Status::Away, TTL)
            .await
            .unwrap()
            .is_some()
    );

    let before = now_ms();
    let offline = state
        .disconnected(ORG, "alice", "c2")
        .await
        .unwrap()
        .expect("the last connection is a transition");
    let last_seen = offline.status.last_seen;
    assert!(
        (before..=now_ms()).contains(&last_seen),
        "last seen is now: {last_seen}"
    );
    assert_eq!(offline, change("alice", Status::Offline, last_seen));
    assert_eq!(
        state.statuses(ORG, &users(&["alice"])).await.unwrap(),
        vec![status("alice", Status::Offline, last_seen)]
    );
    assert_eq!(
        state.disconnected(ORG, "alice", "c2").await.unwrap(),
        None,
        "once"
    );
    assert_eq!(state.disconnected(ORG, "bob", "never").await.unwrap(), None);

    // Back online, the status resets to online.
    assert_eq!(
        state.connected(ORG, "alice", "c3", TTL).await.unwrap(),
        Some(change("alice", Status::Online, 0))
    );
    assert_eq!(
        state.statuses(ORG, &users(&["alice"])).await.unwrap(),
        vec![status("alice", Status::Online, 0)]
    );
    // Orgs are apart.
    assert_eq!(
        state.statuses("other", &users(&["alice"])).await.unwrap(),
        vec![status("alice", Status::Offline, 0)]
    );
}

#[tokio::test]
async fn two_nodes_racing_announce_each_transition_once() {
    let redis = RedisServer::start().await;
    let (a, b) = (connect(&redis).await, connect(&redis).await);
    for round in 0..50 {
        let user = format!("user-{round}");
        let (first, second) = tokio::join!(
            a.connected(ORG, &user, "on-a", TTL),
            b.connected(ORG, &user, "on-b", TTL)
        );
        let online = [first.unwrap(), second.unwrap()];
        assert_eq!(
            online.iter().flatten().count(),
            1,
            "round {round}: {online:?}"
        );
        let (first, second) = tokio::join!(
            a.disconnected(ORG, &user, "on-a"),
            b.disconnected(ORG, &user, "on-b")
        );
        let offline = [first.unwrap(), second.unwrap()];
        assert_eq!(
            offline.iter().flatten().count(),
            1,
            "round {round}: {offline:?}"
        );
    }
}

#[tokio::test]
async fn set_status_changes_a_connected_users_status() {
    let redis = RedisServer::start().await;
    let state = connect(&redis).await;
    state.connected(ORG, "alice", "c1", TTL).await.unwrap();
    let set = |status: Status| {
        let state = state.clone();
        async move { state.set_status(ORG, "alice", "c1", status, TTL).await }
    };
    assert_eq!(set(Status::Online).await.unwrap(), None, "online already");
    assert_eq!(
        set(Status::Away).await.unwrap(),
        Some(change("alice", Status::Away, 0))
    );
    assert_eq!(set(Status::Away).await.unwrap(), None);
    assert_eq!(
        set(Status::Busy).await.unwrap(),
        Some(change("alice", Status::Busy, 0))
    );
    assert_eq!(
        set(Status::Offline).await.unwrap(),
        None,
        "offline is not set, it is having no connection"
    );
    assert_eq!(
        state.statuses(ORG, &users(&["alice"])).await.unwrap(),
        vec![status("alice", Status::Busy, 0)]
    );
}

#[tokio::test]
async fn set_status_counts_a_connection_redis_lost_again() {
    let redis = RedisServer::start().await;
    let state = connect(&redis).await;
    state.connected(ORG, "alice", "c1", TTL).await.unwrap();
    state
        .set_status(ORG, "alice", "c1", Status::Away, TTL)
        .await
        .unwrap();
    redis.flushall().await;
    assert_eq!(
        state.statuses(ORG, &users(&["alice"])).await.unwrap(),
        vec![status("alice", Status::Offline, 0)],
        "lost"
    );

    // The caller holds c1, so the user is back, with the status just set: a change.
    assert_eq!(
        state
            .set_status(ORG, "alice", "c1", Status::Busy, TTL)
            .await
            .unwrap(),
        Some(change("alice", Status::Busy, 0))
    );
    assert_eq!(
        state.statuses(ORG, &users(&["alice"])).await.unwrap(),
        vec![status("alice", Status::Busy, 0)]
    );
    let due: i64 = redis
        .command(&["ZSCORE", "herald:presence:orgs", ORG])
        .await
        .parse()
        .expect("the org is back in the sweep index");
    assert!(due > now_ms());
    assert_eq!(
        state
            .set_status(ORG, "alice", "c1", Status::Busy, TTL)
            .await
            .unwrap(),
        None,
        "no change"
    );
    assert_eq!(
        state.connected(ORG, "alice", "c1", TTL).await.unwrap(),
        None,
        "c1 is counted"
    );
    assert!(
        state
            .disconnected(ORG, "alice", "c1")
            .await
            .unwrap()
            .is_some_and(|change| change.status.status == Status::Offline),
        "its end takes the user offline"
    );
}

#[tokio::test]
async fn statuses_come_in_the_order_asked_with_defaults() {
    let redis = RedisServer::start().await;
    let state = connect(&redis).await;
    assert!(state.statuses(ORG, &[]).await.unwrap().is_empty());
    state.connected(ORG, "alice", "a1", TTL).await.unwrap();
    state.connected(ORG, "bob", "b1", TTL).await.unwrap();
    let gone = state.disconnected(ORG, "bob", "b1").await.unwrap().unwrap();
    state.connected(ORG, "dave", "d1", TTL).await.unwrap();
    state
        .set_status(ORG, "dave", "d1", Status::Busy, TTL)
        .await
        .unwrap();

    let asked = users(&["carol", "alice", "bob", "dave", "alice"]);
    assert_eq!(
        state.statuses(ORG, &asked).await.unwrap(),
        vec![
            status("carol", Status::Offline, 0),
            status("alice", Status::Online, 0),
            status("bob", Status::Offline, gone.status.last_seen),
            status("dave", Status::Busy, 0),
            status("alice", Status::Online, 0),
        ]
    );
}

#[tokio::test]
async fn typing_starts_stops_and_expires() {
    let redis = RedisServer::start().await;
    let state = connect(&redis).await;
    let general = channel(CHANNEL);
    let typer = |user: &str, info: Option<&str>| Typer {
        user: Arc::from(user),
        info: info.map(|info| Arc::from(RawValue::from_string(info.to_owned()).unwrap())),
    };
    let typing = |state: RedisState| async move {
        let mut users: Vec<String> = state
            .typers(&channel(CHANNEL))
            .await
            .unwrap()
            .iter()
            .map(|typer| typer.user.to_string())
            .collect();
        users.sort();
        users
    };
    assert!(typing(state.clone()).await.is_empty());

    state
        .start_typing(&general, &typer("alice", Some(r#"{"name":"Alice"}"#)))
        .await
        .unwrap();
    state
        .start_typing(&general, &typer("bob", None))
        .await
        .unwrap();
    state
        .start_typing(&general, &typer("bob", None))
        .await
        .unwrap();
    assert_eq!(typing(state.clone()).await, vec!["alice", "bob"]);
    let typers = state.typers(&general).await.unwrap();
    let alice = typers.iter().find(|typer| &*typer.user == "alice").unwrap();
    assert_eq!(alice.info.as_ref().unwrap().get(), r#"{"name":"Alice"}"#);

    assert!(state.stop_typing(&general, "alice").await.unwrap());
    assert!(!state.stop_typing(&general, "alice").await.unwrap(), "once");
    assert!(!state.stop_typing(&general, "carol").await.unwrap());
    assert_eq!(typing(state.clone()).await, vec!["bob"]);
    let ttl: i64 = redis
        .command(&["PTTL", &format!("herald:{{{CHANNEL}}}:typers")])
        .await
        .parse()
        .unwrap();
    assert!(
        (1..=TYPING_TTL.as_millis() as i64).contains(&ttl),
        "typing keys expire with the last typer: {ttl} ms"
    );

    // Without an update, a typer is gone after TYPING_TTL, and stopping is then no stop.
    until("bob to stop typing", TYPING_TTL * 2, || {
        let state = state.clone();
        async move { typing(state).await.is_empty() }
    })
    .await;
    assert!(!state.stop_typing(&general, "bob").await.unwrap());
}

#[tokio::test]
async fn refresh_keeps_entries_and_the_sweeper_reports_the_others_once() {
    let redis = RedisServer::start().await;
    let (a, b) = (connect(&redis).await, connect(&redis).await);
    let short = Duration::from_secs(1);
    let general = channel(CHANNEL);
    let empty = channel("org:acme:ch:left");
    let joined = now_ms();
    let kept = member("keep", "c-keep", joined, None);
    let dropped = member("drop", "c-drop", joined, Some(r#"{"n":1}"#));
    a.join(&general, &kept, short).await.unwrap();
    a.join(&general, &dropped, short).await.unwrap();
    a.connected(ORG, "keep", "c-keep", short).await.unwrap();
    a.connected(ORG, "drop", "c-drop", short).await.unwrap();
    // A channel everyone left: its index entry goes at its first sweep.
    a.join(&empty, &kept, short).await.unwrap();
    a.leave(&empty, "c-keep").await.unwrap();

    a.refresh(
        &[live("c-keep", "keep", &[CHANNEL], &[ORG])],
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // Expired entries are left out before any sweep.
    assert_eq!(clients(&a.members(&general).await.unwrap()), vec!["c-keep"]);
    assert_eq!(
        a.statuses(ORG, &users(&["keep", "drop"])).await.unwrap(),
        vec![
            status("keep", Status::Online, 0),
            status("drop", Status::Offline, 0)
        ]
    );

    let (first, second) = tokio::join!(a.sweep("node-a"), b.sweep("node-b"));
    let (first, second) = (first.unwrap(), second.unwrap());
    assert!(
        first.is_empty() || second.is_empty(),
        "one sweeper at a time: {first:?} {second:?}"
    );
    let expired: Vec<Expired> = first.into_iter().chain(second).collect();
    assert_eq!(expired.len(), 2, "{expired:?}");
    let mut left = 0;
    let mut offline = 0;
    for event in &expired {
        match event {
            Expired::Left { channel, member } => {
                left += 1;
                assert_eq!(channel.as_str(), CHANNEL);
                assert_eq!((&*member.client, &*member.user), ("c-drop", "drop"));
                assert_eq!(member.info.as_ref().unwrap().get(), r#"{"n":1}"#);
            }
            Expired::Offline(change) => {
                offline += 1;
                assert_eq!((&*change.org, &*change.status.user), (ORG, "drop"));
                assert_eq!(change.status.status, Status::Offline);
                let last_seen = change.status.last_seen;
                assert!(
                    (joined + 1000..joined + 1500).contains(&last_seen),
                    "last seen is the connection's expiry: {last_seen} vs joined {joined}"
                );
            }
        }
    }
    assert_eq!((left, offline), (1, 1));
    assert!(a.sweep("node-a").await.unwrap().is_empty(), "reported once");
    assert!(b.sweep("node-b").await.unwrap().is_empty(), "reported once");
    assert_eq!(
        redis
            .command(&["ZSCORE", "herald:presence:channels", empty.as_str()])
            .await,
        "(nil)",
        "an empty channel leaves the sweep index"
    );
    assert_ne!(
        redis
            .command(&["ZSCORE", "herald:presence:channels", CHANNEL])
            .await,
        "(nil)",
        "a channel with members stays in it"
    );

    // The node holding c-drop was only cut off (it did not refresh): its next refresh puts
    // c-drop back, reported once, for the node to announce again.
    let swept_at = now_ms();
    let both = [
        live("c-keep", "keep", &[CHANNEL], &[ORG]),
        live("c-drop", "drop", &[CHANNEL], &[ORG]),
    ];
    let restored = a.refresh(&both, TTL).await.unwrap();
    let [(channel, member)] = &restored.members[..] else {
        panic!("one member put back: {restored:?}");
    };
    assert_eq!(
        (channel.as_str(), &*member.client, &*member.user),
        (CHANNEL, "c-drop", "drop")
    );
    assert!(member.joined_at >= swept_at, "joined again now");
    assert_eq!(
        restored.connections,
        vec![(Arc::from(ORG), Arc::from("drop"), Arc::from("c-drop"))]
    );
    assert_eq!(restored.statuses, vec![change("drop", Status::Online, 0)]);
    assert_eq!(
        clients(&a.members(&general).await.unwrap()),
        vec!["c-keep", "c-drop"]
    );
    assert_eq!(
        a.statuses(ORG, &users(&["drop"])).await.unwrap(),
        vec![status("drop", Status::Online, 0)]
    );
    let again = a.refresh(&both, TTL).await.unwrap();
    assert!(again.is_empty(), "put back once: {again:?}");
    assert!(a.sweep("node-a").await.unwrap().is_empty());
}

#[tokio::test]
async fn a_refresh_recreates_what_redis_lost_once_with_the_status_set() {
    let redis = RedisServer::start().await;
    let state = connect(&redis).await;
    let general = channel(CHANNEL);
    let info = r#"{"name":"Alice"}"#;
    state
        .join(&general, &member("alice", "c-alice", 1, Some(info)), TTL)
        .await
        .unwrap();
    state
        .join(&general, &member("bob", "c-bob", 2, None), TTL)
        .await
        .unwrap();
    state.connected(ORG, "alice", "c-alice", TTL).await.unwrap();
    state.connected(ORG, "bob", "c-bob", TTL).await.unwrap();
    state
        .set_status(ORG, "alice", "c-alice", Status::Away, TTL)
        .await
        .unwrap();
    redis.flushall().await;
    assert!(state.members(&general).await.unwrap().is_empty());

    let alice = LiveConnection {
        info: Some(Arc::from(RawValue::from_string(info.to_owned()).unwrap())),
        statuses: vec![(Arc::from(ORG), Status::Away)],
        ..live("c-alice", "alice", &[CHANNEL], &[ORG])
    };
    let live = [alice, live("c-bob", "bob", &[CHANNEL], &[ORG])];
    let mut restored = state.refresh(&live, TTL).await.unwrap();
    restored.members.sort_by(|a, b| a.1.client.cmp(&b.1.client));
    let members: Vec<(&str, &str, Option<&str>)> = restored
        .members
        .iter()
        .map(|(channel, m)| {
            (
                channel.as_str(),
                &*m.client,
                m.info.as_deref().map(RawValue::get),
            )
        })
        .collect();
    assert_eq!(
        members,
        vec![(CHANNEL, "c-alice", Some(info)), (CHANNEL, "c-bob", None)]
    );
    restored.connections.sort();
    assert_eq!(
        restored.connections,
        vec![
            (Arc::from(ORG), Arc::from("alice"), Arc::from("c-alice")),
            (Arc::from(ORG), Arc::from("bob"), Arc::from("c-bob"))
        ]
    );
    restored
        .statuses
        .sort_by(|a, b| a.status.user.cmp(&b.status.user));
    assert_eq!(
        restored.statuses,
        vec![
            change("alice", Status::Away, 0),
            change("bob", Status::Online, 0)
        ]
    );
    assert_eq!(
        clients(&state.members(&general).await.unwrap()).len(),
        2,
        "both listed again"
    );
    assert_eq!(
        state
            .statuses(ORG, &users(&["alice", "bob"]))
            .await
            .unwrap(),
        vec![
            status("alice", Status::Away, 0),
            status("bob", Status::Online, 0)
        ]
    );
    for (index, name) in [
        ("herald:presence:channels", CHANNEL),
        ("herald:presence:orgs", ORG),
    ] {
        let due: i64 = redis
            .command(&["ZSCORE", index, name])
            .await
            .parse()
            .unwrap_or_else(|_| panic!("{name} is back in {index}"));
        assert!(due > now_ms(), "{name} is due later");
    }

    // Healthy again: the next refresh only extends (no script), and re-creates nothing.
    // (Another TTL, so every expiry moves even within the same millisecond.)
    assert_eq!(redis.command(&["CONFIG", "RESETSTAT"]).await, "OK");
    let again = state.refresh(&live, TTL * 2).await.unwrap();
    assert!(again.is_empty(), "re-created once: {again:?}");
    assert_eq!(calls(&redis, "evalsha").await, 0);
    // The channel, the two users' connections, the two sweep indexes.
    assert_eq!(calls(&redis, "zadd").await, 1 + 2 + 2);
}

#[tokio::test]
async fn a_user_put_back_by_two_nodes_keeps_the_status_one_of_them_knows() {
    let redis = RedisServer::start().await;
    let (a, b) = (connect(&redis).await, connect(&redis).await);
    let knowing = |client: &str, user: &str| LiveConnection {
        statuses: vec![(Arc::from(ORG), Status::Away)],
        ..live(client, user, &[], &[ORG])
    };

    // The node that does not know the status first: the user is back online, then away.
    let restored = a.refresh(&[live("a1", "alice", &[], &[ORG])], TTL).await;
    assert_eq!(
        restored.unwrap().statuses,
        vec![change("alice", Status::Online, 0)]
    );
    let restored = b.refresh(&[knowing("b1", "alice")], TTL).await;
    assert_eq!(
        restored.unwrap().statuses,
        vec![change("alice", Status::Away, 0)]
    );

    // The node that knows it first: back away, and the other changes nothing.
    let restored = b.refresh(&[knowing("b2", "bob")], TTL).await;
    assert_eq!(
        restored.unwrap().statuses,
        vec![change("bob", Status::Away, 0)]
    );
    let restored = a
        .refresh(&[live("a2", "bob", &[], &[ORG])], TTL)
        .await
        .unwrap();
    assert!(restored.statuses.is_empty(), "{restored:?}");
    assert_eq!(restored.connections.len(), 1, "a2 is counted");

    assert_eq!(
        a.statuses(ORG, &users(&["alice", "bob"])).await.unwrap(),
        vec![
            status("alice", Status::Away, 0),
            status("bob", Status::Away, 0)
        ]
    );
}

#[tokio::test]
async fn a_held_sweeper_lock_makes_other_sweeps_empty() {
    let redis = RedisServer::start().await;
    let state = connect(&redis).await;
    // The entry expires after 1 s; its keys live 2 s longer, the room the steps below have
    // before the sweep that must still find it (on a loaded machine 200 ms was not enough).
    let short = Duration::from_secs(1);
    state
        .join(&channel(CHANNEL), &member("u", "c", 1, None), short)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    redis
        .command(&[
            "SET",
            "herald:presence:sweeper",
            "another-node",
            "PX",
            "10000",
        ])
        .await;
    assert!(state.sweep("node-a").await.unwrap().is_empty());
    assert_eq!(
        redis.command(&["GET", "herald:presence:sweeper"]).await,
        "another-node",
        "another node's lock is not released"
    );
    redis.command(&["DEL", "herald:presence:sweeper"]).await;
    // The sweep scripts are called in a pipeline: they are reloaded there too.
    assert_eq!(redis.command(&["SCRIPT", "FLUSH"]).await, "OK");
    assert_eq!(state.sweep("node-a").await.unwrap().len(), 1);
    assert_eq!(
        redis.command(&["EXISTS", "herald:presence:sweeper"]).await,
        "0",
        "released after the sweep"
    );
}

#[tokio::test]
async fn a_refresh_restores_a_lost_sweep_index_entry() {
    let redis = RedisServer::start().await;
    let state = connect(&redis).await;
    state
        .join(&channel(CHANNEL), &member("u", "c", 1, None), TTL)
        .await
        .unwrap();
    state.connected(ORG, "u", "c", TTL).await.unwrap();
    redis
        .command(&["ZREM", "herald:presence:channels", CHANNEL])
        .await;
    redis.command(&["ZREM", "herald:presence:orgs", ORG]).await;
    state
        .refresh(&[live("c", "u", &[CHANNEL], &[ORG])], TTL)
        .await
        .unwrap();
    for (index, name) in [
        ("herald:presence:channels", CHANNEL),
        ("herald:presence:orgs", ORG),
    ] {
        let due: i64 = redis
            .command(&["ZSCORE", index, name])
            .await
            .parse()
            .unwrap();
        assert!(due > now_ms(), "{name} is back in {index}");
    }
}

#[tokio::test]
async fn a_thousand_members_list_and_leave() {
    let redis = RedisServer::start().await;
    let state = connect(&redis).await;
    let general = channel(CHANNEL);
    for n in 0..1000 {
        let member = member(&format!("user-{}", n % 100), &format!("c-{n:04}"), n, None);
        assert!(state.join(&general, &member, TTL).await.unwrap());
    }
    let members = state.members(&general).await.unwrap();
    assert_eq!(members.len(), 1000);
    let unique: HashSet<&str> = clients(&members).into_iter().collect();
    assert_eq!(unique.len(), 1000, "no duplicates");
    assert!(
        members
            .windows(2)
            .all(|pair| pair[0].joined_at < pair[1].joined_at),
        "oldest first"
    );
    for n in 0..1000 {
        assert!(
            state
                .leave(&general, &format!("c-{n:04}"))
                .await
                .unwrap()
                .is_some()
        );
    }
    assert!(state.members(&general).await.unwrap().is_empty());
    assert_eq!(
        redis
            .command(&["EXISTS", &format!("herald:{{{CHANNEL}}}:members")])
            .await,
        "0"
    );
}

#[tokio::test]
async fn a_refresh_of_a_thousand_connections_is_one_round_trip() {
    let redis = RedisServer::start().await;
    let state = connect(&redis).await;
    // Each connection its own user, in one of 10 channels and one org.
    let names: Vec<String> = (0..10).map(|n| format!("org:acme:ch:room{n}")).collect();
    let mut connections = Vec::new();
    for n in 0..1000 {
        let (client, user, name) = (format!("c-{n}"), format!("u-{n}"), &names[n % 10]);
        state
            .join(&channel(name), &member(&user, &client, 1, None), TTL)
            .await
            .unwrap();
        state.connected(ORG, &user, &client, TTL).await.unwrap();
        connections.push(live(&client, &user, &[name.as_str()], &[ORG]));
    }
    let expiry = |key: &'static str, client: &'static str| {
        let redis = &redis;
        async move {
            redis
                .command(&["ZSCORE", key, client])
                .await
                .parse::<i64>()
                .unwrap()
        }
    };
    let conns = "herald:org:{acme}:conns:u-999";
    let room = "herald:{org:acme:ch:room3}:members:expiry";
    let before = expiry(conns, "c-999").await;

    assert_eq!(redis.command(&["CONFIG", "RESETSTAT"]).await, "OK");
    state
        .refresh(&connections, Duration::from_secs(120))
        .await
        .unwrap();
    let commands = calls(&redis, "zadd").await;
    // One ZADD per channel and per user's connections key, one per sweep index.
    assert_eq!(commands, 10 + 1000 + 2);
    assert_eq!(
        calls(&redis, "evalsha").await,
        0,
        "nothing missing, nothing re-created"
    );
    let after = expiry(conns, "c-999").await;
    assert!(after > before + 50_000, "expiry moved: {before} -> {after}");
    assert!(expiry(room, "c-3").await > before + 50_000);

    // Through a link with 100 ms each way, the refresh is pipelined: sent one by one, its
    // 1,012 commands would take over 200 s, far past the bounded wait.
    let delay = Duration::from_millis(100);
    let proxy = laggy_proxy(redis.port(), delay).await;
    let remote = RedisState::connect(
        &format!("redis://127.0.0.1:{proxy}"),
        LIMITS,
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    assert!(remote.is_healthy());
    within(
        "the refresh through the slow link",
        remote.refresh(&connections, Duration::from_secs(180)),
    )
    .await
    .unwrap();
    assert!(expiry(room, "c-3").await > after + 50_000);
}

/// A TCP proxy to `port` on loopback that holds every byte for `delay` each way.
async fn laggy_proxy(port: u16, delay: Duration) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect(("127.0.0.1", port)).await else {
                continue;
            };
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            tokio::spawn(delayed(client_read, server_write, delay));
            tokio::spawn(delayed(server_read, client_write, delay));
        }
    });
    proxy
}

async fn delayed(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, delay: Duration) {
    let (sender, mut receiver) = mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    tokio::spawn(async move {
        while let Some((at, bytes)) = receiver.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&bytes).await.is_err() {
                return;
            }
        }
    });
    let mut buffer = vec![0; 64 * 1024];
    while let Ok(read @ 1..) = from.read(&mut buffer).await {
        let at = tokio::time::Instant::now() + delay;
        if sender.send((at, buffer[..read].to_vec())).is_err() {
            return;
        }
    }
}

#[tokio::test]
async fn presence_fails_fast_while_redis_is_down() {
    let mut redis = RedisServer::start().await;
    let state = connect(&redis).await;
    let general = channel(CHANNEL);
    state
        .join(&general, &member("u", "c", 1, None), TTL)
        .await
        .unwrap();

    redis.stop().await;
    until("unhealthy", Duration::from_secs(5), || async {
        !state.is_healthy()
    })
    .await;
    let unavailable = |result: Result<(), StateError>| {
        assert!(
            matches!(result, Err(StateError::Unavailable(_))),
            "{result:?}"
        );
    };
    // An unhealthy connection fails each call at once instead of queueing it.
    within("the calls to fail", async {
        unavailable(
            state
                .join(&general, &member("u", "c2", 1, None), TTL)
                .await
                .map(drop),
        );
        unavailable(state.members(&general).await.map(drop));
        unavailable(state.connected(ORG, "u", "c", TTL).await.map(drop));
        unavailable(state.statuses(ORG, &users(&["u"])).await.map(drop));
        unavailable(
            state
                .refresh(&[live("c", "u", &[CHANNEL], &[ORG])], TTL)
                .await
                .map(drop),
        );
        unavailable(state.sweep("node").await.map(drop));
    })
    .await;

    redis.restart().await;
    until("healthy again", Duration::from_secs(15), || async {
        state.is_healthy()
    })
    .await;
    // An empty server without the scripts.
    assert!(
        state
            .join(&general, &member("u", "c", 1, None), TTL)
            .await
            .unwrap()
    );
    assert_eq!(clients(&state.members(&general).await.unwrap()), vec!["c"]);
}

#[tokio::test]
async fn presence_memory_per_member_and_user_stays_within_budget() {
    let redis = RedisServer::start().await;
    let state = connect(&redis).await;
    let info = Some(r#"{"name":"Ada Lovelace","avatar":"https://example.com/a/1234.png"}"#);
    for i in 0..1000 {
        let (user, client) = (format!("user-{i}"), format!("client-{i:016}"));
        let joined = member(&user, &client, now_ms(), info);
        state.join(&channel(CHANNEL), &joined, TTL).await.unwrap();
        state.connected(ORG, &user, &client, TTL).await.unwrap();
    }
    let members = redis
        .memory_usage(&format!("herald:{{{CHANNEL}}}:members"))
        .await
        + redis
            .memory_usage(&format!("herald:{{{CHANNEL}}}:members:expiry"))
            .await;
    let mut per_user = 0;
    for key in ["users", "status"] {
        per_user += redis
            .memory_usage(&format!("herald:org:{{{ORG}}}:{key}"))
            .await;
    }
    per_user += 1000
        * redis
            .memory_usage(&format!("herald:org:{{{ORG}}}:conns:user-7"))
            .await;
    assert!(members / 1000 < 512, "{members} B for 1,000 members");
    assert!(per_user / 1000 < 512, "{per_user} B for 1,000 online users");
}

/// Every key Herald's state writes expires (the README's promise): (key, PTTL ms) of any
/// key without one.
async fn keys_without_expiry(redis: &RedisServer) -> Vec<(String, i64)> {
    let keys = redis.command(&["KEYS", "*"]).await;
    let mut without = Vec::new();
    for key in keys.lines().filter(|key| !key.is_empty()) {
        let ttl: i64 = redis.command(&["PTTL", key]).await.parse().unwrap();
        if ttl <= 0 {
            without.push((key.to_owned(), ttl));
        }
    }
    without
}

#[tokio::test]
async fn every_presence_key_expires_and_a_refresh_renews_it() {
    let redis = RedisServer::start().await;
    let state = connect(&redis).await;
    let general = channel(CHANNEL);
    let typer = Typer {
        user: Arc::from("alice"),
        info: None,
    };
    state
        .join(&general, &member("alice", "c-a", now_ms(), None), TTL)
        .await
        .unwrap();
    state
        .join(&general, &member("bob", "c-b", now_ms(), None), TTL)
        .await
        .unwrap();
    state.connected(ORG, "alice", "c-a", TTL).await.unwrap();
    state.connected(ORG, "bob", "c-b", TTL).await.unwrap();
    state
        .set_status(ORG, "alice", "c-a", Status::Away, TTL)
        .await
        .unwrap();
    state.start_typing(&general, &typer).await.unwrap();
    // Bob goes offline: his last seen time is recorded.
    state.leave(&general, "c-b").await.unwrap();
    state.disconnected(ORG, "bob", "c-b").await.unwrap();
    state.sweep("node-a").await.unwrap();
    let keys = redis.command(&["DBSIZE"]).await.parse::<u64>().unwrap();
    assert!(
        keys >= 8,
        "members, typers, conns, users, status, seen, indexes: {keys}"
    );
    assert_eq!(keys_without_expiry(&redis).await, vec![]);

    // A refresh with a longer TTL pushes the keys' expiries past their first ones.
    let members = format!("herald:{{{CHANNEL}}}:members");
    let pttl = |key: String| {
        let redis = &redis;
        async move { redis.command(&["PTTL", &key]).await.parse::<i64>().unwrap() }
    };
    let before = pttl(members.clone()).await;
    assert!(before > 0 && before <= 3 * 60_000, "{before} ms");
    state
        .refresh(
            &[live("c-a", "alice", &[CHANNEL], &[ORG])],
            Duration::from_secs(600),
        )
        .await
        .unwrap();
    for key in [
        members,
        format!("herald:{{{CHANNEL}}}:members:expiry"),
        format!("herald:org:{{{ORG}}}:conns:alice"),
        format!("herald:org:{{{ORG}}}:users"),
        format!("herald:org:{{{ORG}}}:status"),
    ] {
        let after = pttl(key.clone()).await;
        assert!(
            after > 3 * 60_000,
            "{key} renewed by the refresh: {after} ms"
        );
    }
    assert_eq!(keys_without_expiry(&redis).await, vec![]);
}
