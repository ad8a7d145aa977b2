//! Helpers for the storage-level replication tests: a small log
//! configuration, record batches and raft-rs entries to append, and opening
//! a [`ReplicaLog`] over a state store.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use raft::eraftpb::{Entry, EntryType};
use rill_replication::BrokerId;
use rill_replication::state::{Membership, MemoryStateStore, ReplicaState, StateStore};
use rill_replication::storage::ReplicaLog;
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
