//! The SSE fallback: `GET /sse` streams what a WebSocket would carry, `POST /rpc` takes the
//! commands, with the same handshake, replies, pushes and close codes.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;

use crate::common::{TestGateway, within};

/// `POST /rpc{query}` with `body`; the HTTP status.
async fn post(addr: SocketAddr, query: &str, body: &str) -> u16 {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "POST /rpc{query} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    within("rpc response", stream.read_to_string(&mut response))
        .await
        .unwrap();
    response.split(' ').nth(1).unwrap().parse().unwrap()
}

/// A minimal SSE client over HTTP/1.0 (the body ends with the connection, no chunking).
struct SseClient {
    addr: SocketAddr,
    reader: BufReader<OwnedReadHalf>,
    session: String,
    /// Every line of the stream after the headers, as read (up to and excluding `\n`).
    raw_lines: Vec<String>,
}

struct SseEvent {
    name: Option<String>,
    data: String,
}

impl SseClient {
    async fn open(addr: SocketAddr, query: &str) -> SseClient {
        SseClient::open_with(addr, query, &[]).await
    }

    /// Opens a stream with extra request headers (`Origin`, `Cookie`, ...).
    async fn open_with(addr: SocketAddr, query: &str, headers: &[(&str, &str)]) -> SseClient {
        let stream = within("SSE connect", TcpStream::connect(addr))
            .await
            .unwrap();
        let (read, mut write) = stream.into_split();
        let headers: String = headers
            .iter()
            .map(|(name, value)| format!("{name}: {value}\r\n"))
            .collect();
        let request = format!(
            "GET /sse{query} HTTP/1.0\r\nHost: {addr}\r\nAccept: text/event-stream\r\n{headers}\r\n"
        );
        write.write_all(request.as_bytes()).await.unwrap();
        // Keep the write half open: dropping it would half-close the connection.
        std::mem::forget(write);
        let mut reader = BufReader::new(read);
        let mut status = String::new();
        within("SSE status", reader.read_line(&mut status))
            .await
            .unwrap();
        assert!(status.contains(" 200 "), "{status}");
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).await.unwrap();
            if line == "\r\n" || line.is_empty() {
                break;
            }
        }
        let mut client = SseClient {
            addr,
            reader,
            session: String::new(),
            raw_lines: Vec::new(),
        };
        let first = client.next_event().await;
        if first.name.as_deref() == Some("session") {
            let session: Value = serde_json::from_str(&first.data).unwrap();
            client.session = session["session"].as_str().unwrap().to_owned();
        } else {
            // A refused stream says why at once.
            assert_eq!(first.name.as_deref(), Some("close"), "{}", first.data);
            client.session = first.data;
        }
        client
    }

    /// The next event, skipping comments (keep-alives).
    async fn next_event(&mut self) -> SseEvent {
        within("an SSE event", async {
            let mut name = None;
            let mut data: Vec<String> = Vec::new();
            loop {
                let mut line = String::new();
                let read = self.reader.read_line(&mut line).await.unwrap();
                assert!(read > 0, "the SSE stream ended");
                self.raw_lines
                    .push(line.strip_suffix('\n').unwrap_or(&line).to_owned());
                let line = line.trim_end_matches(['\r', '\n']);
                if line.is_empty() {
                    if name.is_some() || !data.is_empty() {
                        return SseEvent {
                            name,
                            data: data.join("\n"),
                        };
                    }
                    continue;
                }
                if let Some(value) = line.strip_prefix("event:") {
                    name = Some(value.trim().to_owned());
                } else if let Some(value) = line.strip_prefix("data:") {
                    data.push(value.strip_prefix(' ').unwrap_or(value).to_owned());
                }
            }
        })
        .await
    }

    /// The next message (frames may carry several), as JSON. Pings are skipped.
    async fn next_message(&mut self, pending: &mut Vec<Value>) -> Value {
        loop {
            if !pending.is_empty() {
                return pending.remove(0);
            }
            let event = self.next_event().await;
            if event.name.as_deref() == Some("ping") {
                continue;
            }
            assert_eq!(
                event.name, None,
                "unexpected {:?}: {}",
                event.name, event.data
            );
            for line in event.data.lines() {
                pending.push(serde_json::from_str(line).unwrap());
            }
        }
    }

    /// Posts command lines to the session; the HTTP status.
    async fn rpc(&self, session: &str, body: &str) -> u16 {
        post(self.addr, &format!("?session={session}"), body).await
    }

    /// Posts to the session with extra query parameters (`&pong`); the HTTP status.
    async fn rpc_query(&self, session: &str, query: &str, body: &str) -> u16 {
        post(self.addr, &format!("?session={session}{query}"), body).await
    }

    async fn send(&self, body: &str) {
        assert_eq!(self.rpc(&self.session, body).await, 202);
    }
}

