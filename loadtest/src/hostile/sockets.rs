//! Sockets that hold the gateway's resources without sending anything useful: slowloris
//! HTTP heads trickled a byte at a time, and WebSockets opened without a token and left
//! silent. Each is held until the gateway closes it or `hold` passes; the report says which.
//!
//! Against a gateway on loopback, hostile sockets come from other 127.x.y.z addresses than
//! the healthy subscribers (127.0.0.1), so the gateway's per-address cap on connections
//! that have not authenticated yet applies as it would to clients on the internet.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Source addresses for hostile sockets: `127.<block>.x.y`, one per `per_address` sockets
/// (round robin over `addresses` of them for [`Sources::next`]). Empty when the gateway is
/// not on loopback: the sockets then come from wherever the system routes them.
pub struct Sources {
    block: Option<u8>,
    addresses: usize,
    next: AtomicUsize,
}

impl Sources {
    /// `block` distinguishes the kinds of socket, so each kind has addresses of its own.
    pub async fn new(target: &str, block: u8, addresses: usize) -> Sources {
        let loopback = tokio::net::lookup_host(target)
            .await
            .ok()
            .and_then(|mut addrs| addrs.next())
            .is_some_and(|addr| addr.is_ipv4() && addr.ip().is_loopback());
        Sources {
            block: loopback.then_some(block),
            addresses: addresses.max(1),
            next: AtomicUsize::new(0),
        }
    }

    /// The source of the `index`th socket, `per_address` sockets to an address.
    pub fn nth(&self, index: usize, per_address: usize) -> Option<IpAddr> {
        let block = self.block?;
        let n = index / per_address.max(1);
        // Host parts 1-254 of 127.<block>.<n / 254>.x: never 127.0.0.1, never .0 or .255.
        let [high, low] = [(n / 254) as u8, (n % 254 + 1) as u8];
        Some(IpAddr::V4(Ipv4Addr::new(127, block, high, low)))
    }

    /// The next address, round robin, so sockets opened one after another spread evenly.
    pub fn next(&self) -> Option<IpAddr> {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.addresses;
        self.nth(index, 1)
    }
}

/// Whether a WebSocket upgrade failed for want of any response: the connection was closed
/// (or reset) before the gateway answered the request head.
pub fn closed_at_accept(error: &tokio_tungstenite::tungstenite::Error) -> bool {
    use tokio_tungstenite::tungstenite::Error;
    use tokio_tungstenite::tungstenite::error::ProtocolError;
    matches!(
        error,
        Error::Io(_)
            | Error::ConnectionClosed
            | Error::Protocol(ProtocolError::HandshakeIncomplete)
    )
}

/// A TCP connection to `target` (`host:port`) from `source` when given.
pub async fn connect_from(target: &str, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let Some(source) = source else {
        return TcpStream::connect(target).await;
    };
    let addr = tokio::net::lookup_host(target)
        .await?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address"))?;
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    socket.connect(addr).await
}

/// What a connection the gateway closed before it answered anything is reported as: the
/// pending cap (per node or per address) closes new connections at accept.
pub const CLOSED_AT_ACCEPT: &str = "closed at accept (no HTTP reply)";

/// A trickled byte every this often.
const TRICKLE_EVERY: Duration = Duration::from_millis(500);

/// How one held socket ended.
#[derive(Debug)]
pub struct Held {
    /// `None`: still open when `hold` passed.
    pub closed_after: Option<Duration>,
    /// How it was closed: a close code, an HTTP status, EOF.
    pub how: String,
}

