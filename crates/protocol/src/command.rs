//! Client commands: `{"id": 7, "<method>": {...}}`, one per line of a text frame.
//!
//! Two kinds of failure, kept apart because the server answers them differently: a frame
//! that is not JSON at all ([`FrameError`]) closes the connection with 4000; a JSON
//! command with a bad shape or an unknown method ([`CommandError`]) gets an error reply.

use std::collections::HashMap;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use crate::codes::ErrorCode;

/// One client command.
#[derive(Debug)]
pub struct Command {
    pub id: u64,
    pub method: Method,
}

#[derive(Debug)]
pub enum Method {
    Connect(ConnectRequest),
    Subscribe(SubscribeRequest),
    Unsubscribe(UnsubscribeRequest),
    Publish(PublishRequest),
    History(HistoryRequest),
    Refresh(RefreshRequest),
    SubRefresh(SubRefreshRequest),
    Ping(PingRequest),
    Presence(PresenceRequest),
    PresenceStats(ChannelRequest),
    SetStatus(SetStatusRequest),
    Typing(TypingRequest),
    SetPresenceState(SetPresenceStateRequest),
    Rpc(RpcRequest),
}

impl Method {
    /// The method name as it appears on the wire, also used as a metric label.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Connect(_) => "connect",
            Self::Subscribe(_) => "subscribe",
            Self::Unsubscribe(_) => "unsubscribe",
            Self::Publish(_) => "publish",
            Self::History(_) => "history",
            Self::Refresh(_) => "refresh",
            Self::SubRefresh(_) => "subRefresh",
            Self::Ping(_) => "ping",
            Self::Presence(_) => "presence",
            Self::PresenceStats(_) => "presenceStats",
            Self::SetStatus(_) => "setStatus",
            Self::Typing(_) => "typing",
            Self::SetPresenceState(_) => "setPresenceState",
            Self::Rpc(_) => "rpc",
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export_to = "wire.ts"))]
#[serde(rename_all = "camelCase")]
pub struct ConnectRequest {
    #[serde(default)]
    #[cfg_attr(test, ts(optional))]
    pub token: Option<String>,
    #[serde(default)]
    #[cfg_attr(test, ts(optional))]
    pub name: Option<String>,
    #[serde(default)]
    #[cfg_attr(test, ts(optional))]
    pub version: Option<String>,
    /// The positions of the server-side subscriptions the client holds, to recover from
    /// when the server restores them after the reply.
    #[serde(default)]
    #[cfg_attr(test, ts(as = "Option<HashMap<String, StreamPosition>>", optional))]
    pub subs: HashMap<String, StreamPosition>,
    /// A Socket.IO client's `pid` and last `offset`, sent to recover its session; never
    /// read from Herald's own protocol. Boxed: rare, and commands are moved about whole.
    #[serde(skip)]
    pub resume: Option<Box<Resume>>,
}

/// What a reconnecting Socket.IO client sends to recover its session: the `pid` of its
/// last CONNECT and the offset of the last event it received (empty when it received
/// none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resume {
    pub pid: String,
    pub offset: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export_to = "wire.ts"))]
pub struct StreamPosition {
    pub offset: u64,
    pub epoch: String,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export_to = "wire.ts"))]
#[serde(rename_all = "camelCase")]
pub struct SubscribeRequest {
    pub channel: String,
    /// Subscription token for channels that take one.
    #[serde(default)]
    #[cfg_attr(test, ts(optional))]
    pub token: Option<String>,
    #[serde(default)]
    #[cfg_attr(test, ts(optional))]
    pub recover: Option<StreamPosition>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export_to = "wire.ts"))]
#[serde(rename_all = "camelCase")]
pub struct UnsubscribeRequest {
    pub channel: String,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export_to = "wire.ts"))]
#[serde(rename_all = "camelCase")]
pub struct PublishRequest {
    pub channel: String,
    pub event: String,
    #[cfg_attr(test, ts(type = "unknown"))]
    pub data: Box<RawValue>,
    /// Makes a retry safe: the same key on the same channel within 5 minutes is applied
    /// once (scoped to the connection's user). At most 256 bytes.
    #[serde(default)]
    #[cfg_attr(test, ts(optional))]
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export_to = "wire.ts"))]
#[serde(rename_all = "camelCase")]
pub struct HistoryRequest {
    pub channel: String,
    #[serde(default)]
    #[cfg_attr(test, ts(optional))]
    pub limit: Option<u32>,
    #[serde(default)]
    #[cfg_attr(test, ts(optional))]
    pub since_offset: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export_to = "wire.ts"))]
