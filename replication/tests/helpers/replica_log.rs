//! Helpers for the tests of a [`ReplicaLog`] as raft-rs's `Storage`: its
//! reads as raft-rs makes them, entries to append and how they must read
//! back, snapshots, saved states and the segment files on disk.

use std::path::Path;

use raft::eraftpb::{ConfState, Entry, EntryType, Snapshot};
use raft::{GetEntriesContext, Storage, StorageError};
use rill_replication::state::{ReplicaState, StateStore};
use rill_replication::storage::{ReplicaLog, snapshot_data};
use rill_storage::{Offset, RaftIndex, Term};

use super::{data_batch, data_entry, stored_batch, unstamped};

pub fn ctx() -> GetEntriesContext {
    GetEntriesContext::empty(false)
}

/// raft-rs's last index (the inherent `ReplicaLog::last_index` shadows the
/// trait method).
pub fn last_index(rl: &ReplicaLog) -> u64 {
    Storage::last_index(rl).unwrap()
}

pub fn entries(rl: &ReplicaLog, lo: u64, hi: u64) -> Vec<Entry> {
    rl.entries(lo, hi, None, ctx()).unwrap()
}

pub fn is_compacted<T: std::fmt::Debug>(r: raft::Result<T>) -> bool {
    matches!(r, Err(raft::Error::Store(StorageError::Compacted)))
}

pub fn is_unavailable<T: std::fmt::Debug>(r: raft::Result<T>) -> bool {
    matches!(r, Err(raft::Error::Store(StorageError::Unavailable)))
}

/// Asserts that `read` is `appended` as stored: control entries exactly,
/// data entries as the appended batch stamped with `offset` and the
/// entry's term and index.
pub fn assert_same_entry(read: &Entry, appended: &Entry, offset: Offset) {
    let at = appended.index;
    assert_eq!(
        read.get_entry_type(),
        appended.get_entry_type(),
        "type of {at}"
    );
    assert_eq!((read.term, read.index), (appended.term, appended.index));
    assert_eq!(read.context, appended.context, "context of {at}");
    if appended.get_entry_type() == EntryType::EntryNormal && !appended.data.is_empty() {
        assert_eq!(
            unstamped(&read.data),
            appended.data.to_vec(),
            "data of {at}"
        );
        let h = *stored_batch(read).header();
        assert_eq!(h.base_offset, offset, "offset of {at}");
        assert_eq!(
            (h.raft_term, h.raft_index),
            (Term(read.term), RaftIndex(at))
        );
    } else {
        assert_eq!(read, appended, "entry {at}");
    }
}

/// `n` data entries from index `first`, all of term `term`, entry `i`
/// carrying `1 + i % 3` records tagged with its index.
pub fn data_entries(first: u64, n: u64, term: u64) -> Vec<Entry> {
    (first..first + n)
        .map(|i| data_entry(i, term, &data_batch(i, 1 + i % 3)))
        .collect()
}

pub fn records_of(e: &Entry) -> u64 {
    stored_batch(e).header().offset_span()
}

pub fn conf_state_123_4() -> ConfState {
    ConfState {
        voters: vec![1, 2, 3],
        learners: vec![4],
        ..ConfState::default()
    }
}

pub fn snapshot_at(index: u64, term: u64, next_offset: u64) -> Snapshot {
    let mut snap = Snapshot {
        data: snapshot_data(Offset(next_offset), RaftIndex(0)),
        ..Snapshot::default()
    };
    let meta = snap.mut_metadata();
    meta.index = index;
    meta.term = term;
    meta.set_conf_state(conf_state_123_4());
    snap
}

pub fn save_synced(store: &mut dyn StateStore, state: &ReplicaState) {
    let sync = store.save(state, true).unwrap().unwrap();
    store.complete_sync(sync.run().unwrap());
}

/// The (base offset, base Raft index) of every segment file in `dir`.
pub fn segment_files(dir: &Path) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            let stem = name.strip_suffix(".log")?;
            let (o, i) = stem.split_once('-')?;
            Some((o.parse().unwrap(), i.parse().unwrap()))
        })
        .collect();
    out.sort();
    out
}
