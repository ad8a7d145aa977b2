//! Writing queued frames to a socket: frames are queued as lists of
//! `Bytes` parts (headers beside record batches that are never copied), and
//! every frame already waiting is gathered into one vectored write, so a
//! fetch response of many segment slices, or many small responses, costs
//! one `writev` rather than one `write` per part.
//!
//! Bounds: one call gathers at most [`GATHER_PARTS_MAX`] parts; frames
//! beyond that wait for the next call.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// Parts gathered into one vectored write, at most (Linux's `IOV_MAX`).
pub const GATHER_PARTS_MAX: usize = 1024;

/// Writes the frames queued on `frames` until the queue closes (`Ok`) or
/// the socket fails (`Err`).
pub async fn write_frames<W: AsyncWrite + Unpin>(
    socket: &mut W,
    frames: &mut mpsc::Receiver<Vec<Bytes>>,
) -> std::io::Result<()> {
    write_frames_within(socket, frames, None).await
}

/// As [`write_frames`], but gives up with `TimedOut` when one gathered
/// write takes longer than `write_timeout` (the peer stopped reading).
pub async fn write_frames_within<W: AsyncWrite + Unpin>(
    socket: &mut W,
    frames: &mut mpsc::Receiver<Vec<Bytes>>,
    write_timeout: Option<std::time::Duration>,
) -> std::io::Result<()> {
    let mut parts: VecDeque<Bytes> = VecDeque::new();
    while let Some(frame) = frames.recv().await {
        parts.extend(frame);
        while parts.len() < GATHER_PARTS_MAX {
            match frames.try_recv() {
                Ok(frame) => parts.extend(frame),
                Err(_) => break,
            }
        }
        match write_timeout {
            None => write_parts(socket, &mut parts).await?,
            Some(t) => tokio::time::timeout(t, write_parts(socket, &mut parts))
                .await
                .map_err(|_| {
                    std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("a write took longer than {} ms", t.as_millis()),
                    )
                })??,
        }
    }
    socket.flush().await
}

/// Writes every byte of `parts`, front first, emptying it.
pub async fn write_parts<W: AsyncWrite + Unpin>(
    socket: &mut W,
    parts: &mut VecDeque<Bytes>,
) -> std::io::Result<()> {
    while !parts.is_empty() {
        let written = {
            let slices: Vec<IoSlice<'_>> = parts
                .iter()
                .take(GATHER_PARTS_MAX)
                .map(|p| IoSlice::new(p))
                .collect();
            socket.write_vectored(&slices).await?
        };
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        consume(parts, written);
    }
    Ok(())
}

/// Drops the first `n` bytes of `parts`.
fn consume(parts: &mut VecDeque<Bytes>, mut n: usize) {
    while n > 0 {
        let front = parts
            .front_mut()
            .expect("never more bytes written than queued");
        if n < front.len() {
            front.advance(n);
            return;
        }
        n -= front.len();
        parts.pop_front();
    }
    // Empty parts written "for free" are dropped too.
    while parts.front().is_some_and(Bytes::is_empty) {
        parts.pop_front();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    /// A socket that accepts at most `step` bytes per call.
    struct Trickle {
        out: Vec<u8>,
        step: usize,
        calls: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            let n = buf.len().min(self.step);
            self.out.extend_from_slice(&buf[..n]);
            self.calls += 1;
            Poll::Ready(Ok(n))
        }
        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<std::io::Result<usize>> {
            let mut room = self.step;
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(room);
                self.out.extend_from_slice(&b[..take]);
                room -= take;
                n += take;
                if room == 0 {
                    break;
                }
            }
            self.calls += 1;
            Poll::Ready(Ok(n))
        }
        fn is_write_vectored(&self) -> bool {
            true
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn partial_writes_resume_mid_part_and_keep_every_byte_in_order() {
        for step in [1, 3, 7, 64, 1 << 20] {
            let mut socket = Trickle {
                out: Vec::new(),
                step,
                calls: 0,
            };
            let (tx, mut rx) = mpsc::channel(8);
            let frames: Vec<Vec<Bytes>> = vec![
                vec![
                    Bytes::from_static(b"ab"),
                    Bytes::new(),
                    Bytes::from_static(b"cdefg"),
                ],
                vec![Bytes::from_static(b"h")],
                vec![Bytes::from(vec![b'x'; 100]), Bytes::from_static(b"yz")],
            ];
            let mut want = Vec::new();
            for f in &frames {
                for p in f {
                    want.extend_from_slice(p);
                }
            }
            for f in frames {
                tx.send(f).await.unwrap();
            }
            drop(tx);
            write_frames(&mut socket, &mut rx).await.unwrap();
            assert_eq!(socket.out, want, "step {step}");
            if step == 1 << 20 {
                assert_eq!(socket.calls, 1, "queued frames go out in one call");
            }
        }
    }
}
