//! `GET /socket.io/`: Engine.IO's endpoint, for unmodified `socket.io-client` apps. Only the
//! WebSocket transport for now (`transports: ["websocket"]` on the client): the request is
//! upgraded as `/ws` is, and the session speaks the Socket.IO codec. Engine.IO's own errors
//! (a version other than 4, another transport) are HTTP 400 with its JSON error body.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Extension, Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use herald_protocol::Codec;
use serde::Serialize;

use super::HttpState;
use super::admission::PendingSlot;
use super::ws;

/// Engine.IO's error codes for a refused request.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(into = "EngineErrorBody")]
enum EngineError {
    TransportUnknown,
    SessionIdUnknown,
    UnsupportedProtocolVersion,
}

#[derive(Serialize)]
struct EngineErrorBody {
    code: u8,
    message: &'static str,
}

impl From<EngineError> for EngineErrorBody {
    fn from(error: EngineError) -> Self {
        let (code, message) = match error {
            EngineError::TransportUnknown => (0, "Transport unknown"),
            EngineError::SessionIdUnknown => (1, "Session ID unknown"),
            EngineError::UnsupportedProtocolVersion => (5, "Unsupported protocol version"),
        };
        EngineErrorBody { code, message }
    }
}

pub async fn upgrade(
    State(state): State<HttpState>,
    Extension(slot): Extension<PendingSlot>,
    Query(query): Query<HashMap<String, String>>,
    request: Request,
) -> Response {
    match check(&query) {
        Ok(()) => ws::serve(state, slot, &query, request, Codec::SocketIo, None),
        Err(error) => (StatusCode::BAD_REQUEST, Json(error)).into_response(),
    }
}

fn check(query: &HashMap<String, String>) -> Result<(), EngineError> {
    if query.get("EIO").map(String::as_str) != Some("4") {
        return Err(EngineError::UnsupportedProtocolVersion);
    }
    if query.get("transport").map(String::as_str) != Some("websocket") {
        return Err(EngineError::TransportUnknown);
    }
    // A polling session upgrading to WebSocket: there are no polling sessions yet.
    if query.contains_key("sid") {
        return Err(EngineError::SessionIdUnknown);
    }
    Ok(())
}
