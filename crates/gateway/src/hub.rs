//! Local fan-out: channel → this node's subscribers.
//!
//! Each publication is encoded once and the bytes are shared by every subscriber; pushing
//! to a subscriber is a non-blocking queue push (see [`Connection::send`]), done while
//! holding only the channel's map shard, never across an `.await`.
//!
//! Ordering: per channel with history the hub keeps the last offset it delivered. A
//! duplicate or older offset is dropped; a gap is held for a short wait and then filled
//! from history before anything past it is delivered. If history cannot fill it, the
//! channel's subscribers are told to resubscribe (they recover, or learn they cannot).
//!
//! Joining without loss: a new subscriber starts *pending*: publications that arrive while
//! its subscribe reads state are buffered for it, and [`Hub::activate`] queues the
//! subscribe reply followed by whatever is newer than the position the reply carried.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use herald_protocol::reply::{encode_publication, encode_unsubscribe};
use herald_protocol::{ChannelName, CloseCode, Publication};
use tokio::sync::mpsc;

use crate::broker::Event;
use crate::connections::Connection;
use crate::metrics;
use crate::state::{Position, State};

/// Server-side unsubscribe codes (in the `unsubscribe` push).
pub mod unsubscribe_code {
    /// The server removed the subscription; do not resubscribe.
    pub const SERVER: u32 = 2000;
    /// Resubscribe now, recovering from the last position seen.
    pub const RESUBSCRIBE: u32 = 2500;
}

/// Channels whose positions one periodic check reads in one round trip.
const POSITION_CHECK_BATCH: usize = 1000;

/// Publications buffered for a pending subscriber before it is closed as a slow consumer.
const MAX_PENDING: usize = 10_000;

struct Buffered {
    offset: u64,
    epoch: Arc<str>,
    bytes: Bytes,
}

struct Subscriber {
    connection: Arc<Connection>,
    /// The last offset this subscriber has (through its subscribe reply or a push).
    offset: u64,
    epoch: Arc<str>,
    /// `Some` until the subscribe reply is queued.
    pending: Option<Vec<Buffered>>,
}

#[derive(Default)]
struct ChannelEntry {
    subscribers: Vec<Subscriber>,
    /// Last offset delivered on this node, and its epoch.
    delivered: Option<(Arc<str>, u64)>,
    /// Publications past a gap, waiting for it to be filled.
    held: BTreeMap<u64, Publication>,
    /// The highest offset the periodic position check found in state: publications up to
    /// it exist even if none past them has arrived to reveal the gap.
    known_top: u64,
    gap_fill_running: bool,
}

impl ChannelEntry {
    /// Drops what only meant something in the current epoch: publications held past a
    /// gap, and the highest offset the position check saw.
    fn forget_epoch(&mut self) {
        self.held.clear();
        self.known_top = 0;
    }
}

pub struct Hub {
    channels: DashMap<ChannelName, ChannelEntry>,
    state: Arc<dyn State>,
    gap_wait: Duration,
    /// Channels left without local subscribers by a server-side unsubscribe, so the node
    /// can drop its broker interest.
    idle: mpsc::UnboundedSender<ChannelName>,
}

impl Hub {
    pub fn new(
        state: Arc<dyn State>,
        gap_wait: Duration,
    ) -> (Arc<Hub>, mpsc::UnboundedReceiver<ChannelName>) {
        let (idle, idle_rx) = mpsc::unbounded_channel();
        (
            Arc::new(Hub {
                channels: DashMap::new(),
                state,
                gap_wait,
                idle,
            }),
            idle_rx,
        )
    }

    /// Adds a pending subscriber. Returns true if it is the channel's first on this node.
    pub fn add(&self, channel: &ChannelName, connection: Arc<Connection>) -> bool {
        let mut entry = self.channels.entry(channel.clone()).or_default();
        let first = entry.subscribers.is_empty();
        entry.subscribers.push(Subscriber {
            connection,
            offset: 0,
            epoch: Arc::from(""),
            pending: Some(Vec::new()),
        });
        first
    }

