//! Re-authorisation: `refresh` replaces the connection's claims and ends what they no longer
//! allow (2403); a subscription made with a subscription token ends at the token's expiry
//! (2401) unless `subRefresh` moved it.

use futures_util::FutureExt;
use herald_client::{Client, Push};
use herald_gateway::auth::SubscriptionClaims;
use herald_gateway::clock::unix_seconds;
use herald_protocol::codes::unsubscribe_code;
use serde_json::json;

use crate::common::*;

/// The next push on `channel` that is an `unsubscribe`, skipping others; its code.
async fn unsubscribe_code_on(client: &Client, channel: &str) -> u32 {
    within(&format!("an unsubscribe push on {channel}"), async {
        loop {
            match client.next_push().await {
                Some(Push {
                    channel: Some(on),
                    unsubscribe: Some(unsubscribe),
                    ..
                }) if on == channel => return unsubscribe.code,
                Some(_) => continue,
                None => panic!("connection closed while waiting for an unsubscribe"),
            }
        }
    })
    .await
}

/// The next push that is a publication or an unsubscribe: a publication's channel and
/// event, or panics on an unsubscribe (none is expected before the publication).
async fn next_publication_without_unsubscribe(client: &Client) -> (String, String) {
    within("a publication", async {
        loop {
            match client.next_push().await {
                Some(Push {
                    publication: Some(publication),
                    channel,
                    ..
                }) => return (channel.unwrap_or_default(), publication.event),
                Some(Push {
                    unsubscribe: Some(unsubscribe),
                    channel,
                    ..
                }) => panic!("unexpected unsubscribe {unsubscribe:?} on {channel:?}"),
                Some(_) => continue,
                None => panic!("connection closed while waiting for a publication"),
            }
        }
    })
    .await
}

/// A subscription token expiring at `exp` (Unix seconds).
fn subscription_token(gateway: &TestGateway, sub: &str, channel: &str, exp: i64) -> String {
    let claims = SubscriptionClaims {
        sub: sub.into(),
        channel: channel.into(),
        exp,
        aud: None,
        iss: None,
    };
    gateway
        .auth
        .sign_subscription(&claims)
        .expect("HS256 secret configured")
}

#[tokio::test]
async fn refresh_without_an_org_ends_its_channels_with_2403_and_keeps_the_rest() {
    let gateway = TestGateway::with(|c| {
        c.namespaces.insert("chat".into(), chat_namespace());
    })
    .await;
    let orgs = ["acme", "beta"];
    let grants = ["org:acme:*", "org:beta:*"];
    let alice = gateway
        .client(&gateway.token("alice", &orgs, &grants))
        .await;
    let bob = gateway.member("bob").await;
    let token_channel = "org:gamma:private";
    let token = gateway.subscription_token("alice", token_channel);
    for channel in [
        "org:acme:general",
        "chat:acme",
        "org:beta:general",
        "user:alice",
    ] {
        let result = within("subscribe", alice.subscribe(channel)).await.unwrap();
        assert_eq!(result.expires, None, "no token, no end");
    }
    within(
        "subscribe",
        alice.subscribe_with(token_channel, Some(&token), None),
    )
    .await
    .unwrap();
    within("bob subscribes", bob.subscribe("org:acme:general"))
        .await
        .unwrap();

    let refreshed = within(
        "refresh",
        alice.refresh(&gateway.token("alice", &["beta"], &["org:beta:*"])),
    )
    .await
    .expect("a refresh for the same user succeeds");
    assert!(refreshed.expires > unix_seconds());
    // The pushes come before the reply: they are already there when it is.
    let mut revoked = Vec::new();
    while let Some(Some(push)) = alice.next_push().now_or_never() {
        if let (Some(channel), Some(unsubscribe)) = (push.channel, push.unsubscribe) {
            assert_eq!(unsubscribe.code, unsubscribe_code::PERMISSION_REVOKED);
            assert_eq!(unsubscribe.reason, "permission revoked");
            revoked.push(channel);
        }
    }
    revoked.sort();
    assert_eq!(revoked, ["chat:acme", "org:acme:general"]);

    // Bob sees Alice leave the channel's presence, as on an unsubscribe.
    let left = within("bob sees alice leave", async {
        loop {
            match bob.next_push().await {
                Some(Push {
                    leave: Some(member),
                    ..
                }) => return member.user,
                Some(_) => continue,
                None => panic!("bob's connection closed"),
            }
        }
    })
    .await;
    assert_eq!(left, "alice");
    let members = within("presence", bob.presence("org:acme:general"))
        .await
        .unwrap();
    assert!(members.members.iter().all(|m| m.user != "alice"));

    // Nothing more of the revoked channel; the others, and the token's channel, stay.
    gateway
        .publish("org:acme:general", "revoked", json!({}))
        .await;
    for channel in ["org:beta:general", "user:alice", token_channel] {
        gateway.publish(channel, "kept", json!({})).await;
        assert_eq!(
            next_publication_without_unsubscribe(&alice).await,
            (channel.to_owned(), "kept".to_owned())
        );
    }

    // The new claims decide from now on.
    assert_eq!(
        error_code(within("subscribe", alice.subscribe("org:acme:general")).await),
        103
    );
    assert_eq!(
        error_code(within("publish", alice.publish("chat:acme", "x", json!({}))).await),
        103
    );
    assert_eq!(
        error_code(within("typing", alice.typing("org:acme:general", true)).await),
        103,
        "typing needs a subscription it no longer has"
    );
    within(
        "publish where still allowed",
        alice.publish("chat:beta", "x", json!({})),
    )
    .await
    .expect("chat:beta is allowed by the new token");
}

