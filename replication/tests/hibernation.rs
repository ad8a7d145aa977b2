//! Idle groups hibernate, on real `Node`s joined by an in-memory network:
//! a settled group's leader and followers stop ticking and sending; a
//! proposal wakes it and commits without an election; a leader whose
//! broker goes down is replaced within a few ticks once the survivors are
//! told, even by one of them alone; a restarted leader asking for
//! votes is heard by followers still asleep under its old lease; and a
//! follower back at once with an empty disk, which waits silently for its
//! leader, is caught up once its leader is told it reconnected.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod helpers;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use helpers::{GROUP, data_batch, settle, small_config, voters_123};
use rill_replication::state::{FileStateStore, ReplicaState};
use rill_replication::{BrokerId, CheckedBatch, Node, NodeConfig, ReplicaSpec};
use rill_storage::ManualClock;

/// Ticks a settled group waits before it hibernates, in these tests.
const QUIESCE_AFTER_TICKS: u32 = 5;

/// Brokers 1, 2 and 3, each with a replica of [`GROUP`], and the messages
/// between the live ones delivered at once.
struct Cluster {
    root: tempfile::TempDir,
    nodes: BTreeMap<u64, Node>,
    /// Brokers whose messages go nowhere and who hear nothing.
    down: BTreeSet<u64>,
    /// Messages delivered so far.
    delivered: usize,
}

impl Cluster {
    fn new() -> Cluster {
        let mut c = Cluster {
            root: tempfile::tempdir().unwrap(),
            nodes: BTreeMap::new(),
            down: BTreeSet::new(),
            delivered: 0,
        };
        for id in 1..=3 {
            c.open(id);
        }
        c
    }

    fn dir(&self, id: u64) -> PathBuf {
        self.root.path().join(format!("b{id}"))
    }

    /// Opens broker `id`'s replica from its files (a restart when it has
    /// some).
    fn open(&mut self, id: u64) {
        // The old process's files (and lock) go first.
        self.nodes.remove(&id);
        let dir = self.dir(id);
        std::fs::create_dir_all(&dir).unwrap();
        let mut config = NodeConfig::new(BrokerId(id));
        config.quiesce_after_ticks = Some(QUIESCE_AFTER_TICKS);
        let mut node = Node::new(config, Arc::new(ManualClock::new(1_000_000)));
        let (store, state) =
            FileStateStore::open(&dir, || ReplicaState::initial(voters_123())).unwrap();
        node.add_group(ReplicaSpec {
            group: GROUP,
            dir: &dir,
            log_config: small_config(),
            fsync: true,
            store: Box::new(store),
            state,
        })
        .unwrap();
        self.nodes.insert(id, node);
    }

    fn node(&mut self, id: u64) -> &mut Node {
        self.nodes.get_mut(&id).unwrap()
    }

    /// Delivers messages between live brokers until none is left.
    fn run(&mut self) {
        for _ in 0..50 {
            let mut sent = Vec::new();
            for (id, node) in self.nodes.iter_mut() {
                let (out, _) = settle(node);
                if !self.down.contains(id) {
                    sent.extend(out);
                }
            }
            sent.retain(|o| !self.down.contains(&o.to.get()));
            if sent.is_empty() {
                return;
            }
            for o in sent {
                self.delivered += 1;
                let _ = self
                    .nodes
                    .get_mut(&o.to.get())
                    .unwrap()
                    .step(o.group, o.message);
            }
        }
    }

    /// One tick on every live broker, delivering after it.
    fn tick(&mut self) {
        for (id, node) in self.nodes.iter_mut() {
            if !self.down.contains(id) {
                node.tick();
            }
        }
        self.run();
    }

    fn leader(&mut self) -> Option<(u64, u64)> {
        let live: Vec<u64> = self
            .nodes
            .keys()
            .copied()
            .filter(|id| !self.down.contains(id))
            .collect();
        live.into_iter().find_map(|id| {
            let s = self.node(id).status(GROUP).unwrap();
            (s.leader == Some(BrokerId(id))).then_some((id, s.term.get()))
        })
    }

    fn all_hibernating(&self) -> bool {
        self.nodes
            .iter()
            .filter(|(id, _)| !self.down.contains(id))
            .all(|(_, n)| n.is_hibernating(GROUP))
    }

    fn produce(&mut self, leader: u64, tag: u64) {
        let batch = CheckedBatch::new(Bytes::from(data_batch(tag, 3)), 1 << 20)
            .unwrap()
            .unwrap();
        self.node(leader).propose(GROUP, batch).unwrap();
        self.run();
    }

    /// Ticks until `cond` holds, at most `ticks` times; how many it took.
    fn tick_until(&mut self, ticks: usize, mut cond: impl FnMut(&mut Cluster) -> bool) -> usize {
        for n in 0..ticks {
            if cond(self) {
                return n;
            }
            self.tick();
        }
        assert!(cond(self), "not within {ticks} ticks");
        ticks
    }
}

/// Broker 1 elected, a batch committed everywhere, and the group asleep.
fn hibernating_cluster() -> (Cluster, u64) {
    let mut c = Cluster::new();
    c.node(1).campaign(GROUP).unwrap();
    c.run();
    let (leader, term) = c.leader().unwrap();
    assert_eq!(leader, 1);
    c.produce(1, 1);
    c.tick_until(QUIESCE_AFTER_TICKS as usize + 10, |c| c.all_hibernating());
    (c, term)
}

