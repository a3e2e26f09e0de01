//! The binary subprotocol `herald.v1.proto`: the commands, replies and pushes of the JSON
//! subprotocol as protobuf (`proto/herald/v1/client.proto`, generated into [`pb`]).
//!
//! Framing: a binary WebSocket frame holds one or more messages, each prefixed with its
//! length as a varint (protobuf's length-delimited form): `Command`s from the client,
//! `Reply`s from the server. The server coalesces messages into a frame by concatenating
//! them, as it joins JSON messages with newlines. JSON values (publication data, a token's
//! `info`) travel as their JSON text in `bytes` fields; a field at its default value means
//! absent, as the JSON form omits it.
//!
//! The server side decodes commands with [`parse_frame`] and encodes with the `encode_*`
//! functions; the client side encodes with [`encode_command`] and decodes with
//! [`decode_frame`] into the same [`ServerMessage`] the JSON form decodes into.

use std::sync::Arc;

use bytes::Bytes;
use prost::Message;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::codes::{CloseCode, ErrorCode, Reconnect};
use crate::command::{
    ChannelRequest, Command, CommandError, ConnectRequest, FrameError, HistoryRequest, Method,
    PingRequest, PresenceRequest, PublishRequest, RefreshRequest, RpcRequest,
    SetPresenceStateRequest, SetStatusRequest, StreamPosition, SubRefreshRequest, SubscribeRequest,
    TypingRequest, UnsubscribeRequest,
};
use crate::presence::{Status, UserStatus};
use crate::publication::Publication;
use crate::reply::{
    ChannelEvent, ConnectResult, DisconnectPush, EmptyResult, ErrorBody, HistoryResult, PingResult,
    PresenceDiff, PresenceMember, PresenceResult, PresenceStatsResult, PublishResult, Push,
    ReceivedPublication, RefreshResult, RpcResult, ServerMessage, StatePush, SubscribeResult,
    TypingPush, UnsubscribePush,
};

/// `herald.v1.client`, generated from `proto/herald/v1/client.proto`.
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/herald.v1.client.rs"));
}

use pb::command::Method as PbMethod;
use pb::push::Kind as PbPush;
use pb::reply::Kind as PbReply;
use pb::result::Result as PbResult;

/// Parses one binary frame into its commands. The whole frame fails (the connection closes
/// with 4000) when it is not a sequence of length-delimited `Command`s; a command that
/// decodes but cannot be run (no method this server knows, `data` that is not JSON) is an
/// error reply, as in JSON.
pub fn parse_frame(frame: &[u8]) -> Result<Vec<Result<Command, CommandError>>, FrameError> {
    let mut rest = frame;
    let mut commands = Vec::new();
    while !rest.is_empty() {
        let command = pb::Command::decode_length_delimited(&mut rest)
            .map_err(|e| FrameError(e.to_string()))?;
        commands.push(command_of(command));
    }
    Ok(commands)
}

fn command_of(command: pb::Command) -> Result<Command, CommandError> {
    let id = command.id;
    let method = match command.method {
        // An unknown field is skipped by the decoder: a method this server does not know
        // reads as none.
        None => {
            return Err(CommandError {
                id,
                code: ErrorCode::MethodNotFound,
                message: "method not found: the command sets no method this server knows"
                    .to_owned(),
            });
        }
        Some(PbMethod::Connect(r)) => Method::Connect(ConnectRequest {
            token: non_empty(r.token),
            name: non_empty(r.name),
            version: non_empty(r.version),
            subs: r
                .subs
                .into_iter()
                .map(|(channel, p)| (channel, position_of(p)))
                .collect(),
            resume: None,
        }),
        Some(PbMethod::Subscribe(r)) => Method::Subscribe(SubscribeRequest {
            channel: r.channel,
            token: non_empty(r.token),
            recover: r.recover.map(position_of),
        }),
        Some(PbMethod::Unsubscribe(r)) => {
            Method::Unsubscribe(UnsubscribeRequest { channel: r.channel })
        }
        Some(PbMethod::Publish(r)) => {
            let data = json_value(r.data).map_err(|reason| bad_data(id, reason))?;
            Method::Publish(PublishRequest {
                channel: r.channel,
                event: r.event,
                data,
                idempotency_key: non_empty(r.idempotency_key),
            })
        }
        Some(PbMethod::History(r)) => Method::History(HistoryRequest {
            channel: r.channel,
            limit: r.limit,
            since_offset: r.since_offset,
        }),
        Some(PbMethod::Refresh(r)) => Method::Refresh(RefreshRequest { token: r.token }),
        Some(PbMethod::SubRefresh(r)) => Method::SubRefresh(SubRefreshRequest {
            channel: r.channel,
            token: r.token,
        }),
        Some(PbMethod::Ping(_)) => Method::Ping(PingRequest {}),
        Some(PbMethod::Presence(r)) => Method::Presence(PresenceRequest {
            channel: r.channel,
            cursor: non_empty(r.cursor),
        }),
        Some(PbMethod::PresenceStats(r)) => {
            Method::PresenceStats(ChannelRequest { channel: r.channel })
        }
        Some(PbMethod::SetStatus(r)) => Method::SetStatus(SetStatusRequest { status: r.status }),
        Some(PbMethod::Typing(r)) => Method::Typing(TypingRequest {
            channel: r.channel,
            active: r.active,
        }),
        Some(PbMethod::SetPresenceState(r)) => {
            let state = optional_value(r.state).map_err(|reason| bad_data(id, reason))?;
            Method::SetPresenceState(SetPresenceStateRequest {
                channel: r.channel,
                state,
            })
        }
        Some(PbMethod::Rpc(r)) => {
            let data = optional_value(r.data).map_err(|reason| bad_data(id, reason))?;
            Method::Rpc(RpcRequest {
                method: r.method,
                data,
            })
        }
    };
    Ok(Command { id, method })
}

