//! Health, readiness, metrics, drain, and the `herald` binary's commands.

use std::time::Duration;

use herald_client::{Client, ConnectOptions};
use herald_gateway::Server;
use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn health_and_readiness() {
    let gateway = TestGateway::start().await;
    assert_eq!(gateway.http_get("/healthz").await.0, 200);
    assert_eq!(gateway.http_get("/readyz").await, (200, "ready".to_owned()));
}

#[tokio::test]
async fn metrics_after_traffic() {
    let gateway = TestGateway::start().await;
    let alice = gateway.member("alice").await;
    within("subscribe", alice.subscribe("org:acme:ch:metrics"))
        .await
        .unwrap();
    gateway.publish("org:acme:ch:metrics", "m", json!(1)).await;
    next_publication(&alice).await;
    let metrics = gateway.metrics().await;
    for name in [
        "herald_connections ",
        "herald_subscriptions ",
        "herald_publications_total{origin=\"api\"}",
        "herald_deliveries_total ",
        "herald_client_commands_total{method=\"subscribe\",result=\"ok\"}",
        "herald_publish_duration_seconds_bucket",
        "herald_grpc_requests_total{method=\"Publish\",code=\"Ok\"}",
    ] {
        assert!(
            metrics.lines().any(|line| line.starts_with(name)),
            "{name} missing from:\n{metrics}"
        );
    }
}

#[tokio::test]
async fn shutdown_closes_connections_with_4200() {
    let gateway = TestGateway::start().await;
    let alice = gateway.member("alice").await;
    let bob = gateway.member("bob").await;
    let (alice_closed, bob_closed) =
        tokio::join!(close_code(&alice), close_code(&bob), gateway.shutdown()).into_pair();
    assert_eq!((alice_closed, bob_closed), (4200, 4200));
}

trait IntoPair<A, B> {
    fn into_pair(self) -> (A, B);
}

impl<A, B, C> IntoPair<A, B> for (A, B, C) {
    fn into_pair(self) -> (A, B) {
        (self.0, self.1)
    }
}

/// The drain window of the SIGTERM test: long enough that the checks made within the
/// first two seconds after the signal are well inside it.
const DRAIN_SECONDS: u64 = 3;

