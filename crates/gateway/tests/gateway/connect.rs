//! The handshake: every token transport, bad tokens, timeouts, origins, refresh.

use std::time::Duration;

use herald_client::ConnectOptions;

use crate::common::*;

#[tokio::test]
async fn connect_with_token_in_connect_message() {
    let gateway = TestGateway::start().await;
    let token = gateway.token("alice", &["acme"], &[]);
    let client = gateway
        .open(ConnectOptions::new(&gateway.ws_url))
        .await
        .unwrap();
    assert_eq!(client.subprotocol(), Some("herald.v1.json"));
    let result = within("connect", client.handshake(Some(&token)))
        .await
        .unwrap();
    assert_eq!(result.user, "alice");
    assert_eq!(result.ping, 25);
    assert!(!result.client.is_empty());
    assert!(!result.node.is_empty());
    assert!(result.expires > 0);
}

#[tokio::test]
async fn connect_with_token_in_header_or_query() {
    let gateway = TestGateway::start().await;
    let token = gateway.token("alice", &[], &[]);
    let transports = [
        ConnectOptions::new(&gateway.ws_url).header("Authorization", format!("Bearer {token}")),
        ConnectOptions::new(format!("{}?token={token}", gateway.ws_url)),
    ];
    for options in transports {
        let client = gateway.open(options).await.unwrap();
        let result = within("connect", client.handshake(None)).await.unwrap();
        assert_eq!(result.user, "alice");
    }
}

#[tokio::test]
async fn cookie_tokens_count_only_behind_an_origin_allowlist() {
    let open_gateway = TestGateway::start().await;
    let token = open_gateway.token("alice", &[], &[]);
    let cookie = format!("theme=dark; herald_token={token}");
    let client = open_gateway
        .open(ConnectOptions::new(&open_gateway.ws_url).header("Cookie", &cookie))
        .await
        .unwrap();
    assert_eq!(
        error_code(within("connect", client.handshake(None)).await),
        101,
        "no allowlist: cookie ignored"
    );

    let gateway =
        TestGateway::with(|c| c.allowed_origins = vec!["https://app.example".into()]).await;
    let options = ConnectOptions::new(&gateway.ws_url)
        .header("Origin", "https://app.example")
        .header("Cookie", &cookie);
    let client = gateway.open(options).await.unwrap();
    assert_eq!(
        within("connect", client.handshake(None))
            .await
            .unwrap()
            .user,
        "alice"
    );
}

#[tokio::test]
async fn invalid_token_is_refused_with_4001() {
    let gateway = TestGateway::start().await;
    let client = gateway
        .open(ConnectOptions::new(&gateway.ws_url))
        .await
        .unwrap();
    assert_eq!(
        error_code(within("connect", client.handshake(Some("not-a-jwt"))).await),
        101
    );
    assert_eq!(close_code(&client).await, 4001);

    let client = gateway
        .open(ConnectOptions::new(&gateway.ws_url))
        .await
        .unwrap();
    assert_eq!(
        error_code(within("connect", client.handshake(None)).await),
        101,
        "no token anywhere"
    );
    assert_eq!(close_code(&client).await, 4001);
}

#[tokio::test]
async fn expired_token_is_refused_with_4002() {
    let gateway = TestGateway::start().await;
    let token = gateway.sign(claims("alice", &[], &[], -10));
    let client = gateway
        .open(ConnectOptions::new(&gateway.ws_url))
        .await
        .unwrap();
    assert_eq!(
        error_code(within("connect", client.handshake(Some(&token))).await),
        109
    );
    assert_eq!(close_code(&client).await, 4002);
}

#[tokio::test]
async fn no_connect_within_the_timeout_closes_4001() {
    let gateway =
        TestGateway::with(|c| c.limits.connect_timeout = Duration::from_millis(300)).await;
    let client = gateway
        .open(ConnectOptions::new(&gateway.ws_url))
        .await
        .unwrap();
    assert_eq!(close_code(&client).await, 4001);
}

#[tokio::test]
async fn a_command_before_connect_is_an_error_then_4001() {
    let gateway = TestGateway::start().await;
    let client = gateway
        .open(ConnectOptions::new(&gateway.ws_url))
        .await
        .unwrap();
    assert_eq!(
        error_code(within("subscribe", client.subscribe("public:lobby")).await),
        101
    );
    assert_eq!(close_code(&client).await, 4001);
}

