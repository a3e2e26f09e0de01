//! What hostile clients send: forged and broken tokens, mutations of valid commands, and raw
//! WebSocket frames that no well-behaved client library would write.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use herald_gateway::clock::unix_seconds;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rand::Rng;
use rand::rngs::StdRng;
use serde_json::json;

/// The org hostile users belong to, and the org and user they attack.
pub const EVIL_ORG: &str = "evil";
pub const VICTIM_ORG: &str = "victim";
pub const VICTIM_USER: &str = "victim";

/// A token that must never open a connection, and what makes it bad.
pub struct BadToken {
    pub kind: &'static str,
    pub token: String,
}

/// Signs tokens with the node's secret, valid ones and every kind of invalid one.
pub struct Forger {
    key: EncodingKey,
    secret: String,
}

impl Forger {
    pub fn new(secret: &str) -> Forger {
        Forger {
            key: EncodingKey::from_secret(secret.as_bytes()),
            secret: secret.to_owned(),
        }
    }

    fn sign(&self, alg: Algorithm, claims: &serde_json::Value) -> String {
        jsonwebtoken::encode(&Header::new(alg), claims, &self.key).expect("HMAC signing")
    }

    /// A valid connection token for a member of the evil org, allowed `org:evil:*`.
    pub fn valid(&self, sub: &str) -> String {
        self.sign(Algorithm::HS256, &evil_claims(sub))
    }

    /// A valid subscription token for `sub` on `channel`.
    pub fn subscription(&self, sub: &str, channel: &str) -> String {
        let claims = json!({ "sub": sub, "channel": channel, "exp": unix_seconds() + 3600 });
        self.sign(Algorithm::HS256, &claims)
    }

    /// An expired subscription token for `sub` on `channel`.
    pub fn expired_subscription(&self, sub: &str, channel: &str) -> String {
        let claims = json!({ "sub": sub, "channel": channel, "exp": unix_seconds() - 60 });
        self.sign(Algorithm::HS256, &claims)
    }

    /// `header.payload.` with no signature, as `alg: none` has none.
    pub fn alg_none(&self, claims: &serde_json::Value) -> String {
        unsigned(&json!({ "alg": "none", "typ": "JWT" }), claims) + "."
    }

