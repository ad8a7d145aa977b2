//! One segment: a `.log` file of consecutive batches, mapped in memory, with
//! its `.index` and `.timeindex`.
//!
//! A segment is named `<base_offset:020>-<base_raft_index:020>` (both numbers,
//! because a zero-record entry shares its offset with the next entry, so after
//! a truncation two segments can start at the same offset).
//!
//! Invariants kept here:
//! - batches are laid end to end from position 0; within a segment, Raft
//!   indexes increase by one per batch, offsets are contiguous and terms
//!   never decrease;
//! - `end <= file_bytes <= capacity`: the file is grown (`fallocate`) before a
//!   byte past its length is written, and nothing at or past `end` is ever
//!   handed to a reader;
//! - batches are written with `pwritev` and handed to fetches as zero-copy
//!   `Bytes` of the (read-only) mapping of the same file: the page cache is
//!   one, so what a write put there is what the mapping shows. Writing
//!   through the mapping instead would make the kernel zero every new page
//!   before the copy (a page fault per page, and twice the memory traffic);
//!   `pwritev` fills new pages straight from the batch;
//! - the log itself never reads the mapping: headers and any bytes it looks
//!   inside are read with `pread`, so a file cut short or failing under the
//!   log is an error ([`LogError::Damaged`]), not SIGBUS; a `Bytes` of the
//!   mapping is handed out only after `fstat` shows the file covers it;
//! - bytes before `end` are never written again; a truncation seals the
//!   segment at the cut instead of rewriting it.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use crate::batch::{self, BatchHeader};
use crate::config::LogConfig;
use crate::error::LogError;
use crate::index::{IndexFile, OffsetEntry};
use crate::mapping::SegmentMap;
use crate::timeindex::TimeEntry;
use crate::types::{Offset, RaftIndex, Term};
use crate::view::SegmentView;

/// The first step a new segment's file grows by, bytes.
pub(crate) const FIRST_GROW_STEP_BYTES: u64 = 64 * 1024;

/// The file paths of one segment.
#[derive(Debug, Clone)]
pub(crate) struct SegmentPaths {
    pub(crate) log: PathBuf,
    pub(crate) index: PathBuf,
    pub(crate) timeindex: PathBuf,
}

impl SegmentPaths {
    pub(crate) fn new(dir: &Path, base_offset: Offset, base_raft_index: RaftIndex) -> Self {
        let stem = format!("{:020}-{:020}", base_offset.0, base_raft_index.0);
        SegmentPaths {
            log: dir.join(format!("{stem}.log")),
            index: dir.join(format!("{stem}.index")),
            timeindex: dir.join(format!("{stem}.timeindex")),
        }
    }

    /// Removes the segment's files; one already gone is no error. `op`
    /// names the removal in an error.
    pub(crate) fn remove(&self, op: &'static str) -> Result<(), LogError> {
        for p in [&self.log, &self.index, &self.timeindex] {
            match std::fs::remove_file(p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(LogError::io(op, p)(e)),
            }
        }
        Ok(())
    }
}

/// Parses a segment file name `<offset:020>-<raft_index:020>.log`.
pub(crate) fn parse_segment_name(name: &str) -> Option<(Offset, RaftIndex)> {
    let stem = name.strip_suffix(".log")?;
    let (o, i) = stem.split_once('-')?;
    let digits = |s: &str| s.len() == 20 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(o) || !digits(i) {
        return None;
    }
    Some((Offset(o.parse().ok()?), RaftIndex(i.parse().ok()?)))
}

/// Whether the sparse index takes an entry for a batch starting at
/// `position`, given the bytes appended since the previous entry. Appends and
/// recovery scans share this rule, so a rebuilt index equals the original.
#[inline]
pub(crate) fn takes_index_entry(
    position: u64,
    bytes_since_entry: u64,
    interval_bytes: u64,
) -> bool {
    position > 0 && bytes_since_entry >= interval_bytes
}

/// The state at the end of a segment's batches: what the next batch must carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tail {
    pub(crate) position: u64,
    pub(crate) next_offset: Offset,
    pub(crate) next_raft_index: RaftIndex,
    pub(crate) last_term: Term,
    pub(crate) max_timestamp_ms: i64,
    pub(crate) bytes_since_entry: u64,
}

