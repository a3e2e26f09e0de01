//! One hostile connection at a time: open a WebSocket, send one kind of abuse, read what the
//! gateway answers until it closes the connection (or the attack is over), and count it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use rand::rngs::StdRng;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Bytes, Message};

use super::generate::{self, EVIL_ORG, Forger, Payload};
use super::sockets::{CLOSED_AT_ACCEPT, Sources, closed_at_accept, connect_from};

/// Longest wait for one reply or for the close that follows a frame.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// What every hostile connection shares.
pub struct Shared {
    pub ws_url: String,
    pub host_port: String,
    /// Where hostile connections come from.
    pub sources: Sources,
    pub forger: Forger,
    /// Frames sent by all connections so far.
    pub frames: AtomicU64,
    /// Distinct hostile users (0: one per connection).
    pub users: u64,
}

/// What hostile connections saw, added up.
#[derive(Default)]
pub struct Stats {
    /// Frames sent, by what they were.
    pub frames: BTreeMap<&'static str, u64>,
    pub connections: u64,
    /// How the gateway ended hostile connections: `4000 bad request`, ...
    pub closes: BTreeMap<String, u64>,
    /// Requests that must fail, sent.
    pub forbidden_sent: u64,
    /// ... answered with an error other than "too many requests".
    pub forbidden_refused: u64,
    /// ... answered "too many requests" (refused before being looked at).
    pub forbidden_rate_limited: u64,
    /// ... answered with a result: each one is a hole.
    pub forbidden_accepted: BTreeMap<String, u64>,
    /// Replies to mutated frames: results and error codes.
    pub mutation_replies: BTreeMap<String, u64>,
    /// Frames after which neither the owed replies nor a close came within REPLY_TIMEOUT,
    /// by what the frame was.
    pub unanswered: BTreeMap<String, u64>,
    /// Connections and their total time, by attack.
    pub time: BTreeMap<String, (u64, Duration)>,
    /// Connections the load generator could not open: why.
    pub open_failures: BTreeMap<String, u64>,
}

impl Stats {
    pub fn merge(&mut self, other: Stats) {
        fn add<K: Ord>(into: &mut BTreeMap<K, u64>, from: BTreeMap<K, u64>) {
            for (key, count) in from {
                *into.entry(key).or_default() += count;
            }
        }
        add(&mut self.frames, other.frames);
        self.connections += other.connections;
        add(&mut self.closes, other.closes);
        self.forbidden_sent += other.forbidden_sent;
        self.forbidden_refused += other.forbidden_refused;
        self.forbidden_rate_limited += other.forbidden_rate_limited;
        add(&mut self.forbidden_accepted, other.forbidden_accepted);
        add(&mut self.mutation_replies, other.mutation_replies);
        add(&mut self.unanswered, other.unanswered);
        add(&mut self.open_failures, other.open_failures);
        for (attack, (count, time)) in other.time {
            let entry = self.time.entry(attack).or_default();
            entry.0 += count;
            entry.1 += time;
        }
    }

    fn frame(&mut self, shared: &Shared, what: &'static str) {
        *self.frames.entry(what).or_default() += 1;
        shared.frames.fetch_add(1, Ordering::Relaxed);
    }

    pub fn unanswered(&mut self, what: &str) {
        *self.unanswered.entry(what.to_owned()).or_default() += 1;
    }

    fn forbidden_reply(&mut self, what: &str, reply: &Reply) {
        match reply {
            Reply::Result => *self.forbidden_accepted.entry(what.to_owned()).or_default() += 1,
            Reply::Error(110) => self.forbidden_rate_limited += 1,
            Reply::Error(_) => self.forbidden_refused += 1,
        }
    }
}

