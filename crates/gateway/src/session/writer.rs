//! A connection's writer: takes what is queued, coalesces consecutive messages into one
//! text frame (newline-separated, up to a size cap), and sends pings and the close frame.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::SinkExt;
use futures_util::stream::SplitSink;
use herald_protocol::CloseCode;
use herald_protocol::reply::encode_disconnect;
use tokio::sync::mpsc;

use crate::connections::{Outbound, Outbox};

/// How long a writer may stay blocked on a peer that does not read once the connection is
/// closing, before it gives up and drops the socket.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

pub async fn run(
    mut sink: SplitSink<WebSocket, Message>,
    mut queue: mpsc::UnboundedReceiver<Outbound>,
    outbox: Arc<Outbox>,
    max_frame_bytes: usize,
) {
    let mut carried = None;
    loop {
        let next = match carried.take() {
            Some(next) => next,
            None => match queue.recv().await {
                Some(next) => next,
                None => break,
            },
        };
        let send = async {
            match next {
                Outbound::Message(first) => {
                    outbox.dequeued(first.len());
                    let (frame, after) = coalesce(first, &mut queue, &outbox, max_frame_bytes);
                    carried = after;
                    send_text(&mut sink, frame).await.is_ok()
                }
                Outbound::Ping => sink.send(Message::Ping(Bytes::new())).await.is_ok(),
                Outbound::Close(code, reason) => {
                    close(&mut sink, code, reason.as_deref().unwrap_or(code.reason())).await;
                    false
                }
                Outbound::Finish => false,
            }
        };
        // Biased: a send that completes at once never polls (and never registers) the
        // give-up future, so the common case costs nothing extra.
        let keep_going = tokio::select! {
            biased;
            keep_going = send => keep_going,
            () = give_up(&outbox) => false,
        };
        if !keep_going {
            break;
        }
    }
    let _ = sink.close().await;
}

/// Completes `CLOSE_GRACE` after a close was requested: a peer that has not taken our
/// bytes by then is not going to.
async fn give_up(outbox: &Outbox) {
    outbox.closing().await;
    tokio::time::sleep(CLOSE_GRACE).await;
}

/// Joins `first` with whatever messages are already queued, up to `max` bytes. Returns the
/// frame and the first non-message item taken off the queue, if any.
fn coalesce(
    first: Bytes,
    queue: &mut mpsc::UnboundedReceiver<Outbound>,
    outbox: &Outbox,
    max: usize,
) -> (Bytes, Option<Outbound>) {
    let mut frame: Option<BytesMut> = None;
    let mut size = first.len();
    while size < max {
        match queue.try_recv() {
            Ok(Outbound::Message(next)) => {
                outbox.dequeued(next.len());
                size += next.len() + 1;
                let frame = frame.get_or_insert_with(|| {
                    let mut frame = BytesMut::with_capacity(max.min(size * 2));
                    frame.put_slice(&first);
                    frame
                });
                frame.put_u8(b'\n');
                frame.put_slice(&next);
            }
            Ok(other) => return (frame.map_or(first.clone(), BytesMut::freeze), Some(other)),
            Err(_) => break,
        }
    }
    (frame.map_or(first, BytesMut::freeze), None)
}

async fn send_text(
    sink: &mut SplitSink<WebSocket, Message>,
    frame: Bytes,
) -> Result<(), axum::Error> {
    // Every queued message is JSON we encoded, so this check never fails; it is the price
    // of not using `unsafe`.
    match Utf8Bytes::try_from(frame) {
        Ok(text) => sink.send(Message::Text(text)).await,
        Err(_) => Ok(()),
    }
}

/// Sends a `disconnect` push (for clients that cannot see close codes) and the close frame.
async fn close(sink: &mut SplitSink<WebSocket, Message>, code: CloseCode, reason: &str) {
    let _ = send_text(sink, encode_disconnect(code, reason)).await;
    let frame = CloseFrame {
        code: code.code(),
        reason: Utf8Bytes::from(reason),
    };
    let _ = sink.send(Message::Close(Some(frame))).await;
    let _ = sink.close().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn coalesces_queued_messages_up_to_the_cap() {
        let (outbox, mut queue) = Outbox::new(1 << 20);
        for n in 0..5 {
            assert!(outbox.send(Bytes::from(format!("{{\"n\":{n}}}"))));
        }
        outbox.close(CloseCode::Shutdown);
        let Some(Outbound::Message(first)) = queue.recv().await else {
            panic!("a message")
        };
        outbox.dequeued(first.len());
        let (frame, after) = coalesce(first, &mut queue, &outbox, 1 << 16);
        assert_eq!(
            &frame[..],
            b"{\"n\":0}\n{\"n\":1}\n{\"n\":2}\n{\"n\":3}\n{\"n\":4}"
        );
        assert!(matches!(
            after,
            Some(Outbound::Close(CloseCode::Shutdown, None))
        ));

        let (outbox, mut queue) = Outbox::new(1 << 20);
        for n in 0..5 {
            assert!(outbox.send(Bytes::from(format!("{{\"n\":{n}}}"))));
        }
        let Some(Outbound::Message(first)) = queue.recv().await else {
            panic!("a message")
        };
        let (frame, after) = coalesce(first, &mut queue, &outbox, 10);
        assert_eq!(&frame[..], b"{\"n\":0}\n{\"n\":1}");
        assert!(after.is_none());
    }
}
