//! Deferred syncs ([`Node::defer_syncs`], [`Node::complete_syncs`]): a
//! follower's acknowledgement of an append leaves only once the sync round
//! that syncs it has run and been handed back; sync rounds merged while
//! waiting are synced by one run and release every acknowledgement they
//! hold; a snapshot waits for earlier unsynced Readies and is installed
//! inside its round; a one-voter group is never deferred; heartbeats are
//! answered at once unless the term they are answered in is not yet
//! durable; retention's new log start is synced in a sync round of its own
//! before its segments go, and meanwhile a leader still sends heartbeats
//! but writes no entry; a round installs at most
//! `SNAPSHOT_INSTALLS_PER_ROUND_MAX` snapshots; an append carrying an
//! invalid entry is refused whole before raft-rs takes it, and the group
//! goes on; a leader's appends name where their entries lie in its segments
//! once the round is written.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod helpers;

use std::sync::Arc;

use bytes::Bytes;
use helpers::{data_batch, data_entry, small_config, voters_123};
use raft::eraftpb::{Message, MessageType, Snapshot, SnapshotMetadata};
use rill_replication::node::SNAPSHOT_INSTALLS_PER_ROUND_MAX;
use rill_replication::state::{Membership, MemoryStateStore, ReplicaState};
use rill_replication::storage::snapshot_data;
use rill_replication::{
    BrokerId, CheckedBatch, Event, GroupId, Node, NodeConfig, Outgoing, ReplicaLogReader,
    ReplicaSpec, ReplicationError, SyncJob, SyncRound,
};
use rill_storage::{LogConfig, ManualClock, Offset, RaftIndex};

const GROUP: GroupId = GroupId(1);

/// Broker `me`'s node with one `fsync=true` group of `members`.
fn node(me: u64, members: Membership, dir: &std::path::Path) -> Node {
    node_and_log(me, members, dir).0
}

/// As [`node`], with the group's log.
fn node_and_log(me: u64, members: Membership, dir: &std::path::Path) -> (Node, ReplicaLogReader) {
    node_with(me, members, dir, small_config())
}

/// As [`node_and_log`], with the group's log configured by `log_config`.
fn node_with(
    me: u64,
    members: Membership,
    dir: &std::path::Path,
    log_config: LogConfig,
) -> (Node, ReplicaLogReader) {
    let mut node = Node::new(
        NodeConfig::new(BrokerId(me)),
        Arc::new(ManualClock::new(1_000_000)),
    );
    let log = node
        .add_group(ReplicaSpec {
            group: GROUP,
            dir,
            log_config,
            fsync: true,
            store: Box::new(MemoryStateStore::default()),
            state: ReplicaState::initial(members),
        })
        .unwrap();
    (node, log)
}