#[test]
fn a_settled_group_stops_ticking_and_sending_on_every_replica() {
    let (mut c, term) = hibernating_cluster();
    for id in 1..=3 {
        assert_eq!(c.node(id).awake_groups(), 0, "broker {id}");
    }
    let before = c.delivered;
    for _ in 0..200 {
        c.tick();
    }
    assert_eq!(c.delivered, before, "a hibernating group sends nothing");
    assert_eq!(c.leader(), Some((1, term)));
}

#[test]
fn a_proposal_wakes_the_group_and_commits_without_an_election() {
    let (mut c, term) = hibernating_cluster();
    let commit = c.node(1).status(GROUP).unwrap().commit;
    c.produce(1, 2);
    c.tick_until(5, |c| {
        (1..=3).all(|id| c.node(id).status(GROUP).unwrap().commit > commit)
    });
    assert_eq!(c.leader(), Some((1, term)), "no election");
    // Settled again, it sleeps again; after a long sleep the leader still
    // leads (check-quorum counts from its waking).
    c.tick_until(QUIESCE_AFTER_TICKS as usize + 10, |c| c.all_hibernating());
    for _ in 0..500 {
        c.tick();
    }
    c.produce(1, 3);
    for _ in 0..30 {
        c.tick();
    }
    assert_eq!(c.leader(), Some((1, term)));
}

#[test]
fn a_leader_found_down_is_replaced_within_a_few_ticks() {
    let (mut c, term) = hibernating_cluster();
    c.down.insert(1);
    // Asleep, nobody notices on their own.
    for _ in 0..100 {
        c.tick();
    }
    assert!(c.node(2).is_hibernating(GROUP) && c.node(3).is_hibernating(GROUP));
    for id in [2, 3] {
        c.node(id).peer_down(BrokerId(1));
    }
    let took = c.tick_until(10, |c| c.leader().is_some());
    let (leader, new_term) = c.leader().unwrap();
    assert!(leader != 1 && new_term > term, "{leader} {new_term}");
    assert!(took <= 6, "took {took} ticks");
}

#[test]
fn one_survivor_told_of_the_leader_down_is_enough() {
    let (mut c, term) = hibernating_cluster();
    c.down.insert(1);
    c.node(3).peer_down(BrokerId(1));
    // Broker 2 is still asleep under the old lease; broker 3's requests
    // wake it, and it grants them once its own clock runs out, or asks
    // itself.
    c.tick_until(40, |c| c.leader().is_some_and(|(_, t)| t > term));
}

#[test]
fn a_follower_back_at_once_with_an_empty_disk_is_caught_up_once_it_reconnects() {
    let (mut c, _) = hibernating_cluster();
    let commit = c.node(1).status(GROUP).unwrap().commit;
    // Broker 3 loses its disk and is back before anyone found it down; its
    // replica rejoins: it neither campaigns nor says anything.
    c.nodes.remove(&3);
    std::fs::remove_dir_all(c.dir(3)).unwrap();
    c.open(3);
    c.node(3).set_rejoining(true);
    for _ in 0..100 {
        c.tick();
    }
    assert!(
        c.node(3).status(GROUP).unwrap().commit < commit,
        "nothing reaches it while its leader sleeps"
    );
    c.node(1).peer_reconnected(BrokerId(3));
    c.tick_until(20, |c| c.node(3).status(GROUP).unwrap().commit >= commit);
}

#[test]
fn a_restarted_leader_asking_for_votes_ends_its_old_lease() {
    let (mut c, term) = hibernating_cluster();
    // Broker 1 restarts from its files, quickly enough that nobody was
    // told it was down: it no longer leads, and campaigns once its
    // election clock runs out.
    c.open(1);
    c.tick_until(40, |c| c.leader().is_some_and(|(_, t)| t > term));
    let (leader, _) = c.leader().unwrap();
    c.produce(leader, 4);
}

#[test]
fn a_leading_replica_that_goes_on_a_live_broker_hands_its_lead_over() {
    let (mut c, term) = hibernating_cluster();
    // Broker 1 stays up (nobody finds it down) but closes its replica:
    // asleep under its lease, the followers would wait for ever.
    c.node(1).remove_group(GROUP).unwrap();
    c.down.insert(1);
    // The heir's campaign message leaves with broker 1's next round; lost
    // on the way, it leaves again after the next tick.
    let (lost, _) = settle(c.node(1));
    assert_eq!(lost.len(), 1, "{lost:?}");
    c.node(1).tick();
    let (out, _) = settle(c.node(1));
    assert_eq!(out.len(), 1, "sent again: {out:?}");
    for o in out {
        c.node(o.to.get()).step(o.group, o.message).unwrap();
    }
    c.tick_until(5, |c| c.leader().is_some_and(|(_, t)| t > term));
    // Sent a bounded number of times, then no more.
    for _ in 0..20 {
        c.node(1).tick();
        settle(c.node(1));
    }
    c.node(1).tick();
    assert!(settle(c.node(1)).0.is_empty());
}