/// The kinds of hostile connection, picked at random with these weights.
#[derive(Debug, Clone, Copy)]
pub enum Attack {
    /// Mutated valid commands, after `connect` or before it.
    Mutate,
    /// Requests a connected member of one org must never get through.
    Forbidden,
    /// `connect` with an expired, alg-none, alg-confused, wrong-kind... token.
    BadToken,
    /// No token at all: commands before `connect`, `connect` without one, or nothing.
    NoToken,
    /// WebSocket pings and `ping`/`setStatus`/`typing` commands past the rate limit.
    Flood,
    /// One frame over the message size limit.
    Oversize,
    /// A WebSocket protocol violation.
    Protocol,
}

impl Attack {
    const WEIGHTED: [(Attack, u32); 7] = [
        (Attack::Mutate, 70),
        (Attack::Forbidden, 3),
        (Attack::BadToken, 10),
        (Attack::NoToken, 8),
        (Attack::Flood, 1),
        (Attack::Oversize, 3),
        (Attack::Protocol, 5),
    ];

    pub fn pick(rng: &mut StdRng) -> Attack {
        let total: u32 = Self::WEIGHTED.iter().map(|(_, w)| w).sum();
        let mut roll = rng.random_range(0..total);
        for (attack, weight) in Self::WEIGHTED {
            if roll < weight {
                return attack;
            }
            roll -= weight;
        }
        Attack::Mutate
    }
}

/// A reply to a command: a result, or an error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reply {
    Result,
    Error(u64),
}

impl Reply {
    fn label(self) -> String {
        match self {
            Reply::Result => "result".into(),
            Reply::Error(code) => format!("error {code}"),
        }
    }
}

/// How a wait ended.
enum Waited {
    Got,
    Closed,
    TimedOut,
}

/// One hostile WebSocket.
struct Hostile {
    ws: WebSocketStream<TcpStream>,
    /// How the gateway closed it, once it has.
    closed: Option<String>,
}

impl Hostile {
    /// Upgrades a TCP connection to a WebSocket, with an optional `Authorization` token or
    /// `?token=`.
    async fn open(
        shared: &Shared,
        bearer: Option<&str>,
        query_token: Option<&str>,
    ) -> Result<Hostile, String> {
        let url = match query_token {
            Some(token) => format!("{}?token={token}", shared.ws_url),
            None => shared.ws_url.clone(),
        };
        let mut request = url.into_client_request().map_err(|e| e.to_string())?;
        if let Some(token) = bearer.and_then(|t| HeaderValue::from_str(&format!("Bearer {t}")).ok())
        {
            request.headers_mut().insert("authorization", token);
        }
        let open = async {
            let tcp = connect_from(&shared.host_port, shared.sources.next())
                .await
                .map_err(|e| format!("TCP connect: {}", e.kind()))?;
            let _ = tcp.set_nodelay(true);
            let (ws, _) = tokio_tungstenite::client_async(request, tcp)
                .await
                .map_err(|e| upgrade_failure(&e))?;
            Ok(ws)
        };
        match tokio::time::timeout(REPLY_TIMEOUT, open).await {
            Ok(Ok(ws)) => Ok(Hostile { ws, closed: None }),
            Ok(Err(error)) => Err(error),
            Err(_) => Err("no upgrade in time".into()),
        }
    }

    /// Sends a message; false when the connection is gone.
    async fn send(&mut self, message: Message) -> bool {
        if self.closed.is_some() {
            return false;
        }
        match tokio::time::timeout(REPLY_TIMEOUT, self.ws.send(message)).await {
            Ok(Ok(())) => true,
            Ok(Err(_)) | Err(_) => {
                self.read_close().await;
                false
            }
        }
    }

    /// Writes bytes straight to the socket (tungstenite's buffer is empty between sends).
    async fn send_raw(&mut self, bytes: &[u8]) -> bool {
        if self.closed.is_some() {
            return false;
        }
        let write = self.ws.get_mut().write_all(bytes);
        match tokio::time::timeout(REPLY_TIMEOUT, write).await {
            Ok(Ok(())) => true,
            Ok(Err(_)) | Err(_) => {
                self.read_close().await;
                false
            }
        }
    }