/// One segment of a log.
#[derive(Debug)]
pub(crate) struct Segment {
    pub(crate) base_offset: Offset,
    pub(crate) base_raft_index: RaftIndex,
    pub(crate) paths: SegmentPaths,
    pub(crate) file: Arc<File>,
    pub(crate) map: Arc<SegmentMap>,
    /// Current length of the file, bytes.
    file_bytes: u64,
    /// The end of the last batch and the state the next one continues from.
    pub(crate) tail: Tail,
    /// Bytes `[..synced_end]` are durable.
    pub(crate) synced_end: u64,
    pub(crate) index: IndexFile<OffsetEntry>,
    pub(crate) time_index: IndexFile<TimeEntry>,
    /// When the first batch was appended in this process (for `segment_ms`).
    pub(crate) first_append_ms: Option<i64>,
    /// Whether appends may still go here.
    pub(crate) active: bool,
    /// `synced_end` when the index files were last written.
    indexes_persisted_end: u64,
    /// What readers on other threads share of the segment: its end is
    /// published here after every write (see [`crate::view`]).
    pub(crate) view: Arc<SegmentView>,
}

/// Durable bytes an active segment accumulates between two writes of its
/// index files.
const INDEX_PERSIST_BYTES: u64 = 1 << 20;

/// Writes `parts` back to back at `position` of `file`: one `pwritev` for
/// both, repeated for whatever a short write left over.
fn write_all_at(
    file: &File,
    path: &Path,
    mut position: u64,
    mut parts: [&[u8]; 2],
) -> Result<(), LogError> {
    if let Some(e) = crate::fault::injected_enospc(path) {
        return Err(LogError::io("write segment", path)(e));
    }
    while parts.iter().any(|p| !p.is_empty()) {
        let iov = parts.map(|p| libc::iovec {
            iov_base: p.as_ptr() as *mut libc::c_void,
            iov_len: p.len(),
        });
        let offset = libc::off_t::try_from(position)
            .map_err(|_| LogError::io("write segment", path)(std::io::Error::other("offset")))?;
        // SAFETY: both iovecs point at live slices of their stated lengths,
        // only read by the kernel; the fd is ours and open for writing.
        let n = unsafe { libc::pwritev(file.as_raw_fd(), iov.as_ptr(), 2, offset) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(LogError::io("write segment", path)(e));
        }
        if n == 0 {
            return Err(LogError::io("write segment", path)(
                std::io::ErrorKind::WriteZero.into(),
            ));
        }
        let mut written = n as usize;
        position += written as u64;
        for p in &mut parts {
            let k = written.min(p.len());
            *p = &p[k..];
            written -= k;
        }
    }
    Ok(())
}

/// Grows `file` from `from_bytes` to `to_bytes` with zeros, without ever
/// shrinking it. `fallocate` reserves the blocks, so a full disk is an error
/// here, before any batch is written past the reserved end.
fn grow_file(file: &File, path: &Path, from_bytes: u64, to_bytes: u64) -> Result<(), LogError> {
    debug_assert!(to_bytes > from_bytes);
    if let Some(e) = crate::fault::injected_enospc(path) {
        return Err(LogError::io("fallocate", path)(e));
    }
    // SAFETY: fallocate on an fd we own, with in-range offsets; it only
    // allocates and extends.
    let rc = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            0,
            from_bytes as i64,
            (to_bytes - from_bytes) as i64,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EOPNOTSUPP) {
        // Filesystems without fallocate: extending with ftruncate is safe
        // (growing never invalidates mapped pages), it just reserves nothing.
        return file.set_len(to_bytes).map_err(LogError::io("grow", path));
    }
    Err(LogError::io("fallocate", path)(err))
}

