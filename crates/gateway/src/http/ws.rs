//! `GET /ws`: the WebSocket upgrade. Checks the Origin allowlist, picks the subprotocol
//! (`herald.v1.proto` when the client offers it, else JSON: the session's codec),
//! takes a token from the request if there is one, and hands the socket to a session, with
//! the connection's pending slot (released when its handshake ends) and the node's
//! connection limit (a permit taken when `connect` succeeds). Refusals after the upgrade
//! are close codes, because a browser cannot read the status of a failed upgrade (and the
//! SDK would take two failed upgrades for a proxy that blocks WebSocket). A draining node
//! refuses the same way, with 4200.

use std::collections::HashMap;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Extension, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use herald_protocol::{CloseCode, Codec};

use super::HttpState;
use super::admission::PendingSlot;
use super::admit::{Refusal, admit};
use crate::metrics;
use crate::session::frame::{ClientFrame, ServerFrame, TransportError};
use crate::session::{self, Incoming, Outgoing, Upgrade};

pub async fn upgrade(
    State(state): State<HttpState>,
    Extension(slot): Extension<PendingSlot>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let node = &state.node;
    let limits = &node.config().limits;
    let upgrade = upgrade
        .protocols(Codec::ALL.map(Codec::subprotocol))
        .read_buffer_size(1024)
        .write_buffer_size(0)
        .max_write_buffer_size(limits.max_message_bytes.saturating_mul(4).max(1 << 20))
        // Over our own limit but under tungstenite's: closed 4009 by the session. Far over:
        // refused by tungstenite before it is buffered.
        .max_message_size(limits.max_message_bytes.saturating_mul(2))
        .max_frame_size(limits.max_message_bytes.saturating_mul(2));

    let admitted = admit(&state, &headers, &query);
    // The connection stays pending, now as this session's, until its handshake ends.
    let pending = slot.take();
    let node = node.clone();
    let permits = state.permits.clone();
    upgrade.on_upgrade(move |socket| {
        let codec = Codec::negotiated(socket.protocol().and_then(|p| p.to_str().ok()));
        state.spawn_session(async move {
            match admitted {
                Ok(token) => {
                    let upgrade = Upgrade {
                        token,
                        pending,
                        permits,
                        codec,
                    };
                    let (sink, stream) = frames(socket);
                    session::run(node, sink, stream, upgrade).await
                }
                Err(refusal) => {
                    drop(pending);
                    refuse(socket, codec, refusal).await
                }
            }
        });
        std::future::ready(())
    })
}

async fn refuse(socket: WebSocket, codec: Codec, refusal: Refusal) {
    let code = refusal.close_code();
    metrics::counter!(metrics::DISCONNECTS, "code" => code.code().to_string()).increment(1);
    let (mut sink, mut stream) = frames(socket);
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
}

/// The socket as session frames: tungstenite's messages in, ours out.
fn frames(socket: WebSocket) -> (impl Outgoing, impl Incoming) {
    let (sink, stream) = socket.split();
    let sink = sink
        .sink_map_err(transport_error)
        .with(|frame| std::future::ready(message(frame)));
    let stream = stream.map(|message| message.map(client_frame).map_err(transport_error));
    (sink, stream)
}

fn message(frame: ServerFrame) -> Result<Message, TransportError> {
    Ok(match frame {
        // Every frame is JSON we encoded, so this check never fails; it is the price of not
        // using `unsafe`.
        ServerFrame::Text(text) => Message::Text(
            Utf8Bytes::try_from(text).map_err(|_| TransportError::gone("a frame not UTF-8"))?,
        ),
        ServerFrame::Binary(data) => Message::Binary(data),
        ServerFrame::Ping => Message::Ping(Bytes::new()),
        ServerFrame::Close { code, reason } => Message::Close(Some(CloseFrame {
            code: code.code(),
            reason: reason.into(),
        })),
    })
}

fn client_frame(message: Message) -> ClientFrame {
    match message {
        Message::Text(text) => ClientFrame::Text(text.into()),
        Message::Binary(data) => ClientFrame::Binary(data),
        Message::Ping(_) => ClientFrame::Ping,
        Message::Pong(_) => ClientFrame::Pong,
        Message::Close(_) => ClientFrame::Close,
    }
}

/// How a connection whose frame tungstenite refused is closed: over its (looser) size cap
/// 4009, a WebSocket protocol violation or invalid UTF-8 in a text frame 4000, as any other
/// bad frame. A transport error (reset, EOF) needs no close.
fn transport_error(error: axum::Error) -> TransportError {
    use tokio_tungstenite::tungstenite::Error;
    let error = error.into_inner();
    let close = match error.downcast_ref::<Error>() {
        Some(Error::Capacity(_)) => Some(CloseCode::MessageTooLarge),
        Some(Error::Protocol(_) | Error::Utf8(_)) => Some(CloseCode::BadRequest),
        _ => None,
    };
    TransportError {
        close,
        message: error.to_string(),
    }
}
