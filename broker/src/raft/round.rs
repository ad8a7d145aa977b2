//! Rounds: one pass over every group with work, from the Readies raft-rs
//! hands out to the messages and events they release, and the syncs that
//! make a round's writes durable.
//!
//! A round sends its messages once its writes are done (to the page
//! cache): a leader's appends before its own sync, votes and
//! acknowledgements only after the syncs that back them. Groups with other
//! voters sync on the sync thread, one sync round at a time, and what the
//! rounds defer meanwhile is merged into the next sync round: one
//! `fdatasync` serves every round since the last (group commit, with no
//! timer). The merged sync round is bounded: at the bound no round starts
//! until the sync in flight is back. A one-voter group syncs within the
//! round. Retention's state syncs go to a thread of their own, never behind
//! the log's syncs; each sync thread runs its sync rounds in the order the
//! Raft thread made them.

use std::time::{Duration, Instant};

use rill_replication::transport::Dropped;
use rill_replication::{Outgoing, SyncJob, SyncResult, SyncRound};

use super::sync_pool::SyncPool;
use super::{RaftLoop, SYNC_QUEUED_READIES_MAX};

impl RaftLoop {
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

    /// Syncs that completed after their group closed hold its deleted
    /// files open: their last close goes to the janitor.
    pub(super) fn drop_closed_syncs(&mut self) {
        let closed = self.node.take_closed_syncs();
        if !closed.is_empty() {
            self.janitor.drop_later(closed);
        }
    }

    /// One round over every group with work; returns where its time went.
    pub(super) fn round(&mut self) -> RoundTimes {
        let mut times = RoundTimes::default();
        let mut phase = Instant::now();
        let mut lap = |t: &mut Duration| {
            *t = phase.elapsed();
            phase = Instant::now();
        };
        let mut out: Vec<Outgoing> = Vec::new();
        let mut events = Vec::new();
        let mut jobs = Vec::new();
        let mut round = self.node.start_round(&mut out, &mut events);
        lap(&mut times.ready);
        if round.is_empty() && events.is_empty() && out.is_empty() {
            return times;
        }
        self.node.write_round(&mut round, &mut jobs, &mut events);
        lap(&mut times.write);
        // The round's messages leave once its writes are done (to the
        // page cache): a leader's appends then send their large entries
        // from the segment files rather than copying them from memory.
        self.node.attach_file_spans(&mut out);
        let mut dropped = self.send(std::mem::take(&mut out));
        let deferred = self.node.defer_syncs(&mut round, &mut jobs);
        if !deferred.is_empty() {
            match (&mut self.sync_queued, self.syncing) {
                (_, false) => self.start_sync(deferred),
                (Some(queued), true) => queued.merge(deferred),
                (queued @ None, true) => *queued = Some(deferred),
            }
        }
        // `acks=1` waits for the leader's write alone, and a Ready's
        // committed entries were durable before it: both before the syncs.
        self.publish(std::mem::take(&mut events));
        let results = run_syncs(&mut self.sync_pool, jobs, false);
        lap(&mut times.sync);
        self.node
            .finish_round(round, results, &mut out, &mut events);
        self.drop_closed_syncs();
        self.node.attach_file_spans(&mut out);
        dropped.extend(self.send(out));
        if !dropped.is_empty() {
            self.node.report_dropped(&dropped);
        }
        self.publish(events);
        lap(&mut times.finish);
        times
    }

    /// Whether a round may start: not while the sync round queued behind
    /// the sync in flight is full.
    pub(super) fn may_round(&self) -> bool {
        self.sync_queued
            .as_ref()
            .is_none_or(|q| q.readies() < SYNC_QUEUED_READIES_MAX)
    }

    /// Hands the segments retention took, whose new log starts are now
    /// durable, to the janitor to unlink and close.
    pub(super) fn unlink_expired(&mut self) {
        self.janitor.unlink_expired(self.node.take_expired());
    }

    pub(super) fn start_sync(&mut self, syncs: SyncRound) {
        debug_assert!(!self.syncing, "one sync round in flight at a time");
        self.syncing = true;
        if self.syncer.send(syncs).is_err() {
            // The sync thread only ends when this loop drops its sender:
            // it cannot be gone while the loop runs.
            unreachable!("the sync thread outlives the Raft thread's loop");
        }
    }
}

/// Where a round's time went, for the slow-round warning.
#[derive(Debug, Default)]
pub(super) struct RoundTimes {
    /// Collecting the Readies (raft-rs reads the entries they carry).
    pub(super) ready: Duration,
    /// Writing entries, hard states and snapshots, and queueing messages.
    pub(super) write: Duration,
    /// Deferring syncs, publishing, and the syncs run inside the round
    /// (one-voter groups).
    pub(super) sync: Duration,
    /// Applying, advancing, and sending what the syncs released.
    pub(super) finish: Duration,
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
