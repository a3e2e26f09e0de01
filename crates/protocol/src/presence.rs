//! The presence vocabulary, shared by the node, its state backends and the wire: who is in
//! a channel, who is typing, a user's status. One set of types with shared strings, so a
//! member read from state goes out in a reply or a push by cloning `Arc`s, not text.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// One connection in a channel's presence.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    pub user: Arc<str>,
    /// Connection id.
    pub client: Arc<str>,
    /// The token's `info` claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<Arc<RawValue>>,
    /// Unix milliseconds.
    pub joined_at: i64,
    /// The JSON state the connection attached to its membership (`setPresenceState`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<Arc<RawValue>>,
}

/// A user's status in an org.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export_to = "wire.ts"))]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Online,
    Away,
    Busy,
    Offline,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Online => "online",
            Status::Away => "away",
            Status::Busy => "busy",
            Status::Offline => "offline",
        }
    }

    pub fn parse(text: &str) -> Option<Status> {
        match text {
            "online" => Some(Status::Online),
            "away" => Some(Status::Away),
            "busy" => Some(Status::Busy),
            "offline" => Some(Status::Offline),
            _ => None,
        }
    }
}

/// A user's status in an org, as read or as changed (the `status` push on `org:<org>`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export_to = "wire.ts"))]
#[serde(rename_all = "camelCase")]
pub struct UserStatus {
    pub user: Arc<str>,
    pub status: Status,
    /// Unix milliseconds of the last connection's end (0 while online, or never seen).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub last_seen: i64,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// Someone typing in a channel.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Typer {
    pub user: Arc<str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<Arc<RawValue>>,
}
