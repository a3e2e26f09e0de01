//! The transport boundary: the HTTP port's routes (WebSocket, Socket.IO, the SSE fallback,
//! health, the dev pages), what a new connection must pass, and the accept loop. Sessions
//! behind it see only [`crate::session::frame`]s.

mod accept;
mod admission;
mod admit;
mod dev;
mod engineio;
mod polling;
mod socketio;
mod sse;
mod ws;
mod ws_io;

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::node::Node;

pub use accept::{AcceptOptions, serve};
pub use admission::PendingBudget;

/// The HTTP port's routes, `/ws`, Socket.IO's `/socket.io/` and the SSE fallback behind the Origin-aware CORS layer.
pub fn router(state: HttpState) -> Router {
    let node = &state.node;
    let mut app = Router::new()
        .route("/ws", get(ws::upgrade))
        .route("/sse", get(sse::stream))
        .route("/rpc", post(sse::rpc))
        .route("/socket.io/", get(socketio::get).post(socketio::post))
        .layer(cors(&node.config().allowed_origins))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz));
    if node.config().dev {
        app = app.merge(dev::routes());
    }
    app.with_state(state)
}

/// Shared by the HTTP handlers.
#[derive(Clone)]
pub struct HttpState {
    pub node: Arc<Node>,
    /// One permit per authenticated connection when the node has a connection limit.
    pub permits: Option<Arc<Semaphore>>,
    pub tracker: tokio_util::task::TaskTracker,
    /// Open sessions of the SSE fallback.
    pub sse: Arc<sse::SseSessions>,
    /// Open sessions of Socket.IO's long-polling transport.
    pub polling: Arc<polling::PollingSessions>,
    /// Cancelled when the drain's grace is over: sessions still running are dropped.
    pub closed: CancellationToken,
}

impl HttpState {
    /// Runs a session's task, tracked for the drain and dropped when the grace is over.
    fn spawn_session(&self, session: impl std::future::Future<Output = ()> + Send + 'static) {
        let closed = self.closed.clone();
        // Boxed: moved into the select below, an inline session would be stored twice in
        // this task's state (about 2 KiB more for every connection).
        let session = Box::pin(session);
        self.tracker.spawn(async move {
            tokio::select! {
                () = session => {}
                () = closed.cancelled() => {}
            }
        });
    }
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
                .is_ok_and(|o| admit::origin_listed(&allowed, o))
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
