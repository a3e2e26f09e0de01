//! Local fan-out: channel → this node's subscribers.
//!
//! Each publication is encoded once per codec in use (JSON, protobuf: see [`SharedPush`])
//! and the bytes are shared by every subscriber of that codec; pushing
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
//! Evictions skip pending subscribers: they have no reply yet, and `activate` checks what
//! was buffered against the position they read.
//!
//! Interest: a channel's entry owns whether this node holds the broker subscription for it
//! ([`Interest`]), changed under a per-channel lock. The entry stays in the map, empty,
//! until the node has released that subscription, so a subscribe and the last unsubscribe
//! that cross always meet at the same lock.
//!
//! Nothing received is trusted for arithmetic: offsets come from other nodes, and a
//! publication in another epoch than the one delivered is only acted on once the state
//! confirms the epoch changed.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use dashmap::DashMap;
use herald_protocol::reply::encode_unsubscribe;
use herald_protocol::{ChannelName, CloseCode, Codec, Publication};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::broker::Event;
use crate::connections::Connection;
use crate::metrics;
use crate::pace::Pace;
use crate::shared_push::SharedPush;
use crate::state::{Position, State, is_unpublished};

/// Server-side unsubscribe codes (in the `unsubscribe` push), kept in the protocol crate.
use herald_protocol::codes::unsubscribe_code;

/// Channels whose positions one periodic check reads in one round trip.
const POSITION_CHECK_BATCH: usize = 1000;

/// Shards of the channel map.
const CHANNEL_SHARDS: usize = 128;

/// Publications buffered for a pending subscriber before it is closed as a slow consumer.
const MAX_PENDING: usize = 10_000;

/// Publications held past a gap before the gap is given up and subscribers resubscribe.
const MAX_HELD: usize = 10_000;

/// How long a gap fill keeps retrying a state that errors or times out before it gives up
/// and sends the channel's subscribers to resubscribe.
const GAP_FILL_RETRY_WINDOW: Duration = Duration::from_secs(30);

/// Longest pause between gap fill retries.
const GAP_FILL_MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Sends one publication to one subscriber: the shared bytes (written straight to the
/// socket when `direct`), or, on a Socket.IO connection, its own event carrying the
/// connection's offset after `position`.
fn send_publication(
    connection: &Connection,
    channel: &ChannelName,
    push: &SharedPush,
    position: Option<(&Arc<str>, u64)>,
    direct: bool,
) -> bool {
    let codec = connection.codec;
    if let Some(own) = connection.own_publication(channel, position, || push.bytes(codec)) {
        return connection.send(own);
    }
    if direct {
        connection.outbox.send_shared(push.shared(codec))
    } else {
        connection.send(push.bytes(codec))
    }
}

/// What one publication did for one subscriber.
enum Offer {
    Sent,
    /// Buffered for a pending subscriber, already had, or the connection is closing.
    Skipped,
    /// The subscriber is in another epoch: it must resubscribe.
    StaleEpoch,
}

/// Offers one publication to one subscriber: buffered while it is pending, sent when it
/// is the subscriber's next.
fn offer(
    subscriber: &mut Subscriber,
    publication: &Publication,
    push: &SharedPush,
    direct: bool,
) -> Offer {
    if let Some(pending) = &mut subscriber.pending {
        if pending.len() >= MAX_PENDING {
            subscriber.connection.close(CloseCode::SlowConsumer);
            return Offer::Skipped;
        }
        pending.push(Buffered {
            offset: publication.offset,
            epoch: publication.epoch.clone(),
            push: push.clone(),
        });
        return Offer::Skipped;
    }
    if publication.offset != 0 {
        subscriber.adopt(publication.offset, &publication.epoch);
        // Usually the same allocation: no need to compare the strings.
        if !Arc::ptr_eq(&subscriber.epoch, &publication.epoch)
            && subscriber.epoch != publication.epoch
        {
            return Offer::StaleEpoch;
        }
        if publication.offset <= subscriber.offset {
            return Offer::Skipped;
        }
        subscriber.offset = publication.offset;
    }
    let position = (publication.offset != 0).then_some((&publication.epoch, publication.offset));
    let channel = &publication.channel;
    if send_publication(&subscriber.connection, channel, push, position, direct) {
        Offer::Sent
    } else {
        Offer::Skipped
    }
}

/// Whether a subscriber takes every one of publications that follow one another from
/// `first` on, as the same bytes as everyone else: live, in their epoch and before
/// them, and not on Socket.IO (whose events each carry the connection's own offset).
fn takes_all(subscriber: &Subscriber, first: &Publication) -> bool {
    subscriber.pending.is_none()
        && subscriber.connection.codec != Codec::SocketIo
        && (first.offset == 0
            || ((Arc::ptr_eq(&subscriber.epoch, &first.epoch) || subscriber.epoch == first.epoch)
                && subscriber.offset < first.offset))
}

/// Publications fanned out together: their frames back to back, per codec in use, made
/// once for every subscriber.
struct Together<'a> {
    pushes: &'a [SharedPush],
    encoded: [OnceLock<(Bytes, Vec<Bytes>)>; 2],
}