fn position_of(p: pb::StreamPosition) -> StreamPosition {
    StreamPosition {
        offset: p.offset,
        epoch: p.epoch,
    }
}

fn pb_position(p: StreamPosition) -> pb::StreamPosition {
    pb::StreamPosition {
        offset: p.offset,
        epoch: p.epoch,
    }
}

fn bad_data(id: u64, reason: String) -> CommandError {
    CommandError {
        id,
        code: ErrorCode::BadRequest,
        message: format!("bad request: data is not a JSON value: {reason}"),
    }
}

/// One command, length-delimited (the client side).
pub fn encode_command(command: Command) -> Vec<u8> {
    let method = match command.method {
        Method::Connect(r) => PbMethod::Connect(pb::ConnectRequest {
            token: r.token.unwrap_or_default(),
            name: r.name.unwrap_or_default(),
            version: r.version.unwrap_or_default(),
            subs: r
                .subs
                .into_iter()
                .map(|(channel, p)| (channel, pb_position(p)))
                .collect(),
        }),
        Method::Subscribe(r) => PbMethod::Subscribe(pb::SubscribeRequest {
            channel: r.channel,
            token: r.token.unwrap_or_default(),
            recover: r.recover.map(pb_position),
        }),
        Method::Unsubscribe(r) => {
            PbMethod::Unsubscribe(pb::UnsubscribeRequest { channel: r.channel })
        }
        Method::Publish(r) => PbMethod::Publish(pb::PublishRequest {
            channel: r.channel,
            event: r.event,
            data: r.data.get().as_bytes().to_vec(),
            idempotency_key: r.idempotency_key.unwrap_or_default(),
        }),
        Method::History(r) => PbMethod::History(pb::HistoryRequest {
            channel: r.channel,
            limit: r.limit,
            since_offset: r.since_offset,
        }),
        Method::Refresh(r) => PbMethod::Refresh(pb::RefreshRequest { token: r.token }),
        Method::SubRefresh(r) => PbMethod::SubRefresh(pb::SubRefreshRequest {
            channel: r.channel,
            token: r.token,
        }),
        Method::Ping(_) => PbMethod::Ping(pb::PingRequest {}),
        Method::Presence(r) => PbMethod::Presence(pb::PresenceRequest {
            channel: r.channel,
            cursor: r.cursor.unwrap_or_default(),
        }),
        Method::PresenceStats(r) => {
            PbMethod::PresenceStats(pb::PresenceStatsRequest { channel: r.channel })
        }
        Method::SetStatus(r) => PbMethod::SetStatus(pb::SetStatusRequest { status: r.status }),
        Method::Typing(r) => PbMethod::Typing(pb::TypingRequest {
            channel: r.channel,
            active: r.active,
        }),
        Method::SetPresenceState(r) => PbMethod::SetPresenceState(pb::SetPresenceStateRequest {
            channel: r.channel,
            state: json_bytes(r.state.as_deref()),
        }),
        Method::Rpc(r) => PbMethod::Rpc(pb::RpcRequest {
            method: r.method,
            data: json_bytes(r.data.as_deref()),
        }),
    };
    pb::Command {
        id: command.id,
        method: Some(method),
    }
    .encode_length_delimited_to_vec()
}

/// A result type of a command, in either encoding: serde for JSON, this for protobuf.
pub trait ResultBody: Serialize {
    /// The `Result` oneof; `None` for the results that are `{}` in JSON.
    fn to_proto(&self) -> Option<PbResult>;
}

impl ResultBody for ConnectResult {
    fn to_proto(&self) -> Option<PbResult> {
        Some(PbResult::Connect(pb::ConnectResult {
            client: self.client.clone(),
            user: self.user.clone(),
            node: self.node.clone(),
            ping: self.ping,
            expires: self.expires,
        }))
    }
}

