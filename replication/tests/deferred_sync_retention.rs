//! Retention with syncs deferred: the new log start is synced in a sync
//! round of its own before its segments leave the disk; meanwhile the
//! group writes no entry (it would save the state again), and a leader
//! still sends heartbeats and takes their answers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod helpers;

use bytes::Bytes;
use helpers::deferred_rounds::{elected_leader_and_log, round};
use helpers::{GROUP, data_batch, node_with, small_config};
use raft::eraftpb::{Message, MessageType};
use rill_replication::state::Membership;
use rill_replication::{BrokerId, CheckedBatch, Node};
use rill_storage::LogConfig;

/// `.log` files in `dir`.
fn segment_files(dir: &std::path::Path) -> usize {
    helpers::segment_logs(dir).len()
}

#[test]
fn retention_syncs_the_new_log_start_in_a_deferred_sync_round_before_its_segments_go() {
    let dir = tempfile::tempdir().unwrap();
    let (mut alone, log) = node_with(
        1,
        Membership::voters([BrokerId(1)]),
        dir.path(),
        LogConfig {
            retention_bytes: Some(16 * 1024),
            ..small_config()
        },
    );
    alone.campaign(GROUP).unwrap();
    let _ = round(&mut alone);
    let propose = |node: &mut Node, tag: u64| {
        let bytes = Bytes::from(data_batch(tag, 100));
        let batch = CheckedBatch::new(bytes, small_config().max_batch_bytes)
            .unwrap()
            .expect("a data batch");
        node.propose(GROUP, batch).unwrap();
    };
    // About 300 KB: several 64 KiB segments, each committed and applied
    // inside its round.
    for tag in 0..100 {
        propose(&mut alone, tag);
        let (deferred, _) = round(&mut alone);
        assert!(deferred.is_empty(), "a one-voter group syncs in its round");
    }
    let files = segment_files(dir.path());
    let log_start = log.log_start_offset();

    let mut events = Vec::new();
    let syncs = alone.apply_retention(&mut events);
    assert!(events.is_empty(), "no group failed");
    assert_eq!(syncs.jobs(), 1, "the new log start's state sync");
    assert!(syncs.readies() == 0, "no Ready waits for it");
    assert!(
        log.log_start_offset() > log_start,
        "the segments leave the log at once"
    );
    assert!(
        alone.take_expired().is_empty(),
        "but not the disk before the sync"
    );
    assert_eq!(segment_files(dir.path()), files);

    // Meanwhile the group takes no Ready: it would save the state again.
    let end = log.next_raft_index();
    propose(&mut alone, 100);
    let (held, out) = round(&mut alone);
    assert!(held.is_empty() && out.is_empty());
    assert_eq!(log.next_raft_index(), end, "nothing written");

    alone.complete_syncs(syncs.run(), &mut Vec::new(), &mut events);
    assert!(events.is_empty(), "no group failed");
    let expired = alone.take_expired();
    assert_eq!(expired.len(), 1, "the segments are the caller's to unlink");
    for e in expired {
        e.unlink().unwrap();
    }
    assert!(segment_files(dir.path()) < files, "unlinked");
    let _ = round(&mut alone);
    assert!(
        log.next_raft_index() > end,
        "the group goes on once the sync is back"
    );
}

#[test]
fn a_leader_sends_heartbeats_while_retention_syncs_its_new_log_start() {
    let dir = tempfile::tempdir().unwrap();
    let (mut leader, log) = elected_leader_and_log(
        dir.path(),
        LogConfig {
            retention_bytes: Some(16 * 1024),
            ..small_config()
        },
    );
    let term = leader.status(GROUP).unwrap().term.get();
    let propose = |node: &mut Node, tag: u64| {
        let bytes = Bytes::from(data_batch(tag, 100));
        let batch = CheckedBatch::new(bytes, small_config().max_batch_bytes)
            .unwrap()
            .expect("a data batch");
        node.propose(GROUP, batch).unwrap()
    };
    // About 300 KB, committed by follower 2 and applied: several 64 KiB
    // segments past the retention.
    for tag in 0..100 {
        let proposed = propose(&mut leader, tag);
        let (syncs, _) = round(&mut leader);
        leader.complete_syncs(syncs.run(), &mut Vec::new(), &mut Vec::new());
        let mut ack = Message::default();
        ack.set_msg_type(MessageType::MsgAppendResponse);
        ack.from = 2;
        ack.to = 1;
        ack.term = term;
        ack.index = proposed.index.get();
        leader.step(GROUP, ack).unwrap();
    }
    let (syncs, _) = round(&mut leader);
    leader.complete_syncs(syncs.run(), &mut Vec::new(), &mut Vec::new());

    let mut events = Vec::new();
    let syncs = leader.apply_retention(&mut events);
    assert!(events.is_empty(), "no group failed: {events:?}");
    assert_eq!(syncs.jobs(), 1, "the new log start's state sync runs");

    // Heartbeats fall due while it runs (under writeback, for seconds).
    for _ in 0..4 {
        leader.tick();
    }
    let (held, out) = round(&mut leader);
    assert!(held.is_empty());
    let beats: std::collections::BTreeSet<BrokerId> = out
        .iter()
        .filter(|o| o.message.get_msg_type() == MessageType::MsgHeartbeat)
        .map(|o| o.to)
        .collect();
    assert_eq!(
        beats,
        [BrokerId(2), BrokerId(3)].into(),
        "the followers hear from their leader"
    );
    // A follower's answer is taken too; a new entry waits for the sync.
    let mut answer = Message::default();
    answer.set_msg_type(MessageType::MsgHeartbeatResponse);
    answer.from = 2;
    answer.to = 1;
    answer.term = term;
    leader.step(GROUP, answer).unwrap();
    let end = log.next_raft_index();
    propose(&mut leader, 100);
    let _ = round(&mut leader);
    assert_eq!(log.next_raft_index(), end, "nothing written");

    leader.complete_syncs(syncs.run(), &mut Vec::new(), &mut events);
    assert!(events.is_empty(), "no group failed: {events:?}");
    let _ = round(&mut leader);
    assert!(
        log.next_raft_index() > end,
        "the entry is written once the sync is back"
    );
}