impl<'a> Together<'a> {
    fn new(pushes: &'a [SharedPush]) -> Self {
        Together {
            pushes,
            encoded: Default::default(),
        }
    }

    /// The frames back to back and the messages they frame, in `codec` (JSON or
    /// protobuf).
    fn encoded(&self, codec: Codec) -> (&Bytes, &[Bytes]) {
        let slot = usize::from(codec == Codec::Proto);
        let (frames, messages) = self.encoded[slot].get_or_init(|| {
            let mut frames = BytesMut::new();
            let messages = self
                .pushes
                .iter()
                .map(|push| {
                    let shared = push.shared(codec);
                    frames.extend_from_slice(shared.frame());
                    shared.message().clone()
                })
                .collect();
            (frames.freeze(), messages)
        });
        (frames, messages)
    }
}

/// Whether `publication` is the next the channel delivers, with nothing held past a gap:
/// the channel's next offset in its epoch, or one without an offset.
fn follows(entry: &ChannelEntry, publication: &Publication) -> bool {
    if publication.offset == 0 {
        return true;
    }
    match &entry.delivered {
        Some((epoch, last)) => {
            entry.held.is_empty()
                && publication.offset == last.saturating_add(1)
                && (Arc::ptr_eq(epoch, &publication.epoch) || *epoch == publication.epoch)
                && !is_unpublished(epoch)
        }
        None => false,
    }
}

/// The pause before gap fill retry `attempt` (0-based): doubling from `base`, capped.
fn backoff(base: Duration, attempt: u32) -> Duration {
    let factor = 1u32 << attempt.min(16);
    base.saturating_mul(factor).min(GAP_FILL_MAX_BACKOFF)
}

/// Whether this node holds the broker subscription of a channel. Owned by the channel's
/// entry; the lock serialises changes per channel and is held across the broker call, which
/// only ever waits on this channel.
#[derive(Default)]
pub struct Interest {
    held: tokio::sync::Mutex<bool>,
}

impl Interest {
    /// Locks the channel's interest: `true` while the broker subscription is held.
    pub async fn lock(&self) -> tokio::sync::MutexGuard<'_, bool> {
        self.held.lock().await
    }
}

struct Buffered {
    offset: u64,
    epoch: Arc<str>,
    push: SharedPush,
}

struct Subscriber {
    connection: Arc<Connection>,
    /// The last offset this subscriber has (through its subscribe reply or a push).
    offset: u64,
    epoch: Arc<str>,
    /// `Some` until the subscribe reply is queued.
    pending: Option<Vec<Buffered>>,
}

impl Subscriber {
    /// A subscriber that read the channel unpublished takes the epoch of its first
    /// publication, offset 1, as its own: nothing came before it.
    fn adopt(&mut self, offset: u64, epoch: &Arc<str>) {
        if offset == 1 && self.offset == 0 && is_unpublished(&self.epoch) {
            self.epoch = epoch.clone();
        }
    }
}

