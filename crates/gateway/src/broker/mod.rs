//! The broker carries each publication once to every node with local subscribers of its
//! channel. In memory for a standalone node (straight to the local hub); the cluster
//! implementation (NATS) implements the same trait.
//!
//! Interest is explicit: the node tells the broker when its first local subscriber of a
//! channel arrives and after its last one leaves, so a node only receives what it delivers.

mod gathered;
mod memory;
mod nats;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use herald_protocol::{ChannelName, Publication};

pub use memory::MemoryBroker;
pub use nats::{NatsBroker, NatsError};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerError {
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    #[error("event cannot be encoded: {0}")]
    Unencodable(String),
}

/// A presence event (`join`, `leave`, `presence`, `typing`, `status`, `state`) for a
/// channel's subscribers: ephemeral, encoded once by the node that raises it.
#[derive(Debug, Clone)]
pub struct Event {
    pub channel: ChannelName,
    /// The whole push frame, `{"push":{"channel":…,"<kind>":{…}}}`.
    pub push: Bytes,
    /// Who does not get it: a typer is not told they type, a joiner not that it joined.
    pub exclude: Option<Exclude>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exclude {
    /// Every connection of this user.
    User(Arc<str>),
    /// This connection.
    Client(Arc<str>),
}

impl Exclude {
    pub fn matches(&self, user: &str, client: &str) -> bool {
        match self {
            Exclude::User(excluded) => &**excluded == user,
            Exclude::Client(excluded) => &**excluded == client,
        }
    }
}

/// A change to a user's server-side subscriptions (gRPC `Subscribe` / `Unsubscribe`), for
/// that user's connections on every node.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SubscriptionChange {
    pub user: String,
    pub channel: String,
    /// One connection instead of all of the user's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// Subscribe, or unsubscribe.
    pub subscribe: bool,
}

/// A gRPC `Disconnect` for a user's connections on the other nodes (the node called closes
/// its own at once, and skips its order when it comes back).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DisconnectOrder {
    pub user: String,
    pub code: u16,
    pub reason: String,
    /// The node that was called.
    pub origin: String,
}

/// What every node hears on the control subject: an order for one user's connections.
/// Untagged, so a subscription change is the JSON it always was (nodes of an earlier
/// release read those and drop the disconnects they do not know).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum UserOrder {
    Disconnect { disconnect: DisconnectOrder },
    Subscription(SubscriptionChange),
}

impl UserOrder {
    pub fn user(&self) -> &str {
        match self {
            UserOrder::Disconnect { disconnect } => &disconnect.user,
            UserOrder::Subscription(change) => &change.user,
        }
    }
}

/// Where a node's broker hands the user orders it receives.
pub type ChangeSender = tokio::sync::mpsc::Sender<UserOrder>;

/// How many received subscription changes may wait for the node to apply them.
pub const CHANGE_QUEUE: usize = 4096;

/// Hands a received order to the node; dropped (and logged) when the node is that far
/// behind: the user's kept subscriptions are restored at their next connect anyway.
fn hand_over(changes: &ChangeSender, order: UserOrder) {
    if let Err(error) = changes.try_send(order) {
        tracing::warn!(%error, "user order dropped: the node is behind");
    }
}

#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Hands one publication to every interested node (this one included).
    async fn publish(&self, publication: &Publication) -> Result<(), BrokerError>;

    /// Hands one presence event to every interested node (this one included). At most once.
    async fn publish_event(&self, event: &Event) -> Result<(), BrokerError>;

    /// Hands a user order to every node (this one included). At most once.
    async fn publish_change(&self, order: &UserOrder) -> Result<(), BrokerError>;

    /// This node now has local subscribers of `channel`.
    async fn subscribe(&self, channel: &ChannelName) -> Result<(), BrokerError>;

    /// This node no longer has local subscribers of `channel`.
    async fn unsubscribe(&self, channel: &ChannelName) -> Result<(), BrokerError>;

    /// Whether the broker is connected (for `/readyz`).
    fn is_healthy(&self) -> bool;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subscription_change_is_the_json_it_was_and_a_disconnect_is_told_apart() {
        let change = r#"{"user":"u","channel":"org:a:ch:b","subscribe":true}"#;
        let UserOrder::Subscription(parsed) = serde_json::from_str(change).unwrap() else {
            panic!("a subscription change");
        };
        assert_eq!(
            serde_json::to_string(&UserOrder::Subscription(parsed)).unwrap(),
            change
        );
        let disconnect = UserOrder::Disconnect {
            disconnect: DisconnectOrder {
                user: "u".into(),
                code: 4001,
                reason: "r".into(),
                origin: "n1".into(),
            },
        };
        let json = serde_json::to_string(&disconnect).unwrap();
        assert_eq!(
            serde_json::from_str::<UserOrder>(&json).unwrap(),
            disconnect
        );
        // What an earlier node makes of it: not a subscription change.
        assert!(serde_json::from_str::<SubscriptionChange>(&json).is_err());
    }
}
