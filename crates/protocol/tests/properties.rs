//! Property tests of what the protocol crate parses from untrusted input: command frames,
//! channel names, Socket.IO packets and the JSON compactor. Nothing panics on any input, and what is valid
//! round-trips.

use herald_protocol::channel::{MAX_CHANNEL_BYTES, MAX_SEGMENT_BYTES};
use herald_protocol::command::{StreamPosition, parse_frame};
use herald_protocol::json::{compact, nesting_depth};
use herald_protocol::{ChannelName, Command, Method, socketio};
use proptest::prelude::*;
use serde_json::{Value, json};

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 512,
        // The failing input is printed; an integration test has no source file to save it by.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Text made mostly of JSON's own characters, so the parser gets past the first byte.
fn json_like() -> impl Strategy<Value = String> {
    "[{}\\[\\]\":,0-9a-zA-Z\\\\ \n\r\t.eE+-]{0,300}"
}

/// A channel segment: 1-64 of `[A-Za-z0-9_@=+-]`.
fn segment() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_@=+-]{1,64}"
}

fn valid_channel() -> impl Strategy<Value = String> {
    prop::collection::vec(segment(), 1..6)
        .prop_map(|segments| segments.join(":"))
        .prop_filter("at most 200 bytes", |name| name.len() <= MAX_CHANNEL_BYTES)
}

/// A valid command as generated: enough to encode it and to check what was parsed.
#[derive(Debug, Clone)]
enum Spec {
    Connect(Option<String>),
    Subscribe(String, Option<(u64, String)>),
    Unsubscribe(String),
    Publish(String, String, Value),
    History(String, Option<u32>, Option<u64>),
    Ping,
    SetStatus(String),
    Typing(String, bool),
}

fn spec() -> impl Strategy<Value = Spec> {
    prop_oneof![
        prop::option::of(any::<String>()).prop_map(Spec::Connect),
        (
            valid_channel(),
            prop::option::of((any::<u64>(), any::<String>()))
        )
            .prop_map(|(c, r)| Spec::Subscribe(c, r)),
        valid_channel().prop_map(Spec::Unsubscribe),
        (valid_channel(), any::<String>(), json_value())
            .prop_map(|(c, e, d)| Spec::Publish(c, e, d)),
        (valid_channel(), any::<Option<u32>>(), any::<Option<u64>>())
            .prop_map(|(c, l, s)| Spec::History(c, l, s)),
        Just(Spec::Ping),
        any::<String>().prop_map(Spec::SetStatus),
        (valid_channel(), any::<bool>()).prop_map(|(c, a)| Spec::Typing(c, a)),
    ]
}

impl Spec {
    fn encode(&self, id: u64) -> Value {
        match self {
            Spec::Connect(token) => match token {
                Some(token) => json!({ "id": id, "connect": { "token": token } }),
                None => json!({ "id": id, "connect": {} }),
            },
            Spec::Subscribe(channel, recover) => match recover {
                Some((offset, epoch)) => json!({ "id": id, "subscribe": {
                    "channel": channel, "recover": { "offset": offset, "epoch": epoch } } }),
                None => json!({ "id": id, "subscribe": { "channel": channel } }),
            },
            Spec::Unsubscribe(channel) => {
                json!({ "id": id, "unsubscribe": { "channel": channel } })
            }
            Spec::Publish(channel, event, data) => json!({ "id": id, "publish": {
                "channel": channel, "event": event, "data": data } }),
            Spec::History(channel, limit, since) => {
                let mut params = json!({ "channel": channel });
                if let Some(limit) = limit {
                    params["limit"] = json!(limit);
                }
                if let Some(since) = since {
                    params["sinceOffset"] = json!(since);
                }
                json!({ "id": id, "history": params })
            }
            Spec::Ping => json!({ "id": id, "ping": {} }),
            Spec::SetStatus(status) => json!({ "id": id, "setStatus": { "status": status } }),
            Spec::Typing(channel, active) => json!({ "id": id, "typing": {
                "channel": channel, "active": active } }),
        }
    }

