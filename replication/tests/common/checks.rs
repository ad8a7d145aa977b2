//! What the simulator checks: one leader per term, committed entries
//! never change, acknowledged batches are where their producers were told,
//! and after settling every replica holds the same committed prefix.

use super::*;

impl Sim {
    pub(super) fn observe(&mut self, b: BrokerId, e: Event) {
        match e {
            Event::RoleChanged {
                group,
                is_leader: true,
                term,
                ..
            } => {
                self.elections += 1;
                self.trace = mix(
                    self.trace,
                    (group.get() << 40) ^ (term.get() << 8) ^ b.get(),
                );
                if let Some(other) = self.leaders.insert((group, term), b) {
                    assert_eq!(
                        other, b,
                        "seed {}: two leaders of group {group} in term {term}",
                        self.config.seed
                    );
                }
            }
            Event::Committed { group, index, .. } => {
                if self.config.fsync {
                    self.check_committed(b, group, index);
                }
                // Acknowledge the proposals this leader sees committed.
                let log = self.brokers[&b].logs.get(&group).cloned();
                let mut still = Vec::new();
                for p in std::mem::take(&mut self.pending) {
                    if p.broker != b || p.group != group || p.index > index {
                        still.push(p);
                        continue;
                    }
                    let term_there = log.as_ref().and_then(|l| l.term_of(p.index).ok());
                    if term_there == Some(p.term) {
                        self.acks.push(Ack {
                            group,
                            base_offset: p.base_offset,
                            value: p.value,
                        });
                    }
                }
                self.pending = still;
            }
            Event::Restored { .. } => self.restores += 1,
            Event::Failed { group, reason, .. } => {
                panic!(
                    "seed {}: group {group} failed on {b}: {reason}",
                    self.config.seed
                )
            }
            _ => {}
        }
    }

    /// Every committed entry reported must agree with every earlier report.
    pub(super) fn check_committed(&mut self, b: BrokerId, group: GroupId, through: RaftIndex) {
        let Some(log) = self.brokers[&b].logs.get(&group).cloned() else {
            return;
        };
        let seen = self.committed.entry(group).or_default();
        let from = log.first_raft_index();
        let batches = log
            .read_entries_owned(from, through.next(), u64::MAX)
            .expect("committed entries are in the log");
        for batch in batches {
            let h = batch.header();
            let got = (h.raft_term, h.crc, h.base_offset);
            if let Some(want) = seen.get(&h.raft_index) {
                assert_eq!(
                    *want, got,
                    "seed {}: committed entry {} of group {group} changed on broker {b}",
                    self.config.seed, h.raft_index
                );
            } else {
                seen.insert(h.raft_index, got);
            }
        }
    }

    pub(super) fn check_end(&mut self) {
        let seed = self.config.seed;
        for (g, members) in &self.members {
            // Every replica agrees on the committed prefix, which covers
            // everything ever reported committed.
            let mut commits = Vec::new();
            let mut statuses = Vec::new();
            for b in members {
                let status = self.brokers[b]
                    .node
                    .as_ref()
                    .and_then(|n| n.status(*g))
                    .expect("every replica runs after settling");
                commits.push(status.commit);
                statuses.push(format!(
                    "broker {b}: leader {:?} term {} commit {} last {} matched {:?}",
                    status.leader.map(|l| l.get()),
                    status.term,
                    status.commit,
                    status.last_index,
                    status.matched
                ));
            }
            let commit = *commits.iter().min().expect("members");
            assert!(
                commits.iter().all(|c| *c == commit),
                "seed {seed}: replicas of group {g} did not catch up: {statuses:#?}"
            );
            let seen_max = self
                .committed
                .get(g)
                .and_then(|m| m.keys().next_back().copied())
                .unwrap_or(RaftIndex(0));
            assert!(
                commit >= seen_max,
                "seed {seed}: group {g} settled at commit {commit} below {seen_max} reported before"
            );
            // Retention may have deleted different prefixes: compare what
            // every replica still has.
            let from = members
                .iter()
                .map(|b| self.brokers[b].logs[g].first_raft_index())
                .max()
                .expect("members");
            let mut reference: Option<Vec<(RaftIndex, Term, u32, Offset)>> = None;
            for b in members {
                let log = &self.brokers[b].logs[g];
                let entries: Vec<_> = log
                    .read_entries_owned(from, commit.next().max(from), u64::MAX)
                    .expect("committed prefix readable")
                    .iter()
                    .map(|e| {
                        let h = e.header();
                        (h.raft_index, h.raft_term, h.crc, h.base_offset)
                    })
                    .collect();
                match &reference {
                    None => reference = Some(entries),
                    Some(r) => assert_eq!(
                        r, &entries,
                        "seed {seed}: replicas of group {g} disagree on the committed prefix"
                    ),
                }
            }
        }
        // Every acknowledged batch is where its producer was told.
        if !self.config.fsync {
            return;
        }
        for ack in &self.acks {
            if !self.members.contains_key(&ack.group) {
                // Its group was deleted since.
                continue;
            }
            let leader_log = self.members[&ack.group]
                .iter()
                .map(|b| &self.brokers[b].logs[&ack.group])
                .next()
                .expect("a replica");
            let log = leader_log;
            if ack.base_offset < log.log_start_offset() {
                continue;
            }
            self.acks_checked += 1;
            let chunks = log
                .fetch(ack.base_offset, 1, log.next_offset())
                .unwrap_or_else(|e| panic!("seed {seed}: acknowledged batch unreadable: {e}"))
                .batches;
            let batch = rill_storage::batches_of(&chunks, usize::MAX)
                .next()
                .expect("a batch")
                .expect("valid");
            assert_eq!(
                batch.header().base_offset,
                ack.base_offset,
                "seed {seed}: acknowledged batch of group {} not at its offset",
                ack.group
            );
            let record = batch.records().next().expect("a record").expect("valid");
            assert_eq!(
                record.value.as_deref(),
                Some(&ack.value[..]),
                "seed {seed}: a different batch sits at acknowledged offset {} of group {}",
                ack.base_offset,
                ack.group
            );
        }
    }
}
