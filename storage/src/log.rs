//! The log of one partition replica: a directory of segments.
//!
//! [`Log`] is the storage engine's front door: append (offsets assigned by
//! the log, or given by a leader for a replica), zero-copy reads by offset
//! and by Raft index, lookups by time, rolling, suffix truncation, retention
//! (see [`crate::retention`]) and durability as a step of its own (see
//! [`crate::sync`]). Other threads read it through [`Log::reader`], the view
//! it publishes (see [`crate::view`]), never through the writer.
//!
//! Invariants, asserted where data is written and checked again on open:
//! - segments are ordered and seamless: each starts at the offset and Raft
//!   index where the previous one ends; the last one is the only one
//!   appended to;
//! - offsets are gap-free (a zero-record control batch takes a Raft index
//!   but no offset), Raft indexes increase by one per batch, terms never
//!   decrease;
//! - a batch is validated in full before its first byte is copied, so a
//!   refused batch leaves the log exactly as it was;
//! - a byte once handed to a reader is never written again: truncation seals
//!   the segment at the cut and continues in a new file.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use crate::batch::{self, BatchHeader, Batches, RecordBatch, ValidBatch};
use crate::config::{Clock, LogConfig, SystemClock};
use crate::error::{BatchError, LogError};
use crate::recovery::{Expect, open_segment};
use crate::segment::{Segment, SegmentPaths, parse_segment_name};
use crate::types::{Offset, RaftIndex, Term};
use crate::view::{LogReader, PublishedSegments, SegmentView};

/// A point in the log: the next offset and the next Raft index to be written
/// there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct LogPosition {
    /// The next offset.
    pub offset: Offset,
    /// The next Raft index.
    pub raft_index: RaftIndex,
}

/// What an append wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Offset of the batch's first record (for a control batch, the offset
    /// the next record will take).
    pub base_offset: Offset,
    /// The log's next offset after this batch.
    pub next_offset: Offset,
    /// The batch's Raft index.
    pub raft_index: RaftIndex,
    /// The batch's term.
    pub term: Term,
    /// Size of the batch, bytes.
    pub batch_bytes: u64,
}

/// Raft entries shorter than this are read back as owned copies (`pread`)
/// rather than as bytes of the mapping: whoever sends or decodes them copies
/// them itself (a peer frame encodes data under 4 KiB inline), and a copy
/// out of a mapping whose file was cut short since the last length check
/// would raise SIGBUS. Longer ones are only ever copied by the kernel
/// (`writev`, `sendfile`), where a page gone is an error.
pub const ENTRY_COPY_BELOW_BYTES: u64 = 4096;

/// The log of one partition replica. See the module documentation.
#[derive(Debug)]
pub struct Log {
    dir: PathBuf,
    pub(crate) config: LogConfig,
    pub(crate) clock: Arc<dyn Clock>,
    /// Never empty; the last segment is the active one.
    pub(crate) segments: VecDeque<Segment>,
    /// Bumped whenever a file is created in or removed from `dir`.
    pub(crate) dir_generation: u64,
    /// The `dir_generation` last made durable.
    pub(crate) dir_synced_generation: u64,
    /// Bumped by every suffix truncation: a sync planned before one cannot
    /// vouch for what was written after it.
    pub(crate) truncations: u64,
    /// Everything before this position is durable.
    pub(crate) durable: LogPosition,
    /// The segments as readers see them ([`Log::reader`]): republished
    /// whenever one is created or taken out.
    published: Arc<PublishedSegments>,
    /// Held for the life of the log: one process per directory.
    _lock: File,
}

fn lock_dir(dir: &Path) -> Result<File, LogError> {
    let path = dir.join(".lock");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(LogError::io("open lock file", &path))?;
    // SAFETY: flock on an fd we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(LogError::io(
            "lock log directory (is another process using it?)",
            &path,
        )(std::io::Error::last_os_error()));
    }
    Ok(file)
}

impl Log {
    /// Opens the log in `dir` (creating it empty, at offset 0 and Raft index
    /// 1, when there is none), recovering the longest valid prefix.
    pub fn open(dir: impl AsRef<Path>, config: LogConfig) -> Result<Log, LogError> {
        Self::open_with_clock(dir, config, Arc::new(SystemClock))
    }