impl ResultBody for SubscribeResult<Publication> {
    fn to_proto(&self) -> Option<PbResult> {
        Some(PbResult::Subscribe(subscribed(self)))
    }
}

fn subscribed(result: &SubscribeResult<Publication>) -> pb::SubscribeResult {
    pb::SubscribeResult {
        offset: result.offset,
        epoch: result.epoch.clone(),
        recoverable: result.recoverable,
        recovered: result.recovered,
        publications: result.publications.iter().map(publication).collect(),
        more: result.more,
        typing: result.typing.iter().map(typing).collect(),
        expires: result.expires,
    }
}

impl ResultBody for HistoryResult<Publication> {
    fn to_proto(&self) -> Option<PbResult> {
        Some(PbResult::History(pb::HistoryResult {
            publications: self.publications.iter().map(publication).collect(),
            offset: self.offset,
            epoch: self.epoch.clone(),
            more: self.more,
        }))
    }
}

impl ResultBody for PublishResult {
    fn to_proto(&self) -> Option<PbResult> {
        Some(PbResult::Publish(pb::PublishResult {
            offset: self.offset,
            epoch: self.epoch.clone(),
        }))
    }
}

impl ResultBody for RefreshResult {
    fn to_proto(&self) -> Option<PbResult> {
        Some(PbResult::Refresh(pb::RefreshResult {
            expires: self.expires,
        }))
    }
}

impl ResultBody for PingResult {
    fn to_proto(&self) -> Option<PbResult> {
        Some(PbResult::Ping(pb::PingResult { ts: self.ts }))
    }
}

impl ResultBody for PresenceResult {
    fn to_proto(&self) -> Option<PbResult> {
        Some(PbResult::Presence(pb::PresenceResult {
            members: self.members.iter().map(member).collect(),
            more: self.more,
            cursor: self.cursor.clone().unwrap_or_default(),
        }))
    }
}

impl ResultBody for PresenceStatsResult {
    fn to_proto(&self) -> Option<PbResult> {
        Some(PbResult::PresenceStats(pb::PresenceStatsResult {
            users: self.users,
            clients: self.clients,
        }))
    }
}

/// `null` travels as empty `data`, as an absent JSON value does elsewhere.
impl ResultBody for RpcResult {
    fn to_proto(&self) -> Option<PbResult> {
        let data = match self.data.get() {
            "null" => Vec::new(),
            json => json.as_bytes().to_vec(),
        };
        Some(PbResult::Rpc(pb::RpcResult { data }))
    }
}

impl ResultBody for EmptyResult {
    fn to_proto(&self) -> Option<PbResult> {
        None
    }
}

fn reply(id: u64, kind: PbReply) -> Bytes {
    Bytes::from(
        pb::Reply {
            id,
            kind: Some(kind),
        }
        .encode_length_delimited_to_vec(),
    )
}

fn push_frame(channel: &str, kind: PbPush) -> Bytes {
    reply(
        0,
        PbReply::Push(pb::Push {
            channel: channel.to_owned(),
            kind: Some(kind),
        }),
    )
}

pub fn encode_result<T: ResultBody>(id: u64, result: &T) -> Bytes {
    reply(
        id,
        PbReply::Result(pb::Result {
            result: result.to_proto(),
        }),
    )
}

pub fn encode_error(id: u64, code: ErrorCode, message: &str) -> Bytes {
    encode_raw_error(id, code.code(), message, code.temporary())
}

/// An error reply with a code that is not Herald's own: the app's backend's, passed through.
pub fn encode_raw_error(id: u64, code: u32, message: &str, temporary: bool) -> Bytes {
    reply(
        id,
        PbReply::Error(pb::Error {
            code,
            message: message.to_owned(),
            temporary,
        }),
    )
}

/// A publication push: encoded once per publication per node.
pub fn encode_publication(p: &Publication) -> Bytes {
    push_frame(p.channel.as_str(), PbPush::Pub(publication(p)))
}

pub fn encode_event(channel: &str, event: &ChannelEvent) -> Bytes {
    let kind = match event {
        ChannelEvent::Join(m) => PbPush::Join(member(m)),
        ChannelEvent::Leave(m) => PbPush::Leave(member(m)),
        ChannelEvent::Presence(diff) => PbPush::Presence(presence_diff(diff)),
        ChannelEvent::Typing(t) => PbPush::Typing(typing(t)),
        ChannelEvent::State(s) => PbPush::State(state_push(s)),
        ChannelEvent::Status(s) => PbPush::Status(pb::UserStatus {
            user: s.user.to_string(),
            status: s.status.as_str().to_owned(),
            last_seen: s.last_seen,
        }),
    };
    push_frame(channel, kind)
}

pub fn encode_unsubscribe(channel: &str, code: u32, reason: &str) -> Bytes {
    push_frame(
        channel,
        PbPush::Unsubscribe(pb::ServerUnsubscribe {
            code,
            reason: reason.to_owned(),
        }),
    )
}

