//! Property tests of channel-claim matching: no input panics, a `channels` claim grants
//! exactly the channels whose segments match it, and the access rules follow from that.
//! And of token verification: no token, however broken or however odd the claims behind a
//! valid signature, panics it; valid claims come back from `sign` then `verify` unchanged.

use std::sync::Arc;

use herald_protocol::ChannelName;
use proptest::prelude::*;

use super::tests::{SECRET, authenticator};
use super::{Claims, check_channel_pattern, check_subscribe};
use crate::clock::unix_seconds;
use crate::config::Access;

/// Segments from a small alphabet, so that patterns and channels often share them; with
/// near misses (`acme` / `acme-evil` / `acm`) that prefix matching would confuse.
fn segment() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["a", "b", "ab", "acm", "acme", "acme-evil", "x_1"])
        .prop_map(str::to_owned)
}

fn segments() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(segment(), 1..5)
}

/// A claim entry: segments, then perhaps a `*` segment; or a lone `*`.
fn pattern() -> impl Strategy<Value = (Vec<String>, bool)> {
    prop_oneof![
        1 => Just((Vec::new(), true)),
        6 => (segments(), any::<bool>()),
    ]
}

fn render((segments, star): &(Vec<String>, bool)) -> String {
    let mut parts = segments.clone();
    if *star {
        parts.push("*".into());
    }
    parts.join(":")
}

/// What the README promises: without `*` the whole name; with a last `*`, one or more whole
/// segments after the given ones; a lone `*`, every channel.
fn model_grants((prefix, star): &(Vec<String>, bool), channel: &[String]) -> bool {
    if *star {
        channel.len() > prefix.len() && channel[..prefix.len()] == prefix[..]
    } else {
        channel == prefix.as_slice()
    }
}

fn claims(sub: &str, orgs: &[&str], channels: &[String]) -> Claims {
    Claims {
        sub: Arc::from(sub),
        exp: i64::MAX,
        orgs: orgs.iter().map(|o| Arc::from(*o)).collect(),
        channels: channels.iter().map(|c| Arc::from(c.as_str())).collect(),
        info: None,
    }
}

