//! The writing half of a peer link: frames built from what is queued for
//! the peer, urgent messages first (see the module documentation of
//! `transport`), written with vectored writes and, for entry data, with
//! `sendfile` from the segment files; a beacon (an empty frame) when
//! asked for and nothing else goes.

use std::os::fd::AsRawFd;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use raft::eraftpb::Message;
use rill_storage::FileSpan;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc;

use super::{
    Bundle, FRAME_MESSAGES_MAX, FRAME_PAYLOAD_BYTES_MAX, FRAME_TARGET_BYTES, PEER_WRITE_MS_MAX,
    Slot,
};
use crate::ids::{BrokerId, GroupId};
use crate::wire::{EntrySpans, FRAME_HEADER_BYTES, Part, encode_frame_parts, encoded_len};

/// One frame as parts to write in order: the length prefix and the
/// payload, whose large entry data are shared, not copied, or sent from
/// their segment files. `payload_bytes` is the payload's exact length
/// ([`encoded_len`] summed, plus the header); callers keep it under
/// [`FRAME_PAYLOAD_BYTES_MAX`].
pub(super) fn frame_parts(
    from: BrokerId,
    messages: &[(GroupId, Message)],
    spans: &[EntrySpans],
    payload_bytes: usize,
) -> Vec<Part> {
    debug_assert!(payload_bytes <= FRAME_PAYLOAD_BYTES_MAX);
    let mut out = BytesMut::new();
    out.extend_from_slice(&(payload_bytes as u32).to_be_bytes());
    let mut parts = Vec::new();
    encode_frame_parts(from, messages, spans, &mut out, &mut parts);
    parts.push(Part::Bytes(out.freeze()));
    debug_assert_eq!(
        parts.iter().map(Part::len).sum::<usize>(),
        4 + payload_bytes,
        "the length prefix is the payload's length"
    );
    parts
}

/// Writes every byte of `parts`, front first: runs of bytes with vectored
/// writes, file spans with `sendfile` (the kernel takes the segment's
/// pages; the process copies nothing).
async fn write_parts(w: &mut OwnedWriteHalf, parts: Vec<Part>) -> std::io::Result<()> {
    let mut run: Vec<Bytes> = Vec::new();
    for part in parts {
        match part {
            Part::Bytes(b) => run.push(b),
            Part::File(span) => {
                write_bytes(w, std::mem::take(&mut run)).await?;
                send_file(w, &span).await?;
            }
        }
    }
    write_bytes(w, run).await
}

