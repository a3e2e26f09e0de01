//! Gateway nodes as real `herald serve` processes in cluster mode, on free loopback ports,
//! so a test can SIGKILL one mid-run.

use std::net::{SocketAddr, TcpListener};
use std::process::Stdio;
use std::time::Duration;

use herald_api::v1::{PublishRequest, PublishResponse};
use herald_gateway::auth::Authenticator;
use tokio::process::{Child, Command};

use crate::backends::{NatsServer, RedisServer};
use crate::common::{API_KEY, Grpc, SECRET, claims, config, grpc_client, http_get, within};

/// One `herald serve` process.
pub struct Node {
    pub id: String,
    pub ws_url: String,
    pub http: SocketAddr,
    pub grpc: SocketAddr,
    pub metrics: SocketAddr,
    child: Child,
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

impl Node {
    /// Starts a node against the given backends and waits until it is ready.
    pub async fn start(id: &str, nats: &NatsServer, redis: &RedisServer) -> Node {
        Node::launch(id, nats, &redis.url(), &[]).await
    }

    /// Like [`Node::start`], with extra `HERALD_*` settings.
    pub async fn start_with(
        id: &str,
        nats: &NatsServer,
        redis: &RedisServer,
        settings: &[(&str, &str)],
    ) -> Node {
        Node::launch(id, nats, &redis.url(), settings).await
    }

    /// Starts a node that reaches Redis at `redis_url` (say, a proxy a test can cut).
    pub async fn start_with_redis_url(id: &str, nats: &NatsServer, redis_url: &str) -> Node {
        Node::launch(id, nats, redis_url, &[]).await
    }

    async fn launch(
        id: &str,
        nats: &NatsServer,
        redis_url: &str,
        settings: &[(&str, &str)],
    ) -> Node {
        let (http, grpc, metrics) = (free_addr(), free_addr(), free_addr());
        let child = Command::new(env!("CARGO_BIN_EXE_herald"))
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HERALD_NODE_ID", id)
            .env("HERALD_HTTP_ADDR", http.to_string())
            .env("HERALD_GRPC_ADDR", grpc.to_string())
            .env("HERALD_METRICS_ADDR", metrics.to_string())
            .env("HERALD_JWT_SECRET", SECRET)
            .env("HERALD_API_KEYS", API_KEY)
            .env("HERALD_NATS_URL", nats.url())
            .env("HERALD_REDIS_URL", redis_url)
            .env("HERALD_DRAIN_SECONDS", "1")
            // Short, so a killed node's presence expires within a test's patience.
            .env("HERALD_PRESENCE_TTL_SECONDS", "3")
            .env("HERALD_LOG_FORMAT", "json")
            .env("RUST_LOG", "warn")
            .envs(settings.iter().copied())
            .stdout(Stdio::null())
            // HERALD_TEST_LOGS=1 shows the nodes' logs when a cluster test needs debugging.
            .stderr(if std::env::var_os("HERALD_TEST_LOGS").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .kill_on_drop(true)
            .spawn()
            .expect("herald starts");
        let node = Node {
            id: id.to_owned(),
            ws_url: format!("ws://{http}/ws"),
            http,
            grpc,
            metrics,
            child,
        };
        node.wait_ready(200).await;
        node
    }

    /// `/readyz` status, or 0 while the HTTP listener is not up.
    pub async fn readyz(&self) -> u16 {
        if tokio::net::TcpStream::connect(self.http).await.is_err() {
            return 0;
        }
        http_get(self.http, "/readyz").await.0
    }

    /// Polls `/readyz` until it answers `status`.
    pub async fn wait_ready(&self, status: u16) {
        within(&format!("node {} /readyz {status}", self.id), async {
            while self.readyz().await != status {
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        })
        .await;
    }

    pub async fn metrics(&self) -> String {
        http_get(self.metrics, "/metrics").await.1
    }

    /// SIGKILL: no drain, no close frames.
    pub async fn kill(&mut self) {
        self.child.start_kill().expect("kill node");
        within("killed node to exit", self.child.wait())
            .await
            .expect("wait for node");
    }

    pub async fn grpc(&self) -> Grpc {
        grpc_client(self.grpc, Some(API_KEY)).await
    }

    /// Publishes `{"n": n}` as event `seq`, with an optional idempotency key.
    pub async fn publish(
        &self,
        grpc: &mut Grpc,
        channel: &str,
        n: u64,
        idempotency_key: &str,
    ) -> Result<PublishResponse, tonic::Status> {
        let request = seq_request(channel, n, idempotency_key);
        within("gRPC publish", grpc.publish(request))
            .await
            .map(|r| r.into_inner())
    }
}

/// A publish of `{"n": n}` as event `seq`.
pub fn seq_request(channel: &str, n: u64, idempotency_key: &str) -> PublishRequest {
    PublishRequest {
        channel: channel.into(),
        event: "seq".into(),
        data: format!("{{\"n\":{n}}}").into_bytes(),
        idempotency_key: idempotency_key.into(),
    }
}

/// A token for `sub`, member of org `acme` with `org:acme:*` channels.
pub fn token(sub: &str) -> String {
    Authenticator::new(&config().jwt)
        .expect("keys load")
        .sign(&claims(sub, &["acme"], &["org:acme:*"], 3600))
        .expect("HS256 secret configured")
}

/// NATS, Redis and `n` nodes on them, named `node-0`, `node-1`, …
pub async fn cluster(n: usize) -> (NatsServer, RedisServer, Vec<Node>) {
    let nats = NatsServer::start().await;
    let redis = RedisServer::start().await;
    let mut nodes = Vec::new();
    for i in 0..n {
        nodes.push(Node::start(&format!("node-{i}"), &nats, &redis).await);
    }
    (nats, redis, nodes)
}
