//! Snapshots received with syncs deferred: a snapshot waits for the
//! group's earlier unsynced Readies and is then installed inside its round;
//! a round installs at most `SNAPSHOT_INSTALLS_PER_ROUND_MAX` snapshots,
//! the next rounds the rest.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod helpers;

use std::sync::Arc;

use helpers::deferred_rounds::{append, node_and_log, round, snapshot};
use helpers::{GROUP, small_config, voters_123};
use rill_replication::node::SNAPSHOT_INSTALLS_PER_ROUND_MAX;
use rill_replication::state::{MemoryStateStore, ReplicaState};
use rill_replication::{BrokerId, GroupId, Node, NodeConfig, ReplicaLogReader, ReplicaSpec};
use rill_storage::{ManualClock, RaftIndex};

#[test]
fn a_snapshot_waits_for_unsynced_readies_then_installs_inside_its_round() {
    let dir = tempfile::tempdir().unwrap();
    let (mut follower, log) = node_and_log(2, voters_123(), dir.path());
    let log_next = || log.next_raft_index().get();
    follower.step(GROUP, append(1)).unwrap();
    let (first, _) = round(&mut follower);
    follower.complete_syncs(first.run(), &mut Vec::new(), &mut Vec::new());
    follower.step(GROUP, append(2)).unwrap();
    let (unsynced, _) = round(&mut follower);
    assert!(!unsynced.is_empty());

    follower.step(GROUP, snapshot(50)).unwrap();
    let (held, _) = round(&mut follower);
    assert!(held.is_empty(), "the snapshot waits for the unsynced Ready");
    assert_eq!(log_next(), 3, "not installed yet");
    // An election timeout meanwhile finds the log as raft-rs left it (a
    // snapshot taken as installed before it counted as applied made
    // raft-rs read entries below the new log start, and abort).
    follower.campaign(GROUP).unwrap();

    follower.complete_syncs(unsynced.run(), &mut Vec::new(), &mut Vec::new());
    let (after, _) = round(&mut follower);
    assert!(after.is_empty(), "installed inside its round");
    assert_eq!(log_next(), 51, "the log restarts after the snapshot");
    follower.campaign(GROUP).unwrap();
    let _ = round(&mut follower);
}

#[test]
fn a_round_installs_a_bounded_number_of_snapshots_and_the_next_rounds_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let mut follower = Node::new(
        NodeConfig::new(BrokerId(2)),
        Arc::new(ManualClock::new(1_000_000)),
    );
    let groups = SNAPSHOT_INSTALLS_PER_ROUND_MAX as u64 + 3;
    let logs: Vec<ReplicaLogReader> = (1..=groups)
        .map(|g| {
            let group_dir = dir.path().join(g.to_string());
            std::fs::create_dir(&group_dir).unwrap();
            follower
                .add_group(ReplicaSpec {
                    group: GroupId(g),
                    dir: &group_dir,
                    log_config: small_config(),
                    fsync: true,
                    store: Box::new(MemoryStateStore::default()),
                    state: ReplicaState::initial(voters_123()),
                })
                .unwrap()
        })
        .collect();
    for g in 1..=groups {
        follower.step(GroupId(g), snapshot(50)).unwrap();
    }
    let installed = || {
        logs.iter()
            .filter(|log| log.next_raft_index() == RaftIndex(51))
            .count()
    };
    let _ = round(&mut follower);
    assert_eq!(installed(), SNAPSHOT_INSTALLS_PER_ROUND_MAX);
    assert!(follower.has_ready(), "the rest wait for the next round");
    let _ = round(&mut follower);
    assert_eq!(installed(), groups as usize);
}
