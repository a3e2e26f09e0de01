//! `setStatus`: the user's status (online, away, busy) in every org of their token, for
//! all their connections. `offline` is not settable: it is what no connection means.

use std::sync::Arc;

use herald_protocol::ErrorCode;
use herald_protocol::command::SetStatusRequest;
use herald_protocol::reply::EmptyResult;

use crate::connections::Connection;
use crate::node::Node;
use crate::session::{Answer, Failure};
use crate::state::Status;

pub async fn apply(
    node: &Arc<Node>,
    connection: &Arc<Connection>,
    id: u64,
    request: SetStatusRequest,
) -> Result<Answer, Failure> {
    let status = match Status::parse(&request.status) {
        Some(status) if status != Status::Offline => status,
        _ => {
            return Err(Failure::new(
                ErrorCode::BadRequest,
                "status must be online, away or busy",
            ));
        }
    };
    node.presence().set_status(connection, status).await?;
    Ok(Answer::Result(connection.codec.result(id, &EmptyResult {})))
}
