//! Development mode only (`herald serve --dev` without `HERALD_BACKEND_ADDR`): a tiny
//! `herald.v1.Backend` on a loopback port, so the demo chat shows the real pattern: the
//! client sends `rpc("message:send", {channel, text})`, the backend checks it and publishes
//! over Herald's own gRPC `Publish`, and every subscriber gets it. An app's backend does
//! the same with its own rules and database.

use std::net::SocketAddr;

use herald_api::BearerToken;
use herald_api::v1::backend_server::{Backend, BackendServer};
use herald_api::v1::herald_client::HeraldClient;
use herald_api::v1::{PublishRequest, RpcError, RpcRequest, RpcResponse};
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpListener;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

use crate::clock::unix_millis;

/// The longest message `message:send` takes, in characters.
const MAX_TEXT_CHARS: usize = 2000;

/// The demo backend's listener, bound before the node starts so the node can be pointed at
/// it.
pub struct DevBackend {
    listener: TcpListener,
}

impl DevBackend {
    /// Binds a loopback port the system picks.
    pub async fn bind() -> std::io::Result<DevBackend> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        Ok(DevBackend { listener })
    }

    /// `http://127.0.0.1:<port>`, for the node's backend address.
    pub fn url(&self) -> std::io::Result<String> {
        Ok(format!("http://{}", self.listener.local_addr()?))
    }

    /// Serves until the process ends, publishing through the node's gRPC API at `grpc`
    /// (plain) with `api_key`.
    pub fn spawn(self, grpc: SocketAddr, api_key: &str) -> Result<(), DemoSetupError> {
        let herald = Endpoint::from_shared(format!("http://{grpc}"))?.connect_lazy();
        let api_key = BearerToken::new(api_key).map_err(|_| DemoSetupError::ApiKey)?;
        let url = self.url().unwrap_or_default();
        let service = BackendServer::new(DemoBackend {
            herald: HeraldClient::with_interceptor(herald, api_key),
        });
        tokio::spawn(async move {
            let incoming = tonic::transport::server::TcpIncoming::from(self.listener);
            let served = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(incoming)
                .await;
            if let Err(error) = served {
                tracing::error!(%error, "the dev backend stopped");
            }
        });
        tracing::info!(
            backend = %url,
            "dev backend running: rpc message:send publishes event message"
        );
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DemoSetupError {
    #[error("the dev backend's gRPC client: {0}")]
    Grpc(#[from] tonic::transport::Error),
    #[error("the API key is not a valid header value")]
    ApiKey,
}

struct DemoBackend {
    /// Sends `Bearer <api key>`.
    herald: HeraldClient<InterceptedService<Channel, BearerToken>>,
}

/// `message:send`'s data.
#[derive(Deserialize)]
struct Send {
    channel: String,
    text: String,
}

#[tonic::async_trait]
impl Backend for DemoBackend {
    async fn rpc(&self, request: Request<RpcRequest>) -> Result<Response<RpcResponse>, Status> {
        let request = request.into_inner();
        let reply = match request.method.as_str() {
            "message:send" => self.send(&request).await,
            _ => Err((1404, "unknown method".to_owned())),
        };
        Ok(Response::new(match reply {
            Ok(data) => RpcResponse {
                data: data.to_string().into_bytes(),
                error: None,
            },
            Err((code, message)) => RpcResponse {
                data: Vec::new(),
                error: Some(RpcError { code, message }),
            },
        }))
    }
}

impl DemoBackend {
    async fn send(&self, request: &RpcRequest) -> Result<serde_json::Value, (u32, String)> {
        let send: Send = serde_json::from_slice(&request.data)
            .map_err(|_| (1400, "expected {\"channel\": …, \"text\": …}".to_owned()))?;
        let text = send.text.trim();
        if text.is_empty() || text.chars().count() > MAX_TEXT_CHARS {
            return Err((1400, format!("text must be 1-{MAX_TEXT_CHARS} characters")));
        }
        if !may_post(&send.channel, &request.orgs) {
            return Err((1403, "you cannot post to this channel".to_owned()));
        }
        let data = json!({ "text": text, "user": request.user, "ts": unix_millis() });
        let publish = PublishRequest {
            channel: send.channel,
            event: "message".to_owned(),
            data: data.to_string().into_bytes(),
            idempotency_key: String::new(),
        };
        let published = self
            .herald
            .clone()
            .publish(publish)
            .await
            .map_err(|status| (1503, format!("publish failed: {}", status.message())))?;
        Ok(json!({ "offset": published.into_inner().offset }))
    }
}

/// The demo's rule, standing in for an app's own: the demo's rooms, and its users' orgs'
/// channels.
fn may_post(channel: &str, orgs: &[String]) -> bool {
    channel.starts_with("demo:")
        || orgs
            .iter()
            .any(|org| channel.starts_with(&format!("org:{org}:")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_post_to_the_demo_rooms_and_their_orgs() {
        let orgs = ["acme".to_owned()];
        assert!(may_post("demo:general", &orgs));
        assert!(may_post("org:acme:ch:x", &orgs));
        assert!(!may_post("org:globex:ch:x", &orgs));
        assert!(!may_post("org:acme", &orgs));
        assert!(!may_post("public:x", &orgs));
    }
}
