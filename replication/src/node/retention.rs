//! Retention across the groups of a node: only applied entries are ever
//! deleted, and the segments retention takes are unlinked only once their
//! group's new snapshot point is durable.
//!
//! Invariants kept here:
//! - a group with a state sync in flight is skipped (retention saves the
//!   state, and the state file keeps one save in flight at most), so a
//!   group has at most one set of taken segments waiting for its sync;
//! - retention's syncs are apart from the order of the deferred sync
//!   rounds: they may run beside them and come back in any order with them;
//! - what a group that stops had waiting is never unlinked (see
//!   `Node::fail`).

use rill_storage::RaftIndex;

use super::{Event, Node, SyncJob, SyncRound};

impl Node {
    /// Segments retention took whose groups' new snapshot points are
    /// durable: the caller unlinks them, off the Raft thread.
    pub fn take_expired(&mut self) -> Vec<rill_storage::Expired> {
        std::mem::take(&mut self.expired)
    }

    /// Applies retention to every group (only applied entries are ever
    /// deleted). Call between rounds. Returns the syncs of the groups' new
    /// snapshot points, to run and hand back to [`Node::complete_syncs`];
    /// the segments taken come out of [`Node::take_expired`] once their
    /// group's sync is back (at once for a group whose point did not move).
    /// Until its sync is back a group takes only Readies that save nothing
    /// (heartbeats and answers in its durable term, commits), no entries.
    /// The sync round holds only state syncs of groups with none in flight,
    /// so it need not wait for the deferred sync rounds: it may run beside
    /// them and come back in any order with them.
    pub fn apply_retention(&mut self, events: &mut Vec<Event>) -> SyncRound {
        let mut syncs = SyncRound {
            jobs: Vec::new(),
            readies: Vec::new(),
        };
        let mut failed = Vec::new();
        for (&group, r) in self.groups.iter_mut() {
            if r.raw.store().state_sync_pending() {
                // Retention saves the state; it runs again later.
                continue;
            }
            let applied = RaftIndex(r.raw.raft.raft_log.applied);
            match r.raw.mut_store().apply_retention(applied) {
                Ok((_, taken)) if taken.is_empty() => {}
                Ok((None, taken)) => self.expired.push(taken),
                Ok((Some(sync), taken)) => {
                    syncs.jobs.push(SyncJob::state(r.life(group), sync));
                    let earlier = self.retention_waiting.insert(group, taken);
                    assert!(
                        earlier.is_none(),
                        "a group with a pending state sync is skipped"
                    );
                }
                Err(e) => failed.push((group, e)),
            }
        }
        for (group, e) in failed {
            self.fail(group, (&e).into(), events);
        }
        syncs
    }
}
