//! The snapshot point: where a replica's log starts for Raft. A partition
//! snapshot is only the point (its data is the next offset); it moves when
//! a leader's snapshot is installed or retention takes segments, and is
//! saved durably before the log behind the old point goes.

use bytes::Bytes;
use raft::eraftpb::Snapshot;
use rill_storage::{LogPosition, Offset, RaftIndex, Term};

use super::{ReplicaLog, lock};
use crate::error::ReplicationError;
use crate::state::{Membership, StateSync, TruncatedState};

/// The data of the snapshot a partition replica sends a follower that is
/// behind its log start: only the point (the log before it is gone by
/// retention, and a partition's "state machine" is the log itself). Its
/// data is the next offset, 8 bytes little-endian, then, once the group's
/// membership has changed, the Raft index of the last change its conf
/// state reflects (8 more bytes): the receiver skips the change entries up
/// to there, which its membership holds already.
pub fn snapshot_data(next_offset: Offset, membership_index: RaftIndex) -> Bytes {
    let mut data = next_offset.get().to_le_bytes().to_vec();
    if membership_index > RaftIndex(0) {
        data.extend_from_slice(&membership_index.get().to_le_bytes());
    }
    Bytes::from(data)
}

/// The log start offset and membership index a snapshot's data holds, if
/// it holds them.
pub(crate) fn snapshot_point(data: &[u8]) -> Option<(Offset, RaftIndex)> {
    let u64_at = |at: usize| {
        data.get(at..at + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    };
    match data.len() {
        8 => Some((Offset(u64_at(0)?), RaftIndex(0))),
        16 => Some((Offset(u64_at(0)?), RaftIndex(u64_at(8)?))),
        _ => None,
    }
}

impl ReplicaLog {
    /// Installs a snapshot from the leader: the snapshot point is saved
    /// durably first (returned sync already run), then the log restarts
    /// there. A snapshot from a later term than the saved one moves the
    /// saved term to it with no vote, never with the vote of an earlier
    /// term. The new segment's directory entry is synced by the log's
    /// next sync plan.
    pub fn apply_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), ReplicationError> {
        let meta = snapshot.get_metadata();
        let (next_offset, membership_index) =
            snapshot_point(&snapshot.data).ok_or(ReplicationError::BadEntry {
                index: meta.index,
                reason: "snapshot data is not a next offset and membership index",
            })?;
        self.state.truncated = TruncatedState {
            index: RaftIndex(meta.index),
            term: Term(meta.term),
            next_offset,
        };
        self.state.membership = Membership::from_raft(meta.get_conf_state());
        self.state.membership_index = membership_index;
        let hard = &mut self.state.hard;
        hard.commit = hard.commit.max(RaftIndex(meta.index));
        // Everything up to the point is applied: the snapshot's membership
        // holds every change there.
        self.applied = self.applied.max(RaftIndex(meta.index));
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_data_is_the_next_offset_then_the_membership_index_once_it_moved() {
        let short = snapshot_data(Offset(0x0102), RaftIndex(0));
        assert_eq!(&short[..], [2, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(snapshot_point(&short), Some((Offset(0x0102), RaftIndex(0))));
        let long = snapshot_data(Offset(7), RaftIndex(9));
        assert_eq!(&long[..], [7, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(snapshot_point(&long), Some((Offset(7), RaftIndex(9))));
        for len in [0, 7, 9, 15, 17, 24] {
            assert_eq!(snapshot_point(&vec![0; len]), None, "{len} bytes");
        }
    }
}
