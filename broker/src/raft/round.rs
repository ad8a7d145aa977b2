//! The Raft thread's side of a round: the I/O the replication driver
//! ([`Driver`], `rill_replication::driver`) runs its rounds with. Messages
//! go to the peer transport; events to the partitions and the
//! controller's image (`published.rs`); deferred sync rounds to the sync
//! thread, one at a time (the driver merges what the rounds defer
//! meanwhile); retention's state syncs to a thread of their own, never
//! behind the log's syncs; a one-voter group's syncs to the Raft thread's
//! own pool, within the round; released files to the janitor. Each sync
//! thread runs its sync rounds in the order the Raft thread made them.

use std::time::Instant;

use rill_replication::driver::RoundIo;
use rill_replication::transport::Dropped;
use rill_replication::{Driver, Event, Node, Outgoing, SyncJob, SyncResult, SyncRound};
use rill_storage::{Expired, SyncDone};

use super::RaftLoop;
use super::sync_pool::SyncPool;

impl RaftLoop {
    /// Runs `f` with the driver and this loop as its I/O. The driver is
    /// moved out of the loop for the call (a few words), so the loop's
    /// own methods, which the I/O calls, borrow the rest of it freely; a
    /// call that reached the driver again from inside would find it gone
    /// and stop here rather than start a second sync round.
    pub(super) fn with_driver<R>(&mut self, f: impl FnOnce(&mut Driver, &mut RaftLoop) -> R) -> R {
        let mut driver = self
            .driver
            .take()
            .expect("the driver is not reentered from its own I/O");
        let r = f(&mut driver, self);
        self.driver = Some(driver);
        r
    }

    /// The driver, between its calls.
    pub(super) fn driver(&self) -> &Driver {
        self.driver
            .as_ref()
            .expect("the driver is only out during its own calls")
    }

    /// Queues messages for the peers; returns those that could not be
    /// queued (reported to raft-rs once the round is finished: not while a
    /// Ready is outstanding).
    pub(super) fn send(&mut self, out: Vec<Outgoing>) -> Vec<Dropped> {
        if out.is_empty() {
            return Vec::new();
        }
        match &self.transport {
            Some(t) => t.send(out),
            None => {
                tracing::trace!(messages = out.len(), "no peers to send to");
                Vec::new()
            }
        }
    }
}

impl RoundIo for RaftLoop {
    fn node(&mut self) -> &mut Node {
        &mut self.node
    }

    fn send(&mut self, out: Vec<Outgoing>) -> Vec<Dropped> {
        RaftLoop::send(self, out)
    }

    fn publish(&mut self, events: Vec<Event>) {
        RaftLoop::publish(self, events);
    }

    fn start_sync(&mut self, syncs: SyncRound) {
        if self.syncer.send(syncs).is_err() {
            // The sync thread only ends when this loop drops its sender:
            // it cannot be gone while the loop runs.
            unreachable!("the sync thread outlives the Raft thread's loop");
        }
    }

    fn start_retention_sync(&mut self, syncs: SyncRound) {
        // The thread ends only once the rest of the broker has let go of
        // this loop, which then ends too: its groups may wait.
        if self.retention_syncer.send(syncs).is_err() {
            tracing::warn!("the retention sync thread is gone: the broker is stopping");
        }
    }

    fn run_syncs(&mut self, jobs: Vec<SyncJob>) -> Vec<SyncResult> {
        run_syncs(&mut self.sync_pool, jobs, false)
    }

    fn release(&mut self, closed: Vec<SyncDone>, expired: Vec<Expired>) {
        // Syncs that completed after their group closed hold its deleted
        // files open: their last close goes to the janitor, as do the
        // segments retention took.
        if !closed.is_empty() {
            self.janitor.drop_later(closed);
        }
        if !expired.is_empty() {
            self.janitor.unlink_expired(expired);
        }
    }
}

/// Runs sync jobs on `pool` and logs the round at debug level: files,
/// bytes and time, and whether it ran on the sync thread (`deferred`).
/// bench.sh reads W3's mean sync size from these lines.
pub(super) fn run_syncs(
    pool: &mut SyncPool,
    jobs: Vec<SyncJob>,
    deferred: bool,
) -> Vec<SyncResult> {
    let started = Instant::now();
    let bytes: u64 = jobs.iter().map(SyncJob::bytes).sum();
    let files = jobs.len();
    let results = pool.run(jobs);
    if files > 0 {
        crate::metrics::sync_round(deferred, bytes, started.elapsed());
        for r in &results {
            crate::metrics::fsync(r.synced);
        }
        tracing::debug!(
            files,
            bytes,
            deferred,
            us = started.elapsed().as_micros() as u64,
            "sync round"
        );
    }
    results
}
