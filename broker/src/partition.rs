//! One partition replica served by this broker: its log, its high
//! watermark, and the hand-off to the group-commit flusher.
//!
//! This is the one seam every write goes through ([`Partition::append`]);
//! replication will sit behind it. Invariants: the high watermark only
//! grows and never passes the durable end of a `fsync` topic (nor the log
//! end of any topic); a batch is validated in full before anything is
//! appended, so a refused produce changes nothing.

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use rill_client::protocol::ErrorCode;
use rill_storage::batch::{self, ValidBatch};
use rill_storage::{BatchError, Log, LogConfig, LogError, Offset, SyncDone, SyncPlan, Term};
use tokio::sync::watch;

/// The term single-node appends are written with (a one-member group that
/// never changes leader).
const SINGLE_NODE_TERM: Term = Term(1);

/// What an append wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Offset of the first record.
    pub base_offset: u64,
    /// The log end offset after it.
    pub next_offset: u64,
}

/// One partition replica.
#[derive(Debug)]
pub struct Partition {
    /// The topic's name.
    pub topic: String,
    /// The partition number.
    pub index: u32,
    /// Guards the log. Held only for in-memory work: an append copies into
    /// the mapping, a read looks up the index and returns shared slices, a
    /// sync plan lists ranges. Syncs run outside it; it is never held across
    /// an `.await`.
    log: Mutex<Log>,
    /// Whether a write counts only once fdatasync'ed.
    fsync: bool,
    max_batch_bytes: usize,
    /// Offsets below this are visible to consumers.
    high_watermark: watch::Sender<u64>,
    /// Offsets below this are durable in the topic's durability mode.
    durable: watch::Sender<u64>,
    /// Set when appends wait for the flusher; cleared when it plans a sync.
    dirty: AtomicBool,
}

fn storage_error(e: &LogError) -> ErrorCode {
    match e {
        LogError::Batch(BatchError::TooLarge { .. }) => ErrorCode::RecordTooLarge,
        LogError::Batch(_) => ErrorCode::CorruptMessage,
        LogError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
        _ => ErrorCode::StorageError,
    }
}

impl Partition {
    /// Opens (recovering) the partition's log in `dir`.
    pub fn open(
        topic: &str,
        index: u32,
        dir: &Path,
        config: LogConfig,
        fsync: bool,
    ) -> Result<Partition, LogError> {
        let max_batch_bytes = config.max_batch_bytes;
        let log = Log::open(dir, config)?;
        let end = log.next_offset().get();
        Ok(Partition {
            topic: topic.to_string(),
            index,
            log: Mutex::new(log),
            fsync,
            max_batch_bytes,
            high_watermark: watch::Sender::new(end),
            durable: watch::Sender::new(end),
            dirty: AtomicBool::new(false),
        })
    }

    fn log(&self) -> std::sync::MutexGuard<'_, Log> {
        // A panic while holding the lock would have been a bug in the log;
        // the log's own state is still consistent (appends are validated
        // before they change anything), so keep serving.
        self.log
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether writes wait for fdatasync.
    pub fn fsync(&self) -> bool {
        self.fsync
    }

    /// The high watermark.
    pub fn high_watermark(&self) -> u64 {
        *self.high_watermark.borrow()
    }

    /// Watches the high watermark.
    pub fn watch_high_watermark(&self) -> watch::Receiver<u64> {
        self.high_watermark.subscribe()
    }

    /// Watches the durable end.
    pub fn watch_durable(&self) -> watch::Receiver<u64> {
        self.durable.subscribe()
    }

    /// The log start offset.
    pub fn log_start_offset(&self) -> u64 {
        self.log().log_start_offset().get()
    }

