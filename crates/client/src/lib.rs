//! Async Rust client of the Herald client protocol v1, used by the integration tests and the
//! load generator. JSON (`herald.v1.json`) by default; the binary subprotocol
//! (`herald.v1.proto`) with [`ConnectOptions::binary`]: the client then speaks whichever the
//! server selected.
//!
//! Shape: [`Client::open`] upgrades the WebSocket and hands the socket to one background
//! task, which owns it. The task writes the frames the [`Client`] queues on a channel, reads
//! server frames (unless [paused](Client::pause_reading)), splits them into messages, routes each
//! reply by id to the request waiting for it and queues pushes for [`Client::next_push`].
//! Each request registers a oneshot under a fresh id before its command is queued. When the
//! connection ends, the task records the close frame (see [`Client::closed`]) and fails
//! every pending request with [`ClientError::Closed`]. WebSocket pings are answered by
//! tungstenite while the task reads.

mod error;
mod wire;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::de::DeserializeOwned;
use serde_json::Value;
use serde_json::value::RawValue;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};

pub use error::{ClientError, CloseInfo};
pub use herald_protocol::command::StreamPosition;
pub use herald_protocol::reply::{
    ConnectResult, ErrorBody, HistoryResult, PingResult, PresenceDiff, PresenceMember,
    PresenceResult, PresenceStatsResult, PublishResult, Push, ReceivedPublication, RefreshResult,
    StatePush, SubscribeResult, TypingPush,
};

use herald_protocol::Codec;
use wire::{Incoming, decode_binary_frame, decode_frame, encode_message, object};

type Reply = Result<Box<RawValue>, ClientError>;

/// How to open a connection.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// `ws://host:port/ws`; may carry `?token=`.
    pub url: String,
    /// Extra upgrade request headers: `Origin`, `Authorization`, `Cookie`...
    pub headers: Vec<(String, String)>,
    /// Offered in `Sec-WebSocket-Protocol`; empty sends no such header.
    pub subprotocols: Vec<String>,
    /// How long a request waits for its reply.
    pub request_timeout: Duration,
}

impl ConnectOptions {
    /// Options for `url` with the JSON subprotocol and a 10 s request timeout.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            headers: Vec::new(),
            subprotocols: vec![herald_protocol::SUBPROTOCOL_JSON.to_owned()],
            request_timeout: Duration::from_secs(10),
        }
    }

    /// Offers the binary subprotocol `herald.v1.proto` instead of JSON.
    pub fn binary(mut self) -> Self {
        self.subprotocols = vec![herald_protocol::SUBPROTOCOL_PROTO.to_owned()];
        self
    }

    /// Adds an upgrade request header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// State shared by the [`Client`] and its socket task.
struct Shared {
    /// Requests waiting for their reply, by id; `None` once the connection has ended.
    pending: Mutex<Option<HashMap<u64, oneshot::Sender<Reply>>>>,
    /// `Some(close frame)` once the connection has ended.
    closed: watch::Sender<Option<Option<CloseInfo>>>,
    /// Whether reading is paused.
    paused: watch::Sender<bool>,
}

impl Shared {
    fn pending(&self) -> MutexGuard<'_, Option<HashMap<u64, oneshot::Sender<Reply>>>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn close_info(&self) -> Option<CloseInfo> {
        self.closed.borrow().clone().flatten()
    }

    /// Records the end of the connection (once) and fails every pending request.
    fn finish(&self, info: Option<CloseInfo>) {
        self.closed
            .send_if_modified(|state| state.is_none() && state.replace(info).is_none());
        let pending = self.pending().take();
        for (_, waiter) in pending.into_iter().flatten() {
            let _ = waiter.send(Err(ClientError::Closed(self.close_info())));
        }
    }
}

/// Removes a pending request when its call ends, however it ends.
struct PendingGuard<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        if let Some(pending) = self.shared.pending().as_mut() {
            pending.remove(&self.id);
        }
    }
}

