//! One subscriber connection, as the load generator drives it.
//!
//! Two implementations of the client protocol:
//! - `lean` (default): the socket itself, read by the one task that owns it, with a 4 KiB
//!   WebSocket read buffer. tungstenite's default read buffer is 128 KiB and is zero-filled
//!   before every read, which made the load generator spend most of its CPU in `memset` and
//!   compete with the gateway for the machine's cores.
//! - `rust`: `herald_client::Client` (its own background task per connection), to compare.
//!
//! Either speaks JSON (`herald.v1.json`) or the binary subprotocol (`herald.v1.proto`); the
//! lean client also speaks Socket.IO at `/socket.io/` (see `socketio.rs`).

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};

use futures_util::{SinkExt, StreamExt};
use herald_client::{Client, CloseInfo, ConnectOptions, Push};
use herald_protocol::command::{StreamPosition, parse_command};
use herald_protocol::reply::{ReceivedPublication, ServerMessage, SubscribeResult};
use herald_protocol::{Codec, binary};
use serde_json::value::RawValue;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::socketio::{self, Packet};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Which client implementation the subscribers use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ClientKind {
    /// A minimal client in the load generator: one task per connection, small buffers.
    Lean,
    /// The `herald-client` crate.
    Rust,
}

/// How far a connection goes before it is held: the stages of an idle connection's memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Stage {
    /// TCP connected, no HTTP request: the server's accepted socket and HTTP connection.
    Tcp,
    /// WebSocket upgraded, no `connect`: the session before its handshake.
    Upgrade,
    /// `connect` answered: an authenticated session, no subscription.
    Connect,
    /// Subscribed to its channel.
    Subscribe,
}

/// Which client opens a connection, speaking which codec, and how far it goes.
#[derive(Debug, Clone, Copy)]
pub struct Opening {
    pub kind: ClientKind,
    pub codec: Codec,
    pub stage: Stage,
}

/// The subprotocol the subscribers speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    /// `herald.v1.json`: text frames of JSON.
    Json,
    /// `herald.v1.proto`: binary frames of protobuf.
    Proto,
    /// Socket.IO (Engine.IO v4 over a WebSocket at `/socket.io/`): the lean client only.
    #[value(name = "socketio")]
    SocketIo,
}

impl Protocol {
    pub fn codec(self) -> Codec {
        match self {
            Protocol::Json => Codec::Json,
            Protocol::Proto => Codec::Proto,
            Protocol::SocketIo => Codec::SocketIo,
        }
    }

    /// Its name in reports: the subprotocol, or `socket.io`.
    pub fn name(self) -> &'static str {
        self.codec().subprotocol().unwrap_or("socket.io")
    }
}

/// A push, or how the connection ended.
// Not boxed: an event is moved once per delivery in the measuring loop, never stored, and
// a box would cost an allocation per delivery on the load generator's side.
#[allow(clippy::large_enum_variant)]
pub enum Event {
    Push(Push),
    /// The connection ended: `Some(close frame)` if the server sent one.
    Closed(Option<CloseInfo>),
}

/// One authenticated, subscribed connection.
pub enum Conn {
    Lean(Box<LeanConn>),
    Rust(Box<Client>),
    /// A TCP connection that never sent a request ([`Stage::Tcp`]).
    Tcp(TcpStream),
}

/// Errors of opening a connection; the source chain keeps I/O errors for classification.
pub type OpenError = Box<dyn std::error::Error + Send + Sync>;

impl Conn {
    /// Opens a connection to `ws_url`, authenticates with `token` and subscribes to `channel`.
    pub async fn open(
        kind: ClientKind,
        codec: Codec,
        ws_url: &str,
        token: &str,
        channel: &str,
    ) -> Result<Conn, (&'static str, OpenError)> {
        let opening = Opening {
            kind,
            codec,
            stage: Stage::Subscribe,
        };
        Conn::open_until(opening, ws_url, token, channel).await
    }

