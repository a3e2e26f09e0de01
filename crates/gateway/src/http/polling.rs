//! Engine.IO's HTTP long-polling transport, and its upgrade to a WebSocket. The session is
//! an ordinary Socket.IO-codec session (the same handshake, limits, queue and close codes
//! as over a WebSocket), fed the way the SSE fallback feeds one: its frames wait in a short
//! queue that `GET`s take, and `POST`s put the client's packets in its incoming queue.
//!
//! A `GET` answers every packet queued, separated by `\x1e`, waiting up to the ping interval
//! for one (then a `noop`); one `GET` at a time, as the protocol says (a second one closes
//! the session). A client that stops polling fills the queue and is closed 4201, and one
//! that stops answering pings 4202, as on a WebSocket.
//!
//! The upgrade: a WebSocket to the same session id answers `2probe` with `3probe`, which
//! also ends the pending poll with a `noop` so the client can pause polling; the client's
//! `5` hands the session's queue to the WebSocket, which then carries everything still
//! queued and all that follows (nothing is lost between the transports, nor sent twice).

use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use dashmap::DashMap;
use futures_util::{SinkExt, Stream, StreamExt, stream};
use herald_protocol::Codec;
use tokio::sync::{Mutex, Notify, mpsc};

use super::HttpState;
use super::admission::PendingSlot;
use super::admit::admit;
use super::engineio::{EngineError, refused};
use super::sse::{outgoing_sink, read_body};
use super::ws;
use crate::random::random_token;
use crate::session::frame::{ClientFrame, ServerFrame, TransportError};
use crate::session::{self, HandshakeSlot, Incoming, Outgoing, Upgrade};

/// Packets a session may have waiting before a `POST` waits for it to catch up.
const INCOMING_QUEUE: usize = 16;
/// Frames waiting for the next poll; past it the writer waits, its queue fills, and a
/// client that does not poll is closed 4201 as on a WebSocket.
const OUTGOING_QUEUE: usize = 8;
/// Engine.IO's packet separator in a polling payload.
const SEPARATOR: u8 = 0x1e;
const NOOP: &[u8] = b"6";
const CLOSE: &[u8] = b"1";

/// The polling sessions of this node: sid → where its packets go and its frames wait.
#[derive(Default)]
pub struct PollingSessions {
    by_id: DashMap<Arc<str>, PollingSession>,
}

#[derive(Clone)]
struct PollingSession {
    incoming: mpsc::Sender<Result<ClientFrame, TransportError>>,
    shared: Arc<Shared>,
}

struct Shared {
    /// The session's frames: taken by one poll at a time, and by the WebSocket for good
    /// once upgraded.
    frames: Mutex<mpsc::Receiver<ServerFrame>>,
    /// A WebSocket probed (`2probe`): polls answer at once, so the client can pause.
    probing: AtomicBool,
    /// The client switched to the WebSocket (`5`): polls are over.
    upgraded: AtomicBool,
    /// Ends a pending poll when `probing` or `upgraded` is set.
    wake: Notify,
}

impl Shared {
    fn set(&self, flag: &AtomicBool) {
        flag.store(true, Ordering::Release);
        self.wake.notify_waiters();
    }
}

impl PollingSessions {
    fn get(&self, sid: &str) -> Result<PollingSession, EngineError> {
        self.by_id
            .get(sid)
            .map(|entry| entry.value().clone())
            .ok_or(EngineError::SessionIdUnknown)
    }
}

/// `GET` without a sid: opens a session and answers its `open` packet.
pub(super) fn open(
    state: &HttpState,
    slot: PendingSlot,
    headers: &HeaderMap,
    query: &std::collections::HashMap<String, String>,
) -> Result<Response, EngineError> {
    let token = admit(state, headers, query).map_err(refused)?;
    let upgrade = Upgrade {
        token,
        pending: slot.take().map(HandshakeSlot::new),
        permits: state.permits.clone(),
        direct: None,
        codec: Codec::SocketIo,
    };
    let sid: Arc<str> = Arc::from(random_token(20));
    let (incoming, mut packets) = mpsc::channel(INCOMING_QUEUE);
    let (outgoing, frames) = mpsc::channel(OUTGOING_QUEUE);
    let shared = Arc::new(Shared {
        frames: Mutex::new(frames),
        probing: AtomicBool::new(false),
        upgraded: AtomicBool::new(false),
        wake: Notify::new(),
    });
    state
        .polling
        .by_id
        .insert(sid.clone(), PollingSession { incoming, shared });

    let node = state.node.clone();
    let open = ws::open_packet(&node, &sid, &["websocket"]);
    let sessions = state.polling.clone();
    let session_id = sid.clone();
    state.spawn_session(async move {
        let reader = stream::poll_fn(move |cx| packets.poll_recv(cx));
        session::run(node, outgoing_sink(outgoing), reader, upgrade).await;
        sessions.by_id.remove(&session_id);
    });
    Ok(payload(open))
}

