//! The tailer: one task per `__consumer_offsets` replica here, leader or
//! not, reading the replica's committed entries into its shard's state as
//! they commit, so a new leader has everything at hand once it has caught
//! up.
//!
//! Invariants: entries are read in Raft index order, owned copies read
//! with `pread` and checked against their CRC (records are looked inside,
//! so the mapping is never read from user space); `applied` moves only
//! after the entries below it are in the state; a damaged entry stops the
//! replica (and this task) rather than being skipped. The task holds
//! neither its shard nor its replica across a wait: once both are
//! dropped, it ends.

use std::sync::{Arc, Weak};
use std::time::Duration;

use rill_client::protocol::ErrorCode;
use rill_storage::{RaftIndex, RecordBatch};

use super::record;
use super::shard::Shard;

/// Most bytes the tailer reads from the log at a time.
const TAIL_READ_BYTES: u64 = 1 << 20;
/// How long the tailer waits for a change before looking whether its
/// shard is still wanted, ms.
const IDLE_CHECK_MS: u64 = 5_000;

/// Reads the shard's log into its state as entries commit, until the
/// shard is dropped or its replica stops.
pub(super) async fn tail(shard: Weak<Shard>) {
    let Some(mut next) = shard.upgrade().map(|s| s.partition().first_raft_index()) else {
        return;
    };
    loop {
        let Some(s) = shard.upgrade() else {
            return;
        };
        let partition = Arc::clone(s.partition());
        // Taken and marked seen before reading, so an entry applied after
        // the read wakes the wait.
        let mut watch = partition.watch_applied();
        watch.borrow_and_update();
        let caught_up = match partition.read_committed_owned(next, TAIL_READ_BYTES) {
            Ok(batches) if batches.is_empty() => true,
            Ok(batches) => {
                next = apply(&s, &batches, next);
                false
            }
            Err(ErrorCode::OffsetOutOfRange) if next < partition.first_raft_index() => {
                // The log starts past what was read: only a snapshot
                // install does that on this topic (nothing expires it),
                // and those records are gone. Say so loudly and go on from
                // the start: a group whose records went is rebuilt by its
                // members, not invented.
                let first = partition.first_raft_index();
                tracing::warn!(from = %next, to = %first, "the offsets log starts past what was applied");
                next = first;
                false
            }
            Err(ErrorCode::OffsetOutOfRange) => true,
            Err(_) => {
                // Damage stopped the replica (see
                // `Partition::read_committed_owned`); a new leader takes
                // over elsewhere.
                return;
            }
        };
        drop(s);
        if caught_up {
            if partition.is_failed() {
                return;
            }
            drop(partition);
            let _ =
                tokio::time::timeout(Duration::from_millis(IDLE_CHECK_MS), watch.changed()).await;
        }
    }
}

/// Applies `batches` (entries from Raft index `next` on); returns the
/// index after the last.
fn apply(shard: &Shard, batches: &[RecordBatch], mut next: RaftIndex) -> RaftIndex {
    let mut applied_offset = None;
    {
        let mut state = shard.lock_state();
        for batch in batches {
            let h = batch.header();
            next = RaftIndex(h.raft_index.get() + 1);
            applied_offset = Some(h.next_offset().get());
            if h.is_control() {
                continue;
            }
            for r in batch.records() {
                match r.map_err(|e| e.to_string()).and_then(|r| {
                    let offset = r.offset.get();
                    record::decode(r.key, r.value).map_err(|e| format!("offset {offset}: {e}"))
                }) {
                    Ok((key, value)) => state.apply(key, value),
                    // The batch passed its CRC: this is a record of a
                    // kind a newer broker wrote, skipped, not fatal.
                    Err(e) => tracing::warn!(error = %e, "skipped an offsets record"),
                }
            }
        }
    }
    if let Some(offset) = applied_offset {
        shard.set_applied(offset);
    }
    next
}
