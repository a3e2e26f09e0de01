//! A WebSocket's two directions, each with its own owner: tungstenite parses what the
//! client sends (masking, fragments, control frames, UTF-8, size caps) over the read half,
//! and the session's writer sends server frames over the write half, which on plain TCP it
//! shares with the fan-out's direct writes ([`crate::wire`]). So tungstenite never writes:
//! the session answers pings and close frames itself, in order with everything else.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BytesMut};
use futures_util::Sink;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{
    CloseCode as WsCloseCode, Control, Data, OpCode,
};

use crate::session::frame::{ServerFrame, TransportError};
use crate::wire::{DirectSocket, put_control, put_frame};

/// Buffered frames past this are written before more are taken.
const FLUSH_AT: usize = 64 * 1024;

/// The read half as tungstenite's stream: whatever tungstenite would write (its automatic
/// pong and close replies) is dropped, because the session's writer owns the other half.
pub struct ReadOnly<R>(pub R);

impl<R: AsyncRead + Unpin> AsyncRead for ReadOnly<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<R: Unpin> AsyncWrite for ReadOnly<R> {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// A plain TCP socket's write half, shared with the fan-out.
pub struct DirectWrite(pub DirectSocket);

impl AsyncWrite for DirectWrite {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.0.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.0.shutdown())
    }
}

/// Server frames onto a write half. The buffer holds one batch and is released once it is
/// written: an idle connection keeps no write buffer.
pub struct FrameSink<W> {
    io: W,
    buffer: BytesMut,
    /// After a close frame, nothing more may be sent.
    close_sent: bool,
}

impl<W> FrameSink<W> {
    pub fn new(io: W) -> FrameSink<W> {
        FrameSink {
            io,
            buffer: BytesMut::new(),
            close_sent: false,
        }
    }
}

impl<W: AsyncWrite + Unpin> FrameSink<W> {
    fn write_buffer(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.buffer.is_empty() {
            let written = ready!(Pin::new(&mut self.io).poll_write(cx, &self.buffer))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.buffer.advance(written);
        }
        self.buffer = BytesMut::new();
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn put_close(&mut self, code: u16, reason: &str) {
        let frame = Frame::close(Some(CloseFrame {
            code: WsCloseCode::from(code),
            reason: reason.into(),
        }));
        put_control(&mut self.buffer, frame);
        self.close_sent = true;
    }
}

impl<W: AsyncWrite + Unpin> Sink<ServerFrame> for FrameSink<W> {
    type Error = TransportError;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.buffer.len() >= FLUSH_AT {
            ready!(self.write_buffer(cx)).map_err(gone)?;
        }
        Poll::Ready(Ok(()))
    }

    fn start_send(mut self: Pin<&mut Self>, frame: ServerFrame) -> Result<(), Self::Error> {
        if self.close_sent {
            return Ok(());
        }
        let buffer = &mut self.buffer;
        match frame {
            ServerFrame::Text(text) => put_frame(buffer, OpCode::Data(Data::Text), &text),
            ServerFrame::Binary(data) => put_frame(buffer, OpCode::Data(Data::Binary), &data),
            ServerFrame::Ping => put_frame(buffer, OpCode::Control(Control::Ping), &[]),
            ServerFrame::Pong(payload) => {
                put_frame(buffer, OpCode::Control(Control::Pong), &payload)
            }
            ServerFrame::Framed(bytes) => buffer.extend_from_slice(&bytes),
            ServerFrame::Close { code, reason } => self.put_close(code.code(), &reason),
        }
        Ok(())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.write_buffer(cx).map_err(gone)
    }

    /// Answers a close the client started (1000), unless the session already sent its own,
    /// and ends the write direction.
    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if !self.close_sent {
            self.put_close(1000, "");
        }
        ready!(self.write_buffer(cx)).map_err(gone)?;
        Pin::new(&mut self.io).poll_shutdown(cx).map_err(gone)
    }
}

fn gone(error: io::Error) -> TransportError {
    TransportError::gone(error.to_string())
}
