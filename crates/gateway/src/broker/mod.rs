//! The broker carries each publication once to every node with local subscribers of its
//! channel. In memory for a standalone node (straight to the local hub); the cluster
//! implementation (NATS) implements the same trait.
//!
//! Interest is explicit: the node tells the broker when its first local subscriber of a
//! channel arrives and after its last one leaves, so a node only receives what it delivers.

mod memory;
mod nats;

use async_trait::async_trait;
use herald_protocol::{ChannelName, Publication};

pub use memory::MemoryBroker;
pub use nats::{NatsBroker, NatsError};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerError {
    #[error("broker unavailable: {0}")]
    Unavailable(String),
}

#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Hands one publication to every interested node (this one included).
    async fn publish(&self, publication: &Publication) -> Result<(), BrokerError>;

    /// This node now has local subscribers of `channel`.
    async fn subscribe(&self, channel: &ChannelName) -> Result<(), BrokerError>;

    /// This node no longer has local subscribers of `channel`.
    async fn unsubscribe(&self, channel: &ChannelName) -> Result<(), BrokerError>;

    /// Whether the broker is connected (for `/readyz`).
    fn is_healthy(&self) -> bool;
}
