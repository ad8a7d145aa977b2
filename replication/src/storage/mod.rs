//! raft-rs's `Storage` over the partition's segment log: the Raft log *is*
//! the partition log, with no second write-ahead log.
//!
//! [`ReplicaLog`] owns a replica's [`ReplicaState`] (hard state and snapshot
//! point) and shares its [`Log`] with readers (fetches run on other
//! threads, through a [`ReplicaLogReader`]). Entries are read from the
//! segments as zero-copy slices.
//!
//! Invariants, checked on open and kept by every write:
//! - the log holds every entry after the snapshot point and nothing is
//!   missing: `log.first_raft_index() <= truncated.index + 1 <=
//!   log.next_raft_index()` (entries at or below the snapshot point may
//!   linger until retention unlinks them: Raft never reads them, a fetch
//!   may, and finds committed records);
//! - the first stored entry after the snapshot point starts at
//!   `truncated.next_offset`;
//! - `truncated.index <= hard.commit <= last index` (a commit index the log
//!   does not reach was never made durable with it, and is lowered);
//! - a saved commit index never passes the last entry applied, so the
//!   saved membership holds every membership change at or below it: a
//!   restart (which tells raft-rs everything up to the saved commit is
//!   applied) hands out again every change the saved membership lacks.
//!
//! Crash order: a new snapshot point is saved durably before the log is
//! reset to it, so a crash in between is finished on the next open.
//!
//! Where things live: this module holds the log side (open, append, the
//! log's syncs); `saving` the hard state saved beside it and what a saved
//! commit index may claim; `snapshot` the snapshot point, moved by a
//! leader's snapshot or by retention; `raft_reads` raft-rs's reads and what
//! a read that fails leaves behind.

mod raft_reads;
mod saving;
mod snapshot;

pub use raft_reads::ReadFailure;
pub use snapshot::snapshot_data;
pub(crate) use snapshot::snapshot_point;

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use raft::eraftpb::Entry;
use rill_storage::batch::ValidBatch;
use rill_storage::{
    Log, LogConfig, LogError, LogPosition, Offset, RaftIndex, SyncPlan, Term, control_batch,
};

use crate::entry::{self, Stored};
use crate::error::ReplicationError;
use crate::ids::BrokerId;
use crate::reader::ReplicaLogReader;
use crate::state::{ReplicaState, StateStore};

/// The timestamp of control batches: none.
pub const CONTROL_TIMESTAMP_MS: i64 = -1;

/// A replica's log shared with its readers (who see it through a
/// [`ReplicaLogReader`]). The lock guards in-memory work only (copies into
/// the mapping, index lookups, slicing); syncs run on a [`SyncPlan`]
/// outside it.
pub(crate) type SharedLog = Arc<Mutex<Log>>;

/// Locks a shared log. A panic under the lock would have been a bug in the
/// log, whose state stays consistent (appends are validated before they
/// change anything), so a poisoned lock is used as it is.
pub(crate) fn lock(log: &SharedLog) -> MutexGuard<'_, Log> {
    log.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// An entry checked for appending: a validated batch, or a control body.
enum Checked<'a> {
    Batch(ValidBatch<'a>),
    Control(Vec<u8>),
}

/// The Raft storage of one replica. See the module documentation.
#[derive(Debug)]
pub struct ReplicaLog {
    log: SharedLog,
    state: ReplicaState,
    store: Box<dyn StateStore>,
    /// A state sync handed out and not yet completed.
    state_sync_pending: bool,
    /// See [`ReplicaLog::set_entries_need_sync`].
    entries_need_sync: bool,
    /// The term and vote of the newest state known synced.
    durable_term_vote: (Term, Option<BrokerId>),
    /// The term and vote of the state whose sync is pending.
    pending_term_vote: (Term, Option<BrokerId>),
    /// A commit index newer than the saved one, recorded while a state sync
    /// was pending (see [`ReplicaLog::set_commit`]): saved with the next
    /// save.
    commit_unsaved: bool,
    /// Why the log could not be read back, once it could not (see
    /// [`ReplicaLog::read_failure`]).
    read_failure: std::sync::OnceLock<ReadFailure>,
    /// The last entry applied (its membership change, if any, is in
    /// `state.membership`): no saved commit index passes it.
    applied: RaftIndex,
}