/// The server subscribed the connection to `channel` (a server-side subscription).
pub fn encode_subscribe(channel: &str, result: &SubscribeResult<Publication>) -> Bytes {
    push_frame(channel, PbPush::Subscribe(subscribed(result)))
}

pub fn encode_disconnect(code: CloseCode, reason: &str) -> Bytes {
    push_frame(
        "",
        PbPush::Disconnect(pb::ServerDisconnect {
            code: code.code().into(),
            reason: reason.to_owned(),
            reconnect: code.reconnect() != Reconnect::No,
        }),
    )
}

/// The binary form of a JSON push (`{"push":{...}}`), for pushes that reach a node as JSON:
/// presence events from other nodes. Fails on anything but one push this module decodes.
pub fn transcode_push(json: &[u8]) -> Result<Bytes, String> {
    let message: ServerMessage = serde_json::from_slice(json).map_err(|e| e.to_string())?;
    let push = message.push.ok_or("not a push")?;
    let kind = if let Some(p) = push.publication {
        PbPush::Pub(pb::Publication {
            event: p.event,
            data: p.data.get().as_bytes().to_vec(),
            offset: p.offset,
            epoch: p.epoch,
            ts: p.ts,
            from: p.from.unwrap_or_default(),
        })
    } else if let Some(m) = push.join {
        PbPush::Join(member(&m))
    } else if let Some(m) = push.leave {
        PbPush::Leave(member(&m))
    } else if let Some(diff) = push.presence {
        PbPush::Presence(presence_diff(&diff))
    } else if let Some(t) = push.typing {
        PbPush::Typing(typing(&t))
    } else if let Some(s) = push.state {
        PbPush::State(state_push(&s))
    } else if let Some(s) = push.status {
        PbPush::Status(pb::UserStatus {
            user: s.user.to_string(),
            status: s.status.as_str().to_owned(),
            last_seen: s.last_seen,
        })
    } else if let Some(u) = push.unsubscribe {
        PbPush::Unsubscribe(pb::ServerUnsubscribe {
            code: u.code,
            reason: u.reason,
        })
    } else if let Some(d) = push.disconnect {
        PbPush::Disconnect(pb::ServerDisconnect {
            code: d.code.into(),
            reason: d.reason,
            reconnect: d.reconnect,
        })
    } else {
        return Err("push of an unknown kind".to_owned());
    };
    Ok(push_frame(
        push.channel.as_deref().unwrap_or_default(),
        kind,
    ))
}

fn publication(p: &Publication) -> pb::Publication {
    pb::Publication {
        event: p.event.to_string(),
        data: p.data.get().as_bytes().to_vec(),
        offset: p.offset,
        epoch: p.epoch.to_string(),
        ts: p.ts,
        from: p.from.as_deref().unwrap_or_default().to_owned(),
    }
}

fn member(m: &PresenceMember) -> pb::PresenceMember {
    pb::PresenceMember {
        user: m.user.to_string(),
        client: m.client.to_string(),
        info: json_bytes(m.info.as_deref()),
        status: m.status.map(|s| s.as_str().to_owned()).unwrap_or_default(),
        joined_at: m.joined_at,
        state: json_bytes(m.state.as_deref()),
    }
}

fn presence_diff(diff: &PresenceDiff) -> pb::PresenceDiff {
    pb::PresenceDiff {
        joins: diff.joins.iter().map(member).collect(),
        leaves: diff.leaves.iter().map(member).collect(),
        states: diff.states.iter().map(state_push).collect(),
    }
}

fn state_push(s: &StatePush) -> pb::StatePush {
    pb::StatePush {
        user: s.user.to_string(),
        client: s.client.to_string(),
        state: json_bytes(s.state.as_deref()),
    }
}

fn typing(t: &TypingPush) -> pb::TypingPush {
    pb::TypingPush {
        user: t.user.to_string(),
        info: json_bytes(t.info.as_deref()),
        active: t.active,
    }
}

fn json_bytes(value: Option<&RawValue>) -> Vec<u8> {
    value
        .map(|v| v.get().as_bytes().to_vec())
        .unwrap_or_default()
}

