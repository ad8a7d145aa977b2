//! Which peers a group listens to: its voters and learners, as the replica
//! knows its configuration, and no other broker, however authenticated.
#![allow(clippy::unwrap_used)]

mod helpers;

use std::sync::Arc;

use helpers::{small_config, voters_123};
use rill_replication::state::{MemoryStateStore, ReplicaState};
use rill_replication::{BrokerId, GroupId, Node, NodeConfig, ReplicaSpec};
use rill_storage::ManualClock;

#[test]
fn only_a_groups_members_count_as_its_peers() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::new(
        NodeConfig::new(BrokerId(2)),
        Arc::new(ManualClock::new(1_000_000)),
    );
    node.add_group(ReplicaSpec {
        group: GroupId(7),
        dir: dir.path(),
        log_config: small_config(),
        fsync: true,
        store: Box::new(MemoryStateStore::default()),
        state: ReplicaState::initial(voters_123()),
    })
    .unwrap();
    for member in 1..=3 {
        assert!(node.is_member(GroupId(7), BrokerId(member)));
    }
    assert!(!node.is_member(GroupId(7), BrokerId(4)));
    assert!(
        !node.is_member(GroupId(8), BrokerId(1)),
        "no such group here"
    );
}