/// Leader 1's append, in term 1, of entry `index` after `index - 1`.
fn append(index: u64) -> Message {
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
fn round(node: &mut Node) -> (SyncRound, Vec<Outgoing>) {
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
fn synced_follower(dir: &std::path::Path) -> Node {
    let mut follower = node(2, voters_123(), dir);
    follower.step(GROUP, append(1)).unwrap();
    let (first, _) = round(&mut follower);
    follower.complete_syncs(first.run(), &mut Vec::new(), &mut Vec::new());
    follower
}

/// The indexes acknowledged by the append responses in `out`.
fn acknowledged(out: &[Outgoing]) -> Vec<u64> {
    out.iter()
        .filter(|o| o.message.get_msg_type() == MessageType::MsgAppendResponse)
        .inspect(|o| assert!(!o.message.reject, "the append is accepted"))
        .map(|o| o.message.index)
        .collect()
}

#[test]
fn a_followers_acknowledgement_leaves_only_after_its_deferred_sync() {
    let dir = tempfile::tempdir().unwrap();
    let mut follower = node(2, voters_123(), dir.path());
    follower.step(GROUP, append(1)).unwrap();

    let (syncs, out) = round(&mut follower);
    assert!(!syncs.is_empty(), "a follower of a 3-voter group defers");
    assert!(
        syncs.jobs() > 0,
        "the log (and the new term) wait for the sync round"
    );
    assert_eq!(
        acknowledged(&out),
        Vec::<u64>::new(),
        "nothing before the sync"
    );

    // While the sync round (with the new term's state sync) is out, the group
    // starts no Ready.
    follower.step(GROUP, append(2)).unwrap();
    let (later, out) = round(&mut follower);
    assert!(later.is_empty());
    assert!(out.is_empty());

    let mut out = Vec::new();
    let mut events = Vec::new();
    follower.complete_syncs(syncs.run(), &mut out, &mut events);
    assert_eq!(
        acknowledged(&out),
        vec![1],
        "released by the completed sync"
    );
    assert!(events.is_empty(), "no group failed");
}

#[test]
fn merged_sync_rounds_are_synced_by_one_run_and_release_every_acknowledgement() {
    let dir = tempfile::tempdir().unwrap();
    let mut follower = synced_follower(dir.path());

    follower.step(GROUP, append(2)).unwrap();
    let (mut waiting, out) = round(&mut follower);
    assert!(acknowledged(&out).is_empty());
    follower.step(GROUP, append(3)).unwrap();
    let (later, out) = round(&mut follower);
    assert!(
        !later.is_empty(),
        "deferred: an earlier Ready of the group is still unsynced"
    );
    assert!(acknowledged(&out).is_empty());

    waiting.merge(later);
    assert_eq!(waiting.jobs(), 1, "the newer log plan covers the older");
    assert_eq!(waiting.readies(), 2);
    let mut out = Vec::new();
    follower.complete_syncs(waiting.run(), &mut out, &mut Vec::new());
    assert_eq!(acknowledged(&out), vec![2, 3]);
    let status = follower.status(GROUP).unwrap();
    assert_eq!(status.last_index.get(), 3);
}

/// Leader 1's heartbeat, in term 1, telling follower 2 of `commit`.
fn heartbeat(commit: u64) -> Message {
    let mut m = Message::default();
    m.set_msg_type(MessageType::MsgHeartbeat);
    m.from = 1;
    m.to = 2;
    m.term = 1;
    m.commit = commit;
    m
}

fn heartbeat_responses(out: &[Outgoing]) -> usize {
    out.iter()
        .filter(|o| o.message.get_msg_type() == MessageType::MsgHeartbeatResponse)
        .count()
}

#[test]
fn heartbeats_are_answered_while_a_log_sync_is_deferred() {
    let dir = tempfile::tempdir().unwrap();
    let mut follower = synced_follower(dir.path());

    // Term and vote are durable now; entry 2's sync is deferred (it may
    // take seconds behind other writes), and the leader's heartbeat
    // arrives meanwhile.
    follower.step(GROUP, append(2)).unwrap();
    let (waiting, out) = round(&mut follower);
    assert!(!waiting.is_empty());
    assert!(
        acknowledged(&out).is_empty(),
        "the append waits for its sync"
    );
    follower.step(GROUP, heartbeat(1)).unwrap();
    let (later, out) = round(&mut follower);
    assert_eq!(
        heartbeat_responses(&out),
        1,
        "the heartbeat is answered at once, not after the sync"
    );
    assert!(acknowledged(&out).is_empty());

    let mut out = Vec::new();
    let mut merged = waiting;
    merged.merge(later);
    follower.complete_syncs(merged.run(), &mut out, &mut Vec::new());
    assert_eq!(
        acknowledged(&out),
        vec![2],
        "released by the completed sync"
    );
    assert_eq!(heartbeat_responses(&out), 0, "answered once only");
}

#[test]
fn a_heartbeat_in_a_new_term_is_answered_only_once_the_term_is_durable() {
    let dir = tempfile::tempdir().unwrap();
    let mut follower = node(2, voters_123(), dir.path());
    // The follower first hears of term 1 from this heartbeat: the new term
    // must be synced before anything is said in it.
    follower.step(GROUP, heartbeat(0)).unwrap();
    let (syncs, out) = round(&mut follower);
    assert!(!syncs.is_empty(), "the new term's state sync is deferred");
    assert_eq!(
        heartbeat_responses(&out),
        0,
        "nothing before the term is durable"
    );
    let mut out = Vec::new();
    follower.complete_syncs(syncs.run(), &mut out, &mut Vec::new());
    assert_eq!(
        heartbeat_responses(&out),
        1,
        "answered once the term is durable"
    );
}

#[test]
fn a_sync_that_completes_after_its_group_closed_is_handed_back_to_drop() {
    let dir = tempfile::tempdir().unwrap();
    let mut follower = synced_follower(dir.path());
    follower.step(GROUP, append(2)).unwrap();
    let (waiting, _) = round(&mut follower);
    assert!(waiting.jobs() > 0);
    // The topic is deleted while the sync runs.
    follower.remove_group(GROUP).unwrap();
    let mut out = Vec::new();
    follower.complete_syncs(waiting.run(), &mut out, &mut Vec::new());
    assert!(out.is_empty(), "nothing is said for a closed group");
    assert_eq!(
        follower.take_closed_syncs().len(),
        1,
        "the sync, which holds the files open, is the caller's to drop"
    );
    assert!(follower.take_closed_syncs().is_empty(), "handed back once");
}

#[test]
fn a_sync_of_a_group_stopped_and_opened_again_never_completes_the_new_life() {
    // The group's first life defers the sync of entry 2 and stops (say a
    // write failed); the broker opens it again from its files and it takes
    // entry 3, whose Ready is again the first of its raft-rs node.
    let dir = tempfile::tempdir().unwrap();
    let mut follower = synced_follower(dir.path());
    follower.step(GROUP, append(2)).unwrap();
    let (old_life, _) = round(&mut follower);
    assert!(old_life.jobs() > 0);
    follower.remove_group(GROUP).unwrap();
    follower
        .add_group(ReplicaSpec {
            group: GROUP,
            dir: dir.path(),
            log_config: small_config(),
            fsync: true,
            store: Box::new(MemoryStateStore::default()),
            state: ReplicaState::initial(voters_123()),
        })
        .unwrap();
    follower.step(GROUP, append(3)).unwrap();
    let (new_life, out) = round(&mut follower);
    assert!(acknowledged(&out).is_empty());
    assert!(new_life.jobs() > 0, "entry 3 waits for its own sync");

    // The old life's sync round completes: it syncs nothing of entry 3, so it
    // releases nothing, and is handed back as a closed group's.
    let mut out = Vec::new();
    let mut events = Vec::new();
    follower.complete_syncs(old_life.run(), &mut out, &mut events);
    assert!(
        acknowledged(&out).is_empty(),
        "entry 3 is acknowledged only by its own sync"
    );
    assert!(events.is_empty(), "{events:?}");
    assert_eq!(follower.take_closed_syncs().len(), 1);

    follower.complete_syncs(new_life.run(), &mut out, &mut events);
    assert_eq!(acknowledged(&out), vec![3]);
    assert!(events.is_empty(), "{events:?}");
}

/// Leader 1's snapshot, in term 1, at `index`.
fn snapshot(index: u64) -> Message {
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
        data: snapshot_data(Offset(500)),
        ..Snapshot::default()
    };
    snap.set_metadata(meta);
    m.set_snapshot(snap);
    m
}

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

#[test]
fn a_one_voter_group_syncs_inside_its_round() {
    let dir = tempfile::tempdir().unwrap();
    let mut alone = node(1, Membership::voters([BrokerId(1)]), dir.path());
    alone.campaign(GROUP).unwrap();
    let mut out = Vec::new();
    let mut events = Vec::new();
    let mut jobs = Vec::new();
    let mut round = alone.start_round(&mut out, &mut events);
    alone.write_round(&mut round, &mut jobs, &mut events);
    let syncs = alone.defer_syncs(&mut round, &mut jobs);
    assert!(syncs.is_empty(), "nothing deferred");
    assert!(!jobs.is_empty(), "its syncs stay in the round");
    let results = jobs.into_iter().map(SyncJob::run).collect();
    alone.finish_round(round, results, &mut out, &mut events);
    assert_eq!(alone.leader(GROUP), Some(BrokerId(1)));
}

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

/// Damage done to a batch's bytes.
type Spoiler = fn(&mut Vec<u8>);

/// Leader 1's append, in term 1, of entries 2 and 3 after entry 1, the
/// second with `spoil` applied to its batch.
fn append_spoiled(spoil: impl FnOnce(&mut Vec<u8>)) -> Message {
    let mut m = append(2);
    let mut bad = data_batch(3, 2);
    spoil(&mut bad);
    m.set_entries(vec![data_entry(2, 1, &data_batch(2, 2)), data_entry(3, 1, &bad)].into());
    m
}

#[test]
fn an_append_with_an_invalid_entry_is_refused_whole_and_the_group_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let (mut follower, log) = node_and_log(2, voters_123(), dir.path());
    follower.step(GROUP, append(1)).unwrap();
    let (first, _) = round(&mut follower);
    follower.complete_syncs(first.run(), &mut Vec::new(), &mut Vec::new());

    let spoilers: [(&str, Spoiler); 3] = [
        ("a record byte flipped under the CRC", |b| {
            let last = b.len() - 1;
            b[last] ^= 0x40;
        }),
        ("the batch cut short", |b| b.truncate(b.len() - 3)),
        ("the length field changed", |b| b[0] ^= 0x01),
    ];
    for (what, spoil) in spoilers {
        let err = follower.step(GROUP, append_spoiled(spoil)).unwrap_err();
        assert!(
            matches!(err, ReplicationError::RefusedEntry { index: 3, .. }),
            "{what}: {err}"
        );
        let (syncs, out) = round(&mut follower);
        assert!(
            syncs.is_empty() && out.is_empty(),
            "{what}: raft-rs never saw the append (no Ready, no response)"
        );
        assert_eq!(
            log.next_raft_index(),
            RaftIndex(2),
            "{what}: not even the valid entry before it was taken"
        );
    }

    // The leader's resend, intact, is taken as if nothing had happened.
    follower.step(GROUP, append_spoiled(|_| {})).unwrap();
    let (syncs, _) = round(&mut follower);
    let (mut out, mut events) = (Vec::new(), Vec::new());
    follower.complete_syncs(syncs.run(), &mut out, &mut events);
    assert_eq!(acknowledged(&out), vec![3]);
    assert!(events.is_empty(), "no group failed: {events:?}");
    assert_eq!(log.next_raft_index(), RaftIndex(4));
}

