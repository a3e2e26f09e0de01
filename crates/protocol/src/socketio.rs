//! Engine.IO v4 and Socket.IO v5 over a WebSocket, as one more codec of a Herald session.
//!
//! Each text frame is one Engine.IO packet; a Socket.IO packet rides in an Engine.IO
//! `message` (`4`). Client packets become Herald [`Command`]s: CONNECT is `connect`,
//! `herald:subscribe` and `herald:unsubscribe` events are those commands, and any other
//! event is an `rpc` to the app's backend named after the event. Replies become Socket.IO
//! packets: CONNECT (accepted), CONNECT_ERROR (refused) and ACKs; pushes become EVENTs.
//!
//! Command ids carry what a reply needs: [`CONNECT_ID`] for CONNECT, an event's ack id plus
//! one when the client asked for an ack, and 0 when it did not (its reply encodes to
//! nothing, which the gateway does not send).

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::codes::{CloseCode, ErrorCode, Reconnect, reconnect_advice};
use crate::command::{
    Command, CommandError, ConnectRequest, FrameError, Method, Resume, RpcRequest, StreamPosition,
    SubscribeRequest, UnsubscribeRequest,
};
use crate::publication::Publication;

/// The id of the `connect` command made from a CONNECT packet.
pub const CONNECT_ID: u64 = u64::MAX;

/// The id of the error for a CONNECT to a namespace other than `/`; the error's message is
/// the namespace, which the CONNECT_ERROR must name.
const NAMESPACE_ID: u64 = u64::MAX - 1;

/// The largest ack id a client may use: larger ones would collide with the ids above.
const MAX_ACK_ID: u64 = u64::MAX - 3;

/// Longest namespace echoed back in a CONNECT_ERROR.
const MAX_NAMESPACE_BYTES: usize = 128;

/// The server's Engine.IO ping.
pub const PING: &[u8] = b"2";

/// The event a `herald:subscribe` ack, and the reserved events, are named by.
pub const SUBSCRIBE_EVENT: &str = "herald:subscribe";
pub const UNSUBSCRIBE_EVENT: &str = "herald:unsubscribe";

/// Client packets that are not commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Engine.IO `pong`, the answer to the server's ping.
    Pong,
    /// Engine.IO `close`, or a Socket.IO DISCONNECT from namespace `/`: the client leaves.
    Close,
}

/// Whether a client frame is a heartbeat answer or a goodbye rather than commands.
pub fn control(frame: &[u8]) -> Option<Control> {
    match frame {
        b"3" => Some(Control::Pong),
        b"1" | b"41" => Some(Control::Close),
        _ => None,
    }
}

/// The Engine.IO `open` packet, the first frame of a session.
pub fn encode_open(
    sid: &str,
    upgrades: &[&str],
    ping_interval_ms: u64,
    ping_timeout_ms: u64,
    max_payload: usize,
) -> Bytes {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Open<'a> {
        sid: &'a str,
        upgrades: &'a [&'a str],
        ping_interval: u64,
        ping_timeout: u64,
        max_payload: usize,
    }
    let open = Open {
        sid,
        upgrades,
        ping_interval: ping_interval_ms,
        ping_timeout: ping_timeout_ms,
        max_payload,
    };
    packet("0", &json(&open))
}

/// Parses one client frame (one Engine.IO packet) into its commands: none for packets that
/// ask nothing of the server. Anything the protocol does not allow here, binary packets
/// included, is a `FrameError` (the connection closes with 4000).
pub fn parse_frame(frame: &[u8]) -> Result<Vec<Result<Command, CommandError>>, FrameError> {
    let text = std::str::from_utf8(frame).map_err(|e| FrameError(e.to_string()))?;
    match text.as_bytes().first() {
        Some(b'4') => Ok(parse_packet(&text[1..])?.into_iter().collect()),
        // Engine.IO `noop`.
        Some(b'6') if text.len() == 1 => Ok(Vec::new()),
        _ => Err(FrameError(
            "not an Engine.IO message packet (only 3, 4 and 1 are accepted)".into(),
        )),
    }
}

