//! The read view a log publishes for readers on other threads: its segments
//! and where each one's batches end, read without the writer's lock.
//!
//! The writer ([`crate::Log`], on one thread) owns every [`Segment`] and
//! shares with readers one [`SegmentView`] per segment: the file, its
//! mapping, an append-only copy of its offset index, and two atomics, the
//! byte position and the offset where its whole batches end. The list of
//! views is swapped as a whole when a segment is created or taken out
//! (roll, truncation, reset, retention); [`LogReader`] reads through
//! whichever list it took.
//!
//! Invariants, which every read here leans on:
//! - the writer stores a segment's end (position, then offset, both
//!   `Release`) only after the bytes below it are written, so a reader that
//!   loads the offset and then the position (`Acquire`) finds whole
//!   batches below that position covering every record below that offset;
//! - a byte below a segment's end is never written again, a segment is
//!   appended to only while it is the last one, and an index entry once
//!   pushed is never rewritten (truncation seals the segment, so its index
//!   only shortens);
//! - readers never touch the mapping: headers are read with `pread`, and a
//!   `Bytes` of the mapping is handed out only after `fstat` shows the file
//!   still covers the segment's batches (a file cut short is an error, never
//!   SIGBUS). A segment taken out of the log stays readable through an old
//!   list: the open file and the mapping keep its bytes, even once unlinked;
//! - a reader that bounds its read by a high watermark loads that bound
//!   before it takes the list (see [`LogReader::read_below`]): entries below
//!   a high watermark are committed, never truncated, and so the same in
//!   every list published after it was read.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use bytes::Bytes;

use crate::batch::{self, BatchHeader};
use crate::error::LogError;
use crate::index::OffsetEntry;
use crate::mapping::{SegmentMap, shared_bytes};
use crate::types::Offset;

/// Entries in the first bucket of a [`SharedIndex`]; bucket `b` holds
/// `FIRST_BUCKET_ENTRIES << b`.
const FIRST_BUCKET_ENTRIES: usize = 64;

/// Buckets of a [`SharedIndex`]: room for `64 * (2^22 - 1)` entries, more
/// than the batches (at least `batch::HEADER_BYTES` each) of a segment,
/// whose positions are `u32`.
const INDEX_BUCKETS: usize = 22;

/// An append-only copy of a segment's offset index, readable while the
/// writer pushes: entries live in buckets of doubling size, allocated when
/// first needed, and never move; `len` is stored (`Release`) after the
/// entry it counts. Each entry packs the batch's offset relative to the
/// segment (high 32 bits) and its byte position (low 32 bits).
#[derive(Debug)]
pub(crate) struct SharedIndex {
    buckets: [OnceLock<Box<[AtomicU64]>>; INDEX_BUCKETS],
    len: AtomicUsize,
}

/// A decoded [`SharedIndex`] entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IndexPoint {
    /// The batch's base offset minus the segment's.
    pub(crate) relative_offset: u32,
    /// The batch's byte position in the segment.
    pub(crate) position: u32,
}

fn locate(i: usize) -> (usize, usize) {
    let j = i + FIRST_BUCKET_ENTRIES;
    let bucket = (usize::BITS - 1 - j.leading_zeros()) as usize
        - FIRST_BUCKET_ENTRIES.trailing_zeros() as usize;
    (bucket, j - (FIRST_BUCKET_ENTRIES << bucket))
}

impl SharedIndex {
    fn new(entries: &[OffsetEntry]) -> SharedIndex {
        let index = SharedIndex {
            buckets: std::array::from_fn(|_| OnceLock::new()),
            len: AtomicUsize::new(0),
        };
        for e in entries {
            index.push(e);
        }
        index
    }

    /// Entries readers may look at.
    fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    /// Entry `i`, which must be below a [`SharedIndex::len`] this thread
    /// loaded.
    fn get(&self, i: usize) -> IndexPoint {
        let (bucket, at) = locate(i);
        let packed = self.buckets[bucket]
            .get()
            .expect("an entry below the published length has its bucket")[at]
            .load(Ordering::Relaxed);
        IndexPoint {
            relative_offset: (packed >> 32) as u32,
            position: packed as u32,
        }
    }

