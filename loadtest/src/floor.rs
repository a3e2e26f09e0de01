//! The floor of `fanout`: what the same fan-out costs the kernel with no gateway at all.
//!
//! The load generator accepts N WebSocket connections of its own on loopback, and one plain
//! thread writes each publication to every socket with one `send(2)` (std's
//! `TcpStream::write`, the call tokio makes for the gateway's sockets): the frame Herald
//! would send (the push of `herald_protocol`'s encoder in the run's codec, with the event,
//! epoch and offsets of a real delivery of the gateway phase, in one unmasked text frame for
//! JSON or binary frame for protobuf; for Socket.IO the publication's event with the offset
//! the gateway appends for a connection holding the one channel), at the gateway phase's
//! publication rate. Subscribers count deliveries as they do for the
//! gateway; the thread's CPU per delivery is what Herald's is compared with.

use std::io::Write;
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use herald_protocol::Codec;
use herald_protocol::channel::ChannelName;
use herald_protocol::publication::Publication;
use herald_protocol::reply::ReceivedPublication;
use serde_json::value::RawValue;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

use crate::conn::Conn;
use crate::delivery::{self, Deliveries, LoadArgs, Published, Subscribers, Tally};
use crate::report::{self, Report};
use crate::{procfs, socketio};

/// Longest one connection to the floor server may take to open, and the accepting side to
/// finish once every client has connected.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest the writer thread may take to finish after the subscribers stopped reading.
const WRITER_TIMEOUT: Duration = Duration::from_secs(30);

/// What each publication of the floor looks like: the gateway's, from a real delivery.
struct Shape {
    channel: ChannelName,
    event: Arc<str>,
    epoch: Arc<str>,
    /// Whether the gateway numbered its publications (a channel with history).
    offsets: bool,
    payload_bytes: usize,
    codec: Codec,
}

/// The floor phase, measured.
pub struct Floor {
    pub tally: Tally,
    /// CPU time of the writer thread over its publish phase.
    pub cpu: Duration,
    /// Publications per second the writer was paced at (the gateway phase's).
    pub rate: f64,
    /// Bytes written to each socket per publication.
    pub frame_bytes: usize,
}

impl Floor {
    /// The floor thread's CPU per delivery, µs.
    pub fn cpu_per_delivery(&self) -> f64 {
        self.cpu.as_micros() as f64 / self.tally.delivered.max(1) as f64
    }

    /// The floor's report lines, and Herald's CPU per delivery (µs) as a ratio to it.
    pub fn report(&self, report: &mut Report, gateway_cpu_per_delivery: Option<f64>, ticks: u64) {
        report.line(
            "floor: one thread, one send(2) per socket",
            format!(
                "{} frames of {} bytes at {:.1} publications/s",
                self.tally.delivered, self.frame_bytes, self.rate
            ),
        );
        report.line("floor deliveries missing", self.tally.missing());
        report.line(
            "floor first write -> last delivery",
            report::secs(self.tally.wall),
        );
        report.latency("floor latency write -> receipt", &self.tally.from_send);
        report.line(
            "floor CPU (writer thread)",
            report::cpu(self.cpu, self.tally.wall, ticks),
        );
        report.line(
            "floor CPU per delivery",
            format!("{:.3} us", self.cpu_per_delivery()),
        );
        if let Some(ratio) = self.ratio(gateway_cpu_per_delivery) {
            report.line(
                "gateway CPU per delivery / floor",
                format!("{ratio:.2}x (same run)"),
            );
        }
    }

    /// Herald's CPU per delivery as a ratio to the floor's.
    pub fn ratio(&self, gateway_cpu_per_delivery: Option<f64>) -> Option<f64> {
        let floor = self.cpu_per_delivery();
        gateway_cpu_per_delivery
            .filter(|_| floor > 0.0)
            .map(|gateway| gateway / floor)
    }
}