/// One Socket.IO packet: type, then `/namespace,` unless `/`, then an ack id, then JSON.
fn parse_packet(text: &str) -> Result<Option<Result<Command, CommandError>>, FrameError> {
    let Some(kind) = text.bytes().next() else {
        return Err(FrameError("empty Socket.IO packet".into()));
    };
    let rest = &text[1..];
    if matches!(kind, b'5' | b'6') {
        return Err(FrameError(
            "binary Socket.IO packets are not supported".into(),
        ));
    }
    let (namespace, rest) = match rest.strip_prefix('/') {
        Some(_) => rest.split_once(',').unwrap_or((rest, "")),
        None => ("/", rest),
    };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let (ack, payload) = rest.split_at(digits);
    let ack = match ack {
        "" => None,
        ack => Some(
            ack.parse::<u64>()
                .ok()
                .filter(|ack| *ack <= MAX_ACK_ID)
                .ok_or_else(|| FrameError("ack id out of range".into()))?,
        ),
    };
    match kind {
        b'0' => connect(namespace, payload).map(Some),
        b'2' => {
            let id = ack.map_or(0, |ack| ack + 1);
            if namespace != "/" {
                return Ok(Some(Err(bad_request(id, "unknown namespace"))));
            }
            event(id, payload).map(Some)
        }
        // A DISCONNECT from another namespace (never connected) and ACKs (the server asks
        // for none) need nothing.
        b'1' | b'3' => Ok(None),
        _ => Err(FrameError("not a client Socket.IO packet".into())),
    }
}

fn connect(namespace: &str, payload: &str) -> Result<Result<Command, CommandError>, FrameError> {
    if namespace != "/" {
        if namespace.len() > MAX_NAMESPACE_BYTES {
            return Err(FrameError("namespace too long".into()));
        }
        return Ok(Err(CommandError {
            id: NAMESPACE_ID,
            code: ErrorCode::BadRequest,
            message: namespace.to_owned(),
        }));
    }
    #[derive(Default, Deserialize)]
    struct Auth {
        #[serde(default)]
        token: Option<String>,
        /// Sent by a client reconnecting after a CONNECT that carried a pid.
        #[serde(default)]
        pid: Option<String>,
        /// The last argument of the last event it received, when that was a string.
        #[serde(default)]
        offset: Option<String>,
    }
    let auth: Auth = match payload {
        "" => Auth::default(),
        payload => serde_json::from_str(payload).map_err(|e| FrameError(e.to_string()))?,
    };
    let resume = auth.pid.map(|pid| {
        Box::new(Resume {
            pid,
            offset: auth.offset.unwrap_or_default(),
        })
    });
    Ok(Ok(Command {
        id: CONNECT_ID,
        method: Method::Connect(ConnectRequest {
            token: auth.token,
            resume,
            ..ConnectRequest::default()
        }),
    }))
}

fn event(id: u64, payload: &str) -> Result<Result<Command, CommandError>, FrameError> {
    let args: Vec<Box<RawValue>> =
        serde_json::from_str(payload).map_err(|e| FrameError(e.to_string()))?;
    let mut args = args.into_iter();
    let Some(name) = args
        .next()
        .and_then(|name| serde_json::from_str::<String>(name.get()).ok())
    else {
        return Ok(Err(bad_request(id, "an event starts with its name")));
    };
    let method = match name.as_str() {
        SUBSCRIBE_EVENT => {
            #[derive(Default, Deserialize)]
            struct Options {
                #[serde(default)]
                token: Option<String>,
                #[serde(default)]
                recover: Option<StreamPosition>,
            }
            let Some(channel) = string(args.next()) else {
                return Ok(Err(bad_request(id, "herald:subscribe takes a channel")));
            };
            // Absent and `null` options are the same.
            let options = match args.next() {
                None => Options::default(),
                Some(options) => match serde_json::from_str::<Option<Options>>(options.get()) {
                    Ok(options) => options.unwrap_or_default(),
                    Err(e) => return Ok(Err(bad_request(id, &format!("bad options: {e}")))),
                },
            };
            Method::Subscribe(SubscribeRequest {
                channel,
                token: options.token,
                recover: options.recover,
            })
        }
        UNSUBSCRIBE_EVENT => {
            let Some(channel) = string(args.next()) else {
                return Ok(Err(bad_request(id, "herald:unsubscribe takes a channel")));
            };
            Method::Unsubscribe(UnsubscribeRequest { channel })
        }
        reserved if reserved.starts_with("herald:") => {
            return Ok(Err(CommandError {
                id,
                code: ErrorCode::MethodNotFound,
                message: format!("unknown Herald event: {reserved}"),
            }));
        }
        _ => Method::Rpc(RpcRequest {
            method: name,
            data: args.next(),
        }),
    };
    Ok(Ok(Command { id, method }))
}