    /// Queues the subscribe `reply` to a pending subscriber, then what arrived while it was
    /// pending and is newer than `position`, and makes it live.
    pub fn activate(
        &self,
        channel: &ChannelName,
        connection: &Connection,
        reply: Bytes,
        position: &Position,
    ) {
        let Some(mut entry) = self.channels.get_mut(channel) else {
            return;
        };
        // The subscriber's position is the node's baseline when it has none (or an older
        // epoch's): a publication lost right after it is then a gap, not a silent skip.
        if !position.epoch.is_empty()
            && entry
                .delivered
                .as_ref()
                .is_none_or(|(epoch, _)| **epoch != *position.epoch)
        {
            entry.forget_epoch();
            entry.delivered = Some((Arc::from(position.epoch.as_str()), position.offset));
        }
        let Some(subscriber) = entry
            .subscribers
            .iter_mut()
            .find(|s| s.connection.id == connection.id)
        else {
            return;
        };
        subscriber.offset = position.offset;
        subscriber.epoch = Arc::from(position.epoch.as_str());
        connection.send(reply);
        let mut resubscribe = false;
        for buffered in subscriber.pending.take().unwrap_or_default() {
            if buffered.offset == 0 {
                connection.send(buffered.bytes);
            } else if buffered.epoch != subscriber.epoch {
                resubscribe = true;
            } else if buffered.offset > subscriber.offset {
                subscriber.offset = buffered.offset;
                connection.send(buffered.bytes);
            }
        }
        if resubscribe {
            let id = connection.id.clone();
            self.evict(channel, &mut entry, |s| s.connection.id == id);
        }
    }

    /// Removes a subscriber. Returns true if the channel has no local subscribers left.
    pub fn remove(&self, channel: &ChannelName, connection_id: &str) -> bool {
        let Some(mut entry) = self.channels.get_mut(channel) else {
            return false;
        };
        let before = entry.subscribers.len();
        entry
            .subscribers
            .retain(|s| &*s.connection.id != connection_id);
        if entry.subscribers.len() == before {
            return false;
        }
        if !entry.subscribers.is_empty() {
            return false;
        }
        drop(entry);
        self.channels
            .remove_if(channel, |_, entry| entry.subscribers.is_empty())
            .is_some()
    }

    /// Local subscribers of a channel.
    pub fn subscriber_count(&self, channel: &ChannelName) -> usize {
        self.channels
            .get(channel)
            .map_or(0, |entry| entry.subscribers.len())
    }

    /// Delivers a publication from the broker to this node's subscribers, in offset order.
    pub fn deliver(self: &Arc<Self>, publication: Publication) {
        let Some(mut entry) = self.channels.get_mut(&publication.channel) else {
            return;
        };
        if publication.offset == 0 {
            self.fan_out(&mut entry, &publication);
            return;
        }
        let next = match &entry.delivered {
            Some((epoch, last)) if **epoch == *publication.epoch => last + 1,
            // First publication seen, or history restarted with a new epoch.
            _ => publication.offset,
        };
        if publication.offset < next {
            metrics::counter!(metrics::DUPLICATES_DROPPED).increment(1);
            return;
        }
        if publication.offset > next {
            entry.held.insert(publication.offset, publication);
            if !entry.gap_fill_running {
                entry.gap_fill_running = true;
                let channel = entry.key().clone();
                drop(entry);
                tokio::spawn(self.clone().fill_gap(channel));
            }
            return;
        }
        if entry
            .delivered
            .as_ref()
            .is_some_and(|(epoch, _)| *epoch != publication.epoch)
        {
            entry.forget_epoch();
        }
        self.deliver_in_order(&mut entry, publication);
    }

    /// Delivers `publication` (the next offset) and then every held one that follows it.
    fn deliver_in_order(&self, entry: &mut ChannelEntry, publication: Publication) {
        let mut next = Some(publication);
        while let Some(publication) = next {
            entry.delivered = Some((publication.epoch.clone(), publication.offset));
            self.fan_out(entry, &publication);
            next = entry.held.remove(&(publication.offset + 1));
        }
        // Anything still held at or below the delivered offset is a duplicate.
        if let Some((_, last)) = entry.delivered {
            let stale: Vec<u64> = entry
                .held
                .range(..=last)
                .map(|(offset, _)| *offset)
                .collect();
            for offset in stale {
                entry.held.remove(&offset);
                metrics::counter!(metrics::DUPLICATES_DROPPED).increment(1);
            }
        }
    }

