//! The fallback transport for networks that block WebSocket: `GET /sse` is a Server-Sent
//! Events stream of the same JSON messages a WebSocket carries, and `POST /rpc?session=…`
//! takes that stream's commands. Both feed an ordinary session (the same handshake, limits,
//! queue and close codes), so the fallback behaves exactly like `/ws`.
//!
//! The stream starts with `event: session` (`{"session":"<id>"}`, the id `/rpc` needs); each
//! frame is an unnamed event whose data is the frame's newline-separated messages; the close
//! is `event: close` with `{"code":…,"reason":…}`. A session id is a capability: 24 random
//! characters, valid while its stream is open.
//!
//! Liveness is the client's to prove, as on a WebSocket: the heartbeat's ping is an
//! `event: ping`, and the client answers `POST /rpc?session=…&pong` (empty body). The pong
//! bypasses the bounded command queue (a flag the session's reader takes first), so a queue
//! full of commands never drops it, and it is not a command (no rate limit). A client that
//! stops answering is closed 4202 like a WebSocket one.

use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use axum::extract::{Extension, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use dashmap::DashMap;
use futures_util::task::AtomicWaker;
use futures_util::{Stream, StreamExt, stream};
use herald_protocol::Codec;
use tokio::sync::mpsc;
use tokio_util::sync::PollSender;

use super::HttpState;
use super::admission::PendingSlot;
use super::admit::{Refusal, admit};
use crate::metrics;
use crate::random::random_token;
use crate::session::frame::{ClientFrame, ServerFrame, TransportError};
use crate::session::{self, HandshakeSlot, Outgoing, Upgrade};

/// Commands a session may have waiting before `/rpc` waits for it to catch up.
const INCOMING_QUEUE: usize = 16;
/// Frames between the session's writer and the HTTP body; past it the writer waits, its
/// queue fills, and a client that does not read is closed 4201 as on a WebSocket.
const OUTGOING_QUEUE: usize = 8;

/// The open SSE sessions of this node: id → where their commands and pongs go.
#[derive(Default)]
pub struct SseSessions {
    by_id: DashMap<Arc<str>, SseSession>,
}

#[derive(Clone)]
struct SseSession {
    commands: mpsc::Sender<ClientFrame>,
    pong: Arc<PongSignal>,
}

/// A pong posted by the client, waiting for the session's reader. A flag, not a queue
/// entry: any number of pongs before the reader looks are one pong, and none is lost to a
/// full command queue.
#[derive(Default)]
struct PongSignal {
    answered: AtomicBool,
    reader: AtomicWaker,
}

impl PongSignal {
    fn answer(&self) {
        self.answered.store(true, Ordering::Release);
        self.reader.wake();
    }
}

/// The session's incoming frames: a posted pong first, then the queued commands.
fn incoming_frames(
    mut commands: mpsc::Receiver<ClientFrame>,
    pong: Arc<PongSignal>,
) -> impl Stream<Item = ClientFrame> {
    stream::poll_fn(move |cx| {
        pong.reader.register(cx.waker());
        if pong.answered.swap(false, Ordering::AcqRel) {
            return Poll::Ready(Some(ClientFrame::Pong));
        }
        commands.poll_recv(cx)
    })
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
        pending: slot.take().map(HandshakeSlot::new),
        permits: state.permits.clone(),
        direct: None,
        codec: Codec::Json,
    };
    let id: Arc<str> = Arc::from(random_token(24));
    let (commands, incoming) = mpsc::channel::<ClientFrame>(INCOMING_QUEUE);
    let (outgoing, frames) = mpsc::channel::<ServerFrame>(OUTGOING_QUEUE);
    let pong = Arc::new(PongSignal::default());
    let entry = SseSession {
        commands,
        pong: pong.clone(),
    };
    state.sse.by_id.insert(id.clone(), entry);

    let sink = outgoing_sink(outgoing);
    let reader = incoming_frames(incoming, pong).map(Ok);
    let sessions = state.sse.clone();
    let session_id = id.clone();
    state.spawn_session(async move {
        session::run(node, sink, reader, upgrade).await;
        sessions.by_id.remove(&session_id);
    });

    let first = Event::default()
        .event("session")
        .data(serde_json::json!({ "session": &*id }).to_string());
    let events = stream::once(async move { first }).chain(frames_to_events(frames));
    Sse::new(events.map(Ok::<_, Infallible>)).into_response()
}

/// The session's frames as SSE events. A ping becomes `event: ping`, which the client
/// answers with a pong on `/rpc` (see the module doc).
fn frames_to_events(mut frames: mpsc::Receiver<ServerFrame>) -> impl Stream<Item = Event> {
    stream::poll_fn(move |cx| frames.poll_recv(cx)).scan(false, move |closed, frame| {
        let event = match frame {
            _ if *closed => None,
            // Every frame is JSON we encoded: never anything but UTF-8.
            ServerFrame::Text(text) => Some(match std::str::from_utf8(&text) {
                Ok(text) => Event::default().data(text),
                Err(_) => Event::default().comment(""),
            }),
            // EventSource dispatches no event without data.
            // The SSE transport's sessions are JSON: they never send binary frames.
            ServerFrame::Binary(_) => Some(Event::default().comment("")),
            ServerFrame::Ping => Some(Event::default().event("ping").data("{}")),
            // WebSocket-only: SSE has no client pings and no direct writes.
            ServerFrame::Pong(_) | ServerFrame::Framed(_) => Some(Event::default().comment("")),
            ServerFrame::Close { code, reason } => {
                *closed = true;
                Some(close_event(code.code(), &reason))
            }
        };
        std::future::ready(event)
    })
}