    /// A bad connection token of a randomly chosen kind, for user `sub`.
    pub fn bad(&self, rng: &mut StdRng, sub: &str) -> BadToken {
        let now = unix_seconds();
        let claims = evil_claims(sub);
        let (kind, token) = match rng.random_range(0..16) {
            0 => ("expired", {
                let mut c = claims.clone();
                c["exp"] = json!(now - 1);
                self.sign(Algorithm::HS256, &c)
            }),
            1 => ("alg none", self.alg_none(&claims)),
            2 => ("alg none, HS256 signature kept", {
                let signed = self.valid(sub);
                let signature = signed.rsplit('.').next().unwrap_or_default().to_owned();
                format!(
                    "{}.{signature}",
                    unsigned(&json!({ "alg": "none", "typ": "JWT" }), &claims)
                )
            }),
            3 => (
                "alg HS512 with the secret",
                self.sign(Algorithm::HS512, &claims),
            ),
            4 => ("alg confusion: RS256 header, HMAC signature", {
                // The classic confusion: an RS256 token "signed" with HMAC under a key the
                // attacker knows (here even the real secret). No RSA key is configured.
                let message = unsigned(&json!({ "alg": "RS256", "typ": "JWT" }), &claims);
                let signature = jsonwebtoken::crypto::sign(
                    message.as_bytes(),
                    &EncodingKey::from_secret(self.secret.as_bytes()),
                    Algorithm::HS256,
                )
                .expect("HMAC signing");
                format!("{message}.{signature}")
            }),
            5 => ("alg ES256 header, HMAC signature", {
                let message = unsigned(&json!({ "alg": "ES256", "typ": "JWT" }), &claims);
                let signature =
                    jsonwebtoken::crypto::sign(message.as_bytes(), &self.key, Algorithm::HS256)
                        .expect("HMAC signing");
                format!("{message}.{signature}")
            }),
            6 => ("wrong secret", {
                jsonwebtoken::encode(
                    &Header::new(Algorithm::HS256),
                    &claims,
                    &EncodingKey::from_secret(b"not-the-secret"),
                )
                .expect("HMAC signing")
            }),
            7 => (
                "wrong kind: subscription token",
                self.subscription(sub, &format!("org:{EVIL_ORG}:ch:x")),
            ),
            8 => ("not valid yet", {
                let mut c = claims.clone();
                c["nbf"] = json!(now + 3600);
                self.sign(Algorithm::HS256, &c)
            }),
            9 => ("payload tampered after signing", {
                let signed = self.valid(sub);
                let mut parts = signed.split('.');
                let (header, _, signature) = (parts.next(), parts.next(), parts.next());
                let mut c = claims.clone();
                c["orgs"] = json!([EVIL_ORG, VICTIM_ORG]);
                c["channels"] = json!(["*"]);
                format!(
                    "{}.{}.{}",
                    header.unwrap_or_default(),
                    URL_SAFE_NO_PAD.encode(c.to_string()),
                    signature.unwrap_or_default()
                )
            }),
            10 => ("control characters in sub", {
                let mut c = claims.clone();
                c["sub"] = json!(format!("{sub}\r\nx-injected: 1"));
                self.sign(Algorithm::HS256, &c)
            }),
            11 => ("sub over 128 characters", {
                let mut c = claims.clone();
                c["sub"] = json!("s".repeat(129));
                self.sign(Algorithm::HS256, &c)
            }),
            12 => ("`*` inside a channels claim", {
                let mut c = claims.clone();
                c["channels"] = json!([format!("org:{VICTIM_ORG}*"), "org:*:general"]);
                self.sign(Algorithm::HS256, &c)
            }),
            13 => ("no sub claim", {
                self.sign(Algorithm::HS256, &json!({ "exp": now + 3600 }))
            }),
            14 => ("no exp claim", {
                self.sign(Algorithm::HS256, &json!({ "sub": sub }))
            }),
            _ => {
                let garbage = [
                    "",
                    "x",
                    "a.b",
                    "a.b.c.d",
                    "....",
                    "eyJhbGciOiJIUzI1NiJ9.eyJ9.AAAA",
                ];
                let pick = rng.random_range(0..=garbage.len());
                let token = match garbage.get(pick) {
                    Some(text) => (*text).to_owned(),
                    // A long run of base64 characters: the parser must not choke on size.
                    None => "A".repeat(rng.random_range(1_000..40_000)),
                };
                ("malformed", token)
            }
        };
        BadToken { kind, token }
    }
}

fn evil_claims(sub: &str) -> serde_json::Value {
    json!({
        "sub": sub,
        "exp": unix_seconds() + 3 * 3600,
        "orgs": [EVIL_ORG],
        "channels": [format!("org:{EVIL_ORG}:*")],
    })
}