pub struct RefreshRequest {
    pub token: String,
}

/// `subRefresh`: a new subscription token for a channel the connection is subscribed to
/// with one, moving the subscription's expiry.
#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export_to = "wire.ts"))]
pub struct SubRefreshRequest {
    pub channel: String,
    pub token: String,
}

#[derive(Debug, Default, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export_to = "wire.ts"))]
pub struct PingRequest {}

/// `presenceStats`: a channel the connection is a member of.
#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export_to = "wire.ts"))]
#[serde(rename_all = "camelCase")]
pub struct ChannelRequest {
    pub channel: String,
}

/// `presence`: a channel the connection is a member of, from the start of its member list
/// or from where the previous page's `cursor` left off.
#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export_to = "wire.ts"))]
#[serde(rename_all = "camelCase")]
pub struct PresenceRequest {
    pub channel: String,
    #[serde(default)]
    #[cfg_attr(test, ts(optional))]
    pub cursor: Option<String>,
}

/// `setStatus`: `online`, `away` or `busy`, for every org of the user.
#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export_to = "wire.ts"))]
#[serde(rename_all = "camelCase")]
pub struct SetStatusRequest {
    pub status: String,
}

/// `typing`: the connection's user starts (`active: true`) or stops typing in a channel.
#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export_to = "wire.ts"))]
#[serde(rename_all = "camelCase")]
pub struct TypingRequest {
    pub channel: String,
    pub active: bool,
}

/// `setPresenceState`: the JSON state of the connection's membership of a channel, shown
/// to the channel's members until it leaves; absent and `null` clear it.
#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export_to = "wire.ts"))]
#[serde(rename_all = "camelCase")]
pub struct SetPresenceStateRequest {
    pub channel: String,
    #[serde(default)]
    #[cfg_attr(test, ts(optional, type = "unknown"))]
    pub state: Option<Box<RawValue>>,
}

/// `rpc`: a call to the app's backend, answered with the backend's reply.
#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export_to = "wire.ts"))]
#[serde(rename_all = "camelCase")]
pub struct RpcRequest {
    /// The backend's method, checked with [`valid_rpc_method`].
    pub method: String,
    /// Any JSON value; absent and `null` are the same.
    #[serde(default)]
    #[cfg_attr(test, ts(optional, type = "unknown"))]
    pub data: Option<Box<RawValue>>,
}

/// Longest `rpc` method name, in bytes.
pub const MAX_RPC_METHOD_BYTES: usize = 64;

/// Whether `method` may name a backend method: 1-64 bytes of `[A-Za-z0-9_.:/-]`, so it is
/// safe as a metric label and in logs.
pub fn valid_rpc_method(method: &str) -> bool {
    (1..=MAX_RPC_METHOD_BYTES).contains(&method.len())
        && method
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.:/-".contains(&b))
}

/// The frame is not JSON: the connection closes with 4000.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("frame is not a JSON object: {0}")]
pub struct FrameError(pub String);

/// The command is JSON but cannot be run: the client gets an error reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CommandError {
    /// The command's id, when it could be read.
    pub id: u64,
    pub code: ErrorCode,
    pub message: String,
}

/// Parses one text frame into its commands, one per non-empty line. The whole frame fails
/// when a line is not a JSON object.
pub fn parse_frame(frame: &str) -> Result<Vec<Result<Command, CommandError>>, FrameError> {
    frame
        .split('\n')
        .filter(|line| !line.trim().is_empty())
        .map(parse_command)
        .collect()
}

