//! Socket.IO compatibility: the real binary at `/socket.io/`, driven by a small Engine.IO v4
//! / Socket.IO v5 client written here (text frames over tokio-tungstenite), the way an
//! unmodified `socket.io-client` with `transports: ["websocket"]` talks.

use std::net::SocketAddr;

use futures_util::{SinkExt, StreamExt};
use herald_api::v1::PublishRequest;
use herald_testkit::rpc_backend::TestBackend;
use herald_testkit::tokens::sign;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::common::*;

/// One Engine.IO WebSocket connection.
struct Sio(WebSocketStream<MaybeTlsStream<TcpStream>>);

impl Sio {
    /// Opens `/socket.io/` and reads the `open` packet.
    async fn open(http: SocketAddr) -> (Sio, Value) {
        let url = format!("ws://{http}/socket.io/?EIO=4&transport=websocket");
        let (socket, _) = within("upgrade", tokio_tungstenite::connect_async(url))
            .await
            .expect("upgrade");
        let mut sio = Sio(socket);
        let open = sio.text().await;
        let open = open.strip_prefix('0').expect("an open packet first");
        (sio, serde_json::from_str(open).expect("open is JSON"))
    }

    /// Opens and CONNECTs to `/` with `token`: the CONNECT or CONNECT_ERROR reply.
    async fn connect(http: SocketAddr, token: &str) -> (Sio, String) {
        let (mut sio, _) = Sio::open(http).await;
        sio.send(&format!("40{}", json!({ "token": token }))).await;
        let reply = sio.text().await;
        (sio, reply)
    }

    async fn send(&mut self, text: &str) {
        within("send", self.0.send(Message::text(text)))
            .await
            .expect("send");
    }

