//! Who may subscribe to which channel: the namespace's access rule applied to the
//! connection's claims and, where the rule takes one, a subscription token.

use herald_protocol::ChannelName;

use super::{Claims, SubscriptionClaims};
use crate::config::Access;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("permission denied")]
    NotAllowed,
    #[error("subscription token is for another user or channel")]
    TokenMismatch,
}

/// Whether `claims` (plus an already verified subscription token) may subscribe `channel`
/// under `access`.
pub fn check_subscribe(
    access: Access,
    channel: &ChannelName,
    claims: &Claims,
    token: Option<&SubscriptionClaims>,
) -> Result<(), Denied> {
    if let Some(token) = token
        && (token.sub != *claims.sub || token.channel != channel.as_str())
    {
        return Err(Denied::TokenMismatch);
    }
    let mut segments = channel.segments().skip(1);
    let id = segments.next();
    let nested = segments.next().is_some();
    let allowed = match access {
        Access::Public => true,
        Access::User => id == Some(&*claims.sub),
        Access::OrgMember => id.is_some_and(|org| claims.is_member_of(org)),
        Access::Org if !nested => id.is_some_and(|org| claims.is_member_of(org)),
        Access::Org => {
            token.is_some()
                || (id.is_some_and(|org| claims.is_member_of(org))
                    && claims.grants_channel(channel.as_str()))
        }
        Access::Claim => claims.grants_channel(channel.as_str()),
        Access::Token => token.is_some(),
    };
    if allowed {
        Ok(())
    } else {
        Err(Denied::NotAllowed)
    }
}
