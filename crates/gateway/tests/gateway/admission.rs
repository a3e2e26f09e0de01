//! Hostile clients before authentication: trickled request heads, idle keep-alive, the
//! pending budget (per IP and per node), and a shutdown that nothing can hold open.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use herald_client::{Client, ConnectOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::common::*;

/// A source address other than 127.0.0.1 (Linux routes all of 127/8 to loopback), so one
/// test can be two clients.
const OTHER_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

async fn tcp_from(source: IpAddr, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(source, 0)).unwrap();
    within("TCP connect", socket.connect(to))
        .await
        .expect("TCP connects")
}

/// Reads until the server closes the connection; returns what it sent.
async fn read_to_close(tcp: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    // A reset (the server dropped unread input) is a close too.
    let _ = tcp.read_to_end(&mut received).await;
    received
}

/// A WebSocket upgrade from `source` that never sends `connect`.
async fn idle_websocket(
    source: IpAddr,
    gateway: &TestGateway,
) -> Result<tokio_tungstenite::WebSocketStream<TcpStream>, tokio_tungstenite::tungstenite::Error> {
    let tcp = tcp_from(source, gateway.http_addr).await;
    let mut request = gateway.ws_url.as_str().into_client_request().unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        herald_protocol::SUBPROTOCOL_JSON.parse().unwrap(),
    );
    within("the upgrade", tokio_tungstenite::client_async(request, tcp))
        .await
        .map(|(socket, _)| socket)
}

/// A request head sent one byte at a time is closed at the header-read timeout.
async fn assert_trickle_closed(addr: SocketAddr, timeout: Duration) {
    let mut tcp = tcp_from(IpAddr::V4(Ipv4Addr::LOCALHOST), addr).await;
    let started = Instant::now();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: herald\r\n")
        .await
        .unwrap();
    let (mut reader, mut writer) = tcp.into_split();
    // One header byte every 100 ms: never a complete head.
    let trickle = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if writer.write_all(b"x").await.is_err() {
                return;
            }
        }
    });
    let mut received = Vec::new();
    within("the trickled connection to be closed", async {
        let _ = reader.read_to_end(&mut received).await;
    })
    .await;
    trickle.abort();
    let elapsed = started.elapsed();
    assert!(
        elapsed >= timeout - Duration::from_millis(100),
        "{addr}: closed after {elapsed:?}, before the {timeout:?} header timeout"
    );
    assert!(
        !String::from_utf8_lossy(&received).contains("200 OK"),
        "{addr}: the trickled request was answered"
    );
}

#[tokio::test]
async fn a_trickled_request_head_and_an_idle_keep_alive_are_closed_after_the_header_timeout() {
    let timeout = Duration::from_secs(1);
    let gateway = TestGateway::with(|c| c.limits.header_read_timeout = timeout).await;
    // The HTTP and the metrics port, at the same time.
    tokio::join!(
        assert_trickle_closed(gateway.http_addr, timeout),
        assert_trickle_closed(gateway.metrics_addr, timeout),
    );

    // A keep-alive connection that answered a request and then idles goes the same way.
    let mut tcp = tcp_from(IpAddr::V4(Ipv4Addr::LOCALHOST), gateway.http_addr).await;
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: herald\r\n\r\n")
        .await
        .unwrap();
    let answered = Instant::now();
    let received = within("the idle keep-alive to be closed", read_to_close(&mut tcp)).await;
    assert!(String::from_utf8_lossy(&received).starts_with("HTTP/1.1 200"));
    assert!(
        answered.elapsed() >= timeout - Duration::from_millis(100),
        "idle keep-alive closed after {:?}",
        answered.elapsed()
    );
}

#[tokio::test]
async fn an_oversized_request_head_is_refused() {
    let gateway = TestGateway::start().await;
    let mut tcp = tcp_from(IpAddr::V4(Ipv4Addr::LOCALHOST), gateway.http_addr).await;
    let cookie = "c".repeat(100 * 1024);
    let request = format!("GET /healthz HTTP/1.1\r\nHost: herald\r\nCookie: {cookie}\r\n\r\n");
    // The server may stop reading (and close) before the whole head is written.
    let _ = tcp.write_all(request.as_bytes()).await;
    let received = within("the oversized head to be refused", read_to_close(&mut tcp)).await;
    let received = String::from_utf8_lossy(&received);
    assert!(
        received.is_empty() || received.starts_with("HTTP/1.1 431"),
        "{received}"
    );
}

