//! Sockets that hold the gateway's resources without sending anything useful: slowloris
//! HTTP heads trickled a byte at a time, and WebSockets opened without a token and left
//! silent. Each is held until the gateway closes it or `hold` passes; the report says which.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;

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
pub fn slowloris(tasks: &mut JoinSet<(&'static str, Held)>, addr: &str, n: usize, hold: Duration) {
    for i in 0..n {
        let addr = addr.to_owned();
        tasks.spawn(async move { ("slowloris", trickle(&addr, i, hold).await) });
    }
}

async fn trickle(addr: &str, i: usize, hold: Duration) -> Held {
    let started = Instant::now();
    let Ok(mut tcp) = TcpStream::connect(addr).await else {
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
    loop {
        tokio::select! {
            read = tcp.read(&mut response) => {
                let how = match read {
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
                    return Held {
                        closed_after: Some(started.elapsed()),
                        how: format!("write failed: {:?}", error.kind()),
                    };
                }
            }
            () = tokio::time::sleep_until(deadline) => {
                return Held { closed_after: None, how: "still open".into() };
            }
        }
    }
}

/// Opens `n` WebSockets to `ws_url` without a token and sends nothing.
pub fn silent(tasks: &mut JoinSet<(&'static str, Held)>, ws_url: &str, n: usize, hold: Duration) {
    for _ in 0..n {
        let ws_url = ws_url.to_owned();
        tasks.spawn(async move { ("silent WebSocket", wait_silently(&ws_url, hold).await) });
    }
}

async fn wait_silently(ws_url: &str, hold: Duration) -> Held {
    let started = Instant::now();
    let mut ws = match tokio_tungstenite::connect_async(ws_url).await {
        Ok((ws, _)) => ws,
        Err(error) => {
            return Held {
                closed_after: Some(started.elapsed()),
                how: format!("upgrade failed: {error}"),
            };
        }
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