impl ReplicaLog {
    /// Opens the replica in `dir`: its log (recovered) and its state from
    /// `store` (`state` is what the store loaded), then restores the
    /// invariants of the module documentation.
    pub fn open(
        dir: &Path,
        config: LogConfig,
        clock: Arc<dyn rill_storage::Clock>,
        store: Box<dyn StateStore>,
        state: ReplicaState,
    ) -> Result<ReplicaLog, ReplicationError> {
        // A hole past the saved commit is an unsynced tail: cut, and sent
        // again by the leader. One at or below it lost committed entries.
        // Segments before the snapshot point are not part of the log
        // (retention or a snapshot install took them; a crash came before
        // their unlink reached the disk).
        let log = Log::open_from(
            dir,
            config,
            clock,
            LogPosition {
                offset: state.truncated.next_offset,
                raft_index: state.truncated.index.next(),
            },
            state.hard.commit,
        )?;
        // What a store loads is what its disk holds (a file store syncs a
        // state found unsynced before handing it out).
        let term_vote = (state.hard.term, state.hard.vote);
        let mut me = ReplicaLog {
            log: Arc::new(Mutex::new(log)),
            state,
            store,
            state_sync_pending: false,
            entries_need_sync: true,
            durable_term_vote: term_vote,
            pending_term_vote: term_vote,
            commit_unsaved: false,
            read_failure: std::sync::OnceLock::new(),
            applied: RaftIndex(0),
        };
        me.reconcile()?;
        // raft-rs is told everything up to the saved commit is applied.
        me.applied = me.state.hard.commit;
        Ok(me)
    }

    fn reconcile(&mut self) -> Result<(), ReplicationError> {
        let t = self.state.truncated.clone();
        let expired = {
            let mut log = lock(&self.log);
            let first = log.first_raft_index();
            let next = log.next_raft_index();
            let covers = first <= t.index.next() && t.index.next() <= next;
            let agrees = || {
                t.index < first || t.index.get() == 0 || log.term_of(t.index).ok() == Some(t.term)
            };
            if covers && agrees() {
                None
            } else {
                tracing::warn!(
                    dir = %log.dir().display(),
                    snapshot_index = %t.index,
                    log_first = %first,
                    log_next = %next,
                    "log does not continue the snapshot point; restarting it there"
                );
                let expired = log.reset_to(
                    LogPosition {
                        offset: t.next_offset,
                        raft_index: t.index.next(),
                    },
                    t.term,
                )?;
                log.flush()?;
                Some(expired)
            }
        };
        if let Some(expired) = expired {
            expired.unlink()?;
        }
        let log = lock(&self.log);
        if log.next_raft_index() > t.index.next() {
            let first = log.read_entries(t.index.next(), t.index.next().next(), 0)?;
            let base = first
                .first()
                .map(|b| b.header().base_offset)
                .unwrap_or(t.next_offset);
            if base != t.next_offset {
                return Err(ReplicationError::BadEntry {
                    index: t.index.next().get(),
                    reason: "first entry after the snapshot point is not at its offset",
                });
            }
        }
        let last = RaftIndex(log.next_raft_index().get() - 1);
        let hard = &mut self.state.hard;
        if hard.commit > last {
            // The entries it vouched for were lost (a crash took bytes the
            // saved state was written without waiting for): only what the
            // log still holds can count, and the leader sends the rest.
            tracing::warn!(
                dir = %log.dir().display(),
                saved_commit = %hard.commit,
                last_index = %last,
                "saved commit index is past the log's end; lowered to it"
            );
        }
        hard.commit = hard.commit.min(last).max(t.index);
        Ok(())
    }

    /// Records that the entries through `index` were applied (any
    /// membership change among them recorded with
    /// [`ReplicaLog::set_membership`] first): saved commit indexes may
    /// reach it from now on.
    pub fn set_applied(&mut self, index: RaftIndex) {
        self.applied = self.applied.max(index);
    }

    /// The last entry applied.
    pub fn applied(&self) -> RaftIndex {
        self.applied
    }

    /// Records the membership the change at `index` led to; saved with the
    /// next save (which claims a commit through `index` only once it is
    /// applied). Changes at or below the current membership index are
    /// held already and must not come here.
    pub fn set_membership(&mut self, index: RaftIndex, membership: crate::state::Membership) {
        assert!(
            index > self.state.membership_index,
            "a membership change is applied once, in log order"
        );
        self.state.membership = membership;
        self.state.membership_index = index;
    }

    /// The shared log.
    pub(crate) fn log(&self) -> &SharedLog {
        &self.log
    }

    /// A reader of the log, for other threads.
    pub fn reader(&self) -> ReplicaLogReader {
        ReplicaLogReader::new(self.log.clone())
    }

    /// The persisted state as it stands (some of it perhaps not yet
    /// durable).
    pub fn state(&self) -> &ReplicaState {
        &self.state
    }

