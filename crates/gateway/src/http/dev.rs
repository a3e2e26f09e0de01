//! Development mode only (`herald serve --dev`, loopback only): the demo chat at `/`, and
//! `/dev/token?user=…`, which mints a token for the demo so a new user needs nothing else.
//! The demo is a prebuilt bundle from `sdk/typescript/demo`, compiled into the binary; the
//! SDK's tests fail when it is stale.

use std::collections::HashMap;

use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use super::HttpState;
use crate::auth::{Claims, expires_in};

const INDEX_HTML: &str = include_str!("../../demo/index.html");
const DEMO_JS: &str = include_str!("../../demo/demo.js");
const DEMO_CSS: &str = include_str!("../../demo/demo.css");

/// The org every demo user belongs to.
pub const DEMO_ORG: &str = "demo";
/// How long a demo token lives.
const DEMO_TOKEN_TTL: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// The demo's routes; mounted only in development mode.
pub fn routes() -> Router<HttpState> {
    Router::new()
        .route("/", get(|| asset("text/html; charset=utf-8", INDEX_HTML)))
        .route(
            "/demo.js",
            get(|| asset("text/javascript; charset=utf-8", DEMO_JS)),
        )
        .route(
            "/demo.css",
            get(|| asset("text/css; charset=utf-8", DEMO_CSS)),
        )
        .route("/dev/token", get(token))
}

async fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// `GET /dev/token?user=ada`: `{"token": "…", "user": "ada"}`, a 24-hour token for the
/// demo org, signed with the dev secret.
async fn token(
    State(state): State<HttpState>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let user = query.get("user").map(String::as_str).unwrap_or_default();
    let valid = (1..=32).contains(&user.len())
        && user
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !valid {
        return (
            StatusCode::BAD_REQUEST,
            "user must be 1-32 characters of A-Z a-z 0-9 _ -",
        )
            .into_response();
    }
    let info = serde_json::value::to_raw_value(&json!({ "name": user })).ok();
    let claims = Claims {
        sub: user.into(),
        exp: expires_in(DEMO_TOKEN_TTL),
        orgs: vec![DEMO_ORG.into()],
        channels: vec![],
        info: info.map(Into::into),
    };
    match state.node.auth().sign(&claims) {
        Some(token) => Json(json!({ "token": token, "user": user })).into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "demo tokens need an HS256 secret (HERALD_JWT_SECRET)",
        )
            .into_response(),
    }
}