    /// [`Conn::open`], stopping after `stage` (the lean client only, before subscribing).
    pub async fn open_until(
        opening: Opening,
        ws_url: &str,
        token: &str,
        channel: &str,
    ) -> Result<Conn, (&'static str, OpenError)> {
        match (opening.kind, opening.stage) {
            (ClientKind::Lean, Stage::Tcp) => {
                let server = ws_url
                    .into_client_request()
                    .map_err(|e| ("tcp", e.into()))?
                    .uri()
                    .authority()
                    .map(|a| a.to_string())
                    .ok_or(("tcp", "no host in the WebSocket URL".into()))?;
                TcpStream::connect(server)
                    .await
                    .map(Conn::Tcp)
                    .map_err(|e| ("tcp", e.into()))
            }
            (ClientKind::Lean, Stage::Upgrade) => LeanConn::upgrade(ws_url, opening.codec)
                .await
                .map(|conn| Conn::Lean(Box::new(conn)))
                .map_err(|e| ("upgrade", e)),
            (ClientKind::Lean, Stage::Connect) => LeanConn::connected(ws_url, opening.codec, token)
                .await
                .map(|conn| Conn::Lean(Box::new(conn))),
            (ClientKind::Lean, Stage::Subscribe) => {
                LeanConn::open(ws_url, opening.codec, token, channel)
                    .await
                    .map(|conn| Conn::Lean(Box::new(conn)))
            }
            (ClientKind::Rust, Stage::Tcp | Stage::Upgrade | Stage::Connect) => Err((
                "open",
                "only the lean client stops before subscribing".into(),
            )),
            (ClientKind::Rust, _) if opening.codec == Codec::SocketIo => Err((
                "open",
                "only the lean client speaks Socket.IO (--client lean)".into(),
            )),
            (ClientKind::Rust, Stage::Subscribe) => {
                let mut options = ConnectOptions::new(ws_url);
                options.subprotocols =
                    vec![opening.codec.subprotocol().expect("a /ws codec").to_owned()];
                let client = Client::open(options)
                    .await
                    .map_err(|e| ("upgrade", e.into()))?;
                client
                    .handshake(Some(token))
                    .await
                    .map_err(|e| ("connect", e.into()))?;
                client
                    .subscribe(channel)
                    .await
                    .map_err(|e| ("subscribe", e.into()))?;
                Ok(Conn::Rust(Box::new(client)))
            }
        }
    }

    /// A lean connection to `ws_url` that only upgrades: the floor server pushes
    /// publications without `connect` or `subscribe`.
    pub async fn upgrade(ws_url: &str, codec: Codec) -> Result<Conn, OpenError> {
        LeanConn::upgrade(ws_url, codec)
            .await
            .map(|conn| Conn::Lean(Box::new(conn)))
    }

    /// The next push, or how the connection ended.
    pub async fn next_event(&mut self) -> Event {
        match self {
            Conn::Lean(conn) => conn.next_event().await,
            Conn::Rust(client) => match client.next_push().await {
                Some(push) => Event::Push(push),
                None => Event::Closed(client.closed().await),
            },
            Conn::Tcp(stream) => {
                // Nothing is sent on it: whatever comes (an HTTP error, EOF) ends it.
                let mut buffer = [0; 256];
                let _ = tokio::io::AsyncReadExt::read(stream, &mut buffer).await;
                Event::Closed(None)
            }
        }
    }
}

/// The upgrade request for `ws_url`, asking for `codec`'s subprotocol; for Socket.IO, the
/// WebSocket transport of Engine.IO on the same host, without a subprotocol.
fn request(
    ws_url: &str,
    codec: Codec,
) -> Result<tungstenite::handshake::client::Request, OpenError> {
    let request = match codec.subprotocol() {
        Some(subprotocol) => {
            let mut request = ws_url.into_client_request()?;
            request.headers_mut().insert(
                "sec-websocket-protocol",
                HeaderValue::from_static(subprotocol),
            );
            request
        }
        None => socketio::url(ws_url)?.into_client_request()?,
    };
    Ok(request)
}

/// A 4 KiB read buffer (see the module doc) and no write buffering.
fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
}

/// The lean client: a WebSocket, and the pushes of the last frame not yet taken.
pub struct LeanConn {
    socket: Socket,
    codec: Codec,
    queued: VecDeque<Push>,
}

impl LeanConn {
    async fn open(
        ws_url: &str,
        codec: Codec,
        token: &str,
        channel: &str,
    ) -> Result<LeanConn, (&'static str, OpenError)> {
        LeanConn::open_from(None, ws_url, codec, token, channel, None)
            .await
            .map(|(conn, _)| conn)
    }

    /// Opens a connection from `source` (an address of this host; `None`: the kernel's
    /// choice) to `ws_url`, authenticates with `token` and subscribes to `channel`,
    /// recovering from `recover` when given; returns the subscribe result.
    pub async fn open_from(
        source: Option<(IpAddr, SocketAddr)>,
        ws_url: &str,
        codec: Codec,
        token: &str,
        channel: &str,
        recover: Option<&StreamPosition>,
    ) -> Result<(LeanConn, SubscribeResult<ReceivedPublication>), (&'static str, OpenError)> {
        let mut conn = match source {
            Some((source, server)) => LeanConn::upgrade_from(source, server, ws_url, codec).await,
            None => LeanConn::upgrade(ws_url, codec).await,
        }
        .map_err(|e| ("upgrade", e))?;
        conn.engine_open().await.map_err(|e| ("upgrade", e))?;
        conn.call(1, "connect", serde_json::json!({ "token": token }))
            .await
            .map_err(|e| ("connect", e))?;
        let subscribe = match recover {
            Some(position) => serde_json::json!({ "channel": channel, "recover": position }),
            None => serde_json::json!({ "channel": channel }),
        };
        let result = conn
            .call(2, "subscribe", subscribe)
            .await
            .map_err(|e| ("subscribe", e))?;
        let result = serde_json::from_str(result.as_ref().map_or("null", |r| r.get()))
            .map_err(|e| ("subscribe", e.into()))?;
        Ok((conn, result))
    }

