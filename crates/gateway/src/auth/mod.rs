//! JWT verification for connection and subscription tokens, and channel permissions.
//!
//! HS256 tokens are checked with the secret, RS256/ES256/ES384 tokens with the public key; the
//! algorithm a token names must be the one its key is for, so `alg: none` and algorithm
//! confusion (an RS256 public key used as an HS256 secret) are rejected.
//!
//! A token's kind is its `channel` claim: a subscription token has one, a connection token
//! does not. Subscription tokens are minted per channel, often long-lived and logged, so one
//! must never open a connection (which would act as its user everywhere, `user:<sub>` too).

mod permission;

use std::sync::Arc;

use herald_protocol::publication::compact_raw;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

pub use permission::{Denied, check_subscribe};

use crate::clock::unix_seconds;
use crate::config::JwtConfig;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("token expired")]
    Expired,
    #[error("token not valid yet (nbf is in the future)")]
    NotYetValid,
    #[error("a subscription token (one with a channel claim) cannot open a connection")]
    SubscriptionTokenForConnect,
    #[error("not a subscription token: it has no channel claim")]
    NotASubscriptionToken,
    #[error(
        "channels claim {0:?}: `*` is only allowed as a whole last segment, as in `org:acme:*`"
    )]
    BadChannelPattern(String),
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("no key configured for {0:?} tokens")]
    UnsupportedAlgorithm(Algorithm),
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("HERALD_JWT_PUBLIC_KEY is neither an RSA nor an EC public key in PEM")]
    BadPublicKey,
    #[error(
        "HERALD_JWT_PUBLIC_KEY is an EC key on an unsupported curve: use P-256 (ES256) or P-384 (ES384)"
    )]
    UnsupportedCurve,
}

/// The claims of a connection token, as signed and as verified (with shared strings, so a
/// connection's user and info go into presence without copies).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: Arc<str>,
    /// Expiry, Unix seconds.
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub orgs: Vec<Arc<str>>,
    /// Channel names; a last segment `*` (`org:acme:*`) matches one or more whole segments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<Arc<str>>,
    /// Free-form user info (name, avatar), shown to other members.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<Arc<RawValue>>,
}

/// A connection token as it is signed: the claims, and the audience and issuer the node
/// requires.
#[derive(Serialize)]
struct SignedClaims<'a> {
    #[serde(flatten)]
    claims: &'a Claims,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
}

impl Claims {
    pub fn is_member_of(&self, org: &str) -> bool {
        self.orgs.iter().any(|o| &**o == org)
    }

    pub fn grants_channel(&self, channel: &str) -> bool {
        self.channels
            .iter()
            .any(|pattern| pattern_matches(pattern, channel))
    }
}

/// Whether a `channels` claim entry grants `channel`, segment by segment: `org:acme:*`
/// grants `org:acme:x` and `org:acme:x:y` but not `org:acme` or `org:acme-evil:x`. A `*`
/// that is not a whole last segment never matches (and such a token is refused at verify).
fn pattern_matches(pattern: &str, channel: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some("") => true,
        Some(prefix) if prefix.ends_with(':') => {
            channel.len() > prefix.len() && channel.starts_with(prefix)
        }
        Some(_) => false,
        None => pattern == channel,
    }
}

/// A `*` anywhere but as the whole last segment (`chat:acme*`, `a:*:b`) is a mistake that
/// prefix matching used to turn into a wider grant than meant; refusing the token surfaces it.
pub fn check_channel_pattern(pattern: &str) -> Result<(), AuthError> {
    let body = pattern
        .strip_suffix('*')
        .filter(|prefix| prefix.is_empty() || prefix.ends_with(':'))
        .unwrap_or(pattern);
    if body.contains('*') {
        return Err(AuthError::BadChannelPattern(pattern.to_owned()));
    }
    Ok(())
}

/// A connection token as it is decoded: `aud`/`iss` are checked by the JWT validation (a
/// string or an array for `aud`), and `channel` is only read to tell the kinds apart.
#[derive(Deserialize)]
struct ConnectionPayload {
    sub: Arc<str>,
    exp: i64,
    #[serde(default)]
    orgs: Vec<Arc<str>>,
    #[serde(default)]
    channels: Vec<Arc<str>>,
    #[serde(default)]
    info: Option<Box<RawValue>>,
    #[serde(default)]
    channel: Option<IgnoredAny>,
}

/// The claims of a subscription token: one user, one channel.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubscriptionClaims {
    pub sub: String,
    pub channel: String,
    pub exp: i64,
    /// Signed when set; left empty by verification, which checks the token's `aud` (a
    /// string or an array) and `iss` against the configuration instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
}

/// A subscription token as it is decoded: `channel` is optional here so that a connection
/// token passed instead is named as such rather than as malformed.
#[derive(Deserialize)]
struct SubscriptionPayload {
    sub: String,
    exp: i64,
    #[serde(default)]
    channel: Option<String>,
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

