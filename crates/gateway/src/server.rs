//! Binds the three listeners (HTTP with WebSocket and health, gRPC, metrics), serves them,
//! and drains on shutdown: not ready for the whole drain window, new connections closed
//! with 4200 at once, existing ones closed with 4200 spread over the window with jitter,
//! then exit.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use herald_protocol::CloseCode;
use metrics_exporter_prometheus::PrometheusHandle;
use rand::Rng;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::node::Node;
use crate::tls::{Alpn, Tls, TlsIncoming};
use crate::ws::{self, HttpState};
use crate::{api, metrics, sse};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot bind {name} address {addr}: {source}")]
    Bind {
        name: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Node(#[from] crate::node::NodeError),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("{name} server failed: {message}")]
    Serve { name: &'static str, message: String },
}

/// Extra time after the drain window for the last closes to flush.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

pub struct Server {
    node: Arc<Node>,
    http: TcpListener,
    grpc: TcpListener,
    metrics: TcpListener,
    prometheus: PrometheusHandle,
    tls: Option<Tls>,
}

async fn bind(name: &'static str, addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { name, addr, source })
}

impl Server {
    /// Builds a node (standalone, or cluster when NATS and Redis are configured) and binds
    /// its listeners (port 0 picks a free port).
    pub async fn bind(config: Config) -> Result<Server, ServerError> {
        // First: a bad certificate stops startup before anything connects to backends.
        let tls = config.tls.as_ref().map(Tls::load).transpose()?;
        let prometheus = metrics::install();
        let (http_addr, grpc_addr, metrics_addr) =
            (config.http_addr, config.grpc_addr, config.metrics_addr);
        let node = if config.is_cluster() {
            Node::cluster(config).await?
        } else {
            Node::standalone(config)?
        };
        Ok(Server {
            node,
            http: bind("HTTP", http_addr).await?,
            grpc: bind("gRPC", grpc_addr).await?,
            metrics: bind("metrics", metrics_addr).await?,
            prometheus,
            tls,
        })
    }

    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http
            .local_addr()
            .expect("bound listener has an address")
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc
            .local_addr()
            .expect("bound listener has an address")
    }

    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics
            .local_addr()
            .expect("bound listener has an address")
    }

    /// Serves until `shutdown` completes, then drains and returns.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
        let Server {
            node,
            http,
            grpc,
            metrics,
            prometheus,
            tls,
        } = self;
        let stop = CancellationToken::new();
        let sessions = TaskTracker::new();
        let max = node.config.limits.max_connections;
        let http_state = HttpState {
            node: node.clone(),
            permits: (max > 0).then(|| Arc::new(Semaphore::new(max))),
            tracker: sessions.clone(),
            sse: Arc::default(),
        };
        let mut http_app = Router::new()
            .route("/ws", get(ws::upgrade))
            .route("/sse", get(sse::stream))
            .route("/rpc", post(sse::rpc))
            .layer(cors(&node.config.allowed_origins))
            .route("/healthz", get(|| async { "ok" }))
            .route("/readyz", get(readyz));
        if node.config.dev {
            http_app = http_app.merge(crate::dev::routes());
        }
        let http_app = http_app.with_state(http_state);
        let metrics_app = Router::new().route(
            "/metrics",
            get(move || std::future::ready(prometheus.render())),
        );

        // TLS: each port's acceptor handshakes (bounded by a timeout) before axum or tonic
        // sees the connection; the reloader swaps the certificate both acceptors serve.
        let grpc_tls = node.config.grpc_tls;
        let (http_task, grpc_acceptor) = match tls {
            Some(tls) => {
                let https = TlsIncoming::new(http, tls.acceptor(Alpn::Http1));
                let grpc_acceptor = grpc_tls.then(|| tls.acceptor(Alpn::H2));
                tls.spawn_reloader(stop.clone());
                let task = tokio::spawn(serve_https(https, http_app, stop.clone()));
                (task, grpc_acceptor)
            }
            None => (tokio::spawn(serve_http(http, http_app, stop.clone())), None),
        };
        let metrics_task = tokio::spawn(serve_http(metrics, metrics_app, stop.clone()));
        let grpc_stop = stop.clone();
        let grpc_server =
            tonic::transport::Server::builder().add_service(api::service(node.clone()));
        let grpc_task = match grpc_acceptor {
            Some(acceptor) => tokio::spawn(grpc_server.serve_with_incoming_shutdown(
                TlsIncoming::new(grpc, acceptor),
                grpc_stop.cancelled_owned(),
            )),
            None => tokio::spawn(grpc_server.serve_with_incoming_shutdown(
                // Nagle would hold small replies for the client's delayed ACK (~40 ms).
                tonic::transport::server::TcpIncoming::from(grpc).with_nodelay(Some(true)),
                grpc_stop.cancelled_owned(),
            )),
        };
        let mode = if node.config.is_cluster() {
            "cluster (NATS + Redis)"
        } else {
            "standalone"
        };
        tracing::info!(node = %node.id, http = %node.config.http_addr, mode, "serving");

        shutdown.await;
        drain(&node, &sessions).await;
        stop.cancel();
        let (http, metrics, grpc) = tokio::join!(http_task, metrics_task, grpc_task);
        for (name, result) in [
            ("HTTP", http.map_err(|e| e.to_string()).and_then(|r| r)),
            (
                "metrics",
                metrics.map_err(|e| e.to_string()).and_then(|r| r),
            ),
        ] {
            result.map_err(|message| ServerError::Serve { name, message })?;
        }
        grpc.map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()))
            .map_err(|message| ServerError::Serve {
                name: "gRPC",
                message,
            })?;
        tracing::info!("stopped");
        Ok(())
    }
}

