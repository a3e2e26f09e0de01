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
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectRequest {
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub version: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct StreamPosition {
    pub offset: u64,
    pub epoch: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscribeRequest {
    pub channel: String,
    /// Subscription token for channels that take one.
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub recover: Option<StreamPosition>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UnsubscribeRequest {
    pub channel: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PublishRequest {
    pub channel: String,
    pub event: String,
    pub data: Box<RawValue>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryRequest {
    pub channel: String,
    #[serde(default)]
    pub limit: Option<u32>,
    #[serde(default)]
    pub since_offset: Option<u64>,
}

#[derive(Debug, Deserialize)]
pub struct RefreshRequest {
    pub token: String,
}

/// `subRefresh`: a new subscription token for a channel the connection is subscribed to
/// with one, moving the subscription's expiry.
#[derive(Debug, Deserialize)]
pub struct SubRefreshRequest {
    pub channel: String,
    pub token: String,
}

#[derive(Debug, Default, Deserialize)]
pub struct PingRequest {}

/// `presenceStats`: a channel the connection is a member of.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChannelRequest {
    pub channel: String,
}

/// `presence`: a channel the connection is a member of, from the start of its member list
/// or from where the previous page's `cursor` left off.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PresenceRequest {
    pub channel: String,
    #[serde(default)]
    pub cursor: Option<String>,
}

/// `setStatus`: `online`, `away` or `busy`, for every org of the user.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SetStatusRequest {
    pub status: String,
}

/// `typing`: the connection's user starts (`active: true`) or stops typing in a channel.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TypingRequest {
    pub channel: String,
    pub active: bool,
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

    /// Hostile input never panics: random bytes, and random mutations of valid commands.
    #[test]
    fn arbitrary_input_never_panics() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let seeds = [
            r#"{"id":1,"subscribe":{"channel":"org:a:b","recover":{"offset":3,"epoch":"e"}}}"#,
            r#"{"id":2,"publish":{"channel":"c:d","event":"x","data":{"a":[1,{"b":"\u00e9"}]}}}"#,
            r#"{"id":3,"history":{"channel":"c:d","limit":5,"sinceOffset":2}}"#,
        ];
        let alphabet = br#"{}[]":,\0123456789eE+-.truefalsnl idconectsubrpyhgmak"#;
        for round in 0..20_000 {
            let mut bytes = seeds[round % seeds.len()].as_bytes().to_vec();
            for _ in 0..rng.random_range(1..8) {
                let at = rng.random_range(0..bytes.len());
                match rng.random_range(0..3) {
                    0 => bytes[at] = alphabet[rng.random_range(0..alphabet.len())],
                    1 => {
                        bytes.remove(at);
                    }
                    _ => bytes.insert(at, alphabet[rng.random_range(0..alphabet.len())]),
                }
                if bytes.is_empty() {
                    break;
                }
            }
            if let Ok(text) = std::str::from_utf8(&bytes) {
                let _ = parse_frame(text);
            }
            let random: Vec<u8> = (0..rng.random_range(0..64)).map(|_| rng.random()).collect();
            let _ = parse_frame(&String::from_utf8_lossy(&random));
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
