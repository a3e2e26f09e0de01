//! `history`: a window of a channel's history, for connections that are subscribed to it or
//! may subscribe. One page at a time: at most `limit` publications and the reply byte
//! budget, with `more` when the client should ask again from the last offset it got.

use std::sync::Arc;

use herald_protocol::command::HistoryRequest;
use herald_protocol::reply::HistoryResult;

use super::subscribe::authorize_member;
use crate::connections::Connection;
use crate::node::Node;
use crate::paging::history_page;
use crate::session::{Answer, Failure};

pub async fn apply(
    node: &Arc<Node>,
    connection: &Arc<Connection>,
    id: u64,
    request: HistoryRequest,
) -> Result<Answer, Failure> {
    authorize_member(node, connection, &request.channel)?;
    // Every read is capped to the namespace's history size by `Node::history`.
    let limit = request
        .limit
        .filter(|limit| *limit > 0)
        .map_or(usize::MAX, |limit| limit as usize);
    let page = history_page(
        |since, count| {
            let count = u32::try_from(count).unwrap_or(u32::MAX);
            node.history(&request.channel, since, Some(count))
        },
        request.since_offset.unwrap_or(0),
        limit,
        node.config().limits.reply_bytes(),
    )
    .await?;
    let result = HistoryResult {
        publications: page.publications,
        offset: page.position.offset,
        epoch: page.position.epoch.to_string(),
        more: page.more,
    };
    Ok(Answer::Result(connection.codec.result(id, &result)))
}
