//! The client against a tiny in-process WebSocket server (no Herald gateway needed).

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use super::*;

/// Serves one connection: answers `connect` and `ping` (the latter together with a push, in
/// one frame), fails `publish`, answers `rpc` with its data (method `nope` with error 1404),
/// ignores `silent`, and on `bye` sends a disconnect push and closes with 4201.
#[allow(clippy::result_large_err)] // the upgrade callback's signature is tungstenite's
async fn mock_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let select_protocol = |request: &Request, mut response: Response| {
            if let Some(protocol) = request.headers().get("sec-websocket-protocol") {
                response
                    .headers_mut()
                    .insert("sec-websocket-protocol", protocol.clone());
            }
            Ok(response)
        };
        let mut socket = tokio_tungstenite::accept_hdr_async(stream, select_protocol)
            .await
            .unwrap();
        while let Some(Ok(message)) = socket.next().await {
            let Message::Text(text) = message else {
                continue;
            };
            let command: Value = serde_json::from_str(&text).unwrap();
            let id = &command["id"];
            let reply = if command.get("connect").is_some() {
                assert_eq!(command["connect"]["name"], "herald-rust");
                json!({"id": id, "result": {"client": "c1", "user": command["connect"]["token"], "node": "n1", "ping": 25, "expires": 0}}).to_string()
            } else if command.get("ping").is_some() {
                let push = json!({"push": {"channel": "a:b", "pub": {"event": "e", "data": [1], "offset": 1, "epoch": "x", "ts": 2}}});
                format!("{}\n{push}\n", json!({"id": id, "result": {"ts": 7}}))
            } else if let Some(rpc) = command.get("rpc") {
                match rpc["method"].as_str() {
                    Some("nope") => json!({"id": id, "error": {"code": 1404, "message": "unknown method", "temporary": false}}),
                    _ => json!({"id": id, "result": {"data": rpc["data"]}}),
                }
                .to_string()
            } else if command.get("publish").is_some() {
                json!({"id": id, "error": {"code": 103, "message": "permission denied", "temporary": false}}).to_string()
            } else if command.get("bye").is_some() {
                let push = json!({"push": {"disconnect": {"code": 4201, "reason": "slow consumer", "reconnect": true}}});
                socket.send(Message::text(push.to_string())).await.unwrap();
                let frame = CloseFrame {
                    code: CloseCode::from(4201),
                    reason: Utf8Bytes::from("slow consumer"),
                };
                socket.send(Message::Close(Some(frame))).await.unwrap();
                continue;
            } else {
                continue;
            };
            socket.send(Message::text(reply)).await.unwrap();
        }
    });
    format!("ws://{address}/ws")
}

#[tokio::test]
async fn requests_pushes_and_server_close() {
    let url = mock_server().await;
    let mut options = ConnectOptions::new(url).header("Origin", "http://localhost");
    options.request_timeout = Duration::from_millis(300);
    let client = Client::open(options).await.unwrap();
    assert_eq!(client.subprotocol(), Some("herald.v1.json"));

    let connected = client.handshake(Some("alice")).await.unwrap();
    assert_eq!(
        (connected.client.as_str(), connected.user.as_str()),
        ("c1", "alice")
    );
    assert_eq!(client.ping().await.unwrap().ts, 7);
    let push = client.next_push().await.unwrap();
    assert_eq!(
        push.publication.unwrap().position(),
        StreamPosition {
            offset: 1,
            epoch: "x".into()
        }
    );

    let error = client.publish("a:b", "e", json!({})).await.unwrap_err();
    assert_eq!(error.server_code(), Some(103));
    let data = json!({"text": "hi"});
    assert_eq!(client.rpc("m:send", data.clone()).await.unwrap(), data);
    assert_eq!(
        client.rpc("m:send", Value::Null).await.unwrap(),
        Value::Null
    );
    let error = client.rpc("nope", json!(1)).await.unwrap_err();
    assert_eq!(error.server_code(), Some(1404));
    assert!(matches!(
        client.request("silent", json!({})).await,
        Err(ClientError::Timeout)
    ));

    let error = client.request("bye", json!({})).await.unwrap_err();
    assert_eq!(error.close_code(), Some(4201));
    let info = client.closed().await.unwrap();
    assert_eq!((info.code, info.reason.as_str()), (4201, "slow consumer"));
    assert_eq!(
        client.next_push().await.unwrap().disconnect.unwrap().code,
        4201
    );
    assert!(client.next_push().await.is_none());
    assert!(matches!(
        client.ping().await,
        Err(ClientError::Closed(Some(CloseInfo { code: 4201, .. })))
    ));
}

#[tokio::test]
async fn client_close_ends_the_connection() {
    let url = mock_server().await;
    let client = Client::open(ConnectOptions::new(url)).await.unwrap();
    client.pause_reading();
    client.close().await.unwrap();
}

#[test]
fn client_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Client>();
}