    /// The next text frame; panics on anything else.
    async fn text(&mut self) -> String {
        match self.next().await {
            Message::Text(text) => text.to_string(),
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    async fn next(&mut self) -> Message {
        within("a frame", self.0.next())
            .await
            .expect("the connection is open")
            .expect("a frame")
    }

    /// The text frames up to the close frame, and its code.
    async fn until_close(&mut self) -> (Vec<String>, u16) {
        let mut texts = Vec::new();
        loop {
            match self.next().await {
                Message::Text(text) => texts.push(text.to_string()),
                Message::Close(frame) => {
                    return (texts, frame.map(|f| u16::from(f.code)).unwrap_or(0));
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    /// The argument of ack `id` (`43<id>[arg]`), skipping other packets.
    async fn ack(&mut self, id: u32) -> Value {
        let head = format!("43{id}");
        loop {
            let text = self.text().await;
            if let Some(args) = text.strip_prefix(&head) {
                let mut args: Vec<Value> = serde_json::from_str(args).expect("ack is JSON");
                return args.remove(0);
            }
        }
    }
}

fn token(sub: &str) -> String {
    sign(&claims(sub, &["acme"], &["org:acme:*"], 3600))
}

#[tokio::test]
async fn connects_with_the_open_packet_and_herald_client_id() {
    let served = serve(|_| {}).await;
    let (mut sio, open) = Sio::open(served.http).await;
    assert_eq!(open["upgrades"], json!([]));
    assert_eq!(open["pingInterval"], 25_000);
    // The pong timeout (20 s) plus the sweep the pings may come late by (1 s).
    assert_eq!(open["pingTimeout"], 21_000);
    assert_eq!(open["maxPayload"], 64 * 1024);
    assert!(open["sid"].as_str().is_some_and(|sid| !sid.is_empty()));

    sio.send(&format!("40{}", json!({ "token": token("alice") })))
        .await;
    let connected = sio.text().await;
    let connected: Value =
        serde_json::from_str(connected.strip_prefix("40").expect("CONNECT")).unwrap();
    assert!(connected["sid"].as_str().is_some_and(|sid| sid.len() == 16));

    // Another namespace is refused by name, and the session goes on.
    sio.send("40/admin,").await;
    assert_eq!(
        sio.text().await,
        r#"44/admin,{"message":"Invalid namespace"}"#
    );
    sio.send(r#"420["herald:subscribe","public:news"]"#).await;
    assert_eq!(sio.ack(0).await["ok"], true);
}

#[tokio::test]
async fn refused_tokens_get_connect_error_with_herald_codes() {
    let served = serve(|_| {}).await;
    let expired = sign(&claims("alice", &[], &[], -120));
    let (mut sio, refused) = Sio::connect(served.http, &expired).await;
    let refused: Value =
        serde_json::from_str(refused.strip_prefix("44").expect("CONNECT_ERROR")).unwrap();
    assert_eq!(refused["data"]["code"], 109, "{refused}");
    assert!(refused["message"].as_str().is_some());
    let (_, code) = sio.until_close().await;
    assert_eq!(code, 4002);

    let (mut sio, refused) = Sio::connect(served.http, "not-a-jwt").await;
    let refused: Value = serde_json::from_str(refused.strip_prefix("44").unwrap()).unwrap();
    assert_eq!(refused["data"]["code"], 101, "{refused}");
    let (_, code) = sio.until_close().await;
    assert_eq!(code, 4001);
}

#[tokio::test]
async fn other_engine_io_versions_and_transports_are_http_400() {
    let served = serve(|_| {}).await;
    let (status, body) = http_get(served.http, "/socket.io/?EIO=3&transport=websocket").await;
    assert_eq!(status, 400);
    let body: Value = serde_json::from_str(&body).expect("a JSON error");
    assert_eq!(body["code"], 5);
    let (status, body) = http_get(served.http, "/socket.io/?EIO=4&transport=polling").await;
    assert_eq!(status, 400);
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["code"], 0);
}

#[tokio::test]
async fn subscribe_acks_and_publications_arrive_as_events() {
    let served = serve(|_| {}).await;
    let (mut sio, connected) = Sio::connect(served.http, &token("alice")).await;
    assert!(connected.starts_with("40{"), "{connected}");

    sio.send(r#"421["herald:subscribe","user:alice"]"#).await;
    let subscribed = sio.ack(1).await;
    assert_eq!(subscribed["ok"], true, "{subscribed}");
    assert!(subscribed["epoch"].is_string());
    sio.send(r#"422["herald:subscribe","user:bob"]"#).await;
    assert_eq!(sio.ack(2).await["error"]["code"], 103);

    let request = PublishRequest {
        channel: "user:alice".into(),
        event: "message:new".into(),
        data: br#"{"text":"hi"}"#.to_vec(),
        idempotency_key: String::new(),
    };
    let mut grpc = grpc_client(served.grpc, Some(API_KEY)).await;
    within("gRPC publish", grpc.publish(request))
        .await
        .expect("publish");
    assert_eq!(sio.text().await, r#"42["message:new",{"text":"hi"}]"#);

    sio.send(r#"423["herald:unsubscribe","user:alice"]"#).await;
    assert_eq!(sio.ack(3).await, json!({ "ok": true }));
    // An event without an ack id gets no reply: the next frame answers the next ack.
    sio.send(r#"42["herald:unsubscribe","user:alice"]"#).await;
    sio.send(r#"424["herald:subscribe","public:news"]"#).await;
    assert!(sio.text().await.starts_with("434["));
}

#[tokio::test]
async fn other_events_go_to_the_backend_and_its_reply_is_the_ack() {
    let backend = TestBackend::start().await;
    let url = backend.url();
    let served = serve(|herald| {
        herald.env("HERALD_BACKEND_ADDR", url);
    })
    .await;
    let (mut sio, _) = Sio::connect(served.http, &token("alice")).await;
    sio.send(r#"427["echo",{"text":"hi"},"more"]"#).await;
    let echoed = sio.ack(7).await;
    assert_eq!(echoed["method"], "echo");
    assert_eq!(echoed["user"], "alice");
    assert_eq!(echoed["data"], json!({ "text": "hi" }));
    assert_eq!(backend.next_request().await.request.method, "echo");

    sio.send(r#"428["refuse"]"#).await;
    assert_eq!(
        sio.ack(8).await,
        json!({ "error": { "code": 1403, "message": "refused by the backend" } })
    );
    sio.send(r#"429["join-room","r1"]"#).await;
    assert_eq!(sio.ack(9).await, Value::Null);
}

#[tokio::test]
async fn engine_io_ping_pong_keeps_the_session_and_a_missing_pong_closes_4202() {
    let served = serve(|herald| {
        herald
            .env("HERALD_PING_INTERVAL_SECONDS", "1")
            .env("HERALD_PONG_TIMEOUT_SECONDS", "1");
    })
    .await;
    let (mut sio, connected) = Sio::connect(served.http, &token("alice")).await;
    assert!(connected.starts_with("40{"));
    for _ in 0..2 {
        assert_eq!(sio.text().await, "2");
        sio.send("3").await;
    }
    assert_eq!(sio.text().await, "2");
    let (texts, code) = sio.until_close().await;
    assert_eq!(code, 4202);
    // A reconnect-now close: an Engine.IO close, so the client reconnects by itself.
    assert_eq!(texts, ["1"]);
}

#[tokio::test]
async fn binary_packets_and_malformed_frames_close_4000() {
    let served = serve(|_| {}).await;
    for frame in [
        r#"451-["upload",{"_placeholder":true,"num":0}]"#,
        "42[not json",
        "5",
    ] {
        let (mut sio, connected) = Sio::connect(served.http, &token("alice")).await;
        assert!(connected.starts_with("40{"));
        sio.send(frame).await;
        let (texts, code) = sio.until_close().await;
        assert_eq!(code, 4000, "{frame}");
        // A do-not-reconnect close: a Socket.IO DISCONNECT first.
        assert_eq!(texts, ["41"], "{frame}");
    }
}

#[tokio::test]
async fn presence_and_server_side_pushes_are_reserved_events_and_disconnect_maps() {
    let served = serve(|_| {}).await;
    let channel = "org:acme:ch:general";
    let (mut alice, _) = Sio::connect(served.http, &token("alice")).await;
    let (mut bob, _) = Sio::connect(served.http, &token("bob")).await;
    alice
        .send(&format!(r#"421["herald:subscribe","{channel}"]"#))
        .await;
    assert_eq!(alice.ack(1).await["ok"], true);
    bob.send(&format!(r#"421["herald:subscribe","{channel}"]"#))
        .await;
    assert_eq!(bob.ack(1).await["ok"], true);
    let joined = alice.text().await;
    let joined: Vec<Value> = serde_json::from_str(joined.strip_prefix("42").unwrap()).unwrap();
    assert_eq!(joined[0], "herald:join");
    assert_eq!(joined[1]["channel"], channel);
    assert_eq!(joined[1]["user"], "bob");

    let mut grpc = grpc_client(served.grpc, Some(API_KEY)).await;
    let subscribe = herald_api::v1::SubscribeRequest {
        user: "bob".into(),
        channel: "user:bob".into(),
        client: String::new(),
    };
    within("gRPC subscribe", grpc.subscribe(subscribe))
        .await
        .expect("subscribe");
    let subscribed = bob.text().await;
    let subscribed: Vec<Value> =
        serde_json::from_str(subscribed.strip_prefix("42").unwrap()).unwrap();
    assert_eq!(subscribed[0], "herald:subscribed");
    assert_eq!(subscribed[1]["channel"], "user:bob");
    assert!(subscribed[1]["epoch"].is_string());

    // A reconnect-now disconnect is an Engine.IO close; a do-not-reconnect one a DISCONNECT.
    for (user, sio, code, packet) in [
        ("bob", &mut bob, 4200, "1"),
        ("alice", &mut alice, 4001, "41"),
    ] {
        let disconnect = herald_api::v1::DisconnectRequest {
            user: user.into(),
            code,
            reason: "test".into(),
        };
        within("gRPC disconnect", grpc.disconnect(disconnect))
            .await
            .expect("disconnect");
        let (texts, closed) = sio.until_close().await;
        assert_eq!(closed, code as u16);
        assert_eq!(texts.last().map(String::as_str), Some(packet), "{texts:?}");
    }
}

#[tokio::test]
async fn the_token_may_come_from_the_authorization_header() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let served = serve(|_| {}).await;
    let url = format!("ws://{}/socket.io/?EIO=4&transport=websocket", served.http);
    let mut request = url.into_client_request().unwrap();
    let bearer = format!("Bearer {}", token("alice"));
    request
        .headers_mut()
        .insert("authorization", bearer.parse().unwrap());
    let (socket, _) = within("upgrade", tokio_tungstenite::connect_async(request))
        .await
        .expect("upgrade");
    let mut sio = Sio(socket);
    assert!(sio.text().await.starts_with("0{"));
    sio.send("40").await;
    assert!(sio.text().await.starts_with(r#"40{"sid":"#));
}
