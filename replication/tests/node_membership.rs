//! A group's membership changed through its log, on real `Node`s joined by
//! an in-memory network: a learner added, catching up and swapped in for a
//! voter by joint consensus; every member applying each change once, in
//! log order, and finding it again after a restart; a leader that a change
//! leaves without a vote stepping down instead of failing; and the steps
//! raft-rs would silently drop refused with a reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod helpers;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use helpers::{GROUP, data_batch, settle, small_config, voters_123};
use rill_replication::conf::MembershipChange;
use rill_replication::state::{FileStateStore, Membership, ReplicaState};
use rill_replication::{
    BrokerId, CheckedBatch, Node, NodeConfig, ReplicaLogReader, ReplicaSpec, ReplicationError,
};
use rill_storage::{ManualClock, Offset, RaftIndex};

fn ids(raw: &[u64]) -> Vec<BrokerId> {
    raw.iter().map(|&b| BrokerId(b)).collect()
}

/// Brokers, each with one replica of [`GROUP`] kept in its own directory,
/// and the messages between them delivered at once.
struct Cluster {
    root: tempfile::TempDir,
    nodes: BTreeMap<u64, (Node, ReplicaLogReader)>,
}

impl Cluster {
    fn dir(&self, id: u64) -> PathBuf {
        self.root.path().join(format!("b{id}"))
    }

    /// Opens broker `id`'s replica from its files, created with `state`
    /// when there are none.
    fn open(&mut self, id: u64, state: ReplicaState) {
        let dir = self.dir(id);
        std::fs::create_dir_all(&dir).unwrap();
        self.nodes.insert(id, open_node(id, &dir, state));
    }

    /// Delivers messages until none is left, at most `rounds` times.
    fn run(&mut self, rounds: usize) {
        for _ in 0..rounds {
            let mut sent = Vec::new();
            for (node, _) in self.nodes.values_mut() {
                let (out, _) = settle(node);
                sent.extend(out);
            }
            if sent.is_empty() {
                return;
            }
            for o in sent {
                if let Some((node, _)) = self.nodes.get_mut(&o.to.get()) {
                    // A removed member's messages are refused: that is
                    // the point of removing it.
                    let _ = node.step(o.group, o.message);
                }
            }
        }
    }

    /// Ticks broker `id` until it has heartbeated (a leader's appends to
    /// a follower it has not heard from wait for a heartbeat's answer),
    /// delivering as it goes.
    fn heartbeat(&mut self, id: u64) {
        for _ in 0..8 {
            self.node(id).tick();
            self.run(50);
        }
    }

    fn node(&mut self, id: u64) -> &mut Node {
        &mut self.nodes.get_mut(&id).expect("broker is up").0
    }

    fn membership(&mut self, id: u64) -> (Membership, RaftIndex) {
        let s = self.node(id).status(GROUP).expect("replica open");
        (s.membership.normalized(), s.membership_index)
    }

    fn leader(&mut self) -> Option<u64> {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        ids.into_iter().find(|id| {
            let s = self.node(*id).status(GROUP).unwrap();
            s.leader == Some(BrokerId(*id))
        })
    }

    /// Proposes `change` at `leader` and delivers until it is applied.
    fn change(&mut self, leader: u64, change: MembershipChange) -> RaftIndex {
        let index = self
            .node(leader)
            .propose_membership_change(GROUP, &change)
            .unwrap();
        self.run(50);
        index
    }

    fn produce(&mut self, leader: u64, tag: u64) {
        let batch = CheckedBatch::new(Bytes::from(data_batch(tag, 3)), 1 << 20)
            .unwrap()
            .unwrap();
        self.node(leader).propose(GROUP, batch).unwrap();
        self.run(50);
    }
}