/// `GET` with a sid: the packets queued, or those that come within the ping interval.
pub(super) async fn poll(state: &HttpState, sid: &str) -> Result<Response, EngineError> {
    let session = state.polling.get(sid)?;
    let shared = &session.shared;
    if shared.upgraded.load(Ordering::Acquire) {
        return Err(EngineError::BadRequest);
    }
    let Ok(mut frames) = shared.frames.try_lock() else {
        // The protocol's rule: a second concurrent poll is a broken client, closed.
        let _ = session.incoming.try_send(Err(TransportError {
            close: Some(herald_protocol::CloseCode::BadRequest),
            message: "overlapping polls".into(),
        }));
        return Err(EngineError::BadRequest);
    };
    let mut woken = pin!(shared.wake.notified());
    woken.as_mut().enable();
    let wait = state.node.config().limits.ping_interval;
    let first = if shared.probing.load(Ordering::Acquire) || shared.upgraded.load(Ordering::Acquire)
    {
        match frames.try_recv() {
            Ok(frame) => Some(frame),
            Err(mpsc::error::TryRecvError::Empty) => return Ok(payload(NOOP)),
            Err(mpsc::error::TryRecvError::Disconnected) => None,
        }
    } else {
        tokio::select! {
            biased;
            frame = frames.recv() => frame,
            () = woken => return Ok(payload(NOOP)),
            () = tokio::time::sleep(wait) => return Ok(payload(NOOP)),
        }
    };
    let mut body = BytesMut::new();
    let mut next = first;
    loop {
        let closed = match next {
            // The session is over; its close was the last frame, or it ended without one.
            None => true,
            Some(frame) => append(&mut body, frame),
        };
        if closed {
            if body.is_empty() {
                body.put_slice(CLOSE);
            }
            // The client has its close: the sid is unknown from now on (and the session,
            // waiting for a reply to its close, sees its incoming packets end).
            drop(frames);
            state.polling.by_id.remove(sid);
            break;
        }
        match frames.try_recv() {
            Ok(frame) => next = Some(frame),
            Err(mpsc::error::TryRecvError::Empty) => break,
            Err(mpsc::error::TryRecvError::Disconnected) => next = None,
        }
    }
    if body.is_empty() {
        body.put_slice(NOOP);
    }
    Ok(payload(body.freeze()))
}

/// Adds a frame's packet to a poll's payload; true after the close.
fn append(body: &mut BytesMut, frame: ServerFrame) -> bool {
    let packet: &[u8] = match &frame {
        ServerFrame::Text(text) => text,
        ServerFrame::Ping => herald_protocol::socketio::PING,
        // After the disconnect push of a reconnect-now close, which is the same packet.
        ServerFrame::Close { .. } if body.ends_with(CLOSE) && !body.ends_with(b"41") => {
            return true;
        }
        ServerFrame::Close { .. } => CLOSE,
        // A Socket.IO session sends text only, and no WebSocket-level frames.
        ServerFrame::Binary(_) | ServerFrame::Pong(_) | ServerFrame::Framed(_) => return false,
    };
    if !body.is_empty() {
        body.put_u8(SEPARATOR);
    }
    body.put_slice(packet);
    matches!(frame, ServerFrame::Close { .. })
}

