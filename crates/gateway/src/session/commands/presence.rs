//! `presence` and `presenceStats`: who is in a channel the connection is subscribed to.
//! On `org:<org>…` channels each member carries its user's status in the org.
//!
//! `presence` answers one page at a time, members oldest first (by join time, then
//! connection id), at most the reply byte budget; `cursor` names the last member sent, so
//! members joining or leaving between pages shift nothing.

use std::sync::Arc;

use herald_protocol::command::{ChannelRequest, PresenceRequest};
use herald_protocol::reply::{PresenceMember, PresenceResult, PresenceStatsResult};
use herald_protocol::{ChannelName, ErrorCode};

use crate::config::ChannelOptions;
use crate::connections::Connection;
use crate::node::Node;
use crate::paging::json_len;
use crate::session::{Answer, Failure};
use crate::state::{Member, Status};

pub async fn apply(
    node: &Arc<Node>,
    connection: &Arc<Connection>,
    id: u64,
    request: PresenceRequest,
) -> Result<Answer, Failure> {
    let channel = subscribed_channel(node, connection, &request.channel, |o| o.presence)?;
    let after = match request.cursor.as_deref().filter(|c| !c.is_empty()) {
        None => None,
        Some(cursor) => Some(
            Cursor::parse(cursor)
                .ok_or_else(|| Failure::new(ErrorCode::BadRequest, "invalid presence cursor"))?,
        ),
    };
    let members = node.presence().members(&channel).await?;
    let result = page(members, after, node.config().limits.reply_bytes());
    Ok(Answer::Result(connection.codec.result(id, &result)))
}

/// The members after `after`, oldest first, up to `budget` bytes (at least one member).
fn page(
    mut members: Vec<(Member, Option<Status>)>,
    after: Option<Cursor>,
    budget: usize,
) -> PresenceResult {
    members.sort_unstable_by(|(a, _), (b, _)| Cursor::of(a).cmp(&Cursor::of(b)));
    let start = after.map_or(0, |after| {
        members.partition_point(|(member, _)| Cursor::of(member) <= after)
    });
    let mut result = PresenceResult {
        members: Vec::new(),
        more: false,
        cursor: None,
    };
    let mut bytes = 0;
    for (member, status) in &members[start..] {
        let wire = PresenceMember::new(member, *status);
        let size = json_len(&wire) + 1;
        if !result.members.is_empty() && bytes + size > budget {
            result.more = true;
            result.cursor = result.members.last().map(|last| {
                Cursor {
                    joined_at: last.joined_at,
                    client: &last.client,
                }
                .to_string()
            });
            break;
        }
        bytes += size;
        result.members.push(wire);
    }
    result
}

/// A position in the member list: the last member a page holds. On the wire it is an opaque
/// string, `<joinedAt>.<client>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Cursor<'a> {
    joined_at: i64,
    client: &'a str,
}

impl<'a> Cursor<'a> {
    fn of(member: &'a Member) -> Self {
        Self {
            joined_at: member.joined_at,
            client: &member.client,
        }
    }

    fn parse(text: &'a str) -> Option<Self> {
        let (joined_at, client) = text.split_once('.')?;
        Some(Self {
            joined_at: joined_at.parse().ok()?,
            client,
        })
    }
}

impl std::fmt::Display for Cursor<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.joined_at, self.client)
    }
}

pub async fn stats(
    node: &Arc<Node>,
    connection: &Arc<Connection>,
    id: u64,
    request: ChannelRequest,
) -> Result<Answer, Failure> {
    let channel = subscribed_channel(node, connection, &request.channel, |o| o.presence)?;
    let (users, clients) = node.presence().stats(&channel).await?;
    let result = PresenceStatsResult { users, clients };
    Ok(Answer::Result(connection.codec.result(id, &result)))
}

/// A channel the connection is subscribed to and whose options allow `feature`: only
/// members may see who else is there, or say they type.
pub fn subscribed_channel(
    node: &Node,
    connection: &Connection,
    name: &str,
    feature: impl Fn(&ChannelOptions) -> bool,
) -> Result<ChannelName, Failure> {
    subscribed_channel_with_options(node, connection, name, feature).map(|(channel, _)| channel)
}

/// [`subscribed_channel`] with the channel's options.
pub fn subscribed_channel_with_options<'n>(
    node: &'n Node,
    connection: &Connection,
    name: &str,
    feature: impl Fn(&ChannelOptions) -> bool,
) -> Result<(ChannelName, &'n ChannelOptions), Failure> {
    let (channel, _, options) = node.channel(name)?;
    if !feature(options) {
        return Err(Failure::new(
            ErrorCode::NotAvailable,
            "not enabled on this channel",
        ));
    }
    if !connection.is_subscribed(&channel) {
        return Err(Failure::new(
            ErrorCode::PermissionDenied,
            "subscribe to the channel first",
        ));
    }
    Ok((channel, options))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(client: &str, joined_at: i64) -> (Member, Option<Status>) {
        let member = Member {
            user: Arc::from("user"),
            client: Arc::from(client),
            info: None,
            joined_at,
            state: None,
        };
        (member, None)
    }

    fn clients(result: &PresenceResult) -> Vec<&str> {
        result.members.iter().map(|m| &*m.client).collect()
    }

    #[test]
    fn pages_oldest_first_and_resume_after_the_cursor() {
        let members = vec![
            member("d", 3),
            member("b", 1),
            member("c", 2),
            member("a", 2),
        ];
        let one = json_len(&PresenceMember::new(&members[0].0, None)) + 1;
        let first = page(members.clone(), None, one * 2);
        assert_eq!(clients(&first), ["b", "a"]);
        assert!(first.more);
        let cursor = first.cursor.clone().expect("a cursor with more");
        assert_eq!(cursor, "2.a");

        // `c` leaves and `e` joins between pages: nothing is skipped or repeated.
        let mut changed: Vec<_> = members
            .into_iter()
            .filter(|(m, _)| &*m.client != "c")
            .collect();
        changed.push(member("e", 4));
        let second = page(changed, Cursor::parse(&cursor), one * 10);
        assert_eq!(clients(&second), ["d", "e"]);
        assert!(!second.more && second.cursor.is_none());
    }

    #[test]
    fn a_page_holds_at_least_one_member_and_cursors_are_checked() {
        let result = page(vec![member("a", 1), member("b", 1)], None, 1);
        assert_eq!(clients(&result), ["a"]);
        assert_eq!(result.cursor.as_deref(), Some("1.a"));
        assert!(Cursor::parse("nonsense").is_none());
        assert!(Cursor::parse("x.a").is_none());
    }
}
