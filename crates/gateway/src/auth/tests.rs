use super::*;
use crate::clock::unix_seconds;
use crate::config::{Access, Secret};

pub(super) const SECRET: &str = "0123456789abcdef0123456789abcdef";

pub(super) fn authenticator() -> Authenticator {
    Authenticator::new(&JwtConfig {
        secret: Some(Secret::new(SECRET)),
        public_key: None,
        audience: None,
        issuer: None,
    })
    .unwrap()
}

fn claims(sub: &str, orgs: &[&str], channels: &[&str]) -> Claims {
    Claims {
        sub: sub.into(),
        exp: unix_seconds() + 3600,
        orgs: orgs.iter().map(|&s| s.into()).collect(),
        channels: channels.iter().map(|&s| s.into()).collect(),
        info: None,
    }
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[test]
fn round_trips_a_signed_token() {
    let auth = authenticator();
    let token = auth
        .sign(&claims("alice", &["acme"], &["org:acme:*"]))
        .unwrap();
    let verified = auth.verify(&token).unwrap();
    assert_eq!(&*verified.sub, "alice");
    assert!(verified.is_member_of("acme"));
    assert!(verified.grants_channel("org:acme:ch:general"));
    assert!(!verified.grants_channel("org:other:ch:general"));
}

#[test]
fn rejects_expired_tampered_and_unsigned_tokens() {
    let auth = authenticator();
    let mut expired = claims("alice", &[], &[]);
    expired.exp = unix_seconds() - 1;
    assert_eq!(
        auth.verify(&auth.sign(&expired).unwrap()).unwrap_err(),
        AuthError::Expired
    );

    let token = auth.sign(&claims("alice", &[], &[])).unwrap();
    let mut parts: Vec<&str> = token.split('.').collect();
    let forged = b64(format!(r#"{{"sub":"mallory","exp":{}}}"#, unix_seconds() + 3600).as_bytes());
    parts[1] = &forged;
    assert!(matches!(
        auth.verify(&parts.join(".")),
        Err(AuthError::Invalid(_))
    ));

    let none_header = b64(br#"{"alg":"none","typ":"JWT"}"#);
    assert!(auth.verify(&format!("{none_header}.{forged}.")).is_err());

    let other = Authenticator::new(&JwtConfig {
        secret: Some(Secret::new("another-secret-another-secret-xx")),
        public_key: None,
        audience: None,
        issuer: None,
    })
    .unwrap();
    assert!(
        auth.verify(&other.sign(&claims("alice", &[], &[])).unwrap())
            .is_err()
    );
    assert!(auth.verify("garbage").is_err());
}

#[test]
fn rejects_rs256_without_a_public_key() {
    let auth = authenticator();
    let header = b64(br#"{"alg":"RS256","typ":"JWT"}"#);
    let body = b64(format!(r#"{{"sub":"a","exp":{}}}"#, unix_seconds() + 60).as_bytes());
    assert_eq!(
        auth.verify(&format!("{header}.{body}.c2ln")).unwrap_err(),
        AuthError::UnsupportedAlgorithm(Algorithm::RS256)
    );
}

#[test]
fn enforces_audience_and_issuer_when_configured() {
    // An authenticator signs with the audience and issuer it requires.
    let requiring = |audience: Option<&str>, issuer: Option<&str>| {
        Authenticator::new(&JwtConfig {
            secret: Some(Secret::new(SECRET)),
            public_key: None,
            audience: audience.map(Into::into),
            issuer: issuer.map(Into::into),
        })
        .unwrap()
    };
    let auth = requiring(Some("herald"), Some("https://app.example"));
    let alice = claims("alice", &[], &[]);
    assert!(auth.verify(&auth.sign(&alice).unwrap()).is_ok());
    let wrong_aud = requiring(Some("other"), Some("https://app.example"));
    assert!(auth.verify(&wrong_aud.sign(&alice).unwrap()).is_err());
    let no_iss = requiring(Some("herald"), None);
    assert!(auth.verify(&no_iss.sign(&alice).unwrap()).is_err());

    // Subscription tokens the node signs carry them too.
    let subscription = SubscriptionClaims {
        sub: "alice".into(),
        channel: "private:x".into(),
        exp: unix_seconds() + 3600,
        aud: None,
        iss: None,
    };
    let signed = auth.sign_subscription(&subscription).unwrap();
    assert!(auth.verify_subscription(&signed).is_ok());
    let signed = wrong_aud.sign_subscription(&subscription).unwrap();
    assert!(auth.verify_subscription(&signed).is_err());
}

fn verified(sub: &str, orgs: &[&str], channels: &[&str]) -> Claims {
    let auth = authenticator();
    auth.verify(&auth.sign(&claims(sub, orgs, channels)).unwrap())
        .unwrap()
}

fn channel(name: &str) -> ChannelNameAlias {
    herald_protocol::ChannelName::parse(name).unwrap()
}

type ChannelNameAlias = herald_protocol::ChannelName;

#[test]
fn namespace_rules() {
    let alice = verified("alice", &["acme"], &["org:acme:ch:*"]);
    let bob = verified("bob", &["acme"], &[]);
    let eve = verified("eve", &[], &[]);
    let ok = |access, name: &str, claims: &Claims| {
        check_subscribe(access, &channel(name), claims, None).is_ok()
    };

    assert!(ok(Access::Public, "public:lobby", &eve));
    assert!(ok(Access::User, "user:alice", &alice));
    assert!(!ok(Access::User, "user:alice", &bob));
    assert!(ok(Access::Org, "org:acme", &bob));
    assert!(!ok(Access::Org, "org:acme", &eve));
    assert!(ok(Access::Org, "org:acme:ch:general", &alice));
    assert!(
        !ok(Access::Org, "org:acme:ch:general", &bob),
        "member without a matching channels claim"
    );
    assert!(!ok(Access::Org, "org:acme:dm:x", &alice));
    assert!(ok(Access::OrgMember, "team:acme:x", &bob));
    assert!(ok(Access::Claim, "org:acme:ch:x", &alice));
    assert!(!ok(Access::Claim, "org:acme:ch:x", &bob));
    assert!(!ok(Access::Token, "private:x", &alice));

    let token = SubscriptionClaims {
        sub: "bob".into(),
        channel: "org:acme:ch:secret".into(),
        exp: 0,
        aud: None,
        iss: None,
    };
    let private = channel("org:acme:ch:secret");
    assert!(check_subscribe(Access::Org, &private, &bob, Some(&token)).is_ok());
    assert!(check_subscribe(Access::Token, &private, &bob, Some(&token)).is_ok());
    assert_eq!(
        check_subscribe(Access::Org, &private, &alice, Some(&token)),
        Err(Denied::TokenMismatch)
    );
    assert_eq!(
        check_subscribe(
            Access::Org,
            &channel("org:acme:ch:other"),
            &bob,
            Some(&token)
        ),
        Err(Denied::TokenMismatch)
    );
}

/// Signs any JSON payload with the HS256 test secret, for claims the typed structs cannot say.
fn sign_json(payload: serde_json::Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &payload,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

#[test]
fn a_subscription_token_cannot_connect_and_a_connection_token_cannot_subscribe() {
    let auth = authenticator();
    let subscription = auth
        .sign_subscription(&SubscriptionClaims {
            sub: "alice".into(),
            channel: "private:x".into(),
            exp: unix_seconds() + 3600,
            aud: None,
            iss: None,
        })
        .unwrap();
    assert_eq!(
        auth.verify(&subscription).unwrap_err(),
        AuthError::SubscriptionTokenForConnect
    );
    let verified = auth.verify_subscription(&subscription).unwrap();
    assert_eq!((&*verified.sub, &*verified.channel), ("alice", "private:x"));

    let connection = auth.sign(&claims("alice", &[], &[])).unwrap();
    assert_eq!(
        auth.verify_subscription(&connection).unwrap_err(),
        AuthError::NotASubscriptionToken
    );
}

#[test]
fn audience_may_be_a_string_or_an_array() {
    let auth = Authenticator::new(&JwtConfig {
        secret: Some(Secret::new(SECRET)),
        public_key: None,
        audience: Some("herald".into()),
        issuer: None,
    })
    .unwrap();
    let exp = unix_seconds() + 3600;
    let token = |aud: serde_json::Value| {
        sign_json(serde_json::json!({"sub": "alice", "exp": exp, "aud": aud}))
    };
    assert!(auth.verify(&token("herald".into())).is_ok());
    assert!(
        auth.verify(&token(serde_json::json!(["app", "herald"])))
            .is_ok()
    );
    assert!(
        auth.verify(&token(serde_json::json!(["app", "other"])))
            .is_err()
    );
    assert!(auth.verify(&token(serde_json::json!([]))).is_err());
    let subscription = sign_json(serde_json::json!({
        "sub": "alice", "channel": "private:x", "exp": exp, "aud": ["app", "herald"]
    }));
    assert!(auth.verify_subscription(&subscription).is_ok());
}

#[test]
fn not_before_is_enforced() {
    let auth = authenticator();
    let now = unix_seconds();
    let later = sign_json(serde_json::json!({"sub": "alice", "exp": now + 3600, "nbf": now + 600}));
    assert_eq!(auth.verify(&later).unwrap_err(), AuthError::NotYetValid);
    let later_subscription = sign_json(
        serde_json::json!({"sub": "alice", "channel": "private:x", "exp": now + 3600, "nbf": now + 600}),
    );
    assert_eq!(
        auth.verify_subscription(&later_subscription).unwrap_err(),
        AuthError::NotYetValid
    );
    let earlier =
        sign_json(serde_json::json!({"sub": "alice", "exp": now + 3600, "nbf": now - 10}));
    assert!(auth.verify(&earlier).is_ok());
}

const P256_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgmNZBEhwObkQQ6pz7
gVCNx7J2gli+Xoqq9VAM9OyL9nehRANCAARXWwSJXaYLFQR51Weav0705kRWyH1F
9qzIPoKPWPuSC3jezy1mIRgECVLMGQ62Z2HiWSdjJ3MtISH7/eyTwJqL
-----END PRIVATE KEY-----
";
const P256_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEV1sEiV2mCxUEedVnmr9O9OZEVsh9
RfasyD6Cj1j7kgt43s8tZiEYBAlSzBkOtmdh4lknYydzLSEh+/3sk8Caiw==
-----END PUBLIC KEY-----
";
const P384_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MIG2AgEAMBAGByqGSM49AgEGBSuBBAAiBIGeMIGbAgEBBDCNX1pq9KsQfXD7d83H
T/SfU8FEcCu6d7PqqvyqTfwlac/UoTk1juI489DHCsvOB+GhZANiAASEoiahIwdM
FAeJJi8hJPacrJ8M9zdv/LcFPEQwHrJiZ3fZozq8KiV6zoO7L9Y6hItcWAN5sPB2
AmgJIhz7pA47mBHEVSVswm4GwgFaFfMtR1MJY5rsImLJ2U3sLiURzV8=
-----END PRIVATE KEY-----
";
const P384_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MHYwEAYHKoZIzj0CAQYFK4EEACIDYgAEhKImoSMHTBQHiSYvIST2nKyfDPc3b/y3
BTxEMB6yYmd32aM6vColes6Duy/WOoSLXFgDebDwdgJoCSIc+6QOO5gRxFUlbMJu
BsIBWhXzLUdTCWOa7CJiydlN7C4lEc1f
-----END PUBLIC KEY-----
";
/// secp256k1, an EC curve JWT's ES algorithms do not use.
const K256_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MFYwEAYHKoZIzj0CAQYFK4EEAAoDQgAEWElmjKnYqe8tT+4P9jvYM+z/tJ81aDKI
DGm/FcF4/nvQd9F9IrA0FewfO2Fche1vfpZ+HfOf1fkRB6am1c5xjg==
-----END PUBLIC KEY-----
";

fn with_public_key(pem: &str) -> Result<Authenticator, KeyError> {
    Authenticator::new(&JwtConfig {
        secret: None,
        public_key: Some(pem.into()),
        audience: None,
        issuer: None,
    })
}

fn sign_ec(alg: Algorithm, private_pem: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(alg),
        &claims("alice", &[], &[]),
        &EncodingKey::from_ec_pem(private_pem.as_bytes()).unwrap(),
    )
    .unwrap()
}

#[test]
fn an_ec_key_is_used_for_the_algorithm_of_its_curve() {
    let p256 = with_public_key(P256_PUBLIC).unwrap();
    assert!(
        p256.verify(&sign_ec(Algorithm::ES256, P256_PRIVATE))
            .is_ok()
    );
    assert_eq!(
        p256.verify(&sign_ec(Algorithm::ES384, P384_PRIVATE))
            .unwrap_err(),
        AuthError::UnsupportedAlgorithm(Algorithm::ES384)
    );

    let p384 = with_public_key(P384_PUBLIC).unwrap();
    assert!(
        p384.verify(&sign_ec(Algorithm::ES384, P384_PRIVATE))
            .is_ok()
    );
    assert_eq!(
        p384.verify(&sign_ec(Algorithm::ES256, P256_PRIVATE))
            .unwrap_err(),
        AuthError::UnsupportedAlgorithm(Algorithm::ES256)
    );

    assert!(matches!(
        with_public_key(K256_PUBLIC),
        Err(KeyError::UnsupportedCurve)
    ));
}

#[test]
fn channel_patterns_match_whole_segments() {
    let alice = verified("alice", &[], &["chat:acme:*", "org:acme:ch:general"]);
    assert!(alice.grants_channel("chat:acme:x"));
    assert!(alice.grants_channel("chat:acme:x:y"));
    assert!(!alice.grants_channel("chat:acme"), "`:*` needs a segment");
    assert!(!alice.grants_channel("chat:acme-evil:x"));
    assert!(alice.grants_channel("org:acme:ch:general"));
    assert!(!alice.grants_channel("org:acme:ch:general-evil"));
    assert!(!alice.grants_channel("org:acme:ch:general:x"));

    let everything = verified("root", &[], &["*"]);
    assert!(everything.grants_channel("chat:anything:at:all"));

    let ok = |access, name: &str, claims: &Claims| {
        check_subscribe(access, &channel(name), claims, None).is_ok()
    };
    assert!(ok(Access::Claim, "chat:acme:room", &alice));
    assert!(!ok(Access::Claim, "chat:acme-evil:room", &alice));
}

#[test]
fn a_star_that_is_not_a_whole_last_segment_is_refused() {
    let auth = authenticator();
    for pattern in ["chat:acme*", "chat:*:room", "chat:a*b", "**"] {
        let token = auth.sign(&claims("alice", &[], &[pattern])).unwrap();
        assert_eq!(
            auth.verify(&token).unwrap_err(),
            AuthError::BadChannelPattern(pattern.into()),
            "{pattern}"
        );
    }
    // Built without verification (as in-process callers may), such a pattern grants nothing.
    let claims = Claims {
        sub: "alice".into(),
        exp: 0,
        orgs: vec![],
        channels: vec!["chat:acme*".into()],
        info: None,
    };
    assert!(!claims.grants_channel("chat:acme-evil:x"));
    assert!(!claims.grants_channel("chat:acme:x"));
}
