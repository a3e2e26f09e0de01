//! `typing`: the user starts or stops typing in a channel they are subscribed to. Updates
//! past one a second are acknowledged and not pushed.

use std::sync::Arc;

use herald_protocol::command::TypingRequest;
use herald_protocol::reply::EmptyResult;

use super::presence::subscribed_channel;
use crate::connections::Connection;
use crate::node::Node;
use crate::session::{Answer, Failure};

pub async fn apply(
    node: &Arc<Node>,
    connection: &Arc<Connection>,
    id: u64,
    request: TypingRequest,
) -> Result<Answer, Failure> {
    let channel = subscribed_channel(node, connection, &request.channel, |options| options.typing)?;
    node.presence()
        .typing(&channel, connection, request.active)
        .await?;
    Ok(Answer::Result(connection.codec.result(id, &EmptyResult {})))
}
