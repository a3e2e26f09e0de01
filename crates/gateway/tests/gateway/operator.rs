//! `herald publish`, `herald presence` and `herald disconnect`: the binary as an operator
//! runs it, against a live node, with the API key from the environment.

use std::process::Output;

use herald_client::Client;
use herald_testkit::client::next_publication;
use herald_testkit::tokens::member_token;
use serde_json::{Value, json};

use crate::common::*;

/// Runs `herald <args> --url <the node's gRPC>` with the test API key.
async fn operator(served: &Served, args: &[&str]) -> Output {
    let url = format!("http://{}", served.grpc);
    let mut command = herald();
    command
        .args(args)
        .args(["--url", &url])
        .env("HERALD_API_KEYS", API_KEY);
    within("herald operator command", command.output())
        .await
        .expect("herald runs")
}

fn printed(output: &Output) -> Value {
    assert!(output.status.success(), "{output:?}");
    serde_json::from_slice(&output.stdout).expect("one JSON object on stdout")
}

#[tokio::test]
async fn an_operator_publishes_reads_presence_and_disconnects_a_user() {
    let served = serve(|_| {}).await;
    let url = format!("ws://{}/ws", served.http);
    let (alice, connected) = within("connect", Client::connect(&url, &member_token("alice")))
        .await
        .expect("alice connects");
    let channel = "org:acme:ch:general";
    within("subscribe", alice.subscribe(channel)).await.unwrap();

    let publish = [
        "publish",
        "--channel",
        channel,
        "--event",
        "notice",
        "--data",
        r#"{"text": "maintenance at 5"}"#,
    ];
    let published = printed(&operator(&served, &publish).await);
    assert_eq!(published["offset"], 1);
    let publication = next_publication(&alice).await;
    assert_eq!(publication.event, "notice");
    assert_eq!(publication.data.get(), r#"{"text":"maintenance at 5"}"#);

    let presence = printed(&operator(&served, &["presence", "--channel", channel]).await);
    assert_eq!(presence["members"][0]["user"], "alice");
    assert_eq!(presence["members"][0]["client"], connected.client.as_str());
    let stats = ["presence", "--channel", channel, "--stats"];
    assert_eq!(
        printed(&operator(&served, &stats).await),
        json!({ "users": 1, "clients": 1 })
    );

    let disconnect = ["disconnect", "--user", "alice", "--code", "4001"];
    assert_eq!(
        printed(&operator(&served, &disconnect).await),
        json!({ "connections": 1 })
    );
    let closed = within("the close", alice.closed()).await.expect("closed");
    assert_eq!(closed.code, 4001);
}

#[tokio::test]
async fn an_operator_command_that_fails_says_why_and_exits_non_zero() {
    let served = serve(|_| {}).await;
    let cases: [(&[&str], &str); 3] = [
        (
            &["publish", "--channel", "nope:x", "--event", "e"],
            "unknown namespace",
        ),
        (
            &[
                "publish",
                "--channel",
                "public:x",
                "--event",
                "e",
                "--data",
                "{bad",
            ],
            "--data must be JSON",
        ),
        (&["presence", "--channel", "public:x"], "presence"),
    ];
    for (args, expected) in cases {
        let output = operator(&served, args).await;
        assert!(!output.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    let mut command = herald();
    command.args(["presence", "--channel", "public:x"]);
    let output = within("no key", command.output()).await.unwrap();
    assert!(String::from_utf8_lossy(&output.stderr).contains("HERALD_API_KEYS"));
}