    /// Appends an entry (the writer only).
    pub(crate) fn push(&self, e: &OffsetEntry) {
        let i = self.len.load(Ordering::Relaxed);
        let (bucket, at) = locate(i);
        let slots = self
            .buckets
            .get(bucket)
            .expect("an index holds at most one entry per batch of a 4 GiB segment")
            .get_or_init(|| {
                (0..FIRST_BUCKET_ENTRIES << bucket)
                    .map(|_| AtomicU64::new(0))
                    .collect()
            });
        slots[at].store(
            (u64::from(e.relative_offset) << 32) | u64::from(e.position),
            Ordering::Relaxed,
        );
        self.len.store(i + 1, Ordering::Release);
    }

    /// Keeps the first `len` entries (the writer only, for a segment sealed
    /// at a cut: nothing is pushed after, so no slot a reader may still
    /// look at is written again).
    pub(crate) fn truncate(&self, len: usize) {
        if len < self.len.load(Ordering::Relaxed) {
            self.len.store(len, Ordering::Release);
        }
    }

    /// How many of the first `len` entries satisfy `pred`, which must hold
    /// for a prefix of them.
    fn partition_point(&self, len: usize, pred: impl Fn(IndexPoint) -> bool) -> usize {
        let (mut lo, mut hi) = (0, len);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if pred(self.get(mid)) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }
}

/// What readers share of one segment. See the module documentation.
#[derive(Debug)]
pub(crate) struct SegmentView {
    pub(crate) base_offset: Offset,
    pub(crate) path: PathBuf,
    pub(crate) file: Arc<File>,
    pub(crate) map: Arc<SegmentMap>,
    pub(crate) index: SharedIndex,
    /// The byte position where the segment's whole batches end.
    end_position: AtomicU64,
    /// The offset after the segment's last batch.
    end_offset: AtomicU64,
}

/// Where a segment's batches ended when a reader looked.
#[derive(Debug, Clone, Copy)]
struct Written {
    position: u64,
}

impl SegmentView {
    pub(crate) fn new(
        base_offset: Offset,
        path: PathBuf,
        file: Arc<File>,
        map: Arc<SegmentMap>,
        entries: &[OffsetEntry],
        end_position: u64,
        end_offset: Offset,
    ) -> SegmentView {
        SegmentView {
            base_offset,
            path,
            file,
            map,
            index: SharedIndex::new(entries),
            end_position: AtomicU64::new(end_position),
            end_offset: AtomicU64::new(end_offset.get()),
        }
    }

    /// Publishes where the segment's batches end (the writer only, after
    /// writing them, or after sealing the segment at a cut).
    pub(crate) fn publish_end(&self, position: u64, offset: Offset) {
        self.end_position.store(position, Ordering::Release);
        self.end_offset.store(offset.get(), Ordering::Release);
    }

    fn end_offset(&self) -> Offset {
        Offset(self.end_offset.load(Ordering::Acquire))
    }

    /// Where the batches end: byte position and the offset after the last
    /// (for compaction, which reads sealed segments only, whose ends no
    /// longer move).
    pub(crate) fn sealed_end(&self) -> (u64, Offset) {
        (self.written().position, self.end_offset())
    }

    /// Where the batches end now. Loaded after the log end offset (see
    /// [`LogReader::read_below`]): the position may be further on, never
    /// short of the batches below that offset.
    fn written(&self) -> Written {
        Written {
            position: self.end_position.load(Ordering::Acquire),
        }
    }

    /// A `Damaged` error for this segment at `position`.
    pub(crate) fn damaged(&self, position: u64, reason: impl Into<String>) -> LogError {
        LogError::Damaged {
            path: self.path.clone(),
            position,
            reason: reason.into(),
        }
    }