fn string(value: Option<Box<RawValue>>) -> Option<String> {
    serde_json::from_str(value?.get()).ok()
}

fn bad_request(id: u64, message: &str) -> CommandError {
    CommandError {
        id,
        code: ErrorCode::BadRequest,
        message: format!("bad request: {message}"),
    }
}

/// The CONNECT that accepts a session: its id (Herald's client id) and the `pid` a client
/// sends back to recover the session after a reconnect.
pub fn encode_connected(sid: &str, pid: &str) -> Bytes {
    #[derive(Serialize)]
    struct Connected<'a> {
        sid: &'a str,
        pid: &'a str,
    }
    packet("40", &json(&Connected { sid, pid }))
}

/// A command's result: an ack of `{"ok":true, ...result}`, nothing for an event without an
/// ack id. (`connect` is answered with [`encode_connected`].)
pub fn encode_result<T: Serialize>(id: u64, result: &T) -> Bytes {
    let body = json(result);
    let fields = body
        .strip_prefix('{')
        .filter(|fields| *fields != "}")
        .map_or_else(|| "}".to_owned(), |fields| format!(",{fields}"));
    ack(id, &format!("{{\"ok\":true{fields}"))
}

/// An `rpc` result: the backend's data itself is the ack's argument.
pub fn encode_rpc_result(id: u64, data: &RawValue) -> Bytes {
    ack(id, data.get())
}

/// A command's error: CONNECT_ERROR for `connect` (`data.code` is Herald's error code) and
/// for another namespace, an ack of `{"error":{code,message}}` otherwise.
pub fn encode_error(id: u64, code: u32, message: &str) -> Bytes {
    #[derive(Serialize)]
    struct Refused<'a> {
        message: &'a str,
        data: Code,
    }
    #[derive(Serialize)]
    struct Code {
        code: u32,
    }
    #[derive(Serialize)]
    struct Failed<'a> {
        error: ErrorBody<'a>,
    }
    #[derive(Serialize)]
    struct ErrorBody<'a> {
        code: u32,
        message: &'a str,
    }
    match id {
        NAMESPACE_ID if message.starts_with('/') => packet(
            &format!("44{message},"),
            r#"{"message":"Invalid namespace"}"#,
        ),
        CONNECT_ID | NAMESPACE_ID => packet(
            "44",
            &json(&Refused {
                message,
                data: Code { code },
            }),
        ),
        id => ack(
            id,
            &json(&Failed {
                error: ErrorBody { code, message },
            }),
        ),
    }
}

/// A publication: an EVENT named by its event, with its data.
pub fn encode_publication(publication: &Publication) -> Bytes {
    let event = json(&*publication.event);
    packet("42", &format!("[{event},{}]", publication.data.get()))
}

/// The event that carries only a session's offset (see [`with_offset`]): sent when the
/// offset changes without a publication (a subscription begins or ends), before the reply
/// or push that tells the client, so a client that saw the change also holds its offset.
pub const OFFSET_EVENT: &str = "herald:offset";

