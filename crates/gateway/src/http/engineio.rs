//! Engine.IO's refusals, shared by its two transports (`socketio.rs`, `polling.rs`): the
//! error codes and JSON body it answers a bad or refused request with.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::admit::Refusal;
use crate::metrics;

/// Engine.IO's error codes for a refused request.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(into = "EngineErrorBody")]
pub(super) enum EngineError {
    TransportUnknown,
    SessionIdUnknown,
    BadHandshakeMethod,
    BadRequest,
    Forbidden,
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
            EngineError::BadHandshakeMethod => (2, "Bad handshake method"),
            EngineError::BadRequest => (3, "Bad request"),
            EngineError::Forbidden => (4, "Forbidden"),
            EngineError::UnsupportedProtocolVersion => (5, "Unsupported protocol version"),
        };
        EngineErrorBody { code, message }
    }
}

impl IntoResponse for EngineError {
    fn into_response(self) -> Response {
        let status = match self {
            EngineError::Forbidden => StatusCode::FORBIDDEN,
            _ => StatusCode::BAD_REQUEST,
        };
        (status, Json(self)).into_response()
    }
}

/// The Engine.IO answer to a request `admit` refused, counted as a disconnect by its code.
pub(super) fn refused(refusal: Refusal) -> EngineError {
    let code = refusal.close_code();
    metrics::counter!(metrics::DISCONNECTS, "code" => code.code().to_string()).increment(1);
    match refusal {
        Refusal::Origin => EngineError::Forbidden,
        // socket.io-client retries a refused handshake, with its backoff.
        Refusal::Draining => EngineError::BadRequest,
    }
}
