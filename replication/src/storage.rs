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
//!   does not reach was never made durable with it, and is lowered).
//!
//! Crash order: a new snapshot point is saved durably before the log is
//! reset to it, so a crash in between is finished on the next open.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use raft::eraftpb::{Entry, HardState as RaftHardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, StorageError};
use rill_storage::batch::ValidBatch;
use rill_storage::{
    Log, LogConfig, LogError, LogPosition, Offset, RaftIndex, SyncPlan, Term, control_batch,
};

use crate::entry::{self, Stored};
use crate::error::ReplicationError;
use crate::ids::BrokerId;
use crate::reader::ReplicaLogReader;
use crate::state::{HardState, Membership, ReplicaState, StateStore, StateSync, TruncatedState};

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

/// The snapshot a partition replica sends a follower that is behind its
/// log start: only the point (the log before it is gone by retention, and a
/// partition's "state machine" is the log itself). Its data is the next
/// offset, 8 bytes little-endian.
pub fn snapshot_data(next_offset: Offset) -> Bytes {
    Bytes::copy_from_slice(&next_offset.get().to_le_bytes())
}

/// The log start offset a snapshot's data holds, if it holds one.
pub(crate) fn snapshot_next_offset(data: &[u8]) -> Option<Offset> {
    Some(Offset(u64::from_le_bytes(data.try_into().ok()?)))
}

/// An entry checked for appending: a validated batch, or a control body.
enum Checked<'a> {
    Batch(ValidBatch<'a>),
    Control(Vec<u8>),
}