/// An EVENT (`42[...]`) with `offset` appended as its last argument, which
/// socket.io-client keeps and sends back in its CONNECT to recover. `offset` must need no
/// JSON escaping (the gateway's offsets are made of channel names, epochs and digits).
pub fn with_offset(event: &[u8], offset: &str) -> Bytes {
    let Some(open) = event.strip_suffix(b"]") else {
        return Bytes::copy_from_slice(event);
    };
    let mut packet = Vec::with_capacity(event.len() + offset.len() + 3);
    packet.extend_from_slice(open);
    packet.extend_from_slice(b",\"");
    packet.extend_from_slice(offset.as_bytes());
    packet.extend_from_slice(b"\"]");
    Bytes::from(packet)
}

/// `42["herald:offset","<offset>"]`.
pub fn encode_offset(offset: &str) -> Bytes {
    with_offset(b"42[\"herald:offset\"]", offset)
}

/// How a session's close is announced before the WebSocket close frame: codes that mean
/// "do not reconnect as is" as a Socket.IO DISCONNECT (the client stays disconnected until
/// the app connects it again); the others as an Engine.IO close, which the client takes
/// for a lost transport and reconnects with its backoff.
pub fn encode_disconnect(code: CloseCode) -> Bytes {
    disconnect(code.reconnect())
}

fn disconnect(advice: Reconnect) -> Bytes {
    match advice {
        Reconnect::No => Bytes::from_static(b"41"),
        Reconnect::Backoff | Reconnect::Now => Bytes::from_static(b"1"),
    }
}

/// A push in Herald's JSON (`{"push":{"channel":C,"<kind>":{...}}}`) as a Socket.IO
/// packet: a publication as its event, a disconnect as [`encode_disconnect`], and the other
/// kinds as reserved events (`herald:join`, `herald:leave`, `herald:typing`,
/// `herald:status`, `herald:presence`, `herald:state`, `herald:subscribed`,
/// `herald:unsubscribed`) whose
/// argument is the push's body with its `channel`.
pub fn transcode_push(push: &[u8]) -> Result<Bytes, String> {
    #[derive(Deserialize)]
    struct Frame<'a> {
        #[serde(borrow)]
        push: BTreeMap<String, &'a RawValue>,
    }
    #[derive(Deserialize)]
    struct Pub<'a> {
        event: String,
        #[serde(borrow)]
        data: &'a RawValue,
    }
    #[derive(Deserialize)]
    struct Disconnect {
        code: u16,
    }
    let Frame { mut push } = serde_json::from_slice(push).map_err(|e| e.to_string())?;
    let channel = push.remove("channel");
    let mut kinds = push.into_iter();
    let (Some((kind, body)), None) = (kinds.next(), kinds.next()) else {
        return Err("a push has one kind".into());
    };
    let name = match kind.as_str() {
        "pub" => {
            let publication: Pub = serde_json::from_str(body.get()).map_err(|e| e.to_string())?;
            let event = json(&publication.event);
            return Ok(packet(
                "42",
                &format!("[{event},{}]", publication.data.get()),
            ));
        }
        "disconnect" => {
            let body: Disconnect = serde_json::from_str(body.get()).map_err(|e| e.to_string())?;
            return Ok(disconnect(reconnect_advice(body.code)));
        }
        "join" => "herald:join",
        "leave" => "herald:leave",
        "typing" => "herald:typing",
        "status" => "herald:status",
        "presence" => "herald:presence",
        "state" => "herald:state",
        "subscribe" => "herald:subscribed",
        "unsubscribe" => "herald:unsubscribed",
        other => return Err(format!("unknown push kind {other}")),
    };
    let body = body.get();
    let argument = match (channel, body.strip_prefix('{')) {
        (Some(channel), Some("}")) => format!("{{\"channel\":{}}}", channel.get()),
        (Some(channel), Some(fields)) => format!("{{\"channel\":{},{fields}", channel.get()),
        _ => body.to_owned(),
    };
    Ok(packet("42", &format!("[\"{name}\",{argument}]")))
}

/// `43<ack id>[argument]`, or nothing when the client asked for no ack.
fn ack(id: u64, argument: &str) -> Bytes {
    match id {
        0 => Bytes::new(),
        id => packet(&format!("43{}", id - 1), &format!("[{argument}]")),
    }
}

