//! `subRefresh`: a new subscription token for a channel the connection subscribed to with
//! one, moving the subscription's end to the new token's `exp`. Same channel, same user, a
//! subscription token; anything else is refused with the codes `subscribe` uses.

use std::sync::Arc;

use herald_protocol::command::SubRefreshRequest;
use herald_protocol::reply::RefreshResult;
use herald_protocol::{ChannelName, ErrorCode};

use crate::connections::Connection;
use crate::node::Node;
use crate::session::{Answer, Failure};

pub fn apply(
    node: &Arc<Node>,
    connection: &Arc<Connection>,
    id: u64,
    request: SubRefreshRequest,
) -> Result<Answer, Failure> {
    let channel = ChannelName::parse(&request.channel)?;
    let token = node
        .auth()
        .verify_subscription(&request.token)
        .map_err(Failure::subscription_token)?;
    if token.sub != *connection.claims().sub || token.channel != channel.as_str() {
        return Err(Failure::new(
            ErrorCode::PermissionDenied,
            "subscription token is for another user or channel",
        ));
    }
    let tokens = &node.connections().subscription_tokens;
    if !tokens.extend(&connection.id, &channel, token.exp) {
        return Err(Failure::new(
            ErrorCode::BadRequest,
            "not subscribed to this channel with a subscription token",
        ));
    }
    let key = node.recovery_key();
    connection.grant(&channel, || {
        key.grant(&token.sub, channel.as_str(), token.exp)
    });
    Ok(Answer::Result(
        connection
            .codec
            .result(id, &RefreshResult { expires: token.exp }),
    ))
}