/// Runs the floor phase: `load.subscribers` connections to a floor server of this process,
/// `load.publications` publications shaped like `sample` written at `rate` a second.
pub async fn measure(
    load: &LoadArgs,
    sample: &ReceivedPublication,
    rate: f64,
    ticks: u64,
) -> Result<Floor> {
    let n = load.subscribers;
    let shape = Shape {
        channel: ChannelName::parse(&load.channel)
            .map_err(|e| anyhow::anyhow!("bad channel {:?}: {e}", load.channel))?,
        event: sample.event.as_str().into(),
        epoch: sample.epoch.as_str().into(),
        offsets: sample.offset != 0,
        payload_bytes: load.payload_bytes,
        codec: load.protocol.codec(),
    };
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the floor server")?;
    let ws_url = format!("ws://{}/floor", listener.local_addr()?);
    eprintln!("floor: connecting {n} subscribers to {ws_url}");
    let accepting = tokio::spawn(accept_all(listener, n));
    let conns = match connect_all(&ws_url, shape.codec, n, load.concurrency).await {
        Ok(conns) => conns,
        Err(error) => {
            accepting.abort();
            return Err(error);
        }
    };
    let sockets = tokio::time::timeout(CONNECT_TIMEOUT, accepting)
        .await
        .context("the floor server did not finish accepting")???;
    let subscribers = Subscribers::read(conns, load.publications);

    eprintln!(
        "floor: writing {} publications at {rate:.1}/s",
        load.publications
    );
    let (done, written) = oneshot::channel();
    let publications = load.publications;
    std::thread::Builder::new()
        .name("floor".into())
        .spawn(move || {
            let _ = done.send(write_frames(sockets, &shape, publications, rate, ticks));
        })
        .context("starting the floor thread")?;
    let deliveries: Deliveries = subscribers.collect(load).await?;
    let written = tokio::time::timeout(WRITER_TIMEOUT, written)
        .await
        .context("the floor thread did not finish")?
        .context("the floor thread panicked")??;
    let published = Published::without_rpc(written.first_write, written.publish_time);
    Ok(Floor {
        tally: Tally::new(&deliveries, &published, load),
        cpu: written.cpu,
        rate,
        frame_bytes: written.frame_bytes,
    })
}

/// Accepts `n` WebSocket connections, each upgraded within [`CONNECT_TIMEOUT`], and returns
/// their sockets, blocking, for the writer thread.
async fn accept_all(listener: TcpListener, n: usize) -> Result<Vec<TcpStream>> {
    let mut handshakes = JoinSet::new();
    let mut sockets = Vec::with_capacity(n);
    let mut accepted = 0;
    while sockets.len() < n {
        tokio::select! {
            incoming = listener.accept(), if accepted < n => {
                let (tcp, _) = incoming.context("accepting a floor connection")?;
                accepted += 1;
                handshakes.spawn(tokio::time::timeout(CONNECT_TIMEOUT, upgrade(tcp)));
            }
            Some(joined) = handshakes.join_next() => {
                let socket = joined?.context("a floor WebSocket upgrade timed out")??;
                sockets.push(socket);
            }
        }
    }
    Ok(sockets)
}

/// The server side of one WebSocket upgrade, answering with the client's subprotocol as
/// the gateway does; then the plain socket, blocking, with Nagle off (as the gateway's).
async fn upgrade(tcp: tokio::net::TcpStream) -> Result<TcpStream> {
    // Nothing is read after the upgrade: a small buffer, not tungstenite's 128 KiB.
    let config = WebSocketConfig::default().read_buffer_size(1024);
    let ws = tokio_tungstenite::accept_hdr_async_with_config(tcp, echo_protocol, Some(config))
        .await
        .context("floor WebSocket upgrade")?;
    let socket = ws.into_inner().into_std()?;
    socket.set_nonblocking(false)?;
    socket.set_nodelay(true)?;
    Ok(socket)
}

#[expect(
    clippy::result_large_err,
    reason = "the signature of tungstenite's handshake callback"
)]
fn echo_protocol(request: &Request, mut response: Response) -> Result<Response, ErrorResponse> {
    if let Some(protocol) = request.headers().get("sec-websocket-protocol") {
        response
            .headers_mut()
            .insert("sec-websocket-protocol", protocol.clone());
    }
    Ok(response)
}

/// Opens `n` connections to the floor server, at most `concurrency` at a time.
async fn connect_all(
    ws_url: &str,
    codec: Codec,
    n: usize,
    concurrency: usize,
) -> Result<Vec<Conn>> {
    let ws_url: Arc<str> = ws_url.into();
    let mut opening = JoinSet::new();
    let mut conns = Vec::with_capacity(n);
    let mut next = 0;
    while conns.len() < n {
        while next < n && opening.len() < concurrency.max(1) {
            let ws_url = ws_url.clone();
            opening.spawn(async move {
                tokio::time::timeout(CONNECT_TIMEOUT, Conn::upgrade(&ws_url, codec)).await
            });
            next += 1;
        }
        let Some(joined) = opening.join_next().await else {
            bail!("floor: only {} of {n} connections opened", conns.len());
        };
        match joined? {
            Ok(Ok(conn)) => conns.push(conn),
            Ok(Err(error)) => bail!(
                "floor: connection {} of {n} failed: {error}",
                conns.len() + 1
            ),
            Err(_) => bail!("floor: a connection did not open within {CONNECT_TIMEOUT:?}"),
        }
    }
    Ok(conns)
}

/// What the writer thread did.
struct Written {
    first_write: Instant,
    publish_time: Duration,
    cpu: Duration,
    frame_bytes: usize,
}