fn packet(head: &str, body: &str) -> Bytes {
    let mut packet = String::with_capacity(head.len() + body.len());
    packet.push_str(head);
    packet.push_str(body);
    Bytes::from(packet)
}

fn json<T: Serialize + ?Sized>(value: &T) -> String {
    // These values serialize: string keys, and raw values validated on the way in.
    serde_json::to_string(value).expect("serializes")
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::channel::ChannelName;
    use crate::reply::{self, ChannelEvent, PingResult, StatePush, TypingPush};

    fn commands(frame: &str) -> Vec<Result<Command, CommandError>> {
        parse_frame(frame.as_bytes()).unwrap()
    }

    fn one(frame: &str) -> Command {
        let mut commands = commands(frame);
        assert_eq!(commands.len(), 1, "{frame}");
        commands.remove(0).unwrap()
    }

    #[test]
    fn connect_takes_the_token_from_auth() {
        let command = one(r#"40{"token":"t0k"}"#);
        assert_eq!(command.id, CONNECT_ID);
        let Method::Connect(request) = command.method else {
            panic!("not connect")
        };
        assert_eq!(request.token.as_deref(), Some("t0k"));
        assert_eq!(request.resume, None);
        let Method::Connect(request) = one("40").method else {
            panic!("not connect")
        };
        assert_eq!(request.token, None);
        let Method::Connect(request) = one(r#"40{"pid":"p1","offset":"o7","token":"t"}"#).method
        else {
            panic!("not connect")
        };
        let resume = request.resume.unwrap();
        assert_eq!((&*resume.pid, &*resume.offset), ("p1", "o7"));
        // A client that received no event since it had the pid sends no offset.
        let Method::Connect(request) = one(r#"40{"pid":"p1"}"#).method else {
            panic!("not connect")
        };
        assert_eq!(request.resume.unwrap().offset, "");
    }

    #[test]
    fn another_namespace_is_refused_by_name() {
        let error = commands("40/admin,{}").remove(0).unwrap_err();
        let refused = encode_error(error.id, error.code.code(), &error.message);
        assert_eq!(&refused[..], br#"44/admin,{"message":"Invalid namespace"}"#);
    }

    #[test]
    fn events_map_to_commands_with_their_ack_ids() {
        let command =
            one(r#"427["herald:subscribe","public:a",{"recover":{"offset":3,"epoch":"e"}}]"#);
        assert_eq!(command.id, 8);
        let Method::Subscribe(request) = command.method else {
            panic!("not subscribe")
        };
        assert_eq!(request.channel, "public:a");
        assert_eq!(request.recover.unwrap().offset, 3);
        let command = one(r#"42["herald:subscribe","public:a",null]"#);
        assert!(matches!(command.method, Method::Subscribe(_)));
        let error = commands(r#"421["herald:subscribe","public:a",7]"#)
            .remove(0)
            .unwrap_err();
        assert_eq!((error.id, error.code), (2, ErrorCode::BadRequest));
        let command = one(r#"42["herald:unsubscribe","public:a"]"#);
        assert_eq!(command.id, 0);
        assert!(matches!(command.method, Method::Unsubscribe(_)));
        let command = one(r#"420["message:new",{"text":"hi"},"ignored"]"#);
        assert_eq!(command.id, 1);
        let Method::Rpc(request) = command.method else {
            panic!("not rpc")
        };
        assert_eq!(request.method, "message:new");
        assert_eq!(request.data.unwrap().get(), r#"{"text":"hi"}"#);
        let error = commands(r#"423["herald:nope"]"#).remove(0).unwrap_err();
        assert_eq!((error.id, error.code), (4, ErrorCode::MethodNotFound));
        let error = commands("421[7]").remove(0).unwrap_err();
        assert_eq!((error.id, error.code), (2, ErrorCode::BadRequest));
    }

    #[test]
    fn refuses_what_it_does_not_speak() {
        for frame in [
            "",
            "2",
            "5",
            "4",
            r#"451-["up",{"_placeholder":true,"num":0}]"#,
            r#"461-[{"_placeholder":true,"num":0}]"#,
            "42[oops",
            r#"4299999999999999999999["e"]"#,
        ] {
            assert!(parse_frame(frame.as_bytes()).is_err(), "{frame:?}");
        }
        assert!(commands("6").is_empty());
        assert!(commands(r#"431[{}]"#).is_empty());
        assert_eq!(control(b"3"), Some(Control::Pong));
        assert_eq!(control(b"41"), Some(Control::Close));
        assert_eq!(control(b"42[]"), None);
    }

    #[test]
    fn replies_are_connect_packets_and_acks() {
        assert_eq!(
            &encode_connected("c1", "p1")[..],
            br#"40{"sid":"c1","pid":"p1"}"#
        );
        assert_eq!(
            &encode_error(CONNECT_ID, 109, "token expired")[..],
            br#"44{"message":"token expired","data":{"code":109}}"#
        );
        assert_eq!(
            &encode_result(3, &PingResult { ts: 7 })[..],
            br#"432[{"ok":true,"ts":7}]"#
        );
        assert_eq!(
            &encode_result(1, &reply::EmptyResult {})[..],
            br#"430[{"ok":true}]"#
        );
        assert!(encode_result(0, &reply::EmptyResult {}).is_empty());
        assert_eq!(
            &encode_error(1, 103, "permission denied")[..],
            br#"430[{"error":{"code":103,"message":"permission denied"}}]"#
        );
        let data = RawValue::from_string("[1,2]".into()).unwrap();
        assert_eq!(&encode_rpc_result(6, &data)[..], b"435[[1,2]]");
    }

    #[test]
    fn pushes_are_events() {
        let publication = Publication {
            channel: ChannelName::parse("public:a").unwrap(),
            event: Arc::from("message:new"),
            data: Arc::from(RawValue::from_string(r#"{"text":"hi"}"#.into()).unwrap()),
            offset: 2,
            epoch: Arc::from("e"),
            ts: 1,
            from: None,
        };
        let direct = encode_publication(&publication);
        assert_eq!(&direct[..], br#"42["message:new",{"text":"hi"}]"#);
        assert_eq!(
            transcode_push(&reply::encode_publication(&publication)).unwrap(),
            direct
        );
        let typing = ChannelEvent::Typing(TypingPush {
            user: "alice".into(),
            info: None,
            active: true,
        });
        assert_eq!(
            &transcode_push(&reply::encode_event("org:a:ch:b", &typing)).unwrap()[..],
            br#"42["herald:typing",{"channel":"org:a:ch:b","user":"alice","active":true}]"#
        );
        let state = ChannelEvent::State(StatePush {
            user: "alice".into(),
            client: "c1".into(),
            state: None,
        });
        assert_eq!(
            &transcode_push(&reply::encode_event("org:a:ch:b", &state)).unwrap()[..],
            br#"42["herald:state",{"channel":"org:a:ch:b","user":"alice","client":"c1","state":null}]"#
        );
        assert_eq!(
            &transcode_push(&reply::encode_unsubscribe("public:a", 2500, "gone")).unwrap()[..],
            br#"42["herald:unsubscribed",{"channel":"public:a","code":2500,"reason":"gone"}]"#
        );
        assert_eq!(
            &with_offset(&direct, "h1;public:a,e,2")[..],
            br#"42["message:new",{"text":"hi"},"h1;public:a,e,2"]"#
        );
        assert_eq!(&encode_offset("h1")[..], br#"42["herald:offset","h1"]"#);
        let shutdown = reply::encode_disconnect(CloseCode::Shutdown, "bye");
        assert_eq!(&transcode_push(&shutdown).unwrap()[..], b"1");
        assert_eq!(&encode_disconnect(CloseCode::ForbiddenOrigin)[..], b"41");
    }

    #[test]
    fn open_packet_carries_the_heartbeat() {
        assert_eq!(
            &encode_open("s1", &[], 25_000, 20_000, 65_536)[..],
            br#"0{"sid":"s1","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":65536}"#
        );
    }
}
