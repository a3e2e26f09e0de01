//! A connection's outbound queue: what the hub, the session and the sweeper push, and the
//! writer drains.
//!
//! Pushing never blocks and never awaits: a short, uncontended lock around a `VecDeque`,
//! released before anything else happens. The writer takes the whole queue at once, so it
//! coalesces without a lock per message. A byte budget on top turns a consumer that does
//! not keep up into a close (4201) instead of memory growth. An idle connection's queue
//! holds no allocation at all, which matters at hundreds of thousands of connections.
//!
//! The budget is checked before a message, not after it: while the queue holds less than
//! the budget, any one message is admitted, even one that takes it past the budget. So a
//! reply (at most the reply budget, a quarter of the queue budget) never alone causes a
//! 4201, and the queue holds at most the budget plus one message.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use bytes::Bytes;
use herald_protocol::CloseCode;
use tokio::sync::Notify;

use crate::metrics;

/// What a connection's writer sends next.
#[derive(Debug)]
pub enum Outbound {
    /// One encoded server message; the writer may coalesce several into one frame.
    Message(Bytes),
    /// A WebSocket Ping.
    Ping,
    /// Send a `disconnect` push and a close frame with this code (and a reason other than
    /// the code's own, if given), then stop.
    Close(CloseCode, Option<Box<str>>),
    /// The client went away: flush and stop.
    Finish,
}

#[derive(Default)]
struct Queue {
    items: VecDeque<Outbound>,
    /// Set when the writer stopped: later pushes are dropped.
    writer_gone: bool,
}

pub struct Outbox {
    queue: Mutex<Queue>,
    /// Wakes the writer when the queue goes from empty to not empty.
    ready: Notify,
    queued_bytes: AtomicUsize,
    max_queued_bytes: usize,
    closing: AtomicBool,
    /// Wakes a writer blocked on a socket that stopped reading once a close is requested.
    closed: Notify,
}

impl Outbox {
    pub fn new(max_queued_bytes: usize) -> Outbox {
        Outbox {
            queue: Mutex::default(),
            ready: Notify::new(),
            queued_bytes: AtomicUsize::new(0),
            max_queued_bytes,
            closing: AtomicBool::new(false),
            closed: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        // Nothing panics while holding this lock; a poisoned queue is still a valid queue.
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn push(&self, item: Outbound) -> bool {
        let was_empty = {
            let mut queue = self.lock();
            if queue.writer_gone {
                return false;
            }
            queue.items.push_back(item);
            queue.items.len() == 1
        };
        if was_empty {
            // Stores a permit if the writer is not waiting yet, so no wake-up is lost.
            self.ready.notify_one();
        }
        true
    }

    /// Queues one message. Returns false when the connection is closing (or closes now
    /// because its queue is already at its budget).
    pub fn send(&self, message: Bytes) -> bool {
        if self.closing.load(Ordering::Relaxed) {
            return false;
        }
        let queued_before = self
            .queued_bytes
            .fetch_add(message.len(), Ordering::Relaxed);
        if queued_before >= self.max_queued_bytes {
            metrics::counter!(metrics::SLOW_CONSUMER_CLOSES).increment(1);
            self.close(CloseCode::SlowConsumer);
            return false;
        }
        self.push(Outbound::Message(message))
    }

    /// Closes the connection with `code` (once; later calls do nothing).
    pub fn close(&self, code: CloseCode) {
        self.close_with_reason(code, None);
    }

    /// Closes the connection with `code` and a custom reason (at most 123 bytes are sent).
    pub fn close_with_reason(&self, code: CloseCode, reason: Option<&str>) {
        if !self.closing.swap(true, Ordering::Relaxed) {
            metrics::counter!(metrics::DISCONNECTS, "code" => code.code().to_string()).increment(1);
            let reason = reason
                .filter(|r| !r.is_empty())
                .map(|r| Box::from(truncate_utf8(r, 123)));
            self.push(Outbound::Close(code, reason));
            self.closed.notify_waiters();
        }
    }

    /// Completes once a close has been requested.
    pub async fn closing(&self) {
        let notified = self.closed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if !self.is_closing() {
            notified.await;
        }
    }

    /// The client went away: let the writer flush and stop.
    pub fn finish(&self) {
        self.push(Outbound::Finish);
    }

    pub fn ping(&self) {
        self.push(Outbound::Ping);
    }

    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Relaxed)
    }

