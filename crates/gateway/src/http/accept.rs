//! The accept loop of the HTTP and metrics ports, over hyper's HTTP/1.1 server (not
//! `axum::serve`, which has no timer): a request head must arrive within the header-read
//! timeout, which hyper also applies to a keep-alive connection waiting for its next
//! request, and is bounded in size. Every accepted connection takes a slot of its port's
//! pending budget ([`super::admission`]), or is closed at once: on the HTTP port until it
//! authenticates, on the metrics port until it closes.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::admission::{PendingBudget, PendingSlot};
use crate::tls::TlsAcceptor;

/// Largest request head (request line and headers) on the HTTP and metrics ports; hyper
/// answers 431 past it. Room for a token in the query and in a cookie, with headroom.
const MAX_REQUEST_HEAD_BYTES: usize = 64 * 1024;

/// Pause after a failed accept (out of file descriptors, say), so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// What the HTTP and metrics accept loops share.
#[derive(Clone)]
pub struct AcceptOptions {
    pub header_read_timeout: Duration,
    /// Stop accepting; shut connections down gracefully.
    pub stop: CancellationToken,
    /// Drop every connection still open.
    pub force: CancellationToken,
    pub connections: TaskTracker,
}

/// Accepts and serves HTTP/1.1 connections (with upgrades) until `stop`. With a pending
/// budget, a connection over it is closed at once, before anything is read: the cheapest
/// answer, and a client cannot tell it from a network failure, which it retries anyway.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    pending: Option<Arc<PendingBudget>>,
    tls: Option<TlsAcceptor>,
    options: AcceptOptions,
) -> Result<(), String> {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout)
        .max_header_size(MAX_REQUEST_HEAD_BYTES)
        .keep_alive(true);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
            () = options.stop.cancelled() => return Ok(()),
        };
        let permit = match pending.as_ref().map(|budget| budget.admit(peer.ip())) {
            None => None,
            Some(Ok(permit)) => Some(permit),
            Some(Err(refusal)) => {
                tracing::debug!(%peer, %refusal, "connection closed at accept");
                continue;
            }
        };
        // Pushes are small and latency-sensitive: without TCP_NODELAY, Nagle holds a push
        // that follows a reply until the client's delayed ACK (up to 40 ms).
        let _ = tcp.set_nodelay(true);
        let slot = PendingSlot::new(permit);
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut request| {
            request.extensions_mut().insert(slot.clone());
            tower_service::Service::call(&mut app.clone(), request)
        });
        let builder = builder.clone();
        let (stop, force) = (options.stop.clone(), options.force.clone());
        let tls = tls.clone();
        options.connections.spawn(async move {
            let Some(acceptor) = tls else {
                return serve_connection(&builder, TokioIo::new(tcp), service, &stop, &force).await;
            };
            // The pending slot taken above covers the handshake too.
            let handshake = tokio::select! {
                handshake = acceptor.accept(tcp) => handshake,
                () = force.cancelled() => return,
            };
            match handshake {
                Ok(tls) => {
                    serve_connection(&builder, TokioIo::new(tls), service, &stop, &force).await
                }
                Err(error) => tracing::debug!(%peer, %error, "TLS handshake failed"),
            }
        });
    }
}

/// Serves one HTTP/1.1 connection: to its end, gracefully from `stop`, at once on `force`.
async fn serve_connection<IO, S>(
    builder: &hyper::server::conn::http1::Builder,
    io: IO,
    service: S,
    stop: &CancellationToken,
    force: &CancellationToken,
) where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::ResBody: 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let connection = builder.serve_connection(io, service).with_upgrades();
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => return,
        () = stop.cancelled() => connection.as_mut().graceful_shutdown(),
        () = force.cancelled() => return,
    }
    tokio::select! {
        _ = connection => {}
        () = force.cancelled() => {}
    }
}