    /// Reads until `want` replies (messages with `result` or `error`) came, each passed to
    /// `seen` with its id, or the connection closed, or REPLY_TIMEOUT passed.
    async fn replies(&mut self, want: usize, mut seen: impl FnMut(u64, Reply)) -> Waited {
        let mut got = 0;
        let deadline = tokio::time::Instant::now() + REPLY_TIMEOUT;
        while got < want {
            let message = match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return Waited::TimedOut,
                Ok(message) => message,
            };
            match message {
                Some(Ok(Message::Text(text))) => {
                    for line in text.split('\n').filter(|l| !l.trim().is_empty()) {
                        let Ok(value) = serde_json::from_str::<serde_json::Value>(line) else {
                            continue;
                        };
                        let id = value.get("id").and_then(|id| id.as_u64()).unwrap_or(0);
                        let reply = if value.get("result").is_some() {
                            Reply::Result
                        } else if let Some(error) = value.get("error") {
                            Reply::Error(error.get("code").and_then(|c| c.as_u64()).unwrap_or(0))
                        } else {
                            continue;
                        };
                        got += 1;
                        seen(id, reply);
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    self.closed = Some(close_key(frame));
                    self.finish_close().await;
                    return Waited::Closed;
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => {
                    self.closed = Some(format!("no close frame ({})", error_kind(&error)));
                    return Waited::Closed;
                }
                None => {
                    self.closed = Some("no close frame (EOF)".into());
                    return Waited::Closed;
                }
            }
        }
        Waited::Got
    }

    /// After a failed write: what the gateway sent before it went away.
    async fn read_close(&mut self) {
        if self.closed.is_none() {
            self.replies(usize::MAX, |_, _| {}).await;
            if self.closed.is_none() {
                self.closed = Some("no close frame (write failed)".into());
            }
        }
    }

    /// Answers the gateway's close and reads until it drops the TCP connection, so the
    /// socket's TIME_WAIT is on the gateway's side, not on the load generator's ports.
    async fn finish_close(&mut self) {
        let drain = async { while let Some(Ok(_)) = self.ws.next().await {} };
        let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
    }

    /// Ends the connection: the gateway's close, or ours when it is still open.
    async fn end(mut self, stats: &mut Stats) {
        let key = match self.closed.take() {
            Some(key) => key,
            None => {
                let _ = tokio::time::timeout(Duration::from_secs(2), self.ws.close(None)).await;
                self.finish_close().await;
                "(closed by the load generator)".into()
            }
        };
        *stats.closes.entry(key).or_default() += 1;
    }
}

fn upgrade_failure(error: &tokio_tungstenite::tungstenite::Error) -> String {
    if closed_at_accept(error) {
        CLOSED_AT_ACCEPT.to_owned()
    } else {
        format!("upgrade: {error}")
    }
}

fn close_key(frame: Option<tokio_tungstenite::tungstenite::protocol::CloseFrame>) -> String {
    match frame {
        Some(frame) => format!("{} {}", u16::from(frame.code), frame.reason),
        None => "close frame without a code".into(),
    }
}

fn error_kind(error: &tokio_tungstenite::tungstenite::Error) -> String {
    use tokio_tungstenite::tungstenite::Error;
    match error {
        Error::Io(io) => format!("{:?}", io.kind()),
        Error::Protocol(protocol) => format!("protocol: {protocol}"),
        other => other.to_string(),
    }
}

/// Runs one hostile connection of kind `attack`; `n` numbers it (user names).
pub async fn run(
    attack: Attack,
    shared: &Arc<Shared>,
    rng: &mut StdRng,
    n: u64,
    stats: &mut Stats,
) {
    let sub = match shared.users {
        0 => format!("evil-{n}"),
        users => format!("evil-{}", n % users),
    };
    let started = std::time::Instant::now();
    let result = match attack {
        Attack::Mutate => mutate(shared, rng, &sub, stats).await,
        Attack::Forbidden => forbidden(shared, rng, &sub, stats).await,
        Attack::BadToken => bad_token(shared, rng, &sub, stats).await,
        Attack::NoToken => no_token(shared, rng, stats).await,
        Attack::Flood => flood(shared, rng, &sub, stats).await,
        Attack::Oversize => oversize(shared, rng, &sub, stats).await,
        Attack::Protocol => protocol(shared, rng, &sub, stats).await,
    };
    let entry = stats.time.entry(format!("{attack:?}")).or_default();
    entry.0 += 1;
    entry.1 += started.elapsed();
    match result {
        Ok(()) => stats.connections += 1,
        Err(error) => *stats.open_failures.entry(error).or_default() += 1,
    }
}

/// Opens a connection and sends a valid `connect`; `None` (counted) if that failed.
async fn connected(shared: &Shared, sub: &str, stats: &mut Stats) -> Result<Hostile, String> {
    let mut ws = Hostile::open(shared, None, None).await?;
    let connect = json!({ "id": 1, "connect": { "token": shared.forger.valid(sub) } });
    if ws.send(Message::text(connect.to_string())).await {
        stats.frame(shared, "connect (valid)");
    }
    let mut reply = None;
    if let Waited::Got = ws.replies(1, |_, r| reply = Some(r)).await
        && reply == Some(Reply::Result)
    {
        return Ok(ws);
    }
    let why = format!("valid connect answered {:?}, closed {:?}", reply, ws.closed);
    ws.end(stats).await;
    Err(why)
}

async fn mutate(
    shared: &Shared,
    rng: &mut StdRng,
    sub: &str,
    stats: &mut Stats,
) -> Result<(), String> {
    let templates = generate::templates(&shared.forger, sub);
    let mut ws = if rng.random_bool(0.7) {
        connected(shared, sub, stats).await?
    } else {
        Hostile::open(shared, None, None).await?
    };
    for _ in 0..rng.random_range(1..=40) {
        let (what, payload) = generate::mutate(rng, &templates);
        let (sent, want) = match payload {
            Payload::Text(text) => {
                let want = generate::expected_replies(&text);
                (ws.send(Message::text(text)).await, want)
            }
            Payload::InvalidUtf8(bytes) => (
                ws.send_raw(&generate::raw_frame(0x81, &bytes, true)).await,
                1,
            ),
            Payload::Binary(bytes) => (ws.send(Message::binary(bytes)).await, 1),
        };
        if !sent {
            break;
        }
        stats.frame(shared, what);
        let mut replies = Vec::new();
        let waited = ws.replies(want, |_, reply| replies.push(reply)).await;
        for reply in replies {
            *stats.mutation_replies.entry(reply.label()).or_default() += 1;
        }
        match waited {
            Waited::Got => {}
            Waited::Closed => break,
            Waited::TimedOut => {
                stats.unanswered(what);
                break;
            }
        }
    }
    ws.end(stats).await;
    Ok(())
}

async fn forbidden(
    shared: &Shared,
    rng: &mut StdRng,
    sub: &str,
    stats: &mut Stats,
) -> Result<(), String> {
    let mut ws = connected(shared, sub, stats).await?;
    let requests = generate::forbidden_requests(&shared.forger, sub);
    // Past the rate limit (100 a minute, with `connect` already spent): the last ones are
    // refused as too many, then the connection is closed 4100.
    let mut id = 100u64;
    'bursts: while ws.closed.is_none() && id < 100 + 115 {
        let mut burst = BTreeMap::new();
        for _ in 0..rng.random_range(1..=16) {
            let request = &requests[rng.random_range(0..requests.len())];
            id += 1;
            let frame = json!({ "id": id, request.method: request.params });
            if !ws.send(Message::text(frame.to_string())).await {
                break;
            }
            stats.frame(shared, "forbidden request");
            stats.forbidden_sent += 1;
            burst.insert(id, request.what);
        }
        let mut answered = Vec::new();
        let waited = ws
            .replies(burst.len(), |id, reply| answered.push((id, reply)))
            .await;
        for (id, reply) in answered {
            match burst.get(&id) {
                Some(what) => stats.forbidden_reply(what, &reply),
                None => stats.forbidden_reply("reply to an unknown id", &reply),
            }
        }
        match waited {
            Waited::Got => {}
            Waited::Closed => break 'bursts,
            Waited::TimedOut => {
                stats.unanswered("forbidden request");
                break 'bursts;
            }
        }
    }
    ws.end(stats).await;
    Ok(())
}