    /// Compares every local channel's delivered position with the state's, and fills from
    /// history what this node has not delivered: a lost *last* publication leaves no gap
    /// for [`Hub::deliver`] to notice. A channel whose epoch changed in state (history
    /// lost) makes its subscribers resubscribe, so they learn they cannot recover.
    pub async fn check_positions(self: &Arc<Self>) {
        let local: Vec<(ChannelName, Arc<str>, u64)> = self
            .channels
            .iter()
            .filter_map(|entry| {
                let (epoch, offset) = entry.delivered.clone()?;
                Some((entry.key().clone(), epoch, offset))
            })
            .collect();
        // In batches, so one read stays well inside the state's command timeout.
        for batch in local.chunks(POSITION_CHECK_BATCH) {
            let channels: Vec<ChannelName> = batch.iter().map(|(c, _, _)| c.clone()).collect();
            let positions = match self.state.positions(&channels).await {
                Ok(positions) => positions,
                Err(error) => {
                    tracing::debug!(%error, "position check skipped");
                    return;
                }
            };
            for ((channel, epoch, _), position) in batch.iter().zip(positions) {
                // No state: never published, or history expired; the next publication's
                // new epoch tells subscribers.
                if let Some(position) = position {
                    self.catch_up(channel, epoch, &position);
                }
            }
        }
    }

    /// Acts on one channel's position in state: fills what this node has not delivered,
    /// or, when the epoch changed (history lost), makes its subscribers resubscribe.
    fn catch_up(self: &Arc<Self>, channel: &ChannelName, epoch: &Arc<str>, position: &Position) {
        let Some(mut entry) = self.channels.get_mut(channel) else {
            return;
        };
        if entry.delivered.as_ref().map(|(e, _)| e) != Some(epoch) {
            return;
        }
        if *position.epoch != **epoch {
            metrics::counter!(metrics::POSITION_CHECK_CATCHUPS).increment(1);
            tracing::info!(%channel, "history epoch changed; subscribers resubscribe");
            // Evicting everyone also forgets the channel's delivered position.
            self.evict(channel, &mut entry, |_| true);
            return;
        }
        let delivered = entry.delivered.as_ref().map_or(0, |(_, offset)| *offset);
        if position.offset > delivered && position.offset > entry.known_top {
            metrics::counter!(metrics::POSITION_CHECK_CATCHUPS).increment(1);
            entry.known_top = position.offset;
            if !entry.gap_fill_running {
                entry.gap_fill_running = true;
                drop(entry);
                tokio::spawn(self.clone().fill_gap(channel.clone()));
            }
        }
    }

    /// Waits for a missing offset, then fills the gap from history; if history cannot
    /// fill it, the channel's subscribers resubscribe (recovering from their positions).
    async fn fill_gap(self: Arc<Self>, channel: ChannelName) {
        loop {
            tokio::time::sleep(self.gap_wait).await;
            let (epoch, last, target) = {
                let Some(mut entry) = self.channels.get_mut(&channel) else {
                    return;
                };
                let target = match entry.held.first_key_value() {
                    Some((&first_held, _)) => first_held - 1,
                    None => entry.known_top,
                };
                match entry.delivered.clone() {
                    Some((epoch, last)) if target > last => (epoch, last, target),
                    _ => {
                        entry.gap_fill_running = false;
                        return;
                    }
                }
            };
            let missing = (target - last) as usize;
            let filled = self.state.history(&channel, last, missing).await;
            let Some(mut entry) = self.channels.get_mut(&channel) else {
                return;
            };
            let delivered = entry.delivered.as_ref().map_or(0, |(_, offset)| *offset);
            match filled {
                // Someone else delivered past the gap meanwhile (the missing offset arrived).
                _ if delivered != last => {}
                Ok(slice)
                    if slice.position.epoch == *epoch
                        && slice.publications.len() == missing
                        && slice
                            .publications
                            .first()
                            .is_some_and(|p| p.offset == last + 1) =>
                {
                    metrics::counter!(metrics::GAP_FILLS, "result" => "filled").increment(1);
                    for publication in slice.publications {
                        let delivered = entry.delivered.as_ref().map_or(0, |(_, offset)| *offset);
                        if publication.offset == delivered + 1 {
                            self.deliver_in_order(&mut entry, publication);
                        }
                    }
                }
                _ => {
                    metrics::counter!(metrics::GAP_FILLS, "result" => "lost").increment(1);
                    tracing::warn!(%channel, from = last + 1, to = target, "gap not fillable from history");
                    // Evicting everyone also forgets held publications and the position.
                    self.evict(&channel, &mut entry, |_| true);
                }
            }
            let delivered = entry.delivered.as_ref().map_or(0, |(_, offset)| *offset);
            if entry.held.is_empty() && entry.known_top <= delivered {
                entry.gap_fill_running = false;
                return;
            }
        }
    }

