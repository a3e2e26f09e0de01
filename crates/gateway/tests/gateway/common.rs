//! A real gateway on ephemeral loopback ports, driven over real WebSocket and gRPC; the
//! helpers these tests share with the cluster tests come from `herald-testkit`.

use std::net::SocketAddr;
use std::time::Duration;

pub use herald_api::BearerToken;
use herald_api::v1::{PublishRequest, PublishResponse};
use herald_client::{Client, ClientError, ConnectOptions};
use herald_gateway::Server;
use herald_gateway::auth::{Authenticator, Claims, SubscriptionClaims};
use herald_gateway::clock::unix_seconds;
use herald_gateway::config::{Access, ChannelOptions, Config, ConfigArgs, NamespaceRule, Secret};
pub use herald_testkit::client::{close_code, error_code, next_publication};
pub use herald_testkit::grpc::{Grpc, grpc_client};
pub use herald_testkit::herald::Served;
pub use herald_testkit::http::{http_get, http_post, wait_for_metric};
pub use herald_testkit::tokens::{API_KEY, SECRET, claims};
pub use herald_testkit::{WAIT, within};
use tokio::process::Command;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The `herald` binary built with these tests, with an empty environment but `PATH`.
pub fn herald() -> Command {
    herald_testkit::herald::herald(env!("CARGO_BIN_EXE_herald"))
}

/// `herald serve` with the test credentials plus what `configure` adds, once serving.
pub async fn serve(configure: impl FnOnce(&mut Command)) -> Served {
    herald_testkit::herald::serve(env!("CARGO_BIN_EXE_herald"), configure).await
}

pub fn config() -> Config {
    let mut config = Config::load(&ConfigArgs::default()).expect("default config loads");
    let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
    config.http_addr = loopback;
    config.grpc_addr = loopback;
    config.metrics_addr = loopback;
    config.jwt.secret = Some(Secret::new(SECRET));
    config.api_keys = vec![Secret::new(API_KEY)];
    config.drain = Duration::from_millis(200);
    config
}

pub struct TestGateway {
    pub ws_url: String,
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub auth: Authenticator,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestGateway {
    pub async fn start() -> TestGateway {
        Self::with(|_| {}).await
    }

    pub async fn with(adjust: impl FnOnce(&mut Config)) -> TestGateway {
        let mut config = config();
        adjust(&mut config);
        let auth = Authenticator::new(&config.jwt).expect("keys load");
        let server = Server::bind(config).await.expect("gateway binds");
        let (http_addr, grpc_addr, metrics_addr) = (
            server.http_addr(),
            server.grpc_addr(),
            server.metrics_addr(),
        );
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server
                .run(async {
                    let _ = stopped.await;
                })
                .await
                .expect("gateway runs");
        });
        TestGateway {
            ws_url: format!("ws://{http_addr}/ws"),
            grpc_addr,
            http_addr,
            metrics_addr,
            auth,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Drains and stops the gateway, waiting for it to exit.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            within("gateway shutdown", task)
                .await
                .expect("gateway task");
        }
    }

    pub fn token(&self, sub: &str, orgs: &[&str], channels: &[&str]) -> String {
        self.sign(claims(sub, orgs, channels, 3600))
    }

    pub fn sign(&self, claims: Claims) -> String {
        self.auth.sign(&claims).expect("HS256 secret configured")
    }

    pub fn subscription_token(&self, sub: &str, channel: &str) -> String {
        let claims = SubscriptionClaims {
            sub: sub.into(),
            channel: channel.into(),
            exp: unix_seconds() + 3600,
            aud: None,
            iss: None,
        };
        self.auth
            .sign_subscription(&claims)
            .expect("HS256 secret configured")
    }

    /// A connected client for `sub`, member of org `acme` with `org:acme:*` channels.
    pub async fn member(&self, sub: &str) -> Client {
        self.client(&self.token(sub, &["acme"], &["org:acme:*"]))
            .await
    }

    pub async fn client(&self, token: &str) -> Client {
        let (client, _) = within("connect", Client::connect(&self.ws_url, token))
            .await
            .expect("client connects");
        client
    }

    pub async fn open(&self, options: ConnectOptions) -> Result<Client, ClientError> {
        within("upgrade", Client::open(options)).await
    }

    pub async fn grpc(&self) -> Grpc {
        self.grpc_with_key(Some(API_KEY)).await
    }

    pub async fn grpc_with_key(&self, key: Option<&str>) -> Grpc {
        grpc_client(self.grpc_addr, key).await
    }

    /// Publishes over gRPC and returns the position.
    pub async fn publish(
        &self,
        channel: &str,
        event: &str,
        data: serde_json::Value,
    ) -> PublishResponse {
        let request = PublishRequest {
            channel: channel.into(),
            event: event.into(),
            data: data.to_string().into_bytes(),
            idempotency_key: String::new(),
        };
        within("gRPC publish", self.grpc().await.publish(request))
            .await
            .expect("publish succeeds")
            .into_inner()
    }

    /// `GET path` on the HTTP listener: (status, body).
    pub async fn http_get(&self, path: &str) -> (u16, String) {
        http_get(self.http_addr, path).await
    }

    pub async fn metrics(&self) -> String {
        http_get(self.metrics_addr, "/metrics").await.1
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// A `chat` namespace: org members, history 10 for 60 s, client publish allowed.
pub fn chat_namespace() -> NamespaceRule {
    NamespaceRule {
        access: Access::OrgMember,
        options: ChannelOptions {
            history_size: 10,
            history_ttl: 60,
            client_publish: true,
            ..ChannelOptions::default()
        },
        root: None,
    }
}
