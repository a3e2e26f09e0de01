//! `refresh`: a new token for the same user. It replaces the connection's claims (orgs,
//! channel grants, info, expiry), and the connection keeps only what the new claims allow.
//!
//! Every subscription the new claims no longer allow, unless it was made with its own
//! subscription token, ends with an `unsubscribe` push, code 2403, before the reply: when the
//! client reads the reply, its subscriptions are what the new token allows.

use std::sync::Arc;

use herald_protocol::codes::unsubscribe_code;
use herald_protocol::command::RefreshRequest;
use herald_protocol::reply::RefreshResult;
use herald_protocol::{ChannelName, ErrorCode};

use super::unsubscribe::end_subscription;
use crate::auth::{Claims, check_subscribe};
use crate::connections::Connection;
use crate::node::Node;
use crate::session::{Answer, Failure};

pub async fn apply(
    node: &Arc<Node>,
    connection: &Arc<Connection>,
    id: u64,
    request: RefreshRequest,
) -> Result<Answer, Failure> {
    let claims = node.auth().verify(&request.token)?;
    if claims.sub != connection.claims().sub {
        return Err(Failure::new(
            ErrorCode::Unauthorized,
            "token is for another user",
        ));
    }
    let expires = claims.exp;
    let before = connection.replace_claims(claims);
    connection.set_expires_at(expires);
    for channel in revoked(node, connection) {
        end_subscription(
            node,
            connection,
            &channel,
            unsubscribe_code::PERMISSION_REVOKED,
        )
        .await;
    }
    node.presence().orgs_changed(connection, &before).await;
    Ok(Answer::Result(
        connection.codec.result(id, &RefreshResult { expires }),
    ))
}

/// The connection's subscriptions that its (new) claims do not allow, leaving out those
/// made with a subscription token: the token, not the claims, authorised them.
fn revoked(node: &Node, connection: &Connection) -> Vec<ChannelName> {
    let claims: Arc<Claims> = connection.claims();
    let tokens = &node.connections().subscription_tokens;
    connection
        .subscriptions()
        .into_iter()
        .filter(|channel| tokens.expiry(&connection.id, channel).is_none())
        .filter(|channel| match node.config().channel_rule(channel) {
            // A namespace that no longer exists allows nothing.
            None => true,
            Some((rule, _)) => check_subscribe(rule.access, channel, &claims, None).is_err(),
        })
        .collect()
}
