//! Helpers for the storage- and node-level replication tests: a small log
//! configuration, record batches and raft-rs entries to append, opening a
//! [`ReplicaLog`] over a state store, and a node with one group of three
//! voters, settled round by round or elected its leader. `replica_log`
//! holds what the tests of a `ReplicaLog` as raft-rs's `Storage` share,
//! `replica_state` what the tests of the replica state file share, and
//! `deferred_rounds` what the tests of deferred syncs share.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod deferred_rounds;
pub mod replica_log;
pub mod replica_state;

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use raft::eraftpb::{Entry, EntryType, Message, MessageType};
use rill_replication::state::{Membership, MemoryStateStore, ReplicaState, StateStore};
use rill_replication::storage::ReplicaLog;
use rill_replication::{
    BrokerId, Event, GroupId, Node, NodeConfig, Outgoing, ReplicaLogReader, ReplicaSpec, SyncJob,
};
use rill_storage::{BatchBuilder, LogConfig, ManualClock, NewRecord, RecordBatch};

/// A configuration that exercises rolling and indexing with little data:
/// 64 KiB segments grown in 4 KiB steps, an index entry every 256 bytes,
/// batches up to 16 KiB, no time-based rolling or retention.
pub fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 64 * 1024,
        segment_ms: None,
        grow_step_bytes: 4096,
        index_interval_bytes: 256,
        max_batch_bytes: 16 * 1024,
        retention_ms: None,
        retention_bytes: None,
        ..LogConfig::default()
    }
}

/// The group's membership in these tests: voters 1, 2, 3.
pub fn voters_123() -> Membership {
    Membership::voters([BrokerId(1), BrokerId(2), BrokerId(3)])
}

/// The value of record `i` of the batch tagged `tag`.
pub fn value(tag: u64, i: u64) -> Vec<u8> {
    format!("value-{tag}-{i}-{}", "x".repeat((tag % 7) as usize)).into_bytes()
}

/// An unstamped data batch of `records` records whose values are
/// [`value`]`(tag, i)`.
pub fn data_batch(tag: u64, records: u64) -> Vec<u8> {
    let mut b = BatchBuilder::new(small_config().max_batch_bytes);
    for i in 0..records {
        let v = value(tag, i);
        let key = format!("k{tag}");
        let rec = NewRecord {
            key: Some(key.as_bytes()),
            value: Some(&v),
            headers: &[],
            timestamp_ms: 1_000 + i as i64,
        };
        assert!(b.push(&rec).unwrap());
    }
    b.finish().unwrap()
}

/// A normal entry carrying `batch`.
pub fn data_entry(index: u64, term: u64, batch: &[u8]) -> Entry {
    Entry {
        entry_type: EntryType::EntryNormal,
        term,
        index,
        data: Bytes::copy_from_slice(batch),
        ..Entry::default()
    }
}

/// A leader's no-op: a normal entry without data.
pub fn noop(index: u64, term: u64) -> Entry {
    Entry {
        entry_type: EntryType::EntryNormal,
        term,
        index,
        ..Entry::default()
    }
}

/// A conf-change entry with opaque data and a context.
pub fn conf_change(index: u64, term: u64) -> Entry {
    Entry {
        entry_type: EntryType::EntryConfChange,
        term,
        index,
        data: Bytes::from(format!("opaque conf change {index}").into_bytes()),
        context: Bytes::from_static(b"some context"),
        ..Entry::default()
    }
}

/// A stored data batch with the stamped header fields (base offset, term,
/// Raft index: bytes 4..28) zeroed, as the producer built it.
pub fn unstamped(stored: &[u8]) -> Vec<u8> {
    let mut b = stored.to_vec();
    b[4..28].fill(0);
    b
}

/// The stored batch an entry read back holds (data entries only).
pub fn stored_batch(e: &Entry) -> RecordBatch {
    let b = RecordBatch::new(e.data.clone(), usize::MAX).unwrap();
    b.verify_crc().unwrap();
    b
}

/// Opens the replica in `dir` over a clone of `store` (clones share the
/// in-memory disk), loading its state (initially voters 1, 2, 3).
pub fn open_memory(dir: &Path, store: &MemoryStateStore) -> ReplicaLog {
    try_open_memory(dir, store).unwrap()
}

/// As [`open_memory`], returning the error.
pub fn try_open_memory(
    dir: &Path,
    store: &MemoryStateStore,
) -> Result<ReplicaLog, rill_replication::ReplicationError> {
    let state = store.load(|| ReplicaState::initial(voters_123()));
    open_with(dir, Box::new(store.clone()), state)
}

