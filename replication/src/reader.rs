//! A replica's log as its readers see it: the broker's fetches, offset
//! lookups and file checks run on other threads than the one that writes
//! the log (the Raft thread, through [`crate::storage::ReplicaLog`]).
//!
//! Fetches and the log's bounds ([`ReplicaLogReader::fetch`],
//! [`ReplicaLogReader::log_start_offset`], [`ReplicaLogReader::next_offset`])
//! read the segments the log publishes ([`rill_storage::LogReader`]) and
//! never take the lock the writer holds while it appends: a fetch never
//! waits behind a write, nor a write behind a fetch. The other calls take
//! the log's lock, for in-memory work only (index lookups, `pread` of a
//! header), but for [`ReplicaLogReader::flush`] at shutdown. The reader
//! appends, truncates and resets nothing; a compaction pass
//! ([`ReplicaLogReader::compact`]) reads the published segments and writes
//! new files beside them, which the writer installs
//! ([`crate::Node::install_cleaned`]). What one call answers agrees
//! with itself; two calls may see the log move in between.

use bytes::Bytes;
use rill_storage::{
    Cleaned, CompactionSettings, IoBudget, LogError, LogPosition, LogReader, Offset, RaftIndex,
    RecordBatch, Term,
};

use crate::storage::{SharedLog, lock};

/// Reads one replica's log, from any thread. Cheap to clone: every clone
/// reads the same log. See the module documentation.
#[derive(Debug, Clone)]
pub struct ReplicaLogReader {
    log: SharedLog,
    /// The same log's published segments, read without its lock.
    view: LogReader,
}

/// What [`ReplicaLogReader::fetch`] found, read from one published view of
/// the log: its bounds when it looked, and the batches it read.
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
        let view = lock(&log).reader();
        ReplicaLogReader { log, view }
    }

    /// The first offset still stored (moved by retention). Never waits for
    /// the writer.
    pub fn log_start_offset(&self) -> Offset {
        self.view.log_start_offset()
    }

    /// The offset the next record will take (the log end offset). Never
    /// waits for the writer.
    pub fn next_offset(&self) -> Offset {
        self.view.next_offset()
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
    /// [`rill_storage::LogReader::read_below`]). The bounds and the batches
    /// come from one published view, so they agree; the writer's lock is
    /// never taken. The batches are views of the files' mappings, for the
    /// kernel to copy.
    ///
    /// A `limit` that is a high watermark must be loaded before the call:
    /// the entries below it are then the ones the view holds, whatever was
    /// truncated or written since.
    pub fn fetch(&self, from: Offset, max_bytes: u64, limit: Offset) -> Result<Fetched, LogError> {
        let read = self.view.read_below(from, max_bytes, limit)?;
        Ok(Fetched {
            log_start: read.log_start,
            log_end: read.log_end,
            batches: read.batches,
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

    /// Runs a compaction pass (see [`rill_storage::compaction`]) over the
    /// sealed segments below `committed` (the high watermark, loaded
    /// before the call) that are durable here too: a follower may learn of
    /// a commit before its own copy is synced, and a segment is only
    /// replaced by a cleaned one once its own bytes are on disk. Takes the
    /// log's lock only to read its settings and durable end; the pass reads
    /// the published segments. `Ok(None)` when `budget` stopped it.
    pub fn compact(
        &self,
        committed: Offset,
        settings: &CompactionSettings,
        now_ms: i64,
        budget: &mut dyn IoBudget,
    ) -> Result<Option<Cleaned>, LogError> {
        let (config, durable) = {
            let log = lock(&self.log);
            (log.config().clone(), log.durable().offset)
        };
        self.view
            .compact(committed.min(durable), &config, settings, now_ms, budget)
    }

    /// What a compaction pass over the sealed segments below `committed`
    /// that are durable here would cover (see [`LogReader::cleanable`]).
    /// Takes the log's lock for its durable end only.
    pub fn cleanable(&self, committed: Offset, dirty_from: Offset) -> rill_storage::Cleanable {
        let durable = lock(&self.log).durable().offset;
        self.view.cleanable(committed.min(durable), dirty_from)
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
