//! A connection's outbound queue: what the hub, the session and the sweeper push, and the
//! writer drains; and, for a plain TCP WebSocket, the direct path that skips it.
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
//!
//! Direct writes: when the writer is idle (nothing queued, nothing being written), the
//! fan-out writes a publication's shared frame to the socket itself, from its own loop: no
//! lock, no task wake, no copy. Who may write is one atomic ([`Turn`]): the fan-out takes
//! the socket only from `Idle`; anything queued meanwhile waits for it to finish, and what
//! the socket did not take goes to the front of the queue for the writer. So the bytes on
//! the wire are always in the order they were sent.

use std::collections::VecDeque;
use std::io;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};

use bytes::Bytes;
use herald_protocol::CloseCode;
use tokio::sync::Notify;

use crate::metrics;
use crate::wire::{DirectSocket, Shared};

/// What a connection's writer sends next.
#[derive(Debug)]
pub enum Outbound {
    /// One encoded server message; the writer may coalesce several into one frame.
    Message(Bytes),
    /// Bytes already framed for the socket: the rest of a direct write it did not take.
    Framed(Bytes),
    /// A WebSocket Ping.
    Ping,
    /// The answer to the client's ping, with its payload.
    Pong(Bytes),
    /// Send a `disconnect` push and a close frame with this code (and a reason other than
    /// the code's own, if given), then stop.
    Close(CloseCode, Option<Box<str>>),
    /// The client went away: flush and stop.
    Finish,
}

/// Whose turn it is to write to the socket.
#[repr(u8)]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Turn {
    /// Nothing queued and the writer waits: the fan-out may write directly.
    Idle = 0,
    /// The fan-out is writing directly.
    Direct = 1,
    /// The fan-out is writing directly and something was queued meanwhile: the writer's
    /// turn comes when it finishes.
    DirectThenQueue = 2,
    /// The writer's: something is queued or being written.
    Queue = 3,
    /// The writer stopped.
    Gone = 4,
}

impl Turn {
    fn from_u8(value: u8) -> Turn {
        match value {
            0 => Turn::Idle,
            1 => Turn::Direct,
            2 => Turn::DirectThenQueue,
            3 => Turn::Queue,
            _ => Turn::Gone,
        }
    }
}

pub struct Outbox {
    queue: Mutex<VecDeque<Outbound>>,
    /// A [`Turn`].
    turn: AtomicU8,
    /// The socket the fan-out may write to directly (plain TCP WebSockets only).
    direct: Option<DirectSocket>,
    /// Wakes the writer when its turn comes.
    ready: Notify,
    queued_bytes: AtomicUsize,
    max_queued_bytes: usize,
    closing: AtomicBool,
    /// Wakes a writer blocked on a socket that stopped reading once a close is requested.
    closed: Notify,
}