/// `POST` with a sid: the client's packets, answered `ok`.
pub(super) async fn post(
    state: &HttpState,
    sid: &str,
    body: axum::body::Body,
) -> Result<Response, EngineError> {
    let session = state.polling.get(sid)?;
    // The `open` packet's maxPayload: the client never batches more in one request.
    let max = state.node.config().limits.max_message_bytes;
    let body = match read_body(state, body, max).await {
        Ok(body) => body,
        Err(refused) => return Ok(refused),
    };
    for packet in body.split(|byte| *byte == SEPARATOR) {
        let packet = ClientFrame::Text(body.slice_ref(packet));
        if session.incoming.send(Ok(packet)).await.is_err() {
            return Err(EngineError::SessionIdUnknown);
        }
    }
    Ok(([(header::CONTENT_TYPE, "text/html")], "ok").into_response())
}

fn payload(body: impl Into<Bytes>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=UTF-8")],
        body.into(),
    )
        .into_response()
}

/// A WebSocket to `/socket.io/?transport=websocket&sid=…`: the probe, then the switch.
pub(super) fn upgrade(
    state: &HttpState,
    sid: &str,
    request: axum::extract::Request,
) -> Result<Response, EngineError> {
    let session = state.polling.get(sid)?;
    if session.shared.upgraded.load(Ordering::Acquire) {
        return Err(EngineError::BadRequest);
    }
    let (mut parts, _) = request.into_parts();
    let accept = match ws::accept_key(&parts.headers) {
        Ok(accept) => accept,
        Err(refusal) => return Ok(refusal.into_response()),
    };
    let Some(on_upgrade) = parts.extensions.remove::<hyper::upgrade::OnUpgrade>() else {
        return Ok(ws::HandshakeRefusal::NotUpgradable.into_response());
    };
    let node = state.node.clone();
    state.spawn_session(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let probe_wait = node.config().limits.pong_timeout;
        match ws::split(upgraded, ws::socket_config(&node.config().limits)).await {
            ws::Socket::Tcp(sink, stream, _) => switch(sink, stream, session, probe_wait).await,
            ws::Socket::Other(sink, stream) => switch(sink, stream, session, probe_wait).await,
        }
    });
    Ok(ws::switching_protocols(accept, None))
}

/// Probes, and once the client says `5`, carries the session over the WebSocket.
async fn switch(
    mut sink: impl Outgoing,
    mut stream: impl Incoming,
    session: PollingSession,
    probe_wait: std::time::Duration,
) {
    let probed = tokio::time::timeout(probe_wait, async {
        if !next_text_is(&mut stream, b"2probe").await {
            return false;
        }
        let answer = ServerFrame::Text(Bytes::from_static(b"3probe"));
        if sink.send(answer).await.is_err() {
            return false;
        }
        session.shared.set(&session.shared.probing);
        next_text_is(&mut stream, b"5").await
    })
    .await;
    if probed != Ok(true) {
        // Polling goes on as before.
        session.shared.probing.store(false, Ordering::Release);
        return;
    }
    session.shared.set(&session.shared.upgraded);
    // Waits for a pending poll to answer its noop; then no poll ever takes a frame again.
    let mut frames = session.shared.frames.lock().await;
    let outgoing = async {
        while let Some(frame) = frames.recv().await {
            let last = matches!(frame, ServerFrame::Close { .. });
            if sink.send(frame).await.is_err() || last {
                break;
            }
        }
        let _ = sink.close().await;
    };
    let incoming = async {
        while let Some(frame) = stream.next().await {
            let gone = frame.is_err();
            if session.incoming.send(frame).await.is_err() || gone {
                return;
            }
        }
        let _ = session
            .incoming
            .send(Err(TransportError::gone("WebSocket closed")))
            .await;
    };
    let mut outgoing = pin!(outgoing);
    tokio::select! {
        () = &mut outgoing => return,
        () = incoming => {}
    }
    // The session ends, its writer closes: until then, what it sends still goes out.
    outgoing.await;
}

/// Whether the next text frame (skipping WebSocket pings) is `expected`.
async fn next_text_is(
    stream: &mut (impl Stream<Item = Result<ClientFrame, TransportError>> + Unpin),
    expected: &[u8],
) -> bool {
    loop {
        match stream.next().await {
            Some(Ok(ClientFrame::Text(text))) => return &text[..] == expected,
            Some(Ok(ClientFrame::Ping(_) | ClientFrame::Pong)) => continue,
            _ => return false,
        }
    }
}