/// One Herald connection. `Send + Sync`: share it behind an `Arc` to run requests
/// concurrently. Dropping it closes the connection (code 1000) in the background.
pub struct Client {
    shared: Arc<Shared>,
    outgoing: mpsc::UnboundedSender<Message>,
    pushes: tokio::sync::Mutex<mpsc::UnboundedReceiver<Push>>,
    next_id: AtomicU64,
    request_timeout: Duration,
    subprotocol: Option<String>,
    codec: Codec,
    task: JoinHandle<()>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("subprotocol", &self.subprotocol)
            .field("closed", &*self.shared.closed.borrow())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Upgrades to a WebSocket only; sends no `connect` command (see [`Client::handshake`]).
    pub async fn open(options: ConnectOptions) -> Result<Client, ClientError> {
        let request = upgrade_request(&options)?;
        let (socket, response) =
            tokio_tungstenite::connect_async_with_config(request, Some(socket_config()), true)
                .await?;
        Ok(Self::start(socket, &response, &options))
    }

    /// [`Client::open`] over a stream the caller connected, such as a TLS stream with its
    /// own trust roots (`wss://` URL); the URL's host goes in the upgrade request only.
    pub async fn open_over<S>(options: ConnectOptions, stream: S) -> Result<Client, ClientError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let request = upgrade_request(&options)?;
        let (socket, response) =
            tokio_tungstenite::client_async_with_config(request, stream, Some(socket_config()))
                .await?;
        Ok(Self::start(socket, &response, &options))
    }

    fn start<S>(
        socket: WebSocketStream<S>,
        response: &tungstenite::handshake::client::Response,
        options: &ConnectOptions,
    ) -> Client
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let subprotocol = response
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let codec = Codec::negotiated(subprotocol.as_deref());

        let shared = Arc::new(Shared {
            pending: Mutex::new(Some(HashMap::new())),
            closed: watch::Sender::new(None),
            paused: watch::Sender::new(false),
        });
        let (outgoing, outgoing_rx) = mpsc::unbounded_channel();
        let (push_tx, pushes) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(
            socket,
            shared.clone(),
            outgoing_rx,
            push_tx,
            options.request_timeout,
        ));
        Client {
            shared,
            outgoing,
            pushes: tokio::sync::Mutex::new(pushes),
            next_id: AtomicU64::new(1),
            request_timeout: options.request_timeout,
            subprotocol,
            codec,
            task,
        }
    }

    /// Opens a connection to `url` and sends `connect` with `token`; returns after the
    /// connect result.
    pub async fn connect(url: &str, token: &str) -> Result<(Client, ConnectResult), ClientError> {
        let client = Self::open(ConnectOptions::new(url)).await?;
        let result = client.handshake(Some(token)).await?;
        Ok((client, result))
    }

    /// The codec in use: that of the subprotocol the server selected.
    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// The subprotocol the server selected, if any.
    pub fn subprotocol(&self) -> Option<&str> {
        self.subprotocol.as_deref()
    }

    /// Sends `connect` (with the token, if any, and this client's name and version).
    pub async fn handshake(&self, token: Option<&str>) -> Result<ConnectResult, ClientError> {
        let params = object([
            ("token", token.map(Value::from)),
            ("name", Some("herald-rust".into())),
            ("version", Some(env!("CARGO_PKG_VERSION").into())),
        ]);
        self.call("connect", params).await
    }

    /// Subscribes to `channel`.
    pub async fn subscribe(
        &self,
        channel: &str,
    ) -> Result<SubscribeResult<ReceivedPublication>, ClientError> {
        self.subscribe_with(channel, None, None).await
    }

    /// Subscribes to `channel` with a subscription token and/or a position to recover from.
    pub async fn subscribe_with(
        &self,
        channel: &str,
        token: Option<&str>,
        recover: Option<StreamPosition>,
    ) -> Result<SubscribeResult<ReceivedPublication>, ClientError> {
        let recover = recover.map(|p| serde_json::json!({ "offset": p.offset, "epoch": p.epoch }));
        let params = object([
            ("channel", Some(channel.into())),
            ("token", token.map(Value::from)),
            ("recover", recover),
        ]);
        self.call("subscribe", params).await
    }

    /// Unsubscribes from `channel`.
    pub async fn unsubscribe(&self, channel: &str) -> Result<(), ClientError> {
        self.request("unsubscribe", object([("channel", Some(channel.into()))]))
            .await
            .map(drop)
    }

    /// Publishes `data` as `event` on `channel`.
    pub async fn publish(
        &self,
        channel: &str,
        event: &str,
        data: Value,
    ) -> Result<PublishResult, ClientError> {
        let params = object([
            ("channel", Some(channel.into())),
            ("event", Some(event.into())),
            ("data", Some(data)),
        ]);
        self.call("publish", params).await
    }

    /// Reads one page of `channel`'s history: publications after `since_offset` (default 0),
    /// oldest first, at most `limit` and the server's reply byte budget; `more` says to ask
    /// again from the last offset received.
    pub async fn history(
        &self,
        channel: &str,
        limit: Option<u32>,
        since_offset: Option<u64>,
    ) -> Result<HistoryResult<ReceivedPublication>, ClientError> {
        let params = object([
            ("channel", Some(channel.into())),
            ("limit", limit.map(Value::from)),
            ("sinceOffset", since_offset.map(Value::from)),
        ]);
        self.call("history", params).await
    }

    /// Replaces the connection token.
    pub async fn refresh(&self, token: &str) -> Result<RefreshResult, ClientError> {
        self.call("refresh", object([("token", Some(token.into()))]))
            .await
    }

    /// Replaces the subscription token of `channel` (subscribed with one), moving the
    /// subscription's end to the new token's expiry.
    pub async fn sub_refresh(
        &self,
        channel: &str,
        token: &str,
    ) -> Result<RefreshResult, ClientError> {
        let params = object([
            ("channel", Some(channel.into())),
            ("token", Some(token.into())),
        ]);
        self.call("subRefresh", params).await
    }

    /// Who is in `channel` (the connection must be subscribed): every page of it.
    pub async fn presence(&self, channel: &str) -> Result<PresenceResult, ClientError> {
        let mut all = self.presence_page(channel, None).await?;
        while all.more {
            let Some(cursor) = all.cursor.take() else {
                break;
            };
            let page = self.presence_page(channel, Some(&cursor)).await?;
            all.members.extend(page.members);
            all.more = page.more;
            all.cursor = page.cursor;
        }
        Ok(all)
    }

    /// One page of `channel`'s presence, from the start or after a previous page's `cursor`.
    pub async fn presence_page(
        &self,
        channel: &str,
        cursor: Option<&str>,
    ) -> Result<PresenceResult, ClientError> {
        let params = object([
            ("channel", Some(channel.into())),
            ("cursor", cursor.map(Value::from)),
        ]);
        self.call("presence", params).await
    }

    /// How many users and connections are in `channel`.
    pub async fn presence_stats(&self, channel: &str) -> Result<PresenceStatsResult, ClientError> {
        self.call("presenceStats", object([("channel", Some(channel.into()))]))
            .await
    }

    /// Sets the user's status (`online`, `away`, `busy`) in their orgs.
    pub async fn set_status(&self, status: &str) -> Result<(), ClientError> {
        self.request("setStatus", object([("status", Some(status.into()))]))
            .await
            .map(drop)
    }

    /// Starts (`active`) or stops typing in `channel`.
    pub async fn typing(&self, channel: &str, active: bool) -> Result<(), ClientError> {
        let params = object([
            ("channel", Some(channel.into())),
            ("active", Some(active.into())),
        ]);
        self.request("typing", params).await.map(drop)
    }

    /// Sets the presence state of this connection's membership of `channel`; `null` clears
    /// it.
    pub async fn set_presence_state(&self, channel: &str, state: Value) -> Result<(), ClientError> {
        let params = object([("channel", Some(channel.into())), ("state", Some(state))]);
        self.request("setPresenceState", params).await.map(drop)
    }

    /// Calls `method` of the app's backend with `data` and returns the `data` it answered
    /// (`null` when none); the backend's own refusals are [`ClientError::Server`] errors with
    /// its code (at least 1000).
    pub async fn rpc(&self, method: &str, data: Value) -> Result<Value, ClientError> {
        #[derive(serde::Deserialize)]
        struct RpcResult {
            data: Value,
        }
        let params = object([("method", Some(method.into())), ("data", Some(data))]);
        let result: RpcResult = self.call("rpc", params).await?;
        Ok(result.data)
    }

    /// Sends the `ping` command (not a WebSocket ping).
    pub async fn ping(&self) -> Result<PingResult, ClientError> {
        self.call("ping", Value::Object(Default::default())).await
    }

    /// Sends any method with any params and returns the raw result. For tests of odd input.
    pub async fn request(&self, method: &str, params: Value) -> Result<Box<RawValue>, ClientError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (waiter, reply) = oneshot::channel();
        match self.shared.pending().as_mut() {
            Some(pending) => pending.insert(id, waiter),
            None => return Err(ClientError::Closed(self.shared.close_info())),
        };
        let _guard = PendingGuard {
            shared: &self.shared,
            id,
        };
        self.send(encode_message(self.codec, id, method, &params)?)?;
        match tokio::time::timeout(self.request_timeout, reply).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => Err(ClientError::Closed(self.shared.close_info())),
            Err(_) => Err(ClientError::Timeout),
        }
    }

    /// Sends a text frame as is (for tests of garbage input).
    pub async fn send_text(&self, text: impl Into<String>) -> Result<(), ClientError> {
        self.send(Message::text(text.into()))
    }

    /// Sends a binary frame as is.
    pub async fn send_binary(&self, data: Vec<u8>) -> Result<(), ClientError> {
        self.send(Message::binary(data))
    }

    /// The next push (publication, unsubscribe, disconnect) in arrival order; `None` once
    /// the connection has ended and every push has been taken.
    pub async fn next_push(&self) -> Option<Push> {
        self.pushes.lock().await.recv().await
    }

    /// Waits until the connection ends; returns its close frame (`None` if it ended
    /// without one).
    pub async fn closed(&self) -> Option<CloseInfo> {
        let mut closed = self.shared.closed.subscribe();
        match closed.wait_for(Option::is_some).await {
            Ok(state) => state.clone().flatten(),
            Err(_) => None,
        }
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.borrow().is_some()
    }

    /// Stops reading from the socket, to play a slow consumer or a client that does not
    /// answer pings: while paused nothing is read, so no pongs are sent and replies wait.
    pub fn pause_reading(&self) {
        self.shared.paused.send_replace(true);
    }

    /// Resumes reading from the socket.
    pub fn resume_reading(&self) {
        self.shared.paused.send_replace(false);
    }

    /// Sends a normal close (1000) and waits for the connection to end.
    pub async fn close(self) -> Result<(), ClientError> {
        self.resume_reading();
        let frame = CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        };
        let _ = self.outgoing.send(Message::Close(Some(frame)));
        let mut task = self.task;
        // The task itself gives up `request_timeout` after the close; this is a backstop.
        if tokio::time::timeout(self.request_timeout * 2, &mut task)
            .await
            .is_err()
        {
            task.abort();
            return Err(ClientError::Timeout);
        }
        Ok(())
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        params: Value,
    ) -> Result<T, ClientError> {
        let raw = self.request(method, params).await?;
        serde_json::from_str(raw.get())
            .map_err(|e| ClientError::Decode(format!("{method} result: {e}")))
    }

    fn send(&self, message: Message) -> Result<(), ClientError> {
        self.outgoing
            .send(message)
            .map_err(|_| ClientError::Closed(self.shared.close_info()))
    }
}

