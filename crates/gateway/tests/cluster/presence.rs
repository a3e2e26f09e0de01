//! The shared presence suite against two nodes (Redis state, NATS between them), and what
//! only a cluster can show: a killed node's users leave and go offline, once; presence and
//! status heal after Redis loses its data or a node is cut off from it, announced once.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald_api::v1::UserStatusRequest;
use herald_client::{Client, Push};
use herald_protocol::presence::Status;
use herald_testkit::backends::{NatsServer, RedisServer};
use herald_testkit::presence_suite::{
    self as suite, Deployment, connect, connect_with_id, listed_state, marker, next_push,
    pushes_until_marker, set_state, state_of, status_of,
};
use herald_testkit::{within, within_for};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::nodes::Node;

struct Cluster {
    _nats: NatsServer,
    redis: RedisServer,
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
            redis,
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
async fn refresh_moves_status_and_presence_with_the_claims() {
    suite::refresh_moves_status_and_presence_with_the_claims(&Cluster::start().await).await;
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
async fn presence_state_is_listed_pushed_and_ends() {
    suite::presence_state_is_listed_pushed_and_ends(&Cluster::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_members_join_and_leave() {
    suite::a_thousand_members_join_and_leave(&Cluster::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crowd_gets_batched_presence_diffs() {
    let nats = NatsServer::start().await;
    let redis = RedisServer::start().await;
    let limit = [("HERALD_PRESENCE_PUSH_LIMIT", "5")];
    let nodes = vec![
        Node::start_with("node-a", &nats, &redis, &limit).await,
        Node::start_with("node-b", &nats, &redis, &limit).await,
    ];
    let cluster = Cluster {
        _nats: nats,
        redis,
        nodes,
    };
    suite::a_crowd_gets_batched_presence_diffs(&cluster, 5).await;
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
            if push.leave.as_ref().is_some_and(|m| &*m.user == "alice") {
                left += 1;
            }
            if push
                .status
                .as_ref()
                .is_some_and(|s| &*s.user == "alice" && s.status == Status::Offline)
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
        let about_alice = push.leave.as_ref().is_some_and(|m| &*m.user == "alice")
            || push.status.as_ref().is_some_and(|s| &*s.user == "alice");
        assert!(!about_alice, "announced twice: {push:?}");
    }
}

/// The channel of the healing tests: presence with join and leave pushes. Nothing in those
/// tests creates its history again after a FLUSHALL, so no epoch change makes its
/// subscribers resubscribe (which would leave and join on its own).
const HEAL_CHANNEL: &str = "org:acme:ch:heal";

fn is_join_of(push: &Push, user: &str) -> bool {
    push.join
        .as_ref()
        .is_some_and(|member| &*member.user == user)
}

fn is_leave_of(push: &Push, user: &str) -> bool {
    push.leave
        .as_ref()
        .is_some_and(|member| &*member.user == user)
}

/// Reads `watcher`'s pushes until it has seen `user` join [`HEAL_CHANNEL`] and a status
/// push about them; returns that status. Fails after `wait`.
async fn join_and_status(watcher: &Client, user: &str, wait: Duration, what: &str) -> String {
    let (mut joined, mut status) = (false, None);
    within_for(what, wait, async {
        while !joined || status.is_none() {
            let push = watcher.next_push().await.expect("watcher connected");
            joined |= is_join_of(&push, user);
            if let Some(now) = status_of(&push, user) {
                status = Some(now.to_owned());
            }
        }
    })
    .await;
    status.unwrap()
}

/// Presence refreshes `node` has finished (the count of its Redis call histogram).
async fn refreshes(node: &Node) -> u64 {
    let metrics = node.metrics().await;
    metrics
        .lines()
        .find_map(|line| {
            line.strip_prefix(r#"herald_redis_duration_seconds_count{op="presence_refresh"} "#)
        })
        .map_or(0, |count| count.trim().parse().expect("a count"))
}

/// Waits until every node has finished `n` more presence refreshes (and announced what
/// they re-created: a node pushes before its next refresh starts).
async fn more_refreshes(cluster: &Cluster, n: u64) {
    for node in &cluster.nodes {
        let start = refreshes(node).await;
        within(&format!("{n} refreshes on {}", node.id), async {
            while refreshes(node).await < start + n {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
    }
}

/// After two more refreshes on every node, nothing more about `user` reaches `watcher`:
/// no join or leave, no status (a marker publication on `org:acme` closes the window).
async fn nothing_more_about(cluster: &Cluster, watcher: &Client, user: &str, n: u64) {
    more_refreshes(cluster, 2).await;
    marker(cluster, "org:acme", n).await;
    for push in pushes_until_marker(watcher, n).await {
        let about =
            is_join_of(&push, user) || is_leave_of(&push, user) || status_of(&push, user).is_some();
        assert!(!about, "announced again: {push:?}");
    }
}

async fn user_status(cluster: &Cluster, node: usize, user: &str) -> String {
    let mut grpc = cluster.nodes[node].grpc().await;
    let request = UserStatusRequest {
        org: "acme".into(),
        users: vec![user.into()],
    };
    let reply = within("UserStatus", grpc.user_status(request)).await;
    reply.unwrap().into_inner().statuses[0].status.clone()
}

/// Users listed in a channel's presence, with their status, sorted.
async fn listed(client: &Client, channel: &str) -> Vec<(String, Option<String>)> {
    let mut members: Vec<(String, Option<String>)> = client
        .presence(channel)
        .await
        .unwrap()
        .members
        .into_iter()
        .map(|member| {
            (
                member.user.to_string(),
                member.status.map(|s| s.as_str().to_owned()),
            )
        })
        .collect();
    members.sort();
    members
}

fn member(user: &str, status: &str) -> (String, Option<String>) {
    (user.to_owned(), Some(status.to_owned()))
}

/// A watcher on node 0 (in `org:acme` and [`HEAL_CHANNEL`]) that has seen `alice`, on
/// node 1 in both, join and set `away`.
async fn watcher_and_away_alice(cluster: &Cluster) -> (Client, Client) {
    let watcher = connect(cluster, 0, "watcher").await;
    watcher.subscribe("org:acme").await.unwrap();
    watcher.subscribe(HEAL_CHANNEL).await.unwrap();
    let alice = connect(cluster, 1, "alice").await;
    alice.subscribe("org:acme").await.unwrap();
    alice.subscribe(HEAL_CHANNEL).await.unwrap();
    next_push(&watcher, "alice's join", |p| is_join_of(p, "alice")).await;
    alice.set_status("away").await.unwrap();
    next_push(&watcher, "alice away", |p| {
        status_of(p, "alice") == Some("away")
    })
    .await;
    (watcher, alice)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_and_status_heal_after_redis_loses_its_data() {
    let cluster = Cluster::start().await;
    let (watcher, alice) = watcher_and_away_alice(&cluster).await;

    cluster.redis.flushall().await;
    // TTL 3 s: each node refreshes every second, so alice is back well within the wait.
    let status = join_and_status(&watcher, "alice", Duration::from_secs(10), "alice back").await;
    assert_eq!(status, "away", "back with the status she set");

    // A new client sees her, and the API says so (a subscription to a channel without
    // history, which creates no new epoch).
    let carol = connect(&cluster, 0, "carol").await;
    carol.subscribe("org:acme").await.unwrap();
    assert_eq!(
        listed(&carol, "org:acme").await,
        vec![
            member("alice", "away"),
            member("carol", "online"),
            member("watcher", "online")
        ]
    );
    assert_eq!(
        listed(&watcher, HEAL_CHANNEL).await,
        vec![member("alice", "away"), member("watcher", "online")]
    );
    assert_eq!(user_status(&cluster, 0, "alice").await, "away");

    alice.set_status("busy").await.unwrap();
    let push = next_push(&watcher, "alice busy", |p| status_of(p, "alice").is_some()).await;
    assert_eq!(status_of(&push, "alice"), Some("busy"));
    nothing_more_about(&cluster, &watcher, "alice", 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_set_right_after_redis_lost_its_data_is_kept() {
    let cluster = Cluster::start().await;
    let (watcher, alice) = watcher_and_away_alice(&cluster).await;

    cluster.redis.flushall().await;
    // Before or after the refresh puts her back (with away, then): never silently nothing.
    alice.set_status("busy").await.unwrap();
    let (mut joined, mut last_status) = (false, None);
    within("alice back in the channel, busy", async {
        while !joined || last_status.as_deref() != Some("busy") {
            let push = watcher.next_push().await.expect("watcher connected");
            joined |= is_join_of(&push, "alice");
            if let Some(status) = status_of(&push, "alice") {
                last_status = Some(status.to_owned());
            }
        }
    })
    .await;
    assert_eq!(user_status(&cluster, 1, "alice").await, "busy");
    // The refreshes keep busy (not the away the node knew before).
    nothing_more_about(&cluster, &watcher, "alice", 1).await;
    assert_eq!(user_status(&cluster, 0, "alice").await, "busy");
    assert_eq!(
        listed(&watcher, "org:acme").await,
        vec![member("alice", "busy"), member("watcher", "online")]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_redis_past_the_ttl_brings_its_users_back_once() {
    let nats = NatsServer::start().await;
    let redis = RedisServer::start().await;
    let link = RedisLink::start(redis.port()).await;
    let nodes = vec![
        Node::start("node-a", &nats, &redis).await,
        Node::start_with_redis_url("node-b", &nats, &link.url()).await,
    ];
    let cluster = Cluster {
        _nats: nats,
        redis,
        nodes,
    };
    let watcher = connect(&cluster, 0, "watcher").await;
    watcher.subscribe("org:acme").await.unwrap();
    watcher.subscribe(HEAL_CHANNEL).await.unwrap();
    let alice = connect(&cluster, 1, "alice").await;
    alice.subscribe(HEAL_CHANNEL).await.unwrap();
    next_push(&watcher, "alice's join", |p| is_join_of(p, "alice")).await;

    // Node B can neither refresh nor sweep; past the TTL node A's sweeper removes alice.
    link.cut();
    let mut gone = (false, false);
    within("alice to be swept: leave and offline", async {
        while gone != (true, true) {
            let push = watcher.next_push().await.expect("watcher connected");
            gone.0 |= is_leave_of(&push, "alice");
            gone.1 |= status_of(&push, "alice") == Some("offline");
        }
    })
    .await;
    assert_eq!(
        listed(&watcher, HEAL_CHANNEL).await,
        vec![member("watcher", "online")]
    );

    // Node B reconnects (its backoff reaches 5 s) and its next refresh puts alice back.
    link.restore();
    let status = join_and_status(&watcher, "alice", Duration::from_secs(20), "alice back").await;
    assert_eq!(status, "online");
    assert_eq!(
        listed(&watcher, HEAL_CHANNEL).await,
        vec![member("alice", "online"), member("watcher", "online")]
    );
    assert_eq!(user_status(&cluster, 0, "alice").await, "online");
    nothing_more_about(&cluster, &watcher, "alice", 1).await;
    drop(alice);
}

/// A TCP proxy to Redis that a test can cut (its connections dropped, new ones closed at
/// once) and restore: one node cut off from Redis while the others keep it.
struct RedisLink {
    port: u16,
    links: Arc<Mutex<Links>>,
    accept: JoinHandle<()>,
}

#[derive(Default)]
struct Links {
    cut: bool,
    tasks: Vec<JoinHandle<()>>,
}

impl RedisLink {
    async fn start(redis_port: u16) -> RedisLink {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let links = Arc::new(Mutex::new(Links::default()));
        let shared = links.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let Ok(mut server) = TcpStream::connect(("127.0.0.1", redis_port)).await else {
                    continue;
                };
                // Checked under the lock `cut` takes, so no link outlives a cut.
                let mut links = shared.lock().unwrap();
                if links.cut {
                    continue;
                }
                links.tasks.push(tokio::spawn(async move {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }));
            }
        });
        RedisLink {
            port,
            links,
            accept,
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn cut(&self) {
        let mut links = self.links.lock().unwrap();
        links.cut = true;
        for task in links.tasks.drain(..) {
            task.abort();
        }
    }

    fn restore(&self) {
        self.links.lock().unwrap().cut = false;
    }
}

impl Drop for RedisLink {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// A typer whose `sub` held CR/LF once made async-nats panic on the exclude header, killing
/// the session (no cleanup) and then the typing expiry job. Tokens with control characters
/// are refused now; the broker must still fail such an event cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_header_nats_cannot_encode_is_an_error_not_a_panic() {
    use herald_gateway::broker::{Broker, BrokerError, Event, Exclude, NatsBroker};
    use herald_gateway::hub::Hub;
    use herald_gateway::state::MemoryState;
    use herald_protocol::ChannelName;

    let nats = herald_testkit::backends::NatsServer::start().await;
    let (hub, _idle) = Hub::new(Arc::new(MemoryState::new()), Duration::from_millis(100));
    let notify = Arc::new(tokio::sync::Notify::new());
    let (changes, _received) = tokio::sync::mpsc::channel(1);
    let broker = NatsBroker::connect(
        &nats.url(),
        "node-a",
        hub,
        crate::redis_state::LIMITS,
        notify,
        changes,
        Duration::ZERO,
    )
    .await
    .unwrap();
    // The broker reports its connection through a flag only: poll it, bounded.
    within("NATS connected", async {
        while !broker.is_healthy() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let event = |user: &str| Event {
        channel: ChannelName::parse("org:acme:ch:general").unwrap(),
        push: bytes::Bytes::from_static(b"{}"),
        exclude: Some(Exclude::User(Arc::from(user))),
    };
    let refused = within("publish", broker.publish_event(&event("eve\r\nX: y"))).await;
    assert!(
        matches!(refused, Err(BrokerError::Unencodable(_))),
        "{refused:?}"
    );
    within("publish", broker.publish_event(&event("eve")))
        .await
        .expect("the broker still publishes");
}

/// A binary (`herald.v1.proto`) subscriber on node B gets the presence events node A raises:
/// they cross NATS as JSON and B transcodes them once for its binary subscribers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_events_from_another_node_reach_binary_subscribers() {
    use herald_client::ConnectOptions;
    use herald_testkit::tokens::{claims, sign};

    let cluster = Cluster::start().await;
    let channel = "org:acme:ch:binary";
    let alice = within(
        "upgrade",
        Client::open(ConnectOptions::new(cluster.ws_url(1)).binary()),
    )
    .await
    .expect("upgrade");
    let token = sign(&claims("alice", &["acme"], &["org:acme:*"], 3600));
    within("connect", alice.handshake(Some(&token)))
        .await
        .expect("connect over protobuf");
    assert_eq!(alice.codec(), herald_protocol::Codec::Proto);
    within("subscribe", alice.subscribe(channel)).await.unwrap();

    let bob = connect(&cluster, 0, "bob").await;
    within("subscribe", bob.subscribe(channel)).await.unwrap();
    let join = next_push(&alice, "bob's join from node A", |p| p.join.is_some()).await;
    let member = join.join.unwrap();
    assert_eq!(&*member.user, "bob");
    assert_eq!(member.info.unwrap().get(), r#"{"name":"BOB"}"#);
    within("typing", bob.typing(channel, true)).await.unwrap();
    let typing = next_push(&alice, "bob typing on node A", |p| p.typing.is_some()).await;
    assert!(typing.typing.unwrap().active);
}

/// A presence state lives in the member's Redis entry: it outlasts the entry's first TTL
/// through the refreshes, comes back with the entry when Redis loses its data (the node
/// re-creates it from what its connection set), and goes with the member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_presence_state_survives_refreshes_and_redis_losing_its_data() {
    let cluster = Cluster::start().await;
    let watcher = connect(&cluster, 0, "watcher").await;
    watcher.subscribe(HEAL_CHANNEL).await.unwrap();
    let (alice, alice_id) = connect_with_id(&cluster, 1, "alice").await;
    alice.subscribe(HEAL_CHANNEL).await.unwrap();
    next_push(&watcher, "alice's join", |p| is_join_of(p, "alice")).await;
    set_state(
        &alice,
        HEAL_CHANNEL,
        serde_json::json!({ "mood": "coding" }),
    )
    .await;
    let coding = Some(r#"{"mood":"coding"}"#.to_owned());
    let push = next_push(&watcher, "alice's state", |p| {
        state_of(p, &alice_id).is_some()
    })
    .await;
    assert_eq!(state_of(&push, &alice_id).unwrap().1, coding);

    // TTL 3 s, a refresh a second: past the first TTL only refreshes kept the entry.
    more_refreshes(&cluster, 4).await;
    assert_eq!(
        listed_state(&watcher, HEAL_CHANNEL, &alice_id).await,
        Some(coding.clone())
    );

    cluster.redis.flushall().await;
    let push = within_for("alice back", Duration::from_secs(10), async {
        loop {
            let push = watcher.next_push().await.expect("watcher connected");
            if is_join_of(&push, "alice") {
                return push;
            }
        }
    })
    .await;
    let joined = push.join.unwrap().state.map(|s| s.get().to_owned());
    assert_eq!(joined, coding, "re-created with its state");
    assert_eq!(
        listed_state(&watcher, HEAL_CHANNEL, &alice_id).await,
        Some(coding)
    );

    alice.unsubscribe(HEAL_CHANNEL).await.unwrap();
    next_push(&watcher, "alice's leave", |p| is_leave_of(p, "alice")).await;
    assert_eq!(listed_state(&watcher, HEAL_CHANNEL, &alice_id).await, None);
    alice.subscribe(HEAL_CHANNEL).await.unwrap();
    next_push(&watcher, "alice's join", |p| is_join_of(p, "alice")).await;
    assert_eq!(
        listed_state(&watcher, HEAL_CHANNEL, &alice_id).await,
        Some(None),
        "a new membership starts without a state"
    );
}

/// A subscriber the hub evicts (its channel's epoch changed) leaves the channel's presence at
/// once, not when its entry expires, and no longer counts in `herald_subscriptions`, though
/// its connection stays open (it does not resubscribe).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evicted_subscriber_leaves_presence_and_the_subscriptions_gauge() {
    // A presence TTL far beyond the test: a member left behind would stay listed.
    let long_ttl = [("HERALD_PRESENCE_TTL_SECONDS", "120")];
    let nats = NatsServer::start().await;
    let redis = RedisServer::start().await;
    let nodes = vec![
        Node::start_with("node-a", &nats, &redis, &long_ttl).await,
        Node::start_with("node-b", &nats, &redis, &long_ttl).await,
    ];
    let cluster = Cluster {
        _nats: nats,
        redis,
        nodes,
    };
    let channel = "org:acme:ch:evicted";
    let xavier = connect(&cluster, 1, "xavier").await;
    xavier.subscribe(channel).await.unwrap();
    let mut grpc = cluster.nodes[0].grpc().await;
    cluster.nodes[0]
        .publish(&mut grpc, channel, 1, "")
        .await
        .unwrap();
    next_push(&xavier, "offset 1", |p| p.publication.is_some()).await;
    assert_eq!(
        listed(&xavier, channel).await,
        vec![member("xavier", "online")]
    );
    cluster.nodes[1]
        .wait_for_metric("herald_subscriptions", 1.0)
        .await;

    // The channel's history is lost: the next publication starts a new epoch, and node b
    // sends its subscriber to resubscribe.
    let keys = [
        format!("herald:{{{channel}}}:meta"),
        format!("herald:{{{channel}}}:log"),
    ];
    cluster.redis.command(&["DEL", &keys[0], &keys[1]]).await;
    cluster.nodes[0]
        .publish(&mut grpc, channel, 2, "")
        .await
        .unwrap();
    let push = next_push(&xavier, "the eviction", |p| p.unsubscribe.is_some()).await;
    assert_eq!(push.unsubscribe.unwrap().code, 2500);

    cluster.nodes[1]
        .wait_for_metric("herald_subscriptions", 0.0)
        .await;
    within("ping", xavier.ping())
        .await
        .expect("xavier stays connected");
    let yvonne = connect(&cluster, 0, "yvonne").await;
    yvonne.subscribe(channel).await.unwrap();
    // Redis forgets him before his leave is pushed: if still listed, the push comes after.
    if listed(&yvonne, channel)
        .await
        .contains(&member("xavier", "online"))
    {
        next_push(&yvonne, "xavier's leave", |p| is_leave_of(p, "xavier")).await;
    }
    assert_eq!(
        listed(&yvonne, channel).await,
        vec![member("yvonne", "online")]
    );
}