/// Sends `span` from its file with `sendfile`, waiting whenever the socket
/// is full.
async fn send_file(w: &mut OwnedWriteHalf, span: &FileSpan) -> std::io::Result<()> {
    let stream: &tokio::net::TcpStream = w.as_ref();
    let mut offset = span.offset as libc::off_t;
    let end = span.offset + span.len;
    while (offset as u64) < end {
        stream.writable().await?;
        let left = (end - offset as u64) as usize;
        let sent = stream.try_io(tokio::io::Interest::WRITABLE, || {
            // SAFETY: both descriptors are open for the call (the span
            // holds its file; `stream` its socket), and `offset` is a
            // valid out-parameter.
            let n = unsafe {
                libc::sendfile(stream.as_raw_fd(), span.file.as_raw_fd(), &mut offset, left)
            };
            if n < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        });
        match sent {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Writes every byte of `parts`, front first, with vectored writes.
async fn write_bytes(w: &mut OwnedWriteHalf, mut parts: Vec<Bytes>) -> std::io::Result<()> {
    let mut first = 0;
    while first < parts.len() {
        let slices: Vec<std::io::IoSlice<'_>> = parts[first..]
            .iter()
            .take(IOV_MAX)
            .map(|p| std::io::IoSlice::new(p))
            .collect();
        let mut written = w.write_vectored(&slices).await?;
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while written > 0 {
            let part = &mut parts[first];
            let n = written.min(part.len());
            bytes::Buf::advance(part, n);
            written -= n;
            if part.is_empty() {
                first += 1;
            }
        }
        while parts.get(first).is_some_and(Bytes::is_empty) {
            first += 1;
        }
    }
    Ok(())
}

/// Slices one vectored write takes at most (Linux's `IOV_MAX`).
const IOV_MAX: usize = 1024;

/// Sends what is queued for `peer` in frames of at most
/// [`FRAME_MESSAGES_MAX`] messages and about [`FRAME_TARGET_BYTES`] (a
/// lagging follower may be owed hundreds of MiB in one round). Before each
/// frame every urgent message queued by then is taken, and goes first;
/// appends are taken from their queue only about one frame ahead, so a
/// heartbeat or vote waits for at most the frame being written, never for
/// a backlog of appends. A single message too large for any frame is
/// dropped (cannot happen: a request, and so a batch, is at most 16 MiB).
/// With no connection, messages are dropped: Raft retransmits.
pub(super) async fn write_loop(
    id: BrokerId,
    peer: BrokerId,
    mut urgent: mpsc::Receiver<Bundle>,
    mut bulk: mpsc::Receiver<Bundle>,
    slot: Slot,
) {
    let mut pending = Pending::default();
    // An empty urgent bundle asks for a sign of life (`Transport::beacon`):
    // an empty frame, unless another frame goes first.
    let mut beacon = false;
    loop {
        while let Ok(b) = urgent.try_recv() {
            beacon |= b.is_empty();
            pending.push(id, b, true);
        }
        while pending.bulk_bytes < FRAME_TARGET_BYTES {
            match bulk.try_recv() {
                Ok(b) => pending.push(id, b, false),
                Err(_) => break,
            }
        }
        if pending.is_empty() {
            if std::mem::take(&mut beacon) {
                write_frame(&slot, peer, frame_parts(id, &[], &[], FRAME_HEADER_BYTES)).await;
                continue;
            }
            let (bundle, is_urgent) = tokio::select! {
                biased;
                b = urgent.recv() => (b, true),
                b = bulk.recv() => (b, false),
            };
            let Some(bundle) = bundle else { return };
            beacon |= is_urgent && bundle.is_empty();
            pending.push(id, bundle, is_urgent);
            continue;
        }
        let mut frame_msgs = Vec::new();
        let mut bytes = FRAME_HEADER_BYTES;
        let mut has_append = false;
        while let Some((len, is_urgent)) = pending.front() {
            if len + FRAME_HEADER_BYTES > FRAME_PAYLOAD_BYTES_MAX {
                tracing::warn!(%peer, len, "a Raft message too large for a peer frame; dropped");
                pending.pop();
                continue;
            }
            // Past the target a frame takes no more, except its first
            // append: urgent messages arriving during every write must not
            // hold back an append larger than the target for ever.
            let over = bytes + len > FRAME_TARGET_BYTES;
            if frame_msgs.len() >= FRAME_MESSAGES_MAX
                || (!frame_msgs.is_empty() && over && (is_urgent || has_append))
            {
                break;
            }
            bytes += len;
            has_append |= !is_urgent;
            frame_msgs.push(pending.pop().expect("front exists"));
        }
        if frame_msgs.is_empty() {
            continue;
        }
        let (frame_msgs, spans): (Vec<(GroupId, Message)>, Vec<EntrySpans>) =
            frame_msgs.into_iter().map(|(g, m, s)| ((g, m), s)).unzip();
        let out = frame_parts(id, &frame_msgs, &spans, bytes);
        beacon = false;
        write_frame(&slot, peer, out).await;
    }
}

/// Writes one frame on the peer's connection, if there is one. A peer
/// that vanished without a reset would hold the slot until TCP gave up: a
/// write that cannot finish in time drops the connection (the dialer
/// connects again).
async fn write_frame(slot: &Slot, peer: BrokerId, out: Vec<Part>) {
    let mut guard = slot.lock().await;
    if let Some((_, w)) = guard.as_mut() {
        let written = tokio::time::timeout(
            Duration::from_millis(PEER_WRITE_MS_MAX),
            write_parts(w, out),
        )
        .await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "peer connection lost");
                *guard = None;
            }
            Err(_) => {
                tracing::warn!(%peer, "peer connection stalled; dropping it");
                if let Some((_, mut w)) = guard.take() {
                    let _ = w.shutdown().await;
                }
            }
        }
    }
}

/// Messages taken from a peer's queues and not yet written: urgent ones
/// ahead of appends, each with its entries' file spans and its encoded
/// length.
#[derive(Default)]
struct Pending {
    urgent: std::collections::VecDeque<(GroupId, Message, EntrySpans, usize)>,
    bulk: std::collections::VecDeque<(GroupId, Message, EntrySpans, usize)>,
    /// Encoded bytes of `bulk`.
    bulk_bytes: usize,
}

impl Pending {
    fn push(&mut self, from: BrokerId, bundle: Bundle, urgent: bool) {
        for (g, m, s) in bundle {
            let len = encoded_len(from, g, &m);
            if urgent {
                self.urgent.push_back((g, m, s, len));
            } else {
                self.bulk_bytes += len;
                self.bulk.push_back((g, m, s, len));
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.urgent.is_empty() && self.bulk.is_empty()
    }

    /// The next message's encoded length, and whether it is urgent.
    fn front(&self) -> Option<(usize, bool)> {
        match self.urgent.front() {
            Some((_, _, _, len)) => Some((*len, true)),
            None => self.bulk.front().map(|(_, _, _, len)| (*len, false)),
        }
    }

    fn pop(&mut self) -> Option<(GroupId, Message, EntrySpans)> {
        if let Some((g, m, s, _)) = self.urgent.pop_front() {
            return Some((g, m, s));
        }
        let (g, m, s, len) = self.bulk.pop_front()?;
        self.bulk_bytes -= len;
        Some((g, m, s))
    }
}
