//! Gateway nodes as real `herald serve` processes in cluster mode, on ports the system
//! picks, so a test can SIGKILL one mid-run.

use std::net::SocketAddr;
use std::time::Duration;

use herald_api::v1::{PublishRequest, PublishResponse};
use herald_testkit::backends::{NatsServer, RedisServer};
use herald_testkit::grpc::{Grpc, grpc_client};
use herald_testkit::herald::{Served, serve};
use herald_testkit::http::{http_get, wait_for_metric};
use herald_testkit::tokens::API_KEY;
use herald_testkit::within;
use tokio::process::Child;

/// One `herald serve` process.
pub struct Node {
    pub id: String,
    pub ws_url: String,
    pub http: SocketAddr,
    pub grpc: SocketAddr,
    pub metrics: SocketAddr,
    child: Child,
}

impl Node {
    /// Starts a node against the given backends and waits until it is ready.
    pub async fn start(id: &str, nats: &NatsServer, redis: &RedisServer) -> Node {
        Node::launch(id, &nats.url(), &redis.url(), &[]).await
    }

    /// Starts a node that reaches NATS at `nats_url` (say, with a user and password).
    pub async fn start_with_nats_url(id: &str, nats_url: &str, redis: &RedisServer) -> Node {
        Node::launch(id, nats_url, &redis.url(), &[]).await
    }

    /// Like [`Node::start`], with extra `HERALD_*` settings.
    pub async fn start_with(
        id: &str,
        nats: &NatsServer,
        redis: &RedisServer,
        settings: &[(&str, &str)],
    ) -> Node {
        Node::launch(id, &nats.url(), &redis.url(), settings).await
    }

    /// Starts a node that reaches Redis at `redis_url` (say, a proxy a test can cut).
    pub async fn start_with_redis_url(id: &str, nats: &NatsServer, redis_url: &str) -> Node {
        Node::launch(id, &nats.url(), redis_url, &[]).await
    }

    async fn launch(id: &str, nats_url: &str, redis_url: &str, settings: &[(&str, &str)]) -> Node {
        let Served {
            child,
            http,
            grpc,
            metrics,
            ..
        } = serve(env!("CARGO_BIN_EXE_herald"), |herald| {
            herald
                .env("HERALD_NODE_ID", id)
                .env("HERALD_NATS_URL", nats_url)
                .env("HERALD_REDIS_URL", redis_url)
                .env("HERALD_DRAIN_SECONDS", "1")
                // Short, so a killed node's presence expires within a test's patience.
                .env("HERALD_PRESENCE_TTL_SECONDS", "3")
                .envs(settings.iter().copied());
        })
        .await;
        let node = Node {
            id: id.to_owned(),
            ws_url: format!("ws://{http}/ws"),
            http,
            grpc,
            metrics,
            child,
        };
        // Serving, and ready once its backends are connected.
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

    /// Waits (20 s at most) until this node's metrics show `series` at `value`.
    pub async fn wait_for_metric(&self, series: &str, value: f64) {
        let limit = Duration::from_secs(20);
        wait_for_metric(self.metrics, series, limit, |seen| seen == value).await;
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

/// NATS, Redis and `n` nodes on them, named `node-0`, `node-1`, …
pub async fn cluster(n: usize) -> (NatsServer, RedisServer, Vec<Node>) {
    cluster_with(n, &[]).await
}

/// `n` nodes, each with `env` on top of the usual settings.
pub async fn cluster_with(n: usize, env: &[(&str, &str)]) -> (NatsServer, RedisServer, Vec<Node>) {
    let nats = NatsServer::start().await;
    let redis = RedisServer::start().await;
    let mut nodes = Vec::new();
    for i in 0..n {
        nodes.push(Node::start_with(&format!("node-{i}"), &nats, &redis, env).await);
    }
    (nats, redis, nodes)
}