#[derive(Default)]
struct ChannelEntry {
    subscribers: Vec<Subscriber>,
    interest: Arc<Interest>,
    /// Last offset delivered on this node, and its epoch.
    delivered: Option<(Arc<str>, u64)>,
    /// Publications past a gap, waiting for it to be filled.
    held: BTreeMap<u64, Publication>,
    /// The highest offset the periodic position check found in state: publications up to
    /// it exist even if none past them has arrived to reveal the gap.
    known_top: u64,
    gap_fill_running: bool,
    /// A publication arrived in another epoch; the state is being asked which is current.
    epoch_check_running: bool,
    /// Whether the fan-out writes to sockets itself or queues for the writers.
    pace: Pace,
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
    /// releases their interest.
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
                // A direct fan-out holds its channel's shard while it writes: more shards
                // than DashMap's default, so fewer other channels wait for it.
                channels: DashMap::with_shard_amount(CHANNEL_SHARDS),
                state,
                gap_wait,
                idle,
            }),
            idle_rx,
        )
    }

    /// Adds a pending subscriber. Returns the channel's interest: the subscriber must make
    /// sure it is held (every subscriber, not only the first: the first one's attempt may
    /// fail after others joined).
    pub fn add(&self, channel: &ChannelName, connection: Arc<Connection>) -> Arc<Interest> {
        let mut entry = self.channels.entry(channel.clone()).or_default();
        entry.subscribers.push(Subscriber {
            connection,
            offset: 0,
            epoch: Arc::from(""),
            pending: Some(Vec::new()),
        });
        entry.interest.clone()
    }

    /// The interest of a channel this node has an entry for.
    pub fn interest(&self, channel: &ChannelName) -> Option<Arc<Interest>> {
        self.channels
            .get(channel)
            .map(|entry| entry.interest.clone())
    }

    /// Forgets a channel's entry if it has no subscribers and still owns `interest`. Call it
    /// holding that interest's lock, after releasing the broker subscription.
    pub fn forget_if_idle(&self, channel: &ChannelName, interest: &Arc<Interest>) {
        self.channels.remove_if(channel, |_, entry| {
            entry.subscribers.is_empty() && Arc::ptr_eq(&entry.interest, interest)
        });
    }

    /// Queues the subscribe `reply` to a pending subscriber, then what arrived while it was
    /// pending and is newer than `position`, and makes it live. False when the subscriber
    /// is gone (its connection closed meanwhile): nothing was queued.
    pub fn activate(
        &self,
        channel: &ChannelName,
        connection: &Connection,
        reply: Bytes,
        position: &Position,
    ) -> bool {
        let Some(mut entry) = self.channels.get_mut(channel) else {
            return false;
        };
        if !entry
            .subscribers
            .iter()
            .any(|s| s.connection.id == connection.id && s.pending.is_some())
        {
            return false;
        }
        // The subscriber's position is the node's baseline when it has none (or an older
        // epoch's): a publication lost right after it is then a gap, not a silent skip.
        // An unpublished read only sets a missing baseline: a real epoch the node delivered
        // meanwhile is newer than the read (and buffered for the subscriber).
        let unpublished = is_unpublished(&position.epoch);
        if !position.epoch.is_empty()
            && entry
                .delivered
                .as_ref()
                .is_none_or(|(epoch, _)| !unpublished && **epoch != *position.epoch)
        {
            entry.forget_epoch();
            entry.delivered = Some((position.epoch.clone(), position.offset));
        }
        let Some(subscriber) = entry
            .subscribers
            .iter_mut()
            .find(|s| s.connection.id == connection.id)
        else {
            return false;
        };
        subscriber.offset = position.offset;
        subscriber.epoch = position.epoch.clone();
        if let Some(offset) = connection.answered(channel, &position.epoch, position.offset) {
            connection.send(offset);
        }
        connection.send(reply);
        let mut resubscribe = false;
        for buffered in subscriber.pending.take().unwrap_or_default() {
            subscriber.adopt(buffered.offset, &buffered.epoch);
            if buffered.offset == 0 {
                send_publication(connection, channel, &buffered.push, None, false);
            } else if buffered.epoch != subscriber.epoch
                || buffered.offset > subscriber.offset.saturating_add(1)
            {
                // Another epoch, or a gap between the position read and what the node
                // delivered meanwhile (the node had no baseline yet, or gave a gap up):
                // the subscriber recovers by resubscribing.
                resubscribe = true;
                break;
            } else if buffered.offset > subscriber.offset {
                subscriber.offset = buffered.offset;
                let position = Some((&buffered.epoch, buffered.offset));
                send_publication(connection, channel, &buffered.push, position, false);
            }
        }
        if resubscribe {
            let id = connection.id.clone();
            self.evict(channel, &mut entry, |s| s.connection.id == id);
        }
        true
    }

    /// Removes a subscriber. Returns true if the channel has no local subscribers left: the
    /// caller then releases the channel's interest (the entry stays until it does).
    pub fn remove(&self, channel: &ChannelName, connection_id: &str) -> bool {
        let Some(mut entry) = self.channels.get_mut(channel) else {
            return false;
        };
        let before = entry.subscribers.len();
        entry
            .subscribers
            .retain(|s| &*s.connection.id != connection_id);
        entry.subscribers.len() != before && entry.subscribers.is_empty()
    }

    /// Whether a channel's publications, `pause` apart, come faster than a direct fan-out of
    /// it takes (see [`crate::pace::Coalesce`]).
    pub fn busy(&self, channel: &ChannelName, now: Instant, pause: Duration) -> bool {
        self.channels
            .get(channel)
            .is_some_and(|entry| entry.pace.busy(now, pause))
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
            Some((epoch, last)) if **epoch == *publication.epoch => last.saturating_add(1),
            // The channel had no history state: the first epoch that arrives starts at 1,
            // and whatever came before this publication is a gap to fill from it.
            Some((epoch, _)) if is_unpublished(epoch) => {
                entry.forget_epoch();
                entry.delivered = Some((publication.epoch.clone(), 0));
                1
            }
            // Another epoch: history restarted, or the publication is stale or forged.
            // Only the state can tell; the position check acts on what it says.
            Some(_) => {
                metrics::counter!(metrics::DUPLICATES_DROPPED).increment(1);
                if !entry.epoch_check_running {
                    entry.epoch_check_running = true;
                    let channel = entry.key().clone();
                    drop(entry);
                    tokio::spawn(self.clone().check_epoch(channel));
                }
                return;
            }
            // The first publication seen.
            None => publication.offset,
        };
        if publication.offset < next {
            metrics::counter!(metrics::DUPLICATES_DROPPED).increment(1);
            return;
        }
        if publication.offset > next {
            if entry.held.len() >= MAX_HELD {
                tracing::warn!(channel = %entry.key(), "too many publications held past a gap");
                let channel = entry.key().clone();
                self.evict(&channel, &mut entry, |_| true);
                return;
            }
            entry.held.insert(publication.offset, publication);
            if !entry.gap_fill_running {
                entry.gap_fill_running = true;
                let channel = entry.key().clone();
                drop(entry);
                tokio::spawn(self.clone().fill_gap(channel));
            }
            return;
        }
        self.deliver_in_order(&mut entry, publication);
    }

    /// Delivers publications of one channel that arrived together, in the order given.
    /// Those that simply follow what the node delivered (or carry no offset) are fanned
    /// out together; from the first that does not (a gap, a duplicate, another epoch) on,
    /// each goes through [`Hub::deliver`].
    pub fn deliver_all(self: &Arc<Self>, mut publications: Vec<Publication>) {
        if publications.len() == 1 {
            if let Some(publication) = publications.pop() {
                self.deliver(publication);
            }
            return;
        }
        let mut publications = publications.into_iter().peekable();
        let mut together = Vec::new();
        if let Some(mut entry) = publications
            .peek()
            .and_then(|first| self.channels.get_mut(&first.channel))
        {
            while let Some(publication) = publications.next_if(|p| follows(&entry, p)) {
                if publication.offset != 0 {
                    entry.delivered = Some((publication.epoch.clone(), publication.offset));
                }
                together.push(publication);
            }
            match together.len() {
                0 => {}
                1 => self.fan_out(&mut entry, &together[0]),
                _ => self.fan_out_together(&mut entry, &together),
            }
        }
        for publication in publications {
            self.deliver(publication);
        }
    }

    /// Asks the state for a channel's position after a publication arrived in an epoch the
    /// node has not delivered: [`Hub::catch_up`] then resubscribes everyone if the epoch
    /// really changed, and otherwise nothing happens (the publication was stale or forged).
    async fn check_epoch(self: Arc<Self>, channel: ChannelName) {
        let position = self.state.positions(std::slice::from_ref(&channel)).await;
        let delivered = self.channels.get_mut(&channel).and_then(|mut entry| {
            entry.epoch_check_running = false;
            entry.delivered.as_ref().map(|(epoch, _)| epoch.clone())
        });
        match (position, delivered) {
            (Ok(positions), Some(epoch)) => {
                if let Some(Some(position)) = positions.into_iter().next() {
                    self.catch_up(&channel, &epoch, &position);
                }
            }
            (Err(error), _) => {
                tracing::debug!(%channel, %error, "epoch check failed; the position check retries")
            }
            _ => {}
        }
    }

    /// Delivers `publication` (the next offset) and then every held one that follows it.
    fn deliver_in_order(&self, entry: &mut ChannelEntry, publication: Publication) {
        let mut next = Some(publication);
        while let Some(publication) = next {
            entry.delivered = Some((publication.epoch.clone(), publication.offset));
            self.fan_out(entry, &publication);
            next = entry.held.remove(&publication.offset.saturating_add(1));
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
        if is_unpublished(epoch) {
            // The channel's first epoch began and its publications have not arrived (yet,
            // or lost): from offset 1, as `deliver` does.
            entry.forget_epoch();
            entry.delivered = Some((position.epoch.clone(), 0));
        } else if *position.epoch != **epoch {
            metrics::counter!(metrics::POSITION_CHECK_CATCHUPS).increment(1);
            tracing::info!(%channel, "history epoch changed; subscribers resubscribe");
            // Evicting everyone also forgets the channel's delivered position.
            self.evict(channel, &mut entry, |_| true);
            return;
        }
        let delivered = entry.delivered.as_ref().map_or(0, |(_, offset)| *offset);
        if position.offset < delivered {
            // The node delivered offsets the state never assigned (a forged or corrupt
            // message): its baseline is wrong, so its subscribers resubscribe from state.
            metrics::counter!(metrics::POSITION_CHECK_CATCHUPS).increment(1);
            tracing::warn!(%channel, delivered, state = position.offset, "delivered past the state's offset; subscribers resubscribe");
            self.evict(channel, &mut entry, |_| true);
            return;
        }
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
    /// A state that errors or times out is retried with backoff for
    /// [`GAP_FILL_RETRY_WINDOW`] before the gap is given up: slow is not lost.
    async fn fill_gap(self: Arc<Self>, channel: ChannelName) {
        let mut delay = self.gap_wait;
        let mut failing_since: Option<Instant> = None;
        let mut failures = 0u32;
        loop {
            tokio::time::sleep(delay).await;
            delay = self.gap_wait;
            let (epoch, last, target) = {
                let Some(mut entry) = self.channels.get_mut(&channel) else {
                    return;
                };
                let target = match entry.held.first_key_value() {
                    Some((&first_held, _)) => first_held.saturating_sub(1),
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
            // History never holds more than a namespace's size; a forged offset must not
            // turn into a huge read.
            let missing = usize::try_from(target - last).unwrap_or(usize::MAX);
            let filled = self
                .state
                .history(&channel, last, missing.min(MAX_HELD))
                .await;
            let Some(mut entry) = self.channels.get_mut(&channel) else {
                return;
            };
            let delivered = entry.delivered.as_ref().map_or(0, |(_, offset)| *offset);
            match filled {
                // Someone else delivered past the gap meanwhile (the missing offset arrived).
                _ if delivered != last => {}
                Err(error) => {
                    metrics::counter!(metrics::GAP_FILLS, "result" => "error").increment(1);
                    let since = *failing_since.get_or_insert_with(Instant::now);
                    if since.elapsed() < GAP_FILL_RETRY_WINDOW {
                        tracing::debug!(%channel, %error, "gap fill failed; retrying");
                        delay = backoff(self.gap_wait, failures);
                        failures += 1;
                        continue;
                    }
                    metrics::counter!(metrics::GAP_FILLS, "result" => "unavailable").increment(1);
                    tracing::warn!(%channel, %error, "state unavailable for the whole gap fill window; subscribers resubscribe");
                    self.evict(&channel, &mut entry, |_| true);
                }
                Ok(slice) if slice.position.epoch != epoch => {
                    metrics::counter!(metrics::GAP_FILLS, "result" => "lost").increment(1);
                    tracing::warn!(%channel, "history restarted during a gap; subscribers resubscribe");
                    self.evict(&channel, &mut entry, |_| true);
                }
                Ok(slice) => {
                    (failing_since, failures) = (None, 0);
                    let top = slice.position.offset;
                    if top < target {
                        // Held offsets the state never assigned: forged or corrupt messages.
                        // They are dropped; they must not cost anyone their subscription.
                        let bogus = entry.held.split_off(&top.saturating_add(1));
                        metrics::counter!(metrics::NATS_MESSAGES, "result" => "invalid")
                            .increment(bogus.len() as u64);
                        entry.known_top = entry.known_top.min(top);
                    }
                    for publication in slice.publications {
                        let delivered = entry.delivered.as_ref().map_or(0, |(_, offset)| *offset);
                        if publication.offset == delivered.saturating_add(1) {
                            self.deliver_in_order(&mut entry, publication);
                        }
                    }
                    let delivered = entry.delivered.as_ref().map_or(0, |(_, offset)| *offset);
                    if delivered < target.min(top) {
                        metrics::counter!(metrics::GAP_FILLS, "result" => "lost").increment(1);
                        tracing::warn!(%channel, from = delivered + 1, to = target, "gap not fillable from history");
                        // Evicting everyone also forgets held publications and the position.
                        self.evict(&channel, &mut entry, |_| true);
                    } else if delivered > last {
                        metrics::counter!(metrics::GAP_FILLS, "result" => "filled").increment(1);
                    }
                }
            }
            let delivered = entry.delivered.as_ref().map_or(0, |(_, offset)| *offset);
            if entry.held.is_empty() && entry.known_top <= delivered {
                entry.gap_fill_running = false;
                return;
            }
        }
    }

    /// Delivers a presence event to the channel's live subscribers (those still joining
    /// miss it: events are at-most-once, and their subscribe reply is fresher).
    pub fn deliver_event(&self, event: &Event) {
        let Some(entry) = self.channels.get(&event.channel) else {
            return;
        };
        let push = SharedPush::json(event.push.clone());
        let mut delivered = 0u64;
        for subscriber in &entry.subscribers {
            let connection = &subscriber.connection;
            if subscriber.pending.is_some()
                || event.exclude.as_ref().is_some_and(|exclude| {
                    exclude.matches(&connection.claims_now().sub, &connection.id)
                })
            {
                continue;
            }
            if connection.send(push.bytes(connection.codec)) {
                delivered += 1;
            }
        }
        metrics::counter!(metrics::DELIVERIES).increment(delivered);
    }

    /// Queues one publication to every subscriber of the entry, encoded once.
    fn fan_out(&self, entry: &mut ChannelEntry, publication: &Publication) {
        let push = SharedPush::publication(publication);
        let started = Instant::now();
        let direct = entry.pace.direct(started);
        let mut delivered = 0u64;
        let mut stale_epoch = false;
        for subscriber in &mut entry.subscribers {
            match offer(subscriber, publication, &push, direct) {
                Offer::Sent => delivered += 1,
                Offer::StaleEpoch => stale_epoch = true,
                Offer::Skipped => {}
            }
        }
        if direct {
            entry.pace.took(started, started.elapsed());
        }
        metrics::counter!(metrics::DELIVERIES).increment(delivered);
        if stale_epoch {
            self.evict_stale(entry, publication);
        }
    }

    /// Fans out publications that follow one another, all of one epoch, together: each
    /// subscriber that takes them all gets their frames in one write (or its queue), the
    /// others each publication on its own.
    fn fan_out_together(&self, entry: &mut ChannelEntry, publications: &[Publication]) {
        let pushes: Vec<SharedPush> = publications.iter().map(SharedPush::publication).collect();
        let together = Together::new(&pushes);
        let (first, last) = (&publications[0], &publications[publications.len() - 1]);
        // Recorded as the channel's latest fan-out, so the pace still sees how fast
        // publications come.
        entry.pace.direct(Instant::now());
        let mut delivered = 0u64;
        let mut stale = None;
        for subscriber in &mut entry.subscribers {
            if takes_all(subscriber, first) {
                let (frames, messages) = together.encoded(subscriber.connection.codec);
                if subscriber.connection.outbox.send_framed(frames, messages) {
                    delivered += messages.len() as u64;
                }
                subscriber.offset = last.offset;
                continue;
            }
            for (publication, push) in publications.iter().zip(&pushes) {
                match offer(subscriber, publication, push, false) {
                    Offer::Sent => delivered += 1,
                    Offer::StaleEpoch => stale = Some(publication),
                    Offer::Skipped => {}
                }
            }
        }
        metrics::counter!(metrics::DELIVERIES).increment(delivered);
        if let Some(publication) = stale {
            self.evict_stale(entry, publication);
        }
    }

    /// Sends the live subscribers of another epoch than `publication`'s to resubscribe.
    fn evict_stale(&self, entry: &mut ChannelEntry, publication: &Publication) {
        let epoch = publication.epoch.clone();
        let channel = publication.channel.clone();
        self.evict(&channel, entry, |s| s.pending.is_none() && s.epoch != epoch);
    }

    /// Server-side unsubscribe of the matching live subscribers, telling them to
    /// resubscribe. Their sessions are told too, so they leave the channel's presence.
    /// Pending subscribers stay: [`Hub::activate`] checks them against what they read.
    fn evict(
        &self,
        channel: &ChannelName,
        entry: &mut ChannelEntry,
        matches: impl Fn(&Subscriber) -> bool,
    ) {
        let push = SharedPush::json(encode_unsubscribe(
            channel.as_str(),
            unsubscribe_code::RESUBSCRIBE,
            "resubscribe",
        ));
        entry.subscribers.retain(|subscriber| {
            if subscriber.pending.is_some() || !matches(subscriber) {
                return true;
            }
            if subscriber.connection.remove_subscription(channel) {
                metrics::gauge!(metrics::SUBSCRIPTIONS).decrement(1.0);
            }
            let connection = &subscriber.connection;
            connection.send(push.bytes(connection.codec));
            connection.evicted(channel);
            false
        });
        if entry.subscribers.iter().all(|s| s.pending.is_some()) {
            entry.forget_epoch();
            entry.delivered = None;
        }
        if entry.subscribers.is_empty() {
            let _ = self.idle.send(channel.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use herald_protocol::Codec;
    use herald_protocol::reply::ServerMessage;
    use serde_json::value::RawValue;

    use super::*;
    use crate::auth::Claims;
    use crate::connections::{Connections, Ending, Heartbeat, Outbox, Registration};
    use crate::outbox::Outbound;
    use crate::state::{
        Append, Appended, HistoryPolicy, HistorySlice, MemoryState, Settlement, StateError,
    };

    /// Memory state whose history reads fail while `failing` is set: a Redis that times
    /// out or errors, for the gap filler's retries.
    #[derive(Clone)]
    struct FlakyState {
        memory: MemoryState,
        failing: Arc<std::sync::atomic::AtomicBool>,
    }

    #[async_trait::async_trait]
    impl State for FlakyState {
        async fn append(&self, append: Append<'_>) -> Result<Appended, StateError> {
            self.memory.append(append).await
        }
        async fn settle(
            &self,
            channel: &ChannelName,
            key: &str,
            settlement: Settlement,
        ) -> Result<(), StateError> {
            self.memory.settle(channel, key, settlement).await
        }
        async fn history(
            &self,
            channel: &ChannelName,
            since_offset: u64,
            limit: usize,
        ) -> Result<HistorySlice, StateError> {
            if self.failing.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(StateError::Unavailable("timed out".into()));
            }
            self.memory.history(channel, since_offset, limit).await
        }
        async fn position(&self, channel: &ChannelName) -> Result<Position, StateError> {
            self.memory.position(channel).await
        }
        async fn positions(
            &self,
            channels: &[ChannelName],
        ) -> Result<Vec<Option<Position>>, StateError> {
            self.memory.positions(channels).await
        }
        fn is_healthy(&self) -> bool {
            true
        }
    }

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
        fixture_with(|state| Arc::new(state))
    }

    fn fixture_with(wrap: impl FnOnce(MemoryState) -> Arc<dyn State>) -> Fixture {
        let state = MemoryState::new();
        let (hub, _idle) = Hub::new(wrap(state.clone()), Duration::from_millis(100));
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
        /// A connection whose subscribe is reading state: added to the hub, not active.
        fn pending(&self, id: &str) -> Registration {
            self.pending_in(id, Codec::Json)
        }

        /// [`Fixture::pending`] speaking `codec`.
        fn pending_in(&self, id: &str, codec: Codec) -> Registration {
            let outbox = Arc::new(Outbox::new(1 << 20, None));
            let claims = Claims {
                sub: Arc::from(id),
                exp: i64::MAX,
                orgs: vec![],
                channels: vec![],
                info: None,
            };
            let registration = self
                .connections
                .register(Arc::from(id), Arc::new(claims), outbox, codec)
                .unwrap();
            registration.connection.add_subscription(&channel());
            self.hub.add(&channel(), registration.connection.clone());
            registration
        }

        fn subscriber(&self, id: &str, position: u64, epoch: &str) -> Subscriber {
            self.subscriber_in(id, Codec::Json, position, epoch)
        }

        /// [`Fixture::subscriber`] speaking `codec`.
        fn subscriber_in(&self, id: &str, codec: Codec, position: u64, epoch: &str) -> Subscriber {
            let registration = self.pending_in(id, codec);
            let position = Position {
                offset: position,
                epoch: epoch.into(),
            };
            self.hub.activate(
                &channel(),
                &registration.connection,
                Bytes::from_static(b"{\"id\":1,\"result\":{}}"),
                &position,
            );
            Subscriber { registration }
        }

        /// A subscriber that got offset 1 and then 3: 2 is in history, never delivered.
        async fn gap(&self) -> Subscriber {
            let first = self.append().await;
            let epoch = first.epoch.to_string();
            let mut subscriber = self.subscriber("a", 0, &epoch);
            subscriber.drain();
            let _lost = self.append().await;
            let third = self.append().await;
            self.hub.deliver(first);
            self.hub.deliver(third);
            subscriber
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
    async fn a_publication_is_encoded_once_per_codec_in_use() {
        let fixture = fixture();
        let subscribers = [
            ("a", Codec::Json),
            ("b", Codec::Proto),
            ("c", Codec::Proto),
            ("d", Codec::Json),
        ]
        .map(|(id, codec)| fixture.subscriber_in(id, codec, 0, "e1"));
        let take = |subscriber: &Subscriber| -> Vec<Bytes> {
            let outbox = &subscriber.registration.connection.outbox;
            outbox
                .take_now()
                .into_iter()
                .filter_map(|item| match item {
                    Outbound::Message(bytes) => Some(bytes),
                    _ => None,
                })
                .collect()
        };
        for subscriber in &subscribers {
            take(subscriber);
        }
        fixture.hub.deliver(publication(1, "e1"));
        let pushes: Vec<Bytes> = subscribers
            .iter()
            .map(|subscriber| take(subscriber).remove(0))
            .collect();
        // The same bytes for every subscriber of a codec: encoded once each.
        assert_eq!(pushes[0].as_ptr(), pushes[3].as_ptr());
        assert_eq!(pushes[1].as_ptr(), pushes[2].as_ptr());
        let json: ServerMessage = serde_json::from_slice(&pushes[0]).unwrap();
        assert_eq!(json.push.unwrap().publication.unwrap().offset, 1);
        let binary = herald_protocol::binary::decode_frame(&pushes[1])
            .remove(0)
            .unwrap();
        assert_eq!(binary.push.unwrap().publication.unwrap().offset, 1);
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

    #[tokio::test]
    async fn publications_that_arrive_together_go_out_once_in_order_and_a_gap_still_waits() {
        let fixture = fixture();
        let mut caught_up = fixture.subscriber("a", 0, "e1");
        let mut proto = fixture.subscriber_in("b", Codec::Proto, 0, "e1");
        caught_up.drain();
        proto.drain();
        fixture.hub.deliver(publication(1, "e1"));
        // Joined after offset 2: it takes 3 and 4 of the batch, each on its own.
        let mut later = fixture.subscriber("c", 2, "e1");
        later.drain();
        let pending = fixture.pending("d");
        fixture.hub.deliver_all(
            [2, 3, 4, 6, 5, 4]
                .map(|offset| publication(offset, "e1"))
                .to_vec(),
        );
        assert_eq!(caught_up.offsets(), vec![1, 2, 3, 4, 5, 6]);
        assert_eq!(later.offsets(), vec![3, 4, 5, 6]);
        let binary: Vec<u64> = proto
            .registration
            .connection
            .outbox
            .take_now()
            .into_iter()
            .filter_map(|item| match item {
                Outbound::Message(bytes) => herald_protocol::binary::decode_frame(&bytes)
                    .remove(0)
                    .ok()?
                    .push?
                    .publication
                    .map(|p| p.offset),
                _ => None,
            })
            .collect();
        assert_eq!(binary, vec![1, 2, 3, 4, 5, 6], "the protobuf subscriber");
        assert!(
            pending.connection.outbox.take_now().is_empty(),
            "a pending subscriber is sent nothing before its reply"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn fills_a_gap_from_history_after_the_wait() {
        let fixture = fixture();
        let mut subscriber = fixture.gap().await;
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

    #[tokio::test(start_paused = true)]
    async fn a_subscriber_of_an_unpublished_channel_gets_its_first_epoch_in_order() {
        let fixture = fixture();
        let read = fixture.state.position(&channel()).await.unwrap();
        let mut subscriber = fixture.subscriber("a", 0, &read.epoch);
        subscriber.drain();
        let first = fixture.append().await;
        let second = fixture.append().await;
        // The second arrives first: 1 is a gap in the new epoch, filled from history.
        fixture.hub.deliver(second);
        tokio::time::sleep(Duration::from_millis(150)).await;
        fixture.hub.deliver(first);
        let messages = subscriber.drain();
        assert!(!unsubscribed(&messages), "no resubscribe: {messages:?}");
        let offsets: Vec<u64> = messages
            .iter()
            .filter_map(|m| m.push.as_ref()?.publication.as_ref().map(|p| p.offset))
            .collect();
        assert_eq!(offsets, vec![1, 2]);
        fixture
            .hub
            .deliver(publication(3, &fixture.append().await.epoch));
        assert_eq!(subscriber.offsets(), vec![3]);
    }

    #[tokio::test(start_paused = true)]
    async fn the_position_check_fills_a_lost_first_publication_of_an_unpublished_channel() {
        let fixture = fixture();
        let read = fixture.state.position(&channel()).await.unwrap();
        let mut subscriber = fixture.subscriber("a", 0, &read.epoch);
        subscriber.drain();
        fixture.hub.check_positions().await;
        assert!(
            subscriber.drain().is_empty(),
            "nothing published, nothing to do"
        );
        let _lost = fixture.append().await;
        fixture.hub.check_positions().await;
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(subscriber.offsets(), vec![1]);
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
        let late = fixture.pending("late");
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

    fn unsubscribed(messages: &[ServerMessage]) -> bool {
        messages
            .iter()
            .any(|m| m.push.as_ref().is_some_and(|p| p.unsubscribe.is_some()))
    }

    /// A subscriber that got offset 1 and then 3, with 2 in history and history reads
    /// failing until the returned flag is cleared.
    async fn gap_with_failing_state() -> (Fixture, Arc<std::sync::atomic::AtomicBool>, Subscriber) {
        let failing = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let fixture = fixture_with(|memory| {
            Arc::new(FlakyState {
                memory,
                failing: failing.clone(),
            })
        });
        let subscriber = fixture.gap().await;
        (fixture, failing, subscriber)
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_state_is_retried_before_a_gap_is_given_up() {
        let (_fixture, failing, mut subscriber) = gap_with_failing_state().await;
        assert_eq!(subscriber.offsets(), vec![1]);
        // Slow or failing for 10 s: retried, nobody is sent away.
        tokio::time::sleep(Duration::from_secs(10)).await;
        let meanwhile = subscriber.drain();
        assert!(!unsubscribed(&meanwhile), "evicted while retrying");
        failing.store(false, std::sync::atomic::Ordering::Relaxed);
        tokio::time::sleep(GAP_FILL_MAX_BACKOFF + Duration::from_millis(200)).await;
        assert_eq!(subscriber.offsets(), vec![2, 3]);
        assert!(subscriber.registration.connection.is_subscribed(&channel()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_state_failing_for_the_whole_window_sends_subscribers_to_resubscribe() {
        let (_fixture, _failing, mut subscriber) = gap_with_failing_state().await;
        tokio::time::sleep(GAP_FILL_RETRY_WINDOW + GAP_FILL_MAX_BACKOFF * 2).await;
        assert!(unsubscribed(&subscriber.drain()));
        assert!(!subscriber.registration.connection.is_subscribed(&channel()));
    }

    #[tokio::test]
    async fn a_pending_subscriber_survives_an_eviction_and_is_answered() {
        let fixture = fixture();
        fixture.append().await;
        let mut live = fixture.subscriber("live", 0, "an-older-epoch");
        live.drain();
        let late = fixture.pending("late");
        // History restarted while the late one was reading state: the live one is evicted.
        fixture.hub.check_positions().await;
        let position = fixture.state.position(&channel()).await.unwrap();
        let answered = fixture.hub.activate(
            &channel(),
            &late.connection,
            Bytes::from_static(b"{\"id\":7,\"result\":{}}"),
            &position,
        );
        assert!(answered, "the pending subscriber is still there");
        let mut late = Subscriber { registration: late };
        assert_eq!(late.drain()[0].id, Some(7));
        assert!(unsubscribed(&live.drain()));
        assert_eq!(
            live.registration.connection.take_evicted(),
            vec![Ending::Evicted(channel())],
            "the live one's session is told, to leave presence"
        );
    }
}