async fn serve_http(
    listener: TcpListener,
    app: Router,
    stop: CancellationToken,
) -> Result<(), String> {
    // Pushes are small and latency-sensitive: without TCP_NODELAY, Nagle holds a push that
    // follows a reply until the client's delayed ACK (up to 40 ms).
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
        .map_err(|e| e.to_string())
}

/// `serve_http` over TLS connections (TCP_NODELAY is set by the acceptor).
async fn serve_https(
    incoming: TlsIncoming,
    app: Router,
    stop: CancellationToken,
) -> Result<(), String> {
    axum::serve(incoming, app)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
        .map_err(|e| e.to_string())
}

/// Browsers on another origin may use the SSE fallback (`fetch` with an `Authorization`
/// header needs a preflight); the Origin allowlist decides which, as for `/ws`.
fn cors(allowed: &[String]) -> tower_http::cors::CorsLayer {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let allowed = allowed.to_vec();
    let origin = AllowOrigin::predicate(move |origin, _| {
        allowed.is_empty()
            || origin
                .to_str()
                .is_ok_and(|o| ws::origin_listed(&allowed, o))
    });
    CorsLayer::new()
        .allow_origin(origin)
        .allow_methods([axum::http::Method::GET, axum::http::Method::POST])
        .allow_headers([
            axum::http::header::AUTHORIZATION,
            axum::http::header::CONTENT_TYPE,
        ])
}

async fn readyz(State(state): State<HttpState>) -> (StatusCode, &'static str) {
    if state.node.is_ready() {
        (StatusCode::OK, "ready")
    } else if state.node.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "backends unavailable")
    }
}

/// Turns not ready and closes the open connections with 4200 at random moments spread over
/// the drain window, so clients do not all reconnect to the other nodes at once. Returns
/// when the whole window has passed (and the sessions have ended, or the grace is over):
/// until then the listeners stay open, `/readyz` answers 503 and new connections are
/// closed 4200 at once, so a load balancer sees the node leave before its port does.
async fn drain(node: &Arc<Node>, sessions: &TaskTracker) {
    let window = node.config.drain;
    node.start_draining();
    let started = tokio::time::Instant::now();
    // A connection registered after this is closed by its own session, which sees the node
    // draining at the end of its handshake.
    let connections = node.connections.all();
    tracing::info!(
        connections = connections.len(),
        seconds = window.as_secs(),
        "draining"
    );
    let mut schedule: Vec<(Duration, _)> = {
        let mut rng = rand::rng();
        connections
            .into_iter()
            .map(|c| (window.mul_f64(rng.random::<f64>()), c))
            .collect()
    };
    schedule.sort_by_key(|(at, _)| *at);
    for (at, connection) in schedule {
        tokio::time::sleep_until(started + at).await;
        connection.close(CloseCode::Shutdown);
    }
    // Not at the last scheduled close: the window is what the operator promised the
    // load balancer (and Kubernetes) to keep answering 503 for.
    tokio::time::sleep_until(started + window).await;
    sessions.close();
    if tokio::time::timeout(DRAIN_GRACE, sessions.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            left = sessions.len(),
            "sessions still open after the drain window"
        );
    }
}