#[tokio::test]
async fn sigterm_drains_then_exits_zero() {
    let window = Duration::from_secs(DRAIN_SECONDS);
    // Returns once the listeners are bound (and the signal handlers installed).
    let Served {
        mut child,
        mut logs,
        http,
        ..
    } = serve(|herald| {
        herald.env("HERALD_DRAIN_SECONDS", DRAIN_SECONDS.to_string());
    })
    .await;
    assert_eq!(http_get(http, "/readyz").await, (200, "ready".to_owned()));
    let auth = herald_gateway::auth::Authenticator::new(&config().jwt).unwrap();
    let token = auth.sign(&claims("alice", &[], &[], 60)).unwrap();
    let (alice, _) = within(
        "connect",
        Client::connect(&format!("ws://{http}/ws"), &token),
    )
    .await
    .unwrap();

    let signalled = tokio::time::Instant::now();
    let pid = child.id().expect("running").to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    logs.message("draining").await;
    assert_eq!(
        http_get(http, "/readyz").await,
        (503, "draining".to_owned())
    );
    assert_eq!(http_get(http, "/healthz").await.0, 200);

    // A WebSocket opened during the drain is accepted and told to go elsewhere at once.
    let late = within(
        "the upgrade during the drain",
        Client::open(ConnectOptions::new(format!("ws://{http}/ws"))),
    )
    .await
    .expect("the upgrade is accepted during the drain");
    assert_disconnected_4200(&late).await;

    assert_eq!(close_code(&alice).await, 4200);
    // The window starts when the signal is handled, after `signalled`: up to a second
    // before its end, the listeners must still answer, not ready but alive.
    while signalled.elapsed() < window - Duration::from_secs(1) {
        assert_eq!(
            http_get(http, "/readyz").await.0,
            503,
            "/readyz while draining"
        );
        assert_eq!(
            http_get(http, "/healthz").await.0,
            200,
            "/healthz while draining"
        );
        // Pacing the probes, not waiting for anything.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let exit = within("exit", child.wait()).await.unwrap();
    assert!(exit.success(), "exit status {exit:?}");
    assert!(
        signalled.elapsed() >= window,
        "exited {:?} after SIGTERM, before the {window:?} drain window ended",
        signalled.elapsed()
    );
}

/// Expects a `disconnect` push with 4200 (reconnect), then the close frame with 4200.
async fn assert_disconnected_4200(client: &Client) {
    let push = within("the disconnect push", client.next_push())
        .await
        .expect("a disconnect push before the close");
    let disconnect = push.disconnect.expect("a disconnect push");
    assert_eq!((disconnect.code, disconnect.reconnect), (4200, true));
    assert_eq!(close_code(client).await, 4200);
}

/// The events of an SSE body: (event name, data).
fn sse_events(body: &str) -> Vec<(Option<String>, String)> {
    body.replace("\r\n", "\n")
        .split("\n\n")
        .filter(|event| !event.trim().is_empty())
        .map(|event| {
            let mut name = None;
            let mut data = Vec::new();
            for line in event.lines() {
                if let Some(value) = line.strip_prefix("event:") {
                    name = Some(value.trim().to_owned());
                } else if let Some(value) = line.strip_prefix("data:") {
                    data.push(value.trim_start());
                }
            }
            (name, data.join("\n"))
        })
        .collect()
}

#[tokio::test]
async fn connections_opened_during_the_drain_are_closed_4200_at_once() {
    let mut config = config();
    // Far longer than any wait here: a close that waited for the window (or a jittered
    // moment in it) would time the test out.
    config.drain = Duration::from_secs(60);
    let auth = herald_gateway::auth::Authenticator::new(&config.jwt).unwrap();
    let server = Server::bind(config).await.expect("gateway binds");
    let node = server.node().clone();
    let http = server.http_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    stop.send(()).unwrap();
    within("the drain to start", node.draining()).await;
    assert_eq!(
        http_get(http, "/readyz").await,
        (503, "draining".to_owned())
    );
    assert_eq!(http_get(http, "/healthz").await.0, 200);

    // A WebSocket upgrade: accepted, then the push and the close.
    let late = within(
        "the upgrade during the drain",
        Client::open(ConnectOptions::new(format!("ws://{http}/ws"))),
    )
    .await
    .expect("the upgrade is accepted during the drain");
    assert_disconnected_4200(&late).await;
    // With a connect right after the upgrade: the connect fails with the same close.
    let token = auth.sign(&claims("bob", &[], &[], 60)).unwrap();
    let error = within(
        "connect during the drain",
        Client::connect(&format!("ws://{http}/ws"), &token),
    )
    .await
    .expect_err("no session starts during the drain");
    assert_eq!(error.close_code(), Some(4200), "{error}");

    // The SSE fallback: a stream (200) with the push, then the close event.
    let (status, body) = http_get(http, &format!("/sse?token={token}")).await;
    assert_eq!(status, 200, "{body}");
    let events = sse_events(&body);
    assert_eq!(events.len(), 2, "{body}");
    let push: serde_json::Value = serde_json::from_str(&events[0].1).unwrap();
    assert_eq!(push["push"]["disconnect"]["code"], 4200, "{body}");
    assert_eq!(events[1].0.as_deref(), Some("close"), "{body}");
    let close: serde_json::Value = serde_json::from_str(&events[1].1).unwrap();
    assert_eq!(close["code"], 4200, "{body}");

    assert!(node.connections().is_empty(), "a connection was registered");
    running.abort();
}

/// The race the drain used to lose: a `connect` that completes as the drain starts (here:
/// already waiting when the session starts on a draining node, so the handshake and the
/// shutdown are ready at once and the session's select may pick either). The drain's list
/// of connections was taken before it registered, so only the session can close it. Over
/// a channel transport (the way the SSE fallback drives a session), because the instant
/// cannot be scheduled over a socket.
#[tokio::test]
async fn a_handshake_that_completes_during_the_drain_is_closed_4200() {
    use futures_util::SinkExt;
    use herald_gateway::session::frame::{ClientFrame, ServerFrame, TransportError};
    use herald_gateway::session::{Upgrade, run};

    let config = config();
    let auth = herald_gateway::auth::Authenticator::new(&config.jwt).unwrap();
    let node = herald_gateway::node::Node::standalone(config).unwrap();
    node.start_draining();
    let token = auth.sign(&claims("carol", &[], &[], 60)).unwrap();
    let connect = serde_json::json!({"id": 1, "connect": {"token": token}}).to_string();
    // Either branch wins half the time: 20 rounds make a pass by luck one in a million.
    for round in 0..20 {
        let (frames, mut sent) = tokio::sync::mpsc::channel::<ServerFrame>(16);
        let sink = tokio_util::sync::PollSender::new(frames)
            .sink_map_err(|_| TransportError::gone("test sink closed"));
        let incoming = futures_util::stream::iter([Ok::<_, TransportError>(ClientFrame::Text(
            connect.clone().into(),
        ))]);
        let upgrade = Upgrade {
            token: None,
            pending: None,
            permits: None,
            direct: None,
            codec: herald_protocol::Codec::Json,
        };
        within(
            "the session to end",
            run(node.clone(), sink, incoming, upgrade),
        )
        .await;
        let mut disconnect = None;
        let mut close = None;
        while let Some(frame) = sent.recv().await {
            match frame {
                ServerFrame::Text(text) => {
                    let text = String::from_utf8_lossy(&text).into_owned();
                    if text.contains("\"disconnect\"") {
                        disconnect = Some(text);
                    }
                }
                ServerFrame::Close { code, .. } => close = Some(code.code()),
                ServerFrame::Ping
                | ServerFrame::Pong(_)
                | ServerFrame::Framed(_)
                | ServerFrame::Binary(_) => {}
            }
        }
        let disconnect = disconnect
            .unwrap_or_else(|| panic!("round {round}: no disconnect push; close {close:?}"));
        assert!(disconnect.contains("4200"), "round {round}: {disconnect}");
        assert_eq!(close, Some(4200), "round {round}");
        assert!(
            node.connections().is_empty(),
            "round {round}: still registered"
        );
    }
}
#[tokio::test]
async fn serve_refuses_to_start_without_credentials_or_with_bad_config() {
    let output = within("herald serve", herald().arg("serve").output())
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("HERALD_JWT_SECRET"), "{stderr}");

    let output = within(
        "herald serve",
        herald()
            .arg("serve")
            .env("HERALD_HTTP_ADDR", "nope")
            .output(),
    )
    .await
    .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("HERALD_HTTP_ADDR"), "{stderr}");
}