impl Segment {
    /// Creates an empty active segment starting at `base_offset` and
    /// `base_raft_index`; `last_term` is the term of the entry before it.
    pub(crate) fn create(
        dir: &Path,
        base_offset: Offset,
        base_raft_index: RaftIndex,
        last_term: Term,
        config: &LogConfig,
    ) -> Result<Segment, LogError> {
        let paths = SegmentPaths::new(dir, base_offset, base_raft_index);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&paths.log)
            .map_err(LogError::io("create segment", &paths.log))?;
        let tail = Tail {
            position: 0,
            next_offset: base_offset,
            next_raft_index: base_raft_index,
            last_term,
            max_timestamp_ms: i64::MIN,
            bytes_since_entry: 0,
        };
        let index = IndexFile::new(paths.index.clone(), Vec::new());
        let time_index = IndexFile::new(paths.timeindex.clone(), Vec::new());
        Self::activate(paths, file, 0, tail, index, time_index, config)
    }

    /// Maps `file` (already `file_bytes` long, holding batches up to
    /// `tail.position`) as the active segment and grows it one step.
    pub(crate) fn activate(
        paths: SegmentPaths,
        file: File,
        file_bytes: u64,
        tail: Tail,
        index: IndexFile<OffsetEntry>,
        time_index: IndexFile<TimeEntry>,
        config: &LogConfig,
    ) -> Result<Segment, LogError> {
        let capacity = config.segment_bytes.max(file_bytes);
        let map =
            SegmentMap::map(&file, capacity).map_err(LogError::io("map segment", &paths.log))?;
        let (base_offset, base_raft_index) = parse_segment_name(
            paths
                .log
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default(),
        )
        .ok_or_else(|| LogError::Corrupt {
            path: paths.log.clone(),
            reason: "not a segment file name".into(),
        })?;
        let (file, map) = (Arc::new(file), Arc::new(map));
        let view = SegmentView::new(
            base_offset,
            paths.log.clone(),
            Arc::clone(&file),
            Arc::clone(&map),
            index.entries(),
            tail.position,
            tail.next_offset,
        );
        let mut seg = Segment {
            base_offset,
            base_raft_index,
            paths,
            file,
            map,
            file_bytes,
            synced_end: tail.position,
            tail,
            index,
            time_index,
            first_append_ms: None,
            active: true,
            indexes_persisted_end: 0,
            view: Arc::new(view),
        };
        // Room for the first appends now rather than on the first append.
        // Best effort: on a full disk the log still opens for reading, and
        // the first append reports the error.
        let first = (seg.tail.position + FIRST_GROW_STEP_BYTES).min(seg.capacity());
        let _ = seg.grow_to(first, config);
        Ok(seg)
    }

    /// Maps `file` read-only as a sealed segment whose batches end at
    /// `tail.position` (the file is exactly that long).
    pub(crate) fn sealed(
        paths: SegmentPaths,
        file: File,
        tail: Tail,
        index: IndexFile<OffsetEntry>,
        time_index: IndexFile<TimeEntry>,
        base: (Offset, RaftIndex),
    ) -> Result<Segment, LogError> {
        let map = SegmentMap::map(&file, tail.position)
            .map_err(LogError::io("map segment", &paths.log))?;
        let (file, map) = (Arc::new(file), Arc::new(map));
        let view = SegmentView::new(
            base.0,
            paths.log.clone(),
            Arc::clone(&file),
            Arc::clone(&map),
            index.entries(),
            tail.position,
            tail.next_offset,
        );
        Ok(Segment {
            base_offset: base.0,
            base_raft_index: base.1,
            paths,
            file,
            map,
            file_bytes: tail.position,
            synced_end: tail.position,
            tail,
            index,
            time_index,
            first_append_ms: None,
            active: false,
            indexes_persisted_end: 0,
            view: Arc::new(view),
        })
    }

    /// Mapped capacity, bytes.
    pub(crate) fn capacity(&self) -> u64 {
        self.map.capacity()
    }

    /// Bytes of batches in the segment.
    pub(crate) fn size_bytes(&self) -> u64 {
        self.tail.position
    }

    /// Whether the segment holds no batch.
    pub(crate) fn is_empty(&self) -> bool {
        self.tail.position == 0
    }

    /// Whether a batch of `batch_bytes` taking `offset_span` offsets still fits:
    /// in the mapping, and with relative offsets and indexes inside `u32`.
    pub(crate) fn fits(&self, batch_bytes: u64, offset_span: u64) -> bool {
        let rel_offset_end = self.tail.next_offset.0 - self.base_offset.0 + offset_span;
        let rel_index_end = self.tail.next_raft_index.0 - self.base_raft_index.0 + 1;
        self.active
            && self.tail.position + batch_bytes <= self.capacity()
            && rel_offset_end <= u64::from(u32::MAX)
            && rel_index_end <= u64::from(u32::MAX)
    }

    /// Makes the file at least `needed_bytes` long, growing it in whole steps
    /// (never past the mapping). Steps start at [`FIRST_GROW_STEP_BYTES`]
    /// and double with the file up to `grow_step_bytes`: a broker with
    /// thousands of mostly idle partitions does not reserve a full step of
    /// disk for each, while a busy segment soon grows in full steps.
    fn grow_to(&mut self, needed_bytes: u64, config: &LogConfig) -> Result<(), LogError> {
        if needed_bytes <= self.file_bytes {
            return Ok(());
        }
        let step = self
            .file_bytes
            .next_power_of_two()
            .clamp(
                FIRST_GROW_STEP_BYTES,
                config.grow_step_bytes.max(FIRST_GROW_STEP_BYTES),
            )
            .min(config.grow_step_bytes);
        let target = needed_bytes
            .div_ceil(step)
            .saturating_mul(step)
            .min(self.capacity())
            .max(needed_bytes);
        grow_file(&self.file, &self.paths.log, self.file_bytes, target)?;
        self.file_bytes = target;
        Ok(())
    }

    /// Copies a validated batch to the end of the segment and stamps its
    /// base offset, term and Raft index. The caller checked [`Segment::fits`]
    /// and the ordering rules.
    pub(crate) fn append(
        &mut self,
        batch: &[u8],
        header: &BatchHeader,
        base_offset: Offset,
        term: Term,
        raft_index: RaftIndex,
        config: &LogConfig,
    ) -> Result<u64, LogError> {
        debug_assert!(self.fits(batch.len() as u64, header.offset_span()));
        debug_assert_eq!(base_offset, self.tail.next_offset);
        debug_assert_eq!(raft_index, self.tail.next_raft_index);
        debug_assert!(term >= self.tail.last_term);
        let position = self.tail.position;
        let len = batch.len() as u64;
        // A write past the end of a file cut short under the log would
        // extend it again over a hole of zeros, hiding the damage from
        // every later length check while Raft reads the hole back.
        self.verify_file_bytes()?;
        self.grow_to(position + len, config)?;
        // The header is stamped on the way in, so each byte is written
        // exactly once. [position, position + len) is inside the file (grown
        // just above) and at or past `end`: no reader has seen it, and a
        // failed write leaves only bytes the next append writes over.
        let mut head = [0u8; batch::HEADER_BYTES];
        head.copy_from_slice(&batch[..batch::HEADER_BYTES]);
        batch::stamp(&mut head, base_offset, term, raft_index);
        write_all_at(
            &self.file,
            &self.paths.log,
            position,
            [&head, &batch[batch::HEADER_BYTES..]],
        )?;
        if takes_index_entry(
            position,
            self.tail.bytes_since_entry,
            config.index_interval_bytes,
        ) {
            let relative_offset = (base_offset.0 - self.base_offset.0) as u32;
            let entry = OffsetEntry {
                relative_offset,
                relative_raft_index: (raft_index.0 - self.base_raft_index.0) as u32,
                position: position as u32,
            };
            self.index.push(entry);
            self.view.index.push(&entry);
            self.time_index.push(TimeEntry {
                max_timestamp_before_ms: self.tail.max_timestamp_ms,
                relative_offset,
                position: position as u32,
            });
            self.tail.bytes_since_entry = 0;
        }
        self.tail = Tail {
            position: position + len,
            next_offset: Offset(base_offset.0 + header.offset_span()),
            next_raft_index: raft_index.next(),
            last_term: term,
            max_timestamp_ms: self.tail.max_timestamp_ms.max(header.max_timestamp_ms),
            bytes_since_entry: self.tail.bytes_since_entry + len,
        };
        // Written above: readers may have it now.
        self.view
            .publish_end(self.tail.position, self.tail.next_offset);
        Ok(position)
    }

    /// A `Damaged` error for this segment at `position`.
    fn damaged(&self, position: u64, reason: impl Into<String>) -> LogError {
        self.view.damaged(position, reason)
    }

    /// Reads `buf.len()` bytes at `position` with `pread` (see
    /// [`SegmentView::read_exact_at`]).
    fn read_exact_at(&self, buf: &mut [u8], position: u64) -> Result<(), LogError> {
        self.view.read_exact_at(buf, position)
    }

    /// The header of the batch at `position`, which must be a batch start
    /// inside the written prefix. Read with `pread`, never from the
    /// mapping; a header that does not fit the written prefix is damage.
    pub(crate) fn header_at(&self, position: u64) -> Result<BatchHeader, LogError> {
        self.view.header_at(position, self.tail.position)
    }

    /// An owned copy of bytes `[start, end)` of the written prefix, read
    /// with `pread`: for readers that look inside the bytes (record
    /// decoding, Raft entries), which must never touch the mapping.
    pub(crate) fn read_owned(&self, start: u64, end: u64) -> Result<Bytes, LogError> {
        assert!(
            start <= end && end <= self.tail.position,
            "reads stay inside the written prefix"
        );
        let mut buf = vec![0u8; (end - start) as usize];
        self.read_exact_at(&mut buf, start)?;
        Ok(Bytes::from(buf))
    }

    /// Checks (`fstat`) that the file still holds every batch written to
    /// it: [`LogError::Damaged`] when something cut it short.
    pub(crate) fn verify_length(&self) -> Result<(), LogError> {
        self.view.verify_length(self.tail.position)
    }

    /// The file's length now, bytes, from `fstat(2)`.
    fn current_file_bytes(&self) -> Result<u64, LogError> {
        self.view.current_file_bytes()
    }

    /// Checks (`fstat`) that the file is still as long as the log grew it:
    /// [`LogError::Damaged`] when something cut it short.
    fn verify_file_bytes(&self) -> Result<(), LogError> {
        let now = self.current_file_bytes()?;
        if now < self.file_bytes {
            return Err(self.damaged(
                now,
                format!(
                    "the file is {now} bytes; the log grew it to {} and wrote {} bytes of batches",
                    self.file_bytes, self.tail.position
                ),
            ));
        }
        Ok(())
    }

    /// Zero-copy bytes `[start, end)` of the written prefix, after `fstat`
    /// shows the file still covers it (see [`SegmentView::bytes`]). Callers
    /// that look inside the bytes use [`Segment::read_owned`].
    pub(crate) fn bytes(&self, start: u64, end: u64) -> Result<Bytes, LogError> {
        self.view.bytes(start, end, self.tail.position)
    }

    /// Position of the batch with Raft index `target`, or `None` when the
    /// segment does not hold it.
    pub(crate) fn position_for_raft_index(
        &self,
        target: RaftIndex,
    ) -> Result<Option<u64>, LogError> {
        if target < self.base_raft_index || target >= self.tail.next_raft_index {
            return Ok(None);
        }
        let rel = (target.0 - self.base_raft_index.0) as u32;
        let start = self
            .index
            .floor_by(rel, |e| e.relative_raft_index)
            .map_or(0, |e| u64::from(e.position));
        self.walk(start, |h| h.raft_index >= target)
    }

    /// Position of the first batch whose max timestamp is at or after
    /// `timestamp_ms`, or `None`.
    pub(crate) fn position_for_timestamp(
        &self,
        timestamp_ms: i64,
    ) -> Result<Option<u64>, LogError> {
        if self.tail.max_timestamp_ms < timestamp_ms {
            return Ok(None);
        }
        let entries = self.time_index.entries();
        let n = entries.partition_point(|e| e.max_timestamp_before_ms < timestamp_ms);
        let start = n
            .checked_sub(1)
            .map_or(0, |i| u64::from(entries[i].position));
        self.walk(start, |h| h.max_timestamp_ms >= timestamp_ms)
    }

    /// Walks batch headers from `position` to the first that satisfies `stop`.
    fn walk(
        &self,
        position: u64,
        stop: impl Fn(&BatchHeader) -> bool,
    ) -> Result<Option<u64>, LogError> {
        Ok(self.walk_to(position, stop)?.map(|(p, _)| p))
    }

    /// Calls `f` with the header of every batch, in order (read with
    /// `pread`, as every header is).
    pub(crate) fn for_each_header(&self, mut f: impl FnMut(&BatchHeader)) -> Result<(), LogError> {
        let mut position = 0;
        while position < self.tail.position {
            let h = self.header_at(position)?;
            f(&h);
            position += h.batch_bytes();
        }
        Ok(())
    }

    /// When the segment's file was last written, ms since the epoch.
    pub(crate) fn modified_ms(&self) -> Result<i64, LogError> {
        let path = &self.paths.log;
        let modified = self
            .file
            .metadata()
            .and_then(|m| m.modified())
            .map_err(LogError::io("read segment time", path))?;
        Ok(modified
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)))
    }

    /// As [`Segment::walk`], with the header found.
    fn walk_to(
        &self,
        mut position: u64,
        stop: impl Fn(&BatchHeader) -> bool,
    ) -> Result<Option<(u64, BatchHeader)>, LogError> {
        while position < self.tail.position {
            let h = self.header_at(position)?;
            if stop(&h) {
                return Ok(Some((position, h)));
            }
            position += h.batch_bytes();
        }
        Ok(None)
    }

    /// Seals the segment at `position` (a batch start): the batches from there
    /// on are cut off. The bytes stay in the file but are never read or
    /// written again; recovery ignores them because the next segment starts
    /// at the cut. `prev_term` is the term before this segment.
    pub(crate) fn seal_at(&mut self, position: u64, prev_term: Term) -> Result<(), LogError> {
        debug_assert!(position <= self.tail.position);
        // Recompute the tail from the last index entry before the cut.
        let entry = self
            .index
            .floor_by(position.saturating_sub(1), |e| u64::from(e.position));
        let time = self
            .time_index
            .entries()
            .iter()
            .rev()
            .find(|t| u64::from(t.position) < position)
            .copied();
        let mut tail = Tail {
            position: 0,
            next_offset: self.base_offset,
            next_raft_index: self.base_raft_index,
            last_term: prev_term,
            max_timestamp_ms: i64::MIN,
            bytes_since_entry: 0,
        };
        if let (Some(e), Some(t)) = (entry.filter(|e| u64::from(e.position) < position), time) {
            tail.position = u64::from(e.position);
            tail.next_offset = Offset(self.base_offset.0 + u64::from(e.relative_offset));
            tail.next_raft_index =
                RaftIndex(self.base_raft_index.0 + u64::from(e.relative_raft_index));
            tail.max_timestamp_ms = t.max_timestamp_before_ms;
        }
        while tail.position < position {
            let h = self.header_at(tail.position)?;
            tail.position += h.batch_bytes();
            tail.next_offset = h.next_offset();
            tail.next_raft_index = h.raft_index.next();
            tail.last_term = h.raft_term;
            tail.max_timestamp_ms = tail.max_timestamp_ms.max(h.max_timestamp_ms);
        }
        debug_assert_eq!(tail.position, position, "a cut falls on a batch boundary");
        self.index.truncate_from(position as u32);
        self.time_index.truncate_from(position as u32);
        // The index first: a reader that finds the new end finds no entry
        // past it.
        self.view.index.truncate(self.index.entries().len());
        self.view.publish_end(tail.position, tail.next_offset);
        self.tail = tail;
        self.synced_end = self.synced_end.min(position);
        self.active = false;
        Ok(())
    }

    /// Stops appends here (the log rolled to a new segment).
    pub(crate) fn seal(&mut self) {
        self.active = false;
    }

    /// Writes the index entries that the durable prefix covers.
    ///
    /// Unless `force`, an active segment writes them only once another
    /// [`INDEX_PERSIST_BYTES`] became durable: the files only shorten the scan
    /// after a crash, and writing them on every flush would add metadata to
    /// every journal commit.
    pub(crate) fn persist_indexes(&mut self, force: bool) -> Result<(), LogError> {
        let due = force
            || !self.active
            || self.index.needs_rewrite()
            || self.synced_end >= self.indexes_persisted_end + INDEX_PERSIST_BYTES;
        if !due {
            return Ok(());
        }
        self.indexes_persisted_end = self.synced_end;
        self.index
            .persist_below(self.synced_end)
            .map_err(LogError::io("write index", self.index.path()))?;
        self.time_index
            .persist_below(self.synced_end)
            .map_err(LogError::io("write time index", self.time_index.path()))?;
        // Closed between writes, which come once a MiB of log at most: a
        // broker with thousands of replicas would otherwise hold two more
        // open files for each (the limit, not the cost of an open, binds).
        self.index.close();
        self.time_index.close();
        Ok(())
    }

    /// Removes the segment's files. Readers holding its bytes keep them.
    pub(crate) fn unlink(&self) -> Result<(), LogError> {
        self.paths.remove("unlink")
    }
}
