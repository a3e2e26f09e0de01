//! Binds the three listeners (HTTP with WebSocket and health, gRPC, metrics), serves them,
//! and drains on shutdown: not ready for the whole drain window, new connections closed
//! with 4200 at once, existing ones closed with 4200 spread over the window with jitter,
//! then exit. Whatever is still open when the drain's grace ends is dropped, so a client
//! that trickles a request or never answers a close cannot keep the process alive.
//!
//! The HTTP and metrics ports run [`crate::http`]'s accept loop.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use herald_protocol::CloseCode;
use metrics_exporter_prometheus::PrometheusHandle;
use rand::Rng;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::http::{self, HttpState, PendingBudget};
use crate::node::Node;
use crate::tls::{Alpn, Tls, TlsIncoming};
use crate::{api, metrics};

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

/// Extra time after the drain window for the last closes to flush; then whatever is left
/// is dropped.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// Connections open at once on the metrics port, node-wide and per client address (IPv6:
/// per /64): room for a few scrapers and probes, and a bound on what a client that reaches
/// an internal port by mistake can hold there. Over it, closed at accept.
const METRICS_MAX_CONNECTIONS: usize = 64;
const METRICS_MAX_CONNECTIONS_PER_IP: usize = 16;

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
        // As bound: with port 0 in the configuration, the ports the system picked.
        let (http_addr, grpc_addr, metrics_addr) =
            (self.http_addr(), self.grpc_addr(), self.metrics_addr());
        let Server {
            node,
            http,
            grpc,
            metrics,
            prometheus,
            tls,
        } = self;
        let stop = CancellationToken::new();
        // Cancelled when the drain's grace ends: every HTTP connection and session still
        // open is dropped.
        let force = CancellationToken::new();
        let sessions = TaskTracker::new();
        let connections = TaskTracker::new();
        let limits = &node.config().limits;
        let max = limits.max_connections;
        let http_state = HttpState {
            node: node.clone(),
            permits: (max > 0).then(|| Arc::new(Semaphore::new(max))),
            tracker: sessions.clone(),
            sse: Arc::default(),
            polling: Arc::default(),
            closed: force.clone(),
        };
        let pending = PendingBudget::new(
            "http",
            limits.max_pending_connections,
            limits.max_pending_per_ip,
        );
        // Nothing authenticates on the metrics port: every connection counts until it closes.
        let metrics_pending = PendingBudget::new(
            "metrics",
            METRICS_MAX_CONNECTIONS,
            METRICS_MAX_CONNECTIONS_PER_IP,
        );
        let http_options = http::AcceptOptions {
            header_read_timeout: limits.header_read_timeout,
            stop: stop.clone(),
            force: force.clone(),
            connections: connections.clone(),
        };
        let http_app = http::router(http_state);
        let metrics_app = Router::new().route(
            "/metrics",
            get(move || std::future::ready(prometheus.render())),
        );

        // TLS: the HTTP accept loop handshakes each connection (bounded by a timeout) before
        // hyper sees it, gRPC gets its own acceptor; the reloader swaps the certificate both
        // serve.
        let (http_acceptor, grpc_acceptor) = match tls {
            Some(tls) => {
                let http_acceptor = tls.acceptor(Alpn::Http1);
                let grpc_acceptor = node.config().grpc_tls.then(|| tls.acceptor(Alpn::H2));
                tls.spawn_reloader(stop.clone());
                (Some(http_acceptor), grpc_acceptor)
            }
            None => (None, None),
        };
        let http_task = tokio::spawn(http::serve(
            http,
            http_app,
            Some(pending),
            http_acceptor,
            http_options.clone(),
        ));
        let metrics_task = tokio::spawn(http::serve(
            metrics,
            metrics_app,
            Some(metrics_pending),
            None,
            http_options,
        ));
        let grpc_stop = stop.clone();
        let grpc_done = CancellationToken::new();
        let grpc_server =
            tonic::transport::Server::builder().add_service(api::service(node.clone()));
        let grpc_serve = async move {
            match grpc_acceptor {
                Some(acceptor) => {
                    grpc_server
                        .serve_with_incoming_shutdown(
                            TlsIncoming::new(grpc, acceptor),
                            grpc_stop.cancelled_owned(),
                        )
                        .await
                }
                None => {
                    grpc_server
                        .serve_with_incoming_shutdown(
                            // Nagle would hold small replies for the client's delayed ACK (~40 ms).
                            tonic::transport::server::TcpIncoming::from(grpc)
                                .with_nodelay(Some(true)),
                            grpc_stop.cancelled_owned(),
                        )
                        .await
                }
            }
        };
        let grpc_task = tokio::spawn({
            let grpc_done = grpc_done.clone();
            async move {
                let result = grpc_serve.await;
                grpc_done.cancel();
                result
            }
        });
        let mode = if node.config().is_cluster() {
            "cluster (NATS + Redis)"
        } else {
            "standalone"
        };
        tracing::info!(
            node = %node.id(),
            http = %http_addr,
            grpc = %grpc_addr,
            metrics = %metrics_addr,
            mode,
            "serving"
        );

        shutdown.await;
        drain(&node).await;
        // The window is over: stop accepting, let idle keep-alive connections go and
        // in-flight requests finish, for at most the grace; then drop what is left.
        stop.cancel();
        sessions.close();
        connections.close();
        let settled = async {
            sessions.wait().await;
            connections.wait().await;
            grpc_done.cancelled().await;
        };
        if tokio::time::timeout(DRAIN_GRACE, settled).await.is_err() {
            tracing::warn!(
                sessions = sessions.len(),
                connections = connections.len(),
                "closing what is still open after the drain window and its grace"
            );
        }
        force.cancel();
        // Nor is a gRPC call still running (a client holding a stream open).
        if !grpc_task.is_finished() {
            grpc_task.abort();
        }
        let (http, metrics, grpc) = tokio::join!(http_task, metrics_task, grpc_task);
        let grpc = match grpc {
            Err(error) if error.is_cancelled() => Ok(Ok(())),
            other => other,
        };
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

/// Turns not ready and closes the open connections with 4200 at random moments spread over
/// the drain window, so clients do not all reconnect to the other nodes at once. Returns
/// when the whole window has passed (and the sessions have ended, or the grace is over):
/// until then the listeners stay open, `/readyz` answers 503 and new connections are
/// closed 4200 at once, so a load balancer sees the node leave before its port does.
async fn drain(node: &Arc<Node>) {
    let window = node.config().drain;
    node.start_draining();
    let started = tokio::time::Instant::now();
    // A connection registered after this is closed by its own session, which sees the node
    // draining at the end of its handshake.
    let connections = node.connections().all();
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
}
