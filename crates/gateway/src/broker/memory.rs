//! In-process broker: a publication goes to this node's hub, a subscription change to the
//! node.
//!
//! Like the NATS broker's reader per subscribed channel, each channel with local
//! subscribers has a fan-out task fed in publish order: a `Publish` call answers once its
//! publication is queued, not after the fan-out (writing to thousands of sockets), so a
//! publisher that waits for each answer is not held by every socket write, and a channel's
//! publications and presence events still reach its subscribers in the order they were
//! published. The queue is bounded: when a channel's fan-out falls that far behind,
//! publishers wait for room.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use herald_protocol::{ChannelName, Publication};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::gathered::Gathered;
use super::{Broker, BrokerError, ChangeSender, Event, UserOrder, hand_over};
use crate::hub::Hub;
use crate::pace::Coalesce;

/// Publications and events a channel's fan-out task may have waiting.
const CHANNEL_QUEUE: usize = 256;

enum Delivery {
    Publication(Publication),
    Event(Event),
}

struct ChannelFanOut {
    queue: mpsc::Sender<Delivery>,
    task: JoinHandle<()>,
}

pub struct MemoryBroker {
    hub: Arc<Hub>,
    changes: ChangeSender,
    coalesce: Duration,
    channels: Mutex<HashMap<ChannelName, ChannelFanOut>>,
}

impl MemoryBroker {
    pub fn new(hub: Arc<Hub>, changes: ChangeSender, coalesce: Duration) -> Self {
        Self {
            hub,
            changes,
            coalesce,
            channels: Mutex::new(HashMap::new()),
        }
    }

    fn channels(&self) -> MutexGuard<'_, HashMap<ChannelName, ChannelFanOut>> {
        // Nothing panics while holding this lock; a poisoned map is still a valid map.
        self.channels
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues a delivery for the channel's fan-out task; without local subscribers there is
    /// no task, and nobody to deliver to.
    async fn hand_to_fan_out(&self, channel: &ChannelName, delivery: Delivery) {
        let queue = self
            .channels()
            .get(channel)
            .map(|fan_out| fan_out.queue.clone());
        if let Some(queue) = queue {
            // Fails only when the last subscriber left meanwhile and the task was stopped.
            let _ = queue.send(delivery).await;
        }
    }
}

impl Drop for MemoryBroker {
    fn drop(&mut self) {
        for fan_out in self.channels().values() {
            fan_out.task.abort();
        }
    }
}

/// Hands one channel's queued publications and events to the hub, in order; publications
/// that arrive together, or within `coalesce` ([`Coalesce`]), are fanned out together.
async fn fan_out(
    hub: Arc<Hub>,
    channel: ChannelName,
    mut queue: mpsc::Receiver<Delivery>,
    coalesce: Duration,
) {
    let mut coalesce = Coalesce::new(coalesce);
    let mut gathered = Gathered::new(hub.clone(), "channel fan-out");
    while let Some(mut delivery) = queue.recv().await {
        let now = Instant::now();
        let start = coalesce.start_at(now, |pause| hub.busy(&channel, now, pause));
        if start > now {
            tokio::time::sleep_until(start).await;
        }
        loop {
            match delivery {
                Delivery::Publication(publication) => gathered.publication(publication),
                Delivery::Event(event) => gathered.event(&event),
            }
            match queue.try_recv() {
                Ok(next) => delivery = next,
                Err(_) => break,
            }
        }
        gathered.flush();
    }
}

#[async_trait]
impl Broker for MemoryBroker {
    async fn publish(&self, publication: &Publication) -> Result<(), BrokerError> {
        let delivery = Delivery::Publication(publication.clone());
        self.hand_to_fan_out(&publication.channel, delivery).await;
        Ok(())
    }

    async fn publish_event(&self, event: &Event) -> Result<(), BrokerError> {
        self.hand_to_fan_out(&event.channel, Delivery::Event(event.clone()))
            .await;
        Ok(())
    }

    async fn publish_change(&self, change: &UserOrder) -> Result<(), BrokerError> {
        hand_over(&self.changes, change.clone());
        Ok(())
    }

    async fn subscribe(&self, channel: &ChannelName) -> Result<(), BrokerError> {
        let (queue, receiver) = mpsc::channel(CHANNEL_QUEUE);
        let task = tokio::spawn(fan_out(
            self.hub.clone(),
            channel.clone(),
            receiver,
            self.coalesce,
        ));
        if let Some(previous) = self
            .channels()
            .insert(channel.clone(), ChannelFanOut { queue, task })
        {
            previous.task.abort();
        }
        Ok(())
    }

    async fn unsubscribe(&self, channel: &ChannelName) -> Result<(), BrokerError> {
        if let Some(fan_out) = self.channels().remove(channel) {
            fan_out.task.abort();
        }
        Ok(())
    }

    fn is_healthy(&self) -> bool {
        true
    }
}
