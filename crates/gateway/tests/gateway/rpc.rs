//! Client `rpc` to the app's backend: a real tonic `herald.v1.Backend` (testkit's recorder)
//! behind the gateway. What the backend gets, what the client gets back, and every error.

use std::sync::Arc;
use std::time::Duration;

use herald_client::{ClientError, ConnectOptions};
use herald_gateway::config::{Config, Secret};
use herald_testkit::ports::free_addrs;
use herald_testkit::rpc_backend::TestBackend;
use serde_json::json;
use serde_json::value::RawValue;

use crate::common::*;

const BACKEND_TOKEN: &str = "backend-token-for-tests";

/// A gateway whose backend is `backend`, with what `adjust` changes.
async fn gateway(backend: &TestBackend, adjust: impl FnOnce(&mut Config)) -> TestGateway {
    let url = backend.url();
    TestGateway::with(|config| {
        config.backend.addr = Some(url);
        config.backend.token = Some(Secret::new(BACKEND_TOKEN));
        adjust(config);
    })
    .await
}

fn server_error(result: Result<serde_json::Value, ClientError>) -> (u32, String, bool) {
    match result {
        Err(ClientError::Server(body)) => (body.code, body.message, body.temporary),
        other => panic!("expected a server error, got {other:?}"),
    }
}

