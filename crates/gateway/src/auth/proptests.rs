//! Property tests of channel-claim matching: no input panics, a `channels` claim grants
//! exactly the channels whose segments match it, and the access rules follow from that.

use std::sync::Arc;

use herald_protocol::ChannelName;
use proptest::prelude::*;

use super::{Claims, check_channel_pattern, check_subscribe};
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