    /// Reads `buf.len()` bytes at `position` with `pread`: a file cut short
    /// answers an error here, where touching the mapping would raise
    /// SIGBUS and take the whole process down.
    pub(crate) fn read_exact_at(&self, buf: &mut [u8], position: u64) -> Result<(), LogError> {
        use std::os::unix::fs::FileExt;
        self.file.read_exact_at(buf, position).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                self.damaged(
                    position,
                    format!(
                        "the file ends inside the {} bytes read there, which the log wrote",
                        buf.len()
                    ),
                )
            } else {
                LogError::io("read segment", &self.path)(e)
            }
        })
    }

    /// The header of the batch at `position`, a batch start below
    /// `written_end`, read with `pread`; a header that does not fit below
    /// `written_end` is damage.
    pub(crate) fn header_at(
        &self,
        position: u64,
        written_end: u64,
    ) -> Result<BatchHeader, LogError> {
        assert!(
            position < written_end,
            "headers are read inside the written prefix"
        );
        let mut head = [0u8; batch::HEADER_BYTES];
        self.read_exact_at(&mut head, position)?;
        let h = BatchHeader::decode(&head).map_err(|e| self.damaged(position, e.to_string()))?;
        let len = h.batch_bytes();
        if len < batch::HEADER_BYTES as u64 || position + len > written_end {
            return Err(self.damaged(
                position,
                format!(
                    "a batch header there declares {len} bytes; the segment's batches end at byte {written_end}"
                ),
            ));
        }
        Ok(h)
    }

    /// The file's length now, bytes, from `fstat(2)`: on the append and
    /// fetch paths, where `File::metadata` (`statx` asking for every field)
    /// costs measurably more.
    pub(crate) fn current_file_bytes(&self) -> Result<u64, LogError> {
        let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: fstat on an fd we own, writing into a buffer of its type.
        if unsafe { libc::fstat(self.file.as_raw_fd(), st.as_mut_ptr()) } != 0 {
            return Err(LogError::io("stat segment", &self.path)(
                std::io::Error::last_os_error(),
            ));
        }
        // SAFETY: fstat succeeded, so it filled the buffer.
        let st = unsafe { st.assume_init() };
        Ok(u64::try_from(st.st_size).unwrap_or(0))
    }

    /// Checks (`fstat`) that the file still holds the `written_end` bytes of
    /// batches written to it: [`LogError::Damaged`] when something cut it
    /// short.
    pub(crate) fn verify_length(&self, written_end: u64) -> Result<(), LogError> {
        let file_bytes = self.current_file_bytes()?;
        if file_bytes < written_end {
            return Err(self.damaged(
                file_bytes,
                format!(
                    "the file is {file_bytes} bytes, shorter than the {written_end} bytes of batches written"
                ),
            ));
        }
        Ok(())
    }

    /// Zero-copy bytes `[start, end)` of the `written_end` bytes of batches,
    /// after `fstat` shows the file still covers all of them: for the
    /// kernel to copy (a page that vanished after the check makes that copy
    /// fail with `EFAULT`, where a read from user space would raise
    /// SIGBUS).
    pub(crate) fn bytes(&self, start: u64, end: u64, written_end: u64) -> Result<Bytes, LogError> {
        assert!(
            start <= end && end <= written_end,
            "reads stay inside the written prefix"
        );
        if start == end {
            return Ok(Bytes::new());
        }
        // The whole written prefix, not just this range: a file cut short
        // anywhere is damage to report now, not at the next read past it.
        self.verify_length(written_end)?;
        // SAFETY: the range is inside the written prefix (asserted above),
        // whose bytes are never written again, and inside the file as it
        // is now (checked just above); `shared_bytes` asserts it is inside
        // the mapping.
        Ok(unsafe { shared_bytes(&self.map, start, (end - start) as usize) })
    }

    /// Position and header of the first batch below `written` whose
    /// offsets reach past `target` (the batch holding it, or the first
    /// after it), or `None`.
    fn batch_for_offset(
        &self,
        target: Offset,
        written: Written,
    ) -> Result<Option<(u64, BatchHeader)>, LogError> {
        let rel = target
            .0
            .saturating_sub(self.base_offset.0)
            .min(u64::from(u32::MAX)) as u32;
        // Entries pushed after `written` was loaded may point past it: the
        // walk starts only from one below it.
        let n = self.index.partition_point(self.index.len(), |e| {
            e.relative_offset <= rel && u64::from(e.position) < written.position
        });
        let mut position = match n.checked_sub(1) {
            Some(i) => u64::from(self.index.get(i).position),
            None => 0,
        };
        while position < written.position {
            let h = self.header_at(position, written.position)?;
            if h.next_offset() > target {
                return Ok(Some((position, h)));
            }
            position += h.batch_bytes();
        }
        Ok(None)
    }

    /// The end of a run of whole batches from `start`: as many as fit in
    /// `byte_budget` (but at least one when `at_least_one`, so a consumer
    /// never stalls on a batch larger than its budget), stopping before the
    /// first batch that reaches `offset_limit`. `first` is the header at
    /// `start` when the caller has read it already.
    ///
    /// Headers are read with `pread`, one system call each, so the walk
    /// first jumps over the batches the sparse index vouches for: the batch
    /// at an index entry starts at the entry's offset, so every batch
    /// before it ends at or below that offset.
    fn span_end(
        &self,
        start: u64,
        first: Option<BatchHeader>,
        byte_budget: u64,
        offset_limit: Offset,
        at_least_one: bool,
        written: Written,
    ) -> Result<u64, LogError> {
        let mut end = start;
        let mut known = first;
        let reach = self.index.partition_point(self.index.len(), |e| {
            u64::from(e.position) <= start.saturating_add(byte_budget)
                && u64::from(e.position) < written.position
                && self.base_offset.0 + u64::from(e.relative_offset) < offset_limit.0
        });
        if let Some(i) = reach.checked_sub(1) {
            let e = self.index.get(i);
            if u64::from(e.position) > start {
                // Strictly below the limit: a control batch before the
                // entry starts at or below the entry's offset, so below
                // the limit too.
                end = u64::from(e.position);
                known = None;
            }
        }
        while end < written.position {
            let h = match known.take() {
                Some(h) => h,
                None => self.header_at(end, written.position)?,
            };
            if h.next_offset() > offset_limit || (h.is_control() && h.base_offset >= offset_limit) {
                break;
            }
            let next = end + h.batch_bytes();
            if next - start > byte_budget && !(at_least_one && end == start) {
                break;
            }
            end = next;
        }
        Ok(end)
    }
}

