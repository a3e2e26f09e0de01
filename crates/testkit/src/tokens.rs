//! Connection tokens signed with the test secret (or a load test's generated one).

use anyhow::{Context, Result};
use herald_gateway::auth::{Authenticator, Claims};
use herald_gateway::clock::unix_seconds;
use herald_gateway::config::{JwtConfig, Secret};

/// The HS256 secret of every gateway the tests start.
pub const SECRET: &str = "integration-test-secret-0123456789abcdef";
/// The gRPC API key of every gateway the tests start.
pub const API_KEY: &str = "integration-test-api-key";

/// Claims for `sub`: member of `orgs`, allowed `channels`, expiring in `ttl_seconds`.
pub fn claims(sub: &str, orgs: &[&str], channels: &[&str], ttl_seconds: i64) -> Claims {
    Claims {
        sub: sub.into(),
        exp: unix_seconds() + ttl_seconds,
        orgs: orgs.iter().map(|&s| s.into()).collect(),
        channels: channels.iter().map(|&s| s.into()).collect(),
        info: None,
    }
}

/// An HS256 signer and verifier for `secret`.
pub fn authenticator(secret: &str) -> Result<Authenticator> {
    Authenticator::new(&JwtConfig {
        secret: Some(Secret::new(secret)),
        public_key: None,
        audience: None,
        issuer: None,
    })
    .context("setting up the JWT signer")
}

/// `claims` signed with [`SECRET`].
pub fn sign(claims: &Claims) -> String {
    authenticator(SECRET)
        .and_then(|auth| auth.sign(claims).context("signing"))
        .unwrap_or_else(|error| panic!("{error:#}"))
}

/// A token for `sub`, member of org `acme` with `org:acme:*` channels, for an hour.
pub fn member_token(sub: &str) -> String {
    sign(&claims(sub, &["acme"], &["org:acme:*"], 3600))
}
