//! What a new WebSocket or SSE connection must pass before its session starts: the Origin
//! allowlist and the drain; and where its token comes from (header, query, cookie).

use std::collections::HashMap;

use axum::http::{HeaderMap, header};
use bytes::Bytes;
use herald_protocol::{CloseCode, Codec};

use super::HttpState;

/// Why a new connection is closed at once.
pub(crate) enum Refusal {
    Origin,
    /// The node is draining: reconnect now, to another node.
    Draining,
}

/// Checks a new connection (WebSocket or SSE) against the Origin allowlist, and takes the
/// token the request carries, if any. The node's connection limit is checked by `connect`,
/// so sockets that never authenticate cannot fill it.
pub(crate) fn admit(
    state: &HttpState,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Result<Option<String>, Refusal> {
    let node = &state.node;
    if !origin_allowed(&node.config().allowed_origins, headers) {
        return Err(Refusal::Origin);
    }
    if node.is_draining() {
        return Err(Refusal::Draining);
    }
    // A cookie rides along with any site's request, so it only counts as a token behind an
    // explicit Origin allowlist (matched above): with none, or with `*`, any page could open
    // a connection as the user (cross-site WebSocket hijacking). `*` follows CORS, where a
    // wildcard never carries credentials.
    let cookies_allowed = allowlist_is_explicit(&node.config().allowed_origins);
    Ok(token_from(headers, query, cookies_allowed))
}

impl Refusal {
    /// How the refused connection is closed (a WebSocket close, an SSE `close` event).
    pub(crate) fn close_code(&self) -> CloseCode {
        match self {
            Refusal::Origin => CloseCode::ForbiddenOrigin,
            Refusal::Draining => CloseCode::Shutdown,
        }
    }

    /// The `disconnect` push sent before the close, if any. A draining node tells a new
    /// connection exactly what it tells the open ones it closes (for clients behind proxies
    /// that drop close frames).
    pub(crate) fn disconnect_push(&self, codec: Codec) -> Option<Bytes> {
        match self {
            Refusal::Draining => {
                let code = self.close_code();
                Some(codec.disconnect(code, code.reason()))
            }
            Refusal::Origin => None,
        }
    }
}

/// An empty allowlist, or `*`, allows any request. Otherwise a request with an `Origin` must
/// be listed (`null`, from sandboxed frames and local files, never is), and one without must
/// not be a cross-site browser request. Browsers send `Origin` on every WebSocket upgrade
/// and every cross-origin `fetch`/`EventSource`, but not on a same-origin GET (a same-origin
/// `/sse`) nor on a cross-site subresource load (`<img src>`), which `Sec-Fetch-Site` tells
/// apart. Non-browser clients send neither header, and could forge both anyway.
fn origin_allowed(allowed: &[String], headers: &HeaderMap) -> bool {
    if !allowlist_is_explicit(allowed) {
        return true;
    }
    match headers.get(header::ORIGIN) {
        Some(origin) => origin.to_str().is_ok_and(|o| origin_listed(allowed, o)),
        None => !cross_site_fetch(headers),
    }
}

/// Whether the allowlist names origins, rather than allowing any (empty, or `*`).
fn allowlist_is_explicit(allowed: &[String]) -> bool {
    !allowed.is_empty() && !allowed.iter().any(|a| a == "*")
}

/// Whether a browser says the request comes from another site (`Sec-Fetch-Site`). An absent
/// header is not a browser's (or an old one's); `same-origin` and `none` (typed in the
/// address bar) are not cross-site.
fn cross_site_fetch(headers: &HeaderMap) -> bool {
    headers
        .get("sec-fetch-site")
        .is_some_and(|site| site != "same-origin" && site != "none")
}

/// Whether `origin` is on the allowlist (`*` allows any).
pub(super) fn origin_listed(allowed: &[String], origin: &str) -> bool {
    allowed
        .iter()
        .any(|a| a == "*" || a.eq_ignore_ascii_case(origin))
}

/// A token from `Authorization: Bearer`, `?token=`, or (when `cookies_allowed`) the
/// `herald_token` cookie.
fn token_from(
    headers: &HeaderMap,
    query: &HashMap<String, String>,
    cookies_allowed: bool,
) -> Option<String> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(|token| token.trim().to_owned());
    let cookie = || {
        if !cookies_allowed {
            return None;
        }
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(';'))
            .find_map(|pair| pair.trim().strip_prefix("herald_token=").map(str::to_owned))
    };
    bearer
        .or_else(|| query.get("token").cloned())
        .or_else(cookie)
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_sources_in_order() {
        let mut headers = HeaderMap::new();
        let mut query = HashMap::new();
        assert_eq!(token_from(&headers, &query, true), None);
        headers.insert(
            header::COOKIE,
            "a=b; herald_token=from-cookie".parse().unwrap(),
        );
        assert_eq!(
            token_from(&headers, &query, true).as_deref(),
            Some("from-cookie")
        );
        assert_eq!(
            token_from(&headers, &query, false),
            None,
            "cookies need an Origin allowlist"
        );
        query.insert("token".to_owned(), "from-query".to_owned());
        assert_eq!(
            token_from(&headers, &query, true).as_deref(),
            Some("from-query")
        );
        headers.insert(header::AUTHORIZATION, "Bearer from-header".parse().unwrap());
        assert_eq!(
            token_from(&headers, &query, true).as_deref(),
            Some("from-header")
        );
    }

    #[test]
    fn origin_allowlist() {
        let mut headers = HeaderMap::new();
        assert!(origin_allowed(&[], &headers));
        let allowed = vec!["https://app.example".to_owned()];
        assert!(
            origin_allowed(&allowed, &headers),
            "no Origin: same-origin or not a browser"
        );
        headers.insert("sec-fetch-site", "same-origin".parse().unwrap());
        assert!(origin_allowed(&allowed, &headers));
        headers.insert("sec-fetch-site", "cross-site".parse().unwrap());
        assert!(
            !origin_allowed(&allowed, &headers),
            "a cross-site load without Origin"
        );
        headers.insert("sec-fetch-site", "same-site".parse().unwrap());
        assert!(!origin_allowed(&allowed, &headers));
        headers.insert(header::ORIGIN, "https://evil.example".parse().unwrap());
        assert!(!origin_allowed(&allowed, &headers));
        headers.insert(header::ORIGIN, "null".parse().unwrap());
        assert!(!origin_allowed(&allowed, &headers));
        headers.insert(header::ORIGIN, "https://app.example".parse().unwrap());
        assert!(origin_allowed(&allowed, &headers));
        assert!(allowlist_is_explicit(&allowed));

        let wildcard = vec!["*".to_owned()];
        headers.insert(header::ORIGIN, "null".parse().unwrap());
        assert!(origin_allowed(&wildcard, &headers));
        assert!(!allowlist_is_explicit(&wildcard), "`*` never takes cookies");
        assert!(!allowlist_is_explicit(&[]));
    }
}
