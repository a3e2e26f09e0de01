//! One subscriber connection, as the load generator drives it.
//!
//! Two implementations of the client protocol:
//! - `lean` (default): the socket itself, read by the one task that owns it, with a 4 KiB
//!   WebSocket read buffer. tungstenite's default read buffer is 128 KiB and is zero-filled
//!   before every read, which made the load generator spend most of its CPU in `memset` and
//!   compete with the gateway for the machine's cores.
//! - `rust`: `herald_client::Client` (its own background task per connection), to compare.
//!
//! Either speaks JSON (`herald.v1.json`) or the binary subprotocol (`herald.v1.proto`).

use std::collections::VecDeque;

use futures_util::{SinkExt, StreamExt};
use herald_client::{Client, CloseInfo, ConnectOptions, Push};
use herald_protocol::command::parse_command;
use herald_protocol::reply::ServerMessage;
use herald_protocol::{Codec, binary};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Which client implementation the subscribers use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ClientKind {
    /// A minimal client in the load generator: one task per connection, small buffers.
    Lean,
    /// The `herald-client` crate.
    Rust,
}

/// Which client the subscribers use, speaking which codec.
#[derive(Debug, Clone, Copy)]
pub struct ClientSpec {
    pub kind: ClientKind,
    pub codec: Codec,
}

/// The subprotocol the subscribers speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    /// `herald.v1.json`: text frames of JSON.
    Json,
    /// `herald.v1.proto`: binary frames of protobuf.
    Proto,
}

impl Protocol {
    pub fn codec(self) -> Codec {
        match self {
            Protocol::Json => Codec::Json,
            Protocol::Proto => Codec::Proto,
        }
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
        match kind {
            ClientKind::Lean => LeanConn::open(ws_url, codec, token, channel)
                .await
                .map(|conn| Conn::Lean(Box::new(conn))),
            ClientKind::Rust => {
                let mut options = ConnectOptions::new(ws_url);
                options.subprotocols = vec![codec.subprotocol().to_owned()];
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
        }
    }
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
        let mut conn = LeanConn::upgrade(ws_url, codec)
            .await
            .map_err(|e| ("upgrade", e))?;
        conn.call(1, "connect", serde_json::json!({ "token": token }))
            .await
            .map_err(|e| ("connect", e))?;
        conn.call(2, "subscribe", serde_json::json!({ "channel": channel }))
            .await
            .map_err(|e| ("subscribe", e))?;
        Ok(conn)
    }

    async fn upgrade(ws_url: &str, codec: Codec) -> Result<LeanConn, OpenError> {
        let mut request = ws_url.into_client_request()?;
        request.headers_mut().insert(
            "sec-websocket-protocol",
            HeaderValue::from_static(codec.subprotocol()),
        );
        let config = WebSocketConfig::default()
            .read_buffer_size(4096)
            .write_buffer_size(0);
        let (socket, _) =
            tokio_tungstenite::connect_async_with_config(request, Some(config), true).await?;
        Ok(LeanConn {
            socket,
            codec,
            queued: VecDeque::new(),
        })
    }

    /// Sends a command and waits for its reply; queues pushes that arrive meanwhile.
    async fn call(
        &mut self,
        id: u64,
        method: &str,
        params: serde_json::Value,
    ) -> Result<(), OpenError> {
        let command = serde_json::json!({ "id": id, method: params }).to_string();
        let message = match self.codec {
            Codec::Json => Message::text(command),
            Codec::Proto => {
                let command = parse_command(&command)?.map_err(|e| e.message)?;
                Message::binary(binary::encode_command(command))
            }
        };
        self.socket.send(message).await?;
        loop {
            let messages = match self.socket.next().await {
                Some(Ok(message @ (Message::Text(_) | Message::Binary(_)))) => {
                    server_messages(&message)
                }
                Some(Ok(Message::Close(frame))) => {
                    let close = frame.map_or("without a close frame".to_owned(), |f| {
                        format!("{} {:?}", u16::from(f.code), f.reason.as_str())
                    });
                    return Err(format!("connection closed {close}").into());
                }
                Some(Ok(_)) => continue,
                Some(Err(error)) => return Err(error.into()),
                None => return Err("connection closed".into()),
            };
            let mut replied = None;
            for message in messages {
                let message = message?;
                if let Some(push) = message.push {
                    self.queued.push_back(push);
                } else if message.id == Some(id) {
                    replied = Some(match message.error {
                        Some(error) => {
                            Err(format!("server error {}: {}", error.code, error.message))
                        }
                        None => Ok(()),
                    });
                }
            }
            if let Some(reply) = replied {
                return reply.map_err(Into::into);
            }
        }
    }

    async fn next_event(&mut self) -> Event {
        loop {
            if let Some(push) = self.queued.pop_front() {
                return Event::Push(push);
            }
            match self.socket.next().await {
                Some(Ok(message @ (Message::Text(_) | Message::Binary(_)))) => {
                    for message in server_messages(&message) {
                        if let Ok(ServerMessage {
                            push: Some(push), ..
                        }) = message
                        {
                            self.queued.push_back(push);
                        }
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    return Event::Closed(frame.map(|f| CloseInfo {
                        code: f.code.into(),
                        reason: f.reason.to_string(),
                    }));
                }
                // Pings are answered by tungstenite while reading.
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
