//! `rpc`: a call to the app's backend on behalf of the connection. Checked here (method,
//! data, the connection's rpc rate and calls in flight), then run in its own task, so a slow
//! backend never holds up the connection's other commands; that task sends the reply.

use std::sync::Arc;

use herald_api::v1::RpcRequest as BackendRequest;
use herald_protocol::command::{RpcRequest, valid_rpc_method};
use herald_protocol::json::compact;
use herald_protocol::reply::RpcResult;
use herald_protocol::{Codec, ErrorCode};
use tokio::sync::Semaphore;

use crate::backend::{BackendError, Refusal, Reply};
use crate::connections::Connection;
use crate::node::Node;
use crate::session::rate_limit::{RateLimiter, Verdict};
use crate::session::{Answer, Failure};

/// `rpc` calls of one connection waiting for the backend at once; more get error 110.
const MAX_IN_FLIGHT: usize = 16;

/// A connection's rpc budget: its rate and its calls in flight. Allocated at its first `rpc`,
/// so connections that never call one do not carry it.
#[derive(Default)]
pub struct RpcBudget(Option<Box<Budget>>);

struct Budget {
    limiter: RateLimiter,
    in_flight: Arc<Semaphore>,
}

impl RpcBudget {
    fn get(&mut self, per_minute: u32) -> &mut Budget {
        self.0.get_or_insert_with(|| {
            Box::new(Budget {
                limiter: RateLimiter::per_minute(per_minute),
                in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            })
        })
    }
}

pub fn apply(
    node: &Arc<Node>,
    connection: &Arc<Connection>,
    budget: &mut RpcBudget,
    id: u64,
    request: RpcRequest,
) -> Result<Answer, Failure> {
    if !valid_rpc_method(&request.method) {
        return Err(Failure::new(
            ErrorCode::BadRequest,
            "bad request: method must be 1-64 of A-Z a-z 0-9 _ . : / -",
        ));
    }
    let Some(backend) = node.backend() else {
        return Err(Failure::new(
            ErrorCode::NotAvailable,
            "rpc is not configured",
        ));
    };
    if !backend.allows(&request.method) {
        backend.refused(&request.method, Refusal::NotAllowed);
        return Err(Failure::new(
            ErrorCode::MethodNotFound,
            format!("rpc method not allowed: {}", request.method),
        ));
    }
    let data = match request.data {
        Some(data) => node
            .parse_data(data.get().to_owned())
            .map_err(|e| Failure::new(ErrorCode::BadRequest, format!("bad request: {e}")))?,
        None => Arc::from(serde_json::value::RawValue::NULL.to_owned()),
    };
    let budget = budget.get(node.config().limits.rpc_per_minute);
    // Over the rate, the connection is answered 110; its general command budget is what
    // closes it when it keeps going.
    let permit = match budget.limiter.check() {
        Verdict::Allow => budget.in_flight.clone().try_acquire_owned().ok(),
        Verdict::Reject | Verdict::Close => None,
    };
    let Some(permit) = permit else {
        backend.refused(&request.method, Refusal::Rejected);
        return Err(Failure::code(ErrorCode::TooManyRequests));
    };
    let claims = connection.claims();
    let call = BackendRequest {
        user: claims.sub.to_string(),
        client: connection.id.to_string(),
        orgs: claims.orgs.iter().map(|org| org.to_string()).collect(),
        info: claims
            .info
            .as_ref()
            .map(|info| compact(info.get()).into_owned().into_bytes())
            .unwrap_or_default(),
        method: request.method,
        data: data.get().as_bytes().to_vec(),
        node: node.id().to_string(),
    };
    let (node, connection) = (node.clone(), connection.clone());
    tokio::spawn(async move {
        let backend = node.backend().expect("checked before spawning");
        let reply = backend.call(call).await;
        drop(permit);
        connection.send(encode(connection.codec, id, reply));
    });
    Ok(Answer::Sent)
}

fn encode(codec: Codec, id: u64, reply: Result<Reply, BackendError>) -> bytes::Bytes {
    match reply {
        Ok(Reply::Data(data)) => codec.rpc_result(id, &RpcResult { data }),
        Ok(Reply::Refused { code, message }) => codec.raw_error(id, code, &message, false),
        Err(error) => {
            let failure = Failure::from(error);
            codec.error(id, failure.code, &failure.message)
        }
    }
}