/// The published list of a log's segments, oldest first (never empty).
///
/// The lock guards the pointer only: readers clone the `Arc` under it and
/// read after letting go; the writer swaps in a new list, built before it
/// takes the lock. Nothing slow (no I/O, no allocation) runs while it is
/// held.
#[derive(Debug)]
pub(crate) struct PublishedSegments {
    segments: RwLock<Arc<[Arc<SegmentView>]>>,
}

impl PublishedSegments {
    pub(crate) fn new(segments: Arc<[Arc<SegmentView>]>) -> PublishedSegments {
        PublishedSegments {
            segments: RwLock::new(segments),
        }
    }

    /// Replaces the list (the writer only).
    pub(crate) fn publish(&self, segments: Arc<[Arc<SegmentView>]>) {
        // A poisoned lock still holds a whole pointer: nothing runs under
        // it that could leave one half-written.
        let old = std::mem::replace(
            &mut *self
                .segments
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
            segments,
        );
        // Dropped once the lock is released: the old list may hold the
        // last reference to a segment taken out, whose file is closed and
        // mapping unmapped as it goes.
        drop(old);
    }

    fn load(&self) -> Arc<[Arc<SegmentView>]> {
        Arc::clone(
            &self
                .segments
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

/// What [`LogReader::read_below`] found: the log's bounds when it looked,
/// and the batches it read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRead {
    /// The log start offset.
    pub log_start: Offset,
    /// The log end offset.
    pub log_end: Offset,
    /// Whole batches from the offset asked for (see
    /// [`LogReader::read_below`]); none when that offset lies outside
    /// `[log_start, log_end]` or past the limit.
    pub batches: Vec<Bytes>,
}

/// Reads a log from any thread without its writer's lock, through the
/// segments the log last published. Cheap to clone. See the module
/// documentation.
#[derive(Debug, Clone)]
pub struct LogReader {
    published: Arc<PublishedSegments>,
}

impl LogReader {
    pub(crate) fn new(published: Arc<PublishedSegments>) -> LogReader {
        LogReader { published }
    }

    /// The segments as last published, oldest first; the last is the
    /// active one.
    pub(crate) fn segments(&self) -> Arc<[Arc<SegmentView>]> {
        self.published.load()
    }

    /// The first offset still stored (moved by retention).
    pub fn log_start_offset(&self) -> Offset {
        self.published
            .load()
            .first()
            .expect("a log always publishes a segment")
            .base_offset
    }

    /// The offset the next record will take (the log end offset).
    pub fn next_offset(&self) -> Offset {
        self.published
            .load()
            .last()
            .expect("a log always publishes a segment")
            .end_offset()
    }

    /// The log's bounds and, when `from` lies within them and not past
    /// `limit`, whole batches from `from` whose records all lie below
    /// `limit`, up to `max_bytes` (at least one when there is one), as
    /// zero-copy slices of the segments' mappings (one `Bytes` per segment
    /// touched), for the kernel to copy.
    ///
    /// The bounds and the batches come from one published list, so they
    /// agree. A caller bounding the read by a high watermark loads it
    /// before calling: entries below it are then the same in this list as
    /// in any later one (a truncation never cuts a committed entry), where
    /// a watermark loaded after the list might cover entries written since
    /// in place of ones this list still holds. A segment file found shorter
    /// than its batches answers [`LogError::Damaged`].
    pub fn read_below(
        &self,
        from: Offset,
        max_bytes: u64,
        limit: Offset,
    ) -> Result<LogRead, LogError> {
        let segments = self.published.load();
        let first = segments.first().expect("a log always publishes a segment");
        let last = segments.last().expect("a log always publishes a segment");
        let log_start = first.base_offset;
        let log_end = last.end_offset();
        let mut read = LogRead {
            log_start,
            log_end,
            batches: Vec::new(),
        };
        if from < log_start || from > log_end || from > limit {
            return Ok(read);
        }
        let limit = limit.min(log_end);
        let mut budget = max_bytes;
        let start = segments.partition_point(|s| s.end_offset() <= from);
        for (i, seg) in segments.iter().enumerate().skip(start) {
            let written = seg.written();
            let (pos, header) = if i == start {
                match seg.batch_for_offset(from, written)? {
                    Some((p, h)) => (p, Some(h)),
                    None => continue,
                }
            } else {
                (0, None)
            };
            let span_end =
                seg.span_end(pos, header, budget, limit, read.batches.is_empty(), written)?;
            if span_end == pos {
                break;
            }
            read.batches
                .push(seg.bytes(pos, span_end, written.position)?);
            budget = budget.saturating_sub(span_end - pos);
            if budget == 0 || span_end < written.position {
                break;
            }
        }
        Ok(read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_slots_are_laid_out_in_doubling_buckets_without_gaps() {
        let mut expected = (0, 0);
        for i in 0..10_000 {
            assert_eq!(locate(i), expected, "entry {i}");
            expected.1 += 1;
            if expected.1 == FIRST_BUCKET_ENTRIES << expected.0 {
                expected = (expected.0 + 1, 0);
            }
        }
        let most = (u64::from(u32::MAX) / batch::HEADER_BYTES as u64) as usize;
        assert!(locate(most).0 < INDEX_BUCKETS);
    }

    #[test]
    fn a_shared_index_reads_back_what_was_pushed_and_forgets_what_was_truncated() {
        let index = SharedIndex::new(&[]);
        for i in 0..1000u32 {
            index.push(&OffsetEntry {
                relative_offset: i * 2,
                relative_raft_index: i,
                position: i * 100,
            });
        }
        assert_eq!(index.len(), 1000);
        assert_eq!(
            index.get(777),
            IndexPoint {
                relative_offset: 1554,
                position: 77_700
            }
        );
        assert_eq!(
            index.partition_point(1000, |e| e.relative_offset <= 101),
            51
        );
        index.truncate(10);
        assert_eq!(index.len(), 10);
    }
}