/// Broker 1 as the leader of a 3-voter group, elected by broker 2's votes.
fn elected_leader(dir: &std::path::Path) -> (Node, ReplicaLogReader) {
    elected_leader_with(dir, small_config())
}

/// As [`elected_leader`], its log configured by `log_config`.
fn elected_leader_with(dir: &std::path::Path, log_config: LogConfig) -> (Node, ReplicaLogReader) {
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

#[test]
fn a_leaders_appends_name_where_their_written_entries_lie_in_its_segments() {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let (mut leader, _log) = elected_leader(dir.path());
    let data = Bytes::from(data_batch(9, 200));
    assert!(data.len() >= rill_replication::wire::ZERO_COPY_BYTES_MIN);
    leader
        .propose(
            GROUP,
            CheckedBatch::new(data.clone(), 1 << 20).unwrap().unwrap(),
        )
        .unwrap();
    let mut out = Vec::new();
    let mut events = Vec::new();
    let mut jobs = Vec::new();
    let mut round = leader.start_round(&mut out, &mut events);
    let carrying = |out: &[Outgoing]| {
        out.iter()
            .filter(|o| o.message.get_msg_type() == MessageType::MsgAppend)
            .filter(|o| o.message.get_entries().iter().any(|e| e.data == data))
            .count()
    };
    assert_eq!(carrying(&out), 2, "the batch goes to both followers");
    leader.attach_file_spans(&mut out);
    assert!(
        out.iter().all(|o| o.spans.iter().all(Option::is_none)),
        "nothing is in the segments before the round is written"
    );
    leader.write_round(&mut round, &mut jobs, &mut events);
    leader.attach_file_spans(&mut out);
    let mut spans = 0;
    for o in out
        .iter()
        .filter(|o| o.message.get_msg_type() == MessageType::MsgAppend)
    {
        let entries = o.message.get_entries();
        for (j, e) in entries.iter().enumerate() {
            let span = o.spans.get(j).and_then(Option::as_ref);
            if e.data.len() < rill_replication::wire::ZERO_COPY_BYTES_MIN {
                assert!(span.is_none(), "small entries go from memory");
                continue;
            }
            let span = span.expect("a written data entry has a span");
            spans += 1;
            let mut stored = vec![0; span.len as usize];
            span.file.read_exact_at(&mut stored, span.offset).unwrap();
            // The stored copy is the batch, stamped (offset, term, index)
            // in the header fields the CRC does not cover.
            assert_eq!(stored.len(), data.len());
            assert_eq!(stored[32..], data[32..]);
            assert_eq!(&stored[..4], &data[..4]);
        }
    }
    assert_eq!(spans, 2, "one per follower's append");
    let syncs = leader.defer_syncs(&mut round, &mut jobs);
    let results = jobs.into_iter().map(SyncJob::run).collect();
    leader.finish_round(round, results, &mut out, &mut events);
    leader.complete_syncs(syncs.run(), &mut Vec::new(), &mut Vec::new());
}

#[test]
fn a_leader_sends_heartbeats_while_retention_syncs_its_new_log_start() {
    let dir = tempfile::tempdir().unwrap();
    let (mut leader, log) = elected_leader_with(
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