/// Opens `n` slowloris sockets to `addr`, each sending the head of a WebSocket upgrade a
/// byte every TRICKLE_EVERY and never finishing it.
pub fn slowloris(
    tasks: &mut JoinSet<(&'static str, Held)>,
    addr: &str,
    sources: impl Fn(usize) -> Option<IpAddr>,
    n: usize,
    hold: Duration,
) {
    for i in 0..n {
        let addr = addr.to_owned();
        let source = sources(i);
        tasks.spawn(async move { ("slowloris", trickle(&addr, source, i, hold).await) });
    }
}

async fn trickle(addr: &str, source: Option<IpAddr>, i: usize, hold: Duration) -> Held {
    let started = Instant::now();
    let Ok(mut tcp) = connect_from(addr, source).await else {
        return Held {
            closed_after: Some(Duration::ZERO),
            how: "TCP connect failed".into(),
        };
    };
    let head = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         X-Slowloris-{i}: {}",
        "z".repeat(1 << 16)
    );
    let mut head = head.into_bytes().into_iter();
    let mut response = [0u8; 512];
    let deadline = tokio::time::Instant::now() + hold;
    let mut sent = 0;
    loop {
        tokio::select! {
            read = tcp.read(&mut response) => {
                let how = match read {
                    // Closed before the first trickled byte: at accept.
                    Ok(0) | Err(_) if sent == 0 => CLOSED_AT_ACCEPT.to_owned(),
                    Ok(0) => "EOF".to_owned(),
                    Ok(len) => {
                        let text = String::from_utf8_lossy(&response[..len]);
                        format!("answered {:?}", text.lines().next().unwrap_or_default())
                    }
                    Err(error) => format!("{:?}", error.kind()),
                };
                return Held { closed_after: Some(started.elapsed()), how };
            }
            () = tokio::time::sleep(TRICKLE_EVERY) => {
                let byte = head.next().unwrap_or(b'z');
                if let Err(error) = tcp.write_all(&[byte]).await {
                    let how = match sent {
                        0 => CLOSED_AT_ACCEPT.to_owned(),
                        _ => format!("write failed: {:?}", error.kind()),
                    };
                    return Held { closed_after: Some(started.elapsed()), how };
                }
                sent += 1;
            }
            () = tokio::time::sleep_until(deadline) => {
                return Held { closed_after: None, how: "still open".into() };
            }
        }
    }
}

/// Opens `n` WebSockets to `ws_url` without a token and sends nothing.
pub fn silent(
    tasks: &mut JoinSet<(&'static str, Held)>,
    (ws_url, addr): (&str, &str),
    sources: impl Fn(usize) -> Option<IpAddr>,
    n: usize,
    hold: Duration,
) {
    for i in 0..n {
        let (ws_url, addr) = (ws_url.to_owned(), addr.to_owned());
        let source = sources(i);
        tasks.spawn(async move {
            let held = wait_silently(&ws_url, &addr, source, hold).await;
            ("silent WebSocket", held)
        });
    }
}

async fn wait_silently(ws_url: &str, addr: &str, source: Option<IpAddr>, hold: Duration) -> Held {
    let started = Instant::now();
    let failed = |how: String| Held {
        closed_after: Some(started.elapsed()),
        how,
    };
    let tcp = match connect_from(addr, source).await {
        Ok(tcp) => tcp,
        Err(error) => return failed(format!("TCP connect failed: {:?}", error.kind())),
    };
    let request = match ws_url.into_client_request() {
        Ok(request) => request,
        Err(error) => return failed(format!("bad URL: {error}")),
    };
    let mut ws = match tokio_tungstenite::client_async(request, tcp).await {
        Ok((ws, _)) => ws,
        Err(error) if closed_at_accept(&error) => return failed(CLOSED_AT_ACCEPT.to_owned()),
        Err(error) => return failed(format!("upgrade failed: {error}")),
    };
    let wait = async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(Some(frame)))) => {
                    return format!("{} {}", u16::from(frame.code), frame.reason);
                }
                Some(Ok(Message::Close(None))) => return "close frame without a code".into(),
                Some(Ok(_)) => {}
                Some(Err(error)) => return format!("no close frame ({error})"),
                None => return "no close frame (EOF)".into(),
            }
        }
    };
    match tokio::time::timeout(hold, wait).await {
        Ok(how) => {
            let closed_after = Some(started.elapsed());
            // Answer the close and let the gateway drop the connection first.
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                while let Some(Ok(_)) = ws.next().await {}
            })
            .await;
            Held { closed_after, how }
        }
        Err(_) => Held {
            closed_after: None,
            how: "still open".into(),
        },
    }
}
