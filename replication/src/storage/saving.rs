//! The hard state a replica saves beside its log: term, vote and commit
//! index. A saved commit index never passes the log's synced end; while a
//! state sync is in flight nothing else is saved, and a newer commit index
//! waits in memory for the next save.

use raft::eraftpb::HardState as RaftHardState;
use rill_storage::{RaftIndex, Term};

use super::{ReplicaLog, lock};
use crate::error::ReplicationError;
use crate::ids::BrokerId;
use crate::state::{HardState, StateSync};

impl ReplicaLog {
    /// Records a new hard state and saves it; returns the sync to run when
    /// it must be durable before messages depending on it leave. The
    /// commit index saved never passes the last entry applied (see the
    /// module documentation of `storage`), nor the log's synced end, whatever the
    /// topic's durability mode (see [`ReplicaLog::durable_last_index`]): a
    /// state written before this round's log sync must not claim entries
    /// that a crash could still take away, or replace (a truncation's new
    /// segment).
    pub fn set_hard_state(
        &mut self,
        hs: &RaftHardState,
        durable: bool,
    ) -> Result<Option<StateSync>, ReplicationError> {
        let commit = RaftIndex(hs.commit)
            .min(self.durable_last_index())
            .min(self.applied);
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
        let commit = commit.min(self.durable_last_index()).min(self.applied);
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

    pub(super) fn save(&mut self, durable: bool) -> Result<Option<StateSync>, ReplicationError> {
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

    /// Makes the hard state durable now, on this thread (one save and one
    /// sync): its commit index among it, which is otherwise saved without
    /// a sync. Returns `false`, having done nothing, while a sync of the
    /// state is in flight: try again once it is handed back. For an owner
    /// about to act on committed entries in a way a replay must not undo
    /// (removing a deleted group's files): a restart then replays them.
    pub fn persist_state(&mut self) -> Result<bool, ReplicationError> {
        if self.state_sync_pending {
            return Ok(false);
        }
        if let Some(sync) = self.save(true)? {
            let done = sync.run()?;
            self.complete_state_sync(done);
        }
        Ok(true)
    }

    /// Hands back a state sync that ran.
    pub fn complete_state_sync(&mut self, done: StateSync) {
        self.state_sync_pending = false;
        if done.ran() {
            self.durable_term_vote = self.pending_term_vote;
        }
        self.store.complete_sync(done);
    }
}
