//! JWT verification for connection and subscription tokens, and channel permissions.
//!
//! HS256 tokens are checked with the secret, RS256/ES256 tokens with the public key; the
//! algorithm a token names must be the one its key is for, so `alg: none` and algorithm
//! confusion (an RS256 public key used as an HS256 secret) are rejected.

mod permission;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use herald_protocol::publication::compact_raw;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

pub use permission::{Denied, check_subscribe};

use crate::config::JwtConfig;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("token expired")]
    Expired,
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("no key configured for {0:?} tokens")]
    UnsupportedAlgorithm(Algorithm),
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("HERALD_JWT_PUBLIC_KEY is neither an RSA nor an EC public key in PEM")]
    BadPublicKey,
}

/// The claims of a connection token, shared by every place that needs them.
#[derive(Debug, Clone)]
pub struct Claims {
    pub sub: Arc<str>,
    /// Expiry, Unix seconds.
    pub exp: i64,
    pub orgs: Vec<Arc<str>>,
    /// Channel names; a trailing `*` matches any suffix.
    pub channels: Vec<Arc<str>>,
    /// Free-form user info (name, avatar), shown to other members.
    pub info: Option<Arc<RawValue>>,
}

impl Claims {
    pub fn is_member_of(&self, org: &str) -> bool {
        self.orgs.iter().any(|o| &**o == org)
    }

    pub fn grants_channel(&self, channel: &str) -> bool {
        self.channels
            .iter()
            .any(|pattern| match pattern.strip_suffix('*') {
                Some(prefix) => channel.starts_with(prefix),
                None => &**pattern == channel,
            })
    }
}

/// The claims of a connection token as they are on the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenClaims {
    pub sub: String,
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub orgs: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<Box<RawValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
}

/// The claims of a subscription token: one user, one channel.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubscriptionClaims {
    pub sub: String,
    pub channel: String,
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
}

/// Verifies tokens with the configured keys; signs them when a secret is configured.
pub struct Authenticator {
    hmac: Option<(DecodingKey, EncodingKey)>,
    public: Option<(DecodingKey, Algorithm)>,
    audience: Option<String>,
    issuer: Option<String>,
}

impl Authenticator {
    pub fn new(config: &JwtConfig) -> Result<Self, KeyError> {
        let hmac = config.secret.as_ref().map(|secret| {
            let bytes = secret.expose().as_bytes();
            (
                DecodingKey::from_secret(bytes),
                EncodingKey::from_secret(bytes),
            )
        });
        let public = match &config.public_key {
            None => None,
            Some(pem) => Some(public_key(pem.as_bytes())?),
        };
        Ok(Self {
            hmac,
            public,
            audience: config.audience.clone(),
            issuer: config.issuer.clone(),
        })
    }

    /// Verifies a connection token.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let claims: TokenClaims = self.decode(token)?;
        if claims.sub.is_empty() || claims.sub.len() > 128 {
            return Err(AuthError::Invalid("sub must be 1-128 characters".into()));
        }
        reject_control_characters(&claims)?;
        Ok(Claims {
            sub: Arc::from(claims.sub),
            exp: claims.exp,
            orgs: claims.orgs.into_iter().map(Arc::from).collect(),
            channels: claims.channels.into_iter().map(Arc::from).collect(),
            // Written into presence pushes verbatim: compact, so it cannot break a frame.
            info: claims.info.map(|info| Arc::from(compact_raw(info))),
        })
    }

    /// Verifies a subscription token.
    pub fn verify_subscription(&self, token: &str) -> Result<SubscriptionClaims, AuthError> {
        self.decode(token)
    }

    fn decode<T: serde::de::DeserializeOwned>(&self, token: &str) -> Result<T, AuthError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| AuthError::Invalid(e.to_string()))?;
        let key = match header.alg {
            Algorithm::HS256 => self.hmac.as_ref().map(|(decoding, _)| decoding),
            alg => self
                .public
                .as_ref()
                .filter(|(_, expected)| *expected == alg)
                .map(|(decoding, _)| decoding),
        };
        let key = key.ok_or(AuthError::UnsupportedAlgorithm(header.alg))?;
        let data = jsonwebtoken::decode::<T>(token, key, &self.validation(header.alg)).map_err(
            |e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
                _ => AuthError::Invalid(e.to_string()),
            },
        )?;
        Ok(data.claims)
    }

    fn validation(&self, alg: Algorithm) -> Validation {
        let mut validation = Validation::new(alg);
        validation.leeway = 0;
        let mut required = vec!["exp", "sub"];
        match &self.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &self.issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        validation
    }

    /// Signs a connection token with the HS256 secret (for `herald token` and dev mode).
    pub fn sign(&self, claims: &TokenClaims) -> Option<String> {
        let (_, encoding) = self.hmac.as_ref()?;
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, encoding).ok()
    }

    /// Signs a subscription token with the HS256 secret.
    pub fn sign_subscription(&self, claims: &SubscriptionClaims) -> Option<String> {
        let (_, encoding) = self.hmac.as_ref()?;
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, encoding).ok()
    }
}

/// Claims end up in NATS headers, Redis keys and logs, where a CR or LF would break the
/// framing: no control characters in `sub`, `orgs` or `channels`.
fn reject_control_characters(claims: &TokenClaims) -> Result<(), AuthError> {
    let fields = [
        ("sub", std::slice::from_ref(&claims.sub)),
        ("orgs", &claims.orgs[..]),
        ("channels", &claims.channels[..]),
    ];
    for (name, values) in fields {
        if values
            .iter()
            .any(|value| value.chars().any(char::is_control))
        {
            return Err(AuthError::Invalid(format!(
                "{name} must not contain control characters"
            )));
        }
    }
    Ok(())
}

fn public_key(pem: &[u8]) -> Result<(DecodingKey, Algorithm), KeyError> {
    if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
        return Ok((key, Algorithm::RS256));
    }
    if let Ok(key) = DecodingKey::from_ec_pem(pem) {
        return Ok((key, Algorithm::ES256));
    }
    Err(KeyError::BadPublicKey)
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