#[tokio::test]
async fn origin_allowlist_closes_foreign_origins_with_4003() {
    let gateway =
        TestGateway::with(|c| c.allowed_origins = vec!["https://app.example".into()]).await;
    let token = gateway.token("alice", &[], &[]);
    let evil = gateway
        .open(ConnectOptions::new(&gateway.ws_url).header("Origin", "https://evil.example"))
        .await
        .unwrap();
    assert_eq!(close_code(&evil).await, 4003);
    let good = gateway
        .open(ConnectOptions::new(&gateway.ws_url).header("Origin", "https://app.example"))
        .await
        .unwrap();
    assert_eq!(
        within("connect", good.handshake(Some(&token)))
            .await
            .unwrap()
            .user,
        "alice"
    );
}

#[tokio::test]
async fn token_expiry_closes_4002_unless_refreshed() {
    let gateway = TestGateway::start().await;
    let refreshed = gateway
        .client(&gateway.sign(claims("alice", &[], &[], 2)))
        .await;
    let expiring = gateway
        .client(&gateway.sign(claims("bob", &[], &[], 2)))
        .await;

    let result = within(
        "refresh",
        refreshed.refresh(&gateway.token("alice", &[], &[])),
    )
    .await
    .unwrap();
    assert!(result.expires > unix_now_plus(60));
    assert_eq!(
        error_code(
            within(
                "refresh",
                refreshed.refresh(&gateway.token("mallory", &[], &[]))
            )
            .await
        ),
        101,
        "a token for another user"
    );

    assert_eq!(close_code(&expiring).await, 4002);
    assert!(
        within("ping", refreshed.ping()).await.is_ok(),
        "the refreshed connection stays open"
    );
}

fn unix_now_plus(seconds: i64) -> i64 {
    herald_gateway::clock::unix_seconds() + seconds
}

#[tokio::test]
async fn commands_in_the_same_frame_as_connect_are_answered() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let gateway = TestGateway::start().await;
    let token = gateway.token("alice", &["acme"], &["org:acme:*"]);
    let (mut socket, _) = within(
        "WebSocket connect",
        tokio_tungstenite::connect_async(&gateway.ws_url),
    )
    .await
    .unwrap();
    let frame = format!(
        "{{\"id\":1,\"connect\":{{\"token\":\"{token}\"}}}}\n{{\"id\":2,\"ping\":{{}}}}\n{{\"id\":3,\"subscribe\":{{\"channel\":\"org:acme:ch:general\"}}}}"
    );
    socket.send(Message::text(frame)).await.unwrap();
    let mut answered = Vec::new();
    within("replies to ids 1, 2 and 3", async {
        while answered.len() < 3 {
            let Some(Ok(Message::Text(text))) = socket.next().await else {
                panic!("the connection ended after {answered:?}");
            };
            for line in text.lines() {
                let message: serde_json::Value = serde_json::from_str(line).unwrap();
                assert!(message.get("result").is_some(), "{message}");
                answered.push(message["id"].as_u64().unwrap());
            }
        }
    })
    .await;
    assert_eq!(answered, vec![1, 2, 3], "answered in order");
}

#[tokio::test]
async fn a_wildcard_origin_allows_any_page_but_never_its_cookie() {
    let gateway = TestGateway::with(|c| c.allowed_origins = vec!["*".into()]).await;
    let token = gateway.token("alice", &[], &[]);
    let evil_page = || {
        ConnectOptions::new(&gateway.ws_url)
            .header("Origin", "https://evil.example")
            .header("Cookie", format!("herald_token={token}"))
    };
    // Cross-site WebSocket hijacking: the victim's cookie rides along with the upgrade.
    let hijack = gateway.open(evil_page()).await.unwrap();
    assert_eq!(
        error_code(within("connect", hijack.handshake(None)).await),
        101,
        "the cookie counted under `*`"
    );
    assert_eq!(close_code(&hijack).await, 4001);

    // Any origin may still connect with a token it holds.
    let client = gateway.open(evil_page()).await.unwrap();
    let result = within("connect", client.handshake(Some(&token))).await;
    assert_eq!(result.unwrap().user, "alice");
}