/// A read of a replica's log that failed (see
/// [`ReplicaLog::read_failure`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadFailure {
    /// What could not be read, and why.
    pub reason: String,
    /// Whether its files are damaged (reopening would find the same), not
    /// failed by I/O.
    pub damaged: bool,
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
        let log = Log::open_committed_through(dir, config, clock, state.hard.commit)?;
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
        };
        me.reconcile()?;
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

    /// Records a new hard state and saves it; returns the sync to run when
    /// it must be durable before messages depending on it leave. The
    /// commit index saved never passes the log's synced end, whatever the
    /// topic's durability mode (see [`ReplicaLog::durable_last_index`]): a
    /// state written before this round's log sync must not claim entries
    /// that a crash could still take away, or replace (a truncation's new
    /// segment).
    pub fn set_hard_state(
        &mut self,
        hs: &RaftHardState,
        durable: bool,
    ) -> Result<Option<StateSync>, ReplicationError> {
        let commit = RaftIndex(hs.commit).min(self.durable_last_index());
        let hard = HardState {
            term: Term(hs.term),
            vote: (hs.vote != 0).then_some(BrokerId(hs.vote)),
            commit: commit.max(self.state.truncated.index),
        };
        let (before, after) = (&self.state.hard, &hard);
        if !durable
            && self.state_sync_pending
            && (before.term, before.vote) == (after.term, after.vote)
        {
            // Only the commit index moved, while retention's state sync
            // runs (the group still takes Readies that save nothing else):
            // a hint, saved with the next save rather than over the slot
            // being synced.
            self.state.hard = hard;
            self.commit_unsaved = true;
            return Ok(None);
        }
        self.state.hard = hard;
        self.save(durable)
    }

    /// Records a newer commit index (from a `LightReady`, after the round's
    /// syncs); saved without a sync (a lost commit index is learnt again
    /// from the leader), and never past the synced end either. While a
    /// state sync is pending it is only recorded, and saved with the next
    /// save after the sync is handed back.
    pub fn set_commit(&mut self, commit: RaftIndex) -> Result<(), ReplicationError> {
        let commit = commit.min(self.durable_last_index());
        if commit > self.state.hard.commit || self.commit_unsaved {
            self.state.hard.commit = self.state.hard.commit.max(commit);
            if self.state_sync_pending {
                self.commit_unsaved = true;
                return Ok(());
            }
            if self.save(false)?.is_some() {
                unreachable!("a save not asked to be durable returns no sync");
            }
        }
        Ok(())
    }

    /// Whether entries count as persisted only once synced (`fsync=true`
    /// topics) or once in the mapping.
    pub fn set_entries_need_sync(&mut self, need_sync: bool) {
        self.entries_need_sync = need_sync;
    }

    /// The last entry persisted in the topic's durability mode: synced, or
    /// (`fsync=false`) in the mapping.
    pub fn persisted_last_index(&self) -> RaftIndex {
        let log = lock(&self.log);
        let end = if self.entries_need_sync {
            log.durable().raft_index
        } else {
            log.next_raft_index()
        };
        RaftIndex(end.get().saturating_sub(1))
    }

    /// The last entry synced (and not cut by a truncation since): the
    /// highest commit index a saved state may claim. For `fsync=false`
    /// topics too, whose entries count as persisted before: a power cut
    /// can bring back the entries a truncation cut from a sealed segment
    /// (synced when the log was opened) while the segment that replaced
    /// them, never synced, is gone; a commit index saved past the cut
    /// would make those overwritten entries committed on the next open.
    /// Such a replica restarts with a lower commit and learns the rest
    /// from its leader.
    pub fn durable_last_index(&self) -> RaftIndex {
        let end = lock(&self.log).durable().raft_index;
        RaftIndex(end.get().saturating_sub(1))
    }

    fn save(&mut self, durable: bool) -> Result<Option<StateSync>, ReplicationError> {
        assert!(
            !self.state_sync_pending,
            "no state save while a sync of the state is in flight"
        );
        // A slot breaking this is refused when read back (everything
        // truncated was committed): the save would be lost.
        assert!(
            self.state.hard.commit >= self.state.truncated.index,
            "the commit index is at or past the snapshot point"
        );
        let sync = self.store.save(&self.state, durable)?;
        self.commit_unsaved = false;
        self.state_sync_pending = sync.is_some();
        self.pending_term_vote = (self.state.hard.term, self.state.hard.vote);
        Ok(sync)
    }

    /// The term and vote of the newest state known synced: a message sent
    /// in them vouches for nothing a pending sync still has to make
    /// durable.
    pub fn durable_term_vote(&self) -> (Term, Option<BrokerId>) {
        self.durable_term_vote
    }

    /// Whether a sync of the saved state is still running: no state may be
    /// saved until it is handed back.
    pub fn state_sync_pending(&self) -> bool {
        self.state_sync_pending
    }

    /// Hands back a state sync that ran.
    pub fn complete_state_sync(&mut self, done: StateSync) {
        self.state_sync_pending = false;
        if done.ran() {
            self.durable_term_vote = self.pending_term_vote;
        }
        self.store.complete_sync(done);
    }

    /// Installs a snapshot from the leader: the snapshot point is saved
    /// durably first (returned sync already run), then the log restarts
    /// there. A snapshot from a later term than the saved one moves the
    /// saved term to it with no vote, never with the vote of an earlier
    /// term. The new segment's directory entry is synced by the log's
    /// next sync plan.
    pub fn apply_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), ReplicationError> {
        let meta = snapshot.get_metadata();
        let next_offset =
            snapshot_next_offset(&snapshot.data).ok_or(ReplicationError::BadEntry {
                index: meta.index,
                reason: "snapshot data is not a next offset",
            })?;
        self.state.truncated = TruncatedState {
            index: RaftIndex(meta.index),
            term: Term(meta.term),
            next_offset,
            membership: Membership::from_raft(meta.get_conf_state()),
        };
        let hard = &mut self.state.hard;
        hard.commit = hard.commit.max(RaftIndex(meta.index));
        if Term(meta.term) > hard.term {
            // A vote belongs to its term: kept under a later one, a restart
            // would find a vote this replica never cast there, and could
            // grant that candidate a vote while having promised another
            // (raft-rs itself forgets the vote whenever the term rises).
            hard.term = Term(meta.term);
            hard.vote = None;
        }
        // The snapshot point must be durable before the log that backs the
        // old point goes.
        if let Some(sync) = self.save(true)? {
            let done = sync.run()?;
            self.complete_state_sync(done);
        }
        let expired = lock(&self.log).reset_to(
            LogPosition {
                offset: next_offset,
                raft_index: RaftIndex(meta.index).next(),
            },
            Term(meta.term),
        )?;
        expired.unlink()?;
        Ok(())
    }

    /// Takes the segments past the topic's retention whose entries are all
    /// applied out of the log, moving the snapshot point to the last entry
    /// taken. Returns them still on disk, with the sync that makes the new
    /// point durable (when it moved): the caller runs the sync off the Raft
    /// thread, hands it back ([`ReplicaLog::complete_state_sync`]), and
    /// only then unlinks the segments ([`Expired::unlink`](rill_storage::Expired::unlink)).
    /// A crash before the unlink leaves entries below the point, which
    /// Raft never reads and the next retention pass after a restart takes
    /// again; a crash before the sync leaves the old point, with its
    /// segments still on disk (the log start offset published meanwhile
    /// moves back: those records are readable again until then). Until the
    /// sync is handed back the group takes only Readies that save nothing
    /// but a commit index, which waits in memory (messages, commits, role
    /// changes in its durable term: a leader's heartbeats go on).
    pub fn apply_retention(
        &mut self,
        applied: RaftIndex,
    ) -> Result<(Option<StateSync>, rill_storage::Expired), ReplicationError> {
        let (outcome, expired) = lock(&self.log).take_expired_through(applied);
        let mut sync = None;
        if let Some((index, term)) = expired.last_entry()
            && index > self.state.truncated.index
        {
            let t = &mut self.state.truncated;
            t.index = index;
            t.term = term;
            t.next_offset = outcome.log_start_offset;
            // Only applied entries are taken, so the commit index is past
            // them; the saved one may lag (it is clamped to the durable end
            // when saved, and not saved again while it stays put). Raised
            // here, or the slot would be refused when read back and a
            // restart would find the old point with its segments gone.
            let hard = &mut self.state.hard;
            hard.commit = hard.commit.max(index);
            sync = self.save(true)?;
        }
        Ok((sync, expired))
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

    /// Why this replica's log could not be read back (a segment cut short
    /// or corrupted under the broker, an I/O error), once a read for
    /// raft-rs failed. raft-rs treats such a failure as fatal (it panics):
    /// the failure is recorded here first, so that whoever drives raft-rs
    /// can tell a damaged log from a broken invariant and stop this replica
    /// alone. Set once; a replica with one is never read for raft-rs again.
    pub fn read_failure(&self) -> Option<&ReadFailure> {
        self.read_failure.get()
    }

    /// Records a failed read and returns the error raft-rs tolerates best
    /// there: `tolerated`, which it skips (a leader sends nothing this
    /// time) where it can and panics on where it cannot.
    fn unreadable(&self, failure: ReadFailure, tolerated: StorageError) -> raft::Error {
        let _ = self.read_failure.set(failure);
        raft::Error::Store(tolerated)
    }

    fn compacted_or_unavailable(&self, idx: u64) -> raft::Error {
        if idx <= self.state.truncated.index.get() {
            raft::Error::Store(StorageError::Compacted)
        } else {
            raft::Error::Store(StorageError::Unavailable)
        }
    }
}