async fn bad_token(
    shared: &Shared,
    rng: &mut StdRng,
    sub: &str,
    stats: &mut Stats,
) -> Result<(), String> {
    let bad = shared.forger.bad(rng, sub);
    // Where the token travels: the `connect` command, the upgrade's Authorization header,
    // or the query string.
    let place = rng.random_range(0..4);
    let query_safe = bad
        .token
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    let (mut ws, connect) = match place {
        1 => (
            Hostile::open(shared, Some(&bad.token), None).await?,
            json!({ "id": 1, "connect": {} }),
        ),
        2 if query_safe => (
            Hostile::open(shared, None, Some(&bad.token)).await?,
            json!({ "id": 1, "connect": {} }),
        ),
        _ => (
            Hostile::open(shared, None, None).await?,
            json!({ "id": 1, "connect": { "token": bad.token } }),
        ),
    };
    if ws.send(Message::text(connect.to_string())).await {
        stats.frame(shared, "connect (bad token)");
        stats.forbidden_sent += 1;
        let mut reply = None;
        let waited = ws.replies(1, |_, r| reply = Some(r)).await;
        if let Some(reply) = reply {
            stats.forbidden_reply(&format!("connect: {} token", bad.kind), &reply);
        }
        if let Waited::TimedOut = waited {
            stats.unanswered("connect (bad token)");
        }
        // A refused connect is followed by a close; wait for it.
        if ws.closed.is_none() && reply != Some(Reply::Result) {
            ws.replies(usize::MAX, |_, _| {}).await;
        }
    }
    ws.end(stats).await;
    Ok(())
}

