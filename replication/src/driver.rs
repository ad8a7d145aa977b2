//! The driver: one node's rounds, from the Readies raft-rs hands out to
//! the messages and events they release, and the syncs that make a round's
//! writes durable. The broker's Raft thread and the deterministic
//! simulator run this same code; each gives it its I/O through
//! [`RoundIo`] (a transport or a seeded network, a sync thread or a
//! seeded disk, partitions to wake or a checker to tell).
//!
//! A round sends its messages once its writes are done (to the page
//! cache): a leader's appends before its own sync, votes and
//! acknowledgements only after the syncs that back them. Groups with other
//! voters sync in a deferred sync round ([`RoundIo::start_sync`]), one at
//! a time, and what the rounds defer meanwhile is merged into the next
//! one: one `fdatasync` serves every round since the last (group commit,
//! with no timer). The merged sync round is bounded: at
//! [`Driver::queued_readies_max`] no round starts until the sync in flight
//! is back. A one-voter group syncs within the round
//! ([`RoundIo::run_syncs`]). Retention's state syncs go apart
//! ([`RoundIo::start_retention_sync`]), never behind the log's syncs.
//!
//! Invariants kept here:
//! - at most one deferred sync round is in flight, and they come back in
//!   the order they were started ([`Driver::synced`] must be given them in
//!   that order, which one thread running them one after another gives);
//! - nothing is published before the writes it reports are done: a
//!   round's `Appended` events and a Ready's committed entries (durable
//!   before that Ready) are published after the writes and before the
//!   round's own syncs, everything else once the syncs that back it ran;
//! - dropped messages are reported to raft-rs only between rounds.

use std::time::{Duration, Instant};

use rill_storage::{Expired, SyncDone};

use crate::node::{Event, Node, SyncJob, SyncResult, SyncRound, SyncedRound};
use crate::outgoing::{Dropped, Outgoing};

/// Deferred Readies waiting for the sync after the one in flight, at most,
/// by default; at the bound the driver's owner steps messages but starts
/// no round until the sync completes.
pub const QUEUED_READIES_MAX: usize = 16_384;

/// The I/O a [`Driver`] needs. Every call is made on the thread that runs
/// the driver; none may block on the driver's own progress.
pub trait RoundIo {
    /// The node the rounds run over. The driver borrows it through its
    /// I/O so that the owner may change it while a round publishes (the
    /// controller's committed entries open and close replicas mid-round).
    fn node(&mut self) -> &mut Node;

    /// Queues messages for the peers; returns those that could not be
    /// queued (the driver tells raft-rs once the round is finished).
    fn send(&mut self, out: Vec<Outgoing>) -> Vec<Dropped>;

    /// Hands events (entries appended, committed, leaders changed, groups
    /// failed) to whoever waits for them.
    fn publish(&mut self, events: Vec<Event>);

    /// Starts a deferred sync round; its outcome comes back through
    /// [`Driver::synced`], in the order they were started.
    fn start_sync(&mut self, syncs: SyncRound);

    /// Starts a sync round of retention's state syncs; its outcome comes
    /// back through [`Driver::retention_synced`], in any order with the
    /// deferred ones.
    fn start_retention_sync(&mut self, syncs: SyncRound);

    /// Runs sync jobs now, within the round (one-voter groups), returning
    /// one result per job.
    fn run_syncs(&mut self, jobs: Vec<SyncJob>) -> Vec<SyncResult>;

    /// Files the node no longer needs: completed syncs of groups closed
    /// since (still holding deleted files open) and segments retention
    /// took whose new log start is durable (to unlink). Their last close
    /// or unlink may wait on the disk: do it off the round's thread.
    fn release(&mut self, closed: Vec<SyncDone>, expired: Vec<Expired>);
}

/// Where a round's time went, for a slow-round warning.
#[derive(Debug, Default, Clone, Copy)]
pub struct RoundTimes {
    /// Collecting the Readies (raft-rs reads the entries they carry).
    pub ready: Duration,
    /// Writing entries, hard states and snapshots, and queueing messages.
    pub write: Duration,
    /// Deferring syncs, publishing, and the syncs run inside the round
    /// (one-voter groups).
    pub sync: Duration,
    /// Applying, advancing, and sending what the syncs released.
    pub finish: Duration,
}

/// Runs a node's rounds and its deferred syncs. See the module
/// documentation.
#[derive(Debug)]
pub struct Driver {
    /// Whether a deferred sync round is out (started, not yet back through
    /// [`Driver::synced`]).
    syncing: bool,
    /// The next sync round, merged from every round since the one in
    /// flight left: group commit across rounds.
    queued: Option<SyncRound>,
    /// Deferred Readies `queued` may hold before rounds wait.
    queued_readies_max: usize,
}

impl Default for Driver {
    fn default() -> Driver {
        Driver::new(QUEUED_READIES_MAX)
    }
}

impl Driver {
    /// A driver whose queued sync round holds at most
    /// `queued_readies_max` deferred Readies.
    pub fn new(queued_readies_max: usize) -> Driver {
        assert!(queued_readies_max > 0, "a round must be able to defer");
        Driver {
            syncing: false,
            queued: None,
            queued_readies_max,
        }
    }