    /// Upgrades and authenticates, without subscribing.
    async fn connected(
        ws_url: &str,
        codec: Codec,
        token: &str,
    ) -> Result<LeanConn, (&'static str, OpenError)> {
        let mut conn = LeanConn::upgrade(ws_url, codec)
            .await
            .map_err(|e| ("upgrade", e))?;
        conn.engine_open().await.map_err(|e| ("upgrade", e))?;
        conn.call(1, "connect", serde_json::json!({ "token": token }))
            .await
            .map_err(|e| ("connect", e))?;
        Ok(conn)
    }

    async fn upgrade(ws_url: &str, codec: Codec) -> Result<LeanConn, OpenError> {
        let (socket, _) = tokio_tungstenite::connect_async_with_config(
            request(ws_url, codec)?,
            Some(config()),
            true,
        )
        .await?;
        Ok(LeanConn::new(socket, codec))
    }

    /// Upgrades over a TCP connection to `server` bound to `source` first, so that many
    /// connections spread over loopback addresses (127.0.0.x) do not run out of ports.
    async fn upgrade_from(
        source: IpAddr,
        server: SocketAddr,
        ws_url: &str,
        codec: Codec,
    ) -> Result<LeanConn, OpenError> {
        let socket = match source {
            IpAddr::V4(_) => TcpSocket::new_v4()?,
            IpAddr::V6(_) => TcpSocket::new_v6()?,
        };
        socket.bind(SocketAddr::new(source, 0))?;
        let stream = socket.connect(server).await?;
        stream.set_nodelay(true)?;
        let (socket, _) = tokio_tungstenite::client_async_with_config(
            request(ws_url, codec)?,
            MaybeTlsStream::Plain(stream),
            Some(config()),
        )
        .await?;
        Ok(LeanConn::new(socket, codec))
    }

    fn new(socket: Socket, codec: Codec) -> LeanConn {
        LeanConn {
            socket,
            codec,
            queued: VecDeque::new(),
        }
    }

    /// Over Socket.IO, reads the Engine.IO `open` packet the server sends first (answering
    /// pings meanwhile); nothing on the other codecs.
    async fn engine_open(&mut self) -> Result<(), OpenError> {
        if self.codec != Codec::SocketIo {
            return Ok(());
        }
        loop {
            match self.socket.next().await {
                Some(Ok(Message::Text(text))) => match socketio::parse(&text)? {
                    Packet::Open => return Ok(()),
                    Packet::Ping => self.socket.send(Message::text(socketio::PONG)).await?,
                    other => {
                        return Err(format!("{other:?} before the Engine.IO open packet").into());
                    }
                },
                Some(Ok(Message::Close(frame))) => return Err(closed(frame).into()),
                Some(Ok(_)) => {}
                Some(Err(error)) => return Err(error.into()),
                None => return Err("connection closed".into()),
            }
        }
    }

    /// Sends a command and waits for its reply (its result, if any); queues pushes that
    /// arrive meanwhile.
    async fn call(
        &mut self,
        id: u64,
        method: &str,
        params: serde_json::Value,
    ) -> Result<Option<Box<RawValue>>, OpenError> {
        let (message, reply_id) = match self.codec {
            Codec::Json => (
                Message::text(serde_json::json!({ "id": id, method: params }).to_string()),
                id,
            ),
            Codec::Proto => {
                let command = serde_json::json!({ "id": id, method: params }).to_string();
                let command = parse_command(&command)?.map_err(|e| e.message)?;
                (Message::binary(binary::encode_command(command)), id)
            }
            Codec::SocketIo => {
                let (packet, reply_id) = socketio::command(id, method, params)?;
                (Message::text(packet), reply_id)
            }
        };
        self.socket.send(message).await?;
        loop {
            let incoming = match self.socket.next().await {
                Some(Ok(message @ (Message::Text(_) | Message::Binary(_)))) => {
                    self.incoming(&message)
                }
                Some(Ok(Message::Close(frame))) => return Err(closed(frame).into()),
                Some(Ok(_)) => continue,
                Some(Err(error)) => return Err(error.into()),
                None => return Err("connection closed".into()),
            };
            let mut replied = None;
            let mut pinged = false;
            for incoming in incoming {
                match incoming? {
                    Incoming::Push(push) => self.queued.push_back(push),
                    Incoming::Reply { id, result } if id == reply_id => replied = Some(result),
                    Incoming::Ping => pinged = true,
                    Incoming::Reply { .. } | Incoming::Other => {}
                }
            }
            if pinged {
                self.socket.send(Message::text(socketio::PONG)).await?;
            }
            if let Some(reply) = replied {
                return reply.map_err(Into::into);
            }
        }
    }

