//! A replica whose log cannot be read back stops alone, not the broker:
//! raft-rs 0.7 panics when its storage fails a read it needs (the entries
//! a lagging follower lacks, the committed entries to apply), and a
//! segment cut short under the broker made every such read fail. The group
//! whose log is damaged now stops with an [`Event::Failed`] naming the
//! read, and every other group on the node goes on.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod helpers;

use std::path::{Path, PathBuf};

use bytes::Bytes;
use helpers::{GROUP, data_batch, elected_leader, settle, small_config, to_leader};
use raft::eraftpb::MessageType;
use rill_replication::state::{Membership, MemoryStateStore, ReplicaState};
use rill_replication::{BrokerId, CheckedBatch, Event, GroupId, Node, ReplicaSpec};
use rill_storage::RaftIndex;

/// A one-voter group beside the damaged one: it must keep committing.
const HEALTHY: GroupId = GroupId(2);

fn checked(tag: u64) -> CheckedBatch {
    let bytes = Bytes::from(data_batch(tag, 50));
    CheckedBatch::new(bytes, small_config().max_batch_bytes)
        .unwrap()
        .expect("a data batch")
}

/// Adds [`HEALTHY`], with its own directory under `dir`, and elects it.
fn add_healthy_group(node: &mut Node, dir: &Path) {
    let dir = dir.join("healthy");
    std::fs::create_dir_all(&dir).unwrap();
    node.add_group(ReplicaSpec {
        group: HEALTHY,
        dir: &dir,
        log_config: small_config(),
        fsync: true,
        store: Box::new(MemoryStateStore::default()),
        state: ReplicaState::initial(Membership::voters([node.id()])),
    })
    .unwrap();
    node.campaign(HEALTHY).unwrap();
    settle(node);
    assert_eq!(node.leader(HEALTHY), Some(node.id()));
}

/// Leader 1 of [`GROUP`] in `dir/damaged` with `batches` data entries
/// proposed after its no-op; each is acknowledged by broker 2 (and so
/// committed) when `acknowledged`. Broker 3 has answered nothing since the
/// election. Returns the leader, its term and the last index.
fn leader_with_entries(dir: &Path, batches: u64, acknowledged: bool) -> (Node, u64, u64) {
    let dir = dir.join("damaged");
    std::fs::create_dir_all(&dir).unwrap();
    let (mut leader, term) = elected_leader(&dir, small_config());
    for tag in 0..batches {
        let proposed = leader.propose(GROUP, checked(tag)).unwrap();
        settle(&mut leader);
        if acknowledged {
            let mut ack = to_leader(MessageType::MsgAppendResponse, term);
            ack.index = proposed.index.get();
            leader.step(GROUP, ack).unwrap();
            settle(&mut leader);
        }
    }
    let last = leader.status(GROUP).unwrap().last_index.get();
    (leader, term, last)
}

/// The segment files of the damaged group, oldest first.
fn segments(dir: &Path) -> Vec<PathBuf> {
    helpers::segment_logs(&dir.join("damaged"))
}

/// Cuts `segment` to its first 100 bytes, as a faulty disk or a careless
/// operator would under the running broker.
fn cut(segment: &Path) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(segment)
        .unwrap()
        .set_len(100)
        .unwrap();
}

/// The reason of the one [`Event::Failed`] in `events`, for [`GROUP`],
/// which must say the files are damaged (a reopen would find the same).
fn failure(events: &[Event]) -> String {
    let failed: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::Failed {
                group,
                reason,
                damaged,
            } => Some((*group, reason.clone(), *damaged)),
            _ => None,
        })
        .collect();
    assert_eq!(failed.len(), 1, "one group failed: {events:?}");
    assert_eq!(failed[0].0, GROUP);
    assert!(failed[0].2, "a file cut short is damage: {events:?}");
    failed[0].1.clone()
}

/// The healthy group still takes, commits and applies a proposal.
fn assert_healthy_group_commits(node: &mut Node) {
    let proposed = node.propose(HEALTHY, checked(99)).unwrap();
    let (_, events) = settle(node);
    assert!(
        events.iter().any(|e| matches!(
            e,
            Event::Committed { group: HEALTHY, index, .. } if *index == proposed.index
        )),
        "the healthy group commits: {events:?}"
    );
}

