//! Retention: deleting whole sealed segments by age and by size.
//!
//! Only sealed segments are deleted, oldest first, and only from the front,
//! so the log stays one seamless run; deleting one moves the log start offset
//! (which Raft will see as its snapshot point). The active segment is never
//! deleted. A segment's age is its newest record's timestamp, as in Kafka.
//!
//! A caller that guards the log with a lock takes the expired segments out
//! under it ([`Log::take_expired`], no I/O) and unlinks them after letting
//! go ([`Expired::unlink`]), so readers and writers never wait on the file
//! system. A crash between the two leaves the files on disk; the next
//! open finds them and the next retention pass takes them again.

use crate::error::LogError;
use crate::expired::Expired;
use crate::log::Log;
use crate::types::{Offset, RaftIndex};

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
        let (outcome, expired) = self.take_expired();
        expired.unlink()?;
        Ok(outcome)
    }

    /// [`Log::apply_retention`] without the file system: takes the expired
    /// segments out of the log (moving the log start offset) and hands them
    /// back to be unlinked.
    pub fn take_expired(&mut self) -> (RetentionOutcome, Expired) {
        self.take_expired_through(RaftIndex(u64::MAX))
    }

    /// [`Log::take_expired`], taking only segments whose entries all lie at
    /// or below `through` (a Raft replica's applied index: nothing not yet
    /// committed is ever deleted).
    pub fn take_expired_through(&mut self, through: RaftIndex) -> (RetentionOutcome, Expired) {
        let now_ms = self.clock.now_ms();
        let mut outcome = RetentionOutcome::default();
        let mut expired = Expired {
            segments: Vec::new(),
        };
        let mut total = self.size_bytes();
        while self.segments.len() > 1 {
            let seg = self.segments.front().expect("more than one segment");
            let size = seg.size_bytes();
            let too_old = self
                .config
                .retention_ms
                .is_some_and(|ms| seg.tail.max_timestamp_ms < now_ms.saturating_sub(ms as i64));
            let oversize = self
                .config
                .retention_bytes
                .is_some_and(|max| total - size >= max);
            if !(too_old || oversize)
                || seg.tail.next_raft_index.get() > through.get().saturating_add(1)
            {
                break;
            }
            let seg = self.segments.pop_front().expect("more than one segment");
            expired.segments.push(seg);
            self.dir_generation += 1;
            total -= size;
            outcome.segments_deleted += 1;
            outcome.bytes_deleted += size;
        }
        outcome.log_start_offset = self.log_start_offset();
        if outcome.segments_deleted > 0 {
            self.publish_segments();
            tracing::debug!(dir = %self.dir().display(), ?outcome, "retention took segments");
        }
        (outcome, expired)
    }
}
