//! Hostile and broken input, and every limit's close code.

use std::time::Duration;

use herald_client::{ConnectOptions, Push};
use serde_json::json;

use crate::common::*;

/// Polls the metrics until a line of `series` has a value of at least 1.
async fn counted(gateway: &TestGateway, series: &str) {
    wait_for_metric(gateway.metrics_addr, series, WAIT, |value| value >= 1.0).await;
}

#[tokio::test]
async fn malformed_commands_get_error_replies_and_keep_the_connection() {
    let gateway = TestGateway::start().await;
    let alice = gateway.member("alice").await;
    let cases = [
        ("dance", json!({}), 104),
        ("subscribe", json!({"chanel": "x"}), 107),
        ("subscribe", json!({"channel": 5}), 107),
        (
            "publish",
            json!({"channel": "org:acme:ch:x", "event": "e"}),
            107,
        ),
        ("connect", json!({}), 107),
    ];
    for (method, params, code) in cases {
        let result = within(method, alice.request(method, params)).await;
        assert_eq!(error_code(result), code, "{method}");
    }
    assert!(
        within("ping", alice.ping()).await.is_ok(),
        "still connected"
    );
}

#[tokio::test]
async fn garbage_and_binary_frames_close_4000() {
    let gateway = TestGateway::start().await;
    let alice = gateway.member("alice").await;
    alice.send_text("this is not json").await.unwrap();
    assert_eq!(close_code(&alice).await, 4000);

    let bob = gateway.member("bob").await;
    bob.send_binary(vec![0, 159, 146, 150]).await.unwrap();
    assert_eq!(close_code(&bob).await, 4000);

    let carol = gateway.member("carol").await;
    carol.send_text("[1,2,3]").await.unwrap();
    assert_eq!(close_code(&carol).await, 4000);

    // Nesting deep enough to overflow a naive recursive parser's stack.
    let dave = gateway.member("dave").await;
    dave.send_text(format!(r#"{{"id":1,"ping":{}"#, "[".repeat(50_000)))
        .await
        .unwrap();
    assert_eq!(close_code(&dave).await, 4000);
    assert!(
        within("node still serves", gateway.member("erin").await.ping())
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn oversized_messages_close_4009() {
    let gateway = TestGateway::start().await;
    let alice = gateway.member("alice").await;
    let padding = "x".repeat(64 * 1024);
    alice
        .send_text(format!(r#"{{"id":1,"ping":{{}},"pad":"{padding}"}}"#))
        .await
        .unwrap();
    assert_eq!(close_code(&alice).await, 4009);
}

#[tokio::test]
async fn oversized_and_deep_publish_data_is_refused() {
    let gateway = TestGateway::with(|c| {
        c.namespaces.get_mut("org").unwrap().options.client_publish = true;
        c.limits.max_message_bytes = 4096;
    })
    .await;
    let alice = gateway.member("alice").await;
    let deep = (0..40).fold(json!(1), |inner, _| json!([inner]));
    assert_eq!(
        error_code(within("deep", alice.publish("org:acme:ch:x", "e", deep)).await),
        107
    );
    let big = json!("y".repeat(3000));
    let big_result = within(
        "big",
        alice.publish("org:acme:ch:x", "e", json!([big.clone(), big])),
    )
    .await;
    assert!(
        big_result.is_err(),
        "a 6 KB command over a 4 KB limit is refused"
    );
}

#[tokio::test]
async fn command_flood_gets_110_then_closes_4100() {
    let gateway = TestGateway::with(|c| c.limits.commands_per_minute = 5).await;
    let alice = gateway.member("alice").await; // `connect` takes one token
    for _ in 0..4 {
        within("ping", alice.ping()).await.unwrap();
    }
    assert_eq!(error_code(within("ping", alice.ping()).await), 110);
    for _ in 0..20 {
        alice.send_text(r#"{"id":99,"ping":{}}"#).await.ok();
    }
    assert_eq!(close_code(&alice).await, 4100);
}

#[tokio::test]
async fn per_user_connection_limit_closes_4101() {
    let gateway = TestGateway::with(|c| c.limits.max_connections_per_user = 2).await;
    let token = gateway.token("alice", &[], &[]);
    let _first = gateway.client(&token).await;
    let _second = gateway.client(&token).await;
    let third = gateway
        .open(ConnectOptions::new(&gateway.ws_url))
        .await
        .unwrap();
    assert_eq!(
        error_code(within("connect", third.handshake(Some(&token))).await),
        106
    );
    assert_eq!(close_code(&third).await, 4101);
    let _bob = gateway.client(&gateway.token("bob", &[], &[])).await;
}

#[tokio::test]
async fn slow_consumer_is_closed_4201_while_a_fast_one_gets_everything() {
    let gateway = TestGateway::with(|c| c.limits.client_queue_bytes = 256 * 1024).await;
    let channel = "public:firehose";
    let slow = gateway.member("slow").await;
    let fast = gateway.member("fast").await;
    within("subscribe", slow.subscribe(channel)).await.unwrap();
    within("subscribe", fast.subscribe(channel)).await.unwrap();
    slow.pause_reading();

    // Far more than the kernel's socket buffers plus the queue budget.
    let payload = "z".repeat(32 * 1024);
    let count = 1000u32;
    let publisher = {
        let mut grpc = gateway.grpc().await;
        tokio::spawn(async move {
            for n in 0..count {
                let request = herald_api::v1::PublishRequest {
                    channel: channel.into(),
                    event: "bulk".into(),
                    data: json!({"n": n, "pad": payload}).to_string().into_bytes(),
                    idempotency_key: String::new(),
                };
                grpc.publish(request).await.expect("publish");
            }
        })
    };
    // The slow one reads again as soon as the node gave up on it: a peer that takes no
    // bytes for the writer's close grace (5 s) loses its close frame, by design.
    counted(&gateway, "herald_slow_consumer_closes_total").await;
    slow.resume_reading();
    assert_eq!(close_code(&slow).await, 4201);
    // The fast one's client reads all along; it got everything, in order.
    for n in 0..count {
        let publication = next_publication(&fast).await;
        let data: serde_json::Value = serde_json::from_str(publication.data.get()).unwrap();
        assert_eq!(
            data["n"], n,
            "the fast consumer gets every publication in order"
        );
    }
    within("publisher", publisher).await.unwrap();
}

#[tokio::test]
async fn a_client_that_does_not_answer_pings_is_closed_4202() {
    let gateway = TestGateway::with(|c| {
        c.limits.ping_interval = Duration::from_secs(1);
        c.limits.pong_timeout = Duration::from_secs(1);
    })
    .await;
    let alive = gateway.member("alive").await;
    let silent = gateway.member("silent").await;
    silent.pause_reading();
    counted(&gateway, "herald_disconnects_total{code=\"4202\"}").await;
    silent.resume_reading();
    assert_eq!(close_code(&silent).await, 4202);
    assert!(
        within("ping", alive.ping()).await.is_ok(),
        "a client that answers pings stays"
    );
    // The close came with a disconnect push first, for clients that cannot see close codes.
    let mut saw_disconnect = false;
    while let Some(push) = silent.next_push().await {
        if let Push {
            disconnect: Some(disconnect),
            ..
        } = push
        {
            assert_eq!((disconnect.code, disconnect.reconnect), (4202, true));
            saw_disconnect = true;
        }
    }
    assert!(saw_disconnect);
}

#[tokio::test]
async fn invalid_lines_count_towards_the_command_rate_limit() {
    // Default limit (100 a minute): one frame (under 64 KiB) of 3,000 lines that are no
    // valid command: an unknown method, none, a bad id.
    let gateway = TestGateway::start().await;
    let alice = gateway.member("alice").await;
    let garbage = [
        r#"{"x":1}"#,
        r#"{"id":7}"#,
        r#"{"id":8,"noSuchMethod":{}}"#,
        r#"{"id":"nine","ping":{}}"#,
    ];
    let frame: Vec<&str> = garbage.iter().copied().cycle().take(3_000).collect();
    alice.send_text(frame.join("\n")).await.unwrap();
    // The old code answered all 3,000 with an error each and kept the connection open.
    assert_eq!(close_code(&alice).await, 4100);
}

/// A raw WebSocket, connected as `sub` (the herald-client cannot send pings or bad frames).
async fn raw_member(
    gateway: &TestGateway,
    sub: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let token = gateway.token(sub, &["acme"], &[]);
    let (mut socket, _) = within(
        "WebSocket connect",
        tokio_tungstenite::connect_async(&gateway.ws_url),
    )
    .await
    .unwrap();
    let connect = format!("{{\"id\":1,\"connect\":{{\"token\":\"{token}\"}}}}");
    socket.send(Message::text(connect)).await.unwrap();
    let reply = within("the connect reply", socket.next()).await;
    assert!(
        matches!(&reply, Some(Ok(Message::Text(text))) if text.contains("\"result\"")),
        "{reply:?}"
    );
    socket
}

/// Reads until the server's close frame; returns its code (None: no code, or no close).
async fn raw_close_code(
    socket: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> Option<u16> {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;

    within("the server's close", async {
        while let Some(message) = socket.next().await {
            match message {
                Ok(Message::Close(frame)) => return frame.map(|f| u16::from(f.code)),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
        None
    })
    .await
}

#[tokio::test]
async fn frames_without_commands_and_pings_count_towards_the_command_rate_limit() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;

    // Default limit (100 a minute). The old code scanned blank frames and answered pings
    // for free, forever.
    let gateway = TestGateway::start().await;
    let mut blank = raw_member(&gateway, "alice").await;
    for _ in 0..200 {
        if blank.send(Message::text("\n\n  \n")).await.is_err() {
            break;
        }
    }
    assert_eq!(raw_close_code(&mut blank).await, Some(4100));

    let mut pinger = raw_member(&gateway, "bob").await;
    for _ in 0..200 {
        if pinger.send(Message::Ping(vec![1].into())).await.is_err() {
            break;
        }
    }
    assert_eq!(raw_close_code(&mut pinger).await, Some(4100));
}

#[tokio::test]
async fn websocket_protocol_violations_close_4000() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

    let gateway = TestGateway::start().await;
    // A text frame that is not UTF-8. The old code closed with no code (clients saw 1005).
    let mut socket = raw_member(&gateway, "alice").await;
    let invalid_utf8 = Frame::message(vec![b'{', 0xff, 0xfe, b'}'], OpCode::Data(Data::Text), true);
    socket.send(Message::Frame(invalid_utf8)).await.unwrap();
    assert_eq!(raw_close_code(&mut socket).await, Some(4000));

    // A reserved opcode.
    let mut socket = raw_member(&gateway, "bob").await;
    let reserved = Frame::message(vec![1, 2, 3], OpCode::Data(Data::Reserved(3)), true);
    socket.send(Message::Frame(reserved)).await.unwrap();
    assert_eq!(raw_close_code(&mut socket).await, Some(4000));
    assert!(
        within("node still serves", gateway.member("erin").await.ping())
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn a_client_ping_gets_its_payload_back_and_a_client_close_is_answered() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

    // The session writes every frame itself (tungstenite only reads), so it answers pings
    // and the client's close in order with everything else.
    let gateway = TestGateway::start().await;
    let mut socket = raw_member(&gateway, "alice").await;
    socket
        .send(Message::Ping(b"are you there".to_vec().into()))
        .await
        .unwrap();
    let pong = within("the pong", async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Pong(payload))) => return payload,
                Some(Ok(_)) => continue,
                other => panic!("no pong: {other:?}"),
            }
        }
    })
    .await;
    assert_eq!(&pong[..], b"are you there");

    socket
        .close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "bye".into(),
        }))
        .await
        .unwrap();
    assert_eq!(raw_close_code(&mut socket).await, Some(1000));
}
