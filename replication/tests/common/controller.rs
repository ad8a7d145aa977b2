//! The controller group and its metadata, as the broker runs them: every
//! broker is a voter of the controller's group, metadata commands (a group
//! created with its replicas, a group deleted) are proposed to its leader,
//! and each broker applies the committed ones in order, in the middle of
//! the round that reports them, opening the replicas the metadata assigns
//! it and closing (and removing) those of deleted groups. A broker that
//! starts replays the controller's committed log before it opens any
//! other replica.
//!
//! Checked at the end: every broker applied the same commands to the same
//! metadata, it matches what the committed log says, and each broker has
//! open exactly the replicas the metadata assigns it.

use super::*;

/// Data groups the metadata holds at most: at the bound a command deletes.
const DATA_GROUPS_MAX: usize = 8;

/// A metadata command, as stored in a record of the controller's log.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Command {
    Create(GroupId, Vec<BrokerId>),
    Delete(GroupId),
}

impl Command {
    fn encode(&self) -> Vec<u8> {
        match self {
            Command::Create(g, members) => {
                let m: Vec<String> = members.iter().map(|b| b.get().to_string()).collect();
                format!("create {} {}", g.get(), m.join(",")).into_bytes()
            }
            Command::Delete(g) => format!("delete {}", g.get()).into_bytes(),
        }
    }

    fn decode(value: &[u8]) -> Command {
        let text = std::str::from_utf8(value).expect("a command is text");
        let mut parts = text.split(' ');
        match (parts.next(), parts.next(), parts.next()) {
            (Some("create"), Some(g), Some(m)) => Command::Create(
                GroupId(g.parse().expect("group")),
                m.split(',')
                    .map(|b| BrokerId(b.parse().expect("broker")))
                    .collect(),
            ),
            (Some("delete"), Some(g), None) => Command::Delete(GroupId(g.parse().expect("group"))),
            _ => panic!("not a metadata command: {text}"),
        }
    }

    fn apply(&self, image: &mut BTreeMap<GroupId, Vec<BrokerId>>) {
        match self {
            Command::Create(g, members) => {
                image.entry(*g).or_insert_with(|| members.clone());
            }
            Command::Delete(g) => {
                image.remove(g);
            }
        }
    }
}

impl Sim {
    /// Proposes a metadata command to the controller's leader, if one is
    /// known: a new group while there are few, else a deletion.
    pub(super) fn propose_metadata(&mut self) {
        let Some(leader) = self.alive().into_iter().find(|b| {
            self.brokers[b]
                .node
                .as_ref()
                .is_some_and(|n| n.leader(GroupId::CONTROLLER) == Some(*b))
        }) else {
            return;
        };
        let groups: Vec<GroupId> = self.data_groups();
        let command = if !self.config.deletes
            || (groups.len() < DATA_GROUPS_MAX && self.rng.chance(600))
        {
            if groups.len() >= DATA_GROUPS_MAX {
                return;
            }
            self.next_group += 1;
            let n = self.config.brokers;
            let first = self.rng.below(n);
            let members = (0..self.config.replication_factor)
                .map(|k| BrokerId((first + k) % n + 1))
                .collect();
            Command::Create(GroupId(self.next_group), members)
        } else if let Some(&g) = groups.get(self.rng.below(groups.len().max(1) as u64) as usize) {
            Command::Delete(g)
        } else {
            return;
        };
        let mut b = BatchBuilder::new(16 * 1024);
        b.push(&NewRecord::value(&command.encode(), 1_000_000))
            .expect("fits");
        let batch = CheckedBatch::new(Bytes::from(b.finish().expect("builds")), 16 * 1024)
            .expect("valid")
            .expect("data batch");
        let node = self
            .brokers
            .get_mut(&leader)
            .and_then(|br| br.node.as_mut())
            .expect("alive");
        if node.propose(GroupId::CONTROLLER, batch).is_ok() {
            self.metadata_proposed += 1;
            self.trace = mix(self.trace, 0xC7 ^ self.metadata_proposed);
        }
    }

    /// The data groups the metadata holds as far as any broker applied it.
    pub(super) fn data_groups(&self) -> Vec<GroupId> {
        self.members
            .keys()
            .copied()
            .filter(|g| *g != GroupId::CONTROLLER)
            .collect()
    }

