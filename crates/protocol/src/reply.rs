//! What the server sends: replies to commands (`{"id":N,"result":{...}}` or
//! `{"id":N,"error":{...}}`) and pushes (`{"push":{...}}`, no id).
//!
//! The server side encodes with the `encode_*` functions, once per message: a publication
//! push is encoded once and the bytes are shared by every subscriber. The client side
//! decodes with [`ServerMessage`].

use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::binary::ResultBody;
use crate::codes::{CloseCode, ErrorCode, Reconnect};
use crate::command::StreamPosition;
use crate::presence::{Member, Status, Typer, UserStatus};
use crate::publication::Publication;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export_to = "wire.ts"))]
#[serde(rename_all = "camelCase")]
pub struct ConnectResult {
    /// Connection id.
    pub client: String,
    pub user: String,
    pub node: String,
    /// Server ping interval, seconds.
    pub ping: u32,
    /// Token expiry, Unix seconds.
    pub expires: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export_to = "wire.ts"))]
#[serde(rename_all = "camelCase")]
pub struct SubscribeResult<P> {
    pub offset: u64,
    pub epoch: String,
    pub recoverable: bool,
    pub recovered: bool,
    /// The first page of the missed publications (when `recovered`).
    pub publications: Vec<P>,
    /// `publications` stopped before `offset`: fetch the rest with `history` from the last
    /// offset in them.
    #[serde(default, skip_serializing_if = "is_false")]
    pub more: bool,
    /// Who is typing in the channel right now (channels with typing).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub typing: Vec<TypingPush>,
    /// Subscribed with a subscription token: its `exp` (Unix seconds), when the server ends
    /// the subscription (2401) unless `subRefresh` moves it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional))]
    pub expires: Option<i64>,
}

/// One connection in a channel's presence (`presence` result, `join` and `leave` pushes):
/// a [`Member`] with its user's status.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export_to = "wire.ts"))]
#[serde(rename_all = "camelCase")]
pub struct PresenceMember {
    pub user: Arc<str>,
    /// Connection id.
    pub client: Arc<str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional, type = "unknown"))]
    pub info: Option<Arc<RawValue>>,
    /// The user's status in the channel's org (`org:<org>…` channels, `presence` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional))]
    pub status: Option<Status>,
    /// Unix milliseconds.
    pub joined_at: i64,
    /// The member's presence state (`setPresenceState`), when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional, type = "unknown"))]
    pub state: Option<Arc<RawValue>>,
}

impl PresenceMember {
    pub fn new(member: &Member, status: Option<Status>) -> Self {
        Self {
            user: member.user.clone(),
            client: member.client.clone(),
            info: member.info.clone(),
            status,
            joined_at: member.joined_at,
            state: member.state.clone(),
        }
    }
}

/// `state` push, and an entry of a `presence` diff's `states`: a member's presence state
/// changed; `null` when it was cleared.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export_to = "wire.ts"))]
pub struct StatePush {
    pub user: Arc<str>,
    /// Connection id.
    pub client: Arc<str>,
    #[serde(default)]
    #[cfg_attr(test, ts(type = "unknown"))]
    pub state: Option<Arc<RawValue>>,
}

/// One page of a channel's presence, oldest member first.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export_to = "wire.ts"))]
pub struct PresenceResult {
    pub members: Vec<PresenceMember>,
    /// More members follow: ask again with `cursor`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub more: bool,
    /// Where the next page starts (opaque), with `more`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional))]
    pub cursor: Option<String>,
}

/// `presence` push: the net changes to a big channel's presence since the last one, sent
/// instead of one `join` or `leave` push per connection once the channel has more members
/// than the node's push limit. Apply `leaves` first, then `joins`, then `states`: a
/// connection that left and joined again within the interval is in both lists, and one
/// that left has no entry in `states`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export_to = "wire.ts"))]
pub struct PresenceDiff {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub joins: Vec<PresenceMember>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub leaves: Vec<PresenceMember>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub states: Vec<StatePush>,
}

impl PresenceDiff {
    pub fn is_empty(&self) -> bool {
        self.joins.is_empty() && self.leaves.is_empty() && self.states.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export_to = "wire.ts"))]
pub struct PresenceStatsResult {
    /// Distinct users.
    pub users: u64,
    /// Connections.
    pub clients: u64,
}

/// `typing` push, and an entry of a subscribe result's `typing`: a [`Typer`] starting or
/// stopping.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export_to = "wire.ts"))]
pub struct TypingPush {
    pub user: Arc<str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional, type = "unknown"))]
    pub info: Option<Arc<RawValue>>,
    pub active: bool,
}