    /// Whether `method` is what this spec encoded.
    fn matches(&self, method: &Method) -> bool {
        match (self, method) {
            (Spec::Connect(token), Method::Connect(r)) => r.token == *token,
            (Spec::Subscribe(channel, recover), Method::Subscribe(r)) => {
                let expected = recover.as_ref().map(|(offset, epoch)| StreamPosition {
                    offset: *offset,
                    epoch: epoch.clone(),
                });
                r.channel == *channel && r.recover == expected && r.token.is_none()
            }
            (Spec::Unsubscribe(channel), Method::Unsubscribe(r)) => r.channel == *channel,
            // The data is kept verbatim, as it was written.
            (Spec::Publish(channel, event, data), Method::Publish(r)) => {
                r.channel == *channel
                    && r.event == *event
                    && serde_json::to_string(data).ok().as_deref() == Some(r.data.get())
            }
            (Spec::History(channel, limit, since), Method::History(r)) => {
                r.channel == *channel && r.limit == *limit && r.since_offset == *since
            }
            (Spec::Ping, Method::Ping(_)) => true,
            (Spec::SetStatus(status), Method::SetStatus(r)) => r.status == *status,
            (Spec::Typing(channel, active), Method::Typing(r)) => {
                r.channel == *channel && r.active == *active
            }
            _ => false,
        }
    }
}

/// Any JSON value, strings with any characters (newlines, quotes, controls, non-ASCII).
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1e300f64..1e300).prop_map(Value::from),
        any::<String>().prop_map(Value::from),
        "[ \n\r\t\"\\\\a-z]{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(6, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..6)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// Pretty-printed JSON with extra whitespace (spaces, tabs, CR, LF) after structural bytes.
fn spaced(value: &Value, spaces: &[u8]) -> String {
    let pretty = serde_json::to_string_pretty(value).expect("serializable");
    let mut out = String::with_capacity(pretty.len() * 2);
    let mut in_string = false;
    let mut escaped = false;
    for (i, c) in pretty.chars().enumerate() {
        out.push(c);
        if in_string {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            ',' | ':' | '[' | '{' => {
                let pad = [" ", "\n", "\r\n", "\t", ""][usize::from(spaces[i % spaces.len()] % 5)];
                out.push_str(pad);
            }
            _ => {}
        }
    }
    out
}

fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn parse_frame_never_panics_on_any_string(frame in any::<String>()) {
        let _ = parse_frame(&frame);
    }

    #[test]
    fn parse_frame_never_panics_on_json_like_text(frame in json_like()) {
        let _ = parse_frame(&frame);
    }

    #[test]
    fn parse_frame_never_panics_on_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let _ = parse_frame(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn socketio_packets_never_panic_the_parser(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let _ = socketio::control(&bytes);
        let _ = socketio::parse_frame(&bytes);
    }

    /// Socket.IO EVENT and CONNECT packets (`42`, `40`) around JSON-like text, with an ack
    /// id or a namespace in front, get past the first bytes into the event parser.
    #[test]
    fn socketio_packet_like_text_never_panics_the_parser(
        prefix in prop::sample::select(vec!["42", "40", "421", "4299999999999999999999", "42/", "42/x,", "40/x,", "43", "4"]),
        body in json_like(),
    ) {
        let _ = socketio::parse_frame(format!("{prefix}{body}").as_bytes());
    }

    /// Valid commands, encoded one per line with blank lines and spaces around them, parse
    /// back to the same commands in the same order.
    #[test]
    fn valid_commands_round_trip(
        commands in prop::collection::vec((any::<u64>(), spec()), 1..8),
        blank in prop::collection::vec("[ \t\r]{0,3}\n?", 8),
    ) {
        let mut frame = String::new();
        for (i, (id, spec)) in commands.iter().enumerate() {
            frame.push_str(&blank[i]);
            frame.push_str(&spec.encode(*id).to_string());
            frame.push('\n');
        }
        let parsed = parse_frame(&frame).expect("a frame of JSON objects");
        prop_assert_eq!(parsed.len(), commands.len());
        for ((id, spec), parsed) in commands.iter().zip(parsed) {
            let Command { id: parsed_id, method } = parsed.expect("a valid command");
            prop_assert_eq!(parsed_id, *id);
            prop_assert!(spec.matches(&method), "{:?} parsed as {:?}", spec, method);
        }
    }

    /// A mutated valid command (a byte replaced, removed or inserted) never panics.
    #[test]
    fn mutated_commands_never_panic(
        (id, spec) in (any::<u64>(), spec()),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..6),
    ) {
        let mut bytes = spec.encode(id).to_string().into_bytes();
        for (at, byte, op) in edits {
            if bytes.is_empty() {
                break;
            }
            let at = at.index(bytes.len());
            match op {
                0 => bytes[at] = byte,
                1 => { bytes.remove(at); }
                _ => bytes.insert(at, byte),
            }
        }
        let _ = parse_frame(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn channel_parse_never_panics_and_accepts_only_valid_names(name in any::<String>()) {
        if let Ok(channel) = ChannelName::parse(&name) {
            prop_assert_eq!(channel.as_str(), name.as_str());
            prop_assert!(name.len() <= MAX_CHANNEL_BYTES);
            for segment in channel.segments() {
                prop_assert!((1..=MAX_SEGMENT_BYTES).contains(&segment.len()));
                prop_assert!(segment.bytes().all(|b| b.is_ascii_alphanumeric() || b"_@=+-".contains(&b)));
            }
        }
    }

    #[test]
    fn channel_parse_never_panics_on_channel_like_text(name in "[a-z:.*> é\\-]{0,80}") {
        let _ = ChannelName::parse(&name);
    }

    /// Valid names parse, and their parts, subject, display and JSON give the name back.
    #[test]
    fn valid_channel_names_round_trip(name in valid_channel()) {
        let channel = ChannelName::parse(&name).expect("a valid name");
        prop_assert_eq!(channel.as_str(), name.as_str());
        prop_assert_eq!(channel.segments().collect::<Vec<_>>().join(":"), name.clone());
        prop_assert_eq!(channel.namespace(), name.split(':').next().unwrap());
        prop_assert_eq!(channel.subject("herald.node"), format!("herald.node.{}", name.replace(':', ".")));
        prop_assert_eq!(ChannelName::parse(&channel.to_string()).expect("display parses"), channel.clone());
        prop_assert_eq!(serde_json::to_string(&channel).unwrap(), serde_json::to_string(&name).unwrap());
    }

    /// A valid name with one byte outside the alphabet put in is refused.
    #[test]
    fn names_with_a_foreign_character_are_refused(
        name in valid_channel(),
        at in any::<prop::sample::Index>(),
        bad in "[^A-Za-z0-9_@=+:-]",
    ) {
        let mut name = name;
        let at = at.index(name.len() + 1);
        name.insert_str(at, &bad);
        prop_assert!(ChannelName::parse(&name).is_err(), "{:?} was accepted", name);
    }

    /// Compact form: no raw CR or LF, the same value, the same nesting depth.
    #[test]
    fn compact_keeps_the_value_and_drops_line_breaks(
        value in json_value(),
        spaces in prop::collection::vec(any::<u8>(), 1..32),
    ) {
        let text = spaced(&value, &spaces);
        let parsed: Value = serde_json::from_str(&text).expect("spaced JSON is JSON");
        let compacted = compact(&text);
        prop_assert!(!compacted.contains('\n') && !compacted.contains('\r'), "{:?}", compacted);
        let reparsed: Value = serde_json::from_str(&compacted).expect("compact JSON is JSON");
        prop_assert_eq!(&reparsed, &parsed);
        let again = compact(&compacted);
        prop_assert_eq!(again.as_ref(), compacted.as_ref(), "compact is idempotent");
        prop_assert_eq!(nesting_depth(&text), depth(&value));
        prop_assert_eq!(nesting_depth(&compacted), depth(&value));
    }

    /// The compactor and depth counter assume valid JSON, but must not panic on anything.
    #[test]
    fn compact_never_panics(text in any::<String>()) {
        let _ = compact(&text);
        let _ = nesting_depth(&text);
    }
}
