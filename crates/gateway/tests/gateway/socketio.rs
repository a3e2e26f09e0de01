//! Socket.IO compatibility: the real binary at `/socket.io/`, driven by a small Engine.IO v4
//! / Socket.IO v5 client written here (text frames over tokio-tungstenite, or long-polling
//! over plain HTTP requests), the way an unmodified `socket.io-client` talks.

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

    /// The next packet that is not a `herald:offset` event (sent when a subscription's
    /// answer moves the connection's offset).
    async fn packet(&mut self) -> String {
        loop {
            let text = self.text().await;
            if !is_offset_event(&text) {
                return text;
            }
        }
    }

    /// The next publication event: its name, data and offset.
    async fn publication(&mut self) -> (String, Value, String) {
        publication(&self.packet().await)
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

fn is_offset_event(packet: &str) -> bool {
    packet.starts_with(r#"42["herald:offset","#)
}

/// The arguments of an EVENT packet.
fn event_args(packet: &str) -> Vec<Value> {
    let args = packet.strip_prefix("42").expect("an EVENT");
    serde_json::from_str(args).expect("an EVENT's arguments are JSON")
}

/// A publication event's name, data and offset (its last argument).
fn publication(packet: &str) -> (String, Value, String) {
    let args = event_args(packet);
    let [name, data, offset] = &args[..] else {
        panic!("a publication has its name, data and offset: {packet}");
    };
    let (Some(name), Some(offset)) = (name.as_str(), offset.as_str()) else {
        panic!("not a publication: {packet}");
    };
    (name.to_owned(), data.clone(), offset.to_owned())
}

/// A gateway that pings every second and waits a second for the pong.
async fn serve_with_a_fast_heartbeat() -> Served {
    serve(|herald| {
        herald
            .env("HERALD_PING_INTERVAL_SECONDS", "1")
            .env("HERALD_PONG_TIMEOUT_SECONDS", "1");
    })
    .await
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
    let (status, body) = http_get(served.http, "/socket.io/?EIO=4&transport=flashsocket").await;
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
    let (name, data, offset) = sio.publication().await;
    assert_eq!(
        (name.as_str(), data),
        ("message:new", json!({ "text": "hi" }))
    );
    assert!(offset.contains("user:alice,"), "{offset}");

    sio.send(r#"423["herald:unsubscribe","user:alice"]"#).await;
    assert_eq!(sio.ack(3).await, json!({ "ok": true }));
    // An event without an ack id gets no reply: the next frame answers the next ack.
    sio.send(r#"42["herald:unsubscribe","user:alice"]"#).await;
    sio.send(r#"424["herald:subscribe","public:news"]"#).await;
    assert!(sio.packet().await.starts_with("434["));
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

    // The same over long-polling.
    let (polling, connected) = Polling::connect(served.http, &token("alice")).await;
    assert!(connected.starts_with("40{"), "{connected}");
    polling.send(&[r#"427["echo",{"text":"hi"}]"#]).await;
    assert_eq!(polling.ack(7).await["data"], json!({ "text": "hi" }));
}

#[tokio::test]
async fn engine_io_ping_pong_keeps_the_session_and_a_missing_pong_closes_4202() {
    let served = serve_with_a_fast_heartbeat().await;
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
    let joined = alice.packet().await;
    let joined: Vec<Value> = serde_json::from_str(joined.strip_prefix("42").unwrap()).unwrap();
    assert_eq!(joined[0], "herald:join");
    assert_eq!(joined[1]["channel"], channel);
    assert_eq!(joined[1]["user"], "bob");

    // A native member's presence state reaches Socket.IO subscribers as `herald:state`.
    let url = format!("ws://{}/ws", served.http);
    let (carol, connected) = within(
        "carol connects",
        herald_client::Client::connect(&url, &token("carol")),
    )
    .await
    .expect("connect");
    within("subscribe", carol.subscribe(channel)).await.unwrap();
    within(
        "set presence state",
        carol.set_presence_state(channel, json!({"mood": "ok"})),
    )
    .await
    .unwrap();
    let state = json!({"channel": channel, "user": "carol", "client": connected.client, "state": {"mood": "ok"}});
    for sio in [&mut alice, &mut bob] {
        let joined = event_args(&sio.packet().await);
        assert_eq!(
            (&joined[0], &joined[1]["user"]),
            (&json!("herald:join"), &json!("carol"))
        );
        assert_eq!(
            event_args(&sio.packet().await),
            [json!("herald:state"), state.clone()]
        );
    }

    let mut grpc = grpc_client(served.grpc, Some(API_KEY)).await;
    let subscribe = herald_api::v1::SubscribeRequest {
        user: "bob".into(),
        channel: "user:bob".into(),
        client: String::new(),
    };
    within("gRPC subscribe", grpc.subscribe(subscribe))
        .await
        .expect("subscribe");
    let subscribed = bob.packet().await;
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

#[tokio::test]
async fn a_refused_origin_is_http_403_before_the_upgrade_as_over_polling() {
    use tokio_tungstenite::tungstenite::Error;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let served = serve(|herald| {
        herald.env("HERALD_ALLOWED_ORIGINS", "https://app.example");
    })
    .await;
    let url = format!("ws://{}/socket.io/?EIO=4&transport=websocket", served.http);
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("origin", "https://evil.example".parse().unwrap());
    // socket.io-client reports a refused handshake as a `connect_error`; an upgraded socket
    // closed before its open packet it would only retry.
    match within("upgrade", tokio_tungstenite::connect_async(request)).await {
        Err(Error::Http(response)) => {
            assert_eq!(response.status(), 403);
            let body: Value = serde_json::from_slice(response.body().as_deref().unwrap_or(b"{}"))
                .expect("a JSON error");
            assert_eq!(body["code"], 4, "Engine.IO's Forbidden");
        }
        other => panic!("expected HTTP 403, got {other:?}"),
    }
}

/// One Engine.IO long-polling session, over plain HTTP requests.
struct Polling {
    http: SocketAddr,
    sid: String,
}

impl Polling {
    /// The handshake: the session and its `open` packet.
    async fn open(http: SocketAddr) -> (Polling, Value) {
        let (status, body) = http_get(http, "/socket.io/?EIO=4&transport=polling").await;
        assert_eq!(status, 200, "{body}");
        let open: Value =
            serde_json::from_str(body.strip_prefix('0').expect("an open packet")).unwrap();
        let sid = open["sid"].as_str().expect("a sid").to_owned();
        (Polling { http, sid }, open)
    }

    /// Opens and CONNECTs to `/` with `token`: the CONNECT or CONNECT_ERROR reply.
    async fn connect(http: SocketAddr, token: &str) -> (Polling, String) {
        let (polling, _) = Polling::open(http).await;
        polling
            .send(&[&format!("40{}", json!({ "token": token }))])
            .await;
        let mut reply = polling.poll().await;
        (polling, reply.remove(0))
    }

    fn path(&self) -> String {
        format!("/socket.io/?EIO=4&transport=polling&sid={}", self.sid)
    }

    async fn send(&self, packets: &[&str]) {
        let (status, body) = http_post(self.http, &self.path(), &packets.join("\x1e")).await;
        assert_eq!((status, body.as_str()), (200, "ok"));
    }

    /// One poll's packets.
    async fn poll(&self) -> Vec<String> {
        let (status, body) = http_get(self.http, &self.path()).await;
        assert_eq!(status, 200, "{body}");
        body.split('\x1e').map(str::to_owned).collect()
    }

    /// The packets of the next poll that has any but `herald:offset` events.
    async fn packets(&self) -> Vec<String> {
        loop {
            let mut packets = self.poll().await;
            packets.retain(|packet| !is_offset_event(packet));
            if !packets.is_empty() {
                return packets;
            }
        }
    }

    /// The argument of ack `id`, polling until it comes.
    async fn ack(&self, id: u32) -> Value {
        let head = format!("43{id}");
        loop {
            for packet in self.poll().await {
                if let Some(args) = packet.strip_prefix(&head) {
                    let mut args: Vec<Value> = serde_json::from_str(args).expect("ack is JSON");
                    return args.remove(0);
                }
            }
        }
    }
}

async fn publish(served: &Served, channel: &str, text: &str) {
    let request = PublishRequest {
        channel: channel.into(),
        event: "message:new".into(),
        data: json!({ "text": text }).to_string().into_bytes(),
        idempotency_key: String::new(),
    };
    let mut grpc = grpc_client(served.grpc, Some(API_KEY)).await;
    within("gRPC publish", grpc.publish(request))
        .await
        .expect("publish");
}

#[tokio::test]
async fn polling_handshake_connect_ack_and_publications() {
    let served = serve(|_| {}).await;
    let (polling, open) = Polling::open(served.http).await;
    assert_eq!(open["upgrades"], json!(["websocket"]));
    assert_eq!(open["pingInterval"], 25_000);
    assert_eq!(open["pingTimeout"], 21_000);
    assert_eq!(open["maxPayload"], 64 * 1024);

    // Two packets in one POST, their replies in one poll.
    polling
        .send(&[
            &format!("40{}", json!({ "token": token("alice") })),
            r#"421["herald:subscribe","user:alice"]"#,
        ])
        .await;
    let mut packets = polling.packets().await;
    if packets.len() == 1 {
        packets.extend(polling.packets().await);
    }
    assert!(packets[0].starts_with(r#"40{"sid":"#), "{packets:?}");
    let subscribed: Vec<Value> =
        serde_json::from_str(packets[1].strip_prefix("431").expect("ACK 1")).unwrap();
    assert_eq!(subscribed[0]["ok"], true, "{packets:?}");

    publish(&served, "user:alice", "hi").await;
    let packets = polling.packets().await;
    assert_eq!(packets.len(), 1, "{packets:?}");
    assert_eq!(publication(&packets[0]).1, json!({ "text": "hi" }));
    polling
        .send(&[r#"422["herald:unsubscribe","user:alice"]"#])
        .await;
    assert_eq!(polling.ack(2).await, json!({ "ok": true }));
}

#[tokio::test]
async fn polling_pings_are_answered_by_post_and_a_missing_pong_closes() {
    let served = serve_with_a_fast_heartbeat().await;
    let (polling, connected) = Polling::connect(served.http, &token("alice")).await;
    assert!(connected.starts_with("40{"), "{connected}");
    let mut pongs = 0;
    while pongs < 2 {
        if polling.poll().await.iter().any(|packet| packet == "2") {
            polling.send(&["3"]).await;
            pongs += 1;
        }
    }
    // No pong: closed 4202, a reconnect-now close (one Engine.IO close).
    let mut packets = Vec::new();
    while !packets.iter().any(|packet| packet == "1") {
        packets.extend(polling.poll().await);
    }
    // A poll ends with a noop after the ping interval; pings may come up to a sweep late.
    packets.retain(|packet| packet != "6");
    assert_eq!(packets, ["2", "1"]);
    let (status, body) = http_get(served.http, &polling.path()).await;
    assert_eq!(
        (status, body.as_str()),
        (400, r#"{"code":1,"message":"Session ID unknown"}"#)
    );
}

#[tokio::test]
async fn polling_refuses_unknown_sessions_bad_shapes_and_oversize_posts() {
    let served = serve(|herald| {
        herald.env("HERALD_MAX_MESSAGE_BYTES", "1024");
    })
    .await;
    let unknown = "/socket.io/?EIO=4&transport=polling&sid=nope";
    let (status, body) = http_get(served.http, unknown).await;
    assert_eq!(
        (status, body.as_str()),
        (400, r#"{"code":1,"message":"Session ID unknown"}"#)
    );
    let (status, body) = http_post(served.http, unknown, "40").await;
    assert_eq!(
        (status, body.as_str()),
        (400, r#"{"code":1,"message":"Session ID unknown"}"#)
    );
    let (status, body) = http_post(served.http, "/socket.io/?EIO=4&transport=polling", "40").await;
    assert_eq!(
        (status, body.as_str()),
        (400, r#"{"code":2,"message":"Bad handshake method"}"#)
    );

    let (polling, connected) = Polling::connect(served.http, &token("alice")).await;
    assert!(connected.starts_with("40{"), "{connected}");
    let big = format!(r#"42["echo","{}"]"#, "x".repeat(2048));
    let (status, _) = http_post(served.http, &polling.path(), &big).await;
    assert_eq!(status, 413);

    // A second poll while one is pending closes the session, as Engine.IO says. Nothing is
    // queued, so whichever comes first is still waiting when the other arrives.
    let path = polling.path();
    let (a, b) = tokio::join!(http_get(served.http, &path), http_get(served.http, &path));
    let mut polls = [a, b];
    polls.sort();
    assert_eq!(
        polls[1],
        (400, r#"{"code":3,"message":"Bad request"}"#.to_owned())
    );
    // Closed 4000: a Socket.IO DISCONNECT, then the Engine.IO close (in the same poll or
    // the next).
    let (status, mut packets) = polls[0].clone();
    assert_eq!(status, 200);
    if packets == "41" {
        packets = polling.poll().await.join("\x1e");
        packets.insert_str(0, "41\x1e");
    }
    assert_eq!(packets, "41\x1e1");
}

#[tokio::test]
async fn polling_upgrades_to_websocket_without_losing_a_publication() {
    let served = serve(|_| {}).await;
    let (polling, connected) = Polling::connect(served.http, &token("alice")).await;
    assert!(connected.starts_with("40{"), "{connected}");
    polling
        .send(&[r#"421["herald:subscribe","user:alice"]"#])
        .await;
    assert_eq!(polling.ack(1).await["ok"], true);
    publish(&served, "user:alice", "polled").await;
    let packets = polling.packets().await;
    assert_eq!(packets.len(), 1, "{packets:?}");
    assert_eq!(publication(&packets[0]).1, json!({ "text": "polled" }));

    let pending = {
        let http = served.http;
        let path = polling.path();
        tokio::spawn(async move { http_get(http, &path).await })
    };
    let url = format!(
        "ws://{}/socket.io/?EIO=4&transport=websocket&sid={}",
        served.http, polling.sid
    );
    let (socket, _) = within("upgrade", tokio_tungstenite::connect_async(&url))
        .await
        .expect("upgrade");
    let mut sio = Sio(socket);
    sio.send("2probe").await;
    assert_eq!(sio.text().await, "3probe");
    // The probe ends the pending poll with a noop, so the client can pause polling.
    assert_eq!(
        within("the pending poll", pending).await.unwrap(),
        (200, "6".into())
    );

    // Published between the probe and the switch: carried by the WebSocket, once, in order.
    for n in 0..3 {
        publish(&served, "user:alice", &format!("m{n}")).await;
    }
    sio.send("5").await;
    for n in 0..3 {
        assert_eq!(
            sio.publication().await.1,
            json!({ "text": format!("m{n}") })
        );
    }
    sio.send(r#"422["herald:unsubscribe","user:alice"]"#).await;
    assert_eq!(sio.ack(2).await, json!({ "ok": true }));
    let (status, _) = http_get(served.http, &polling.path()).await;
    assert_eq!(status, 400, "no polls after the upgrade");
    let again = within("a second upgrade", tokio_tungstenite::connect_async(url)).await;
    assert!(again.is_err(), "one upgrade per session");
}

/// CONNECTs a new socket with `auth` (the token, pid and offset of a reconnect): the
/// socket and its CONNECT's pid.
async fn reconnect(http: SocketAddr, auth: Value) -> (Sio, String) {
    let (mut sio, _) = Sio::open(http).await;
    sio.send(&format!("40{auth}")).await;
    let connected = sio.text().await;
    let connected: Value = serde_json::from_str(connected.strip_prefix("40").expect("CONNECT"))
        .unwrap_or_else(|_| panic!("CONNECT is JSON: {connected}"));
    let pid = connected["pid"].as_str().expect("a pid").to_owned();
    (sio, pid)
}

#[tokio::test]
async fn a_reconnect_with_its_pid_and_last_offset_recovers_exactly_what_it_missed() {
    let served = serve(|_| {}).await;
    let (mut sio, pid) = reconnect(served.http, json!({ "token": token("alice") })).await;
    for (id, channel) in [
        (1, "user:alice"),
        (2, "org:acme:ch:general"),
        (3, "public:news"),
    ] {
        sio.send(&format!(r#"42{id}["herald:subscribe","{channel}"]"#))
            .await;
        assert_eq!(sio.ack(id).await["ok"], true);
    }
    publish(&served, "user:alice", "seen").await;
    let (_, data, offset) = sio.publication().await;
    assert_eq!(data, json!({ "text": "seen" }));
    drop(sio);

    publish(&served, "user:alice", "missed 1").await;
    publish(&served, "org:acme:ch:general", "missed 2").await;
    publish(&served, "user:alice", "missed 3").await;
    let auth = json!({ "token": token("alice"), "pid": pid, "offset": offset });
    let (mut sio, same) = reconnect(served.http, auth).await;
    assert_eq!(same, pid, "recovered: the same pid");
    // Channel by channel in the order they were subscribed, each in offset order; the
    // channel without history is back too, and says it recovered nothing.
    let mut texts = Vec::new();
    while texts.len() < 3 {
        texts.push(sio.publication().await.1["text"].clone());
    }
    assert_eq!(
        texts,
        [json!("missed 1"), json!("missed 3"), json!("missed 2")]
    );
    let news = event_args(&sio.packet().await);
    assert_eq!(news[0], "herald:subscribed");
    assert_eq!(news[1]["channel"], "public:news");
    assert_eq!(news[1]["recoverable"], false);
    // Live again, on every channel, without subscribing again.
    for channel in ["org:acme:ch:general", "public:news", "user:alice"] {
        publish(&served, channel, "live").await;
        assert_eq!(
            sio.publication().await.1,
            json!({ "text": "live" }),
            "{channel}"
        );
    }
    sio.send(r#"421["herald:subscribe","user:alice"]"#).await;
    assert_eq!(sio.ack(1).await["error"]["code"], 105, "already subscribed");
}

#[tokio::test]
async fn what_cannot_be_recovered_gets_a_new_pid_and_a_fresh_session() {
    let served = serve(|_| {}).await;
    let (mut sio, pid) = reconnect(served.http, json!({ "token": token("alice") })).await;
    sio.send(r#"421["herald:subscribe","user:alice"]"#).await;
    assert_eq!(sio.ack(1).await["ok"], true);
    publish(&served, "user:alice", "seen").await;
    let (_, _, offset) = sio.publication().await;
    drop(sio);
    publish(&served, "user:alice", "missed").await;

    let (_, epoch_and_offset) = offset.split_once(',').expect("user:alice's position");
    let (epoch, _) = epoch_and_offset.split_once(',').unwrap();
    let cases = [
        (
            "another user's pid",
            token("bob"),
            pid.clone(),
            offset.clone(),
        ),
        (
            "a forged pid",
            token("alice"),
            format!("x{pid}"),
            offset.clone(),
        ),
        (
            "an offset that does not parse",
            token("alice"),
            pid.clone(),
            "h1;user:alice".into(),
        ),
        (
            "a lost epoch",
            token("alice"),
            pid.clone(),
            "h1;user:alice,gone,1".into(),
        ),
        (
            "a channel the token does not allow",
            token("alice"),
            pid.clone(),
            format!("h1;user:bob,{epoch},1"),
        ),
    ];
    for (case, token, sent, offset) in cases {
        let auth = json!({ "token": token, "pid": sent, "offset": offset });
        let (mut sio, got) = reconnect(served.http, auth).await;
        assert_ne!(got, pid, "{case}: not recovered, a new pid");
        assert!(!got.is_empty());
        // Nothing of the old session: the next packet answers this subscribe.
        sio.send(r#"421["herald:subscribe","public:news"]"#).await;
        let answer = sio.packet().await;
        assert!(answer.starts_with("431["), "{case}: {answer}");
    }
    // The client's own pid and offset still recover after all that.
    let auth = json!({ "token": token("alice"), "pid": pid, "offset": offset });
    let (mut sio, same) = reconnect(served.http, auth).await;
    assert_eq!(same, pid);
    assert_eq!(sio.publication().await.1, json!({ "text": "missed" }));
}