impl TypingPush {
    pub fn new(typer: &Typer, active: bool) -> Self {
        Self {
            user: typer.user.clone(),
            info: typer.info.clone(),
            active,
        }
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A presence event pushed on a channel.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum ChannelEvent {
    Join(PresenceMember),
    Leave(PresenceMember),
    Presence(PresenceDiff),
    Typing(TypingPush),
    Status(UserStatus),
    State(StatePush),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export_to = "wire.ts"))]
#[serde(rename_all = "camelCase")]
pub struct HistoryResult<P> {
    pub publications: Vec<P>,
    pub offset: u64,
    pub epoch: String,
    /// The page stopped before `offset` (at `limit` or at the reply byte budget): ask again
    /// with `sinceOffset` set to the last offset in `publications`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub more: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export_to = "wire.ts"))]
pub struct PublishResult {
    pub offset: u64,
    pub epoch: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export_to = "wire.ts"))]
pub struct RefreshResult {
    pub expires: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export_to = "wire.ts"))]
pub struct PingResult {
    pub ts: i64,
}

/// `rpc`: the JSON value the app's backend returned (`null` when it returned none).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export_to = "wire.ts"))]
pub struct RpcResult {
    #[cfg_attr(test, ts(type = "unknown"))]
    pub data: Arc<RawValue>,
}

/// Results with no fields (`unsubscribe`) serialize as `{}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmptyResult {}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export_to = "wire.ts"))]
pub struct ErrorBody {
    pub code: u32,
    pub message: String,
    pub temporary: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export_to = "wire.ts"))]
pub struct UnsubscribePush {
    pub code: u32,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export_to = "wire.ts"))]
pub struct DisconnectPush {
    pub code: u16,
    pub reason: String,
    pub reconnect: bool,
}

#[derive(Serialize)]
struct ResultFrame<'a, T> {
    id: u64,
    result: &'a T,
}

#[derive(Serialize)]
struct ErrorFrame<'a> {
    id: u64,
    error: ErrorRef<'a>,
}

#[derive(Serialize)]
struct ErrorRef<'a> {
    code: u32,
    message: &'a str,
    temporary: bool,
}

#[derive(Serialize)]
struct PushFrame<'a> {
    push: PushRef<'a>,
}

#[derive(Serialize)]
struct PushRef<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    channel: Option<&'a str>,
    #[serde(rename = "pub", skip_serializing_if = "Option::is_none")]
    publication: Option<&'a Publication>,
    #[serde(skip_serializing_if = "Option::is_none")]
    unsubscribe: Option<UnsubscribePush>,
    #[serde(skip_serializing_if = "Option::is_none")]
    disconnect: Option<DisconnectPush>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subscribe: Option<&'a SubscribeResult<Publication>>,
}

impl PushRef<'_> {
    const EMPTY: Self = Self {
        channel: None,
        publication: None,
        unsubscribe: None,
        disconnect: None,
        subscribe: None,
    };
}

fn to_bytes<T: Serialize>(value: &T) -> Bytes {
    // Serializing these types cannot fail: every map key is a string and raw values were
    // validated on the way in.
    Bytes::from(serde_json::to_vec(value).expect("reply serializes"))
}

pub fn encode_result<T: ResultBody>(id: u64, result: &T) -> Bytes {
    to_bytes(&ResultFrame { id, result })
}

pub fn encode_error(id: u64, code: ErrorCode, message: &str) -> Bytes {
    encode_raw_error(id, code.code(), message, code.temporary())
}

/// An error reply with a code that is not Herald's own: the app's backend's, passed through.
pub fn encode_raw_error(id: u64, code: u32, message: &str, temporary: bool) -> Bytes {
    to_bytes(&ErrorFrame {
        id,
        error: ErrorRef {
            code,
            message,
            temporary,
        },
    })
}

/// `{"push":{"channel":C,"pub":{...}}}`: encoded once per publication per node.
pub fn encode_publication(publication: &Publication) -> Bytes {
    to_bytes(&PushFrame {
        push: PushRef {
            channel: Some(publication.channel.as_str()),
            publication: Some(publication),
            ..PushRef::EMPTY
        },
    })
}

/// `{"push":{"channel":C,"join"|"leave"|"presence"|"typing"|"status"|"state":{...}}}`.
pub fn encode_event(channel: &str, event: &ChannelEvent) -> Bytes {
    #[derive(Serialize)]
    struct EventFrame<'a> {
        push: EventRef<'a>,
    }
    #[derive(Serialize)]
    struct EventRef<'a> {
        channel: &'a str,
        #[serde(flatten)]
        event: &'a ChannelEvent,
    }
    to_bytes(&EventFrame {
        push: EventRef { channel, event },
    })
}

