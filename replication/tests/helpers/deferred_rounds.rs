//! Helpers for the tests of deferred syncs: a node whose group is followed
//! or led by broker 1 of voters 1, 2 and 3, the messages leader 1 sends
//! follower 2 (appends, heartbeats, snapshots), one round with its syncs
//! deferred, and what a round's output acknowledges.

use std::path::Path;

use raft::eraftpb::{Message, MessageType, Snapshot, SnapshotMetadata};
use rill_replication::state::Membership;
use rill_replication::storage::snapshot_data;
use rill_replication::{BrokerId, Event, Node, Outgoing, ReplicaLogReader, SyncJob, SyncRound};
use rill_storage::{LogConfig, Offset};

use super::{GROUP, data_batch, data_entry, node_with, small_config, voters_123};

/// Broker `me`'s node with one `fsync=true` group of `members`.
pub fn node(me: u64, members: Membership, dir: &Path) -> Node {
    node_and_log(me, members, dir).0
}

/// As [`node`], with the group's log.
pub fn node_and_log(me: u64, members: Membership, dir: &Path) -> (Node, ReplicaLogReader) {
    node_with(me, members, dir, small_config())
}

/// Leader 1's append, in term 1, of entry `index` after `index - 1`.
pub fn append(index: u64) -> Message {
    let mut m = Message::default();
    m.set_msg_type(MessageType::MsgAppend);
    m.from = 1;
    m.to = 2;
    m.term = 1;
    m.index = index - 1;
    m.log_term = u64::from(index > 1);
    m.set_entries(vec![data_entry(index, 1, &data_batch(index, 2))].into());
    m
}

/// One round with its syncs deferred; what is left in the round finishes
/// at once. Returns the sync round and the messages the round let out.
pub fn round(node: &mut Node) -> (SyncRound, Vec<Outgoing>) {
    let mut out = Vec::new();
    let mut events: Vec<Event> = Vec::new();
    let mut jobs: Vec<SyncJob> = Vec::new();
    let mut round = node.start_round(&mut out, &mut events);
    node.write_round(&mut round, &mut jobs, &mut events);
    let syncs = node.defer_syncs(&mut round, &mut jobs);
    let results = jobs.into_iter().map(SyncJob::run).collect();
    node.finish_round(round, results, &mut out, &mut events);
    (syncs, out)
}

/// Follower 2 of a 3-voter group, with entry 1 (and term 1) synced.
pub fn synced_follower(dir: &Path) -> Node {
    let mut follower = node(2, voters_123(), dir);
    follower.step(GROUP, append(1)).unwrap();
    let (first, _) = round(&mut follower);
    follower.complete_syncs(first.run(), &mut Vec::new(), &mut Vec::new());
    follower
}

/// The indexes acknowledged by the append responses in `out`.
pub fn acknowledged(out: &[Outgoing]) -> Vec<u64> {
    out.iter()
        .filter(|o| o.message.get_msg_type() == MessageType::MsgAppendResponse)
        .inspect(|o| assert!(!o.message.reject, "the append is accepted"))
        .map(|o| o.message.index)
        .collect()
}

/// Leader 1's heartbeat, in term 1, telling follower 2 of `commit`.
pub fn heartbeat(commit: u64) -> Message {
    let mut m = Message::default();
    m.set_msg_type(MessageType::MsgHeartbeat);
    m.from = 1;
    m.to = 2;
    m.term = 1;
    m.commit = commit;
    m
}

pub fn heartbeat_responses(out: &[Outgoing]) -> usize {
    out.iter()
        .filter(|o| o.message.get_msg_type() == MessageType::MsgHeartbeatResponse)
        .count()
}

/// Leader 1's snapshot, in term 1, at `index`.
pub fn snapshot(index: u64) -> Message {
    let mut m = Message::default();
    m.set_msg_type(MessageType::MsgSnapshot);
    m.from = 1;
    m.to = 2;
    m.term = 1;
    let mut meta = SnapshotMetadata {
        index,
        term: 1,
        ..SnapshotMetadata::default()
    };
    meta.set_conf_state(voters_123().to_raft());
    let mut snap = Snapshot {
        data: snapshot_data(Offset(500), rill_storage::RaftIndex(0)),
        ..Snapshot::default()
    };
    snap.set_metadata(meta);
    m.set_snapshot(snap);
    m
}

/// Broker 1 as the leader of a 3-voter group, elected by broker 2's votes
/// in rounds whose syncs are deferred, its followers having taken the new
/// term's first entry; with the group's log, configured by `log_config`.
pub fn elected_leader_and_log(dir: &Path, log_config: LogConfig) -> (Node, ReplicaLogReader) {
    let (mut leader, log) = node_with(1, voters_123(), dir, log_config);
    leader.campaign(GROUP).unwrap();
    for vote in [
        MessageType::MsgRequestPreVoteResponse,
        MessageType::MsgRequestVoteResponse,
    ] {
        let (syncs, mut out) = round(&mut leader);
        let mut outs = Vec::new();
        leader.complete_syncs(syncs.run(), &mut outs, &mut Vec::new());
        out.extend(outs);
        let asked = out
            .iter()
            .find(|o| o.to == BrokerId(2))
            .expect("a vote asked of broker 2");
        let mut m = Message::default();
        m.set_msg_type(vote);
        m.from = 2;
        m.to = 1;
        m.term = asked.message.term;
        leader.step(GROUP, m).unwrap();
    }
    let (syncs, out) = round(&mut leader);
    leader.complete_syncs(syncs.run(), &mut Vec::new(), &mut Vec::new());
    assert_eq!(leader.leader(GROUP), Some(BrokerId(1)));
    // The followers take the new term's first entry: the leader replicates
    // to them from here on, rather than probing.
    for o in out
        .iter()
        .filter(|o| o.message.get_msg_type() == MessageType::MsgAppend)
    {
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgAppendResponse);
        m.from = o.to.get();
        m.to = 1;
        m.term = o.message.term;
        m.index = o
            .message
            .get_entries()
            .last()
            .map_or(o.message.index, |e| e.index);
        leader.step(GROUP, m).unwrap();
    }
    (leader, log)
}
