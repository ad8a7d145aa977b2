//! raft-rs's reads of a replica ([`raft::Storage`]): its initial state,
//! entries, terms and snapshot. A read the log cannot serve (damage, I/O)
//! is recorded as a [`ReadFailure`] before raft-rs sees an error, so the
//! replica can be stopped alone; it is never read for raft-rs again.

use raft::eraftpb::{Entry, HardState as RaftHardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, StorageError};
use rill_storage::{RaftIndex, Term};

use super::{ReplicaLog, lock, snapshot_data};
use crate::entry;
use crate::ids::BrokerId;

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

impl ReplicaLog {
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
            conf_state: self.state.membership.to_raft(),
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
        meta.set_conf_state(self.state.membership.to_raft());
        let mut snap = Snapshot {
            data: snapshot_data(t.next_offset, self.state.membership_index),
            ..Snapshot::default()
        };
        snap.set_metadata(meta);
        Ok(snap)
    }
}