/// The writer thread: encodes each publication's frame once and writes it to every socket,
/// `rate` publications a second; measures its own CPU time over that.
fn write_frames(
    sockets: Vec<TcpStream>,
    shape: &Shape,
    publications: usize,
    rate: f64,
    ticks: u64,
) -> Result<Written> {
    let cpu_start = procfs::thread_cpu_time(ticks)?;
    let first_write = Instant::now();
    let mut frame = Vec::new();
    for seq in 0..publications {
        if rate > 0.0 {
            // Pacing, as the gateway phase's publisher paces its RPCs.
            let due = first_write + Duration::from_secs_f64(seq as f64 / rate);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        frame.clear();
        encode(shape, seq, &mut frame)?;
        for mut socket in &sockets {
            socket
                .write_all(&frame)
                .with_context(|| format!("floor: writing publication {seq}"))?;
        }
    }
    let publish_time = first_write.elapsed();
    Ok(Written {
        first_write,
        publish_time,
        cpu: procfs::thread_cpu_time(ticks)? - cpu_start,
        frame_bytes: frame.len(),
    })
}

/// Publication `seq` as the gateway encodes it in the shape's codec, in a text frame (JSON,
/// Socket.IO) or a binary one (protobuf). The gateway encodes it once per publication, but
/// for Socket.IO appends each connection's offset; here all connections hold the one channel,
/// so every frame is the same.
fn encode(shape: &Shape, seq: usize, frame: &mut Vec<u8>) -> Result<()> {
    let data = RawValue::from_string(delivery::payload(seq, shape.payload_bytes))?;
    let publication = Publication {
        channel: shape.channel.clone(),
        event: shape.event.clone(),
        data: Arc::from(data),
        offset: if shape.offsets { seq as u64 + 1 } else { 0 },
        epoch: shape.epoch.clone(),
        ts: unix_millis(),
        from: None,
    };
    let opcode = match shape.codec.is_binary() {
        true => Data::Binary,
        false => Data::Text,
    };
    let mut payload = shape.codec.publication(&publication);
    if shape.codec == Codec::SocketIo {
        let offset = socketio::render_offset(
            publication.channel.as_str(),
            &publication.epoch,
            publication.offset,
        );
        payload = herald_protocol::socketio::with_offset(&payload, &offset);
    }
    Frame::message(payload, OpCode::Data(opcode), true).format(frame)?;
    Ok(())
}

fn unix_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use herald_protocol::reply::ServerMessage;

    use super::*;

    #[test]
    fn a_floor_frame_is_one_unmasked_text_frame_holding_the_gateways_push() {
        let shape = Shape {
            channel: ChannelName::parse("bench:fanout").unwrap(),
            event: "loadtest".into(),
            epoch: "1764590000000.k3x9".into(),
            offsets: true,
            payload_bytes: 100,
            codec: Codec::Json,
        };
        let mut frame = Vec::new();
        encode(&shape, 7, &mut frame).unwrap();

        // FIN + text opcode; no mask bit, 16-bit length.
        assert_eq!(frame[..2], [0x81, 126]);
        let length = usize::from(u16::from_be_bytes([frame[2], frame[3]]));
        assert_eq!(length, frame.len() - 4);
        let message: ServerMessage = serde_json::from_slice(&frame[4..]).unwrap();
        let push = message.push.unwrap();
        assert_eq!(push.channel.as_deref(), Some("bench:fanout"));
        let publication = push.publication.unwrap();
        assert_eq!(publication.event, "loadtest");
        assert_eq!(publication.epoch, "1764590000000.k3x9");
        assert_eq!(publication.offset, 8);
        assert!(publication.data.get().starts_with(r#"{"seq":7,"#));
        assert_eq!(publication.data.get().len(), 100);

        let binary = Shape {
            codec: Codec::Proto,
            ..shape
        };
        frame.clear();
        encode(&binary, 7, &mut frame).unwrap();
        // FIN + binary opcode; no mask bit, 16-bit length.
        assert_eq!(frame[..2], [0x82, 126]);
        let length = usize::from(u16::from_be_bytes([frame[2], frame[3]]));
        assert_eq!(length, frame.len() - 4);
        let decoded = herald_protocol::binary::decode_frame(&frame[4..])
            .remove(0)
            .unwrap();
        assert_eq!(decoded.push.unwrap().publication.unwrap().offset, 8);

        let events = Shape {
            codec: Codec::SocketIo,
            ..binary
        };
        frame.clear();
        encode(&events, 7, &mut frame).unwrap();
        assert_eq!(frame[..2], [0x81, 126]);
        let text = std::str::from_utf8(&frame[4..]).unwrap();
        assert!(text.starts_with(r#"42["loadtest",{"seq":7,"#), "{text}");
        assert!(
            text.ends_with(r#","h1;bench:fanout,1764590000000.k3x9,8"]"#),
            "{text}"
        );
        let socketio::Packet::Publication {
            channel,
            publication,
        } = socketio::parse(text).unwrap()
        else {
            panic!("not a publication: {text}")
        };
        assert_eq!(channel.as_deref(), Some("bench:fanout"));
        assert_eq!(
            (&*publication.epoch, publication.offset),
            ("1764590000000.k3x9", 8)
        );
        assert_eq!(publication.data.get().len(), 100);
    }
}