    /// Forgets a channel that a server-side unsubscribe left without subscribers. Returns
    /// true if it was removed (and the node should drop its broker interest).
    pub fn remove_if_idle(&self, channel: &ChannelName) -> bool {
        self.channels
            .remove_if(channel, |_, entry| entry.subscribers.is_empty())
            .is_some()
    }

    /// Delivers a presence event to the channel's live subscribers (those still joining
    /// miss it: events are at-most-once, and their subscribe reply is fresher).
    pub fn deliver_event(&self, event: &Event) {
        let Some(entry) = self.channels.get(&event.channel) else {
            return;
        };
        let mut delivered = 0u64;
        for subscriber in &entry.subscribers {
            let connection = &subscriber.connection;
            if subscriber.pending.is_some()
                || event
                    .exclude
                    .as_ref()
                    .is_some_and(|exclude| exclude.matches(&connection.claims.sub, &connection.id))
            {
                continue;
            }
            if subscriber.connection.send(event.push.clone()) {
                delivered += 1;
            }
        }
        metrics::counter!(metrics::DELIVERIES).increment(delivered);
    }

    /// Queues one publication to every subscriber of the entry, encoded once.
    fn fan_out(&self, entry: &mut ChannelEntry, publication: &Publication) {
        let bytes = encode_publication(publication);
        let mut delivered = 0u64;
        let mut stale_epoch = false;
        for subscriber in &mut entry.subscribers {
            if let Some(pending) = &mut subscriber.pending {
                if pending.len() >= MAX_PENDING {
                    subscriber.connection.close(CloseCode::SlowConsumer);
                    continue;
                }
                pending.push(Buffered {
                    offset: publication.offset,
                    epoch: publication.epoch.clone(),
                    bytes: bytes.clone(),
                });
                continue;
            }
            if publication.offset != 0 {
                if subscriber.epoch != publication.epoch {
                    stale_epoch = true;
                    continue;
                }
                if publication.offset <= subscriber.offset {
                    continue;
                }
                subscriber.offset = publication.offset;
            }
            if subscriber.connection.send(bytes.clone()) {
                delivered += 1;
            }
        }
        metrics::counter!(metrics::DELIVERIES).increment(delivered);
        if stale_epoch {
            let epoch = publication.epoch.clone();
            let channel = publication.channel.clone();
            self.evict(&channel, entry, |s| s.pending.is_none() && s.epoch != epoch);
        }
    }

