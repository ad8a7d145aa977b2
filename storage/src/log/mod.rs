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
//! - the producer table ([`crate::producers`]) describes exactly the
//!   idempotent producers' batches the log holds: every append records
//!   one, a truncation forgets what it cut, a reset everything, and opening
//!   rebuilds it from the segments.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use crate::batch::{self, BatchHeader, Batches, RecordBatch, ValidBatch};
use crate::config::{Clock, LogConfig, SystemClock};
use crate::error::{BatchError, LogError};
use crate::producers::{ProducerBatch, ProducerSequence, ProducerTable, StoredAt};
use crate::recovery::{Expect, open_segment};
use crate::segment::{Segment, SegmentPaths, parse_segment_name};
use crate::types::{Offset, RaftIndex, Term};
use crate::view::{LogReader, PublishedSegments, SegmentView};

mod open;
pub use open::lock_directory;
mod read;
mod truncate;

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
    /// The idempotent producers whose batches the log holds (see
    /// [`crate::producers`]): recorded on every append, cut with the log,
    /// rebuilt on open.
    pub(crate) producers: ProducerTable,
    /// Held for the life of the log: one process per directory (unless
    /// its owner locks a directory above, `LogConfig::lock_dir`).
    _lock: Option<File>,
}

impl Log {
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

    /// The idempotent producers whose batches the log holds.
    pub fn producers(&self) -> &ProducerTable {
        &self.producers
    }

    /// The directory the log lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Changes the settings of a live log: retention and segment bounds
    /// take effect at the next retention pass and roll; a segment already
    /// created keeps its size. The largest batch stays as it is (a replica
    /// refusing what its leader accepted would fail it).
    pub fn set_config(&mut self, config: LogConfig) -> Result<(), LogError> {
        config.validate()?;
        if config.max_batch_bytes != self.config.max_batch_bytes {
            return Err(LogError::InvalidConfig(
                "the largest batch of a live log does not change".into(),
            ));
        }
        self.config = config;
        Ok(())
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
        if let Some(sequence) = ProducerSequence::of(header) {
            let at = StoredAt {
                base_offset,
                next_offset,
                raft_index,
                term,
            };
            self.producers
                .record(ProducerBatch { sequence, at }, now_ms);
        }
        self.producers
            .expire(now_ms, self.config.producer_expiration_ms);
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