/// Opens the replica in `dir` over `store`, whose loaded state is `state`.
pub fn open_with(
    dir: &Path,
    store: Box<dyn StateStore>,
    state: ReplicaState,
) -> Result<ReplicaLog, rill_replication::ReplicationError> {
    ReplicaLog::open(
        dir,
        small_config(),
        Arc::new(ManualClock::new(0)),
        store,
        state,
    )
}

/// The group of the node-level tests.
pub const GROUP: GroupId = GroupId(1);

/// Broker `me`'s node with one `fsync=true` group ([`GROUP`]) of voters 1,
/// 2 and 3, its log configured by `log_config`.
pub fn node_123(me: u64, dir: &Path, log_config: LogConfig) -> Node {
    node_with(me, voters_123(), dir, log_config).0
}

/// Broker `me`'s node with one `fsync=true` group ([`GROUP`]) of `members`,
/// its log configured by `log_config`, and the group's log.
pub fn node_with(
    me: u64,
    members: Membership,
    dir: &Path,
    log_config: LogConfig,
) -> (Node, ReplicaLogReader) {
    node_in(GROUP, me, members, dir, log_config)
}

/// As [`node_with`], the group being `group`.
pub fn node_in(
    group: GroupId,
    me: u64,
    members: Membership,
    dir: &Path,
    log_config: LogConfig,
) -> (Node, ReplicaLogReader) {
    let mut node = Node::new(
        NodeConfig::new(BrokerId(me)),
        Arc::new(ManualClock::new(1_000_000)),
    );
    let log = node
        .add_group(ReplicaSpec {
            group,
            dir,
            log_config,
            fsync: true,
            store: Box::new(MemoryStateStore::default()),
            state: ReplicaState::initial(members),
        })
        .unwrap();
    (node, log)
}

/// Runs rounds, syncing everything, until the node has nothing left to do.
/// Returns what it sent and what happened.
pub fn settle(node: &mut Node) -> (Vec<Outgoing>, Vec<Event>) {
    let (mut out, mut events) = (Vec::new(), Vec::new());
    for _ in 0..10 {
        let mut jobs: Vec<SyncJob> = Vec::new();
        let mut round = node.start_round(&mut out, &mut events);
        if round.is_empty() {
            break;
        }
        node.write_round(&mut round, &mut jobs, &mut events);
        let syncs = node.defer_syncs(&mut round, &mut jobs);
        let results = jobs.into_iter().map(SyncJob::run).collect();
        node.finish_round(round, results, &mut out, &mut events);
        node.complete_syncs(syncs.run(), &mut out, &mut events);
    }
    (out, events)
}

/// A message of `kind` from broker 2 to broker 1 in `term`.
pub fn to_leader(kind: MessageType, term: u64) -> Message {
    let mut m = Message::default();
    m.set_msg_type(kind);
    m.from = 2;
    m.to = 1;
    m.term = term;
    m
}

/// Broker 1 as the leader of [`GROUP`], elected by broker 2's votes, its
/// first entry (the new term's no-op) acknowledged by broker 2 and
/// committed. Returns it and its term.
pub fn elected_leader(dir: &Path, log_config: LogConfig) -> (Node, u64) {
    let mut leader = node_123(1, dir, log_config);
    leader.campaign(GROUP).unwrap();
    for vote in [
        MessageType::MsgRequestPreVoteResponse,
        MessageType::MsgRequestVoteResponse,
    ] {
        let (out, _) = settle(&mut leader);
        let asked = out
            .iter()
            .find(|o| o.to == BrokerId(2))
            .expect("a vote asked of broker 2");
        leader
            .step(GROUP, to_leader(vote, asked.message.term))
            .unwrap();
    }
    settle(&mut leader);
    let status = leader.status(GROUP).unwrap();
    assert_eq!(status.leader, Some(BrokerId(1)));
    let mut ack = to_leader(MessageType::MsgAppendResponse, status.term.get());
    ack.index = status.last_index.get();
    leader.step(GROUP, ack).unwrap();
    settle(&mut leader);
    assert_eq!(leader.status(GROUP).unwrap().commit, status.last_index);
    (leader, status.term.get())
}

/// The segment files (`.log`) in `dir`, oldest first.
pub fn segment_logs(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut logs: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    logs
}
