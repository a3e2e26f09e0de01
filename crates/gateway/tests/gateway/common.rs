//! A real gateway on ephemeral loopback ports, driven over real WebSocket and gRPC.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use herald_api::v1::herald_client::HeraldClient;
use herald_api::v1::{PublishRequest, PublishResponse};
use herald_client::{Client, ClientError, ConnectOptions, Push, ReceivedPublication};
use herald_gateway::Server;
use herald_gateway::auth::{Authenticator, SubscriptionClaims, TokenClaims};
use herald_gateway::clock::unix_seconds;
use herald_gateway::config::{Access, ChannelOptions, Config, ConfigArgs, NamespaceRule, Secret};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

pub const SECRET: &str = "integration-test-secret-0123456789abcdef";
pub const API_KEY: &str = "integration-test-api-key";

/// Every wait in these tests is bounded by this.
pub const WAIT: Duration = Duration::from_secs(10);

/// Awaits `future`, failing the test with `what` if it takes longer than [`WAIT`].
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {WAIT:?} waiting for {what}"),
    }
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

/// Adds `authorization: Bearer <key>` to every call.
#[derive(Clone)]
pub struct ApiKey(pub Option<&'static str>);

impl tonic::service::Interceptor for ApiKey {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(key) = self.0 {
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {key}").parse().unwrap());
        }
        Ok(request)
    }
}

pub type Grpc = HeraldClient<InterceptedService<Channel, ApiKey>>;

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

    pub fn sign(&self, claims: TokenClaims) -> String {
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

    pub async fn grpc_with_key(&self, key: Option<&'static str>) -> Grpc {
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

pub fn claims(sub: &str, orgs: &[&str], channels: &[&str], ttl_seconds: i64) -> TokenClaims {
    TokenClaims {
        sub: sub.into(),
        exp: unix_seconds() + ttl_seconds,
        orgs: orgs.iter().map(|s| s.to_string()).collect(),
        channels: channels.iter().map(|s| s.to_string()).collect(),
        info: None,
        aud: None,
        iss: None,
    }
}

/// A minimal HTTP/1.0 GET, so the tests need no HTTP client crate.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    within("HTTP GET", async {
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .expect("HTTP connect");
        let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .expect("HTTP write");
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .await
            .expect("HTTP read");
        let status = response
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("HTTP status");
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_owned())
            .unwrap_or_default();
        (status, body)
    })
    .await
}

/// A gRPC client of the API at `addr`, sending `key` as the API key.
pub async fn grpc_client(addr: SocketAddr, key: Option<&'static str>) -> Grpc {
    let channel = within(
        "gRPC connect",
        Channel::from_shared(format!("http://{addr}"))
            .expect("valid URI")
            .connect(),
    )
    .await
    .expect("gRPC connects");
    HeraldClient::with_interceptor(channel, ApiKey(key))
}

/// The next publication push, skipping other pushes.
pub async fn next_publication(client: &Client) -> ReceivedPublication {
    within("a publication push", async {
        loop {
            match client.next_push().await {
                Some(Push {
                    publication: Some(publication),
                    ..
                }) => return publication,
                Some(_) => continue,
                None => panic!("connection closed while waiting for a publication"),
            }
        }
    })
    .await
}

/// Waits for the server to close the connection and returns the close code.
pub async fn close_code(client: &Client) -> u16 {
    within("server close", client.closed())
        .await
        .map(|info| info.code)
        .expect("a close frame")
}

/// The server error code of a failed request.
pub fn error_code(result: Result<impl std::fmt::Debug, ClientError>) -> u32 {
    match result {
        Err(error) => error
            .server_code()
            .unwrap_or_else(|| panic!("expected a server error, got {error}")),
        Ok(value) => panic!("expected a server error, got {value:?}"),
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