async fn no_token(shared: &Shared, rng: &mut StdRng, stats: &mut Stats) -> Result<(), String> {
    let mut ws = Hostile::open(shared, None, None).await?;
    let healthy = super::HEALTHY_CHANNEL;
    let first = match rng.random_range(0..6) {
        0 => Some((
            "subscribe before connect",
            json!({ "id": 1, "subscribe": { "channel": healthy } }),
        )),
        1 => Some(("connect without a token", json!({ "id": 1, "connect": {} }))),
        2 => Some((
            "connect with an empty token",
            json!({ "id": 1, "connect": { "token": "" } }),
        )),
        3 => Some((
            "publish before connect",
            json!({ "id": 1, "publish": { "channel": healthy, "event": "x", "data": 1 } }),
        )),
        4 => Some((
            "history before connect",
            json!({ "id": 1, "history": { "channel": healthy } }),
        )),
        // Connect storm: open, then leave without a word.
        _ => None,
    };
    if let Some((what, command)) = first
        && ws.send(Message::text(command.to_string())).await
    {
        stats.frame(shared, "command without a token");
        stats.forbidden_sent += 1;
        let mut reply = None;
        if let Waited::TimedOut = ws.replies(1, |_, r| reply = Some(r)).await {
            stats.unanswered(what);
        }
        if let Some(reply) = reply {
            stats.forbidden_reply(what, &reply);
        }
        if ws.closed.is_none() {
            ws.replies(usize::MAX, |_, _| {}).await;
        }
    }
    ws.end(stats).await;
    Ok(())
}

