use super::*;
use crate::config::{Access, Secret};

const SECRET: &str = "0123456789abcdef0123456789abcdef";

fn authenticator() -> Authenticator {
    Authenticator::new(&JwtConfig {
        secret: Some(Secret::new(SECRET)),
        public_key: None,
        audience: None,
        issuer: None,
    })
    .unwrap()
}

fn claims(sub: &str, orgs: &[&str], channels: &[&str]) -> TokenClaims {
    TokenClaims {
        sub: sub.into(),
        exp: unix_now() + 3600,
        orgs: orgs.iter().map(|s| s.to_string()).collect(),
        channels: channels.iter().map(|s| s.to_string()).collect(),
        info: None,
        aud: None,
        iss: None,
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
    expired.exp = unix_now() - 1;
    assert_eq!(
        auth.verify(&auth.sign(&expired).unwrap()).unwrap_err(),
        AuthError::Expired
    );

    let token = auth.sign(&claims("alice", &[], &[])).unwrap();
    let mut parts: Vec<&str> = token.split('.').collect();
    let forged = b64(format!(r#"{{"sub":"mallory","exp":{}}}"#, unix_now() + 3600).as_bytes());
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
    let body = b64(format!(r#"{{"sub":"a","exp":{}}}"#, unix_now() + 60).as_bytes());
    assert_eq!(
        auth.verify(&format!("{header}.{body}.c2ln")).unwrap_err(),
        AuthError::UnsupportedAlgorithm(Algorithm::RS256)
    );
}

#[test]
fn enforces_audience_and_issuer_when_configured() {
    let auth = Authenticator::new(&JwtConfig {
        secret: Some(Secret::new(SECRET)),
        public_key: None,
        audience: Some("herald".into()),
        issuer: Some("https://app.example".into()),
    })
    .unwrap();
    let mut good = claims("alice", &[], &[]);
    good.aud = Some("herald".into());
    good.iss = Some("https://app.example".into());
    assert!(auth.verify(&auth.sign(&good).unwrap()).is_ok());
    let mut wrong_aud = good.clone();
    wrong_aud.aud = Some("other".into());
    assert!(auth.verify(&auth.sign(&wrong_aud).unwrap()).is_err());
    let mut no_iss = good;
    no_iss.iss = None;
    assert!(auth.verify(&auth.sign(&no_iss).unwrap()).is_err());
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