fn access() -> impl Strategy<Value = Access> {
    prop::sample::select(vec![
        Access::Public,
        Access::User,
        Access::Org,
        Access::OrgMember,
        Access::Claim,
        Access::Token,
    ])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn matching_never_panics(patterns in prop::collection::vec(any::<String>(), 0..4), channel in any::<String>()) {
        let _ = claims("u", &[], &patterns).grants_channel(&channel);
        for pattern in &patterns {
            let _ = check_channel_pattern(pattern);
        }
    }

    #[test]
    fn matching_never_panics_on_pattern_like_text(pattern in "[a:*]{0,12}", channel in "[a:*]{0,12}") {
        let _ = claims("u", &[], std::slice::from_ref(&pattern)).grants_channel(&channel);
        let _ = check_channel_pattern(&pattern);
    }

    /// A claim grants exactly the channels whose segments match it.
    #[test]
    fn a_claim_grants_exactly_the_matching_channels(pattern in pattern(), channel in segments()) {
        let rendered = render(&pattern);
        prop_assert!(check_channel_pattern(&rendered).is_ok(), "{} refused", rendered);
        let granted = claims("u", &[], std::slice::from_ref(&rendered)).grants_channel(&channel.join(":"));
        prop_assert_eq!(granted, model_grants(&pattern, &channel), "{} vs {}", rendered, channel.join(":"));
    }

    /// Several claims grant the union of what each grants.
    #[test]
    fn claims_grant_the_union(patterns in prop::collection::vec(pattern(), 0..4), channel in segments()) {
        let rendered: Vec<String> = patterns.iter().map(render).collect();
        let granted = claims("u", &[], &rendered).grants_channel(&channel.join(":"));
        prop_assert_eq!(granted, patterns.iter().any(|p| model_grants(p, &channel)));
    }

    /// `check_channel_pattern` refuses a `*` anywhere but as the whole last segment, and a
    /// refused pattern grants nothing.
    #[test]
    fn star_only_as_a_whole_last_segment(pattern in "[ab:*]{0,10}", channel in segments()) {
        let parts: Vec<&str> = pattern.split(':').collect();
        let (last, rest) = parts.split_last().expect("split yields one part at least");
        let well_formed = rest.iter().all(|p| !p.contains('*')) && (!last.contains('*') || *last == "*");
        prop_assert_eq!(check_channel_pattern(&pattern).is_ok(), well_formed, "{}", pattern);
        if !well_formed {
            let granted = claims("u", &[], std::slice::from_ref(&pattern)).grants_channel(&channel.join(":"));
            prop_assert!(!granted, "malformed {} granted {}", pattern, channel.join(":"));
        }
    }

    /// Subscribe permissions without a subscription token follow from the claims: `user`
    /// only the named user, `org_member` only members, `org` nested channels members whose
    /// claims match, `claim` matching claims, `token` never.
    #[test]
    fn subscribe_permissions_follow_the_claims(
        access in access(),
        channel in segments(),
        sub in segment(),
        orgs in prop::collection::vec(segment(), 0..3),
        patterns in prop::collection::vec(pattern(), 0..3),
    ) {
        let name = channel.join(":");
        let Ok(parsed) = ChannelName::parse(&name) else {
            return Err(TestCaseError::fail(format!("{name} should be a valid channel")));
        };
        let rendered: Vec<String> = patterns.iter().map(render).collect();
        let org_refs: Vec<&str> = orgs.iter().map(String::as_str).collect();
        let claims = claims(&sub, &org_refs, &rendered);
        let id = channel.get(1);
        let member = id.is_some_and(|org| orgs.contains(org));
        let grants = patterns.iter().any(|p| model_grants(p, &channel));
        let expected = match access {
            Access::Public => true,
            Access::User => id == Some(&sub),
            Access::OrgMember => member,
            Access::Org if channel.len() <= 2 => member,
            Access::Org => member && grants,
            Access::Claim => grants,
            Access::Token => false,
        };
        let allowed = check_subscribe(access, &parsed, &claims, None).is_ok();
        prop_assert_eq!(allowed, expected, "{:?} {} for {} in {:?} with {:?}", access, name, sub, orgs, rendered);
    }
}

fn base64url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Any JSON value, a few levels deep.
fn json() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..4)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// A claims object: each claim the node reads absent, well typed or of any JSON, plus
/// whatever else.
fn claims_object() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let now = unix_seconds();
    let string = || {
        prop_oneof![
            any::<String>().prop_map(Value::String),
            "[a-z:*]{0,12}".prop_map(Value::String),
            json()
        ]
    };
    let time = move || {
        prop_oneof![
            (now - 3600..now + 3600).prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            json()
        ]
    };
    let strings = move || {
        prop_oneof![
            prop::collection::vec(string(), 0..4).prop_map(Value::Array),
            json()
        ]
    };
    (
        prop::option::of(string()),
        prop::option::of(time()),
        prop::option::of(time()),
        prop::option::of(strings()),
        prop::option::of(strings()),
        prop::option::of(string()),
        prop::option::of(json()),
        prop::option::of(json()),
    )
        .prop_map(|(sub, exp, nbf, orgs, channels, channel, info, aud)| {
            let mut object = serde_json::Map::new();
            let fields = [
                ("sub", sub),
                ("exp", exp),
                ("nbf", nbf),
                ("orgs", orgs),
                ("channels", channels),
                ("channel", channel),
                ("info", info),
                ("aud", aud),
            ];
            for (name, value) in fields {
                if let Some(value) = value {
                    object.insert(name.to_owned(), value);
                }
            }
            Value::Object(object)
        })
}