impl Outbox {
    pub fn new(max_queued_bytes: usize, direct: Option<DirectSocket>) -> Outbox {
        Outbox {
            queue: Mutex::default(),
            turn: AtomicU8::new(Turn::Idle as u8),
            direct,
            ready: Notify::new(),
            queued_bytes: AtomicUsize::new(0),
            max_queued_bytes,
            closing: AtomicBool::new(false),
            closed: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Outbound>> {
        // Nothing panics while holding this lock; a poisoned queue is still a valid queue.
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn turn(&self) -> Turn {
        Turn::from_u8(self.turn.load(Ordering::Acquire))
    }

    /// Moves the turn `from` → `to`; false if it was not `from`.
    fn pass(&self, from: Turn, to: Turn) -> bool {
        self.turn
            .compare_exchange(from as u8, to as u8, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    fn push(&self, item: Outbound) -> bool {
        let wake = {
            let mut queue = self.lock();
            // Under the lock: the writer only gives its turn up, and the fan-out only takes
            // it back with what the socket refused, holding the lock.
            let wake = loop {
                match self.turn() {
                    Turn::Gone => return false,
                    Turn::Idle if self.pass(Turn::Idle, Turn::Queue) => break true,
                    Turn::Direct if self.pass(Turn::Direct, Turn::DirectThenQueue) => break false,
                    Turn::Idle | Turn::Direct => continue,
                    Turn::DirectThenQueue | Turn::Queue => break false,
                }
            };
            queue.push_back(item);
            wake
        };
        if wake {
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
        // A reply the client asked not to get (a Socket.IO event without an ack id).
        if message.is_empty() {
            return true;
        }
        if !self.admit(message.len()) {
            return false;
        }
        self.push(Outbound::Message(message))
    }

    /// Counts `bytes` against the budget; false (and a 4201 close) when the queue is
    /// already at it.
    fn admit(&self, bytes: usize) -> bool {
        let queued_before = self.queued_bytes.fetch_add(bytes, Ordering::Relaxed);
        if queued_before >= self.max_queued_bytes {
            metrics::counter!(metrics::SLOW_CONSUMER_CLOSES).increment(1);
            self.close(CloseCode::SlowConsumer);
            return false;
        }
        true
    }

    /// Sends a message shared with other connections: written straight to the socket when
    /// the writer is idle and the socket takes it, queued otherwise. False when the
    /// connection is closing.
    pub fn send_shared(&self, message: &Shared) -> bool {
        self.send_framed(message.frame(), std::slice::from_ref(message.message()))
    }

    /// Sends `messages`, in order, whose WebSocket frames back to back are `frames`: one
    /// write straight to the socket when the writer is idle and the socket takes it, the
    /// messages queued otherwise. False when the connection is closing.
    pub fn send_framed(&self, frames: &Bytes, messages: &[Bytes]) -> bool {
        let queue_all = || messages.iter().all(|message| self.send(message.clone()));
        let Some(socket) = &self.direct else {
            return queue_all();
        };
        if self.closing.load(Ordering::Relaxed) {
            return false;
        }
        if !self.pass(Turn::Idle, Turn::Direct) {
            return queue_all();
        }
        let rest = match socket.try_write(frames) {
            Ok(written) if written == frames.len() => Vec::new(),
            Ok(written) => vec![Outbound::Framed(frames.slice(written..))],
            // The socket is full (or failed, which the writer then finds too): the writer
            // sends the messages, coalesced with whatever follows them.
            Err(error) => {
                if error.kind() != io::ErrorKind::WouldBlock {
                    tracing::debug!(%error, "direct write failed");
                }
                if !self.admit(messages.iter().map(Bytes::len).sum()) {
                    self.end_direct(Vec::new());
                    return false;
                }
                messages.iter().cloned().map(Outbound::Message).collect()
            }
        };
        self.end_direct(rest);
        true
    }

    /// Ends a direct write: hands what the socket did not take, and anything queued
    /// meanwhile, to the writer, or makes the turn idle again.
    fn end_direct(&self, rest: Vec<Outbound>) {
        if rest.is_empty() && self.pass(Turn::Direct, Turn::Idle) {
            return;
        }
        {
            let mut queue = self.lock();
            // Ahead of anything queued while the direct write ran.
            for item in rest.into_iter().rev() {
                queue.push_front(item);
            }
            // Direct or DirectThenQueue: both are ours to end. (Gone cannot happen: the
            // writer stops only on its turn.)
            self.turn.store(Turn::Queue as u8, Ordering::Release);
        }
        self.ready.notify_one();
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

    /// Answers the client's ping.
    pub fn pong(&self, payload: Bytes) {
        self.push(Outbound::Pong(payload));
    }

    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Relaxed)
    }

    /// Waits for the writer's turn and takes everything queued (the writer's side). Call
    /// it only once everything taken before has been written: finding the queue empty
    /// gives the turn up, and the fan-out may write at once.
    pub async fn take(&self) -> VecDeque<Outbound> {
        loop {
            let items = self.take_now();
            if !items.is_empty() {
                return items;
            }
            self.ready.notified().await;
        }
    }

    /// Takes everything queued now if it is the writer's turn, possibly nothing (then the
    /// turn is given up). Message bytes stop counting against the budget here.
    pub fn take_now(&self) -> VecDeque<Outbound> {
        let items = {
            let mut queue = self.lock();
            if self.turn() != Turn::Queue {
                return VecDeque::new();
            }
            if queue.is_empty() {
                self.turn.store(Turn::Idle as u8, Ordering::Release);
            }
            std::mem::take(&mut *queue)
        };
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
        // The writer stops on its own turn, or while idle; a direct write that is under way
        // (a single non-blocking write) is waited out.
        while !self.pass(Turn::Idle, Turn::Gone) && !self.pass(Turn::Queue, Turn::Gone) {
            std::thread::yield_now();
        }
        *self.lock() = VecDeque::new();
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
        let outbox = Outbox::new(10, None);
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
        let outbox = Outbox::new(100, None);
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
    async fn an_empty_message_is_not_queued() {
        let outbox = Outbox::new(10, None);
        assert!(outbox.send(Bytes::new()));
        outbox.ping();
        let taken = outbox.take().await;
        assert!(
            matches!(taken.front(), Some(Outbound::Ping)),
            "only the ping"
        );
        assert_eq!(taken.len(), 1);
    }

    #[tokio::test]
    async fn a_push_wakes_a_waiting_writer() {
        let outbox = std::sync::Arc::new(Outbox::new(1 << 20, None));
        let writer = tokio::spawn({
            let outbox = outbox.clone();
            async move { outbox.take().await.len() }
        });
        tokio::task::yield_now().await;
        outbox.ping();
        let taken = tokio::time::timeout(std::time::Duration::from_secs(5), writer).await;
        assert_eq!(taken.expect("woken").unwrap(), 1);
    }

    /// An outbox whose direct socket is the server side of a loopback connection, and the
    /// client side to read what it wrote.
    async fn direct_outbox() -> (Outbox, tokio::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        let (_, write) = accepted.unwrap().0.into_split();
        let outbox = Outbox::new(1 << 30, Some(DirectSocket::new(write)));
        (outbox, client.unwrap())
    }

    fn messages(items: &VecDeque<Outbound>) -> Vec<&[u8]> {
        items
            .iter()
            .map(|item| match item {
                Outbound::Message(bytes) | Outbound::Framed(bytes) => &bytes[..],
                other => panic!("unexpected {other:?}"),
            })
            .collect()
    }

    #[tokio::test]
    async fn a_shared_message_is_written_directly_only_while_nothing_is_queued() {
        use tokio::io::AsyncReadExt;
        let (outbox, mut client) = direct_outbox().await;
        let first = Shared::new(Bytes::from_static(b"first"), false);
        assert!(outbox.send_shared(&first));
        let mut received = vec![0u8; first.frame().len()];
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            client.read_exact(&mut received),
        )
        .await
        .expect("the frame within 10 s")
        .unwrap();
        assert_eq!(&received[..], &first.frame()[..], "written by the fan-out");
        assert!(outbox.take_now().is_empty(), "nothing was queued");

        // A reply is queued: the writer's turn, so the next publication queues behind it.
        assert!(outbox.send(Bytes::from_static(b"reply")));
        assert!(outbox.send_shared(&Shared::new(Bytes::from_static(b"second"), false)));
        let taken = outbox.take_now();
        assert_eq!(messages(&taken), [&b"reply"[..], b"second"]);
        // The writer wrote them and finds the queue empty: the fan-out's turn again.
        assert!(outbox.take_now().is_empty());
        assert!(outbox.send_shared(&Shared::new(Bytes::from_static(b"third"), false)));
        assert!(outbox.take_now().is_empty(), "written directly again");
    }

    #[tokio::test]
    async fn what_a_full_socket_does_not_take_goes_first_to_the_writer() {
        let (outbox, _client) = direct_outbox().await;
        // The client never reads: the kernel's buffers fill, and a write takes part or none.
        let big = Shared::new(Bytes::from(vec![b'x'; 1 << 20]), false);
        let mut direct = 0;
        while outbox.turn() == Turn::Idle {
            assert!(outbox.send_shared(&big));
            direct += 1;
            assert!(direct < 1000, "a socket that never fills");
        }
        assert!(outbox.send(Bytes::from_static(b"after")));
        assert!(outbox.send_shared(&Shared::new(Bytes::from_static(b"later"), false)));
        let taken = outbox.take_now();
        assert_eq!(messages(&taken)[1..], [&b"after"[..], b"later"]);
        assert!(
            matches!(
                taken.front(),
                Some(Outbound::Framed(_)) | Some(Outbound::Message(_))
            ),
            "the rest of the big frame, first"
        );
    }

    #[tokio::test]
    async fn frames_sent_together_are_one_direct_write_or_queued_in_order() {
        use tokio::io::AsyncReadExt;
        let (outbox, mut client) = direct_outbox().await;
        let shared = [b"one", b"two"].map(|m| Shared::new(Bytes::from_static(m), false));
        let frames: Bytes = [&shared[0].frame()[..], &shared[1].frame()[..]]
            .concat()
            .into();
        let both = shared.each_ref().map(|s| s.message().clone());
        assert!(outbox.send_framed(&frames, &both));
        let mut received = vec![0u8; frames.len()];
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            client.read_exact(&mut received),
        )
        .await
        .expect("the frames within 10 s")
        .unwrap();
        assert_eq!(&received[..], &frames[..], "written by the fan-out");
        assert!(outbox.take_now().is_empty(), "nothing was queued");

        // The writer's turn: both are queued behind the reply, in order.
        assert!(outbox.send(Bytes::from_static(b"reply")));
        assert!(outbox.send_framed(&frames, &both));
        assert_eq!(
            messages(&outbox.take_now()),
            [&b"reply"[..], b"one", b"two"]
        );
    }

    #[test]
    fn truncates_reasons_on_a_character_boundary() {
        assert_eq!(truncate_utf8("héllo", 2), "h");
        assert_eq!(truncate_utf8("héllo", 3), "hé");
        assert_eq!(truncate_utf8("abc", 10), "abc");
    }
}
