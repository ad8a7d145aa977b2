//! A replica's log as its readers see it: the broker's fetches, offset
//! lookups and file checks run on other threads than the one that writes
//! the log (the Raft thread, through [`crate::storage::ReplicaLog`]).
//!
//! [`ReplicaLogReader`] takes the log's lock for each call, for in-memory
//! work only (index lookups, slicing the mapping), but for
//! [`ReplicaLogReader::flush`] at shutdown; it appends, truncates and
//! resets nothing. Each call reads under one lock, so what one call
//! answers agrees with itself; two calls may see the log move in between.

use bytes::Bytes;
use rill_storage::{LogError, LogPosition, Offset, RaftIndex, RecordBatch, Term};

use crate::storage::{SharedLog, lock};

/// Reads one replica's log, from any thread. Cheap to clone: every clone
/// reads the same log. See the module documentation.
#[derive(Debug, Clone)]
pub struct ReplicaLogReader {
    log: SharedLog,
}

/// What [`ReplicaLogReader::fetch`] found, read under one lock: the log's
/// bounds when it looked, and the batches it read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The log start offset.
    pub log_start: Offset,
    /// The log end offset.
    pub log_end: Offset,
    /// Whole batches from the offset asked for (see
    /// [`ReplicaLogReader::fetch`]); none when that offset lies outside
    /// `[log_start, log_end]` or past the limit.
    pub batches: Vec<Bytes>,
}

impl ReplicaLogReader {
    /// A reader of `log`.
    pub(crate) fn new(log: SharedLog) -> ReplicaLogReader {
        ReplicaLogReader { log }
    }

    /// The first offset still stored (moved by retention).
    pub fn log_start_offset(&self) -> Offset {
        lock(&self.log).log_start_offset()
    }

    /// The offset the next record will take (the log end offset).
    pub fn next_offset(&self) -> Offset {
        lock(&self.log).next_offset()
    }

    /// The first Raft index still stored.
    pub fn first_raft_index(&self) -> RaftIndex {
        lock(&self.log).first_raft_index()
    }

    /// The Raft index the next batch will take.
    pub fn next_raft_index(&self) -> RaftIndex {
        lock(&self.log).next_raft_index()
    }

    /// Everything before this position is durable (synced).
    pub fn durable(&self) -> LogPosition {
        lock(&self.log).durable()
    }

    /// The term of the entry at `index` (see [`rill_storage::Log::term_of`]).
    pub fn term_of(&self, index: RaftIndex) -> Result<Term, LogError> {
        lock(&self.log).term_of(index)
    }

    /// The offset of the first record whose timestamp is at or after
    /// `timestamp_ms`, or `None` when there is no such record.
    pub fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<Option<Offset>, LogError> {
        lock(&self.log).offset_for_timestamp(timestamp_ms)
    }

    /// The log's bounds and, when `from` lies within them and not past
    /// `limit` (a high watermark), whole batches from `from` whose records
    /// all lie below `limit`, up to `max_bytes` (at least one; see
    /// [`rill_storage::Log::read_below`]). The bounds and the batches are
    /// read under one lock, so they agree. The batches are views of the
    /// files' mappings, for the kernel to copy.
    pub fn fetch(&self, from: Offset, max_bytes: u64, limit: Offset) -> Result<Fetched, LogError> {
        let log = lock(&self.log);
        let log_start = log.log_start_offset();
        let log_end = log.next_offset();
        let batches = if from < log_start || from > log_end || from > limit {
            Vec::new()
        } else {
            log.read_below(from, max_bytes, limit)?
        };
        Ok(Fetched {
            log_start,
            log_end,
            batches,
        })
    }

    /// The stored batches with Raft indexes in `[from, to)`, owned copies
    /// read with `pread`, at most `max_bytes` of them but at least one (see
    /// [`rill_storage::Log::read_entries_owned`]): for readers that look
    /// inside entries (the controller applying its commands).
    pub fn read_entries_owned(
        &self,
        from: RaftIndex,
        to: RaftIndex,
        max_bytes: u64,
    ) -> Result<Vec<RecordBatch>, LogError> {
        lock(&self.log).read_entries_owned(from, to, max_bytes)
    }

    /// Whether the segment files still hold every batch written to them
    /// (see [`rill_storage::Log::verify_files`]).
    pub fn verify_files(&self) -> Result<(), LogError> {
        lock(&self.log).verify_files()
    }

    /// Makes everything appended so far durable, at shutdown (see
    /// [`rill_storage::Log::flush`]): syncs under the lock, and writes the
    /// segments' index entries. Returns the durable position.
    pub fn flush(&self) -> Result<LogPosition, LogError> {
        lock(&self.log).flush()
    }
}