/// Parses one command line.
pub fn parse_command(line: &str) -> Result<Result<Command, CommandError>, FrameError> {
    let fields: HashMap<String, Box<RawValue>> =
        serde_json::from_str(line).map_err(|e| FrameError(e.to_string()))?;
    let id = match fields.get("id") {
        None => 0,
        Some(raw) => match serde_json::from_str::<u64>(raw.get()) {
            Ok(id) => id,
            Err(_) => return Ok(Err(bad_request(0, "id must be a non-negative integer"))),
        },
    };
    let mut methods = fields.iter().filter(|(key, _)| key.as_str() != "id");
    let (name, params) = match (methods.next(), methods.next()) {
        (Some(method), None) => method,
        (None, _) => return Ok(Err(bad_request(id, "command has no method"))),
        (Some(_), Some(_)) => return Ok(Err(bad_request(id, "command has more than one method"))),
    };
    let params = params.get();
    let method = match name.as_str() {
        "connect" => params_of(id, params).map(Method::Connect),
        "subscribe" => params_of(id, params).map(Method::Subscribe),
        "unsubscribe" => params_of(id, params).map(Method::Unsubscribe),
        "publish" => params_of(id, params).map(Method::Publish),
        "history" => params_of(id, params).map(Method::History),
        "refresh" => params_of(id, params).map(Method::Refresh),
        "subRefresh" => params_of(id, params).map(Method::SubRefresh),
        "ping" => params_of(id, params).map(Method::Ping),
        "presence" => params_of(id, params).map(Method::Presence),
        "presenceStats" => params_of(id, params).map(Method::PresenceStats),
        "setStatus" => params_of(id, params).map(Method::SetStatus),
        "typing" => params_of(id, params).map(Method::Typing),
        "setPresenceState" => params_of(id, params).map(Method::SetPresenceState),
        "rpc" => params_of(id, params).map(Method::Rpc),
        _ => Err(CommandError {
            id,
            code: ErrorCode::MethodNotFound,
            message: format!("method not found: {}", truncate(name, 64)),
        }),
    };
    Ok(method.map(|method| Command { id, method }))
}

fn params_of<T: DeserializeOwned>(id: u64, params: &str) -> Result<T, CommandError> {
    serde_json::from_str(params).map_err(|e| bad_request(id, &e.to_string()))
}

