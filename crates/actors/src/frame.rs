//! Frames on a direct stream: a 4-byte big-endian length, then that many bytes.
//!
//! A length is a claim, not a fact: a frame over [`MESSAGE_BYTES_MAX`] is refused
//! ([`FrameError::TooLarge`]) before a byte of it is read, and a frame under it is read into a
//! buffer that grows as the bytes arrive (at most doubling what arrived, from
//! [`READ_CHUNK_BYTES`]), so a peer
//! that claims 8 MiB and sends 10 bytes costs us 10 bytes, not 8 MiB.

use std::io;

use async_trait::async_trait;
use bytes::Bytes;
use futures::prelude::*;
use libp2p::request_response;
use libp2p::StreamProtocol;

use crate::network::MESSAGE_BYTES_MAX;

/// A frame's first buffer; later it grows by at most what has arrived (doubling).
pub const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Why a frame was refused (carried inside the `io::Error` the codec returns).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame of {claimed} bytes exceeds the limit of {max} bytes")]
    TooLarge { claimed: usize, max: usize },
    #[error("frame claimed {claimed} bytes but the stream ended after {received}")]
    Truncated { claimed: usize, received: usize },
}

impl From<FrameError> for io::Error {
    fn from(e: FrameError) -> io::Error {
        let kind = match e {
            FrameError::TooLarge { .. } => io::ErrorKind::InvalidData,
            FrameError::Truncated { .. } => io::ErrorKind::UnexpectedEof,
        };
        io::Error::new(kind, e)
    }
}

/// Reads one frame of at most `max` bytes.
pub async fn read_frame<T: AsyncRead + Unpin + Send>(
    io: &mut T,
    max: usize,
) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let claimed = u32::from_be_bytes(len) as usize;
    if claimed > max {
        return Err(FrameError::TooLarge { claimed, max }.into());
    }
    // Bytes are read straight into the frame's buffer; its length grows only by what arrived,
    // its capacity at most doubles ahead of it (and never past the claim).
    let mut buf: Vec<u8> = Vec::with_capacity(READ_CHUNK_BYTES.min(claimed));
    let mut filled = 0;
    while filled < claimed {
        if filled == buf.capacity() {
            let grow = filled.max(READ_CHUNK_BYTES).min(claimed - filled);
            buf.reserve_exact(grow);
        }
        let want = (claimed - filled).min(buf.capacity() - filled);
        buf.resize(filled + want, 0);
        let n = io.read(&mut buf[filled..]).await?;
        buf.truncate(filled + n);
        if n == 0 {
            return Err(FrameError::Truncated {
                claimed,
                received: filled,
            }
            .into());
        }
        filled += n;
    }
    Ok(buf)
}

/// Writes one frame; refuses one over `max`.
pub async fn write_frame<T: AsyncWrite + Unpin + Send>(
    io: &mut T,
    bytes: &[u8],
    max: usize,
) -> io::Result<()> {
    if bytes.len() > max {
        return Err(FrameError::TooLarge {
            claimed: bytes.len(),
            max,
        }
        .into());
    }
    io.write_all(&(bytes.len() as u32).to_be_bytes()).await?;
    io.write_all(bytes).await?;
    io.close().await
}

/// Length-prefixed byte messages, refused above [`MESSAGE_BYTES_MAX`]; the response is an empty
/// acknowledgement (answers travel as messages of their own).
#[derive(Clone, Debug, Default)]
pub struct DirectCodec;