fn open_node(id: u64, dir: &Path, state: ReplicaState) -> (Node, ReplicaLogReader) {
    let mut node = Node::new(
        NodeConfig::new(BrokerId(id)),
        Arc::new(ManualClock::new(1_000_000)),
    );
    let (store, state) = FileStateStore::open(dir, || state).unwrap();
    let log = node
        .add_group(ReplicaSpec {
            group: GROUP,
            dir,
            log_config: small_config(),
            fsync: true,
            store: Box::new(store),
            state,
        })
        .unwrap();
    (node, log)
}

/// Brokers 1, 2 and 3 as the voters, 1 elected and its first entry
/// committed everywhere.
fn three_voters() -> Cluster {
    let mut c = Cluster {
        root: tempfile::tempdir().unwrap(),
        nodes: BTreeMap::new(),
    };
    for id in 1..=3 {
        c.open(id, ReplicaState::initial(voters_123()));
    }
    c.node(1).campaign(GROUP).unwrap();
    c.run(50);
    assert_eq!(c.leader(), Some(1));
    c
}

/// Broker `id` joining as a learner added at `index`: its replica starts
/// from the membership that change led to (as a new replica is seeded).
fn join(c: &mut Cluster, id: u64, index: RaftIndex) {
    let (membership, at) = c.membership(1);
    assert_eq!(at, index);
    let state = ReplicaState {
        membership,
        membership_index: index,
        ..ReplicaState::default()
    };
    c.open(id, state);
    c.heartbeat(1);
}

#[test]
fn a_learner_catches_up_and_is_swapped_in_for_a_voter_by_joint_consensus() {
    let mut c = three_voters();
    c.produce(1, 1);

    let added = c.change(1, MembershipChange::AddLearner(BrokerId(4)));
    for id in 1..=3 {
        let (m, at) = c.membership(id);
        assert_eq!(
            (m.voters, m.learners, at),
            (ids(&[1, 2, 3]), ids(&[4]), added),
            "broker {id}"
        );
    }
    join(&mut c, 4, added);
    c.run(50);
    c.produce(1, 2);
    let leader_last = c.node(1).status(GROUP).unwrap().last_index;
    assert_eq!(
        c.node(4).status(GROUP).unwrap().last_index,
        leader_last,
        "the learner caught up"
    );
    let matched = c.node(1).status(GROUP).unwrap().matched;
    assert!(matched.contains(&(BrokerId(4), leader_last)), "{matched:?}");

    let joint = c.change(
        1,
        MembershipChange::EnterJoint {
            add: ids(&[4]),
            remove: ids(&[3]),
        },
    );
    for id in 1..=4 {
        let (m, at) = c.membership(id);
        assert_eq!(
            (m.voters, m.voters_outgoing, m.learners, at),
            (ids(&[1, 2, 4]), ids(&[1, 2, 3]), vec![], joint),
            "broker {id}"
        );
    }
    // Joint: a commit needs both majorities. With 2 and 4 away, 1 and 3
    // are a majority of the old voters only, and nothing commits.
    let (away2, away4) = (c.nodes.remove(&2).unwrap(), c.nodes.remove(&4).unwrap());
    let commit = c.node(1).status(GROUP).unwrap().commit;
    let batch = CheckedBatch::new(Bytes::from(data_batch(3, 1)), 1 << 20)
        .unwrap()
        .unwrap();
    c.node(1).propose(GROUP, batch).unwrap();
    c.run(50);
    assert_eq!(c.node(1).status(GROUP).unwrap().commit, commit);
    c.nodes.insert(4, away4);
    c.heartbeat(1);
    assert!(
        c.node(1).status(GROUP).unwrap().commit > commit,
        "1, 3 and 4: both majorities"
    );
    c.nodes.insert(2, away2);
    c.heartbeat(1);

    let left = c.change(1, MembershipChange::LeaveJoint);
    for id in [1, 2, 4] {
        let (m, at) = c.membership(id);
        assert_eq!(
            (m.clone(), at),
            (Membership::voters(ids(&[1, 2, 4])), left),
            "broker {id}"
        );
    }
    // Broker 3 is out: the group commits without it.
    c.nodes.remove(&3);
    c.produce(1, 4);
    let s = c.node(1).status(GROUP).unwrap();
    assert_eq!(s.commit, s.last_index);

    // Restarted, every member comes back with the membership it applied,
    // and applies no change twice when the log is handed out again.
    for id in [1, 2, 4] {
        c.nodes.remove(&id);
        let dir = c.dir(id);
        c.nodes
            .insert(id, open_node(id, &dir, ReplicaState::default()));
        assert_eq!(
            c.membership(id),
            (Membership::voters(ids(&[1, 2, 4])), left),
            "broker {id}"
        );
    }
    c.node(2).campaign(GROUP).unwrap();
    c.run(50);
    assert_eq!(c.leader(), Some(2));
    c.produce(2, 5);
    for id in [1, 2, 4] {
        assert_eq!(c.membership(id).1, left, "broker {id}");
        let s = c.node(id).status(GROUP).unwrap();
        assert!(s.high_watermark > Offset(0));
    }
}