/// A server-side unsubscribe: the client should resubscribe (recovering) unless the code
/// says otherwise.
pub fn encode_unsubscribe(channel: &str, code: u32, reason: &str) -> Bytes {
    to_bytes(&PushFrame {
        push: PushRef {
            channel: Some(channel),
            unsubscribe: Some(UnsubscribePush {
                code,
                reason: reason.to_owned(),
            }),
            ..PushRef::EMPTY
        },
    })
}

/// The server subscribed the connection to `channel` (a server-side subscription): the
/// body of a subscribe result; the channel's publications follow it.
pub fn encode_subscribe(channel: &str, result: &SubscribeResult<Publication>) -> Bytes {
    to_bytes(&PushFrame {
        push: PushRef {
            channel: Some(channel),
            subscribe: Some(result),
            ..PushRef::EMPTY
        },
    })
}

/// Sent just before the close frame, so clients that cannot read close codes (some
/// proxies drop them) still learn why and what to do.
pub fn encode_disconnect(code: CloseCode, reason: &str) -> Bytes {
    to_bytes(&PushFrame {
        push: PushRef {
            disconnect: Some(DisconnectPush {
                code: code.code(),
                reason: reason.to_owned(),
                reconnect: code.reconnect() != Reconnect::No,
            }),
            ..PushRef::EMPTY
        },
    })
}

/// A publication as a client receives it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReceivedPublication {
    pub event: String,
    pub data: Box<RawValue>,
    #[serde(default)]
    pub offset: u64,
    #[serde(default)]
    pub epoch: String,
    #[serde(default)]
    pub ts: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

impl ReceivedPublication {
    pub fn position(&self) -> StreamPosition {
        StreamPosition {
            offset: self.offset,
            epoch: self.epoch.clone(),
        }
    }
}

/// Any server message, as a client decodes it.
#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export_to = "wire.ts"))]
pub struct ServerMessage {
    #[serde(default)]
    #[cfg_attr(test, ts(optional))]
    pub id: Option<u64>,
    #[serde(default)]
    #[cfg_attr(test, ts(optional, type = "unknown"))]
    pub result: Option<Box<RawValue>>,
    #[serde(default)]
    #[cfg_attr(test, ts(optional))]
    pub error: Option<ErrorBody>,
    #[serde(default)]
    #[cfg_attr(test, ts(optional))]
    pub push: Option<Push>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export_to = "wire.ts"))]
pub struct Push {
    #[serde(default)]
    #[cfg_attr(test, ts(optional))]
    pub channel: Option<String>,
    #[serde(rename = "pub", default)]
    #[cfg_attr(test, ts(as = "Option<Publication>", optional))]
    pub publication: Option<ReceivedPublication>,
    #[serde(default)]
    #[cfg_attr(test, ts(optional))]
    pub unsubscribe: Option<UnsubscribePush>,
    #[serde(default)]
    #[cfg_attr(test, ts(optional))]
    pub disconnect: Option<DisconnectPush>,
    #[serde(default)]
    #[cfg_attr(test, ts(optional))]
    pub join: Option<PresenceMember>,
    #[serde(default)]
    #[cfg_attr(test, ts(optional))]
    pub leave: Option<PresenceMember>,
    #[serde(default)]
    #[cfg_attr(test, ts(optional))]
    pub presence: Option<PresenceDiff>,
    #[serde(default)]
    #[cfg_attr(test, ts(optional))]
    pub typing: Option<TypingPush>,
    #[serde(default)]
    #[cfg_attr(test, ts(optional))]
    pub status: Option<UserStatus>,
    #[serde(default)]
    #[cfg_attr(test, ts(optional))]
    pub state: Option<StatePush>,
    /// The server subscribed the connection to the push's channel.
    #[serde(default)]
    #[cfg_attr(test, ts(as = "Option<SubscribeResult<Publication>>", optional))]
    pub subscribe: Option<SubscribeResult<ReceivedPublication>>,
}

#[cfg(test)]
mod event_tests {
    use super::*;