    /// The last Raft index stored.
    pub fn last_index(&self) -> RaftIndex {
        RaftIndex(lock(&self.log).next_raft_index().get() - 1)
    }

    /// The offset after the entry at `index` (the high watermark once
    /// `index` commits). `index` may be the snapshot point.
    pub fn next_offset_after(&self, index: RaftIndex) -> Result<Offset, ReplicationError> {
        let t = &self.state.truncated;
        if index <= t.index {
            return Ok(t.next_offset);
        }
        let log = lock(&self.log);
        let b = log.read_entries(index, index.next(), 0)?;
        let h = b
            .first()
            .map(|b| *b.header())
            .ok_or(ReplicationError::BadEntry {
                index: index.get(),
                reason: "entry missing from the log",
            })?;
        Ok(h.next_offset())
    }

    /// Appends entries from a Ready (the leader's own, or a leader's sent to
    /// this follower), first removing a conflicting suffix. With
    /// `checked_at_receipt`, the caller checked every data entry's batch
    /// when it reached this process (validated in full when proposed here,
    /// or by [`crate::entry::check_received`] when a leader's append
    /// arrived), and only its header and length are checked again; without
    /// it, its framing and CRC are checked here, not its records, which the
    /// leader that proposed it walked. Every entry is checked (indexes
    /// contiguous, terms never decreasing, batches framed) before the log
    /// changes, so a refused append leaves it as it was.
    pub fn append(
        &mut self,
        entries: &[Entry],
        checked_at_receipt: bool,
    ) -> Result<(), ReplicationError> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let mut log = lock(&self.log);
        let first_index = RaftIndex(first.index);
        let bad = |index: u64, reason| ReplicationError::BadEntry { index, reason };
        if first_index <= self.state.truncated.index {
            return Err(bad(first.index, "append at or below the snapshot point"));
        }
        if first_index > log.next_raft_index() {
            return Err(bad(first.index, "append past the end of the log"));
        }
        let prev = RaftIndex(first_index.get() - 1);
        let mut last_term = if prev == self.state.truncated.index {
            self.state.truncated.term
        } else {
            log.term_of(prev)?
        };
        let max_batch_bytes = log.config().max_batch_bytes;
        let mut stored = Vec::with_capacity(entries.len());
        for (i, e) in entries.iter().enumerate() {
            let (index, term) = (RaftIndex(e.index), Term(e.term));
            if index.get() != first_index.get() + i as u64 {
                return Err(bad(e.index, "entries not contiguous"));
            }
            if term < last_term {
                return Err(bad(e.index, "term lower than the entry before it"));
            }
            last_term = term;
            let checked = match entry::to_stored(e)? {
                Stored::Batch(data) => {
                    // Every data batch entered a Raft log through a leader
                    // that walked all its records (`CheckedBatch`); the CRC
                    // proves a replicated one is those bytes.
                    let batch = if checked_at_receipt {
                        ValidBatch::revalidated_by_caller(data)
                    } else {
                        ValidBatch::replicated(data, max_batch_bytes)
                    }
                    .map_err(|err| ReplicationError::from(LogError::from(err)))?;
                    if batch.header().is_control() {
                        return Err(bad(e.index, "a control batch as entry data"));
                    }
                    Checked::Batch(batch)
                }
                Stored::Control(body) => Checked::Control(body),
            };
            stored.push(checked);
        }
        if first_index < log.next_raft_index() {
            log.truncate_suffix(first_index)?;
        }
        for (e, checked) in entries.iter().zip(stored) {
            let (index, term) = (RaftIndex(e.index), Term(e.term));
            match checked {
                Checked::Batch(batch) => {
                    log.append_valid_at(batch, term, index)?;
                }
                Checked::Control(body) => {
                    // No timestamp (-1, as Kafka's NO_TIMESTAMP): the batch
                    // must be byte-identical on every replica, whose clocks
                    // differ.
                    let mut batch = control_batch(&body, CONTROL_TIMESTAMP_MS);
                    let next = log.next_offset();
                    rill_storage::batch::stamp(&mut batch, next, term, index);
                    log.append_entry(&batch, term, index)?;
                }
            }
        }
        Ok(())
    }

    /// Plans the sync of what was appended since the last one.
    pub fn sync_plan(&self) -> SyncPlan {
        lock(&self.log).sync_plan()
    }

    /// Records a log sync that ran.
    pub fn complete_log_sync(
        &mut self,
        done: rill_storage::SyncDone,
    ) -> Result<LogPosition, ReplicationError> {
        Ok(lock(&self.log).complete_sync(done)?)
    }

    /// The durable end of the log.
    pub fn durable(&self) -> LogPosition {
        lock(&self.log).durable()
    }
}