    /// Verifies a connection token; a subscription token is refused.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let claims: ConnectionPayload = self.decode(token)?;
        if claims.channel.is_some() {
            return Err(AuthError::SubscriptionTokenForConnect);
        }
        if claims.sub.is_empty() || claims.sub.len() > 128 {
            return Err(AuthError::Invalid("sub must be 1-128 characters".into()));
        }
        reject_control_characters(&claims)?;
        for pattern in &claims.channels {
            check_channel_pattern(pattern)?;
        }
        Ok(Claims {
            sub: claims.sub,
            exp: claims.exp,
            orgs: claims.orgs,
            channels: claims.channels,
            // Written into presence pushes verbatim: compact, so it cannot break a frame.
            info: claims.info.map(|info| Arc::from(compact_raw(info))),
        })
    }

    /// Verifies a subscription token; a connection token is refused.
    pub fn verify_subscription(&self, token: &str) -> Result<SubscriptionClaims, AuthError> {
        let claims: SubscriptionPayload = self.decode(token)?;
        let channel = claims.channel.ok_or(AuthError::NotASubscriptionToken)?;
        Ok(SubscriptionClaims {
            sub: claims.sub,
            channel,
            exp: claims.exp,
            aud: None,
            iss: None,
        })
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
                jsonwebtoken::errors::ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                _ => AuthError::Invalid(e.to_string()),
            },
        )?;
        Ok(data.claims)
    }

    fn validation(&self, alg: Algorithm) -> Validation {
        let mut validation = Validation::new(alg);
        validation.leeway = 0;
        validation.validate_nbf = true;
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

    /// Signs a connection token with the HS256 secret (`herald token`, dev mode), with the
    /// audience and issuer this node requires.
    pub fn sign(&self, claims: &Claims) -> Option<String> {
        let (_, encoding) = self.hmac.as_ref()?;
        let signed = SignedClaims {
            claims,
            aud: self.audience.as_deref(),
            iss: self.issuer.as_deref(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &signed, encoding).ok()
    }

    /// Signs a subscription token with the HS256 secret.
    /// Its audience and issuer, when the claims leave them empty, are the ones this node
    /// requires, as for connection tokens.
    pub fn sign_subscription(&self, claims: &SubscriptionClaims) -> Option<String> {
        let (_, encoding) = self.hmac.as_ref()?;
        let claims = SubscriptionClaims {
            aud: claims.aud.clone().or_else(|| self.audience.clone()),
            iss: claims.iss.clone().or_else(|| self.issuer.clone()),
            ..claims.clone()
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, encoding).ok()
    }
}

/// Claims end up in NATS headers, Redis keys and logs, where a CR or LF would break the
/// framing: no control characters in `sub`, `orgs` or `channels`.
fn reject_control_characters(claims: &ConnectionPayload) -> Result<(), AuthError> {
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
        // The key does not say which curve it is on; ES256 with a P-384 key would refuse
        // every token at verify time, so the curve is read here and checked at startup.
        return match ec_curve_oid(pem) {
            Some(P256_OID) => Ok((key, Algorithm::ES256)),
            Some(P384_OID) => Ok((key, Algorithm::ES384)),
            _ => Err(KeyError::UnsupportedCurve),
        };
    }
    Err(KeyError::BadPublicKey)
}

/// DER of the `ecPublicKey` algorithm OID (1.2.840.10045.2.1), which the curve OID follows
/// in a SubjectPublicKeyInfo.
const EC_PUBLIC_KEY_OID: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
/// prime256v1 (1.2.840.10045.3.1.7).
const P256_OID: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// secp384r1 (1.3.132.0.34).
const P384_OID: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];

/// The named-curve OID of an EC public key in PEM (SubjectPublicKeyInfo).
fn ec_curve_oid(pem: &[u8]) -> Option<&'static [u8]> {
    use base64::Engine;
    let text = std::str::from_utf8(pem).ok()?;
    let body: String = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.starts_with("-----"))
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .ok()?;
    let start = der
        .windows(EC_PUBLIC_KEY_OID.len())
        .position(|window| window == EC_PUBLIC_KEY_OID)?
        + EC_PUBLIC_KEY_OID.len();
    // The parameters: an OBJECT IDENTIFIER tag, a short length, the OID itself.
    match der.get(start..start + 2)? {
        [0x06, len] => {
            let oid = der.get(start + 2..start + 2 + usize::from(*len))?;
            [P256_OID, P384_OID].into_iter().find(|known| *known == oid)
        }
        _ => None,
    }
}

/// The `exp` (Unix seconds) of a token valid for `ttl` from now.
pub fn expires_in(ttl: std::time::Duration) -> i64 {
    unix_seconds() + ttl.as_secs() as i64
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