#[tokio::test]
async fn config_masks_secrets_and_token_signs() {
    let output = within(
        "herald config",
        herald()
            .arg("config")
            .env("HERALD_JWT_SECRET", SECRET)
            .env("HERALD_API_KEYS", API_KEY)
            .output(),
    )
    .await
    .unwrap();
    assert!(output.status.success());
    let shown = String::from_utf8_lossy(&output.stdout);
    assert!(shown.contains("http_addr = \"0.0.0.0:8080\""), "{shown}");
    assert!(
        !shown.contains(SECRET) && !shown.contains(API_KEY),
        "secrets leaked:\n{shown}"
    );

    let output = within(
        "herald token",
        herald()
            .args([
                "token",
                "--sub",
                "alice",
                "--org",
                "acme",
                "--channel",
                "org:acme:*",
                "--ttl",
                "1h",
            ])
            .env("HERALD_JWT_SECRET", SECRET)
            .output(),
    )
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let token = String::from_utf8(output.stdout).unwrap();
    let auth = herald_gateway::auth::Authenticator::new(&config().jwt).unwrap();
    let claims = auth
        .verify(token.trim())
        .expect("the printed token verifies");
    assert_eq!(&*claims.sub, "alice");
    assert!(claims.is_member_of("acme") && claims.grants_channel("org:acme:ch:general"));
}

#[tokio::test]
async fn dev_mode_serves_the_demo_and_mints_demo_tokens() {
    let gateway = TestGateway::with(|config| *config = config.clone().into_dev()).await;
    let (status, page) = gateway.http_get("/").await;
    assert_eq!(status, 200);
    assert!(page.contains("Herald demo chat"), "{page}");
    assert_eq!(gateway.http_get("/demo.js").await.0, 200);
    assert_eq!(gateway.http_get("/dev/token?user=<script>").await.0, 400);

    let (status, body) = gateway.http_get("/dev/token?user=ada").await;
    assert_eq!(status, 200, "{body}");
    let minted: serde_json::Value = serde_json::from_str(&body).unwrap();
    let client = gateway.client(minted["token"].as_str().unwrap()).await;
    client.subscribe("demo:general").await.unwrap();
    let published = client
        .publish(
            "demo:general",
            "message.created",
            serde_json::json!({"text": "hi"}),
        )
        .await
        .expect("the demo namespace allows client publish");
    assert_eq!(published.offset, 1);
    let members = client.presence("demo:general").await.unwrap().members;
    assert_eq!(&*members[0].user, "ada");
    client
        .subscribe("org:demo")
        .await
        .expect("demo users are in org demo");

    let production = TestGateway::start().await;
    assert_eq!(production.http_get("/").await.0, 404);
    assert_eq!(production.http_get("/dev/token?user=ada").await.0, 404);
}