    /// Waits for and takes everything queued (the writer's side).
    pub async fn take(&self) -> VecDeque<Outbound> {
        loop {
            let items = self.take_now();
            if !items.is_empty() {
                return items;
            }
            self.ready.notified().await;
        }
    }

    /// Takes everything queued now, possibly nothing. Message bytes stop counting against
    /// the budget here.
    pub fn take_now(&self) -> VecDeque<Outbound> {
        let items = std::mem::take(&mut self.lock().items);
        let bytes: usize = items
            .iter()
            .map(|item| match item {
                Outbound::Message(message) => message.len(),
                _ => 0,
            })
            .sum();
        self.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
        items
    }

    /// The writer stopped: drop what is queued and refuse what comes.
    pub fn writer_gone(&self) {
        let mut queue = self.lock();
        queue.writer_gone = true;
        queue.items = VecDeque::new();
    }
}

/// The longest prefix of `s` within `max` bytes that ends on a character boundary.
fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn queues_in_order_and_enforces_the_byte_budget() {
        let outbox = Outbox::new(10);
        assert!(outbox.send(Bytes::from_static(b"12345")));
        assert!(outbox.send(Bytes::from_static(b"12345")));
        let taken = outbox.take().await;
        assert_eq!(taken.len(), 2);
        assert!(
            outbox.send(Bytes::from_static(b"1234567890")),
            "taking freed the budget"
        );
        assert!(!outbox.send(Bytes::from_static(b"x")), "over budget");
        assert!(outbox.is_closing());
        let taken = outbox.take().await;
        assert!(matches!(
            taken.back(),
            Some(Outbound::Close(CloseCode::SlowConsumer, None))
        ));
        outbox.writer_gone();
        outbox.finish();
        assert!(!outbox.send(Bytes::from_static(b"x")));
    }

    #[tokio::test]
    async fn a_message_is_admitted_while_the_queue_is_under_budget() {
        // A queue budget of 100 and a reply of 25 (its quarter) on a queue nearly full of
        // pushes: the reply goes out, and the next message finds the queue over budget.
        let outbox = Outbox::new(100);
        assert!(outbox.send(Bytes::from(vec![b'p'; 90])));
        assert!(
            outbox.send(Bytes::from(vec![b'r'; 25])),
            "a reply within the reply budget is never a slow-consumer close on its own"
        );
        assert!(!outbox.is_closing());
        assert!(!outbox.send(Bytes::from_static(b"x")), "over budget");
        assert!(outbox.is_closing());
        let taken = outbox.take().await;
        assert_eq!(taken.len(), 3, "two messages and the close");
    }

    #[tokio::test]
    async fn a_push_wakes_a_waiting_writer() {
        let outbox = std::sync::Arc::new(Outbox::new(1 << 20));
        let writer = tokio::spawn({
            let outbox = outbox.clone();
            async move { outbox.take().await.len() }
        });
        tokio::task::yield_now().await;
        outbox.ping();
        let taken = tokio::time::timeout(std::time::Duration::from_secs(5), writer).await;
        assert_eq!(taken.expect("woken").unwrap(), 1);
    }

    #[test]
    fn truncates_reasons_on_a_character_boundary() {
        assert_eq!(truncate_utf8("héllo", 2), "h");
        assert_eq!(truncate_utf8("héllo", 3), "hé");
        assert_eq!(truncate_utf8("abc", 10), "abc");
    }
}