/// The upgrade request for `options`: URL, extra headers, subprotocols.
fn upgrade_request(
    options: &ConnectOptions,
) -> Result<tungstenite::handshake::client::Request, ClientError> {
    let mut request = options.url.as_str().into_client_request()?;
    let headers = request.headers_mut();
    for (name, value) in &options.headers {
        let value = HeaderValue::from_str(value).map_err(tungstenite::Error::from)?;
        headers.append(
            HeaderName::from_bytes(name.as_bytes()).map_err(tungstenite::Error::from)?,
            value,
        );
    }
    if !options.subprotocols.is_empty() {
        let value = HeaderValue::from_str(&options.subprotocols.join(", "))
            .map_err(tungstenite::Error::from)?;
        headers.insert("sec-websocket-protocol", value);
    }
    Ok(request)
}

/// tungstenite's default read buffer is 128 KiB, zero-filled on every read: far too much
/// for many small-message connections (the load generator opens thousands).
fn socket_config() -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default().read_buffer_size(4096)
}

/// The socket task: writes queued frames, reads and routes server frames until the
/// connection ends. After a close frame is sent or received (or the [`Client`] is
/// dropped), it waits at most `grace` for the connection to end.
async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    mut socket: WebSocketStream<S>,
    shared: Arc<Shared>,
    mut outgoing: mpsc::UnboundedReceiver<Message>,
    push_tx: mpsc::UnboundedSender<Push>,
    grace: Duration,
) {
    let mut paused = shared.paused.subscribe();
    let mut push_tx = Some(push_tx);
    let mut close_info = None;
    let mut client_dropped = false;
    let mut deadline: Option<Instant> = None;
    loop {
        let reading = !*paused.borrow_and_update() || client_dropped;
        tokio::select! {
            message = outgoing.recv(), if !client_dropped => {
                let message = message.unwrap_or_else(|| {
                    client_dropped = true;
                    Message::Close(Some(CloseFrame { code: CloseCode::Normal, reason: "".into() }))
                });
                if matches!(message, Message::Close(_)) {
                    deadline.get_or_insert_with(|| Instant::now() + grace);
                }
                if let Err(error) = socket.send(message).await {
                    tracing::debug!(%error, "websocket write failed");
                    break;
                }
            }
            frame = socket.next(), if reading => match frame {
                Some(Ok(Message::Text(text))) => route(&shared, push_tx.as_ref(), decode_frame(&text)),
                Some(Ok(Message::Binary(data))) => route(&shared, push_tx.as_ref(), decode_binary_frame(&data)),
                Some(Ok(Message::Close(frame))) => {
                    close_info = frame.map(|f| CloseInfo { code: f.code.into(), reason: f.reason.to_string() });
                    shared.finish(close_info.clone());
                    push_tx = None;
                    deadline.get_or_insert_with(|| Instant::now() + grace);
                }
                Some(Ok(_)) => {} // ping/pong: tungstenite answers pings itself
                Some(Err(error)) => {
                    tracing::debug!(%error, "websocket read failed");
                    break;
                }
                None => break,
            },
            changed = paused.changed() => {
                if changed.is_err() {
                    break; // unreachable: `shared` keeps the sender alive
                }
            }
            () = sleep_until(deadline) => {
                tracing::debug!("connection did not end after close; dropping it");
                break;
            }
        }
    }
    shared.finish(close_info);
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

fn route(
    shared: &Shared,
    push_tx: Option<&mpsc::UnboundedSender<Push>>,
    messages: impl Iterator<Item = Result<Incoming, String>>,
) {
    for message in messages {
        match message {
            Ok(Incoming::Push(push)) => {
                if let Some(push_tx) = push_tx {
                    let _ = push_tx.send(*push);
                }
            }
            Ok(Incoming::Reply(id, reply)) => {
                let waiter = shared
                    .pending()
                    .as_mut()
                    .and_then(|pending| pending.remove(&id));
                match waiter {
                    Some(waiter) => {
                        let _ = waiter.send(reply);
                    }
                    None => tracing::debug!(id, ?reply, "reply to no pending request"),
                }
            }
            Err(error) => tracing::warn!(%error, "undecodable server message"),
        }
    }
}

#[cfg(test)]
mod tests;