    /// As [`Log::open`], reading time from `clock` (for rolling and retention).
    pub fn open_with_clock(
        dir: impl AsRef<Path>,
        config: LogConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Log, LogError> {
        Self::open_committed_through(dir, config, clock, RaftIndex(u64::MAX))
    }

    /// As [`Log::open_with_clock`], for a log whose entries through
    /// `committed` were durable and counted as committed (a replica's saved
    /// commit index). A hole in the middle of the log at or below it fails
    /// the open ([`LogError::Hole`]); one past it is a tail that was never
    /// synced (a machine crash can leave a later segment's pages on disk
    /// and not an earlier one's), cut as a torn tail is, for Raft to send
    /// again.
    pub fn open_committed_through(
        dir: impl AsRef<Path>,
        config: LogConfig,
        clock: Arc<dyn Clock>,
        committed: RaftIndex,
    ) -> Result<Log, LogError> {
        Self::open_from(dir, config, clock, RaftIndex(0), committed)
    }

    /// As [`Log::open_committed_through`], for a log that needs nothing
    /// before `start` (a replica's first index after its snapshot point).
    /// Segments wholly before it are removed first: retention or a snapshot
    /// install took them and a crash came before their unlink reached the
    /// disk. Left in place, such a segment would sit before a gap (the
    /// entries between it and the log start were taken with it, or never
    /// held here) that recovery must count as a hole in committed entries.
    pub fn open_from(
        dir: impl AsRef<Path>,
        config: LogConfig,
        clock: Arc<dyn Clock>,
        start: RaftIndex,
        committed: RaftIndex,
    ) -> Result<Log, LogError> {
        config.validate()?;
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(LogError::io("create log directory", &dir))?;
        let lock = lock_dir(&dir)?;
        let mut bases = Vec::new();
        let mut stems = std::collections::BTreeSet::new();
        let mut others = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(LogError::io("list log directory", &dir))? {
            let entry = entry.map_err(LogError::io("list log directory", &dir))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(base) = parse_segment_name(name) {
                bases.push(base);
                stems.insert(name.trim_end_matches(".log").to_string());
            } else if let Some(stem) = name
                .strip_suffix(".index")
                .or_else(|| name.strip_suffix(".timeindex"))
            {
                others.push((stem.to_string(), entry.path()));
            }
        }
        // Index files without their segment would be mistaken for the index
        // of a future segment of the same name.
        for (stem, path) in others {
            if !stems.contains(&stem) {
                std::fs::remove_file(&path).map_err(LogError::io("remove orphan index", &path))?;
            }
        }
        bases.sort_by_key(|&(o, i)| (i, o));
        // A segment's entries end before the next one's base: when that base
        // is at or before `start`, none of them is needed.
        let below = bases.windows(2).take_while(|w| w[1].1 <= start).count();
        for &(o, i) in &bases[..below] {
            let paths = SegmentPaths::new(&dir, o, i);
            tracing::info!(
                segment = %paths.log.display(),
                %start,
                "removing a segment left before the log start"
            );
            for p in [&paths.log, &paths.index, &paths.timeindex] {
                match std::fs::remove_file(p) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(LogError::io("remove segment before the log start", p)(e));
                    }
                }
            }
        }
        bases.drain(..below);
        let mut log = Log {
            dir,
            config,
            clock,
            segments: VecDeque::new(),
            dir_generation: 0,
            dir_synced_generation: 0,
            truncations: 0,
            durable: LogPosition {
                offset: Offset(0),
                raft_index: RaftIndex(1),
            },
            published: Arc::new(PublishedSegments::new(Arc::new([]))),
            _lock: lock,
        };
        log.recover_segments(&bases, committed)?;
        log.durable = log.end();
        log.publish_segments();
        Ok(log)
    }

    /// Opens every segment in order, cutting the log at the first gap past
    /// `committed` and failing at one at or below it.
    fn recover_segments(
        &mut self,
        bases: &[(Offset, RaftIndex)],
        committed: RaftIndex,
    ) -> Result<(), LogError> {
        let mut last_term = Term(0);
        let mut i = 0;
        while i < bases.len() {
            let base = bases[i];
            let next = bases.get(i + 1).copied();
            let paths = SegmentPaths::new(&self.dir, base.0, base.1);
            let mut seg = open_segment(
                paths.clone(),
                base,
                Expect { last_term },
                next.map(|n| n.1),
                next.is_none(),
                &self.config,
            )?;
            if let Some(next) = next {
                let t = seg.tail;
                if (t.next_offset, t.next_raft_index) != next {
                    // A bad batch before the next segment's start. When a
                    // later segment holds a batch and the first entry
                    // missing was committed, this is a hole in the middle
                    // of the log: dropping everything after it would
                    // silently lose entries Raft counted as committed, so
                    // the log refuses to open. Otherwise it is the torn
                    // tail of a log that had just rolled (its later pages
                    // may have reached the disk before these), cut as the
                    // last segment's is.
                    if t.next_raft_index <= committed
                        && let Some(later) = self.first_with_a_batch(&bases[i + 1..])?
                    {
                        tracing::error!(
                            segment = %paths.log.display(),
                            position = t.position,
                            later = %later.display(),
                            "a bad batch in a sealed segment that later segments follow"
                        );
                        return Err(LogError::Hole {
                            path: paths.log.clone(),
                            position: t.position,
                            offset: t.next_offset,
                            raft_index: t.next_raft_index,
                        });
                    }
                    // A gap: everything after this segment is not part of the
                    // longest valid prefix.
                    tracing::warn!(
                        dir = %self.dir.display(),
                        segment = %paths.log.display(),
                        "segment ends before the next one starts; dropping the segments after it"
                    );
                    for &(o, r) in &bases[i + 1..] {
                        let p = SegmentPaths::new(&self.dir, o, r);
                        for f in [&p.log, &p.index, &p.timeindex] {
                            match std::fs::remove_file(f) {
                                Ok(()) => {}
                                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                                Err(e) => {
                                    return Err(LogError::io("remove segment after gap", f)(e));
                                }
                            }
                        }
                    }
                    self.dir_generation += 1;
                    drop(seg);
                    seg =
                        open_segment(paths, base, Expect { last_term }, None, true, &self.config)?;
                    self.segments.push_back(seg);
                    break;
                }
                if seg.is_empty() {
                    // An empty segment between two others adds nothing.
                    seg.unlink()?;
                    self.dir_generation += 1;
                    i += 1;
                    continue;
                }
            }
            last_term = seg.tail.last_term;
            self.segments.push_back(seg);
            i += 1;
        }
        if self.segments.is_empty() {
            let seg = Segment::create(&self.dir, Offset(0), RaftIndex(1), Term(0), &self.config)?;
            self.dir_generation += 1;
            self.segments.push_back(seg);
        }
        // Bytes past the last index entry may have been in the page cache
        // only (a killed process): make them durable before anything counts
        // on them. One `syncfs` covers every segment, where a sync per file
        // would flush the disk cache once per segment, and every directory
        // entry with them.
        if self.segments.iter().any(|s| !s.is_empty()) {
            let dir =
                File::open(&self.dir).map_err(LogError::io("open log directory", &self.dir))?;
            // SAFETY: syncfs on an fd we own.
            if unsafe { libc::syncfs(dir.as_raw_fd()) } != 0 {
                return Err(LogError::io("sync filesystem", &self.dir)(
                    std::io::Error::last_os_error(),
                ));
            }
            self.dir_synced_generation = self.dir_generation;
        } else {
            // An empty log: a crash can take nothing that counts, and the
            // next open makes again whatever it loses. Its directory (the
            // segment just created, or one created empty before a crash
            // whose entry may never have been synced) is synced with its
            // first entries, by the first sync plan: a topic of many
            // partitions is created without a directory sync per partition.
            self.dir_generation = self.dir_generation.max(1);
            self.dir_synced_generation = 0;
        }
        Ok(())
    }

    /// The first of the segments `bases` whose file starts with a batch
    /// header that passes its checks, if any (read with `pread`).
    fn first_with_a_batch(
        &self,
        bases: &[(Offset, RaftIndex)],
    ) -> Result<Option<PathBuf>, LogError> {
        use std::os::unix::fs::FileExt;
        for &(o, r) in bases {
            let path = SegmentPaths::new(&self.dir, o, r).log;
            let file = File::open(&path).map_err(LogError::io("open segment", &path))?;
            let mut head = [0u8; batch::HEADER_BYTES];
            match file.read_exact_at(&mut head, 0) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => continue,
                Err(e) => return Err(LogError::io("read segment", &path)(e)),
            }
            let valid = BatchHeader::decode(&head)
                .is_ok_and(|h| h.check(self.config.max_batch_bytes).is_ok() && h.raft_index == r);
            if valid {
                return Ok(Some(path));
            }
        }
        Ok(None)
    }

    /// Publishes the current segment list to readers (after a segment was
    /// created or taken out; appends publish their end themselves).
    pub(crate) fn publish_segments(&self) {
        let list: Arc<[Arc<SegmentView>]> =
            self.segments.iter().map(|s| Arc::clone(&s.view)).collect();
        self.published.publish(list);
    }

    /// A reader of this log for other threads, which never waits for the
    /// writer (see [`crate::view`]).
    pub fn reader(&self) -> LogReader {
        LogReader::new(Arc::clone(&self.published))
    }

    /// The directory the log lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The log's settings.
    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    pub(crate) fn active(&self) -> &Segment {
        self.segments
            .back()
            .expect("a log always has an active segment")
    }

    fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .back_mut()
            .expect("a log always has an active segment")
    }

    /// The first offset still stored (moved by retention).
    pub fn log_start_offset(&self) -> Offset {
        self.segments
            .front()
            .expect("a log always has a segment")
            .base_offset
    }

    /// The first Raft index still stored.
    pub fn first_raft_index(&self) -> RaftIndex {
        self.segments
            .front()
            .expect("a log always has a segment")
            .base_raft_index
    }

    /// The offset the next record will take (the log end offset).
    pub fn next_offset(&self) -> Offset {
        self.active().tail.next_offset
    }

    /// The Raft index the next batch will take.
    pub fn next_raft_index(&self) -> RaftIndex {
        self.active().tail.next_raft_index
    }

    /// The term of the last batch (0 for a log that never had one).
    pub fn last_term(&self) -> Term {
        self.active().tail.last_term
    }

    /// The end of the log: next offset and next Raft index.
    pub fn end(&self) -> LogPosition {
        LogPosition {
            offset: self.next_offset(),
            raft_index: self.next_raft_index(),
        }
    }

    /// Everything before this position is durable (synced).
    pub fn durable(&self) -> LogPosition {
        self.durable
    }

    /// Number of segments.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Base offset and base Raft index of every segment, oldest first.
    pub fn segment_bases(&self) -> Vec<(Offset, RaftIndex)> {
        self.segments
            .iter()
            .map(|s| (s.base_offset, s.base_raft_index))
            .collect()
    }

    /// Bytes of batches stored.
    pub fn size_bytes(&self) -> u64 {
        self.segments.iter().map(Segment::size_bytes).sum()
    }

    /// Appends a batch as the partition leader (or a single node): the log
    /// assigns the next offset and the next Raft index, and writes `term`.
    /// The batch is validated in full first; a refused batch changes nothing.
    pub fn append(&mut self, batch: &[u8], term: Term) -> Result<Appended, LogError> {
        self.append_valid(ValidBatch::new(batch, self.config.max_batch_bytes)?, term)
    }

    /// [`Log::append`] of a batch its caller validated already (for
    /// instance every batch of a request, before appending any). Only the
    /// size is checked again, against this log's limit.
    pub fn append_valid(
        &mut self,
        batch: ValidBatch<'_>,
        term: Term,
    ) -> Result<Appended, LogError> {
        let bytes = batch.bytes();
        if bytes.len() > self.config.max_batch_bytes {
            return Err(BatchError::TooLarge {
                batch_bytes: bytes.len() as u64,
                max_batch_bytes: self.config.max_batch_bytes as u64,
            }
            .into());
        }
        let end = self.end();
        self.append_validated(bytes, batch.header(), end.offset, term, end.raft_index)
    }

    /// [`Log::append_valid`] at a given Raft index (a Raft replica
    /// appending an entry, whose index the log must agree with). The base
    /// offset is the log's next offset, as on the leader, whatever the
    /// batch carried: offsets follow from the log prefix, so every replica
    /// writes the same ones.
    pub fn append_valid_at(
        &mut self,
        batch: ValidBatch<'_>,
        term: Term,
        raft_index: RaftIndex,
    ) -> Result<Appended, LogError> {
        let expected = self.next_raft_index();
        if raft_index != expected {
            return Err(LogError::RaftIndexOutOfOrder {
                expected,
                got: raft_index,
            });
        }
        self.append_valid(batch, term)
    }

    /// Appends a replicated entry: the batch's base offset (stamped by the
    /// leader) must be the log's next offset and `raft_index` its next index;
    /// `term` is written into the stored batch.
    pub fn append_entry(
        &mut self,
        batch: &[u8],
        term: Term,
        raft_index: RaftIndex,
    ) -> Result<Appended, LogError> {
        let header = batch::validate(batch, self.config.max_batch_bytes)?;
        let end = self.end();
        if raft_index != end.raft_index {
            return Err(LogError::RaftIndexOutOfOrder {
                expected: end.raft_index,
                got: raft_index,
            });
        }
        if header.base_offset != end.offset {
            return Err(LogError::OffsetOutOfOrder {
                expected: end.offset,
                got: header.base_offset,
            });
        }
        self.append_validated(batch, &header, end.offset, term, raft_index)
    }

    fn append_validated(
        &mut self,
        batch: &[u8],
        header: &BatchHeader,
        base_offset: Offset,
        term: Term,
        raft_index: RaftIndex,
    ) -> Result<Appended, LogError> {
        let last = self.last_term();
        if term < last {
            return Err(LogError::TermRegressed { last, got: term });
        }
        let len = batch.len() as u64;
        let span = header.offset_span();
        let now_ms = self.clock.now_ms();
        let active = self.active();
        let too_old = self
            .config
            .segment_ms
            .zip(active.first_append_ms)
            .is_some_and(|(max_ms, first)| now_ms.saturating_sub(first) >= max_ms as i64);
        if !active.is_empty() && (too_old || !active.fits(len, span)) {
            self.roll()?;
        }
        let config = &self.config;
        let seg = self
            .segments
            .back_mut()
            .expect("a log always has an active segment");
        assert!(
            seg.fits(len, span),
            "an empty segment holds any batch up to max_batch_bytes"
        );
        seg.append(batch, header, base_offset, term, raft_index, config)?;
        seg.first_append_ms.get_or_insert(now_ms);
        let next_offset = seg.tail.next_offset;
        debug_assert_eq!(next_offset.0, base_offset.0 + span);
        Ok(Appended {
            base_offset,
            next_offset,
            raft_index,
            term,
            batch_bytes: len,
        })
    }

    /// Seals the active segment and starts a new one at the log end. Does
    /// nothing when the active segment is empty.
    pub fn roll(&mut self) -> Result<(), LogError> {
        if self.active().is_empty() {
            return Ok(());
        }
        let tail = self.active().tail;
        let seg = Segment::create(
            &self.dir,
            tail.next_offset,
            tail.next_raft_index,
            tail.last_term,
            &self.config,
        )?;
        self.active_mut().seal();
        self.segments.push_back(seg);
        self.dir_generation += 1;
        self.publish_segments();
        Ok(())
    }

    /// Reads whole batches from the one holding `from`, up to the log end,
    /// as zero-copy slices of the segments (one `Bytes` per segment touched).
    /// Stops once `max_bytes` is reached, but always returns at least one
    /// whole batch when there is one.
    ///
    /// A segment file found shorter than its batches (cut short under the
    /// log) answers [`LogError::Damaged`]. The slices are views of the
    /// files' mappings, meant for the kernel to copy (a vectored write to a
    /// socket, which fails with `EFAULT` should the file be cut short
    /// meanwhile); a process that reads them itself while someone else may
    /// cut its files short risks SIGBUS, and should use
    /// [`Log::read_entries`], which copies.
    pub fn read(&self, from: Offset, max_bytes: u64) -> Result<Vec<Bytes>, LogError> {
        self.read_below(from, max_bytes, self.next_offset())
    }

    /// As [`Log::read`], returning only batches whose records all lie below
    /// `limit` (a high watermark).
    pub fn read_below(
        &self,
        from: Offset,
        max_bytes: u64,
        limit: Offset,
    ) -> Result<Vec<Bytes>, LogError> {
        let (start, end) = (self.log_start_offset(), self.next_offset());
        if from < start || from > end {
            return Err(LogError::OffsetOutOfRange {
                requested: from,
                log_start: start,
                log_end: end,
            });
        }
        // The writer publishes every change before it returns: its own
        // reader sees exactly this log.
        Ok(self.reader().read_below(from, max_bytes, limit)?.batches)
    }

    /// The stored batches with Raft indexes in `[from, to)`, at most
    /// `max_bytes` of them but at least one. Headers are read with
    /// `pread`; a batch shorter than [`ENTRY_COPY_BELOW_BYTES`] is an owned
    /// copy read with `pread`, a longer one zero-copy bytes of the mapping
    /// for the kernel to copy: a file cut short answers an error, never
    /// SIGBUS.
    pub fn read_entries(
        &self,
        from: RaftIndex,
        to: RaftIndex,
        max_bytes: u64,
    ) -> Result<Vec<RecordBatch>, LogError> {
        self.read_entries_copying_below(from, to, max_bytes, ENTRY_COPY_BELOW_BYTES)
    }

    /// As [`Log::read_entries`], every batch an owned copy read with
    /// `pread`: for readers that look inside entries of any size (the
    /// controller applying its commands).
    pub fn read_entries_owned(
        &self,
        from: RaftIndex,
        to: RaftIndex,
        max_bytes: u64,
    ) -> Result<Vec<RecordBatch>, LogError> {
        self.read_entries_copying_below(from, to, max_bytes, u64::MAX)
    }

    fn read_entries_copying_below(
        &self,
        from: RaftIndex,
        to: RaftIndex,
        max_bytes: u64,
        copy_below_bytes: u64,
    ) -> Result<Vec<RecordBatch>, LogError> {
        let (first, next) = (self.first_raft_index(), self.next_raft_index());
        if from < first || to > next || from > to {
            return Err(LogError::RaftIndexOutOfRange {
                requested: if from < first || from > to { from } else { to },
                first,
                next,
            });
        }
        let mut out = Vec::new();
        let mut budget = max_bytes;
        let mut index = from;
        let start = self
            .segments
            .partition_point(|s| s.tail.next_raft_index <= from);
        'segments: for seg in self.segments.iter().skip(start) {
            let Some(mut pos) = seg.position_for_raft_index(index)? else {
                continue;
            };
            while pos < seg.tail.position && index < to {
                let h = seg.header_at(pos)?;
                let len = h.batch_bytes();
                if len > budget && !out.is_empty() {
                    break 'segments;
                }
                // Zero-copy, as fetches are: raft-rs reads every committed
                // entry back to apply it, and a copy here was a second
                // memcpy of every byte produced (W1 -11%). The length is
                // checked (`fstat`) first and the header was read with
                // `pread`. Applying reads no data, and the data of entries
                // sent to followers is copied by the kernel (writev,
                // sendfile), where a page cut away since the check is an
                // error. Shorter entries (control entries among them) are
                // copied by the process that sends or decodes them: read
                // with `pread`, they never fault.
                let bytes = if len < copy_below_bytes {
                    seg.read_owned(pos, pos + len)?
                } else {
                    seg.bytes(pos, pos + len)?
                };
                let b = RecordBatch::from_parts(h, bytes)?;
                if b.header().raft_index != index {
                    return Err(LogError::Damaged {
                        path: seg.paths.log.clone(),
                        position: pos,
                        reason: format!(
                            "the batch there carries raft index {}, not {index}",
                            b.header().raft_index
                        ),
                    });
                }
                out.push(b);
                budget = budget.saturating_sub(len);
                pos += len;
                index = index.next();
            }
            if index >= to {
                break;
            }
        }
        Ok(out)
    }

    /// The term of the entry at `index`.
    pub fn term_of(&self, index: RaftIndex) -> Result<Term, LogError> {
        // The last entry's term is kept in memory: Raft asks for it on
        // every proposal, and answering it needs no read of a file that
        // may have been damaged under the log.
        if index.next() == self.next_raft_index() && index >= self.first_raft_index() {
            return Ok(self.last_term());
        }
        let out_of_range = || LogError::RaftIndexOutOfRange {
            requested: index,
            first: self.first_raft_index(),
            next: self.next_raft_index(),
        };
        let i = self
            .segments
            .partition_point(|s| s.tail.next_raft_index <= index);
        let seg = self.segments.get(i).ok_or_else(out_of_range)?;
        let pos = seg
            .position_for_raft_index(index)?
            .ok_or_else(out_of_range)?;
        Ok(seg.header_at(pos)?.raft_term)
    }

    /// The offset of the first record whose timestamp is at or after
    /// `timestamp_ms`, or `None` when there is no such record.
    pub fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<Option<Offset>, LogError> {
        for seg in &self.segments {
            let Some(mut pos) = seg.position_for_timestamp(timestamp_ms)? else {
                continue;
            };
            while pos < seg.tail.position {
                let h = seg.header_at(pos)?;
                let len = h.batch_bytes();
                if !h.is_control() && h.max_timestamp_ms >= timestamp_ms {
                    let b = RecordBatch::new(seg.read_owned(pos, pos + len)?, usize::MAX)?;
                    // Its records are about to be decoded: bytes that no
                    // longer match the CRC the log checked when it wrote
                    // them are damage, not a bad batch from a client.
                    b.verify_crc().map_err(|e| LogError::Damaged {
                        path: seg.paths.log.clone(),
                        position: pos,
                        reason: e.to_string(),
                    })?;
                    for r in b.records() {
                        let r = r?;
                        if r.timestamp_ms >= timestamp_ms {
                            return Ok(Some(r.offset));
                        }
                    }
                }
                pos += len;
            }
        }
        Ok(None)
    }

    /// Where the entry at Raft index `index`, of term `term`, lies in its
    /// segment file, or `None` when the log does not hold that entry
    /// (written) here, or its file cannot be read (the sender then sends
    /// the entry from memory, or learns of the damage from its next read).
    pub fn file_span(&self, index: RaftIndex, term: Term) -> Option<crate::FileSpan> {
        let i = self
            .segments
            .partition_point(|s| s.tail.next_raft_index <= index);
        let seg = self.segments.get(i)?;
        let position = seg.position_for_raft_index(index).ok()??;
        let h = seg.header_at(position).ok()?;
        (h.raft_index == index && h.raft_term == term).then(|| crate::FileSpan {
            file: Arc::clone(&seg.file),
            offset: position,
            len: h.batch_bytes(),
        })
    }

    /// Removes every entry with Raft index `from` or later (Raft conflict
    /// resolution). The segment holding `from` is sealed at the cut, or
    /// unlinked when the cut removes it whole, and appends continue in a new
    /// segment starting at the cut: no byte already written is rewritten.
    pub fn truncate_suffix(&mut self, from: RaftIndex) -> Result<(), LogError> {
        let (first, next) = (self.first_raft_index(), self.next_raft_index());
        if from == next {
            return Ok(());
        }
        if from < first || from > next {
            return Err(LogError::RaftIndexOutOfRange {
                requested: from,
                first,
                next,
            });
        }
        self.truncations += 1;
        // The offset at the cut, before anything is removed.
        let cut_offset = {
            let i = self
                .segments
                .partition_point(|s| s.tail.next_raft_index <= from);
            let seg = &self.segments[i];
            let pos = seg
                .position_for_raft_index(from)?
                .expect("from lies inside the log");
            seg.header_at(pos)?.base_offset
        };
        let mut prev_term = Term(0);
        while let Some(seg) = self.segments.back() {
            if seg.base_raft_index < from {
                break;
            }
            seg.unlink()?;
            self.segments.pop_back();
            self.dir_generation += 1;
        }
        if let Some(seg) = self.segments.back_mut() {
            let pos = seg
                .position_for_raft_index(from)?
                .unwrap_or(seg.tail.position);
            seg.seal_at(pos, Term(0))?;
            prev_term = seg.tail.last_term;
            debug_assert_eq!(seg.tail.next_raft_index, from);
            debug_assert_eq!(seg.tail.next_offset, cut_offset);
        }
        let seg = Segment::create(&self.dir, cut_offset, from, prev_term, &self.config);
        let seg = match seg {
            Ok(seg) => seg,
            Err(e) => {
                // Readers follow the log as far as the cut went.
                self.publish_segments();
                return Err(e);
            }
        };
        self.segments.push_back(seg);
        self.dir_generation += 1;
        self.durable = self.durable.min(self.end());
        self.publish_segments();
        Ok(())
    }

    /// Empties the log and restarts it at `next` (a Raft snapshot point: a
    /// follower too far behind its leader to be sent entries). `prev_term`
    /// is the term of the entry just before `next`. Every segment is taken
    /// out of the log (the caller unlinks them through the returned
    /// [`crate::Expired`], after releasing any lock, as for retention) and
    /// appends continue in a fresh segment at `next`.
    ///
    /// Crash safety is the caller's: record the snapshot point durably
    /// before calling this, and on open reset again when the log does not
    /// reach it (a crash between the two leaves either the old segments or
    /// none).
    pub fn reset_to(
        &mut self,
        next: LogPosition,
        prev_term: Term,
    ) -> Result<crate::expired::Expired, LogError> {
        let old: Vec<Segment> = self.segments.drain(..).collect();
        // A segment of the old log may carry the name the new one needs:
        // its files go first (readers keep their mappings).
        for seg in &old {
            if (seg.base_offset, seg.base_raft_index) == (next.offset, next.raft_index) {
                seg.unlink()?;
            }
        }
        self.truncations += 1;
        let seg = match Segment::create(
            &self.dir,
            next.offset,
            next.raft_index,
            prev_term,
            &self.config,
        ) {
            Ok(seg) => seg,
            Err(e) => {
                // Keep the log usable as it was rather than segment-less.
                self.segments.extend(old);
                return Err(e);
            }
        };
        self.segments.push_back(seg);
        self.dir_generation += 1;
        self.durable = self.end();
        self.publish_segments();
        let old = old
            .into_iter()
            .filter(|s| (s.base_offset, s.base_raft_index) != (next.offset, next.raft_index))
            .collect();
        Ok(crate::expired::Expired::of(old))
    }

    /// Checks that every segment file still holds the batches written to
    /// it (`fstat` of each): [`LogError::Damaged`] for the first that was
    /// cut short under the log. For deciding whether a replica that failed
    /// may be reopened, or waits for an operator.
    pub fn verify_files(&self) -> Result<(), LogError> {
        self.segments.iter().try_for_each(Segment::verify_length)
    }

    /// Flushes, writes every index entry, then closes the log: the next
    /// open scans nothing but the last batch of each segment.
    pub fn close(mut self) -> Result<(), LogError> {
        self.flush()?;
        for seg in self.segments.iter_mut() {
            seg.persist_indexes(true)?;
        }
        Ok(())
    }
}

/// Splits the chunks a read returned into batches (a convenience for callers
/// that want to look inside).
pub fn batches_of(
    chunks: &[Bytes],
    max_batch_bytes: usize,
) -> impl Iterator<Item = Result<RecordBatch, crate::error::BatchError>> + '_ {
    chunks
        .iter()
        .flat_map(move |c| Batches::new(c.clone(), max_batch_bytes))
}
