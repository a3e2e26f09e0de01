//! `refresh`: a new token for the same user, extending the connection past the old
//! token's expiry.

use std::sync::Arc;

use herald_protocol::ErrorCode;
use herald_protocol::command::RefreshRequest;
use herald_protocol::reply::{RefreshResult, encode_result};

use crate::auth::AuthError;
use crate::connections::Connection;
use crate::node::Node;
use crate::session::{Answer, Failure};

pub fn apply(
    node: &Arc<Node>,
    connection: &Arc<Connection>,
    id: u64,
    request: RefreshRequest,
) -> Result<Answer, Failure> {
    let claims = node
        .auth
        .verify(&request.token)
        .map_err(|error| match error {
            AuthError::Expired => Failure::code(ErrorCode::TokenExpired),
            other => Failure::new(ErrorCode::Unauthorized, other.to_string()),
        })?;
    if claims.sub != connection.claims.sub {
        return Err(Failure::new(
            ErrorCode::Unauthorized,
            "token is for another user",
        ));
    }
    connection.set_expires_at(claims.exp);
    Ok(Answer::Result(encode_result(
        id,
        &RefreshResult {
            expires: claims.exp,
        },
    )))
}
