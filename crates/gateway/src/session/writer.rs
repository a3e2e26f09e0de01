//! A connection's writer: takes everything queued at once, coalesces consecutive messages
//! into data frames (up to a size cap: text frames of newline-separated JSON, or binary
//! frames of length-delimited protobuf; one message a frame for Engine.IO), and sends pings
//! (WebSocket Pings, or the codec's own) and the close frame. One flush per batch.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::SinkExt;
use herald_protocol::{CloseCode, Codec};

use super::Outgoing;
use super::frame::{ServerFrame, TransportError};
use crate::outbox::{Outbound, Outbox};

/// How long a writer may stay blocked on a peer that does not read once the connection is
/// closing, before it gives up and drops the socket.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

pub async fn run(
    mut sink: impl Outgoing,
    outbox: Arc<Outbox>,
    codec: Codec,
    max_frame_bytes: usize,
) {
    loop {
        let batch = outbox.take().await;
        // Biased: a batch that is sent at once never polls (and never registers) the
        // give-up future, so the common case costs nothing extra. Boxed, both: an idle
        // writer (most of them, most of the time: publications are written directly) then
        // keeps only its wait for the queue.
        let keep_going = tokio::select! {
            biased;
            keep_going = Box::pin(send_batch(&mut sink, batch, codec, max_frame_bytes)) => keep_going,
            () = Box::pin(give_up(&outbox)) => false,
        };
        if !keep_going {
            break;
        }
    }
    outbox.writer_gone();
    let _ = sink.close().await;
}

/// Sends one batch; false when the writer should stop (closed, finished, or the socket
/// failed).
async fn send_batch(
    sink: &mut impl Outgoing,
    batch: VecDeque<Outbound>,
    codec: Codec,
    max_frame_bytes: usize,
) -> bool {
    let mut frame = FrameBuilder::new(max_frame_bytes, codec.separator());
    for item in batch {
        let control = match item {
            Outbound::Message(message) => {
                if let Some(full) = frame.push(message)
                    && feed_data(sink, codec, full).await.is_err()
                {
                    return false;
                }
                continue;
            }
            control => control,
        };
        if let Some(pending) = frame.finish()
            && feed_data(sink, codec, pending).await.is_err()
        {
            return false;
        }
        match control {
            Outbound::Ping | Outbound::Pong(_) | Outbound::Framed(_) => {
                let frame = match control {
                    Outbound::Pong(payload) => ServerFrame::Pong(payload),
                    Outbound::Framed(bytes) => ServerFrame::Framed(bytes),
                    _ => match codec.ping() {
                        Some(ping) => data_frame(codec, ping),
                        None => ServerFrame::Ping,
                    },
                };
                if sink.feed(frame).await.is_err() {
                    return false;
                }
            }
            Outbound::Close(code, reason) => {
                close(
                    sink,
                    codec,
                    code,
                    reason.as_deref().unwrap_or(code.reason()),
                )
                .await;
                return false;
            }
            Outbound::Finish | Outbound::Message(_) => {
                let _ = sink.flush().await;
                return false;
            }
        }
    }
    if let Some(pending) = frame.finish()
        && feed_data(sink, codec, pending).await.is_err()
    {
        return false;
    }
    sink.flush().await.is_ok()
}

/// Joins consecutive messages with the codec's separator up to a size cap (none without a
/// separator). A lone message is passed through without copying.
struct FrameBuilder {
    max: usize,
    separator: Option<&'static [u8]>,
    first: Option<Bytes>,
    joined: Option<BytesMut>,
}

impl FrameBuilder {
    fn new(max: usize, separator: Option<&'static [u8]>) -> Self {
        Self {
            max,
            separator,
            first: None,
            joined: None,
        }
    }

    fn size(&self) -> usize {
        match (&self.joined, &self.first) {
            (Some(joined), _) => joined.len(),
            (None, Some(first)) => first.len(),
            (None, None) => 0,
        }
    }

    /// Adds a message; returns the frame built so far if this message does not fit in it.
    fn push(&mut self, message: Bytes) -> Option<Bytes> {
        let size = self.size();
        let Some(separator) = self.separator else {
            return self.first.replace(message);
        };
        let full = if size > 0 && size + separator.len() + message.len() > self.max {
            self.finish()
        } else {
            None
        };
        match (&mut self.joined, self.first.take()) {
            (Some(joined), _) => {
                joined.put_slice(separator);
                joined.put_slice(&message);
            }
            (None, None) => self.first = Some(message),
            (None, Some(first)) => {
                let mut joined =
                    BytesMut::with_capacity((first.len() + separator.len() + message.len()) * 2);
                joined.put_slice(&first);
                joined.put_slice(separator);
                joined.put_slice(&message);
                self.joined = Some(joined);
            }
        }
        full
    }

    fn finish(&mut self) -> Option<Bytes> {
        match self.joined.take() {
            Some(joined) => Some(joined.freeze()),
            None => self.first.take(),
        }
    }
}

/// Completes `CLOSE_GRACE` after a close was requested: a peer that has not taken our
/// bytes by then is not going to.
async fn give_up(outbox: &Outbox) {
    outbox.closing().await;
    tokio::time::sleep(CLOSE_GRACE).await;
}

async fn feed_data(
    sink: &mut impl Outgoing,
    codec: Codec,
    frame: Bytes,
) -> Result<(), TransportError> {
    sink.feed(data_frame(codec, frame)).await
}

fn data_frame(codec: Codec, frame: Bytes) -> ServerFrame {
    match codec.is_binary() {
        true => ServerFrame::Binary(frame),
        false => ServerFrame::Text(frame),
    }
}

/// Sends a `disconnect` push (for clients that cannot see close codes) and the close frame.
async fn close(sink: &mut impl Outgoing, codec: Codec, code: CloseCode, reason: &str) {
    let _ = feed_data(sink, codec, codec.disconnect(code, reason)).await;
    let frame = ServerFrame::Close {
        code,
        reason: reason.to_owned(),
    };
    let _ = sink.send(frame).await;
    let _ = sink.close().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(n: u32) -> Bytes {
        Bytes::from(format!("{{\"n\":{n}}}"))
    }

    #[test]
    fn coalesces_up_to_the_cap_and_passes_lone_messages_through() {
        let mut frame = FrameBuilder::new(1 << 16, Some(b"\n"));
        for n in 0..5 {
            assert!(frame.push(message(n)).is_none());
        }
        assert_eq!(
            &frame.finish().unwrap()[..],
            b"{\"n\":0}\n{\"n\":1}\n{\"n\":2}\n{\"n\":3}\n{\"n\":4}"
        );
        assert!(frame.finish().is_none());

        let lone = message(7);
        frame.push(lone.clone());
        let out = frame.finish().unwrap();
        assert_eq!(out.as_ptr(), lone.as_ptr(), "a lone message is not copied");

        let mut small = FrameBuilder::new(16, Some(b"\n"));
        assert!(small.push(message(0)).is_none());
        assert!(small.push(message(1)).is_none());
        assert_eq!(
            &small.push(message(2)).unwrap()[..],
            b"{\"n\":0}\n{\"n\":1}"
        );
        assert_eq!(&small.finish().unwrap()[..], b"{\"n\":2}");

        let mut single = FrameBuilder::new(1 << 16, None);
        assert!(single.push(message(0)).is_none());
        assert_eq!(single.push(message(1)), Some(message(0)));
        assert_eq!(single.finish(), Some(message(1)));
    }
}
