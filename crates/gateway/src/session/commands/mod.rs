//! One file per client method. Each takes the node, the connection and the request, and
//! answers with a result or a [`Failure`]; a new method is a new file and one line here.

mod history;
mod ping;
mod presence;
mod publish;
mod refresh;
mod rpc;
mod set_presence_state;
mod set_status;
mod sub_refresh;
mod subscribe;
mod typing;
mod unsubscribe;

pub use rpc::RpcBudget;
pub use subscribe::{Joining, begin_join, join};
pub use unsubscribe::end_subscription;

use std::sync::Arc;

use herald_protocol::{ErrorCode, Method};

use super::{Answer, Failure};
use crate::connections::Connection;
use crate::node::Node;

pub async fn dispatch(
    node: &Arc<Node>,
    connection: &Arc<Connection>,
    rpc: &mut RpcBudget,
    id: u64,
    method: Method,
) -> Result<Answer, Failure> {
    match method {
        Method::Connect(_) => Err(Failure::new(ErrorCode::BadRequest, "already connected")),
        Method::Subscribe(request) => subscribe::apply(node, connection, id, request).await,
        Method::Unsubscribe(request) => unsubscribe::apply(node, connection, id, request).await,
        Method::Publish(request) => publish::apply(node, connection, id, request).await,
        Method::History(request) => history::apply(node, connection, id, request).await,
        Method::Refresh(request) => refresh::apply(node, connection, id, request).await,
        Method::SubRefresh(request) => sub_refresh::apply(node, connection, id, request),
        Method::Ping(_) => Ok(ping::apply(connection.codec, id)),
        Method::Presence(request) => presence::apply(node, connection, id, request).await,
        Method::PresenceStats(request) => presence::stats(node, connection, id, request).await,
        Method::SetStatus(request) => set_status::apply(node, connection, id, request).await,
        Method::Typing(request) => typing::apply(node, connection, id, request).await,
        Method::SetPresenceState(request) => {
            set_presence_state::apply(node, connection, id, request).await
        }
        Method::Rpc(request) => rpc::apply(node, connection, rpc, id, request),
    }
}