    /// Applies broker `b`'s committed controller entries through `through`
    /// to its metadata, then opens and closes its replicas to match: `node`
    /// is `b`'s, out of the broker while a round or a start runs.
    pub(super) fn apply_metadata(&mut self, b: BrokerId, node: &mut Node, through: RaftIndex) {
        let broker = &self.brokers[&b];
        if through <= broker.applied {
            return;
        }
        let log = broker.logs[&GroupId::CONTROLLER].clone();
        let from = broker.applied.next().max(log.first_raft_index());
        let batches = log
            .read_entries_owned(from, through.next(), u64::MAX)
            .expect("committed controller entries are in the log");
        let mut image = broker.image.clone();
        for batch in batches {
            let index = batch.header().raft_index;
            for record in batch.records() {
                let record = record.expect("valid");
                let command = Command::decode(record.value.as_deref().expect("a value"));
                command.apply(&mut image);
                if index > self.metadata_applied {
                    // The first broker to apply an entry moves the truth
                    // the checks use; the committed-entry checks make sure
                    // every other applies the same.
                    command.apply(&mut self.members);
                    if let Command::Create(..) = command {
                        self.groups_created += 1;
                    } else {
                        self.groups_deleted += 1;
                    }
                }
            }
            self.metadata_applied = self.metadata_applied.max(index);
        }
        let broker = self.brokers.get_mut(&b).expect("broker");
        broker.image = image;
        broker.applied = through;
        self.reconcile(b, node);
    }

    /// Opens the replicas `b`'s metadata assigns it and closes (and
    /// removes) those of groups it no longer holds.
    pub(super) fn reconcile(&mut self, b: BrokerId, node: &mut Node) {
        let broker = &self.brokers[&b];
        let wanted: Vec<(GroupId, Vec<BrokerId>)> = broker
            .image
            .iter()
            .filter(|(g, m)| m.contains(&b) && !node.has_group(**g) && !broker.closed.contains(g))
            .map(|(g, m)| (*g, m.clone()))
            .collect();
        let gone: Vec<GroupId> = node
            .groups()
            .chain(broker.closed.iter().copied())
            .filter(|g| *g != GroupId::CONTROLLER && !broker.image.contains_key(g))
            .collect();
        // As the broker does: a deletion is carried out only once the
        // controller's commit that covers it is durable, else a power cut
        // could make the next start replay the metadata without it and open
        // the deleted group again, empty.
        let durable = gone.is_empty()
            || node
                .persist_state(GroupId::CONTROLLER)
                .expect("the controller's state saves");
        self.brokers.get_mut(&b).expect("broker").deletions_pending = !durable;
        let gone = if durable { gone } else { Vec::new() };
        for g in gone {
            // As the broker's janitor does, later; the files' last holders
            // (syncs out, the reader) may outlive the directory.
            let _ = node.remove_group(g);
            let broker = self.brokers.get_mut(&b).expect("broker");
            broker.closed.retain(|c| *c != g);
            broker.logs.remove(&g);
            self.stores.remove(&(b, g));
            std::fs::remove_dir_all(self.dir(b, g)).expect("remove a deleted replica");
            self.trace = mix(self.trace, 0xDE1 ^ (g.get() << 8) ^ b.get());
        }
        for (g, members) in wanted {
            let log = self.open_group(node, b, g, members);
            self.brokers
                .get_mut(&b)
                .expect("broker")
                .logs
                .insert(g, log);
            self.trace = mix(self.trace, 0x0FE ^ (g.get() << 8) ^ b.get());
        }
    }

    /// Every broker applied the same metadata, the committed log's, and
    /// has open exactly the replicas it assigns it.
    pub(super) fn check_metadata(&mut self) {
        let seed = self.config.seed;
        let truth: BTreeMap<GroupId, Vec<BrokerId>> = self
            .members
            .iter()
            .filter(|(g, _)| **g != GroupId::CONTROLLER)
            .map(|(g, m)| (*g, m.clone()))
            .collect();
        for (b, broker) in &self.brokers {
            let node = broker
                .node
                .as_ref()
                .expect("every broker runs after settling");
            let commit = node
                .status(GroupId::CONTROLLER)
                .expect("the controller is open")
                .commit;
            assert_eq!(
                broker.applied, commit,
                "seed {seed}: broker {b} applied the metadata through {} of {commit}",
                broker.applied
            );
            assert_eq!(
                broker.image, truth,
                "seed {seed}: broker {b}'s metadata differs from the committed log's"
            );
            let open: BTreeSet<GroupId> = node
                .groups()
                .filter(|g| *g != GroupId::CONTROLLER)
                .collect();
            let assigned: BTreeSet<GroupId> = truth
                .iter()
                .filter(|(_, m)| m.contains(b))
                .map(|(g, _)| *g)
                .collect();
            assert_eq!(
                open, assigned,
                "seed {seed}: broker {b} has open other replicas than the metadata assigns it"
            );
            self.metadata_checked += 1;
        }
    }
}