#[tokio::test]
async fn behind_an_allowlist_an_upgrade_without_origin_connects_and_origin_null_is_refused() {
    let gateway =
        TestGateway::with(|c| c.allowed_origins = vec!["https://app.example".into()]).await;
    let token = gateway.token("alice", &[], &[]);
    // Browsers always send Origin on a WebSocket upgrade: without one, it is not a browser.
    let client = gateway
        .open(ConnectOptions::new(&gateway.ws_url))
        .await
        .unwrap();
    let result = within("connect", client.handshake(Some(&token))).await;
    assert_eq!(result.unwrap().user, "alice");

    for origin in ["null", "https://app.example.evil.example"] {
        let client = gateway
            .open(ConnectOptions::new(&gateway.ws_url).header("Origin", origin))
            .await
            .unwrap();
        assert_eq!(close_code(&client).await, 4003, "{origin}");
    }
}

/// Connects with `token` and returns the refusal: (error code, message, close code).
async fn refusal(gateway: &TestGateway, token: &str) -> (u32, String, u16) {
    let client = gateway
        .open(ConnectOptions::new(&gateway.ws_url))
        .await
        .unwrap();
    let error = match within("connect", client.handshake(Some(token))).await {
        Ok(result) => panic!("connected with a token that should be refused: {result:?}"),
        Err(error) => error,
    };
    let code = error
        .server_code()
        .unwrap_or_else(|| panic!("expected a server error, got {error}"));
    (code, error.to_string(), close_code(&client).await)
}

/// Signs any JSON payload with the gateway's HS256 secret.
fn sign_json(payload: serde_json::Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &payload,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

#[tokio::test]
async fn a_subscription_token_cannot_open_a_connection() {
    let gateway = TestGateway::start().await;
    let token = gateway.subscription_token("alice", "org:acme:ch:private");
    let (code, message, close) = refusal(&gateway, &token).await;
    assert_eq!((code, close), (101, 4001));
    assert!(message.contains("subscription token"), "{message}");

    // Nor can it be slipped in as a refresh of a connection.
    let alice = gateway.member("alice").await;
    assert_eq!(
        error_code(within("refresh", alice.refresh(&token)).await),
        101
    );
}

#[tokio::test]
async fn audience_may_be_an_array_and_not_before_is_enforced() {
    let gateway = TestGateway::with(|c| c.jwt.audience = Some("herald".into())).await;
    let now = herald_gateway::clock::unix_seconds();
    let listed = sign_json(serde_json::json!({
        "sub": "alice", "exp": now + 3600, "aud": ["app", "herald"]
    }));
    gateway.client(&listed).await;

    let unlisted = sign_json(serde_json::json!({
        "sub": "alice", "exp": now + 3600, "aud": ["app", "other"]
    }));
    assert_eq!(refusal(&gateway, &unlisted).await.0, 101);

    let early = sign_json(serde_json::json!({
        "sub": "alice", "exp": now + 3600, "aud": "herald", "nbf": now + 600
    }));
    let (code, message, close) = refusal(&gateway, &early).await;
    assert_eq!((code, close), (101, 4001));
    assert!(message.contains("not valid yet"), "{message}");
}

#[tokio::test]
async fn an_ec_public_key_on_another_curve_than_p256_or_p384_stops_startup() {
    // secp256k1: no JWT ES algorithm of Herald's verifies with it.
    const K256_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MFYwEAYHKoZIzj0CAQYFK4EEAAoDQgAEWElmjKnYqe8tT+4P9jvYM+z/tJ81aDKI
DGm/FcF4/nvQd9F9IrA0FewfO2Fche1vfpZ+HfOf1fkRB6am1c5xjg==
-----END PUBLIC KEY-----
";
    let mut config = config();
    config.jwt.public_key = Some(K256_PUBLIC.into());
    let error = match herald_gateway::Server::bind(config).await {
        Ok(_) => panic!("a gateway started with a secp256k1 key"),
        Err(error) => format!("{error:#}"),
    };
    assert!(error.contains("unsupported curve"), "{error}");
}