/// The session's frames into the event stream's queue. Not `sink_map_err` (nor
/// `sink_err_into`, built on it): the writer may see a closed stream twice (a failed send,
/// then its close), and their mapping panics the second time.
pub(super) fn outgoing_sink(outgoing: mpsc::Sender<ServerFrame>) -> impl Outgoing {
    EventSink(PollSender::new(outgoing))
}

struct EventSink(PollSender<ServerFrame>);

fn stream_closed<T>(_: tokio_util::sync::PollSendError<T>) -> TransportError {
    TransportError::gone("SSE stream closed")
}

impl futures_util::Sink<ServerFrame> for EventSink {
    type Error = TransportError;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.0).poll_ready(cx).map_err(stream_closed)
    }

    fn start_send(mut self: Pin<&mut Self>, frame: ServerFrame) -> Result<(), Self::Error> {
        Pin::new(&mut self.0)
            .start_send(frame)
            .map_err(stream_closed)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.0).poll_flush(cx).map_err(stream_closed)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.0).poll_close(cx).map_err(stream_closed)
    }
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
        .disconnect_push(Codec::Json)
        .and_then(|push| String::from_utf8(push.to_vec()).ok())
        .map(|push| Event::default().data(push));
    let events = push
        .into_iter()
        .chain([close_event(code.code(), code.reason())]);
    Sse::new(stream::iter(events).map(Ok::<_, Infallible>)).into_response()
}

/// `POST /rpc?session=…`: one or more command lines for an open session. Replies arrive on
/// the session's stream. `POST /rpc?session=…&pong`, with no body, answers a ping.
pub async fn rpc(
    State(state): State<HttpState>,
    Query(query): Query<HashMap<String, String>>,
    body: axum::body::Body,
) -> Response {
    let Some(SseSession { commands, pong }) = query
        .get("session")
        .and_then(|id| state.sse.by_id.get(id.as_str()))
        .map(|entry| entry.value().clone())
    else {
        return (StatusCode::NOT_FOUND, "unknown session").into_response();
    };
    // Up to twice the limit goes to the session, which closes 4009 as it would a WebSocket
    // (so the client learns the same way); far over it is refused before it is buffered.
    let limits = &state.node.config().limits;
    let body = match read_body(&state, body, limits.max_message_bytes.saturating_mul(2)).await {
        Ok(body) => body,
        Err(refused) => return refused,
    };
    if query.contains_key("pong") {
        if !body.is_empty() {
            return (StatusCode::BAD_REQUEST, "a pong carries no commands").into_response();
        }
        pong.answer();
        return StatusCode::ACCEPTED.into_response();
    }
    // The session checks it is UTF-8, as it does a WebSocket text frame: closed 4000 if not.
    match commands.send(ClientFrame::Text(body)).await {
        Ok(()) => StatusCode::ACCEPTED.into_response(),
        Err(_) => (StatusCode::NOT_FOUND, "unknown session").into_response(),
    }
}

/// A POSTed body of at most `max` bytes (413 past it, before it is buffered). A body
/// trickled slower than the header-read timeout allows is cut off (408).
pub(super) async fn read_body(
    state: &HttpState,
    body: axum::body::Body,
    max: usize,
) -> Result<bytes::Bytes, Response> {
    let timeout = state.node.config().limits.header_read_timeout;
    match tokio::time::timeout(timeout, axum::body::to_bytes(body, max)).await {
        Ok(Ok(body)) => Ok(body),
        Ok(Err(_)) => Err((StatusCode::PAYLOAD_TOO_LARGE, "message too large").into_response()),
        Err(_) => Err((StatusCode::REQUEST_TIMEOUT, "request body too slow").into_response()),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_pong_is_read_before_a_full_queue_of_commands() {
        let (commands, queue) = mpsc::channel::<ClientFrame>(2);
        let pong = Arc::new(PongSignal::default());
        let mut incoming = Box::pin(incoming_frames(queue, pong.clone()));
        for n in 0..2 {
            commands
                .try_send(ClientFrame::Text(format!("{n}").into()))
                .unwrap();
        }
        assert!(commands.try_send(ClientFrame::Text("full".into())).is_err());
        // Two pongs before the reader looks are one pong, and neither waits for the queue.
        pong.answer();
        pong.answer();
        assert!(matches!(incoming.next().await, Some(ClientFrame::Pong)));
        assert!(matches!(incoming.next().await, Some(ClientFrame::Text(t)) if t == "0"));
        assert!(matches!(incoming.next().await, Some(ClientFrame::Text(t)) if t == "1"));
        // A reader waiting on an empty queue wakes for a pong.
        let waiting = tokio::spawn(async move { incoming.next().await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        pong.answer();
        let message = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the pong wakes the reader")
            .unwrap();
        assert!(matches!(message, Some(ClientFrame::Pong)));
    }

    #[tokio::test]
    async fn a_closed_event_stream_is_an_error_every_time_not_a_panic() {
        use futures_util::SinkExt;
        let (outgoing, frames) = mpsc::channel::<ServerFrame>(1);
        drop(frames);
        let mut sink = outgoing_sink(outgoing);
        assert!(sink.send(ServerFrame::Ping).await.is_err());
        assert!(sink.send(ServerFrame::Ping).await.is_err(), "and again");
    }
}