    /// The bound on the queued sync round, in deferred Readies.
    pub fn queued_readies_max(&self) -> usize {
        self.queued_readies_max
    }

    /// Whether a deferred sync round is out.
    pub fn syncing(&self) -> bool {
        self.syncing
    }

    /// Whether a round may start: not while the sync round queued behind
    /// the one in flight is full.
    pub fn may_round(&self) -> bool {
        self.queued
            .as_ref()
            .is_none_or(|q| q.readies() < self.queued_readies_max)
    }

    /// One round over every group with work; returns where its time went.
    /// Call only when [`Driver::may_round`] (a round past the bound still
    /// runs correctly, but the queued sync round grows past it).
    pub fn round(&mut self, io: &mut impl RoundIo) -> RoundTimes {
        let mut times = RoundTimes::default();
        let mut phase = Instant::now();
        let mut lap = |t: &mut Duration| {
            *t = phase.elapsed();
            phase = Instant::now();
        };
        let mut out: Vec<Outgoing> = Vec::new();
        let mut events = Vec::new();
        let mut jobs = Vec::new();
        let mut round = io.node().start_round(&mut out, &mut events);
        lap(&mut times.ready);
        if round.is_empty() && events.is_empty() && out.is_empty() {
            return times;
        }
        io.node().write_round(&mut round, &mut jobs, &mut events);
        lap(&mut times.write);
        // The round's messages leave once its writes are done (to the
        // page cache): a leader's appends then send their large entries
        // from the segment files rather than copying them from memory.
        io.node().attach_file_spans(&mut out);
        let mut dropped = io.send(std::mem::take(&mut out));
        let deferred = io.node().defer_syncs(&mut round, &mut jobs);
        if !deferred.is_empty() {
            match (&mut self.queued, self.syncing) {
                (_, false) => self.start_sync(deferred, io),
                (Some(queued), true) => queued.merge(deferred),
                (queued @ None, true) => *queued = Some(deferred),
            }
        }
        // `acks=1` waits for the leader's write alone, and a Ready's
        // committed entries were durable before it: both before the syncs.
        io.publish(std::mem::take(&mut events));
        let results = io.run_syncs(jobs);
        lap(&mut times.sync);
        io.node()
            .finish_round(round, results, &mut out, &mut events);
        Self::release(io);
        io.node().attach_file_spans(&mut out);
        dropped.extend(io.send(out));
        if !dropped.is_empty() {
            io.node().report_dropped(&dropped);
        }
        io.publish(events);
        lap(&mut times.finish);
        times
    }

    /// A deferred sync round came back: the queued one starts at once (the
    /// disk is free), then this one's groups complete and what their syncs
    /// held is sent and published.
    pub fn synced(&mut self, done: SyncedRound, io: &mut impl RoundIo) {
        assert!(self.syncing, "a sync round came back that was not out");
        self.syncing = false;
        if let Some(next) = self.queued.take() {
            self.start_sync(next, io);
        }
        let mut out = Vec::new();
        let mut events = Vec::new();
        io.node().complete_syncs(done, &mut out, &mut events);
        Self::release(io);
        let dropped = io.send(out);
        if !dropped.is_empty() {
            io.node().report_dropped(&dropped);
        }
        io.publish(events);
    }

    /// A deferred sync round came back while the owner stops: the queued
    /// one starts (it holds the last writes), and nothing more is
    /// completed, sent or published.
    pub fn synced_while_stopping(&mut self, io: &mut impl RoundIo) {
        assert!(self.syncing, "a sync round came back that was not out");
        self.syncing = false;
        if let Some(next) = self.queued.take() {
            self.start_sync(next, io);
        }
    }

    /// Applies retention to every group: the new log starts' state syncs
    /// go out apart ([`RoundIo::start_retention_sync`]); segments whose
    /// group's log start did not move are released at once.
    pub fn apply_retention(&mut self, io: &mut impl RoundIo) {
        let mut events = Vec::new();
        let syncs = io.node().apply_retention(&mut events);
        if !syncs.is_empty() {
            io.start_retention_sync(syncs);
        }
        Self::release(io);
        io.publish(events);
    }

    /// Retention's sync round came back: the segments below the now
    /// durable log starts are released.
    pub fn retention_synced(&mut self, done: SyncedRound, io: &mut impl RoundIo) {
        let mut out = Vec::new();
        let mut events = Vec::new();
        io.node().complete_syncs(done, &mut out, &mut events);
        debug_assert!(out.is_empty(), "no Ready waits for retention's syncs");
        Self::release(io);
        io.publish(events);
    }

    fn start_sync(&mut self, syncs: SyncRound, io: &mut impl RoundIo) {
        assert!(!self.syncing, "one sync round in flight at a time");
        self.syncing = true;
        io.start_sync(syncs);
    }

    /// Hands what the node let go of to the I/O.
    fn release(io: &mut impl RoundIo) {
        let node = io.node();
        let closed = node.take_closed_syncs();
        let expired = node.take_expired();
        if !closed.is_empty() || !expired.is_empty() {
            io.release(closed, expired);
        }
    }
}
