//! `GET /ws`: the WebSocket upgrade. Checks the Origin allowlist, picks the subprotocol
//! (`herald.v1.proto` when the client offers it, else JSON: the session's codec),
//! takes a token from the request if there is one, and hands the socket to a session, with
//! the connection's pending slot (released when its handshake ends) and the node's
//! connection limit (a permit taken when `connect` succeeds). Refusals after the upgrade
//! are close codes, because a browser cannot read the status of a failed upgrade (and the
//! SDK would take two failed upgrades for a proxy that blocks WebSocket). A draining node
//! refuses the same way, with 4200.

use std::collections::HashMap;

use axum::extract::{Extension, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use herald_protocol::{CloseCode, Codec, socketio};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncRead;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use super::HttpState;
use super::admission::PendingSlot;
use super::admit::{Refusal, admit};
use super::ws_io::{DirectWrite, FrameSink, ReadOnly};
use crate::config::Limits;
use crate::connections::SWEEP_INTERVAL;
use crate::metrics;
use crate::node::Node;
use crate::session::frame::{ClientFrame, ServerFrame, TransportError};
use crate::session::{self, HandshakeSlot, Incoming, Outgoing, Upgrade};
use crate::wire::DirectSocket;

/// Bytes tungstenite reads from the socket at a time, and the read buffer an idle connection
/// keeps: a command is small (a larger frame reserves its length while it is read).
const READ_BUFFER_BYTES: usize = 256;

pub async fn upgrade(
    State(state): State<HttpState>,
    Extension(slot): Extension<PendingSlot>,
    Query(query): Query<HashMap<String, String>>,
    request: Request,
) -> Response {
    let protocol = subprotocol(request.headers());
    serve(
        state,
        slot,
        &query,
        request,
        Codec::negotiated(protocol),
        protocol,
    )
}

/// Upgrades `request` to a WebSocket, answering with `protocol`, and runs a session of
/// `codec` on it.
pub(super) fn serve(
    state: HttpState,
    slot: PendingSlot,
    query: &HashMap<String, String>,
    request: Request,
    codec: Codec,
    protocol: Option<&'static str>,
) -> Response {
    let (mut parts, _) = request.into_parts();
    let accept = match accept_key(&parts.headers) {
        Ok(accept) => accept,
        Err(refusal) => return refusal.into_response(),
    };
    let Some(on_upgrade) = parts.extensions.remove::<OnUpgrade>() else {
        return HandshakeRefusal::NotUpgradable.into_response();
    };
    let admitted = admit(&state, &parts.headers, query);
    // The connection stays pending, now as this session's, until its handshake ends.
    let pending = slot.take().map(HandshakeSlot::new);
    let node = state.node.clone();
    let permits = state.permits.clone();
    state.spawn_session(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let config = socket_config(&node.config().limits);
        match admitted {
            Ok(token) => {
                let upgrade = |direct| Upgrade {
                    token,
                    pending,
                    permits,
                    direct,
                    codec,
                };
                match split(upgraded, config).await {
                    Socket::Tcp(mut sink, stream, direct) => {
                        if greet(&mut sink, &node, codec).await {
                            session::run(node, sink, stream, upgrade(Some(direct))).await
                        }
                    }
                    Socket::Other(mut sink, stream) => {
                        if greet(&mut sink, &node, codec).await {
                            session::run(node, sink, stream, upgrade(None)).await
                        }
                    }
                }
            }
            Err(refusal) => {
                drop(pending);
                match split(upgraded, config).await {
                    Socket::Tcp(sink, stream, _) => refuse(sink, stream, codec, refusal).await,
                    Socket::Other(sink, stream) => refuse(sink, stream, codec, refusal).await,
                }
            }
        }
    });
    switching_protocols(accept, protocol)
}

/// Sends what the codec's protocol says first: Engine.IO's `open` packet, with Herald's
/// heartbeat and message limit. False when the socket is gone.
async fn greet(sink: &mut impl Outgoing, node: &Node, codec: Codec) -> bool {
    if codec != Codec::SocketIo {
        return true;
    }
    let open = open_packet(node, &crate::random::random_token(20), &[]);
    sink.send(ServerFrame::Text(open)).await.is_ok()
}

/// Engine.IO's `open` packet for session `sid`, offering `upgrades`.
pub(super) fn open_packet(node: &Node, sid: &str, upgrades: &[&str]) -> Bytes {
    let limits = &node.config().limits;
    // The sweeper sends pings up to one sweep late; socket.io-client gives up when no ping
    // came within interval + timeout, so the timeout it is told covers that sweep.
    let ping_timeout = limits.pong_timeout + SWEEP_INTERVAL;
    socketio::encode_open(
        sid,
        upgrades,
        limits.ping_interval.as_millis() as u64,
        ping_timeout.as_millis() as u64,
        limits.max_message_bytes,
    )
}

/// Why a request to `/ws` is not a WebSocket handshake we can accept.
#[derive(Debug, thiserror::Error)]
pub(super) enum HandshakeRefusal {
    #[error("Connection header did not include 'upgrade'")]
    ConnectionHeader,
    #[error("`Upgrade` header did not include 'websocket'")]
    UpgradeHeader,
    #[error("`Sec-WebSocket-Version` header did not include '13'")]
    Version,
    #[error("`Sec-WebSocket-Key` header missing")]
    KeyMissing,
    #[error("WebSocket request couldn't be upgraded since no upgrade state was present")]
    NotUpgradable,
}

impl IntoResponse for HandshakeRefusal {
    fn into_response(self) -> Response {
        let status = match self {
            HandshakeRefusal::NotUpgradable => StatusCode::UPGRADE_REQUIRED,
            _ => StatusCode::BAD_REQUEST,
        };
        (status, self.to_string()).into_response()
    }
}

