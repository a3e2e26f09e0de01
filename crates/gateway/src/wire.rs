//! WebSocket bytes as they go on the wire: server frames, and the socket the fan-out writes
//! them to directly.
//!
//! Server frames are never masked, so a publication's frame (header and payload) is the same
//! for every subscriber: [`Shared`] encodes it once, the first time a subscriber can take
//! it, and every direct write after that is one `write(2)` of the same bytes, with no copy,
//! allocation, lock or task wake per subscriber.

use std::io;
use std::sync::{Arc, OnceLock};

use bytes::{BufMut, Bytes, BytesMut};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{Frame, FrameHeader};

/// One encoded server message shared by every connection it goes to: its bytes, and its
/// WebSocket text frame once some connection wrote it directly.
pub struct Shared {
    message: Bytes,
    /// A binary frame (protobuf), or a text frame (JSON).
    binary: bool,
    frame: OnceLock<Bytes>,
}

impl Shared {
    pub fn new(message: Bytes, binary: bool) -> Shared {
        Shared {
            message,
            binary,
            frame: OnceLock::new(),
        }
    }

    /// The message, for queues and transports that frame it themselves.
    pub fn message(&self) -> &Bytes {
        &self.message
    }

    /// The message as one WebSocket frame, encoded on first use.
    pub fn frame(&self) -> &Bytes {
        self.frame.get_or_init(|| {
            let data = if self.binary {
                Data::Binary
            } else {
                Data::Text
            };
            let mut frame = BytesMut::with_capacity(self.message.len() + MAX_HEADER_BYTES);
            put_frame(&mut frame, OpCode::Data(data), &self.message);
            frame.freeze()
        })
    }
}

/// The longest header of an unmasked frame: two bytes and a 64-bit length.
const MAX_HEADER_BYTES: usize = 10;

/// Appends one final, unmasked frame to `buffer`.
pub fn put_frame(buffer: &mut BytesMut, opcode: OpCode, payload: &[u8]) {
    buffer.reserve(payload.len() + MAX_HEADER_BYTES);
    let header = FrameHeader {
        opcode,
        ..FrameHeader::default()
    };
    header
        .format(payload.len() as u64, &mut buffer.writer())
        .expect("writing to memory does not fail");
    buffer.put_slice(payload);
}

/// Appends a whole control frame built by tungstenite (a close frame with its code).
pub fn put_control(buffer: &mut BytesMut, frame: Frame) {
    frame
        .format(&mut buffer.writer())
        .expect("writing to memory does not fail");
}

/// The write side of a plain TCP WebSocket, shared by the connection's writer task and the
/// fan-out, which writes to it only while the writer is idle (see [`crate::outbox`]).
#[derive(Clone)]
pub struct DirectSocket(Arc<OwnedWriteHalf>);

impl DirectSocket {
    pub fn new(write: OwnedWriteHalf) -> DirectSocket {
        DirectSocket(Arc::new(write))
    }

    /// Writes what the socket takes now, without waiting: the number of bytes written, or
    /// `WouldBlock` when it takes none. One `send(2)`, without tokio's readiness check (a
    /// cache miss per subscriber in the fan-out's loop); a socket that turns out full makes
    /// the writer's next write find that itself, which clears tokio's readiness.
    pub fn try_write(&self, bytes: &[u8]) -> io::Result<usize> {
        socket2::SockRef::from(self.stream()).send(bytes)
    }

    pub fn poll_write(
        &self,
        cx: &mut std::task::Context<'_>,
        bytes: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        loop {
            std::task::ready!(self.stream().poll_write_ready(cx))?;
            match self.0.try_write(bytes) {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                written => return std::task::Poll::Ready(written),
            }
        }
    }

    /// Sends FIN now: the fan-out's handle may keep the socket open a while longer.
    pub fn shutdown(&self) -> io::Result<()> {
        socket2::SockRef::from(self.stream()).shutdown(std::net::Shutdown::Write)
    }

    fn stream(&self) -> &TcpStream {
        (*self.0).as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;

    #[test]
    fn a_shared_frame_is_a_final_unmasked_text_frame_of_the_message() {
        for len in [0usize, 125, 126, 65_535, 65_536] {
            let message = Bytes::from(vec![b'x'; len]);
            let shared = Shared::new(message.clone(), false);
            let frame = shared.frame().clone();
            let mut cursor = std::io::Cursor::new(&frame[..]);
            let (header, length) = FrameHeader::parse(&mut cursor).unwrap().unwrap();
            assert!(header.is_final);
            assert_eq!(header.opcode, OpCode::Data(Data::Text));
            assert!(header.mask.is_none());
            assert_eq!(length, len as u64);
            assert_eq!(&frame[cursor.position() as usize..], &message[..]);
            assert_eq!(
                shared.frame().as_ptr(),
                frame.as_ptr(),
                "encoded once, then shared"
            );
        }
    }
}