fn bad_request(id: u64, reason: &str) -> CommandError {
    CommandError {
        id,
        code: ErrorCode::BadRequest,
        message: format!("bad request: {reason}"),
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((end, _)) => &s[..end],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(line: &str) -> Result<Command, CommandError> {
        parse_command(line).expect("a JSON object")
    }

    #[test]
    fn parses_each_method() {
        let cmd = one(r#"{"id":1,"connect":{"token":"t","name":"web","version":"1.0"}}"#).unwrap();
        assert_eq!(cmd.id, 1);
        assert!(
            matches!(cmd.method, Method::Connect(ConnectRequest { token: Some(ref t), .. }) if t == "t")
        );
        let cmd =
            one(r#"{"id":2,"subscribe":{"channel":"c:d","recover":{"offset":3,"epoch":"e"}}}"#)
                .unwrap();
        let Method::Subscribe(sub) = cmd.method else {
            panic!("subscribe")
        };
        assert_eq!(
            sub.recover,
            Some(StreamPosition {
                offset: 3,
                epoch: "e".into()
            })
        );
        let cmd =
            one(r#"{"id":3,"publish":{"channel":"c:d","event":"x","data":{"a":[1]}}}"#).unwrap();
        let Method::Publish(publish) = cmd.method else {
            panic!("publish")
        };
        assert_eq!(publish.data.get(), r#"{"a":[1]}"#);
        let cmd = one(r#"{"id":4,"history":{"channel":"c:d","limit":5,"sinceOffset":2}}"#).unwrap();
        let Method::History(history) = cmd.method else {
            panic!("history")
        };
        assert_eq!((history.limit, history.since_offset), (Some(5), Some(2)));
        assert!(matches!(
            one(r#"{"id":5,"ping":{}}"#).unwrap().method,
            Method::Ping(_)
        ));
        assert!(matches!(
            one(r#"{"id":6,"unsubscribe":{"channel":"a:b"}}"#)
                .unwrap()
                .method,
            Method::Unsubscribe(_)
        ));
        assert!(matches!(
            one(r#"{"id":7,"refresh":{"token":"t"}}"#).unwrap().method,
            Method::Refresh(_)
        ));
        let cmd = one(r#"{"id":9,"subRefresh":{"channel":"c:d","token":"t"}}"#).unwrap();
        let Method::SubRefresh(sub_refresh) = cmd.method else {
            panic!("subRefresh")
        };
        assert_eq!((&*sub_refresh.channel, &*sub_refresh.token), ("c:d", "t"));
        let cmd = one(r#"{"id":8,"presence":{"channel":"c:d","cursor":"x"}}"#).unwrap();
        let Method::Presence(presence) = cmd.method else {
            panic!("presence")
        };
        assert_eq!(presence.cursor.as_deref(), Some("x"));
        let cmd = one(r#"{"id":10,"rpc":{"method":"message:send","data":{"text":"hi"}}}"#).unwrap();
        let Method::Rpc(rpc) = cmd.method else {
            panic!("rpc")
        };
        assert_eq!(rpc.method, "message:send");
        assert_eq!(rpc.data.unwrap().get(), r#"{"text":"hi"}"#);
        for no_data in [
            r#"{"id":11,"rpc":{"method":"m"}}"#,
            r#"{"id":11,"rpc":{"method":"m","data":null}}"#,
        ] {
            let Method::Rpc(rpc) = one(no_data).unwrap().method else {
                panic!("rpc")
            };
            assert!(rpc.data.is_none(), "{no_data}");
        }
        let cmd =
            one(r#"{"id":12,"setPresenceState":{"channel":"c:d","state":{"mood":"ok"}}}"#).unwrap();
        let Method::SetPresenceState(set) = cmd.method else {
            panic!("setPresenceState")
        };
        assert_eq!(set.state.unwrap().get(), r#"{"mood":"ok"}"#);
        for cleared in [
            r#"{"id":13,"setPresenceState":{"channel":"c:d"}}"#,
            r#"{"id":13,"setPresenceState":{"channel":"c:d","state":null}}"#,
        ] {
            let Method::SetPresenceState(set) = one(cleared).unwrap().method else {
                panic!("setPresenceState")
            };
            assert!(set.state.is_none(), "{cleared}");
        }
    }

    #[test]
    fn rpc_method_names() {
        for good in ["m", "message:send", "a/b.c_d-e", &"x".repeat(64)] {
            assert!(valid_rpc_method(good), "{good}");
        }
        for bad in ["", "a b", "é", "a\nb", "a*", &"x".repeat(65)] {
            assert!(!valid_rpc_method(bad), "{bad}");
        }
    }

    #[test]
    fn shape_errors_are_replies() {
        let err = one(r#"{"id":9,"dance":{}}"#).unwrap_err();
        assert_eq!((err.id, err.code), (9, ErrorCode::MethodNotFound));
        let err = one(r#"{"id":9,"subscribe":{}}"#).unwrap_err();
        assert_eq!((err.id, err.code), (9, ErrorCode::BadRequest));
        let err = one(r#"{"id":9}"#).unwrap_err();
        assert_eq!(err.code, ErrorCode::BadRequest);
        let err = one(r#"{"id":9,"ping":{},"connect":{}}"#).unwrap_err();
        assert_eq!(err.code, ErrorCode::BadRequest);
        let err = one(r#"{"id":-1,"ping":{}}"#).unwrap_err();
        assert_eq!(err.code, ErrorCode::BadRequest);
    }

    mod hostile_input {
        use proptest::prelude::*;
        use proptest::sample::Index;

        use super::*;

        /// One command of each shape a client sends, for the mutations to start from.
        const SEEDS: [&str; 3] = [
            r#"{"id":1,"subscribe":{"channel":"org:a:b","recover":{"offset":3,"epoch":"e"}}}"#,
            r#"{"id":2,"publish":{"channel":"c:d","event":"x","data":{"a":[1,{"b":"\u00e9"}]}}}"#,
            r#"{"id":3,"history":{"channel":"c:d","limit":5,"sinceOffset":2}}"#,
        ];
        /// JSON's punctuation and the letters of the method names, so mutants stay close.
        const ALPHABET: &[u8] = br#"{}[]":,\0123456789eE+-.truefalsnl idconectsubrpyhgmak"#;
        const METHODS: [&str; 14] = [
            "connect",
            "subscribe",
            "unsubscribe",
            "publish",
            "history",
            "refresh",
            "subRefresh",
            "ping",
            "presence",
            "presenceStats",
            "setStatus",
            "typing",
            "setPresenceState",
            "rpc",
        ];

        fn config() -> ProptestConfig {
            ProptestConfig {
                cases: 4096,
                // The failing input is printed; no regression file in the source tree.
                failure_persistence: None,
                ..ProptestConfig::default()
            }
        }

        /// A seed after 1-7 edits, each replacing, removing or inserting a byte.
        fn mutant() -> impl Strategy<Value = Vec<u8>> {
            let edit = (0..3u8, any::<Index>(), any::<Index>());
            (0..SEEDS.len(), prop::collection::vec(edit, 1..8)).prop_map(|(seed, edits)| {
                let mut bytes = SEEDS[seed].as_bytes().to_vec();
                for (kind, at, byte) in edits {
                    if bytes.is_empty() {
                        break;
                    }
                    let at = at.index(bytes.len());
                    let byte = ALPHABET[byte.index(ALPHABET.len())];
                    match kind {
                        0 => bytes[at] = byte,
                        1 => {
                            bytes.remove(at);
                        }
                        _ => bytes.insert(at, byte),
                    }
                }
                bytes
            })
        }

        /// What `parse_frame` promises for any text: the frame fails exactly when one of its
        /// non-blank lines is not a JSON object; otherwise there is one result per such line,
        /// either a command with the line's id and its only key besides `id` as the method,
        /// or an error with the line's id (0 when unreadable) and a documented code and
        /// message.
        fn check_frame(text: &str) -> Result<(), TestCaseError> {
            let lines: Vec<&str> = text
                .split('\n')
                .filter(|line| !line.trim().is_empty())
                .collect();
            let objects: Vec<Option<HashMap<String, Box<RawValue>>>> = lines
                .iter()
                .map(|line| serde_json::from_str(line).ok())
                .collect();
            let results = match parse_frame(text) {
                Err(error) => {
                    prop_assert!(
                        objects.iter().any(Option::is_none),
                        "every line is an object, yet {error}"
                    );
                    return Ok(());
                }
                Ok(results) => results,
            };
            prop_assert_eq!(results.len(), lines.len());
            for (result, object) in results.iter().zip(&objects) {
                let Some(object) = object else {
                    return Err(TestCaseError::fail("a line that is no object was parsed"));
                };
                let id = object
                    .get("id")
                    .map_or(Some(0), |raw| serde_json::from_str::<u64>(raw.get()).ok());
                let methods: Vec<&str> = object
                    .keys()
                    .map(String::as_str)
                    .filter(|key| *key != "id")
                    .collect();
                match result {
                    Ok(command) => {
                        prop_assert_eq!(Some(command.id), id);
                        prop_assert_eq!(&methods, &[command.method.name()]);
                    }
                    Err(error) => {
                        prop_assert_eq!(error.id, id.unwrap_or(0));
                        match error.code {
                            ErrorCode::BadRequest => {
                                prop_assert!(error.message.starts_with("bad request: "), "{error}")
                            }
                            ErrorCode::MethodNotFound => {
                                prop_assert_eq!(methods.len(), 1);
                                prop_assert!(!METHODS.contains(&methods[0]), "{error}");
                                prop_assert!(
                                    error.message.starts_with("method not found: "),
                                    "{error}"
                                );
                            }
                            other => prop_assert!(false, "undocumented code {other:?}: {error}"),
                        }
                    }
                }
            }
            Ok(())
        }

        proptest! {
            #![proptest_config(config())]

            #[test]
            fn mutated_commands_parse_or_fail_as_documented(bytes in mutant()) {
                if let Ok(text) = std::str::from_utf8(&bytes) {
                    check_frame(text)?;
                }
                check_frame(&String::from_utf8_lossy(&bytes))?;
            }

            #[test]
            fn random_bytes_parse_or_fail_as_documented(
                bytes in prop::collection::vec(any::<u8>(), 0..64),
            ) {
                check_frame(&String::from_utf8_lossy(&bytes))?;
            }
        }

        #[test]
        fn the_seeds_parse() {
            for seed in SEEDS {
                assert!(matches!(parse_command(seed), Ok(Ok(_))), "{seed}");
            }
        }
    }

    #[test]
    fn non_json_fails_the_frame() {
        assert!(parse_command("hello").is_err());
        assert!(parse_command("[1,2]").is_err());
        assert!(parse_frame("{\"id\":1,\"ping\":{}}\nnope").is_err());
        let commands = parse_frame("{\"id\":1,\"ping\":{}}\n\n{\"id\":2,\"ping\":{}}\n").unwrap();
        assert_eq!(commands.len(), 2);
    }
}
