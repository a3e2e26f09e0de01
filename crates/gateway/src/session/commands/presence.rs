//! `presence` and `presenceStats`: who is in a channel the connection is subscribed to.
//! On `org:<org>…` channels each member carries its user's status in the org.

use std::sync::Arc;

use herald_protocol::command::ChannelRequest;
use herald_protocol::reply::{PresenceResult, PresenceStatsResult, encode_result};
use herald_protocol::{ChannelName, ErrorCode};

use crate::config::ChannelOptions;
use crate::connections::Connection;
use crate::node::Node;
use crate::presence::wire_member;
use crate::session::{Answer, Failure};

pub async fn apply(
    node: &Arc<Node>,
    connection: &Arc<Connection>,
    id: u64,
    request: ChannelRequest,
) -> Result<Answer, Failure> {
    let channel = subscribed_channel(node, connection, &request.channel, |o| o.presence)?;
    let members = node.presence.members(&channel).await.map_err(unavailable)?;
    let result = PresenceResult {
        members: members
            .iter()
            .map(|(member, status)| wire_member(member, *status))
            .collect(),
    };
    Ok(Answer::Result(encode_result(id, &result)))
}

pub async fn stats(
    node: &Arc<Node>,
    connection: &Arc<Connection>,
    id: u64,
    request: ChannelRequest,
) -> Result<Answer, Failure> {
    let channel = subscribed_channel(node, connection, &request.channel, |o| o.presence)?;
    let (users, clients) = node.presence.stats(&channel).await.map_err(unavailable)?;
    let result = PresenceStatsResult { users, clients };
    Ok(Answer::Result(encode_result(id, &result)))
}

fn unavailable(error: crate::state::StateError) -> Failure {
    Failure::new(ErrorCode::Unavailable, error.to_string())
}

/// A channel the connection is subscribed to and whose options allow `feature`: only
/// members may see who else is there, or say they type.
pub fn subscribed_channel(
    node: &Node,
    connection: &Connection,
    name: &str,
    feature: impl Fn(&ChannelOptions) -> bool,
) -> Result<ChannelName, Failure> {
    let (channel, _, options) = node
        .channel(name)
        .map_err(|e| Failure::new(ErrorCode::UnknownChannel, e.to_string()))?;
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
    Ok(channel)
}