/// Claims `verify` accepts: a `sub` of 1-128 bytes and `orgs` without control characters,
/// well-formed `channels` patterns, any JSON object as `info`.
fn valid_claims() -> impl Strategy<Value = Claims> {
    let text = |max: usize| "[^\\p{Cc}]{1,64}".prop_filter("too long", move |s| s.len() <= max);
    let info = prop::option::of(prop::collection::btree_map(any::<String>(), json(), 0..3));
    (
        text(128),
        1..1_000_000_000i64,
        prop::collection::vec(text(256), 0..3),
        prop::collection::vec(pattern(), 0..3),
        info,
    )
        .prop_map(|(sub, ttl, orgs, patterns, info)| Claims {
            sub: Arc::from(sub),
            exp: unix_seconds() + ttl,
            orgs: orgs.into_iter().map(Arc::from).collect(),
            channels: patterns.iter().map(|p| Arc::from(render(p))).collect(),
            info: info.map(|map| {
                let object: serde_json::Map<_, _> = map.into_iter().collect();
                let raw = serde_json::value::to_raw_value(&object).expect("JSON serialises");
                Arc::from(raw)
            }),
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn verify_never_panics(token in any::<String>()) {
        let auth = authenticator();
        let _ = auth.verify(&token);
        let _ = auth.verify_subscription(&token);
    }

    /// Three base64url segments: a header naming any algorithm (or garbage), a payload of
    /// any JSON, any signature bytes.
    #[test]
    fn verify_never_panics_on_token_shaped_input(
        header in prop_oneof![
            prop::sample::select(vec!["HS256", "HS512", "RS256", "ES256", "ES384", "EdDSA", "none"])
                .prop_map(|alg| format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#)),
            json().prop_map(|value| value.to_string()),
        ],
        payload in prop_oneof![claims_object(), json()],
        signature in prop::collection::vec(any::<u8>(), 0..80),
    ) {
        let token = format!(
            "{}.{}.{}",
            base64url(header.as_bytes()),
            base64url(payload.to_string().as_bytes()),
            base64url(&signature)
        );
        let auth = authenticator();
        let _ = auth.verify(&token);
        let _ = auth.verify_subscription(&token);
    }

    /// Behind a valid signature, any claims reach the claim checks: they refuse or accept,
    /// never panic, and what they accept keeps to the documented bounds.
    #[test]
    fn validly_signed_odd_claims_never_panic(payload in prop_oneof![claims_object(), json()]) {
        let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes());
        let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        let token = jsonwebtoken::encode(&header, &payload, &key).expect("JSON signs");
        let auth = authenticator();
        if let Ok(claims) = auth.verify(&token) {
            prop_assert!((1..=128).contains(&claims.sub.len()), "sub {:?}", claims.sub);
            prop_assert!(!claims.sub.chars().any(char::is_control));
            for pattern in &claims.channels {
                prop_assert!(check_channel_pattern(pattern).is_ok(), "pattern {:?}", pattern);
            }
        }
        let _ = auth.verify_subscription(&token);
    }

    /// Valid claims signed by the node come back from `verify` as they went in.
    #[test]
    fn signed_claims_round_trip(claims in valid_claims()) {
        let auth = authenticator();
        let token = auth.sign(&claims).expect("an HMAC secret signs");
        let verified = auth.verify(&token);
        prop_assert!(verified.is_ok(), "{:?} refused: {:?}", claims, verified.err());
        let verified = verified.expect("checked above");
        prop_assert_eq!(&verified.sub, &claims.sub);
        prop_assert_eq!(verified.exp, claims.exp);
        prop_assert_eq!(&verified.orgs, &claims.orgs);
        prop_assert_eq!(&verified.channels, &claims.channels);
        let as_json = |info: &Option<Arc<serde_json::value::RawValue>>| {
            info.as_ref().map(|raw| serde_json::from_str::<serde_json::Value>(raw.get()).expect("info is JSON"))
        };
        prop_assert_eq!(as_json(&verified.info), as_json(&claims.info));
    }
}
