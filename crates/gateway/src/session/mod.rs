//! One client connection, over a WebSocket or the SSE fallback: the handshake (`connect` within the connect timeout), then a
//! reader loop that checks limits and hands each command to its own module in
//! `commands/`, while a separate writer task drains the connection's queue.

pub(crate) mod commands;
pub mod frame;
mod rate_limit;
mod writer;

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::{FutureExt, Sink, Stream, StreamExt};
use herald_protocol::codec::Control;
use herald_protocol::codes::unsubscribe_code;
use herald_protocol::command::{ConnectRequest, Resume, StreamPosition};
use herald_protocol::reply::ConnectResult;
use herald_protocol::{CloseCode, Codec, Command, ErrorCode, Method, socketio};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use crate::connections::{Connection, Ending, Outbox, Registration};
pub use crate::error::Failure;
use crate::metrics;
use crate::node::Node;
use crate::server_subscriptions;
use crate::socketio_recovery;
use crate::wire::DirectSocket;
use frame::{ClientFrame, ServerFrame, TransportError};
use rate_limit::{RateLimiter, Verdict};

/// How long to wait for a client's reply to our close frame.
const CLOSE_REPLY_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Coalesced frames stop growing past this: it bounds the batch a writer builds (and
/// releases once written), and big channels' presence diffs are cut to it.
const COALESCE_BYTES: usize = 16 * 1024;

/// The largest frame a writer coalesces messages into, lower with a lower message limit.
pub(crate) fn frame_cap(limits: &crate::config::Limits) -> usize {
    COALESCE_BYTES.min(limits.max_message_bytes)
}

/// What the transport holds for a connection until its handshake ends (the HTTP port's
/// pending budget), released by dropping it: opaque here, so sessions do not depend on the
/// transport that built them.
pub struct HandshakeSlot {
    _held: Box<dyn Send + Sync>,
}

impl HandshakeSlot {
    pub fn new(held: impl Send + Sync + 'static) -> Self {
        Self {
            _held: Box::new(held),
        }
    }
}

/// What the upgrade request carried.
pub struct Upgrade {
    /// A token from `Authorization: Bearer`, `?token=` or the `herald_token` cookie.
    pub token: Option<String>,
    /// The connection's slot in the pending budget, released when the handshake ends.
    pub pending: Option<HandshakeSlot>,
    /// The node's connection limit: a successful `connect` takes a permit, held while the
    /// connection lives.
    pub permits: Option<Arc<Semaphore>>,
    /// A plain TCP WebSocket's socket, which the fan-out may write to directly.
    pub direct: Option<DirectSocket>,
    /// The codec of the negotiated subprotocol.
    pub codec: Codec,
}

/// How a command answered.
pub enum Answer {
    /// Send this result.
    Result(bytes::Bytes),
    /// The command queued its own reply (subscribe, to order it before live pushes).
    Sent,
}

/// What a session reads: the client's frames.
pub trait Incoming: Stream<Item = Result<ClientFrame, TransportError>> + Unpin + Send {}
impl<T: Stream<Item = Result<ClientFrame, TransportError>> + Unpin + Send> Incoming for T {}

/// Where a session's writer sends frames, pings and the close.
pub trait Outgoing: Sink<ServerFrame, Error = TransportError> + Unpin + Send + 'static {}
impl<T: Sink<ServerFrame, Error = TransportError> + Unpin + Send + 'static> Outgoing for T {}

/// Runs a connection, over any transport, from its upgrade to its close.
pub async fn run(
    node: Arc<Node>,
    sink: impl Outgoing,
    mut stream: impl Incoming,
    mut upgrade: Upgrade,
) {
    let limits = &node.config().limits;
    let codec = upgrade.codec;
    let outbox = Arc::new(Outbox::new(
        limits.client_queue_bytes,
        upgrade.direct.take(),
    ));
    let frame_cap = frame_cap(limits);
    let mut writer = tokio::spawn(writer::run(sink, outbox.clone(), codec, frame_cap));
    // Boxed: the handshake's timer and selects would otherwise stay part of every idle
    // session's task.
    let handshake = Box::pin(authenticate(
        &node,
        &mut stream,
        &outbox,
        upgrade,
        &mut writer,
    ))
    .await;
    let mut permit = None;
    if let Some((registration, limiter, rest, node_permit, opening)) = handshake {
        permit = node_permit;
        let mut session = Session {
            node: node.clone(),
            registration,
            limiter,
            rpc: commands::RpcBudget::default(),
        };
        // Boxed: presence's state and broker futures, and `opening`, would otherwise size
        // every idle session's task for this one call.
        let connection = &session.registration.connection;
        Box::pin(open(&node, connection, opening, &mut session.limiter)).await;
        // Commands that came in the same frame as `connect`.
        for command in rest {
            Box::pin(session.handle(command)).await;
        }
        session.read(&mut stream, &mut writer).await;
        Box::pin(session.cleanup()).await;
    }
    drop(permit);
    outbox.finish();
    // The selects above may have already polled the writer to completion; a JoinHandle
    // must not be awaited again after that.
    if !writer.is_finished() {
        let _ = writer.await;
    }
    if outbox.is_closing() {
        Box::pin(await_close_reply(&mut stream)).await;
    }
}

/// Sets a new connection up: its user's status, then its server-side subscriptions (or the
/// Socket.IO session it resumes), before the commands that followed `connect` (one that
/// unsubscribes from a restored subscription finds it there).
async fn open(
    node: &Arc<Node>,
    connection: &Arc<Connection>,
    opening: Option<Box<Opening>>,
    limiter: &mut RateLimiter,
) {
    node.presence().opened(connection).await;
    match opening.map(|opening| *opening) {
        Some(Opening::Resume(resume)) => {
            let take_token = || limiter.check() == Verdict::Allow;
            socketio_recovery::resume(node, connection, resume, take_token).await;
        }
        Some(Opening::Subs(subs)) => server_subscriptions::restore(node, connection, subs).await,
        None => server_subscriptions::restore(node, connection, Positions::new()).await,
    }
}

/// The handshake, bounded by the connect timeout and the drain: the registered connection,
/// or `None` after closing it (or when the writer stopped).
async fn authenticate(
    node: &Arc<Node>,
    stream: &mut impl Incoming,
    outbox: &Arc<Outbox>,
    upgrade: Upgrade,
    writer: &mut JoinHandle<()>,
) -> Option<Handshake> {
    let Upgrade {
        token,
        pending,
        permits,
        codec,
        ..
    } = upgrade;
    let connect_timeout = tokio::time::sleep(node.config().limits.connect_timeout);
    let handshake = tokio::select! {
        result = handshake(node, stream, outbox, codec, token, permits.as_ref()) => result,
        () = connect_timeout => {
            outbox.close(CloseCode::Unauthorized);
            None
        }
        () = node.draining() => {
            outbox.close(CloseCode::Shutdown);
            None
        }
        _ = writer => None,
    };
    // Authenticated, or on its way out: no longer pending either way.
    drop(pending);
    // The drain closes the connections registered when it starts; one whose handshake
    // completes after that (or in the same instant) is closed here, at once, the same way.
    handshake.filter(|_| {
        let draining = node.is_draining();
        if draining {
            outbox.close(CloseCode::Shutdown);
        }
        !draining
    })
}

/// After sending a close frame, reads (and discards) until the client's close reply, for a
/// short while. Dropping a socket with unread input makes the kernel send a reset, which
/// can destroy our close frame before the client reads it.
pub(crate) async fn await_close_reply(stream: &mut impl Incoming) {
    let drain = async {
        while let Some(Ok(frame)) = stream.next().await {
            if matches!(frame, ClientFrame::Close) {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(CLOSE_REPLY_WAIT, drain).await;
}

/// Commands of one frame, as parsed.
type Commands = Vec<Result<Command, herald_protocol::CommandError>>;

/// A completed handshake: the registration, the session's rate limiter, the commands that
/// followed `connect` in its frame, the node connection-limit permit, and what opening the
/// session takes besides the usual.
type Handshake = (
    Registration,
    RateLimiter,
    Commands,
    Option<OwnedSemaphorePermit>,
    // Boxed (and absent when there is nothing, as mostly): the handshake's result stays
    // part of every idle session's task.
    Option<Box<Opening>>,
);

/// `connect.subs`: the positions of the server-side subscriptions a client holds.
type Positions = HashMap<String, StreamPosition>;

/// What a `connect` asked of the session's opening.
enum Opening {
    /// Recover the server-side subscriptions from these positions.
    Subs(Positions),
    /// A Socket.IO session to resume; its CONNECT is answered once it is known whether it
    /// recovered.
    Resume(Box<Resume>),
}

/// Reads until a valid `connect`. Returns the registered connection and the commands that
/// followed `connect` in its frame, or `None` after closing it.
async fn handshake(
    node: &Arc<Node>,
    stream: &mut impl Incoming,
    outbox: &Arc<Outbox>,
    codec: Codec,
    upgrade_token: Option<String>,
    permits: Option<&Arc<Semaphore>>,
) -> Option<Handshake> {
    let mut limiter = RateLimiter::per_minute(node.config().limits.commands_per_minute);
    loop {
        let commands = read_commands(node, stream, outbox, codec, None).await?;
        // A frame without commands (blank lines, a ping) costs a token too.
        if commands.is_empty() && limiter.check() != Verdict::Allow {
            outbox.close(CloseCode::TooManyRequests);
            return None;
        }
        let mut commands = commands.into_iter();
        while let Some(command) = commands.next() {
            // Before parsing errors: an invalid line costs a token like any command.
            if limiter.check() != Verdict::Allow {
                let id = match &command {
                    Ok(command) => command.id,
                    Err(error) => error.id,
                };
                let failure = Failure::code(ErrorCode::TooManyRequests);
                refuse(outbox, codec, id, failure, CloseCode::TooManyRequests);
                return None;
            }
            let command = match command {
                Ok(command) => command,
                Err(error) => {
                    outbox.send(codec.error(error.id, error.code, &error.message));
                    continue;
                }
            };
            let Method::Connect(mut request) = command.method else {
                count_command(command.method.name(), Err(ErrorCode::Unauthorized));
                let failure = Failure::new(ErrorCode::Unauthorized, "connect first");
                refuse(outbox, codec, command.id, failure, CloseCode::Unauthorized);
                return None;
            };
            let subs = std::mem::take(&mut request.subs);
            let resume = request.resume.take();
            return match connect(node, outbox, codec, request, upgrade_token, permits) {
                Ok((registration, result, permit)) => {
                    count_command("connect", Ok(()));
                    let opening = match (codec, resume) {
                        (Codec::SocketIo, Some(resume)) => Some(Opening::Resume(resume)),
                        (Codec::SocketIo, None) => {
                            let pid = node.recovery_key().issue(&result.user);
                            outbox.send(socketio::encode_connected(&result.client, &pid));
                            None
                        }
                        _ => {
                            outbox.send(codec.result(command.id, &result));
                            (!subs.is_empty()).then_some(Opening::Subs(subs))
                        }
                    };
                    let opening = opening.map(Box::new);
                    Some((registration, limiter, commands.collect(), permit, opening))
                }
                Err((failure, close)) => {
                    count_command("connect", Err(failure.code));
                    refuse(outbox, codec, command.id, failure, close);
                    None
                }
            };
        }
    }
}

/// Answers a command with an error, then closes the connection.
fn refuse(outbox: &Outbox, codec: Codec, id: u64, failure: Failure, close: CloseCode) {
    outbox.send(codec.error(id, failure.code, &failure.message));
    outbox.close(close);
}

fn connect(
    node: &Arc<Node>,
    outbox: &Arc<Outbox>,
    codec: Codec,
    request: ConnectRequest,
    upgrade_token: Option<String>,
    permits: Option<&Arc<Semaphore>>,
) -> Result<(Registration, ConnectResult, Option<OwnedSemaphorePermit>), (Failure, CloseCode)> {
    let Some(token) = request.token.filter(|t| !t.is_empty()).or(upgrade_token) else {
        return Err((
            Failure::new(ErrorCode::Unauthorized, "no token"),
            CloseCode::Unauthorized,
        ));
    };
    let claims = node.auth().verify(&token).map_err(|error| {
        let failure = Failure::from(error);
        let close = failure.connect_close();
        (failure, close)
    })?;
    // Only now, with a valid token: sockets that never authenticate must not fill the node.
    let permit = match permits {
        None => None,
        Some(permits) => Some(permits.clone().try_acquire_owned().map_err(|_| {
            (
                Failure::new(
                    ErrorCode::LimitExceeded,
                    "too many connections on this node",
                ),
                CloseCode::ConnectionLimit,
            )
        })?),
    };
    let id: Arc<str> = Arc::from(crate::random::random_token(16));
    let expires = claims.exp;
    let user = claims.sub.to_string();
    let registration = node
        .connections()
        .register(id.clone(), Arc::new(claims), outbox.clone(), codec)
        .map_err(|error| {
            (
                Failure::new(ErrorCode::LimitExceeded, error.to_string()),
                CloseCode::ConnectionLimit,
            )
        })?;
    tracing::debug!(client = %id, %user, "connected");
    let result = ConnectResult {
        client: id.to_string(),
        user,
        node: node.id().to_string(),
        ping: node.config().limits.ping_interval.as_secs() as u32,
        expires,
    };
    Ok((registration, result, permit))
}

/// Reads the next data frame and parses its commands (none for a client ping). `None` when
/// the connection ended or was closed for a bad frame: one that does not parse, or a text
/// frame on the binary subprotocol or a binary one on JSON (4000).
async fn read_commands(
    node: &Node,
    stream: &mut impl Incoming,
    outbox: &Outbox,
    codec: Codec,
    connection: Option<&Connection>,
) -> Option<Commands> {
    loop {
        let frame = match stream.next().await {
            Some(Ok(frame)) => frame,
            Some(Err(error)) => {
                if let Some(code) = error.close {
                    outbox.close(code);
                }
                return None;
            }
            None => return None,
        };
        let binary = matches!(frame, ClientFrame::Binary(_));
        match frame {
            ClientFrame::Text(data) | ClientFrame::Binary(data) => {
                if binary != codec.is_binary() {
                    outbox.close(CloseCode::BadRequest);
                    return None;
                }
                match codec.control(&data) {
                    Some(Control::Pong) => {
                        if let Some(connection) = connection {
                            node.connections().pong(connection);
                        }
                        continue;
                    }
                    Some(Control::Close) => return None,
                    None => {}
                }
                if data.len() > node.config().limits.max_message_bytes {
                    outbox.close(CloseCode::MessageTooLarge);
                    return None;
                }
                match codec.parse_frame(&data) {
                    Ok(commands) => return Some(commands),
                    Err(_) => {
                        outbox.close(CloseCode::BadRequest);
                        return None;
                    }
                }
            }
            ClientFrame::Pong => {
                if let Some(connection) = connection {
                    node.connections().pong(connection);
                }
            }
            // It costs a rate-limit token like a command.
            ClientFrame::Ping(payload) => {
                outbox.pong(payload);
                return Some(Vec::new());
            }
            ClientFrame::Close => return None,
        }
    }
}

struct Session {
    node: Arc<Node>,
    registration: Registration,
    limiter: RateLimiter,
    rpc: commands::RpcBudget,
}

impl Session {
    fn connection(&self) -> &Arc<Connection> {
        &self.registration.connection
    }

    async fn read(&mut self, stream: &mut impl Incoming, writer: &mut JoinHandle<()>) {
        let node = self.node.clone();
        let connection = self.connection().clone();
        loop {
            let commands = tokio::select! {
                // Evictions first: a client told to resubscribe does so in its next command,
                // which must find the channel's presence already left.
                biased;
                () = connection.eviction() => {
                    // Boxed, as commands are: not part of every idle session.
                    Box::pin(self.leave_evicted()).await;
                    continue;
                }
                commands = read_commands(&node, stream, &connection.outbox, connection.codec, Some(&connection)) => commands,
                _ = &mut *writer => return,
            };
            let Some(commands) = commands else { return };
            // A frame without commands (blank lines, a ping) costs a token too: scanning it
            // is work, and a flood of them must end in 4100 like a flood of commands.
            if commands.is_empty() && self.limiter.check() == Verdict::Close {
                count_command("invalid", Err(ErrorCode::TooManyRequests));
                connection.close(CloseCode::TooManyRequests);
                return;
            }
            for command in commands {
                if connection.is_closing() {
                    return;
                }
                // Boxed so that command handling's state is not part of every idle session.
                Box::pin(self.handle(command)).await;
            }
        }
    }

    async fn handle(&mut self, command: Result<Command, herald_protocol::CommandError>) {
        let connection = self.connection().clone();
        // Every line counts, also one that is not a valid command: each costs a reply.
        let (id, method) = match &command {
            Ok(command) => (command.id, command.method.name()),
            Err(error) => (error.id, "invalid"),
        };
        match self.limiter.check() {
            Verdict::Allow => {}
            Verdict::Reject => {
                count_command(method, Err(ErrorCode::TooManyRequests));
                connection.send(connection.codec.error(
                    id,
                    ErrorCode::TooManyRequests,
                    "too many requests",
                ));
                return;
            }
            Verdict::Close => {
                count_command(method, Err(ErrorCode::TooManyRequests));
                connection.close(CloseCode::TooManyRequests);
                return;
            }
        }
        let command = match command {
            Ok(command) => command,
            Err(error) => {
                count_command("invalid", Err(error.code));
                connection.send(connection.codec.error(error.id, error.code, &error.message));
                return;
            }
        };
        // A panic in a command must not end the session's task: its cleanup would never run
        // and the connection would stay registered past its token's expiry.
        let dispatch = commands::dispatch(
            &self.node,
            &connection,
            &mut self.rpc,
            command.id,
            command.method,
        );
        let answer = match std::panic::AssertUnwindSafe(dispatch).catch_unwind().await {
            Ok(answer) => answer,
            Err(_) => {
                tracing::error!(client = %connection.id, method, "command panicked");
                Err(Failure::code(ErrorCode::Internal))
            }
        };
        match answer {
            Ok(Answer::Result(bytes)) => {
                count_command(method, Ok(()));
                connection.send(bytes);
            }
            Ok(Answer::Sent) => count_command(method, Ok(())),
            Err(failure) => {
                count_command(method, Err(failure.code));
                connection.send(
                    connection
                        .codec
                        .error(command.id, failure.code, &failure.message),
                );
            }
        }
    }

    /// Finishes subscriptions ended from outside: leaves the presence of channels the hub
    /// evicted this connection from, unless it subscribed again since; ends those whose
    /// subscription token expired, unless refreshed since.
    async fn leave_evicted(&self) {
        let node = &self.node;
        let connection = self.connection();
        for ending in connection.take_evicted() {
            match ending {
                Ending::Evicted(channel) => {
                    if !connection.is_subscribed(&channel) {
                        // A subscription token is presented again on resubscribe.
                        node.connections()
                            .subscription_tokens
                            .remove(&connection.id, &channel);
                        node.presence().left(&channel, connection).await;
                    }
                }
                Ending::TokenExpired(channel) => {
                    if node.connections().subscription_tokens.take_expired(
                        &connection.id,
                        &channel,
                        crate::clock::unix_seconds(),
                    ) {
                        commands::end_subscription(
                            node,
                            connection,
                            &channel,
                            unsubscribe_code::TOKEN_EXPIRED,
                        )
                        .await;
                    }
                }
            }
        }
    }

    /// Leaves every channel (and its presence), releases broker interest where this was
    /// the last subscriber, and stops counting towards the user's online status.
    async fn cleanup(&self) {
        let connection = self.connection();
        self.leave_evicted().await;
        for channel in connection.take_subscriptions() {
            metrics::gauge!(metrics::SUBSCRIPTIONS).decrement(1.0);
            self.node.remove_subscriber(&channel, &connection.id).await;
            self.node.presence().left(&channel, connection).await;
        }
        self.node.presence().closed(connection).await;
    }
}

fn count_command(method: &'static str, result: Result<(), ErrorCode>) {
    let result = match result {
        Ok(()) => "ok",
        Err(code) => error_label(code),
    };
    metrics::counter!(metrics::CLIENT_COMMANDS, "method" => method, "result" => result)
        .increment(1);
}

fn error_label(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::Internal => "internal",
        ErrorCode::Unauthorized => "unauthorized",
        ErrorCode::UnknownChannel => "unknown_channel",
        ErrorCode::PermissionDenied => "permission_denied",
        ErrorCode::MethodNotFound => "method_not_found",
        ErrorCode::AlreadySubscribed => "already_subscribed",
        ErrorCode::LimitExceeded => "limit_exceeded",
        ErrorCode::BadRequest => "bad_request",
        ErrorCode::NotAvailable => "not_available",
        ErrorCode::TokenExpired => "token_expired",
        ErrorCode::TooManyRequests => "too_many_requests",
        ErrorCode::Unavailable => "unavailable",
        ErrorCode::BackendUnavailable => "backend_unavailable",
        ErrorCode::BackendTimeout => "backend_timeout",
    }
}

/// What an idle connection's state weighs, in the parts the gateway allocates for it (the
/// README's breakdown of an idle connection's memory lists these). Run with `--nocapture`
/// to see them; the bounds catch a change that makes every idle connection bigger.
#[cfg(test)]
mod sizes {
    use std::convert::Infallible;
    use std::future::Future;
    use std::mem::size_of;

    use futures_util::sink::{Drain, SinkMapErr};
    use futures_util::stream::Pending;

    use super::*;
    use crate::auth::Claims;

    type Sink = SinkMapErr<Drain<ServerFrame>, fn(Infallible) -> TransportError>;
    type Source = Pending<Result<ClientFrame, TransportError>>;

    fn returned<A, B, C, D, F: Future>(_: fn(A, B, C, D) -> F) -> usize {
        size_of::<F>()
    }

    #[test]
    fn an_idle_connection_stays_small() {
        // The transport's halves here are empty stand-ins: the parsed WebSocket stream lives
        // in its own allocation (http/ws.rs boxes it).
        let session = returned::<Arc<Node>, Sink, Source, Upgrade, _>(run);
        let writer = returned::<Sink, Arc<Outbox>, herald_protocol::Codec, usize, _>(writer::run);
        let parts = [
            ("session task future (without the transport)", session),
            ("writer task future (without the transport)", writer),
            ("Connection", size_of::<Connection>()),
            ("Outbox", size_of::<Outbox>()),
            ("Claims", size_of::<Claims>()),
        ];
        for (name, size) in parts {
            println!("{name}: {size} bytes");
        }
        // jemalloc size classes: a boxed session of up to 768 bytes takes 768, not 896; a
        // connection of up to 176 bytes (plus the Arc's two counts) takes 192, not 224.
        // (The binary codec and the direct socket took them past 640 and 144.)
        assert!(
            session <= 768,
            "the session task future grew to {session} bytes"
        );
        assert!(size_of::<Connection>() <= 176, "Connection grew");
        // Its batch and close paths are boxed: an idle writer keeps only its wait.
        assert!(
            writer <= 256,
            "the writer task future grew to {writer} bytes"
        );
    }
}
