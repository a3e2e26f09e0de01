//! In-process broker: a publication goes straight to this node's hub, a subscription
//! change to the node.

use std::sync::Arc;

use async_trait::async_trait;
use herald_protocol::{ChannelName, Publication};

use super::{Broker, BrokerError, ChangeSender, Event, UserOrder, hand_over};
use crate::hub::Hub;

pub struct MemoryBroker {
    hub: Arc<Hub>,
    changes: ChangeSender,
}

impl MemoryBroker {
    pub fn new(hub: Arc<Hub>, changes: ChangeSender) -> Self {
        Self { hub, changes }
    }
}

#[async_trait]
impl Broker for MemoryBroker {
    async fn publish(&self, publication: &Publication) -> Result<(), BrokerError> {
        self.hub.deliver(publication.clone());
        Ok(())
    }

    async fn publish_event(&self, event: &Event) -> Result<(), BrokerError> {
        self.hub.deliver_event(event);
        Ok(())
    }

    async fn publish_change(&self, change: &UserOrder) -> Result<(), BrokerError> {
        hand_over(&self.changes, change.clone());
        Ok(())
    }

    async fn subscribe(&self, _channel: &ChannelName) -> Result<(), BrokerError> {
        Ok(())
    }

    async fn unsubscribe(&self, _channel: &ChannelName) -> Result<(), BrokerError> {
        Ok(())
    }

    fn is_healthy(&self) -> bool {
        true
    }
}