    /// Validates every batch in `records` (chunks of whole batches), then
    /// appends them all. Returns whether the flusher must be woken (the
    /// partition became dirty).
    pub fn append(&self, records: &[Bytes]) -> Result<(Appended, bool), ErrorCode> {
        let mut batches: Vec<ValidBatch<'_>> = Vec::new();
        for chunk in records {
            let mut at = 0;
            while at < chunk.len() {
                let rest = &chunk[at..];
                let len = match batch::declared_batch_bytes(rest) {
                    Some(len) if len <= rest.len() as u64 => len as usize,
                    Some(len) if len > self.max_batch_bytes as u64 => {
                        return Err(ErrorCode::RecordTooLarge);
                    }
                    _ => return Err(ErrorCode::CorruptMessage),
                };
                match ValidBatch::new(&rest[..len], self.max_batch_bytes) {
                    Ok(b) if b.header().is_control() => return Err(ErrorCode::InvalidRequest),
                    Ok(b) => batches.push(b),
                    Err(BatchError::TooLarge { .. }) => return Err(ErrorCode::RecordTooLarge),
                    Err(_) => return Err(ErrorCode::CorruptMessage),
                }
                at += len;
            }
        }
        if batches.is_empty() {
            return Err(ErrorCode::InvalidRequest);
        }
        // Every batch is whole and valid: append them all, checking nothing
        // twice.
        let (first, next) = {
            let mut log = self.log();
            let mut first = None;
            for b in batches {
                let a = log
                    .append_valid(b, SINGLE_NODE_TERM)
                    .map_err(|e| storage_error(&e))?;
                first.get_or_insert(a.base_offset.get());
            }
            (first.expect("at least one batch"), log.next_offset().get())
        };
        debug_assert!(next > first, "a data batch takes at least one offset");
        if self.fsync {
            let newly_dirty = !self.dirty.swap(true, Ordering::AcqRel);
            Ok((
                Appended {
                    base_offset: first,
                    next_offset: next,
                },
                newly_dirty,
            ))
        } else {
            // Page-cache durability: in the mapping is durable enough.
            self.durable.send_modify(|d| *d = (*d).max(next));
            self.high_watermark.send_modify(|h| *h = (*h).max(next));
            Ok((
                Appended {
                    base_offset: first,
                    next_offset: next,
                },
                false,
            ))
        }
    }

    /// Whole batches from `offset`, up to `max_bytes` (at least one), below
    /// the high watermark, with the high watermark and log start offset.
    pub fn read(&self, offset: u64, max_bytes: u64) -> Result<(Vec<Bytes>, u64, u64), ErrorCode> {
        let hw = self.high_watermark();
        let log = self.log();
        let start = log.log_start_offset().get();
        if offset > hw || offset < start {
            return Err(ErrorCode::OffsetOutOfRange);
        }
        let chunks = log
            .read_below(Offset(offset), max_bytes, Offset(hw))
            .map_err(|e| storage_error(&e))?;
        Ok((chunks, hw, start))
    }

    /// The offset for a `ListOffsets` timestamp: earliest (-2), latest (-1),
    /// or the first record at or after a time (-1 when none is visible).
    pub fn offset_for(&self, timestamp_ms: i64) -> Result<i64, ErrorCode> {
        let hw = self.high_watermark();
        let log = self.log();
        match timestamp_ms {
            rill_client::protocol::messages::EARLIEST_TIMESTAMP => {
                Ok(log.log_start_offset().get() as i64)
            }
            rill_client::protocol::messages::LATEST_TIMESTAMP => Ok(hw as i64),
            t if t < 0 => Err(ErrorCode::InvalidRequest),
            t => Ok(
                match log.offset_for_timestamp(t).map_err(|e| storage_error(&e))? {
                    Some(o) if o.get() < hw => o.get() as i64,
                    _ => -1,
                },
            ),
        }
    }

    /// Takes the dirty mark and plans a sync of what was appended.
    pub fn plan_sync(&self) -> SyncPlan {
        self.dirty.store(false, Ordering::Release);
        self.log().sync_plan()
    }

    /// Records a completed sync and moves the durable end and, for a `fsync`
    /// topic, the high watermark.
    pub fn complete_sync(&self, done: SyncDone) -> Result<(), LogError> {
        let durable = self.log().complete_sync(done)?.offset.get();
        self.durable.send_modify(|d| *d = (*d).max(durable));
        if self.fsync {
            self.high_watermark.send_modify(|h| *h = (*h).max(durable));
        }
        Ok(())
    }

    /// Deletes segments past retention: taken out of the log under its
    /// lock, unlinked after it is released.
    pub fn apply_retention(&self) -> Result<(), LogError> {
        let (_, expired) = self.log().take_expired();
        expired.unlink()
    }

    /// Syncs everything appended so far (shutdown).
    pub fn flush(&self) -> Result<(), LogError> {
        let plan = self.plan_sync();
        let done = plan.run()?;
        self.complete_sync(done)
    }
}
