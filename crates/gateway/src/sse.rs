//! The fallback transport for networks that block WebSocket: `GET /sse` is a Server-Sent
//! Events stream of the same JSON messages a WebSocket carries, and `POST /rpc?session=…`
//! takes that stream's commands. Both feed an ordinary session (the same handshake, limits,
//! queue and close codes), so the fallback behaves exactly like `/ws`.
//!
//! The stream starts with `event: session` (`{"session":"<id>"}`, the id `/rpc` needs); each
//! frame is an unnamed event whose data is the frame's newline-separated messages; the close
//! is `event: close` with `{"code":…,"reason":…}`. A session id is a capability: 24 random
//! characters, valid while its stream is open.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::ws::Message;
use axum::extract::{Extension, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use dashmap::DashMap;
use futures_util::{SinkExt, Stream, StreamExt, stream};
use tokio::sync::mpsc;
use tokio_util::sync::PollSender;

use crate::admission::PendingSlot;
use crate::config::random_token;
use crate::metrics;
use crate::session::{self, Upgrade};
use crate::ws::{HttpState, Refusal, admit};

/// Commands a session may have waiting before `/rpc` waits for it to catch up.
const INCOMING_QUEUE: usize = 16;
/// Frames between the session's writer and the HTTP body; past it the writer waits, its
/// queue fills, and a client that does not read is closed 4201 as on a WebSocket.
const OUTGOING_QUEUE: usize = 8;

/// The open SSE sessions of this node: id → where their commands go.
#[derive(Default)]
pub struct SseSessions {
    by_id: DashMap<Arc<str>, mpsc::Sender<Message>>,
}

/// `GET /sse`: opens a session and streams its frames.
pub async fn stream(
    State(state): State<HttpState>,
    Extension(slot): Extension<PendingSlot>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let node = state.node.clone();
    let token = match admit(&state, &headers, &query) {
        Ok(token) => token,
        Err(refusal) => return refuse(&refusal),
    };
    // The connection stays pending, now as this session's, until its handshake ends.
    let upgrade = Upgrade {
        token,
        pending: slot.take(),
        permits: state.permits.clone(),
    };
    let id: Arc<str> = Arc::from(random_token(24));
    let (commands, incoming) = mpsc::channel::<Message>(INCOMING_QUEUE);
    let (outgoing, frames) = mpsc::channel::<Message>(OUTGOING_QUEUE);
    state.sse.by_id.insert(id.clone(), commands.clone());

    let sink = PollSender::new(outgoing)
        .sink_map_err(|_| axum::Error::new(std::io::Error::other("SSE stream closed")));
    let mut incoming = incoming;
    let reader = stream::poll_fn(move |cx| incoming.poll_recv(cx)).map(Ok);
    let sessions = state.sse.clone();
    let session_id = id.clone();
    state.spawn_session(async move {
        session::run_transport(node, sink, reader, upgrade).await;
        sessions.by_id.remove(&session_id);
    });

    let first = Event::default()
        .event("session")
        .data(serde_json::json!({ "session": &*id }).to_string());
    let events = stream::once(async move { first }).chain(frames_to_events(frames, commands));
    Sse::new(events.map(Ok::<_, Infallible>)).into_response()
}

/// The session's frames as SSE events. A ping has no SSE equivalent the client could
/// answer, so it becomes a comment and the session is told the client answered: a dead
/// client is found by the failed write instead.
fn frames_to_events(
    mut frames: mpsc::Receiver<Message>,
    commands: mpsc::Sender<Message>,
) -> impl Stream<Item = Event> {
    stream::poll_fn(move |cx| frames.poll_recv(cx)).scan(false, move |closed, message| {
        let event = match message {
            _ if *closed => None,
            Message::Text(text) => Some(Event::default().data(text.as_str())),
            Message::Ping(_) => {
                let _ = commands.try_send(Message::Pong(Bytes::new()));
                Some(Event::default().comment("ping"))
            }
            Message::Close(frame) => {
                *closed = true;
                let (code, reason) = frame
                    .map(|f| (f.code, f.reason.to_string()))
                    .unwrap_or((1000, String::new()));
                Some(close_event(code, &reason))
            }
            Message::Binary(_) | Message::Pong(_) => Some(Event::default().comment("")),
        };
        std::future::ready(event)
    })
}

fn close_event(code: u16, reason: &str) -> Event {
    Event::default()
        .event("close")
        .data(serde_json::json!({ "code": code, "reason": reason }).to_string())
}

/// A stream that only says why it is closed, as a refused WebSocket would (with the
/// `disconnect` push first when the refusal has one).
fn refuse(refusal: &Refusal) -> Response {
    let code = refusal.close_code();
    metrics::counter!(metrics::DISCONNECTS, "code" => code.code().to_string()).increment(1);
    let push = refusal
        .disconnect_push()
        .and_then(|push| String::from_utf8(push.to_vec()).ok())
        .map(|push| Event::default().data(push));
    let events = push
        .into_iter()
        .chain([close_event(code.code(), code.reason())]);
    Sse::new(stream::iter(events).map(Ok::<_, Infallible>)).into_response()
}

/// `POST /rpc?session=…`: one or more command lines for an open session. Replies arrive on
/// the session's stream.
pub async fn rpc(
    State(state): State<HttpState>,
    Query(query): Query<HashMap<String, String>>,
    body: axum::body::Body,
) -> Response {
    let Some(commands) = query
        .get("session")
        .and_then(|id| state.sse.by_id.get(id.as_str()))
        .map(|entry| entry.value().clone())
    else {
        return (StatusCode::NOT_FOUND, "unknown session").into_response();
    };
    // Up to twice the limit goes to the session, which closes 4009 as it would a WebSocket
    // (so the client learns the same way); far over it is refused before it is buffered.
    // A body trickled slower than the header-read timeout allows is cut off.
    let limits = &state.node.config.limits;
    let read = axum::body::to_bytes(body, limits.max_message_bytes.saturating_mul(2));
    let body = match tokio::time::timeout(limits.header_read_timeout, read).await {
        Ok(Ok(body)) => body,
        Ok(Err(_)) => {
            return (StatusCode::PAYLOAD_TOO_LARGE, "message too large").into_response();
        }
        Err(_) => return (StatusCode::REQUEST_TIMEOUT, "request body too slow").into_response(),
    };
    // Not UTF-8 is what a binary frame is on the JSON subprotocol: closed 4000.
    let message = match String::from_utf8(body.to_vec()) {
        Ok(text) => Message::Text(text.into()),
        Err(_) => Message::Binary(body),
    };
    match commands.send(message).await {
        Ok(()) => StatusCode::ACCEPTED.into_response(),
        Err(_) => (StatusCode::NOT_FOUND, "unknown session").into_response(),
    }
}