#[tokio::test]
async fn refresh_that_adds_an_org_allows_its_channels() {
    let gateway = TestGateway::start().await;
    let alice = gateway.client(&gateway.token("alice", &[], &[])).await;
    assert_eq!(
        error_code(within("subscribe", alice.subscribe("org:acme")).await),
        103
    );
    within(
        "refresh",
        alice.refresh(&gateway.token("alice", &["acme"], &[])),
    )
    .await
    .unwrap();
    within("subscribe", alice.subscribe("org:acme"))
        .await
        .expect("the new claims allow the org channel");
}

#[tokio::test]
async fn a_subscription_token_ends_the_subscription_at_its_expiry_with_2401() {
    let gateway = TestGateway::start().await;
    let alice = gateway.member("alice").await;
    let channel = "org:gamma:room";
    let expires = unix_seconds() + 3;
    let token = subscription_token(&gateway, "alice", channel, expires);
    let result = within(
        "subscribe",
        alice.subscribe_with(channel, Some(&token), None),
    )
    .await
    .unwrap();
    assert_eq!(result.expires, Some(expires), "the reply says when it ends");
    gateway.publish(channel, "before", json!({})).await;
    assert_eq!(next_publication(&alice).await.event, "before");
    assert_eq!(
        unsubscribe_code_on(&alice, channel).await,
        unsubscribe_code::TOKEN_EXPIRED
    );
    assert!(unix_seconds() >= expires, "not before the token's expiry");
    // The subscription is gone: a new token subscribes again.
    let fresh = subscription_token(&gateway, "alice", channel, unix_seconds() + 60);
    within(
        "resubscribe",
        alice.subscribe_with(channel, Some(&fresh), None),
    )
    .await
    .expect("a new token subscribes again");
}

#[tokio::test]
async fn sub_refresh_before_expiry_keeps_the_subscription() {
    let gateway = TestGateway::start().await;
    let alice = gateway.member("alice").await;
    let (kept, control) = ("org:gamma:kept", "org:gamma:control");
    // Both tokens expire in the same second; only one is refreshed.
    let expires = unix_seconds() + 3;
    for channel in [kept, control] {
        let token = subscription_token(&gateway, "alice", channel, expires);
        within(
            "subscribe",
            alice.subscribe_with(channel, Some(&token), None),
        )
        .await
        .unwrap();
    }
    let longer = subscription_token(&gateway, "alice", kept, unix_seconds() + 3600);
    let result = within("subRefresh", alice.sub_refresh(kept, &longer))
        .await
        .expect("subRefresh with a token for the same channel and user");
    assert!(result.expires > unix_seconds() + 3000);
    // The control's end shows the old expiry has passed, without sleeping.
    assert_eq!(
        unsubscribe_code_on(&alice, control).await,
        unsubscribe_code::TOKEN_EXPIRED
    );
    gateway.publish(kept, "after", json!({})).await;
    assert_eq!(
        next_publication_without_unsubscribe(&alice).await,
        (kept.to_owned(), "after".to_owned()),
        "the refreshed subscription outlives its first token"
    );
}

#[tokio::test]
async fn sub_refresh_refuses_tokens_for_another_channel_or_user() {
    let gateway = TestGateway::start().await;
    let alice = gateway.member("alice").await;
    let channel = "org:gamma:room";
    let token = subscription_token(&gateway, "alice", channel, unix_seconds() + 60);
    within(
        "subscribe",
        alice.subscribe_with(channel, Some(&token), None),
    )
    .await
    .unwrap();
    let other_channel =
        subscription_token(&gateway, "alice", "org:gamma:other", unix_seconds() + 60);
    let other_user = subscription_token(&gateway, "mallory", channel, unix_seconds() + 60);
    let connection_token = gateway.token("alice", &["acme"], &[]);
    for (what, token) in [
        ("another channel", other_channel),
        ("another user", other_user),
        ("a connection token", connection_token),
        ("garbage", "not-a-jwt".to_owned()),
    ] {
        assert_eq!(
            error_code(within(what, alice.sub_refresh(channel, &token)).await),
            103,
            "{what}"
        );
    }
    let expired = subscription_token(&gateway, "alice", channel, unix_seconds() - 10);
    assert_eq!(
        error_code(within("expired", alice.sub_refresh(channel, &expired)).await),
        109
    );
    // A subscription the claims allowed has no token to refresh.
    within("subscribe", alice.subscribe("org:acme:general"))
        .await
        .unwrap();
    let token = subscription_token(&gateway, "alice", "org:acme:general", unix_seconds() + 60);
    assert_eq!(
        error_code(
            within(
                "not a token subscription",
                alice.sub_refresh("org:acme:general", &token)
            )
            .await
        ),
        107
    );
    // The subscription is untouched by the refused attempts.
    gateway.publish(channel, "still", json!({})).await;
    assert_eq!(
        next_publication_without_unsubscribe(&alice).await,
        (channel.to_owned(), "still".to_owned())
    );
}
