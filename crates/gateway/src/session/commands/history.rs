//! `history`: a window of a channel's history, for connections that are subscribed to it or
//! may subscribe.

use std::sync::Arc;

use herald_protocol::command::HistoryRequest;
use herald_protocol::reply::{HistoryResult, encode_result};

use super::subscribe::authorize_member;
use crate::connections::Connection;
use crate::node::Node;
use crate::session::{Answer, Failure};

pub async fn apply(
    node: &Arc<Node>,
    connection: &Arc<Connection>,
    id: u64,
    request: HistoryRequest,
) -> Result<Answer, Failure> {
    authorize_member(node, connection, &request.channel)?;
    let slice = node
        .history(
            &request.channel,
            request.since_offset.unwrap_or(0),
            request.limit,
        )
        .await
        .map_err(|e| Failure::new(e.error_code(), e.to_string()))?;
    let result = HistoryResult {
        publications: slice.publications,
        offset: slice.position.offset,
        epoch: slice.position.epoch,
    };
    Ok(Answer::Result(encode_result(id, &result)))
}
