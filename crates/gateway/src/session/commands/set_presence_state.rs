//! `setPresenceState`: a small JSON state attached to the connection's membership of a
//! channel with presence it is subscribed to, shown to the channel's members (`presence`,
//! `state` pushes) until the connection leaves it. `null` clears it.

use std::sync::Arc;

use herald_protocol::ErrorCode;
use herald_protocol::command::SetPresenceStateRequest;
use herald_protocol::json::nesting_depth;
use herald_protocol::publication::compact_raw;
use herald_protocol::reply::EmptyResult;
use serde_json::value::RawValue;

use super::presence::subscribed_channel_with_options;
use crate::connections::Connection;
use crate::node::Node;
use crate::session::{Answer, Failure};

pub async fn apply(
    node: &Arc<Node>,
    connection: &Arc<Connection>,
    id: u64,
    request: SetPresenceStateRequest,
) -> Result<Answer, Failure> {
    let (channel, options) =
        subscribed_channel_with_options(node, connection, &request.channel, |o| o.presence)?;
    let config = node.config();
    let state = checked_state(
        request.state,
        config.presence_state_bytes,
        config.limits.max_json_depth,
    )?;
    node.presence()
        .set_state(&channel, options, connection, state)
        .await?;
    Ok(Answer::Result(connection.codec.result(id, &EmptyResult {})))
}

/// The state in compact form, `None` for `null`; refused when it is over `max_bytes` or
/// nested deeper than `max_depth`.
fn checked_state(
    state: Option<Box<RawValue>>,
    max_bytes: usize,
    max_depth: usize,
) -> Result<Option<Arc<RawValue>>, Failure> {
    let Some(state) = state.map(compact_raw) else {
        return Ok(None);
    };
    if state.get() == "null" {
        return Ok(None);
    }
    if state.get().len() > max_bytes {
        return Err(Failure::new(
            ErrorCode::BadRequest,
            format!("bad request: state is larger than {max_bytes} bytes of JSON"),
        ));
    }
    if nesting_depth(state.get()) > max_depth {
        return Err(Failure::new(
            ErrorCode::BadRequest,
            format!("bad request: state is nested deeper than {max_depth} levels"),
        ));
    }
    Ok(Some(Arc::from(state)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(json: &str) -> Option<Box<RawValue>> {
        Some(RawValue::from_string(json.to_owned()).unwrap())
    }

    #[test]
    fn states_are_compacted_then_measured() {
        let state = checked_state(raw("{ \"mood\" :\n \"a b\" }"), 14, 32).unwrap();
        assert_eq!(state.unwrap().get(), r#"{"mood":"a b"}"#);
        let refused = checked_state(raw(r#"{"mood":"a b"}"#), 13, 32).unwrap_err();
        assert_eq!(refused.code, ErrorCode::BadRequest);
        let deep = checked_state(raw("[[[1]]]"), 100, 2).unwrap_err();
        assert_eq!(deep.code, ErrorCode::BadRequest);
    }

    #[test]
    fn null_clears() {
        assert!(checked_state(None, 10, 32).unwrap().is_none());
        assert!(checked_state(raw(" null "), 10, 32).unwrap().is_none());
        assert!(checked_state(raw("false"), 10, 32).unwrap().is_some());
    }
}