#[test]
fn a_leader_that_cannot_read_what_a_lagging_follower_lacks_stops_that_group_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (mut leader, term, last) = leader_with_entries(dir.path(), 120, true);
    add_healthy_group(&mut leader, dir.path());
    let files = segments(dir.path());
    assert!(files.len() >= 2, "the entries span sealed segments");
    cut(&files[0]);

    // Broker 3 answers at last: it holds only the no-op, so the leader
    // reads entries 2 onwards from the cut segment to send them.
    let mut ack = to_leader(MessageType::MsgAppendResponse, term);
    ack.from = 3;
    ack.index = 1;
    leader.step(GROUP, ack).unwrap();
    let (out, events) = settle(&mut leader);

    let reason = failure(&events);
    assert!(
        reason.contains("cannot be read back"),
        "the failure names the read: {reason}"
    );
    assert!(!leader.has_group(GROUP), "the damaged group stopped");
    assert!(
        !out.iter().any(|o| o.group == GROUP && o.to == BrokerId(3)),
        "nothing read from the damaged log was sent"
    );
    assert!(last > 100, "the group had many entries: {last}");
    assert_healthy_group_commits(&mut leader);
}

#[test]
fn a_replica_that_cannot_read_back_committed_entries_to_apply_them_stops_alone() {
    let dir = tempfile::tempdir().unwrap();
    // Written and synced, not yet acknowledged by anyone: not committed.
    let (mut leader, term, last) = leader_with_entries(dir.path(), 120, false);
    add_healthy_group(&mut leader, dir.path());
    let files = segments(dir.path());
    assert!(files.len() >= 2, "the entries span sealed segments");
    cut(&files[0]);

    // Broker 2 acknowledges everything: the entries commit, and raft-rs
    // reads them back from the log to hand them out for applying.
    let mut ack = to_leader(MessageType::MsgAppendResponse, term);
    ack.index = last;
    leader.step(GROUP, ack).unwrap();
    let (_, events) = settle(&mut leader);

    let reason = failure(&events);
    assert!(
        reason.contains("cannot be read back"),
        "the failure names the read: {reason}"
    );
    assert!(
        !events.iter().any(|e| matches!(
            e,
            Event::Committed { group: GROUP, index, .. } if *index > RaftIndex(1)
        )),
        "nothing unreadable was applied: {events:?}"
    );
    assert!(!leader.has_group(GROUP));
    assert_healthy_group_commits(&mut leader);
}

#[test]
fn a_node_whose_logs_read_back_whole_never_reports_a_read_failure() {
    // The same runs on an undamaged log: both followers served, every
    // entry applied, no group failed.
    let dir = tempfile::tempdir().unwrap();
    let (mut leader, term, last) = leader_with_entries(dir.path(), 120, true);
    let mut ack = to_leader(MessageType::MsgAppendResponse, term);
    ack.from = 3;
    ack.index = 1;
    leader.step(GROUP, ack).unwrap();
    let (out, events) = settle(&mut leader);
    assert!(
        !events.iter().any(|e| matches!(e, Event::Failed { .. })),
        "{events:?}"
    );
    assert!(
        out.iter().any(|o| o.group == GROUP
            && o.to == BrokerId(3)
            && o.message.get_msg_type() == MessageType::MsgAppend
            && !o.message.get_entries().is_empty()),
        "broker 3 is sent the entries it lacks"
    );
    assert_eq!(leader.status(GROUP).unwrap().commit, RaftIndex(last));
}

#[test]
fn a_follower_that_cannot_read_back_the_term_an_append_follows_stops_alone() {
    // Follower 2 of leader 1, with many entries in sealed segments: its
    // first segment is cut, and the leader's next append follows an entry
    // there, whose term the follower must read back to accept it.
    let dir = tempfile::tempdir().unwrap();
    let log_dir = dir.path().join("damaged");
    std::fs::create_dir_all(&log_dir).unwrap();
    let mut follower = helpers::node_123(2, &log_dir, small_config());
    let entries: Vec<_> = (1..=120)
        .map(|i| helpers::data_entry(i, 1, &data_batch(i, 50)))
        .collect();
    let mut append = to_leader(MessageType::MsgAppend, 1);
    (append.from, append.to) = (1, 2);
    append.commit = 120;
    append.set_entries(entries.into());
    follower.step(GROUP, append).unwrap();
    settle(&mut follower);
    assert_eq!(follower.status(GROUP).unwrap().commit, RaftIndex(120));
    add_healthy_group(&mut follower, dir.path());
    let files = segments(dir.path());
    assert!(files.len() >= 2, "the entries span sealed segments");
    cut(&files[0]);

    let mut next = to_leader(MessageType::MsgAppend, 1);
    (next.from, next.to) = (1, 2);
    (next.index, next.log_term, next.commit) = (5, 1, 120);
    next.set_entries(vec![helpers::data_entry(6, 1, &data_batch(6, 50))].into());
    // raft-rs takes the unreadable term as "no match" and answers with a
    // rejection; the replica stops at the next round all the same.
    let _ = follower.step(GROUP, next);
    let (_, events) = settle(&mut follower);
    let reason = failure(&events);
    assert!(reason.contains("term of entry 5"), "{reason}");
    assert!(!follower.has_group(GROUP));
    assert_healthy_group_commits(&mut follower);
}
