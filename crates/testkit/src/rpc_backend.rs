//! A real `herald.v1.Backend` gRPC server for the tests of client `rpc`: it records every
//! request it gets (with its `authorization` metadata) and answers by method:
//!
//! - `echo`: `data` is the request as JSON (`user`, `client`, `orgs`, `info`, `method`,
//!   `data`, `node`);
//! - `refuse`: error 1403 "refused by the backend"; `low`: error 7 "low code";
//! - `hold`: never answers (until the caller gives up);
//! - `garbage`: `data` that is not JSON; `fail`: gRPC status INTERNAL;
//! - anything else: no `data` (`null`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use herald_api::v1::backend_server::{Backend, BackendServer};
use herald_api::v1::{RpcError, RpcRequest, RpcResponse};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinHandle;
use tonic::transport::{Identity, ServerTlsConfig};
use tonic::{Request, Response, Status};

use crate::within;

/// One request as the backend got it.
#[derive(Debug, Clone)]
pub struct Received {
    pub request: RpcRequest,
    /// The `authorization` metadata, if any.
    pub authorization: Option<String>,
}

/// The backend, serving on a loopback port until dropped.
pub struct TestBackend {
    pub addr: SocketAddr,
    tls: bool,
    /// TCP connections accepted so far.
    accepted: Arc<AtomicUsize>,
    received: Mutex<mpsc::UnboundedReceiver<Received>>,
    task: JoinHandle<()>,
}

impl TestBackend {
    pub async fn start() -> TestBackend {
        Self::serve(None).await
    }

    /// Over TLS with this certificate chain and key (PEM); [`TestBackend::url`] is then
    /// `https://127.0.0.1:<port>`.
    pub async fn start_tls(cert_pem: &str, key_pem: &str) -> TestBackend {
        Self::serve(Some(Identity::from_pem(cert_pem, key_pem))).await
    }

    async fn serve(identity: Option<Identity>) -> TestBackend {
        let tls = identity.is_some();
        let mut server = tonic::transport::Server::builder();
        if let Some(identity) = identity {
            server = server
                .tls_config(ServerTlsConfig::new().identity(identity))
                .expect("the test backend's TLS configuration");
        }
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("the test backend binds");
        let addr = listener.local_addr().expect("a bound address");
        let (sender, received) = mpsc::unbounded_channel();
        let service = BackendServer::new(Recorder { sender });
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        let incoming = futures_util::stream::unfold(listener, move |listener| {
            let counter = counter.clone();
            async move {
                let stream = listener.accept().await.map(|(stream, _)| {
                    counter.fetch_add(1, Ordering::Relaxed);
                    stream
                });
                Some((stream, listener))
            }
        });
        let task = tokio::spawn(async move {
            let _ = server
                .add_service(service)
                .serve_with_incoming(incoming)
                .await;
        });
        TestBackend {
            addr,
            tls,
            accepted,
            received: Mutex::new(received),
            task,
        }
    }

    /// `http://<addr>` (`https://` over TLS), for `HERALD_BACKEND_ADDR`.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// How many TCP connections the backend has accepted.
    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }

    /// The next request the backend got.
    pub async fn next_request(&self) -> Received {
        within("a request at the test backend", async {
            self.received
                .lock()
                .await
                .recv()
                .await
                .expect("the backend runs")
        })
        .await
    }
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Recorder {
    sender: mpsc::UnboundedSender<Received>,
}

#[tonic::async_trait]
impl Backend for Recorder {
    async fn rpc(&self, request: Request<RpcRequest>) -> Result<Response<RpcResponse>, Status> {
        let authorization = request
            .metadata()
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let request = request.into_inner();
        let _ = self.sender.send(Received {
            request: request.clone(),
            authorization,
        });
        let error = |code, message: &str| RpcResponse {
            data: Vec::new(),
            error: Some(RpcError {
                code,
                message: message.to_owned(),
            }),
        };
        let data = |data: Vec<u8>| RpcResponse { data, error: None };
        let response = match request.method.as_str() {
            "echo" => data(echo(&request).to_string().into_bytes()),
            "refuse" => error(1403, "refused by the backend"),
            "low" => error(7, "low code"),
            "hold" => std::future::pending().await,
            "garbage" => data(b"{not json".to_vec()),
            "fail" => return Err(Status::internal("the backend failed")),
            _ => data(Vec::new()),
        };
        Ok(Response::new(response))
    }
}

fn echo(request: &RpcRequest) -> Value {
    let json = |bytes: &[u8]| serde_json::from_slice::<Value>(bytes).unwrap_or(Value::Null);
    json!({
        "user": request.user,
        "client": request.client,
        "orgs": request.orgs,
        "info": json(&request.info),
        "infoText": String::from_utf8_lossy(&request.info),
        "method": request.method,
        "data": json(&request.data),
        "dataText": String::from_utf8_lossy(&request.data),
        "node": request.node,
    })
}
