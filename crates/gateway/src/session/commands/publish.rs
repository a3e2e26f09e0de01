//! `publish`: a client event, where the namespace allows it. The server stamps the time and
//! the sender (`from` = the token's `sub`); the client cannot set either.

use std::sync::Arc;

use herald_protocol::ErrorCode;
use herald_protocol::command::PublishRequest;
use herald_protocol::reply::PublishResult;

use super::subscribe::authorize_member;
use crate::connections::Connection;
use crate::node::{self, Node};
use crate::session::{Answer, Failure};

pub async fn apply(
    node: &Arc<Node>,
    connection: &Arc<Connection>,
    id: u64,
    request: PublishRequest,
) -> Result<Answer, Failure> {
    let (_, options) = authorize_member(node, connection, &request.channel)?;
    if !options.client_publish {
        return Err(Failure::new(
            ErrorCode::PermissionDenied,
            "client publish is not allowed on this channel",
        ));
    }
    let data = node.parse_data(request.data.get().to_owned())?;
    let publish = node::PublishRequest {
        channel: request.channel,
        event: request.event,
        data,
        from: Some(connection.claims().sub.clone()),
        idempotency_key: request.idempotency_key.filter(|key| !key.is_empty()),
    };
    let position = node.publish(publish).await?;
    Ok(Answer::Result(connection.codec.result(
        id,
        &PublishResult {
            offset: position.offset,
            epoch: position.epoch.to_string(),
        },
    )))
}