#[async_trait]
impl request_response::Codec for DirectCodec {
    type Protocol = StreamProtocol;
    type Request = Bytes;
    type Response = ();

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Bytes>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io, MESSAGE_BYTES_MAX).await.map(Bytes::from)
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<()>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut byte = [0u8; 1];
        io.read_exact(&mut byte).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Bytes,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &req, MESSAGE_BYTES_MAX).await
    }

    async fn write_response<T>(&mut self, _: &StreamProtocol, io: &mut T, _: ()) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.write_all(&[1]).await?;
        io.close().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    /// A stream that records the largest buffer it was asked to fill: a reader that allocated
    /// the claimed length up front hands it the whole of it.
    struct Probe {
        data: futures::io::Cursor<Vec<u8>>,
        largest_read: usize,
    }

    impl AsyncRead for Probe {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            self.largest_read = self.largest_read.max(buf.len());
            Pin::new(&mut self.data).poll_read(cx, buf)
        }
    }

    /// Reads a frame claiming `claimed` bytes with 10 behind it: the refusal, and the largest
    /// buffer the read used.
    async fn read_lie(claimed: u32) -> (FrameError, usize) {
        let mut probe = Probe {
            data: futures::io::Cursor::new(frame(claimed, &[7; 10])),
            largest_read: 0,
        };
        let e = read_frame(&mut probe, MESSAGE_BYTES_MAX).await.unwrap_err();
        (refusal(e), probe.largest_read)
    }

    #[tokio::test]
    async fn a_lying_length_costs_what_arrived_not_what_was_claimed() {
        // 4 GiB claimed: refused after the 4 bytes of the length.
        let (e, largest) = read_lie(u32::MAX).await;
        assert_eq!(
            e,
            FrameError::TooLarge {
                claimed: u32::MAX as usize,
                max: MESSAGE_BYTES_MAX
            }
        );
        assert_eq!(largest, 4);
        // The limit claimed, 10 bytes sent: the stream ends, and no buffer of the claimed size
        // was ever made.
        let (e, largest) = read_lie(MESSAGE_BYTES_MAX as u32).await;
        assert_eq!(
            e,
            FrameError::Truncated {
                claimed: MESSAGE_BYTES_MAX,
                received: 10
            }
        );
        assert!(largest <= READ_CHUNK_BYTES, "read into {largest} bytes");
    }

    #[tokio::test]
    async fn a_trickle_under_a_large_claim_grows_the_buffer_only_with_what_arrived() {
        let sent = 5 * READ_CHUNK_BYTES + 3;
        let mut probe = Probe {
            data: futures::io::Cursor::new(frame(MESSAGE_BYTES_MAX as u32, &vec![9; sent])),
            largest_read: 0,
        };
        let e = read_frame(&mut probe, MESSAGE_BYTES_MAX).await.unwrap_err();
        assert_eq!(
            refusal(e),
            FrameError::Truncated {
                claimed: MESSAGE_BYTES_MAX,
                received: sent
            }
        );
        // Each read asks for at most as much as had arrived before it (or the first chunk).
        assert!(
            probe.largest_read <= sent.max(READ_CHUNK_BYTES),
            "read into {} bytes after {sent}",
            probe.largest_read
        );
    }

    fn frame(claimed: u32, body: &[u8]) -> Vec<u8> {
        let mut v = claimed.to_be_bytes().to_vec();
        v.extend_from_slice(body);
        v
    }

    fn refusal(e: io::Error) -> FrameError {
        let kind = e.kind();
        let inner = e.into_inner().expect("a typed error");
        let f = *inner.downcast::<FrameError>().expect("a frame error");
        assert_eq!(
            kind,
            match f {
                FrameError::TooLarge { .. } => io::ErrorKind::InvalidData,
                FrameError::Truncated { .. } => io::ErrorKind::UnexpectedEof,
            }
        );
        f
    }

    #[tokio::test]
    async fn frames_round_trip_and_lies_are_refused() {
        let mut out = futures::io::Cursor::new(Vec::new());
        write_frame(&mut out, b"hello", 16).await.unwrap();
        let mut r = futures::io::Cursor::new(out.into_inner());
        assert_eq!(read_frame(&mut r, 16).await.unwrap(), b"hello");

        let mut big = futures::io::Cursor::new(frame(17, &[0; 17]));
        assert_eq!(
            refusal(read_frame(&mut big, 16).await.unwrap_err()),
            FrameError::TooLarge {
                claimed: 17,
                max: 16
            }
        );
        let mut short = futures::io::Cursor::new(frame(16, &[1; 10]));
        assert_eq!(
            refusal(read_frame(&mut short, 16).await.unwrap_err()),
            FrameError::Truncated {
                claimed: 16,
                received: 10
            }
        );
        let mut sink = futures::io::Cursor::new(Vec::new());
        assert!(matches!(
            refusal(write_frame(&mut sink, &[0; 17], 16).await.unwrap_err()),
            FrameError::TooLarge { .. }
        ));
    }

    #[tokio::test]
    async fn a_frame_larger_than_one_chunk_is_read_whole() {
        let body: Vec<u8> = (0..3 * READ_CHUNK_BYTES + 7).map(|i| i as u8).collect();
        let mut r = futures::io::Cursor::new(frame(body.len() as u32, &body));
        assert_eq!(read_frame(&mut r, MESSAGE_BYTES_MAX).await.unwrap(), body);
    }
}
