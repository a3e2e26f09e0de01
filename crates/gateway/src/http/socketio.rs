//! `/socket.io/`: Engine.IO's endpoint, for unmodified `socket.io-client` apps. Over the
//! WebSocket transport the request is upgraded as `/ws` is, and the session speaks the
//! Socket.IO codec; over HTTP long-polling (and its upgrade to a WebSocket) see
//! [`super::polling`]. Engine.IO's own errors (a version other than 4, an unknown transport
//! or session) are HTTP 400 with its JSON error body ([`super::engineio`]).

use std::collections::HashMap;

use axum::extract::{Extension, Query, Request, State};
use axum::response::{IntoResponse, Response};
use herald_protocol::Codec;

use super::HttpState;
use super::admission::PendingSlot;
use super::admit::{Refusal, admit};
use super::engineio::{EngineError, refused};
use super::{polling, ws};

/// The transport a request names, and its session when it has one.
enum Transport<'a> {
    WebSocket(Option<&'a str>),
    Polling(Option<&'a str>),
}

pub async fn get(
    State(state): State<HttpState>,
    Extension(slot): Extension<PendingSlot>,
    Query(query): Query<HashMap<String, String>>,
    request: Request,
) -> Response {
    let result = match transport(&query) {
        // A refused Origin is refused before the upgrade, as polling refuses it: the client
        // gets a `connect_error`, not a socket closed before its open packet.
        Ok(Transport::WebSocket(None)) => match admit(&state, request.headers(), &query) {
            Err(Refusal::Origin) => Err(refused(Refusal::Origin)),
            _ => Ok(ws::serve(
                state,
                slot,
                &query,
                request,
                Codec::SocketIo,
                None,
            )),
        },
        Ok(Transport::WebSocket(Some(sid))) => polling::upgrade(&state, sid, request),
        Ok(Transport::Polling(None)) => polling::open(&state, slot, request.headers(), &query),
        Ok(Transport::Polling(Some(sid))) => polling::poll(&state, sid).await,
        Err(error) => Err(error),
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

pub async fn post(
    State(state): State<HttpState>,
    Query(query): Query<HashMap<String, String>>,
    body: axum::body::Body,
) -> Response {
    let result = match transport(&query) {
        Ok(Transport::Polling(Some(sid))) => polling::post(&state, sid, body).await,
        Ok(Transport::Polling(None)) => Err(EngineError::BadHandshakeMethod),
        Ok(Transport::WebSocket(_)) => Err(EngineError::BadRequest),
        Err(error) => Err(error),
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

fn transport(query: &HashMap<String, String>) -> Result<Transport<'_>, EngineError> {
    if query.get("EIO").map(String::as_str) != Some("4") {
        return Err(EngineError::UnsupportedProtocolVersion);
    }
    let sid = query.get("sid").map(String::as_str);
    match query.get("transport").map(String::as_str) {
        Some("websocket") => Ok(Transport::WebSocket(sid)),
        Some("polling") => Ok(Transport::Polling(sid)),
        _ => Err(EngineError::TransportUnknown),
    }
}