impl raft::Storage for ReplicaLog {
    fn initial_state(&self) -> raft::Result<RaftState> {
        let h = &self.state.hard;
        let hard_state = RaftHardState {
            term: h.term.get(),
            vote: h.vote.map_or(0, BrokerId::get),
            commit: h.commit.get(),
            ..RaftHardState::default()
        };
        Ok(RaftState {
            hard_state,
            conf_state: self.state.truncated.membership.to_raft(),
        })
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low <= self.state.truncated.index.get() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        let log = lock(&self.log);
        if high > log.next_raft_index().get() {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        if low >= high {
            return Ok(Vec::new());
        }
        // A leader sending entries to a follower skips a send that finds
        // them "temporarily unavailable"; the group is stopped before it
        // would ask again (see `read_failure`).
        let unreadable = |e: &dyn std::fmt::Display, damaged: bool| {
            self.unreadable(
                ReadFailure {
                    reason: format!("entries {low}..{high} cannot be read back: {e}"),
                    damaged,
                },
                StorageError::LogTemporarilyUnavailable,
            )
        };
        if self.read_failure().is_some() {
            return Err(raft::Error::Store(StorageError::LogTemporarilyUnavailable));
        }
        let batches = log
            .read_entries(
                RaftIndex(low),
                RaftIndex(high),
                max_size.into().unwrap_or(u64::MAX),
            )
            .map_err(|e| unreadable(&e, e.is_damage()))?;
        drop(log);
        batches
            .iter()
            // A stored batch that is no Raft entry is damage too.
            .map(|b| entry::from_stored(b).map_err(|e| unreadable(&e, true)))
            .collect()
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        let t = &self.state.truncated;
        if idx == t.index.get() {
            return Ok(t.term.get());
        }
        if idx < t.index.get() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        let log = lock(&self.log);
        if idx >= log.next_raft_index().get() {
            return Err(self.compacted_or_unavailable(idx));
        }
        if self.read_failure().is_some() {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        // raft-rs takes an unavailable term as "no match" where it can.
        log.term_of(RaftIndex(idx)).map(Term::get).map_err(|e| {
            self.unreadable(
                ReadFailure {
                    reason: format!("the term of entry {idx} cannot be read back: {e}"),
                    damaged: e.is_damage(),
                },
                StorageError::Unavailable,
            )
        })
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.state.truncated.index.get() + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(lock(&self.log).next_raft_index().get() - 1)
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let t = &self.state.truncated;
        // A damaged replica is stopped before it would send anything more.
        if t.index.get() < request_index || self.read_failure().is_some() {
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        let mut meta = SnapshotMetadata {
            index: t.index.get(),
            term: t.term.get(),
            ..SnapshotMetadata::default()
        };
        meta.set_conf_state(t.membership.to_raft());
        let mut snap = Snapshot {
            data: snapshot_data(t.next_offset),
            ..Snapshot::default()
        };
        snap.set_metadata(meta);
        Ok(snap)
    }
}