/// Checks the handshake's headers (RFC 6455 §4.2.1) and answers the client's key.
pub(super) fn accept_key(headers: &HeaderMap) -> Result<String, HandshakeRefusal> {
    if !header_has_token(headers, header::CONNECTION, "upgrade") {
        return Err(HandshakeRefusal::ConnectionHeader);
    }
    if !header_has_token(headers, header::UPGRADE, "websocket") {
        return Err(HandshakeRefusal::UpgradeHeader);
    }
    if headers.get(header::SEC_WEBSOCKET_VERSION) != Some(&HeaderValue::from_static("13")) {
        return Err(HandshakeRefusal::Version);
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or(HandshakeRefusal::KeyMissing)?;
    Ok(derive_accept_key(key.as_bytes()))
}

/// Whether a comma-separated header holds `token` (case-insensitively).
fn header_has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|offered| offered.trim().eq_ignore_ascii_case(token))
}

/// The subprotocol we speak, if the client offered one: the binary one first. A client that
/// offers none (or only others) gets the JSON protocol, without the header.
fn subprotocol(headers: &HeaderMap) -> Option<&'static str> {
    Codec::ALL
        .into_iter()
        .filter_map(Codec::subprotocol)
        .find(|ours| header_has_token(headers, header::SEC_WEBSOCKET_PROTOCOL, ours))
}

pub(super) fn switching_protocols(accept: String, protocol: Option<&'static str>) -> Response {
    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(accept) = HeaderValue::from_str(&accept) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    if let Some(protocol) = protocol {
        headers.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(protocol),
        );
    }
    response
}

pub(super) fn socket_config(limits: &Limits) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        // Over our own limit but under tungstenite's: closed 4009 by the session. Far over:
        // refused by tungstenite before it is buffered.
        .max_message_size(Some(limits.max_message_bytes.saturating_mul(2)))
        .max_frame_size(Some(limits.max_message_bytes.saturating_mul(2)))
}

/// An upgraded connection's two directions as session frames.
pub(super) enum Socket<T, O, I> {
    /// Plain TCP: the fan-out may write to the socket directly.
    Tcp(FrameSink<DirectWrite>, T, DirectSocket),
    /// TLS (or anything else hyper serves): only the writer writes.
    Other(O, I),
}

pub(super) async fn split(
    upgraded: Upgraded,
    config: WebSocketConfig,
) -> Socket<impl Incoming, impl Outgoing, impl Incoming> {
    match upgraded.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) => {
            let (read, write) = parts.io.into_inner().into_split();
            let direct = DirectSocket::new(write);
            let stream = incoming(read, parts.read_buf, config).await;
            Socket::Tcp(FrameSink::new(DirectWrite(direct.clone())), stream, direct)
        }
        Err(upgraded) => {
            let (read, write) = tokio::io::split(TokioIo::new(upgraded));
            let stream = incoming(read, Bytes::new(), config).await;
            Socket::Other(FrameSink::new(write), stream)
        }
    }
}

/// The client's frames, parsed by tungstenite from the read half (and what hyper read past
/// the request head).
async fn incoming<R: AsyncRead + Unpin + Send>(
    read: R,
    already_read: Bytes,
    config: WebSocketConfig,
) -> impl Incoming {
    let socket = WebSocketStream::from_partially_read(
        ReadOnly(read),
        already_read.to_vec(),
        Role::Server,
        Some(config),
    )
    .await;
    // Boxed, apart from the session task: inline, it took the task to a larger allocation
    // size class (idle connections measured 6.17 KiB each inline, 5.22 KiB boxed).
    Box::pin(socket.map(|message| message.map(client_frame).map_err(transport_error)))
}

async fn refuse(
    mut sink: impl Outgoing,
    mut stream: impl Incoming,
    codec: Codec,
    refusal: Refusal,
) {
    let code = refusal.close_code();
    metrics::counter!(metrics::DISCONNECTS, "code" => code.code().to_string()).increment(1);
    let frame = |push| match codec.is_binary() {
        true => ServerFrame::Binary(push),
        false => ServerFrame::Text(push),
    };
    if let Some(push) = refusal.disconnect_push(codec)
        && sink.send(frame(push)).await.is_err()
    {
        return;
    }
    let close = ServerFrame::Close {
        code,
        reason: code.reason().to_owned(),
    };
    if sink.send(close).await.is_ok() {
        session::await_close_reply(&mut stream).await;
    }
    let _ = sink.close().await;
}

fn client_frame(message: Message) -> ClientFrame {
    match message {
        Message::Text(text) => ClientFrame::Text(text.into()),
        Message::Binary(data) => ClientFrame::Binary(data),
        // Only ever built to be sent, never read.
        Message::Frame(frame) => ClientFrame::Binary(frame.into_payload()),
        Message::Ping(payload) => ClientFrame::Ping(payload),
        Message::Pong(_) => ClientFrame::Pong,
        Message::Close(_) => ClientFrame::Close,
    }
}

/// How a connection whose frame tungstenite refused is closed: over its (looser) size cap
/// 4009, a WebSocket protocol violation or invalid UTF-8 in a text frame 4000, as any other
/// bad frame. A transport error (reset, EOF) needs no close.
fn transport_error(error: tokio_tungstenite::tungstenite::Error) -> TransportError {
    use tokio_tungstenite::tungstenite::Error;
    let close = match &error {
        Error::Capacity(_) => Some(CloseCode::MessageTooLarge),
        Error::Protocol(_) | Error::Utf8(_) => Some(CloseCode::BadRequest),
        _ => None,
    };
    TransportError {
        close,
        message: error.to_string(),
    }
}