async fn flood(
    shared: &Shared,
    rng: &mut StdRng,
    sub: &str,
    stats: &mut Stats,
) -> Result<(), String> {
    let mut ws = connected(shared, sub, stats).await?;
    let channel = format!("org:{EVIL_ORG}:ch:flood");
    let subscribe = json!({ "id": 2, "subscribe": { "channel": channel } });
    if ws.send(Message::text(subscribe.to_string())).await {
        stats.frame(shared, "flood: subscribe");
        ws.replies(1, |_, _| {}).await;
    }
    // WebSocket pings are control frames: the gateway's WebSocket layer answers them, and
    // keeps one pong pending at most however many come.
    for _ in 0..rng.random_range(50..200) {
        let payload: Vec<u8> = (0..rng.random_range(0..=125))
            .map(|_| rng.random())
            .collect();
        if !ws.send(Message::Ping(Bytes::from(payload))).await {
            break;
        }
        stats.frame(shared, "flood: WebSocket ping");
    }
    // Then commands past the rate limit, in bursts: answered until the budget is spent,
    // refused with 110, then closed 4100.
    let mut id = 10u64;
    while ws.closed.is_none() && id < 10 + 150 {
        let burst = rng.random_range(1..=20);
        let mut sent = 0;
        for _ in 0..burst {
            id += 1;
            let command = match rng.random_range(0..3) {
                0 => json!({ "id": id, "ping": {} }),
                1 => {
                    let status = ["online", "away", "busy"][rng.random_range(0..3)];
                    json!({ "id": id, "setStatus": { "status": status } })
                }
                _ => {
                    json!({ "id": id, "typing": { "channel": channel, "active": rng.random_bool(0.5) } })
                }
            };
            if !ws.send(Message::text(command.to_string())).await {
                break;
            }
            stats.frame(shared, "flood: ping/setStatus/typing");
            sent += 1;
        }
        let mut replies = Vec::new();
        let waited = ws.replies(sent, |_, reply| replies.push(reply)).await;
        for reply in replies {
            *stats
                .mutation_replies
                .entry(format!("flood {}", reply.label()))
                .or_default() += 1;
        }
        if let Waited::TimedOut = waited {
            stats.unanswered("flood: ping/setStatus/typing");
            break;
        }
    }
    ws.end(stats).await;
    Ok(())
}

async fn oversize(
    shared: &Shared,
    rng: &mut StdRng,
    sub: &str,
    stats: &mut Stats,
) -> Result<(), String> {
    let mut ws = if rng.random_bool(0.5) {
        connected(shared, sub, stats).await?
    } else {
        Hostile::open(shared, None, None).await?
    };
    let sizes: [usize; 5] = [
        64 * 1024 + 1,
        100 * 1024,
        128 * 1024 + 1,
        512 * 1024,
        4 << 20,
    ];
    let size = sizes[rng.random_range(0..sizes.len())];
    // A valid publish command, only too big.
    let head =
        format!(r#"{{"id":9,"publish":{{"channel":"chat:{EVIL_ORG}:room","event":"big","data":""#);
    // Exactly `size` bytes: the head, the string, `"}}`.
    let frame = format!(
        "{head}{}\"}}}}",
        "x".repeat(size.saturating_sub(head.len() + 3))
    );
    if ws.send(Message::text(frame)).await {
        stats.frame(shared, "oversize frame");
        if let Waited::TimedOut = ws.replies(usize::MAX, |_, _| {}).await {
            stats.unanswered(&format!("oversize frame of {size} bytes"));
        }
    }
    ws.end(stats).await;
    Ok(())
}

async fn protocol(
    shared: &Shared,
    rng: &mut StdRng,
    sub: &str,
    stats: &mut Stats,
) -> Result<(), String> {
    let mut ws = if rng.random_bool(0.5) {
        connected(shared, sub, stats).await?
    } else {
        Hostile::open(shared, None, None).await?
    };
    let (what, bytes) = generate::protocol_violation(rng);
    if ws.send_raw(&bytes).await {
        stats.frame(shared, what);
        if let Waited::TimedOut = ws.replies(usize::MAX, |_, _| {}).await {
            stats.unanswered(what);
        }
    }
    ws.end(stats).await;
    Ok(())
}