    #[test]
    fn events_push_on_their_channel_and_decode() {
        let typing = ChannelEvent::Typing(TypingPush {
            user: "alice".into(),
            info: Some(Arc::from(
                RawValue::from_string(r#"{"name":"Ada"}"#.into()).unwrap(),
            )),
            active: true,
        });
        let bytes = encode_event("org:acme:ch:general", &typing);
        assert_eq!(
            std::str::from_utf8(&bytes).unwrap(),
            r#"{"push":{"channel":"org:acme:ch:general","typing":{"user":"alice","info":{"name":"Ada"},"active":true}}}"#
        );
        let status = ChannelEvent::Status(UserStatus {
            user: "alice".into(),
            status: Status::Offline,
            last_seen: 1_764_000_000_000,
        });
        let message: ServerMessage =
            serde_json::from_slice(&encode_event("org:acme", &status)).unwrap();
        let push = message.push.unwrap();
        assert_eq!(push.channel.as_deref(), Some("org:acme"));
        assert_eq!(push.status.unwrap().last_seen, 1_764_000_000_000);
        let join = ChannelEvent::Join(PresenceMember {
            user: "bob".into(),
            client: "c1".into(),
            info: None,
            status: None,
            joined_at: 5,
            state: None,
        });
        let text = String::from_utf8(encode_event("org:acme:ch:x", &join).to_vec()).unwrap();
        assert!(
            text.contains(r#""join":{"user":"bob","client":"c1","joinedAt":5}"#),
            "{text}"
        );
        let state = ChannelEvent::State(StatePush {
            user: "bob".into(),
            client: "c1".into(),
            state: Some(Arc::from(RawValue::from_string("[1]".into()).unwrap())),
        });
        assert_eq!(
            &encode_event("org:acme:ch:x", &state)[..],
            br#"{"push":{"channel":"org:acme:ch:x","state":{"user":"bob","client":"c1","state":[1]}}}"#
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::ChannelName;

    fn publication(from: Option<&str>, offset: u64) -> Publication {
        Publication {
            channel: ChannelName::parse("org:acme:ch:general").unwrap(),
            event: Arc::from("message.created"),
            data: Arc::from(RawValue::from_string(r#"{"text":"hi <b>"}"#.into()).unwrap()),
            offset,
            epoch: Arc::from(if offset == 0 { "" } else { "e1" }),
            ts: 1_732_400_000_000,
            from: from.map(Arc::from),
        }
    }

    #[test]
    fn publication_push_shape() {
        let bytes = encode_publication(&publication(None, 6));
        assert_eq!(
            std::str::from_utf8(&bytes).unwrap(),
            r#"{"push":{"channel":"org:acme:ch:general","pub":{"event":"message.created","data":{"text":"hi <b>"},"offset":6,"epoch":"e1","ts":1732400000000}}}"#
        );
        let bytes = encode_publication(&publication(Some("alice"), 0));
        assert_eq!(
            std::str::from_utf8(&bytes).unwrap(),
            r#"{"push":{"channel":"org:acme:ch:general","pub":{"event":"message.created","data":{"text":"hi <b>"},"ts":1732400000000,"from":"alice"}}}"#
        );
        let message: ServerMessage = serde_json::from_slice(&bytes).unwrap();
        let received = message.push.unwrap().publication.unwrap();
        assert_eq!(
            (received.from.as_deref(), received.offset),
            (Some("alice"), 0)
        );
    }

    #[test]
    fn reply_shapes() {
        let bytes = encode_error(2, ErrorCode::PermissionDenied, "permission denied");
        assert_eq!(
            &bytes[..],
            br#"{"id":2,"error":{"code":103,"message":"permission denied","temporary":false}}"#
        );
        let bytes = encode_result(5, &PingResult { ts: 7 });
        assert_eq!(&bytes[..], br#"{"id":5,"result":{"ts":7}}"#);
        let data = RawValue::from_string(r#"{"offset":3}"#.into())
            .unwrap()
            .into();
        let bytes = encode_result(6, &RpcResult { data });
        assert_eq!(&bytes[..], br#"{"id":6,"result":{"data":{"offset":3}}}"#);
        let bytes = encode_raw_error(7, 1404, "unknown method", false);
        assert_eq!(
            &bytes[..],
            br#"{"id":7,"error":{"code":1404,"message":"unknown method","temporary":false}}"#
        );
        let bytes = encode_disconnect(CloseCode::Shutdown, "server shutdown");
        assert_eq!(
            &bytes[..],
            br#"{"push":{"disconnect":{"code":4200,"reason":"server shutdown","reconnect":true}}}"#
        );
        let bytes = encode_unsubscribe("a:b", 3000, "resubscribe");
        assert_eq!(
            &bytes[..],
            br#"{"push":{"channel":"a:b","unsubscribe":{"code":3000,"reason":"resubscribe"}}}"#
        );
    }
}
