//! `unsubscribe`: leave a channel. Unsubscribing from a channel one is not subscribed to
//! succeeds, so a client's retry after a lost reply is harmless.

use std::sync::Arc;

use herald_protocol::command::UnsubscribeRequest;
use herald_protocol::reply::{EmptyResult, encode_result};
use herald_protocol::{ChannelName, ErrorCode};

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
    let channel = ChannelName::parse(&request.channel)
        .map_err(|e| Failure::new(ErrorCode::UnknownChannel, e.to_string()))?;
    if connection.remove_subscription(&channel) {
        metrics::gauge!(metrics::SUBSCRIPTIONS).decrement(1.0);
        if node.hub.remove(&channel, &connection.id) {
            node.release_interest(&channel).await;
        }
        node.presence.left(&channel, connection).await;
    }
    Ok(Answer::Result(encode_result(id, &EmptyResult {})))
}