    /// The next push, or how the connection ended. Cancel-safe: a push read is queued
    /// before this returns (a pong cut short by cancelling is lost, but cancelling ends the
    /// run).
    pub async fn next_event(&mut self) -> Event {
        loop {
            if let Some(push) = self.queued.pop_front() {
                return Event::Push(push);
            }
            match self.socket.next().await {
                Some(Ok(message @ (Message::Text(_) | Message::Binary(_)))) => {
                    let mut pinged = false;
                    for incoming in self.incoming(&message) {
                        match incoming {
                            Ok(Incoming::Push(push)) => self.queued.push_back(push),
                            Ok(Incoming::Ping) => pinged = true,
                            _ => {}
                        }
                    }
                    // A failed pong shows as the connection's end on the next read.
                    if pinged {
                        let _ = self.socket.send(Message::text(socketio::PONG)).await;
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    return Event::Closed(frame.map(|f| CloseInfo {
                        code: f.code.into(),
                        reason: f.reason.to_string(),
                    }));
                }
                // WebSocket pings are answered by tungstenite while reading.
                Some(Ok(_)) => {}
                Some(Err(tungstenite::Error::ConnectionClosed)) | None => {
                    return Event::Closed(None);
                }
                Some(Err(error)) => {
                    return Event::Closed(Some(CloseInfo {
                        code: 0,
                        reason: format!("(no close frame: {error})"),
                    }));
                }
            }
        }
    }

    /// What a data frame carries, in this connection's codec.
    fn incoming(&self, message: &Message) -> Vec<Result<Incoming, OpenError>> {
        match (self.codec, message) {
            (Codec::SocketIo, Message::Text(text)) => {
                vec![socketio::parse(text).map(Incoming::from)]
            }
            (Codec::SocketIo, _) => Vec::new(),
            (Codec::Json | Codec::Proto, message) => server_messages(message)
                .into_iter()
                .map(|message| message.map(Incoming::from))
                .collect(),
        }
    }
}

/// A server message, whatever its codec.
#[expect(
    clippy::large_enum_variant,
    reason = "not boxed, as `Event`: each is moved once, never stored"
)]
enum Incoming {
    Push(Push),
    /// The reply to command `id`: its result, if any, or the error.
    Reply {
        id: u64,
        result: Result<Option<Box<RawValue>>, String>,
    },
    /// An Engine.IO ping, to answer with a pong.
    Ping,
    Other,
}

impl From<ServerMessage> for Incoming {
    fn from(message: ServerMessage) -> Incoming {
        match (message.push, message.id) {
            (Some(push), _) => Incoming::Push(push),
            (None, Some(id)) => Incoming::Reply {
                id,
                result: match message.error {
                    Some(error) => Err(format!("server error {}: {}", error.code, error.message)),
                    None => Ok(message.result),
                },
            },
            (None, None) => Incoming::Other,
        }
    }
}

impl From<Packet> for Incoming {
    fn from(packet: Packet) -> Incoming {
        match packet {
            Packet::Ping => Incoming::Ping,
            Packet::Reply { id, result } => Incoming::Reply {
                id,
                result: result.map(Some),
            },
            Packet::Publication {
                channel,
                publication,
            } => Incoming::Push(Push {
                channel,
                publication: Some(publication),
                unsubscribe: None,
                disconnect: None,
                join: None,
                leave: None,
                presence: None,
                typing: None,
                status: None,
                subscribe: None,
                state: None,
            }),
            Packet::Open | Packet::Other => Incoming::Other,
        }
    }
}

/// How a connection closed during a command, from its close frame.
fn closed(frame: Option<tungstenite::protocol::CloseFrame>) -> String {
    let close = frame.map_or("without a close frame".to_owned(), |f| {
        format!("{} {:?}", u16::from(f.code), f.reason.as_str())
    });
    format!("connection closed {close}")
}

/// The messages of a data frame: newline-separated JSON in a text frame, length-delimited
/// protobuf in a binary one.
fn server_messages(message: &Message) -> Vec<Result<ServerMessage, OpenError>> {
    match message {
        Message::Text(text) => text
            .split('\n')
            .filter(|line| !line.trim().is_empty())
            .map(|line| serde_json::from_str(line).map_err(Into::into))
            .collect(),
        Message::Binary(data) => binary::decode_frame(data)
            .into_iter()
            .map(|message| message.map_err(Into::into))
            .collect(),
        _ => Vec::new(),
    }
}