fn non_empty(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

/// A JSON value from its text in a `bytes` field.
fn json_value(bytes: Vec<u8>) -> Result<Box<RawValue>, String> {
    let text = String::from_utf8(bytes).map_err(|e| e.to_string())?;
    RawValue::from_string(text).map_err(|e| e.to_string())
}

fn optional_json(bytes: Vec<u8>) -> Result<Option<Arc<RawValue>>, String> {
    optional_value(bytes).map(|v| v.map(Arc::from))
}

/// A JSON value from its text in a `bytes` field, empty meaning absent.
fn optional_value(bytes: Vec<u8>) -> Result<Option<Box<RawValue>>, String> {
    if bytes.is_empty() {
        return Ok(None);
    }
    json_value(bytes).map(Some)
}

/// Decodes a binary server frame (the client side). A message that does not decode ends
/// the frame: what follows it cannot be found.
pub fn decode_frame(frame: &[u8]) -> Vec<Result<ServerMessage, String>> {
    let mut rest = frame;
    let mut messages = Vec::new();
    while !rest.is_empty() {
        let message = pb::Reply::decode_length_delimited(&mut rest)
            .map_err(|e| e.to_string())
            .and_then(server_message);
        let failed = message.is_err();
        messages.push(message);
        if failed {
            break;
        }
    }
    messages
}

fn server_message(reply: pb::Reply) -> Result<ServerMessage, String> {
    let mut message = ServerMessage {
        id: Some(reply.id),
        result: None,
        error: None,
        push: None,
    };
    match reply.kind.ok_or("reply has no result, error or push")? {
        PbReply::Result(result) => message.result = Some(result_json(result.result)?),
        PbReply::Error(e) => {
            message.error = Some(ErrorBody {
                code: e.code,
                message: e.message,
                temporary: e.temporary,
            })
        }
        PbReply::Push(p) => {
            message.id = None;
            message.push = Some(push_of(p)?);
        }
    }
    Ok(message)
}

/// A result as the JSON the client's typed calls deserialize.
fn result_json(result: Option<PbResult>) -> Result<Box<RawValue>, String> {
    fn json<T: Serialize>(value: &T) -> Result<Box<RawValue>, String> {
        serde_json::value::to_raw_value(value).map_err(|e| e.to_string())
    }
    let publications = |list: Vec<pb::Publication>| {
        list.into_iter()
            .map(received)
            .collect::<Result<Vec<_>, _>>()
    };
    match result {
        None => json(&EmptyResult {}),
        Some(PbResult::Connect(r)) => json(&ConnectResult {
            client: r.client,
            user: r.user,
            node: r.node,
            ping: r.ping,
            expires: r.expires,
        }),
        Some(PbResult::Subscribe(r)) => json(&subscribed_of(r)?),
        Some(PbResult::Publish(r)) => json(&PublishResult {
            offset: r.offset,
            epoch: r.epoch,
        }),
        Some(PbResult::History(r)) => json(&HistoryResult {
            publications: publications(r.publications)?,
            offset: r.offset,
            epoch: r.epoch,
            more: r.more,
        }),
        Some(PbResult::Refresh(r)) => json(&RefreshResult { expires: r.expires }),
        Some(PbResult::Ping(r)) => json(&PingResult { ts: r.ts }),
        Some(PbResult::Presence(r)) => json(&PresenceResult {
            members: r
                .members
                .into_iter()
                .map(member_of)
                .collect::<Result<_, _>>()?,
            more: r.more,
            cursor: non_empty(r.cursor),
        }),
        Some(PbResult::PresenceStats(r)) => json(&PresenceStatsResult {
            users: r.users,
            clients: r.clients,
        }),
        Some(PbResult::Rpc(r)) => json(&RpcResult {
            data: optional_json(r.data)?.unwrap_or_else(|| RawValue::NULL.to_owned().into()),
        }),
    }
}

fn subscribed_of(r: pb::SubscribeResult) -> Result<SubscribeResult<ReceivedPublication>, String> {
    Ok(SubscribeResult {
        offset: r.offset,
        epoch: r.epoch,
        recoverable: r.recoverable,
        recovered: r.recovered,
        publications: r
            .publications
            .into_iter()
            .map(received)
            .collect::<Result<_, _>>()?,
        more: r.more,
        typing: r
            .typing
            .into_iter()
            .map(typing_of)
            .collect::<Result<_, _>>()?,
        expires: r.expires,
    })
}

fn received(p: pb::Publication) -> Result<ReceivedPublication, String> {
    Ok(ReceivedPublication {
        event: p.event,
        data: json_value(p.data)?,
        offset: p.offset,
        epoch: p.epoch,
        ts: p.ts,
        from: non_empty(p.from),
    })
}

fn status_of(text: &str) -> Result<Status, String> {
    Status::parse(text).ok_or_else(|| format!("unknown status {text:?}"))
}

fn member_of(m: pb::PresenceMember) -> Result<PresenceMember, String> {
    Ok(PresenceMember {
        user: m.user.into(),
        client: m.client.into(),
        info: optional_json(m.info)?,
        status: match m.status.as_str() {
            "" => None,
            status => Some(status_of(status)?),
        },
        joined_at: m.joined_at,
        state: optional_json(m.state)?,
    })
}

fn state_of(s: pb::StatePush) -> Result<StatePush, String> {
    Ok(StatePush {
        user: s.user.into(),
        client: s.client.into(),
        state: optional_json(s.state)?,
    })
}

fn typing_of(t: pb::TypingPush) -> Result<TypingPush, String> {
    Ok(TypingPush {
        user: t.user.into(),
        info: optional_json(t.info)?,
        active: t.active,
    })
}

fn push_of(p: pb::Push) -> Result<Push, String> {
    let mut push = Push {
        channel: non_empty(p.channel),
        publication: None,
        unsubscribe: None,
        disconnect: None,
        join: None,
        leave: None,
        presence: None,
        typing: None,
        status: None,
        state: None,
        subscribe: None,
    };
    match p.kind.ok_or("push of an unknown kind")? {
        PbPush::Subscribe(r) => push.subscribe = Some(subscribed_of(r)?),
        PbPush::Pub(p) => push.publication = Some(received(p)?),
        PbPush::Unsubscribe(u) => {
            push.unsubscribe = Some(UnsubscribePush {
                code: u.code,
                reason: u.reason,
            })
        }
        PbPush::Disconnect(d) => {
            push.disconnect = Some(DisconnectPush {
                code: u16::try_from(d.code).map_err(|e| e.to_string())?,
                reason: d.reason,
                reconnect: d.reconnect,
            })
        }
        PbPush::Join(m) => push.join = Some(member_of(m)?),
        PbPush::Leave(m) => push.leave = Some(member_of(m)?),
        PbPush::Presence(diff) => {
            push.presence = Some(PresenceDiff {
                joins: diff
                    .joins
                    .into_iter()
                    .map(member_of)
                    .collect::<Result<_, _>>()?,
                leaves: diff
                    .leaves
                    .into_iter()
                    .map(member_of)
                    .collect::<Result<_, _>>()?,
                states: diff
                    .states
                    .into_iter()
                    .map(state_of)
                    .collect::<Result<_, _>>()?,
            })
        }
        PbPush::Typing(t) => push.typing = Some(typing_of(t)?),
        PbPush::State(s) => push.state = Some(state_of(s)?),
        PbPush::Status(s) => {
            push.status = Some(UserStatus {
                user: s.user.into(),
                status: status_of(&s.status)?,
                last_seen: s.last_seen,
            })
        }
    }
    Ok(push)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::ChannelName;
    use crate::command::parse_command;
    use crate::reply;

    fn command(line: &str) -> Command {
        parse_command(line).unwrap().unwrap()
    }

    #[test]
    fn commands_round_trip_through_the_binary_form() {
        let lines = [
            r#"{"id":1,"connect":{"token":"t","name":"web","version":"1.0"}}"#,
            r#"{"id":2,"subscribe":{"channel":"c:d","token":"s","recover":{"offset":3,"epoch":"e"}}}"#,
            r#"{"id":3,"publish":{"channel":"c:d","event":"x","data":{"a":[1,"é"]}}}"#,
            r#"{"id":4,"history":{"channel":"c:d","limit":0,"sinceOffset":2}}"#,
            r#"{"id":5,"history":{"channel":"c:d"}}"#,
            r#"{"id":6,"presence":{"channel":"c:d","cursor":"x"}}"#,
            r#"{"id":7,"typing":{"channel":"c:d","active":true}}"#,
            r#"{"id":8,"setStatus":{"status":"away"}}"#,
            r#"{"id":9,"subRefresh":{"channel":"c:d","token":"t"}}"#,
            r#"{"id":16,"setPresenceState":{"channel":"c:d","state":{"mood":"away"}}}"#,
            r#"{"id":17,"setPresenceState":{"channel":"c:d"}}"#,
            r#"{"id":10,"presenceStats":{"channel":"c:d"}}"#,
            r#"{"id":11,"ping":{}}"#,
            r#"{"id":12,"unsubscribe":{"channel":"c:d"}}"#,
            r#"{"id":13,"refresh":{"token":"t"}}"#,
            r#"{"id":14,"rpc":{"method":"message:send","data":{"text":"hi","n":[1]}}}"#,
            r#"{"id":15,"rpc":{"method":"m"}}"#,
        ];
        let frame: Vec<u8> = lines
            .iter()
            .flat_map(|line| encode_command(command(line)))
            .collect();
        let parsed = parse_frame(&frame).unwrap();
        assert_eq!(parsed.len(), lines.len());
        for (line, parsed) in lines.iter().zip(parsed) {
            // Debug output covers every field, so equal output is an equal command.
            assert_eq!(
                format!("{:?}", parsed.unwrap()),
                format!("{:?}", command(line)),
                "{line}"
            );
        }
    }

    #[test]
    fn commands_that_cannot_run_are_error_replies() {
        let no_method = pb::Command {
            id: 4,
            method: None,
        }
        .encode_length_delimited_to_vec();
        let error = parse_frame(&no_method).unwrap().remove(0).unwrap_err();
        assert_eq!((error.id, error.code), (4, ErrorCode::MethodNotFound));
        let bad_data = pb::Command {
            id: 5,
            method: Some(PbMethod::Publish(pb::PublishRequest {
                channel: "c:d".into(),
                event: "e".into(),
                data: b"{\"a\":".to_vec(),
                idempotency_key: String::new(),
            })),
        }
        .encode_length_delimited_to_vec();
        let error = parse_frame(&bad_data).unwrap().remove(0).unwrap_err();
        assert_eq!((error.id, error.code), (5, ErrorCode::BadRequest));
        assert!(parse_frame(b"").unwrap().is_empty());
        assert!(parse_frame(b"\x05\x08").is_err(), "length past the frame");
        assert!(parse_frame(b"\x02\xff\xff").is_err(), "not a Command");
    }

    fn publication(from: Option<&str>) -> Publication {
        Publication {
            channel: ChannelName::parse("org:acme:ch:general").unwrap(),
            event: Arc::from("message.created"),
            data: Arc::from(RawValue::from_string(r#"{"text":"hi <b>"}"#.into()).unwrap()),
            offset: 6,
            epoch: Arc::from("e1"),
            ts: 1_732_400_000_000,
            from: from.map(Arc::from),
        }
    }

    /// What the client decodes is the same in both encodings.
    fn same(json: Bytes, binary: Bytes) {
        let from_json: ServerMessage = serde_json::from_slice(&json).unwrap();
        let mut decoded = decode_frame(&binary);
        assert_eq!(decoded.len(), 1);
        let from_binary = decoded.remove(0).unwrap();
        assert_eq!(format!("{from_binary:?}"), format!("{from_json:?}"));
    }

    #[test]
    fn replies_and_pushes_decode_as_their_json_form() {
        let p = publication(Some("alice"));
        same(reply::encode_publication(&p), encode_publication(&p));
        let p = publication(None);
        same(reply::encode_publication(&p), encode_publication(&p));
        same(
            reply::encode_error(2, ErrorCode::PermissionDenied, "permission denied"),
            encode_error(2, ErrorCode::PermissionDenied, "permission denied"),
        );
        same(
            reply::encode_result(5, &PingResult { ts: 7 }),
            encode_result(5, &PingResult { ts: 7 }),
        );
        same(
            reply::encode_result(6, &EmptyResult {}),
            encode_result(6, &EmptyResult {}),
        );
        for data in [r#"{"offset":3}"#, "null", "0"] {
            let result = RpcResult {
                data: RawValue::from_string(data.into()).unwrap().into(),
            };
            same(reply::encode_result(8, &result), encode_result(8, &result));
        }
        same(
            reply::encode_raw_error(9, 1404, "unknown method", false),
            encode_raw_error(9, 1404, "unknown method", false),
        );
        let subscribed = SubscribeResult {
            offset: 6,
            epoch: "e1".into(),
            recoverable: true,
            recovered: true,
            publications: vec![publication(None)],
            more: true,
            typing: vec![TypingPush {
                user: "bob".into(),
                info: Some(Arc::from(
                    RawValue::from_string(r#"{"name":"Bob"}"#.into()).unwrap(),
                )),
                active: true,
            }],
            expires: Some(99),
        };
        same(
            reply::encode_result(7, &subscribed),
            encode_result(7, &subscribed),
        );
        same(
            reply::encode_disconnect(CloseCode::Shutdown, "server shutdown"),
            encode_disconnect(CloseCode::Shutdown, "server shutdown"),
        );
        same(
            reply::encode_unsubscribe("a:b", 3000, "resubscribe"),
            encode_unsubscribe("a:b", 3000, "resubscribe"),
        );
        let join = ChannelEvent::Join(PresenceMember {
            user: "bob".into(),
            client: "c1".into(),
            info: None,
            status: Some(Status::Busy),
            joined_at: 5,
            state: Some(Arc::from(
                RawValue::from_string(r#"{"mood":"ok"}"#.into()).unwrap(),
            )),
        });
        same(
            reply::encode_event("org:a", &join),
            encode_event("org:a", &join),
        );
        let status = ChannelEvent::Status(UserStatus {
            user: "alice".into(),
            status: Status::Offline,
            last_seen: 1_764_000_000_000,
        });
        same(
            reply::encode_event("org:a", &status),
            encode_event("org:a", &status),
        );
    }

    #[test]
    fn json_pushes_transcode_to_their_binary_form() {
        let typing = ChannelEvent::Typing(TypingPush {
            user: "bob".into(),
            info: Some(Arc::from(RawValue::from_string("[1]".into()).unwrap())),
            active: false,
        });
        let member = |client: &str| PresenceMember {
            user: "bob".into(),
            client: client.into(),
            info: None,
            status: None,
            joined_at: 5,
            state: None,
        };
        let state = |client: &str, state: Option<&str>| StatePush {
            user: "bob".into(),
            client: client.into(),
            state: state.map(|s| Arc::from(RawValue::from_string(s.into()).unwrap())),
        };
        let diff = ChannelEvent::Presence(PresenceDiff {
            joins: vec![member("c1"), member("c2")],
            leaves: vec![member("c0")],
            states: vec![state("c3", Some("[2]")), state("c4", None)],
        });
        let set = ChannelEvent::State(state("c1", Some(r#"{"mood":"ok"}"#)));
        let cleared = ChannelEvent::State(state("c1", None));
        let pushes = [
            reply::encode_event("org:a:ch:b", &typing),
            reply::encode_event("org:a:ch:b", &diff),
            reply::encode_event("org:a:ch:b", &set),
            reply::encode_event("org:a:ch:b", &cleared),
            reply::encode_publication(&publication(Some("alice"))),
            reply::encode_unsubscribe("a:b", 3000, "resubscribe"),
            reply::encode_disconnect(CloseCode::SlowConsumer, "slow"),
        ];
        for json in pushes {
            same(json.clone(), transcode_push(&json).unwrap());
        }
        assert!(transcode_push(br#"{"id":1,"result":{}}"#).is_err());
    }

    #[test]
    fn a_frame_carries_several_messages_and_is_smaller() {
        let p = publication(None);
        let json = reply::encode_publication(&p);
        let binary = encode_publication(&p);
        assert!(
            binary.len() < json.len(),
            "{} vs {}",
            binary.len(),
            json.len()
        );
        let frame = [binary.clone(), binary].concat();
        assert_eq!(decode_frame(&frame).len(), 2);
        let truncated = &frame[..frame.len() - 1];
        let decoded = decode_frame(truncated);
        assert!(decoded[0].is_ok() && decoded[1].is_err());
    }

    mod hostile_input {
        use proptest::prelude::*;
        use proptest::sample::Index;

        use super::*;

        fn config() -> ProptestConfig {
            ProptestConfig {
                cases: 4096,
                // The failing input is printed; no regression file in the source tree.
                failure_persistence: None,
                ..ProptestConfig::default()
            }
        }

        /// A frame of three valid commands, the shapes a client sends most.
        fn seed() -> Vec<u8> {
            [
                r#"{"id":1,"subscribe":{"channel":"org:a:b","recover":{"offset":3,"epoch":"e"}}}"#,
                r#"{"id":2,"publish":{"channel":"c:d","event":"x","data":{"a":[1,{"b":"é"}]}}}"#,
                r#"{"id":3,"history":{"channel":"c:d","limit":5,"sinceOffset":2}}"#,
            ]
            .iter()
            .flat_map(|line| encode_command(command(line)))
            .collect()
        }

        /// The seed after 1-7 edits, each replacing, removing or inserting a byte.
        fn mutant() -> impl Strategy<Value = Vec<u8>> {
            prop::collection::vec((0..3u8, any::<Index>(), any::<u8>()), 1..8).prop_map(|edits| {
                let mut bytes = seed();
                for (kind, at, byte) in edits {
                    if bytes.is_empty() {
                        break;
                    }
                    let at = at.index(bytes.len());
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

        /// What `parse_frame` promises for any bytes: it returns (no panic); a frame error
        /// exactly when the bytes are not a sequence of length-delimited `Command`s;
        /// otherwise one result per command, and errors only of the documented kinds.
        fn check_frame(bytes: &[u8]) -> Result<(), TestCaseError> {
            let mut rest = bytes;
            let mut decoded = Vec::new();
            let mut decodes = true;
            while !rest.is_empty() {
                match pb::Command::decode_length_delimited(&mut rest) {
                    Ok(command) => decoded.push(command),
                    Err(_) => {
                        decodes = false;
                        break;
                    }
                }
            }
            let results = match parse_frame(bytes) {
                Err(error) => {
                    prop_assert!(!decodes, "the frame decodes, yet {error}");
                    return Ok(());
                }
                Ok(results) => results,
            };
            prop_assert!(decodes);
            prop_assert_eq!(results.len(), decoded.len());
            for (result, command) in results.iter().zip(&decoded) {
                match result {
                    Ok(parsed) => prop_assert_eq!(parsed.id, command.id),
                    Err(error) => {
                        prop_assert_eq!(error.id, command.id);
                        match error.code {
                            ErrorCode::MethodNotFound => prop_assert!(command.method.is_none()),
                            ErrorCode::BadRequest => prop_assert!(
                                matches!(
                                    command.method,
                                    Some(PbMethod::Publish(_) | PbMethod::Rpc(_))
                                ),
                                "{error}"
                            ),
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
            fn mutated_frames_parse_or_fail_as_documented(bytes in mutant()) {
                check_frame(&bytes)?;
            }

            #[test]
            fn random_bytes_parse_or_fail_as_documented(
                bytes in prop::collection::vec(any::<u8>(), 0..256),
            ) {
                check_frame(&bytes)?;
            }
        }

        #[test]
        fn the_seed_parses() {
            assert!(parse_frame(&seed()).unwrap().iter().all(Result::is_ok));
        }
    }
}