#[test]
fn a_leader_a_change_leaves_without_a_vote_steps_down_and_the_rest_elect() {
    let mut c = three_voters();
    let added = c.change(1, MembershipChange::AddLearner(BrokerId(4)));
    join(&mut c, 4, added);
    c.run(50);
    c.change(
        1,
        MembershipChange::EnterJoint {
            add: ids(&[4]),
            remove: ids(&[1]),
        },
    );
    assert_eq!(
        c.leader(),
        Some(1),
        "an outgoing voter may lead the joint group"
    );
    c.change(1, MembershipChange::LeaveJoint);
    assert_eq!(
        c.leader(),
        None,
        "broker 1 stepped down once it applied its removal"
    );
    assert_eq!(c.membership(1).0, Membership::voters(ids(&[2, 3, 4])));
    assert!(matches!(
        c.node(1)
            .propose_membership_change(GROUP, &MembershipChange::AddLearner(BrokerId(5))),
        Err(ReplicationError::NotLeader { .. })
    ));
    c.nodes.remove(&1);
    // Once the followers' lease on broker 1 runs out, they elect one of
    // themselves.
    for _ in 0..40 {
        for id in [2, 3, 4] {
            c.node(id).tick();
        }
        c.run(50);
        if c.leader().is_some() {
            break;
        }
    }
    let leader = c.leader().expect("a new leader among 2, 3 and 4");
    c.produce(leader, 1);
    let s = c.node(leader).status(GROUP).unwrap();
    assert_eq!(s.commit, s.last_index);
}

#[test]
fn steps_raft_rs_would_drop_are_refused_with_a_reason() {
    let mut c = three_voters();
    let refused = |r: Result<RaftIndex, ReplicationError>| match r {
        Err(ReplicationError::MembershipChangeRefused { reason, .. }) => reason,
        other => panic!("{other:?}"),
    };
    // Not a learner yet: a voter is added only once it learned the log.
    let why = refused(c.node(1).propose_membership_change(
        GROUP,
        &MembershipChange::EnterJoint {
            add: ids(&[4]),
            remove: vec![],
        },
    ));
    assert!(why.contains("not a learner"), "{why}");
    assert!(
        refused(
            c.node(1)
                .propose_membership_change(GROUP, &MembershipChange::LeaveJoint)
        )
        .contains("not joint")
    );
    // One change at a time: the second waits until the first is applied.
    c.node(1)
        .propose_membership_change(GROUP, &MembershipChange::AddLearner(BrokerId(4)))
        .unwrap();
    let why = refused(
        c.node(1)
            .propose_membership_change(GROUP, &MembershipChange::AddLearner(BrokerId(5))),
    );
    assert!(why.contains("not applied yet"), "{why}");
    assert!(matches!(
        c.node(2)
            .propose_membership_change(GROUP, &MembershipChange::AddLearner(BrokerId(5))),
        Err(ReplicationError::NotLeader { .. })
    ));
    c.run(50);
    c.change(1, MembershipChange::AddLearner(BrokerId(5)));
    assert_eq!(c.membership(2).0.learners, ids(&[4, 5]));
}