#[tokio::test]
async fn an_rpc_reaches_the_backend_with_the_connection_and_returns_its_data() {
    let backend = TestBackend::start().await;
    let gateway = gateway(&backend, |_| {}).await;
    let mut claims = claims("alice", &["acme", "globex"], &["org:acme:*"], 3600);
    claims.info = Some(Arc::from(
        RawValue::from_string(r#"{ "name": "Alice" }"#.into()).unwrap(),
    ));
    let (alice, connected) = within(
        "connect",
        herald_client::Client::connect(&gateway.ws_url, &gateway.sign(claims)),
    )
    .await
    .unwrap();

    let data = json!({"text": "hi", "n": [1, 2]});
    let echoed = within("rpc", alice.rpc("echo", data.clone()))
        .await
        .unwrap();
    assert_eq!(echoed["user"], "alice");
    assert_eq!(echoed["client"], connected.client.as_str());
    assert_eq!(echoed["orgs"], json!(["acme", "globex"]));
    assert_eq!(echoed["infoText"], r#"{"name":"Alice"}"#, "compact JSON");
    assert_eq!(echoed["method"], "echo");
    assert_eq!(echoed["data"], data);
    assert_eq!(echoed["dataText"], r#"{"n":[1,2],"text":"hi"}"#);
    assert_eq!(echoed["node"], connected.node.as_str());
    let received = backend.next_request().await;
    let bearer = format!("Bearer {BACKEND_TOKEN}");
    assert_eq!(received.authorization.as_deref(), Some(bearer.as_str()));

    // No data goes as `null`, and no data back comes as `null`.
    let echoed = within("rpc", alice.rpc("echo", json!(null))).await.unwrap();
    assert_eq!(echoed["dataText"], "null");
    let nothing = within("rpc", alice.rpc("anything", json!(1)))
        .await
        .unwrap();
    assert_eq!(nothing, json!(null));

    // The recorder is the test process's, shared by every test's gateway: series, not counts.
    let metrics = gateway.metrics().await;
    for series in [
        r#"herald_backend_requests_total{method="echo",result="ok"}"#,
        r#"herald_backend_duration_seconds_count{method="echo"}"#,
    ] {
        assert!(metrics.contains(series), "{series} in {metrics}");
    }
}

#[tokio::test]
async fn the_backends_own_errors_pass_through() {
    let backend = TestBackend::start().await;
    let gateway = gateway(&backend, |_| {}).await;
    let alice = gateway.member("alice").await;
    let refused = within("rpc", alice.rpc("refuse", json!({}))).await;
    assert_eq!(
        server_error(refused),
        (1403, "refused by the backend".to_owned(), false)
    );
    // A code below 1000 would pass for one of Herald's: it is raised to 1000.
    let low = within("rpc", alice.rpc("low", json!({}))).await;
    assert_eq!(server_error(low), (1000, "low code".to_owned(), false));
}

#[tokio::test]
async fn a_backend_that_fails_or_answers_garbage_is_unavailable() {
    let backend = TestBackend::start().await;
    let gateway = gateway(&backend, |_| {}).await;
    let alice = gateway.member("alice").await;
    for method in ["fail", "garbage"] {
        let (code, _, temporary) = server_error(within("rpc", alice.rpc(method, json!(1))).await);
        assert_eq!((code, temporary), (112, true), "{method}");
    }
}

#[tokio::test]
async fn a_backend_that_is_down_is_unavailable() {
    // Bound, read and released: nothing listens there.
    let [nowhere] = free_addrs::<1>().unwrap();
    let gateway = TestGateway::with(|config| {
        config.backend.addr = Some(format!("http://{nowhere}"));
    })
    .await;
    let alice = gateway.member("alice").await;
    let (code, message, temporary) = server_error(within("rpc", alice.rpc("echo", json!(1))).await);
    assert_eq!((code, temporary), (112, true), "{message}");
    let metrics = gateway.metrics().await;
    let series = r#"herald_backend_requests_total{method="echo",result="unavailable"}"#;
    assert!(metrics.contains(series), "{series} in {metrics}");
}

#[tokio::test]
async fn a_slow_backend_times_out_without_holding_up_the_connection() {
    let backend = TestBackend::start().await;
    let gateway = gateway(&backend, |config| {
        config.backend.timeout = Duration::from_millis(1500);
    })
    .await;
    let alice = gateway.member("alice").await;
    let rpc = alice.rpc("hold", json!(null));
    tokio::pin!(rpc);
    // Polling the rpc sends it; the backend holds it.
    tokio::select! {
        result = &mut rpc => panic!("the held rpc answered: {result:?}"),
        received = backend.next_request() => assert_eq!(received.request.method, "hold"),
    }
    // Meanwhile the session reads and answers other commands.
    tokio::select! {
        result = &mut rpc => panic!("the held rpc answered before a ping: {result:?}"),
        ping = within("ping", alice.ping()) => { ping.unwrap(); }
    }
    let (code, _, temporary) = server_error(within("rpc", rpc).await);
    assert_eq!((code, temporary), (113, true));
}

#[tokio::test]
async fn an_https_backend_is_called_over_tls_trusting_the_configured_ca() {
    let generated = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()])
        .expect("certificate generated");
    let cert = generated.cert.pem();
    let backend = TestBackend::start_tls(&cert, &generated.signing_key.serialize_pem()).await;
    let ca = std::env::temp_dir().join(format!(
        "herald-backend-ca-{}.pem",
        herald_gateway::random::random_token(10)
    ));
    std::fs::write(&ca, &cert).unwrap();
    let trusting = gateway(&backend, |config| config.backend.tls_ca = Some(ca.clone())).await;
    let alice = trusting.member("alice").await;
    let echoed = within("rpc", alice.rpc("echo", json!(1))).await.unwrap();
    assert_eq!(echoed["user"], "alice");
    // Without the CA, the webpki roots do not trust a self-signed certificate.
    let distrusting = gateway(&backend, |_| {}).await;
    let bob = distrusting.member("bob").await;
    let (code, _, _) = server_error(within("rpc", bob.rpc("echo", json!(1))).await);
    assert_eq!(code, 112);
    let _ = std::fs::remove_file(&ca);
}

#[tokio::test]
async fn only_the_allowed_methods_are_called() {
    let backend = TestBackend::start().await;
    let gateway = gateway(&backend, |config| {
        config.backend.methods = vec!["echo".into(), "message:*".into()];
    })
    .await;
    let alice = gateway.member("alice").await;
    within("rpc", alice.rpc("echo", json!(1))).await.unwrap();
    assert_eq!(
        within("rpc", alice.rpc("message:send", json!(1)))
            .await
            .unwrap(),
        json!(null)
    );
    let (code, _, temporary) = server_error(within("rpc", alice.rpc("refuse", json!(1))).await);
    assert_eq!((code, temporary), (104, false));
    // The refused one never reached the backend.
    assert_eq!(backend.next_request().await.request.method, "echo");
    assert_eq!(backend.next_request().await.request.method, "message:send");
    within("rpc", alice.rpc("echo", json!(2))).await.unwrap();
    assert_eq!(backend.next_request().await.request.method, "echo");
    let metrics = gateway.metrics().await;
    let series = r#"herald_backend_requests_total{method="refuse",result="not_allowed"}"#;
    assert!(metrics.contains(series), "{series} in {metrics}");
}

#[tokio::test]
async fn without_a_backend_rpc_is_not_configured() {
    let gateway = TestGateway::start().await;
    let alice = gateway.member("alice").await;
    let (code, message, _) = server_error(within("rpc", alice.rpc("echo", json!(1))).await);
    assert_eq!((code, message.as_str()), (108, "rpc is not configured"));
}

#[tokio::test]
async fn bad_methods_and_data_are_bad_requests() {
    let backend = TestBackend::start().await;
    let gateway = gateway(&backend, |_| {}).await;
    let alice = gateway.member("alice").await;
    for method in ["", "has space", "é", &"m".repeat(65)] {
        let result = within("rpc", alice.rpc(method, json!(1))).await;
        assert_eq!(error_code(result), 107, "{method:?}");
    }
    let deep: serde_json::Value =
        serde_json::from_str(&format!("{}{}", "[".repeat(40), "]".repeat(40))).unwrap();
    assert_eq!(
        error_code(within("rpc", alice.rpc("echo", deep)).await),
        107
    );
    let no_method = alice.request("rpc", json!({"data": 1})).await;
    assert_eq!(error_code(no_method), 107);
}

#[tokio::test]
async fn each_connection_has_an_rpc_rate() {
    let backend = TestBackend::start().await;
    let gateway = gateway(&backend, |config| config.limits.rpc_per_minute = 2).await;
    let alice = gateway.member("alice").await;
    for n in 0..2 {
        within("rpc", alice.rpc("echo", json!(n))).await.unwrap();
    }
    let (code, _, temporary) = server_error(within("rpc", alice.rpc("echo", json!(3))).await);
    assert_eq!((code, temporary), (110, true));
    let metrics = gateway.metrics().await;
    let series = r#"herald_backend_requests_total{method="echo",result="rejected"}"#;
    assert!(metrics.contains(series), "{series} in {metrics}");
    // Other commands still run, and another connection has its own rate.
    within("ping", alice.ping()).await.unwrap();
    let bob = gateway.member("bob").await;
    within("rpc", bob.rpc("echo", json!(1))).await.unwrap();
}

/// One HTTP/2 connection carries every call of the node, those in flight together included.
#[tokio::test]
async fn the_node_keeps_one_connection_to_the_backend_for_all_its_calls() {
    let backend = TestBackend::start().await;
    let gateway = gateway(&backend, |_| {}).await;
    let alice = gateway.member("alice").await;
    let bob = gateway.member("bob").await;
    for n in 0..10 {
        within("rpc", alice.rpc("echo", json!(n))).await.unwrap();
    }
    let together = (0..10).map(|n| bob.rpc("echo", json!(n)));
    for result in within("rpcs", futures_util::future::join_all(together)).await {
        result.unwrap();
    }
    assert_eq!(backend.connections(), 1);
}

#[tokio::test]
async fn rpcs_use_up_the_connections_command_budget() {
    let backend = TestBackend::start().await;
    let gateway = gateway(&backend, |config| {
        config.limits.commands_per_minute = 3;
        config.limits.rpc_per_minute = 60;
    })
    .await;
    let alice = gateway.member("alice").await; // `connect` takes one token
    for n in 0..2 {
        within("rpc", alice.rpc("echo", json!(n))).await.unwrap();
    }
    let (code, _, temporary) = server_error(within("rpc", alice.rpc("echo", json!(3))).await);
    assert_eq!(
        (code, temporary),
        (110, true),
        "the command budget, not the rpc rate"
    );
}

#[tokio::test]
async fn each_connection_has_a_cap_on_calls_in_flight() {
    let backend = TestBackend::start().await;
    let gateway = gateway(&backend, |config| {
        config.backend.timeout = Duration::from_secs(30);
    })
    .await;
    let alice = gateway.member("alice").await;
    // Sixteen held calls (ids the client's own requests do not use), each seen by the
    // backend before the next is sent.
    for id in 1_000_000..1_000_016 {
        alice
            .send_text(format!(r#"{{"id":{id},"rpc":{{"method":"hold"}}}}"#))
            .await
            .unwrap();
        backend.next_request().await;
    }
    let (code, _, _) = server_error(within("rpc", alice.rpc("echo", json!(1))).await);
    assert_eq!(code, 110);
    let bob = gateway.member("bob").await;
    within("rpc", bob.rpc("echo", json!(1))).await.unwrap();
}

#[tokio::test]
async fn rpc_round_trips_over_the_binary_codec() {
    let backend = TestBackend::start().await;
    let gateway = gateway(&backend, |_| {}).await;
    let token = gateway.token("alice", &["acme"], &["org:acme:*"]);
    let alice = gateway
        .open(ConnectOptions::new(&gateway.ws_url).binary())
        .await
        .unwrap();
    within("connect", alice.handshake(Some(&token)))
        .await
        .unwrap();
    let data = json!({"text": "héllo", "n": 1});
    let echoed = within("rpc", alice.rpc("echo", data.clone()))
        .await
        .unwrap();
    assert_eq!((&echoed["user"], &echoed["data"]), (&json!("alice"), &data));
    assert_eq!(
        within("rpc", alice.rpc("anything", json!(null)))
            .await
            .unwrap(),
        json!(null)
    );
    let refused = within("rpc", alice.rpc("refuse", json!(1))).await;
    assert_eq!(
        server_error(refused),
        (1403, "refused by the backend".to_owned(), false)
    );
}

#[tokio::test]
async fn serve_dev_runs_a_demo_backend_that_publishes_over_grpc() {
    let served = serve(|herald| {
        herald.arg("--dev");
    })
    .await;
    let (_, body) = http_get(served.http, "/dev/token?user=ada").await;
    let token: serde_json::Value = serde_json::from_str(&body).unwrap();
    let ws_url = format!("ws://{}/ws", served.http);
    let (ada, _) = within(
        "connect",
        herald_client::Client::connect(&ws_url, token["token"].as_str().unwrap()),
    )
    .await
    .unwrap();
    within("subscribe", ada.subscribe("demo:general"))
        .await
        .unwrap();
    let sent = json!({"channel": "demo:general", "text": " hello <b> "});
    let reply = within("rpc", ada.rpc("message:send", sent)).await.unwrap();
    let publication = next_publication(&ada).await;
    assert_eq!(publication.event, "message");
    assert_eq!(reply["offset"], publication.offset);
    let data: serde_json::Value = serde_json::from_str(publication.data.get()).unwrap();
    assert_eq!(
        (&data["text"], &data["user"]),
        (&json!("hello <b>"), &json!("ada"))
    );
    assert!(data["ts"].as_i64().is_some_and(|ts| ts > 0), "{data}");

    for (method, data, code) in [
        (
            "message:send",
            json!({"channel": "demo:general", "text": " "}),
            1400,
        ),
        (
            "message:send",
            json!({"channel": "org:other:ch:x", "text": "hi"}),
            1403,
        ),
        ("message:send", json!("hi"), 1400),
        ("message:edit", json!({}), 1404),
    ] {
        let result = within("rpc", ada.rpc(method, data)).await;
        assert_eq!(error_code(result), code, "{method}");
    }
}