#[tokio::test]
async fn sse_carries_the_whole_protocol() {
    let gateway = TestGateway::start().await;
    let token = gateway.token("alice", &["acme"], &["org:acme:*"]);
    let mut sse = SseClient::open(gateway.http_addr, &format!("?token={token}")).await;
    let mut pending = Vec::new();
    assert_eq!(sse.session.len(), 24);

    sse.send(r#"{"id":1,"connect":{}}"#).await;
    let connected = sse.next_message(&mut pending).await;
    assert_eq!(connected["id"], 1);
    assert_eq!(connected["result"]["user"], "alice");

    // Two commands in one POST, answered in order.
    sse.send("{\"id\":2,\"subscribe\":{\"channel\":\"org:acme:ch:sse\"}}\n{\"id\":3,\"ping\":{}}")
        .await;
    let subscribed = sse.next_message(&mut pending).await;
    assert_eq!(subscribed["id"], 2, "{subscribed}");
    assert_eq!(subscribed["result"]["recoverable"], true);
    assert_eq!(sse.next_message(&mut pending).await["id"], 3);

    gateway
        .publish(
            "org:acme:ch:sse",
            "message.created",
            serde_json::json!({"n": 1}),
        )
        .await;
    let push = sse.next_message(&mut pending).await;
    assert_eq!(push["push"]["pub"]["data"]["n"], 1, "{push}");
    assert_eq!(push["push"]["pub"]["offset"], 1);
    // A client's position is its last publication's: the channel's epoch began with it.
    let epoch = push["push"]["pub"]["epoch"].as_str().unwrap().to_owned();

    // Recovery works as on a WebSocket.
    sse.send(r#"{"id":4,"unsubscribe":{"channel":"org:acme:ch:sse"}}"#)
        .await;
    assert_eq!(sse.next_message(&mut pending).await["id"], 4);
    gateway
        .publish(
            "org:acme:ch:sse",
            "message.created",
            serde_json::json!({"n": 2}),
        )
        .await;
    let resubscribe = format!(
        r#"{{"id":5,"subscribe":{{"channel":"org:acme:ch:sse","recover":{{"offset":1,"epoch":"{epoch}"}}}}}}"#
    );
    sse.send(&resubscribe).await;
    let recovered = sse.next_message(&mut pending).await;
    assert_eq!(recovered["result"]["recovered"], true, "{recovered}");
    assert_eq!(recovered["result"]["publications"][0]["data"]["n"], 2);
}

#[tokio::test]
async fn sse_closes_with_the_websocket_close_codes() {
    let gateway = TestGateway::start().await;
    let token = gateway.token("alice", &["acme"], &["org:acme:*"]);

    // A command before `connect`: error, then close 4001.
    let mut sse = SseClient::open(gateway.http_addr, "").await;
    sse.send(r#"{"id":1,"subscribe":{"channel":"org:acme:ch:x"}}"#)
        .await;
    let error = sse.next_event().await;
    assert!(error.data.contains("\"code\":101"), "{}", error.data);
    let disconnect = sse.next_event().await;
    assert!(
        disconnect.data.contains("\"disconnect\""),
        "{}",
        disconnect.data
    );
    let close = sse.next_event().await;
    assert_eq!(close.name.as_deref(), Some("close"));
    let close: Value = serde_json::from_str(&close.data).unwrap();
    assert_eq!(close["code"], 4001);

    // A body that is not JSON: close 4000, and the session is gone.
    let mut sse = SseClient::open(gateway.http_addr, &format!("?token={token}")).await;
    sse.send(r#"{"id":1,"connect":{}}"#).await;
    sse.next_event().await;
    sse.send("this is not json").await;
    let close = loop {
        let event = sse.next_event().await;
        if event.name.as_deref() == Some("close") {
            break event;
        }
    };
    let close: Value = serde_json::from_str(&close.data).unwrap();
    assert_eq!(close["code"], 4000);
    let session = sse.session.clone();
    within("the session to be gone", async {
        while sse.rpc(&session, r#"{"id":2,"ping":{}}"#).await != 404 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(sse.rpc("no-such-session", "{}").await, 404);

    // Over the message size limit: closed 4009, as a WebSocket would be.
    let mut sse = SseClient::open(gateway.http_addr, &format!("?token={token}")).await;
    sse.send(r#"{"id":1,"connect":{}}"#).await;
    sse.next_event().await;
    let oversized = format!(r#"{{"id":2,"ping":{{"pad":"{}"}}}}"#, "x".repeat(70_000));
    sse.send(&oversized).await;
    let close = loop {
        let event = sse.next_event().await;
        if event.name.as_deref() == Some("close") {
            break event;
        }
    };
    let close: Value = serde_json::from_str(&close.data).unwrap();
    assert_eq!(close["code"], 4009);
}

#[tokio::test]
async fn sse_refuses_a_foreign_origin() {
    let gateway = TestGateway::with(|config| {
        config.allowed_origins = vec!["https://app.example".into()];
        config.limits.ping_interval = Duration::from_millis(300);
        config.limits.pong_timeout = Duration::from_millis(300);
    })
    .await;
    let refused =
        SseClient::open_with(gateway.http_addr, "", &[("Origin", "https://evil.example")]).await;
    let close: Value = serde_json::from_str(&refused.session).unwrap();
    assert_eq!(close["code"], 4003);
}

/// A gateway pinging every second, closing 4202 a second after an unanswered ping, and
/// letting commands through as fast as a test sends them.
async fn heartbeat_gateway() -> TestGateway {
    TestGateway::with(|config| {
        config.limits.ping_interval = Duration::from_secs(1);
        config.limits.pong_timeout = Duration::from_secs(1);
        config.limits.commands_per_minute = 1_000_000;
    })
    .await
}

async fn connected(gateway: &TestGateway) -> SseClient {
    let token = gateway.token("alice", &["acme"], &["org:acme:*"]);
    let mut sse = SseClient::open(gateway.http_addr, &format!("?token={token}")).await;
    sse.send(r#"{"id":1,"connect":{}}"#).await;
    let mut pending = Vec::new();
    assert_eq!(sse.next_message(&mut pending).await["id"], 1);
    sse
}

#[tokio::test]
async fn an_sse_client_that_never_answers_pings_is_closed_4202() {
    let gateway = heartbeat_gateway().await;
    let mut sse = connected(&gateway).await;
    let started = Instant::now();
    let mut pings = 0;
    let close = loop {
        let event = sse.next_event().await;
        match event.name.as_deref() {
            Some("ping") => pings += 1,
            Some("close") => break event,
            _ => {}
        }
    };
    let close: Value = serde_json::from_str(&close.data).unwrap();
    assert_eq!(close["code"], 4202, "{close}");
    assert_eq!(pings, 1, "closed after the first unanswered ping");
    // Ping interval + pong timeout, plus up to a heartbeat tick (1 s) for each.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(sse.raw_lines.iter().any(|line| line == "event: ping"));
}

/// Reads the stream for `period`, answering every ping with a pong on `/rpc`; the number
/// of pings. Fails if the stream closes.
async fn answer_pings_for(sse: &mut SseClient, period: Duration) -> usize {
    let until = Instant::now() + period;
    let mut pings = 0;
    while let Ok(event) = tokio::time::timeout_at(until.into(), sse.next_event()).await {
        match event.name.as_deref() {
            Some("ping") => {
                pings += 1;
                let session = sse.session.clone();
                assert_eq!(sse.rpc_query(&session, "&pong", "").await, 202);
            }
            Some("close") => panic!("closed while answering pings: {}", event.data),
            _ => {}
        }
    }
    pings
}

#[tokio::test]
async fn an_sse_client_that_answers_pings_stays_open() {
    let gateway = heartbeat_gateway().await;
    let mut sse = connected(&gateway).await;
    let pings = answer_pings_for(&mut sse, Duration::from_secs(8)).await;
    // A ping at most every interval + a heartbeat tick (1 s each).
    assert!(pings >= 3, "several ping periods: {pings}");
    sse.send(r#"{"id":2,"ping":{}}"#).await;
    let mut pending = Vec::new();
    assert_eq!(sse.next_message(&mut pending).await["id"], 2);
    // A pong is a pong, not a place for commands.
    let session = sse.session.clone();
    assert_eq!(sse.rpc_query(&session, "&pong", "{}").await, 400);
}

#[tokio::test]
async fn a_flood_of_sse_commands_does_not_lose_a_pong() {
    let gateway = heartbeat_gateway().await;
    let mut sse = connected(&gateway).await;
    let (addr, session) = (sse.addr, sse.session.clone());
    // Posters that keep the session's command queue full: each POST waits while it is.
    let flood: Vec<_> = (0..32)
        .map(|_| {
            let session = session.clone();
            tokio::spawn(async move {
                let body = vec![r#"{"id":9,"ping":{}}"#; 20].join("\n");
                loop {
                    let status = post(addr, &format!("?session={session}"), &body).await;
                    if status != 202 {
                        return status;
                    }
                }
            })
        })
        .collect();
    let pings = answer_pings_for(&mut sse, Duration::from_secs(8)).await;
    // A ping at most every interval + a heartbeat tick (1 s each).
    assert!(pings >= 3, "several ping periods: {pings}");
    for poster in &flood {
        assert!(!poster.is_finished(), "the session is still open");
        poster.abort();
    }
}

#[tokio::test]
async fn a_carriage_return_in_published_data_cannot_break_the_event_stream() {
    let gateway = TestGateway::with(|config| {
        let chat = crate::common::chat_namespace();
        config.namespaces.insert("chat".into(), chat);
    })
    .await;
    let token = gateway.token("alice", &["acme"], &["org:acme:*"]);
    let mut sse = SseClient::open(gateway.http_addr, &format!("?token={token}")).await;
    let mut pending = Vec::new();
    sse.send(
        "{\"id\":1,\"connect\":{}}\n{\"id\":2,\"subscribe\":{\"channel\":\"chat:acme:room\"}}",
    )
    .await;
    assert_eq!(sse.next_message(&mut pending).await["id"], 1);
    assert_eq!(sse.next_message(&mut pending).await["id"], 2);

    // `\r` is JSON whitespace, and an SSE line break.
    sse.send("{\"id\":3,\"publish\":{\"channel\":\"chat:acme:room\",\"event\":\"m\",\"data\":{\"a\":\r1,\r\"b\":[\r2]}}}")
        .await;
    let compact = serde_json::json!({"a": 1, "b": [2]});
    let mut publication = None;
    while publication.is_none() {
        let message = sse.next_message(&mut pending).await;
        if message["push"]["pub"].is_object() {
            publication = Some(message["push"]["pub"].clone());
        }
    }
    let publication = publication.unwrap();
    assert_eq!(publication["data"], compact);
    let epoch = publication["epoch"]
        .as_str()
        .expect("a stored publication")
        .to_owned();

    // From history, and recovered, on a fresh stream: the stored form is the compact one.
    let mut later = SseClient::open(gateway.http_addr, &format!("?token={token}")).await;
    let mut pending = Vec::new();
    later
        .send(&format!(
            "{{\"id\":1,\"connect\":{{}}}}\n\
             {{\"id\":2,\"history\":{{\"channel\":\"chat:acme:room\"}}}}\n\
             {{\"id\":3,\"subscribe\":{{\"channel\":\"chat:acme:room\",\
             \"recover\":{{\"offset\":0,\"epoch\":\"{epoch}\"}}}}}}"
        ))
        .await;
    assert_eq!(later.next_message(&mut pending).await["id"], 1);
    let history = later.next_message(&mut pending).await;
    assert_eq!(
        history["result"]["publications"][0]["data"], compact,
        "{history}"
    );
    let recovered = later.next_message(&mut pending).await;
    assert_eq!(recovered["result"]["recovered"], true, "{recovered}");
    assert_eq!(
        recovered["result"]["publications"][0]["data"], compact,
        "{recovered}"
    );

    // A raw line break would show as a line of no SSE field.
    let field = |line: &String| {
        line.is_empty()
            || ["event:", "data:", "id:", "retry:", ":"]
                .iter()
                .any(|f| line.starts_with(f))
    };
    for stream in [&sse, &later] {
        assert!(
            stream
                .raw_lines
                .iter()
                .all(|line| field(line) && !line.contains('\r')),
            "a raw carriage return or line feed reached the stream: {:?}",
            stream.raw_lines
        );
    }
}

/// The close code of a refused stream, or `None` when it opened a session.
fn refusal(sse: &SseClient) -> Option<u64> {
    serde_json::from_str::<Value>(&sse.session)
        .ok()
        .and_then(|close| close["code"].as_u64())
}

#[tokio::test]
async fn same_origin_sse_is_allowed_and_takes_the_cookie_but_cross_site_loads_are_refused() {
    let gateway = TestGateway::with(|config| {
        config.allowed_origins = vec!["https://app.example".into()];
    })
    .await;
    let token = gateway.token("alice", &["acme"], &["org:acme:*"]);
    let cookie = format!("theme=dark; herald_token={token}");

    // A same-origin EventSource: browsers send no Origin on a same-origin GET.
    let same_origin = [("Sec-Fetch-Site", "same-origin"), ("Cookie", &cookie)];
    let mut sse = SseClient::open_with(gateway.http_addr, "", &same_origin).await;
    assert_eq!(refusal(&sse), None, "same-origin refused: {}", sse.session);
    let mut pending = Vec::new();
    sse.send(r#"{"id":1,"connect":{}}"#).await;
    let connected = sse.next_message(&mut pending).await;
    assert_eq!(connected["result"]["user"], "alice", "{connected}");

    // A cross-site subresource load (`<img src>`) carries the cookie and no Origin either.
    for site in ["cross-site", "same-site"] {
        let headers = [("Sec-Fetch-Site", site), ("Cookie", cookie.as_str())];
        let refused = SseClient::open_with(gateway.http_addr, "", &headers).await;
        assert_eq!(refusal(&refused), Some(4003), "{site}");
    }
    // Sandboxed frames and local files send `Origin: null`, whatever site they are on.
    let headers = [("Origin", "null"), ("Cookie", cookie.as_str())];
    let refused = SseClient::open_with(gateway.http_addr, "", &headers).await;
    assert_eq!(refusal(&refused), Some(4003));

    // A listed origin still works, cross-origin.
    let headers = [
        ("Origin", "https://app.example"),
        ("Cookie", cookie.as_str()),
    ];
    let mut sse = SseClient::open_with(gateway.http_addr, "", &headers).await;
    assert_eq!(refusal(&sse), None, "{}", sse.session);
    sse.send(r#"{"id":1,"connect":{}}"#).await;
    assert_eq!(
        sse.next_message(&mut pending).await["result"]["user"],
        "alice"
    );
}

#[tokio::test]
async fn a_wildcard_origin_never_takes_the_cookie_on_sse() {
    let gateway = TestGateway::with(|config| config.allowed_origins = vec!["*".into()]).await;
    let token = gateway.token("alice", &["acme"], &["org:acme:*"]);
    let cookie = format!("herald_token={token}");
    let headers = [
        ("Origin", "https://evil.example"),
        ("Cookie", cookie.as_str()),
    ];
    let mut sse = SseClient::open_with(gateway.http_addr, "", &headers).await;
    assert_eq!(
        refusal(&sse),
        None,
        "`*` allows any origin: {}",
        sse.session
    );
    let mut pending = Vec::new();
    sse.send(r#"{"id":1,"connect":{}}"#).await;
    let reply = sse.next_message(&mut pending).await;
    assert_eq!(reply["error"]["code"], 101, "the cookie counted: {reply}");
}

/// An SSE stream is pending until its `connect` (sent on a second connection, `/rpc`)
/// succeeds: a per-IP cap of 2 fits the handshake, and the connected stream's slot is free
/// for others afterwards.
#[tokio::test]
async fn an_sse_stream_holds_a_pending_slot_only_until_connected() {
    let gateway = TestGateway::with(|c| {
        c.limits.max_pending_per_ip = 2;
        // Only the cap can close the idle connections here.
        c.limits.header_read_timeout = Duration::from_secs(60);
    })
    .await;
    let token = gateway.token("alice", &["acme"], &["org:acme:*"]);
    let mut sse = SseClient::open(gateway.http_addr, &format!("?token={token}")).await;
    let mut pending = Vec::new();
    sse.send(r#"{"id":1,"connect":{}}"#).await;
    assert_eq!(
        sse.next_message(&mut pending).await["result"]["user"],
        "alice"
    );

    // Connected: the stream no longer counts, so two more pending connections fit (once the
    // `/rpc` connection's close has been noticed).
    let _idle = TcpStream::connect(gateway.http_addr).await.unwrap();
    within("a second pending connection to be served", async {
        loop {
            let mut probe = TcpStream::connect(gateway.http_addr).await.unwrap();
            let _ = probe
                .write_all(b"GET /healthz HTTP/1.0\r\nHost: herald\r\n\r\n")
                .await;
            let mut response = String::new();
            let _ = probe.read_to_string(&mut response).await;
            if response.contains(" 200 ") {
                return;
            }
            // Pacing the retries while the server notices the `/rpc` connection's close.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// A `/rpc` body that trickles in slower than the header-read timeout allows is cut off
/// with 408, and the session stays usable.
#[tokio::test]
async fn a_trickled_rpc_body_is_refused_408_after_the_header_timeout() {
    let timeout = Duration::from_secs(1);
    let gateway = TestGateway::with(|c| c.limits.header_read_timeout = timeout).await;
    let token = gateway.token("alice", &["acme"], &[]);
    let mut sse = SseClient::open(gateway.http_addr, &format!("?token={token}")).await;

    let mut tcp = TcpStream::connect(gateway.http_addr).await.unwrap();
    let body = r#"{"id":1,"connect":{}}"#;
    let head = format!(
        "POST /rpc?session={} HTTP/1.0\r\nHost: herald\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
        sse.session,
        body.len()
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let (mut reader, mut writer) = tcp.into_split();
    let bytes = body.as_bytes().to_vec();
    // One body byte every 200 ms: the whole body would take over 4 s.
    let trickle = tokio::spawn(async move {
        for byte in bytes {
            if writer.write_all(&[byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let mut response = String::new();
    within(
        "the trickled body to be refused",
        reader.read_to_string(&mut response),
    )
    .await
    .unwrap();
    trickle.abort();
    let elapsed = started.elapsed();
    assert_eq!(response.split(' ').nth(1), Some("408"), "{response}");
    assert!(
        elapsed >= timeout - Duration::from_millis(100),
        "refused after {elapsed:?}, before the {timeout:?} timeout"
    );

    // The cut-off body reached no session; a whole one still does.
    sse.send(body).await;
    let mut pending = Vec::new();
    let reply = sse.next_message(&mut pending).await;
    assert_eq!(reply["id"], 1, "{reply}");
    assert!(reply.get("result").is_some(), "{reply}");
}