#[tokio::test]
async fn the_pending_cap_per_ip_closes_the_next_connection_at_once() {
    let gateway = TestGateway::with(|c| {
        c.limits.max_pending_per_ip = 3;
        // Only the cap can close the connections here.
        c.limits.header_read_timeout = Duration::from_secs(60);
    })
    .await;
    let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
    // Connections that send nothing: pending from accept (taken in order, after these).
    let mut pending = Vec::new();
    for _ in 0..3 {
        pending.push(tcp_from(localhost, gateway.http_addr).await);
    }
    let mut refused = tcp_from(localhost, gateway.http_addr).await;
    let _ = refused
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: herald\r\n\r\n")
        .await;
    let received = within(
        "the fourth connection to be closed",
        read_to_close(&mut refused),
    )
    .await;
    assert!(received.is_empty(), "the fourth connection was answered");

    // Another address has its own budget.
    let mut other = tcp_from(OTHER_IP, gateway.http_addr).await;
    other
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: herald\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let received = within("the other address's answer", read_to_close(&mut other)).await;
    assert!(String::from_utf8_lossy(&received).starts_with("HTTP/1.1 200"));

    // A pending connection that closes frees its slot.
    drop(pending.pop());
    within("a slot to be freed", async {
        loop {
            let mut retry = tcp_from(localhost, gateway.http_addr).await;
            let _ = retry
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: herald\r\nConnection: close\r\n\r\n")
                .await;
            if !read_to_close(&mut retry).await.is_empty() {
                return;
            }
            // Pacing the retries while the server notices the close.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// Sends a `GET path` that closes the connection after the answer; what the server sent
/// before it closed (nothing when the connection was closed at accept).
async fn get_from(source: IpAddr, to: SocketAddr, path: &str) -> Vec<u8> {
    let mut tcp = tcp_from(source, to).await;
    let request = format!("GET {path} HTTP/1.1\r\nHost: herald\r\nConnection: close\r\n\r\n");
    // A connection closed at accept may refuse the write too.
    let _ = tcp.write_all(request.as_bytes()).await;
    within("the answer or the close", read_to_close(&mut tcp)).await
}

/// Retries `GET path` from `source` until it is answered: a slot was freed (the server
/// notices a closed connection a moment after the client closes it).
async fn answered_once_freed(source: IpAddr, to: SocketAddr, path: &str) {
    within("a slot to be freed", async {
        while get_from(source, to, path).await.is_empty() {
            // Pacing the retries while the server notices the close.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn the_pending_cap_per_node_closes_the_next_connection_at_accept() {
    let gateway = TestGateway::with(|c| {
        c.limits.max_pending_connections = 2;
        c.limits.max_pending_per_ip = 0;
        c.limits.header_read_timeout = Duration::from_secs(60);
    })
    .await;
    let source = |last: u8| IpAddr::V4(Ipv4Addr::new(127, 0, 0, last));
    // Two silent connections from two addresses fill the node's pending budget.
    let mut pending = vec![
        tcp_from(source(1), gateway.http_addr).await,
        tcp_from(source(2), gateway.http_addr).await,
    ];
    // A third address, with no connection of its own yet, is closed at accept.
    let refused = get_from(source(3), gateway.http_addr, "/healthz").await;
    assert!(
        refused.is_empty(),
        "the node-wide cap let a third connection in"
    );
    drop(pending.pop());
    answered_once_freed(source(3), gateway.http_addr, "/healthz").await;
}

#[tokio::test]
async fn the_metrics_port_caps_its_connections_per_address() {
    let gateway =
        TestGateway::with(|c| c.limits.header_read_timeout = Duration::from_secs(60)).await;
    let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
    // 16 per address (README, Limits); idle connections count until they close.
    let mut idle = Vec::new();
    for _ in 0..16 {
        idle.push(tcp_from(localhost, gateway.metrics_addr).await);
    }
    let refused = get_from(localhost, gateway.metrics_addr, "/metrics").await;
    assert!(
        refused.is_empty(),
        "a 17th connection from one address was served"
    );
    let scraped = get_from(OTHER_IP, gateway.metrics_addr, "/metrics").await;
    let scraped = String::from_utf8_lossy(&scraped);
    assert!(scraped.starts_with("HTTP/1.1 200"), "{scraped}");
    assert!(
        scraped.contains(r#"herald_pending_refused_total{cap="address",port="metrics"} 1"#),
        "the refusal is counted"
    );
    drop(idle.pop());
    answered_once_freed(localhost, gateway.metrics_addr, "/metrics").await;
}

/// The issue's scenario, scaled down: more never-authenticating sockets than the node has
/// connection slots, from one address, and real users still connect.
#[tokio::test]
async fn sockets_that_never_authenticate_do_not_lock_out_real_users() {
    let gateway = TestGateway::with(|c| {
        c.limits.max_connections = 2;
        c.limits.max_pending_per_ip = 4;
        c.limits.connect_timeout = Duration::from_secs(60);
    })
    .await;
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(
            idle_websocket(OTHER_IP, &gateway)
                .await
                .expect("an idle socket within the per-IP pending cap is upgraded"),
        );
    }
    assert!(
        idle_websocket(OTHER_IP, &gateway).await.is_err(),
        "a fifth pending socket from the same address is closed at accept"
    );
    let alice = gateway.member("alice").await;
    let bob = gateway.member("bob").await;
    within("ping", alice.ping()).await.unwrap();
    within("ping", bob.ping()).await.unwrap();
}

#[tokio::test]
async fn authenticated_connections_fill_the_node_and_the_next_connect_gets_4101() {
    let gateway = TestGateway::with(|c| c.limits.max_connections = 1).await;
    // Not authenticated: does not count against max_connections.
    let _idle = gateway
        .open(ConnectOptions::new(&gateway.ws_url))
        .await
        .unwrap();
    let alice = gateway.member("alice").await;
    let bob = gateway
        .open(ConnectOptions::new(&gateway.ws_url))
        .await
        .unwrap();
    let token = gateway.token("bob", &[], &[]);
    assert_eq!(
        error_code(within("connect", bob.handshake(Some(&token))).await),
        106
    );
    assert_eq!(close_code(&bob).await, 4101);
    // The refused connect released nothing of alice's.
    within("ping", alice.ping()).await.unwrap();
    drop(alice);
    within("a slot freed by alice's close", async {
        loop {
            let carol = gateway
                .open(ConnectOptions::new(&gateway.ws_url))
                .await
                .unwrap();
            let token = gateway.token("carol", &[], &[]);
            if carol.handshake(Some(&token)).await.is_ok() {
                return;
            }
            // Pacing the retries while the server notices alice's close.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// The herald binary, with a half-sent request and a WebSocket client that never reads (so
/// never answers the close), exits 0 on SIGTERM within the drain window and its grace.
#[tokio::test]
async fn sigterm_exits_zero_despite_a_half_sent_request_and_a_silent_client() {
    const DRAIN_SECONDS: u64 = 1;
    /// The server's grace after the window (server.rs), plus time to start exiting.
    const GRACE_AND_EXIT: Duration = Duration::from_secs(3);
    let Served {
        mut child, http, ..
    } = serve(|herald| {
        herald
            .env("HERALD_DRAIN_SECONDS", DRAIN_SECONDS.to_string())
            // Only the end of the drain can close the half-sent request.
            .env("HERALD_HEADER_READ_TIMEOUT_SECONDS", "60");
    })
    .await;

    let mut half_sent = TcpStream::connect(http).await.unwrap();
    half_sent
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: her")
        .await
        .unwrap();
    let auth = herald_gateway::auth::Authenticator::new(&config().jwt).unwrap();
    let token = auth.sign(&claims("alice", &[], &[], 60)).unwrap();
    let (silent, _) = within(
        "connect",
        Client::connect(&format!("ws://{http}/ws"), &token),
    )
    .await
    .unwrap();
    silent.pause_reading();
    // Both connections are served: a request on a third one is answered.
    assert_eq!(http_get(http, "/healthz").await.0, 200);

    let signalled = Instant::now();
    let pid = child.id().expect("running").to_string();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(kill.success());
    let exit = within("herald to exit", child.wait()).await.unwrap();
    let took = signalled.elapsed();
    assert!(exit.success(), "exit status {exit:?}");
    let limit = Duration::from_secs(DRAIN_SECONDS) + GRACE_AND_EXIT;
    assert!(
        took <= limit,
        "exited {took:?} after SIGTERM, over the drain window and grace ({limit:?})"
    );
    drop((half_sent, silent));
}
