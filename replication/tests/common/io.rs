//! The simulator as each broker's I/O: the broker's own [`Driver`] runs
//! its rounds and sync completions, and [`SimIo`] is its [`RoundIo`] — the
//! network, sync rounds that complete a few steps later, a checker that
//! observes every event, groups closed mid-round, and power cuts at the
//! point a round reaches its own syncs.

use super::*;

impl Sim {
    /// Runs `f` with broker `b`'s driver and the simulator as its I/O,
    /// then carries out a power cut the I/O met (`crash_at_sync`).
    pub(super) fn drive(
        &mut self,
        b: BrokerId,
        may_crash: bool,
        crash_at_sync: bool,
        f: impl FnOnce(&mut Driver, &mut SimIo<'_>),
    ) {
        let broker = self.brokers.get_mut(&b).expect("broker");
        let Some(node) = broker.node.take() else {
            return;
        };
        let mut driver = std::mem::take(&mut broker.driver);
        let mut io = SimIo {
            sim: self,
            b,
            node,
            crash_at_sync,
            crashed: false,
            completing: false,
            may_crash,
            installed: Vec::new(),
        };
        f(&mut driver, &mut io);
        let (node, crashed, installed) = (io.node, io.crashed, io.installed);
        let broker = self.brokers.get_mut(&b).expect("broker");
        broker.node = Some(node);
        broker.driver = driver;
        if crashed {
            if !installed.is_empty() {
                self.crashes_in_install += 1;
            }
            self.crash_losing(b, &installed);
        }
    }

    /// One round on broker `b`, unless its queued sync round is full.
    pub(super) fn round(&mut self, b: BrokerId) {
        // No crash while settling (`Faults::none`).
        let may_crash =
            self.config.faults.crash > 0 && self.may_crash() && self.may_crash_broker(b);
        let crash_mid_round = may_crash && self.rng.chance(self.config.faults.crash);
        if !self.brokers[&b].driver.may_round() {
            self.rounds_held += 1;
            return;
        }
        self.drive(b, may_crash, crash_mid_round, |driver, io| {
            driver.round(io);
        });
    }

    /// Completes broker `b`'s deferred sync rounds that are due.
    pub(super) fn complete_syncs(&mut self, b: BrokerId) {
        let step = self.step;
        let broker = self.brokers.get_mut(&b).expect("broker");
        if broker.node.is_none() {
            return;
        }
        let mut due = Vec::new();
        while broker
            .retention_syncing
            .front()
            .is_some_and(|(at, _)| *at <= step)
        {
            let (_, syncs) = broker.retention_syncing.pop_front().expect("front exists");
            due.push(syncs);
        }
        let deferred = match broker.syncing.take() {
            Some((at, syncs)) if at <= step => Some(syncs),
            other => {
                broker.syncing = other;
                None
            }
        };
        self.drive(b, false, false, |driver, io| {
            for syncs in due {
                driver.retention_synced(syncs.run(), io);
            }
            if let Some(syncs) = deferred {
                // The next sync round, if the rounds queued one, goes
                // out through `SimIo::start_sync` from here.
                io.completing = true;
                driver.synced(syncs.run(), io);
            }
        });
    }
}

/// The simulator as one broker's I/O while its driver runs: the node is
/// moved out of the broker for the call.
pub(super) struct SimIo<'a> {
    sim: &'a mut Sim,
    b: BrokerId,
    node: Node,
    /// A power cut comes when the round reaches its own syncs.
    crash_at_sync: bool,
    /// The power cut came: nothing after it leaves the broker.
    crashed: bool,
    /// Whether the driver is completing sync rounds (not running a round).
    completing: bool,
    /// Whether this broker may crash now (see `Sim::may_crash_broker`).
    may_crash: bool,
    /// Groups that installed a snapshot in this round: their log was reset
    /// to the snapshot point, a new segment whose directory entry is not
    /// synced yet, while the new state is.
    installed: Vec<GroupId>,
}

impl RoundIo for SimIo<'_> {
    fn node(&mut self) -> &mut Node {
        &mut self.node
    }

    fn send(&mut self, out: Vec<Outgoing>) -> Vec<Dropped> {
        if !self.crashed {
            self.sim.send(self.b, out);
        }
        Vec::new()
    }

    fn publish(&mut self, events: Vec<Event>) {
        if self.crashed {
            return;
        }
        let mut controller_commit = None;
        for e in events {
            match &e {
                Event::Restored { group, .. } => self.installed.push(*group),
                Event::Committed { group, index, .. } if *group == GroupId::CONTROLLER => {
                    controller_commit = Some(*index);
                }
                _ => {}
            }
            self.sim.observe(self.b, e);
        }
        // As the broker does, the controller's committed entries are
        // applied here, in the middle of the round: replicas open and
        // close while the round's Readies are out.
        if let Some(index) = controller_commit
            && self.sim.config.controller
        {
            self.sim.apply_metadata(self.b, &mut self.node, index);
        }
        // And a replica may close in the middle of a round.
        if self.sim.rng.chance(self.sim.config.faults.reopen) {
            let open: Vec<GroupId> = self.node.groups().collect();
            if !open.is_empty() {
                let g = open[self.sim.rng.below(open.len() as u64) as usize];
                self.node.remove_group(g).expect("the group is open");
                let broker = self.sim.brokers.get_mut(&self.b).expect("broker");
                broker.closed.push(g);
            }
        }
    }

    fn start_sync(&mut self, syncs: SyncRound) {
        let at = self.sim.step + self.sim.rng.below(SYNC_STEPS_MAX + 1);
        if self.completing {
            // Started as the one out came back: it waited behind it.
            self.sim.queued_syncs += 1;
        }
        let broker = self.sim.brokers.get_mut(&self.b).expect("broker");
        assert!(broker.syncing.is_none(), "one sync round out at a time");
        broker.syncing = Some((at, syncs));
    }

    fn start_retention_sync(&mut self, syncs: SyncRound) {
        let at = self.sim.step + self.sim.rng.below(SYNC_STEPS_MAX + 1);
        let broker = self.sim.brokers.get_mut(&self.b).expect("broker");
        let after = broker.retention_syncing.back().map_or(0, |(at, _)| *at);
        broker.retention_syncing.push_back((at.max(after), syncs));
    }

    fn run_syncs(&mut self, jobs: Vec<SyncJob>) -> Vec<SyncResult> {
        let unsynced = !jobs.is_empty() || self.sim.brokers[&self.b].syncing.is_some();
        // A round that installed a snapshot is a window worth cutting power
        // in: crashes there are made likelier.
        let in_install = self.may_crash && !self.installed.is_empty() && self.sim.rng.chance(250);
        // With fsync=false, the round may have committed entries since it
        // began that not every other replica holds: a power cut now could
        // take the only other copy (see `Sim::may_crash_broker`).
        let allowed = self.sim.config.fsync
            || self
                .sim
                .others_hold_every_commit_given(self.b, Some(&self.node));
        if ((self.crash_at_sync && unsynced) || in_install) && allowed {
            // A power cut while the round's writes sit unsynced in the
            // page cache; what the round let out before is already sent.
            // The node goes with the broker: what it makes of the missing
            // results is never seen.
            self.crashed = true;
            return Vec::new();
        }
        jobs.into_iter().map(SyncJob::run).collect()
    }

    fn release(&mut self, closed: Vec<SyncDone>, expired: Vec<Expired>) {
        drop(closed);
        let broker = self.sim.brokers.get_mut(&self.b).expect("broker");
        broker.expired.extend(expired);
    }
}
