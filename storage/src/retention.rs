//! Retention: deleting whole sealed segments by age and by size.
//!
//! Only sealed segments are deleted, oldest first, and only from the front,
//! so the log stays one seamless run; deleting one moves the log start offset
//! (which Raft will see as its snapshot point). The active segment is never
//! deleted. A segment's age is its newest record's timestamp, as in Kafka.

use crate::error::LogError;
use crate::log::Log;
use crate::types::Offset;

/// What one retention pass deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetentionOutcome {
    /// Segments deleted.
    pub segments_deleted: usize,
    /// Bytes of batches deleted.
    pub bytes_deleted: u64,
    /// The log start offset afterwards.
    pub log_start_offset: Offset,
}

impl Log {
    /// Deletes the oldest sealed segments while they are older than
    /// `retention_ms` or the log is larger than `retention_bytes` without
    /// them.
    pub fn apply_retention(&mut self) -> Result<RetentionOutcome, LogError> {
        let now_ms = self.clock.now_ms();
        let mut outcome = RetentionOutcome::default();
        let mut total = self.size_bytes();
        while self.segments.len() > 1 {
            let seg = self.segments.front().expect("more than one segment");
            let size = seg.size_bytes();
            let expired = self
                .config
                .retention_ms
                .is_some_and(|ms| seg.tail.max_timestamp_ms < now_ms.saturating_sub(ms as i64));
            let oversize = self
                .config
                .retention_bytes
                .is_some_and(|max| total - size >= max);
            if !(expired || oversize) {
                break;
            }
            seg.unlink()?;
            self.segments.pop_front();
            self.dir_generation += 1;
            total -= size;
            outcome.segments_deleted += 1;
            outcome.bytes_deleted += size;
        }
        outcome.log_start_offset = self.log_start_offset();
        if outcome.segments_deleted > 0 {
            tracing::debug!(dir = %self.dir().display(), ?outcome, "retention deleted segments");
        }
        Ok(outcome)
    }
}
