//! Health, readiness, metrics, drain, and the `herald` binary's commands.

use std::net::{SocketAddr, TcpListener};
use std::process::Stdio;
use std::time::Duration;

use herald_client::Client;
use serde_json::json;
use tokio::process::Command;

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

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn herald() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_herald"));
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .kill_on_drop(true);
    command
}

#[tokio::test]
async fn sigterm_drains_then_exits_zero() {
    let (http, grpc, metrics) = (free_addr(), free_addr(), free_addr());
    let mut child = herald()
        .arg("serve")
        .env("HERALD_HTTP_ADDR", http.to_string())
        .env("HERALD_GRPC_ADDR", grpc.to_string())
        .env("HERALD_METRICS_ADDR", metrics.to_string())
        .env("HERALD_JWT_SECRET", SECRET)
        .env("HERALD_API_KEYS", API_KEY)
        .env("HERALD_DRAIN_SECONDS", "2")
        .env("HERALD_LOG_FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("herald starts");
    within("readiness", async {
        loop {
            if tokio::net::TcpStream::connect(http).await.is_ok()
                && http_get(http, "/readyz").await.0 == 200
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let auth = herald_gateway::auth::Authenticator::new(&config().jwt).unwrap();
    let token = auth.sign(&claims("alice", &[], &[], 60)).unwrap();
    let (client, _) = within(
        "connect",
        Client::connect(&format!("ws://{http}/ws"), &token),
    )
    .await
    .unwrap();

    let pid = child.id().expect("running").to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    // The signal is handled asynchronously: wait for readiness to drop rather than
    // racing it. The HTTP listener stays up for the whole drain window.
    within("/readyz to turn 503 while draining", async {
        while http_get(http, "/readyz").await.0 != 503 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(close_code(&client).await, 4200);
    let exit = within("exit", child.wait()).await.unwrap();
    assert!(exit.success(), "exit status {exit:?}");
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
    assert_eq!(members[0].user, "ada");
    client
        .subscribe("org:demo")
        .await
        .expect("demo users are in org demo");

    let production = TestGateway::start().await;
    assert_eq!(production.http_get("/").await.0, 404);
    assert_eq!(production.http_get("/dev/token?user=ada").await.0, 404);
}
