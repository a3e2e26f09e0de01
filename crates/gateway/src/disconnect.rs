//! gRPC `Disconnect`: close a user's connections on every node with a close code. The node
//! called closes its own at once (the count it answers) and sends the order to the others
//! on the control subject; at most once, like every broker message, so a node cut off from
//! NATS then keeps the user's connections.

use herald_protocol::CloseCode;

use crate::broker::{DisconnectOrder, UserOrder};
use crate::error::NotRelayed;
use crate::node::Node;

/// Closes `user`'s connections here and orders the other nodes to; the number closed here.
pub async fn disconnect(
    node: &Node,
    user: &str,
    code: CloseCode,
    reason: &str,
) -> Result<usize, NotRelayed> {
    let closed = close_local(node, user, code, reason);
    let disconnect = DisconnectOrder {
        user: user.to_owned(),
        code: code.code(),
        reason: reason.to_owned(),
        origin: node.id().to_string(),
    };
    node.publish_change(&UserOrder::Disconnect { disconnect })
        .await?;
    Ok(closed)
}

/// Another node's order (this node's own comes back too, and is already done).
pub fn apply(node: &Node, order: &DisconnectOrder) {
    if *order.origin == **node.id() {
        return;
    }
    let Some(code) = CloseCode::from_code(order.code) else {
        return;
    };
    close_local(node, &order.user, code, &order.reason);
}

fn close_local(node: &Node, user: &str, code: CloseCode, reason: &str) -> usize {
    let connections = node.connections().of_user(user);
    for connection in &connections {
        connection.outbox.close_with_reason(code, Some(reason));
    }
    connections.len()
}
