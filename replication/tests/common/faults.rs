//! Which faults the simulator may inject at each step, and when: a
//! majority stays up, and with `fsync: false` no power cut takes the only
//! other copy of a committed entry.

use super::*;

impl Sim {
    /// Asks the leader of a group drawn at random to hand leadership to
    /// another member drawn at random.
    pub(super) fn transfer_some_leadership(&mut self) {
        let groups: Vec<GroupId> = self.members.keys().copied().collect();
        let g = groups[self.rng.below(groups.len() as u64) as usize];
        let members = self.members[&g].clone();
        let to = members[self.rng.below(members.len() as u64) as usize];
        for b in self.alive() {
            let node = self
                .brokers
                .get_mut(&b)
                .and_then(|br| br.node.as_mut())
                .expect("alive");
            if node.leader(g) == Some(b) && b != to {
                // A group closed here refuses; that is all.
                if node.transfer_leader(g, to).is_ok() {
                    self.transfers += 1;
                    self.trace = mix(self.trace, 0x7F ^ (g.get() << 8) ^ to.get());
                }
                return;
            }
        }
    }

    /// Whether one more broker may go down and leave a majority up.
    pub(super) fn may_crash(&self) -> bool {
        let stopping = self
            .brokers
            .values()
            .filter(|b| b.stopping.is_some())
            .count();
        let down = self.config.brokers as usize - self.alive().len() + stopping;
        down < (self.config.brokers as usize - 1) / 2 && self.crashes < self.config.crashes_max
    }

    /// Whether broker `b` may crash now.
    pub(super) fn may_crash_broker(&self, b: BrokerId) -> bool {
        let leads_nothing = || {
            self.brokers[&b]
                .node
                .as_ref()
                .is_some_and(|n| n.groups().all(|g| n.leader(g) != Some(b)))
        };
        (self.config.crash_leaders || leads_nothing())
            && (self.config.fsync || self.others_hold_every_commit(b))
    }

    /// Whether, in every group of `b`, every other replica holds the last
    /// entry reported committed (same index and term, so the same prefix).
    /// With `fsync=false` a power cut forgets what the broker wrote since
    /// it opened: Raft keeps the committed entries only if the other
    /// replicas hold them. When the cut takes the only other copy of one,
    /// the entry is lost (as that mode allows) and the replica that still
    /// has it can no longer agree with the new leader; the simulator does
    /// not cut power then.
    pub(super) fn others_hold_every_commit(&self, b: BrokerId) -> bool {
        self.others_hold_every_commit_given(b, None)
    }

    /// As [`Sim::others_hold_every_commit`], while `b`'s node is out of
    /// the broker running a round (`driving`): its commit may have moved
    /// since the round began.
    pub(super) fn others_hold_every_commit_given(
        &self,
        b: BrokerId,
        driving: Option<&Node>,
    ) -> bool {
        self.members
            .iter()
            .filter(|(_, members)| members.contains(&b))
            .all(|(g, members)| {
                // A replica closed in the middle of a round reports no
                // commit until it reopens: what it counted committed is
                // not known, so no power cut.
                if self.brokers.values().any(|br| br.closed.contains(g)) {
                    return false;
                }
                let term_at = |m: &BrokerId, index: RaftIndex| {
                    let log = self.brokers[m].logs.get(g)?;
                    log.term_of(index).ok()
                };
                let highest = members
                    .iter()
                    .filter_map(|m| {
                        let node = match driving {
                            Some(n) if *m == b => n,
                            _ => self.brokers[m].node.as_ref()?,
                        };
                        let commit = node.status(*g)?.commit;
                        Some((commit, *m))
                    })
                    .max();
                let Some((index, holder)) = highest else {
                    return true;
                };
                if index == RaftIndex(0) {
                    return true;
                }
                let Some(term) = term_at(&holder, index) else {
                    return false;
                };
                members.iter().filter(|&&m| m != b).all(|m| {
                    self.brokers[m]
                        .logs
                        .get(g)
                        .is_some_and(|l| l.term_of(index).ok() == Some(term))
                })
            })
    }

    pub(super) fn faults(&mut self) {
        let f = self.config.faults.clone();
        let alive = self.alive();
        // Keep a majority up so progress stays possible.
        if self.may_crash() && self.rng.chance(f.crash) {
            let b = alive[self.rng.below(alive.len() as u64) as usize];
            if self.may_crash_broker(b) {
                self.crash(b);
            }
        }
        for b in self.down() {
            if self.rng.chance(f.restart) {
                self.start(b);
                self.trace = mix(self.trace, 0x5A ^ b.get());
            }
        }
        if self.rng.chance(f.cut) {
            let a = BrokerId(1 + self.rng.below(self.config.brokers));
            let c = BrokerId(1 + self.rng.below(self.config.brokers));
            if a != c {
                self.cut.insert((a, c));
                self.cut.insert((c, a));
            }
        }
        if self.rng.chance(f.transfer) {
            self.transfer_some_leadership();
        }
        if self.may_crash() && self.rng.chance(f.stop) {
            let b = alive[self.rng.below(alive.len() as u64) as usize];
            let broker = self.brokers.get_mut(&b).expect("broker");
            if let Some(node) = broker.node.as_mut()
                && broker.stopping.is_none()
            {
                // Five ticks a second: 5 s of broker time, as
                // `HANDOVER_MS_MAX`.
                broker.stopping = Some(self.step + 250);
                node.hand_over();
                self.trace = mix(self.trace, 0x570 ^ b.get());
            }
        }
        if self.rng.chance(f.reopen) {
            let b = alive[self.rng.below(alive.len() as u64) as usize];
            if self.brokers[&b].node.is_some() {
                self.reopen_some_group(b);
            }
        }
        if !self.cut.is_empty() && self.rng.chance(f.heal) {
            let links: Vec<_> = self.cut.iter().copied().collect();
            let (a, c) = links[self.rng.below(links.len() as u64) as usize];
            self.cut.remove(&(a, c));
            self.cut.remove(&(c, a));
        }
    }
}