    /// Server-side unsubscribe of the matching subscribers, telling them to resubscribe.
    fn evict(
        &self,
        channel: &ChannelName,
        entry: &mut ChannelEntry,
        matches: impl Fn(&Subscriber) -> bool,
    ) {
        let push = encode_unsubscribe(
            channel.as_str(),
            unsubscribe_code::RESUBSCRIBE,
            "resubscribe",
        );
        entry.subscribers.retain(|subscriber| {
            if !matches(subscriber) {
                return true;
            }
            if subscriber.connection.remove_subscription(channel) {
                metrics::gauge!(metrics::SUBSCRIPTIONS).decrement(1.0);
            }
            subscriber.connection.send(push.clone());
            false
        });
        if entry.subscribers.is_empty() {
            entry.forget_epoch();
            entry.delivered = None;
            let _ = self.idle.send(channel.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use herald_protocol::reply::ServerMessage;
    use serde_json::value::RawValue;

    use super::*;
    use crate::auth::Claims;
    use crate::connections::{Connections, Heartbeat, Outbound, Outbox, Registration};
    use crate::state::{Append, Appended, HistoryPolicy, MemoryState};

    const CHANNEL: &str = "org:acme:ch:general";

    struct Fixture {
        hub: Arc<Hub>,
        state: MemoryState,
        connections: Arc<Connections>,
    }

    struct Subscriber {
        registration: Registration,
    }

    impl Subscriber {
        /// Everything queued so far, decoded.
        fn drain(&mut self) -> Vec<ServerMessage> {
            let mut messages = Vec::new();
            for item in self.registration.connection.outbox.take_now() {
                if let Outbound::Message(bytes) = item {
                    messages.push(serde_json::from_slice(&bytes).expect("valid JSON"));
                }
            }
            messages
        }

        fn offsets(&mut self) -> Vec<u64> {
            self.drain()
                .into_iter()
                .filter_map(|m| m.push?.publication.map(|p| p.offset))
                .collect()
        }
    }

    fn fixture() -> Fixture {
        let state = MemoryState::new();
        let (hub, _idle) = Hub::new(Arc::new(state.clone()), Duration::from_millis(100));
        let heartbeat = Heartbeat {
            interval: Duration::from_secs(25),
            timeout: Duration::from_secs(20),
        };
        Fixture {
            hub,
            state,
            connections: Arc::new(Connections::new(0, heartbeat)),
        }
    }

    impl Fixture {
        fn subscriber(&self, id: &str, position: u64, epoch: &str) -> Subscriber {
            let outbox = Arc::new(Outbox::new(1 << 20));
            let claims = Claims {
                sub: Arc::from(id),
                exp: i64::MAX,
                orgs: vec![],
                channels: vec![],
                info: None,
            };
            let registration = self
                .connections
                .register(Arc::from(id), Arc::new(claims), outbox)
                .unwrap();
            let channel = channel();
            registration.connection.add_subscription(&channel);
            self.hub.add(&channel, registration.connection.clone());
            let position = Position {
                offset: position,
                epoch: epoch.into(),
            };
            self.hub.activate(
                &channel,
                &registration.connection,
                Bytes::from_static(b"{\"id\":1,\"result\":{}}"),
                &position,
            );
            Subscriber { registration }
        }

        /// Appends to history and returns the stored publication (not delivered).
        async fn append(&self) -> Publication {
            let append = Append {
                publication: publication(0, ""),
                history: Some(HistoryPolicy {
                    size: 100,
                    ttl: Duration::from_secs(60),
                }),
                idempotency_key: None,
            };
            match self.state.append(append).await.unwrap() {
                Appended::New(publication) => publication,
                Appended::Duplicate(_) => unreachable!(),
            }
        }
    }

    fn channel() -> ChannelName {
        ChannelName::parse(CHANNEL).unwrap()
    }

    fn publication(offset: u64, epoch: &str) -> Publication {
        Publication {
            channel: channel(),
            event: Arc::from("e"),
            data: Arc::from(RawValue::from_string("{}".into()).unwrap()),
            offset,
            epoch: Arc::from(epoch),
            ts: 0,
            from: None,
        }
    }

    #[tokio::test]
    async fn drops_duplicates_and_reorders_what_arrives_early() {
        let fixture = fixture();
        let mut subscriber = fixture.subscriber("a", 0, "e1");
        subscriber.drain();
        for offset in [1, 1, 3, 2, 2, 4] {
            fixture.hub.deliver(publication(offset, "e1"));
        }
        assert_eq!(subscriber.offsets(), vec![1, 2, 3, 4]);
    }

    #[tokio::test(start_paused = true)]
    async fn fills_a_gap_from_history_after_the_wait() {
        let fixture = fixture();
        let first = fixture.append().await;
        let epoch = first.epoch.to_string();
        let mut subscriber = fixture.subscriber("a", 0, &epoch);
        subscriber.drain();
        let _lost = fixture.append().await;
        let third = fixture.append().await;
        fixture.hub.deliver(first);
        fixture.hub.deliver(third);
        assert_eq!(subscriber.offsets(), vec![1], "3 waits for 2");
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(subscriber.offsets(), vec![2, 3]);
    }

    #[tokio::test(start_paused = true)]
    async fn the_position_check_fills_a_lost_last_publication() {
        let fixture = fixture();
        let first = fixture.append().await;
        let epoch = first.epoch.to_string();
        let mut subscriber = fixture.subscriber("a", 0, &epoch);
        subscriber.drain();
        fixture.hub.deliver(first);
        let _lost = fixture.append().await;
        let _also_lost = fixture.append().await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(subscriber.offsets(), vec![1], "nothing reveals the loss");
        fixture.hub.check_positions().await;
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(subscriber.offsets(), vec![2, 3]);
        fixture.hub.check_positions().await;
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(subscriber.offsets().is_empty(), "filled once");
    }

    #[tokio::test]
    async fn the_position_check_sends_subscribers_of_a_lost_history_to_resubscribe() {
        let fixture = fixture();
        let first = fixture.append().await;
        let mut subscriber = fixture.subscriber("a", 0, "an-older-epoch");
        subscriber.drain();
        assert!(fixture.state.positions(&[channel()]).await.unwrap()[0].is_some());
        fixture.hub.check_positions().await;
        let messages = subscriber.drain();
        let unsubscribe = messages
            .iter()
            .find_map(|m| m.push.as_ref()?.unsubscribe.clone())
            .expect("unsubscribe push");
        assert_eq!(unsubscribe.code, unsubscribe_code::RESUBSCRIBE);
        assert_ne!(&*first.epoch, "an-older-epoch");
    }

    #[tokio::test(start_paused = true)]
    async fn a_publication_lost_right_after_subscribing_is_a_gap() {
        let fixture = fixture();
        let first = fixture.append().await;
        let epoch = first.epoch.to_string();
        let mut subscriber = fixture.subscriber("a", 1, &epoch);
        subscriber.drain();
        let _lost = fixture.append().await;
        let third = fixture.append().await;
        fixture.hub.deliver(third);
        assert!(subscriber.offsets().is_empty(), "3 waits for 2");
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(subscriber.offsets(), vec![2, 3]);
    }

    #[tokio::test(start_paused = true)]
    async fn an_unfillable_gap_makes_subscribers_resubscribe() {
        let fixture = fixture();
        let mut subscriber = fixture.subscriber("a", 0, "e1");
        subscriber.drain();
        fixture.hub.deliver(publication(1, "e1"));
        fixture.hub.deliver(publication(5, "e1"));
        tokio::time::sleep(Duration::from_millis(150)).await;
        let messages = subscriber.drain();
        let unsubscribe = messages
            .iter()
            .find_map(|m| m.push.as_ref()?.unsubscribe.clone())
            .expect("unsubscribe push");
        assert_eq!(unsubscribe.code, unsubscribe_code::RESUBSCRIBE);
        assert!(!subscriber.registration.connection.is_subscribed(&channel()));
        assert_eq!(fixture.hub.subscriber_count(&channel()), 0);
    }

    #[tokio::test]
    async fn a_pending_subscriber_gets_its_reply_first_then_only_newer_publications() {
        let fixture = fixture();
        let mut live = fixture.subscriber("live", 0, "e1");
        live.drain();
        let outbox = Arc::new(Outbox::new(1 << 20));
        let claims = Claims {
            sub: Arc::from("late"),
            exp: i64::MAX,
            orgs: vec![],
            channels: vec![],
            info: None,
        };
        let late = fixture
            .connections
            .register(Arc::from("late"), Arc::new(claims), outbox)
            .unwrap();
        fixture.hub.add(&channel(), late.connection.clone());
        for offset in 1..=3 {
            fixture.hub.deliver(publication(offset, "e1"));
        }
        assert!(
            late.connection.outbox.take_now().is_empty(),
            "nothing before the subscribe reply"
        );
        let reply = Bytes::from_static(b"{\"id\":7,\"result\":{}}");
        fixture.hub.activate(
            &channel(),
            &late.connection,
            reply.clone(),
            &Position {
                offset: 2,
                epoch: "e1".into(),
            },
        );
        fixture.hub.deliver(publication(4, "e1"));
        let mut late = Subscriber { registration: late };
        let messages = late.drain();
        assert_eq!(messages[0].id, Some(7));
        let offsets: Vec<u64> = messages[1..]
            .iter()
            .filter_map(|m| m.push.as_ref()?.publication.as_ref().map(|p| p.offset))
            .collect();
        assert_eq!(offsets, vec![3, 4]);
        assert_eq!(live.offsets(), vec![1, 2, 3, 4]);
    }

    #[tokio::test]
    async fn encodes_once_and_skips_closing_connections() {
        let fixture = fixture();
        let mut a = fixture.subscriber("a", 0, "");
        let mut b = fixture.subscriber("b", 0, "");
        a.drain();
        b.drain();
        b.registration.connection.close(CloseCode::SlowConsumer);
        fixture.hub.deliver(publication(0, ""));
        assert_eq!(a.offsets(), vec![0]);
        assert!(b.drain().is_empty());
    }
}
