//! `unsubscribe`: leave a channel. Unsubscribing from a channel one is not subscribed to
//! succeeds, so a client's retry after a lost reply is harmless.
//!
//! Also the server's side of it, [`end_subscription`]: a subscription the connection's
//! claims no longer allow (after `refresh`) or whose subscription token expired.

use std::sync::Arc;

use herald_protocol::ChannelName;
use herald_protocol::codes::unsubscribe_code;
use herald_protocol::command::UnsubscribeRequest;
use herald_protocol::reply::EmptyResult;

use crate::connections::Connection;
use crate::metrics;
use crate::node::Node;
use crate::session::{Answer, Failure};

pub async fn apply(
    node: &Arc<Node>,
    connection: &Arc<Connection>,
    id: u64,
    request: UnsubscribeRequest,
) -> Result<Answer, Failure> {
    let channel = ChannelName::parse(&request.channel)?;
    leave(node, connection, &channel, None).await;
    Ok(Answer::Result(connection.codec.result(id, &EmptyResult {})))
}

/// Ends a subscription from the server's side: the client gets an `unsubscribe` push with
/// `code` (nothing of the channel follows it), and the connection leaves the channel's
/// presence as on a client `unsubscribe`. False if it was not subscribed.
pub async fn end_subscription(
    node: &Arc<Node>,
    connection: &Arc<Connection>,
    channel: &ChannelName,
    code: u32,
) -> bool {
    leave(node, connection, channel, Some(code)).await
}

/// Leaves `channel`, telling the client with an `unsubscribe` push when `push` has a code.
/// False if it was not subscribed.
async fn leave(
    node: &Arc<Node>,
    connection: &Arc<Connection>,
    channel: &ChannelName,
    push: Option<u32>,
) -> bool {
    if !remove_subscription(node, connection, channel).await {
        return false;
    }
    // Out of the hub first, so no publication of the channel follows the push.
    if let Some(code) = push {
        connection.send(connection.codec.unsubscribe(
            channel.as_str(),
            code,
            unsubscribe_code::reason(code),
        ));
    }
    node.presence().left(channel, connection).await;
    true
}

/// Removes the subscription, its hub entry and its token expiry. False if there was no
/// subscription.
async fn remove_subscription(node: &Node, connection: &Connection, channel: &ChannelName) -> bool {
    node.connections()
        .subscription_tokens
        .remove(&connection.id, channel);
    if !connection.remove_subscription(channel) {
        return false;
    }
    metrics::gauge!(metrics::SUBSCRIPTIONS).decrement(1.0);
    node.remove_subscriber(channel, &connection.id).await;
    true
}