fn unsigned(header: &serde_json::Value, claims: &serde_json::Value) -> String {
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

/// A request that must be refused, and what it tries.
pub struct Forbidden {
    pub what: &'static str,
    /// The method and its params; the id is added when it is sent.
    pub method: &'static str,
    pub params: serde_json::Value,
}

/// Every forbidden request a member of the evil org (user `sub`) can try once connected.
pub fn forbidden_requests(forger: &Forger, sub: &str) -> Vec<Forbidden> {
    let v = VICTIM_ORG;
    let e = EVIL_ORG;
    let victim_general = format!("org:{v}:ch:general");
    let f = |what, method, params| Forbidden {
        what,
        method,
        params,
    };
    vec![
        f(
            "subscribe: another org's channel",
            "subscribe",
            json!({ "channel": victim_general }),
        ),
        f(
            "subscribe: another org's root channel",
            "subscribe",
            json!({ "channel": format!("org:{v}") }),
        ),
        f(
            "subscribe: an org whose name extends ours",
            "subscribe",
            json!({ "channel": format!("org:{e}-x:ch:a") }),
        ),
        f(
            "subscribe: another user's channel",
            "subscribe",
            json!({ "channel": format!("user:{VICTIM_USER}") }),
        ),
        f(
            "subscribe: below another user's channel",
            "subscribe",
            json!({ "channel": format!("user:{VICTIM_USER}:inbox") }),
        ),
        f(
            "subscribe: a token namespace without a token",
            "subscribe",
            json!({ "channel": "secret:vault" }),
        ),
        f(
            "subscribe: another user's subscription token",
            "subscribe",
            json!({ "channel": "secret:vault", "token": forger.subscription(VICTIM_USER, "secret:vault") }),
        ),
        f(
            "subscribe: a subscription token for another channel",
            "subscribe",
            json!({ "channel": "secret:vault", "token": forger.subscription(sub, "secret:other") }),
        ),
        f(
            "subscribe: a connection token as subscription token",
            "subscribe",
            json!({ "channel": "secret:vault", "token": forger.valid(sub) }),
        ),
        f(
            "subscribe: an alg-none subscription token",
            "subscribe",
            json!({ "channel": "secret:vault", "token": forger.alg_none(&json!({ "sub": sub, "channel": "secret:vault", "exp": unix_seconds() + 3600 })) }),
        ),
        f(
            "subscribe: an expired subscription token",
            "subscribe",
            json!({ "channel": "secret:vault", "token": forger.expired_subscription(sub, "secret:vault") }),
        ),
        f(
            "subscribe: a wildcard channel name",
            "subscribe",
            json!({ "channel": format!("org:{v}:*") }),
        ),
        f(
            "subscribe: a NATS wildcard",
            "subscribe",
            json!({ "channel": format!("org:{v}:>") }),
        ),
        f(
            "history: another user's channel",
            "history",
            json!({ "channel": format!("user:{VICTIM_USER}") }),
        ),
        f(
            "history: another org's channel",
            "history",
            json!({ "channel": victim_general, "sinceOffset": 0 }),
        ),
        f(
            "presence: another org's channel",
            "presence",
            json!({ "channel": victim_general }),
        ),
        f(
            "presenceStats: another org",
            "presenceStats",
            json!({ "channel": format!("org:{v}") }),
        ),
        f(
            "typing: another org's channel",
            "typing",
            json!({ "channel": victim_general, "active": true }),
        ),
        f(
            "setPresenceState: another org's channel",
            "setPresenceState",
            json!({ "channel": victim_general, "state": { "mood": "forged" } }),
        ),
        f(
            "publish: the healthy channel (no client_publish)",
            "publish",
            json!({ "channel": super::HEALTHY_CHANNEL, "event": "forged", "data": { "seq": 0 } }),
        ),
        f(
            "publish: a public channel",
            "publish",
            json!({ "channel": "public:lobby", "event": "x", "data": 1 }),
        ),
        f(
            "publish: own org channel without client_publish",
            "publish",
            json!({ "channel": format!("org:{e}:ch:x"), "event": "x", "data": 1 }),
        ),
        f(
            "publish: another org's client_publish channel",
            "publish",
            json!({ "channel": format!("chat:{v}:room"), "event": "x", "data": 1 }),
        ),
        f(
            "publish: another user's channel",
            "publish",
            json!({ "channel": format!("user:{VICTIM_USER}"), "event": "x", "data": 1 }),
        ),
        f(
            "refresh: a token for another user",
            "refresh",
            json!({ "token": forger.valid(VICTIM_USER) }),
        ),
        f(
            "refresh: an alg-none token",
            "refresh",
            json!({ "token": forger.alg_none(&evil_claims(sub)) }),
        ),
        f(
            "refresh: a subscription token",
            "refresh",
            json!({ "token": forger.subscription(sub, "secret:vault") }),
        ),
    ]
}

/// Valid commands of a connected evil-org member, the material mutations start from.
pub fn templates(forger: &Forger, sub: &str) -> Vec<String> {
    let e = EVIL_ORG;
    [
        json!({ "id": 1, "connect": { "token": forger.valid(sub), "name": "web", "version": "1.0" } }),
        json!({ "id": 2, "subscribe": { "channel": format!("org:{e}:ch:general") } }),
        json!({ "id": 3, "subscribe": { "channel": super::HEALTHY_CHANNEL, "recover": { "offset": 3, "epoch": "Xq3v9TzL" } } }),
        json!({ "id": 4, "publish": { "channel": format!("chat:{e}:room"), "event": "message.created", "data": { "text": "hi", "n": [1, 2.5, -3e7, true, null, { "k": "\u{e9}\u{1f600}" }] } } }),
        json!({ "id": 5, "history": { "channel": super::HEALTHY_CHANNEL, "limit": 5, "sinceOffset": 2 } }),
        json!({ "id": 6, "presence": { "channel": format!("org:{e}:ch:general"), "cursor": "1764196400000.k2P0sY1qV8cD3mRt" } }),
        json!({ "id": 7, "typing": { "channel": format!("org:{e}:ch:general"), "active": true } }),
        json!({ "id": 8, "setStatus": { "status": "away" } }),
        json!({ "id": 9, "refresh": { "token": forger.valid(sub) } }),
        json!({ "id": 10, "ping": {} }),
        json!({ "id": 11, "unsubscribe": { "channel": format!("org:{e}:ch:general") } }),
        json!({ "id": 12, "presenceStats": { "channel": format!("org:{e}") } }),
        json!({ "id": 13, "setPresenceState": { "channel": format!("org:{e}:ch:general"), "state": { "mood": "ok", "at": [1, 2] } } }),
    ]
    .iter()
    .map(|command| command.to_string())
    .collect()
}

/// How a mutated frame goes on the wire.
pub enum Payload {
    Text(String),
    /// A text frame whose payload is not UTF-8 (written raw: client libraries refuse to).
    InvalidUtf8(Vec<u8>),
    Binary(Vec<u8>),
}

/// One mutation of valid commands: its name (for the report) and the frame.
pub fn mutate(rng: &mut StdRng, templates: &[String]) -> (&'static str, Payload) {
    let pick = |rng: &mut StdRng| templates[rng.random_range(0..templates.len())].clone();
    let base = pick(rng);
    match rng.random_range(0..14) {
        0 => {
            let mut bytes = base.into_bytes();
            for _ in 0..rng.random_range(1..=4) {
                let at = rng.random_range(0..bytes.len());
                bytes[at] ^= 1 << rng.random_range(0..8);
            }
            ("bit flips", text_or_raw(bytes))
        }
        1 => {
            let cut = rng.random_range(0..base.len());
            ("truncation", text_or_raw(base.as_bytes()[..cut].to_vec()))
        }
        2 => {
            // Unbalanced nesting spliced in: a parser must not recurse without bound.
            let open = if rng.random_bool(0.5) { "[" } else { "{\"a\":" };
            let depth = rng.random_range(10..20_000);
            let at = char_boundary(&base, rng.random_range(0..base.len()));
            let frame = format!("{}{}{}", &base[..at], open.repeat(depth), &base[at..]);
            ("deep nesting splice", Payload::Text(frame))
        }
        3 => {
            // Balanced, valid JSON nesting in publish data: over the depth limit (32), and
            // past serde's recursion limit (128).
            let depth = rng.random_range(20..400);
            let data = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
            let frame = format!(
                r#"{{"id":40,"publish":{{"channel":"chat:{EVIL_ORG}:room","event":"deep","data":{data}}}}}"#
            );
            ("deep valid nesting", Payload::Text(frame))
        }
        4 => {
            let huge = [
                "1e400",
                "-1e400",
                "18446744073709551616",
                "-1",
                "1.5",
                "-0",
                "1e-400",
                "0.0000000000000000000000001",
                "123456789012345678901234567890",
            ];
            let number = match rng.random_range(0..=huge.len()) {
                n if n < huge.len() => huge[n].to_owned(),
                _ => "9".repeat(rng.random_range(100..20_000)),
            };
            let frame = match rng.random_range(0..4) {
                0 => format!(r#"{{"id":{number},"ping":{{}}}}"#),
                1 => format!(
                    r#"{{"id":41,"history":{{"channel":"{}","limit":{number},"sinceOffset":{number}}}}}"#,
                    super::HEALTHY_CHANNEL
                ),
                2 => format!(
                    r#"{{"id":42,"subscribe":{{"channel":"{}","recover":{{"offset":{number},"epoch":"x"}}}}}}"#,
                    super::HEALTHY_CHANNEL
                ),
                _ => format!(
                    r#"{{"id":43,"publish":{{"channel":"chat:{EVIL_ORG}:room","event":"n","data":{number}}}}}"#
                ),
            };
            ("huge numbers", Payload::Text(frame))
        }
        5 => {
            let bad: [&[u8]; 6] = [
                &[0xff],
                &[0xc3, 0x28],
                &[0xed, 0xa0, 0x80],
                &[0xf4, 0x90, 0x80, 0x80],
                &[0xc0, 0xaf],
                &[0xe2, 0x82],
            ];
            let mut bytes = base.into_bytes();
            let at = rng.random_range(0..bytes.len());
            let insert = bad[rng.random_range(0..bad.len())];
            bytes.splice(at..at, insert.iter().copied());
            ("invalid UTF-8", Payload::InvalidUtf8(bytes))
        }
        6 => {
            // Escapes that are valid JSON syntax but not valid text: lone surrogates, NUL.
            let escapes = [r"\ud800", r"\udfff", r"\u0000", r"\ud83d\u0041", r"\uZZZZ"];
            let escape = escapes[rng.random_range(0..escapes.len())];
            let frame = base.replacen("\":\"", &format!("\":\"{escape}"), 1);
            ("lone surrogates and NUL escapes", Payload::Text(frame))
        }
        7 => ("binary frame", Payload::Binary(base.into_bytes())),
        8 => {
            let other = pick(rng);
            let a = char_boundary(&base, rng.random_range(0..base.len()));
            let b = char_boundary(&other, rng.random_range(0..other.len()));
            let frame = format!("{}{}", &base[..a], &other[b..]);
            ("splice of two commands", Payload::Text(frame))
        }
        9 => {
            let lines: Vec<String> = (0..rng.random_range(2..300)).map(|_| pick(rng)).collect();
            (
                "many commands in one frame",
                Payload::Text(lines.join("\n")),
            )
        }
        10 => {
            let blank = ["\n", " \n", "\t\r\n", "\u{3000}\n", "\u{a0}\n"];
            let frame: String = (0..rng.random_range(1..2_000))
                .map(|_| blank[rng.random_range(0..blank.len())])
                .collect();
            ("blank lines only", Payload::Text(frame))
        }
        11 => {
            let shapes = [
                r#"{"id":1,"id":2,"ping":{}}"#,
                r#"{"id":1,"ping":{},"ping":{}}"#,
                r#"{"id":1,"ping":{},"history":{}}"#,
                r#"{"id":"1","ping":{}}"#,
                r#"{"id":1,"ping":[]}"#,
                r#"{"id":1,"subscribe":"org:evil:ch:general"}"#,
                r#"{"id":1,"subscribe":{"channel":7}}"#,
                r#"{"id":1,"setStatus":{"status":"offline"}}"#,
                r#"{"id":1,"setStatus":{"status":"\r\n"}}"#,
                r#"{"id":1,"typing":{"channel":"org:evil:ch:general","active":"yes"}}"#,
                r#"{"id":1,"__proto__":{}}"#,
                r#"{"id":1,"constructor":{"prototype":{}}}"#,
                r#"{}"#,
                r#"[]"#,
                r#""ping""#,
                r#"null"#,
                r#"1"#,
                r#"{"id":1,"ping":{}} {"id":2,"ping":{}}"#,
            ];
            let frame = shapes[rng.random_range(0..shapes.len())].to_owned();
            ("wrong shapes and types", Payload::Text(frame))
        }
        12 => {
            // A raw control character inside a string is invalid JSON.
            let at = base.find("\":\"").map_or(0, |i| i + 3);
            let control = char::from(rng.random_range(0u8..0x20));
            let mut frame = base;
            frame.insert(at, control);
            ("raw control characters", Payload::Text(frame))
        }
        _ => {
            let long = "a".repeat(rng.random_range(65..30_000));
            let frame = match rng.random_range(0..3) {
                0 => format!(r#"{{"id":44,"subscribe":{{"channel":"org:{EVIL_ORG}:{long}"}}}}"#),
                1 => format!(r#"{{"id":45,"{long}":{{}}}}"#),
                _ => format!(
                    r#"{{"id":46,"publish":{{"channel":"chat:{EVIL_ORG}:room","event":"{long}","data":1}}}}"#
                ),
            };
            ("oversize fields", Payload::Text(frame))
        }
    }
}

fn text_or_raw(bytes: Vec<u8>) -> Payload {
    match String::from_utf8(bytes) {
        Ok(text) => Payload::Text(text),
        Err(error) => Payload::InvalidUtf8(error.into_bytes()),
    }
}

fn char_boundary(text: &str, mut at: usize) -> usize {
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// How many replies the gateway owes for a text frame: one per line that is not blank (as
/// the gateway splits and trims), unless the frame closes the connection.
pub fn expected_replies(frame: &str) -> usize {
    frame
        .split('\n')
        .filter(|line| !line.trim().is_empty())
        .count()
}

/// A masked client frame: `first` is the FIN/RSV/opcode byte.
pub fn raw_frame(first: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mut frame = vec![first];
    let mask_bit = if masked { 0x80 } else { 0 };
    match payload.len() {
        len @ 0..=125 => frame.push(mask_bit | len as u8),
        len @ 126..=0xffff => {
            frame.push(mask_bit | 126);
            frame.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            frame.push(mask_bit | 127);
            frame.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    if masked {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    } else {
        frame.extend_from_slice(payload);
    }
    frame
}

/// A WebSocket protocol violation: its name and the raw bytes.
pub fn protocol_violation(rng: &mut StdRng) -> (&'static str, Vec<u8>) {
    let command = br#"{"id":1,"ping":{}}"#;
    match rng.random_range(0..9) {
        0 => ("reserved bits set", raw_frame(0xf1, command, true)),
        1 => ("unknown data opcode", raw_frame(0x83, command, true)),
        2 => ("unknown control opcode", raw_frame(0x8b, b"", true)),
        3 => ("unmasked client frame", raw_frame(0x81, command, false)),
        4 => (
            "continuation without a start",
            raw_frame(0x80, command, true),
        ),
        5 => ("ping over 125 bytes", raw_frame(0x89, &[b'p'; 200], true)),
        6 => ("fragmented ping", raw_frame(0x09, b"p", true)),
        7 => ("close with an invalid code", {
            let mut payload = 999u16.to_be_bytes().to_vec();
            payload.extend_from_slice(&[0xff, 0xfe]);
            raw_frame(0x88, &payload, true)
        }),
        _ => ("fragments over the size cap", {
            // A message started and continued in 16 KiB fragments past 128 KiB.
            let chunk = vec![b' '; 16 * 1024];
            let mut bytes = raw_frame(0x01, b"[", true);
            for _ in 0..10 {
                bytes.extend(raw_frame(0x00, &chunk, true));
            }
            bytes.extend(raw_frame(0x80, b"]", true));
            bytes
        }),
    }
}
