//! raft-rs's `Storage` over the segment log: entries read back as they were
//! appended, conflicts replace the suffix, snapshots restart the log, and
//! opening restores the invariants after crashes at every awkward moment.
#![allow(clippy::unwrap_used)]

mod helpers;

use std::path::Path;

use bytes::Bytes;
use helpers::{
    conf_change, data_batch, data_entry, noop, open_memory, open_with, small_config, stored_batch,
    try_open_memory, unstamped, value, voters_123,
};
use raft::eraftpb::{ConfState, Entry, EntryType, HardState as RaftHardState, Snapshot};
use raft::{GetEntriesContext, Storage, StorageError};
use rill_replication::state::{
    FileStateStore, HardState, Membership, MemoryStateStore, ReplicaState, StateStore,
    TruncatedState,
};
use rill_replication::storage::{ReplicaLog, snapshot_data};
use rill_replication::{BrokerId, ReplicationError};
use rill_storage::fault::forget_unsynced;
use rill_storage::{Offset, RaftIndex, Term};

fn ctx() -> GetEntriesContext {
    GetEntriesContext::empty(false)
}

/// raft-rs's last index (the inherent `ReplicaLog::last_index` shadows the
/// trait method).
fn last_index(rl: &ReplicaLog) -> u64 {
    Storage::last_index(rl).unwrap()
}

fn entries(rl: &ReplicaLog, lo: u64, hi: u64) -> Vec<Entry> {
    rl.entries(lo, hi, None, ctx()).unwrap()
}

fn is_compacted<T: std::fmt::Debug>(r: raft::Result<T>) -> bool {
    matches!(r, Err(raft::Error::Store(StorageError::Compacted)))
}

fn is_unavailable<T: std::fmt::Debug>(r: raft::Result<T>) -> bool {
    matches!(r, Err(raft::Error::Store(StorageError::Unavailable)))
}

/// Asserts that `read` is `appended` as stored: control entries exactly,
/// data entries as the appended batch stamped with `offset` and the
/// entry's term and index.
fn assert_same_entry(read: &Entry, appended: &Entry, offset: Offset) {
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
fn data_entries(first: u64, n: u64, term: u64) -> Vec<Entry> {
    (first..first + n)
        .map(|i| data_entry(i, term, &data_batch(i, 1 + i % 3)))
        .collect()
}

fn records_of(e: &Entry) -> u64 {
    stored_batch(e).header().offset_span()
}

fn conf_state_123_4() -> ConfState {
    ConfState {
        voters: vec![1, 2, 3],
        learners: vec![4],
        ..ConfState::default()
    }
}

fn snapshot_at(index: u64, term: u64, next_offset: u64) -> Snapshot {
    let mut snap = Snapshot {
        data: snapshot_data(Offset(next_offset)),
        ..Snapshot::default()
    };
    let meta = snap.mut_metadata();
    meta.index = index;
    meta.term = term;
    meta.set_conf_state(conf_state_123_4());
    snap
}

fn save_synced(store: &mut dyn StateStore, state: &ReplicaState) {
    let sync = store.save(state, true).unwrap().unwrap();
    store.complete_sync(sync.run().unwrap());
}

/// The (base offset, base Raft index) of every segment file in `dir`.
fn segment_files(dir: &Path) -> Vec<(u64, u64)> {
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

// ---------------------------------------------------------------------------
// A fresh replica.
// ---------------------------------------------------------------------------

#[test]
fn a_fresh_replica_has_its_membership_a_default_hard_state_and_no_entries() {
    let dir = tempfile::tempdir().unwrap();
    let rl = open_memory(dir.path(), &MemoryStateStore::default());
    let rs = rl.initial_state().unwrap();
    assert_eq!(rs.hard_state, RaftHardState::default());
    assert_eq!(
        rs.conf_state,
        ConfState {
            voters: vec![1, 2, 3],
            ..ConfState::default()
        }
    );
    assert_eq!(rl.first_index().unwrap(), 1);
    assert_eq!(last_index(&rl), 0);
    assert_eq!(rl.term(0).unwrap(), 0);
    assert!(is_unavailable(rl.term(1)));
    assert!(is_unavailable(rl.entries(1, 2, None, ctx())));
    assert_eq!(rl.entries(1, 1, None, ctx()).unwrap(), Vec::<Entry>::new());
    assert_eq!(rl.next_offset_after(RaftIndex(0)).unwrap(), Offset(0));
    let snap = rl.snapshot(0, 2).unwrap();
    assert_eq!(snap.get_metadata().index, 0);
    assert_eq!(snap.get_metadata().term, 0);
}

// ---------------------------------------------------------------------------
// Appending and reading back.
// ---------------------------------------------------------------------------

#[test]
fn data_noop_and_conf_change_entries_read_back_as_appended() {
    let dir = tempfile::tempdir().unwrap();
    let mut rl = open_memory(dir.path(), &MemoryStateStore::default());
    let mut v2 = conf_change(6, 2);
    v2.set_entry_type(EntryType::EntryConfChangeV2);
    v2.context = Bytes::new();
    let appended = vec![
        noop(1, 1),
        data_entry(2, 1, &data_batch(2, 3)),
        conf_change(3, 1),
        data_entry(4, 2, &data_batch(4, 5)),
        noop(5, 2),
        v2,
        data_entry(7, 3, &data_batch(7, 1)),
    ];
    // Offsets each entry starts at: no-ops and conf changes take none.
    let offsets = [0, 0, 3, 3, 8, 8, 8];
    let after = [0, 3, 3, 8, 8, 8, 9];
    // As a follower would: in two Readies.
    rl.append(&appended[..3], false).unwrap();
    rl.append(&appended[3..], false).unwrap();

    assert_eq!(rl.first_index().unwrap(), 1);
    assert_eq!(last_index(&rl), 7);
    let read = entries(&rl, 1, 8);
    assert_eq!(read.len(), 7);
    for (i, (r, a)) in read.iter().zip(&appended).enumerate() {
        assert_same_entry(r, a, Offset(offsets[i]));
        assert_eq!(rl.term(a.index).unwrap(), a.term);
        assert_eq!(
            rl.next_offset_after(RaftIndex(a.index)).unwrap(),
            Offset(after[i]),
            "next offset after {}",
            a.index
        );
    }
    // The records of the data entries carry the offsets they were given.
    let rec_offsets: Vec<(u64, Vec<u8>)> = [&read[1], &read[3], &read[6]]
        .iter()
        .flat_map(|e| {
            let b = stored_batch(e);
            b.records()
                .map(|r| {
                    let r = r.unwrap();
                    (r.offset.get(), r.value.unwrap().to_vec())
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let expected: Vec<(u64, Vec<u8>)> = (0..3)
        .map(|i| (i, value(2, i)))
        .chain((0..5).map(|i| (3 + i, value(4, i))))
        .chain([(8, value(7, 0))])
        .collect();
    assert_eq!(rec_offsets, expected);
    // Sub-ranges read the same.
    for lo in 1..=7 {
        for hi in lo..=8 {
            let part = entries(&rl, lo, hi);
            assert_eq!(
                part,
                read[(lo - 1) as usize..(hi - 1) as usize],
                "[{lo}, {hi})"
            );
        }
    }
    assert_eq!(rl.term(0).unwrap(), 0);
    assert!(is_unavailable(rl.term(8)));
}

#[test]
fn entries_read_back_the_same_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = MemoryStateStore::default();
    let mut rl = open_memory(dir.path(), &store);
    let appended = vec![
        noop(1, 1),
        data_entry(2, 1, &data_batch(2, 2)),
        conf_change(3, 1),
        data_entry(4, 1, &data_batch(4, 1)),
    ];
    rl.append(&appended, false).unwrap();
    let before = entries(&rl, 1, 5);
    drop(rl);
    let rl = open_memory(dir.path(), &store);
    assert_eq!(last_index(&rl), 4);
    assert_eq!(entries(&rl, 1, 5), before);
}

#[test]
fn max_size_limits_the_entries_returned_but_never_below_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut rl = open_memory(dir.path(), &MemoryStateStore::default());
    rl.append(&data_entries(1, 5, 1), false).unwrap();
    let all = entries(&rl, 1, 6);
    let size: Vec<u64> = all.iter().map(|e| e.data.len() as u64).collect();
    let count = |max: Option<u64>| rl.entries(1, 6, max, ctx()).unwrap().len();
    assert_eq!(count(None), 5);
    assert_eq!(count(Some(u64::MAX)), 5);
    assert_eq!(count(Some(0)), 1);
    assert_eq!(count(Some(1)), 1);
    assert_eq!(count(Some(size[0])), 1);
    assert_eq!(count(Some(size[0] + size[1] - 1)), 1);
    assert_eq!(count(Some(size[0] + size[1])), 2);
    assert_eq!(count(Some(size[..4].iter().sum::<u64>())), 4);
    assert_eq!(count(Some(size.iter().sum::<u64>())), 5);
    // What is returned is a prefix.
    let two = rl.entries(1, 6, Some(size[0] + size[1]), ctx()).unwrap();
    assert_eq!(two, all[..2]);
    // Never past `high` whatever the budget.
    assert_eq!(rl.entries(2, 4, None, ctx()).unwrap(), all[1..3]);
}

#[test]
fn entries_spanning_several_segments_read_back_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = MemoryStateStore::default();
    let mut rl = open_memory(dir.path(), &store);
    // ~1.3 KiB batches: 150 of them fill several 64 KiB segments.
    let big = |i: u64| {
        let mut b = rill_storage::BatchBuilder::new(small_config().max_batch_bytes);
        let v = vec![b'a' + (i % 26) as u8; 1200];
        assert!(b.push(&rill_storage::NewRecord::value(&v, 0)).unwrap());
        b.finish().unwrap()
    };
    let appended: Vec<Entry> = (1..=150)
        .map(|i| {
            if i % 10 == 0 {
                noop(i, 1 + i / 50)
            } else {
                data_entry(i, 1 + i / 50, &big(i))
            }
        })
        .collect();
    for chunk in appended.chunks(7) {
        rl.append(chunk, false).unwrap();
    }
    let segments = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".log")
        })
        .count();
    assert!(segments > 2);
    let check = |rl: &ReplicaLog| {
        let read = entries(rl, 1, 151);
        let mut offset = 0;
        for (r, a) in read.iter().zip(&appended) {
            assert_same_entry(r, a, Offset(offset));
            assert_eq!(rl.term(a.index).unwrap(), a.term);
            if !a.data.is_empty() {
                offset += 1;
            }
            assert_eq!(
                rl.next_offset_after(RaftIndex(a.index)).unwrap(),
                Offset(offset)
            );
        }
        assert_eq!(read.len(), 150);
    };
    check(&rl);
    drop(rl);
    check(&open_memory(dir.path(), &store));
}

#[test]
fn a_conflicting_append_replaces_the_suffix() {
    let dir = tempfile::tempdir().unwrap();
    let store = MemoryStateStore::default();
    let mut rl = open_memory(dir.path(), &store);
    let old = data_entries(1, 6, 1);
    rl.append(&old, false).unwrap();
    let after_3 = rl.next_offset_after(RaftIndex(3)).unwrap();
    // A new leader of term 2 overwrites from index 4, with fewer entries.
    let new = vec![data_entry(4, 2, &data_batch(40, 2)), conf_change(5, 2)];
    rl.append(&new, false).unwrap();
    assert_eq!(last_index(&rl), 5);
    let read = entries(&rl, 1, 6);
    for (r, a) in read[..3].iter().zip(&old[..3]) {
        assert_eq!((r.term, r.index), (a.term, a.index));
        assert_eq!(unstamped(&r.data), a.data.to_vec());
    }
    assert_same_entry(&read[3], &new[0], after_3);
    assert_same_entry(&read[4], &new[1], Offset(after_3.get() + 2));
    assert_eq!(
        (1..=5).map(|i| rl.term(i).unwrap()).collect::<Vec<_>>(),
        vec![1, 1, 1, 2, 2]
    );
    assert!(is_unavailable(rl.term(6)));
    assert!(is_unavailable(rl.entries(1, 7, None, ctx())));
    assert_eq!(
        rl.next_offset_after(RaftIndex(5)).unwrap(),
        Offset(after_3.get() + 2)
    );
    // The old entry 6 is gone for good, and appends continue after 5.
    rl.append(&[data_entry(6, 3, &data_batch(60, 1))], false)
        .unwrap();
    drop(rl);
    let rl = open_memory(dir.path(), &store);
    assert_eq!(last_index(&rl), 6);
    let read = entries(&rl, 4, 7);
    assert_eq!(
        read.iter().map(|e| e.term).collect::<Vec<_>>(),
        vec![2, 2, 3]
    );
    assert_eq!(unstamped(&read[0].data), data_batch(40, 2));
    assert_eq!(unstamped(&read[2].data), data_batch(60, 1));
}

#[test]
fn a_conflicting_append_from_the_first_index_replaces_the_whole_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut rl = open_memory(dir.path(), &MemoryStateStore::default());
    rl.append(&data_entries(1, 4, 1), false).unwrap();
    let new = vec![noop(1, 2), data_entry(2, 2, &data_batch(9, 2))];
    rl.append(&new, false).unwrap();
    assert_eq!(last_index(&rl), 2);
    let read = entries(&rl, 1, 3);
    assert_same_entry(&read[0], &new[0], Offset(0));
    assert_same_entry(&read[1], &new[1], Offset(0));
    assert_eq!(rl.next_offset_after(RaftIndex(2)).unwrap(), Offset(2));
}

#[test]
fn an_append_whose_term_is_below_the_last_entrys_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut rl = open_memory(dir.path(), &MemoryStateStore::default());
    rl.append(&data_entries(1, 3, 2), false).unwrap();
    let before = entries(&rl, 1, 4);
    assert!(
        rl.append(&[data_entry(4, 1, &data_batch(4, 1))], false)
            .is_err()
    );
    assert!(rl.append(&[noop(4, 1)], false).is_err());
    assert_eq!(last_index(&rl), 3);
    assert_eq!(entries(&rl, 1, 4), before);
    // Terms within a Ready must not decrease either.
    assert!(rl.append(&[noop(4, 3), noop(5, 2)], false).is_err());
    assert!(rl.term(5).is_err());
}

#[test]
fn an_append_leaving_a_gap_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut rl = open_memory(dir.path(), &MemoryStateStore::default());
    rl.append(&data_entries(1, 3, 1), false).unwrap();
    assert!(rl.append(&[noop(5, 1)], false).is_err());
    assert_eq!(last_index(&rl), 3);
}

#[test]
fn a_refused_append_leaves_the_log_unchanged_wherever_the_fault_lies() {
    let dir = tempfile::tempdir().unwrap();
    let store = MemoryStateStore::default();
    let mut rl = open_memory(dir.path(), &store);
    rl.append(&data_entries(1, 5, 1), false).unwrap();
    let before = entries(&rl, 1, 6);
    let mut corrupt = data_batch(9, 2);
    let last = corrupt.len() - 2;
    corrupt[last] ^= 0x40;
    let good = data_batch(8, 2);
    let refused: [Vec<Entry>; 4] = [
        // A good entry, then a corrupt one: neither lands.
        vec![data_entry(6, 1, &good), data_entry(7, 1, &corrupt)],
        // A conflicting suffix whose replacement is corrupt: nothing cut.
        vec![data_entry(3, 2, &corrupt)],
        // A term lower than the entry before it.
        vec![noop(2, 0)],
        // Indexes that skip.
        vec![data_entry(6, 1, &good), data_entry(8, 1, &good)],
    ];
    for case in refused {
        assert!(rl.append(&case, false).is_err());
        assert_eq!(last_index(&rl), 5);
        assert_eq!(entries(&rl, 1, 6), before);
    }
}

#[test]
fn a_corrupt_data_entry_is_refused_and_the_log_is_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let store = MemoryStateStore::default();
    let mut rl = open_memory(dir.path(), &store);
    rl.append(&data_entries(1, 3, 1), false).unwrap();
    let before = entries(&rl, 1, 4);
    let good = data_batch(4, 3);
    // Flip a byte in each part of the record area in turn.
    for at in [
        rill_storage::batch::HEADER_BYTES,
        (rill_storage::batch::HEADER_BYTES + good.len()) / 2,
        good.len() - 1,
    ] {
        let mut bad = good.clone();
        bad[at] ^= 0x40;
        let err = rl.append(&[data_entry(4, 1, &bad)], false).unwrap_err();
        assert!(matches!(err, ReplicationError::Storage(_)), "{err}");
        assert_eq!(last_index(&rl), 3);
        assert_eq!(entries(&rl, 1, 4), before);
        assert_eq!(
            rl.reader().next_offset(),
            Offset(before.iter().map(records_of).sum())
        );
    }
    // The log takes the intact entry at the same index afterwards.
    rl.append(&[data_entry(4, 1, &good)], false).unwrap();
    assert_eq!(last_index(&rl), 4);
    drop(rl);
    let rl = open_memory(dir.path(), &store);
    assert_eq!(last_index(&rl), 4);
}

#[test]
fn a_control_batch_as_entry_data_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut rl = open_memory(dir.path(), &MemoryStateStore::default());
    let control = rill_storage::control_batch(b"sneaky", -1);
    let err = rl.append(&[data_entry(1, 1, &control)], false).unwrap_err();
    assert!(
        matches!(err, ReplicationError::BadEntry { index: 1, .. }),
        "{err}"
    );
    assert_eq!(last_index(&rl), 0);
}

#[test]
fn a_data_entry_with_a_context_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut rl = open_memory(dir.path(), &MemoryStateStore::default());
    let mut e = data_entry(1, 1, &data_batch(1, 1));
    e.context = Bytes::from_static(b"ctx");
    let err = rl.append(&[e], false).unwrap_err();
    assert!(
        matches!(err, ReplicationError::BadEntry { index: 1, .. }),
        "{err}"
    );
    assert_eq!(last_index(&rl), 0);
}

// ---------------------------------------------------------------------------
// Snapshots.
// ---------------------------------------------------------------------------

/// Installs the snapshot (50, term 4, next offset 777) over a log holding a
/// few old entries and checks everything the brief asks; `reopen` opens the
/// replica again over the same store and directory.
fn check_apply_snapshot(dir: &Path, mut rl: ReplicaLog, reopen: impl Fn() -> ReplicaLog) {
    rl.append(&data_entries(1, 5, 1), false).unwrap();
    let snap = snapshot_at(50, 4, 777);
    rl.apply_snapshot(&snap).unwrap();

    let check = |rl: &ReplicaLog| {
        assert_eq!(rl.first_index().unwrap(), 51);
        assert_eq!(rl.term(50).unwrap(), 4);
        let got = rl.snapshot(0, 2).unwrap();
        assert_eq!(got.get_metadata(), snap.get_metadata());
        assert_eq!(got.data, snap.data);
        assert_eq!(rl.snapshot(50, 2).unwrap().get_metadata().index, 50);
        let rs = rl.initial_state().unwrap();
        assert_eq!(rs.conf_state, conf_state_123_4());
        assert!(rs.hard_state.commit >= 50);
        assert!(rs.hard_state.term >= 4);
        assert_eq!(rl.next_offset_after(RaftIndex(50)).unwrap(), Offset(777));
        assert_eq!(rl.state().truncated.next_offset, Offset(777));
    };
    check(&rl);
    assert_eq!(last_index(&rl), 50);
    assert!(matches!(
        rl.snapshot(51, 2),
        Err(raft::Error::Store(
            StorageError::SnapshotTemporarilyUnavailable
        ))
    ));
    // The old entries are gone from the directory.
    assert_eq!(segment_files(dir), vec![(777, 51)]);

    // The next entry lands at the snapshot's offset.
    let e = data_entry(51, 4, &data_batch(51, 3));
    rl.append(std::slice::from_ref(&e), false).unwrap();
    assert_eq!(last_index(&rl), 51);
    let read = entries(&rl, 51, 52);
    assert_same_entry(&read[0], &e, Offset(777));
    assert_eq!(rl.next_offset_after(RaftIndex(51)).unwrap(), Offset(780));
    drop(rl);

    let rl = reopen();
    check(&rl);
    assert_eq!(last_index(&rl), 51);
    assert_eq!(entries(&rl, 51, 52), read);
    assert_eq!(rl.next_offset_after(RaftIndex(51)).unwrap(), Offset(780));
}

#[test]
fn apply_snapshot_restarts_the_log_at_the_snapshot_point_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = MemoryStateStore::default();
    let rl = open_memory(dir.path(), &store);
    check_apply_snapshot(dir.path(), rl, || open_memory(dir.path(), &store));
    // The snapshot point was made durable: a crash forgetting unsynced
    // state saves still finds it.
    store.crash(false);
    let rl = open_memory(dir.path(), &store);
    assert_eq!(rl.first_index().unwrap(), 51);
    assert_eq!(rl.term(50).unwrap(), 4);
}

#[test]
fn apply_snapshot_with_a_state_file_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let open = || {
        let (store, state) =
            FileStateStore::open(dir.path(), || ReplicaState::initial(voters_123())).unwrap();
        open_with(dir.path(), Box::new(store), state).unwrap()
    };
    check_apply_snapshot(dir.path(), open(), open);
}

#[test]
fn apply_snapshot_refuses_data_that_is_not_a_next_offset() {
    let dir = tempfile::tempdir().unwrap();
    let mut rl = open_memory(dir.path(), &MemoryStateStore::default());
    rl.append(&data_entries(1, 3, 1), false).unwrap();
    let mut snap = snapshot_at(50, 4, 777);
    snap.data = Bytes::from_static(b"seven");
    assert!(matches!(
        rl.apply_snapshot(&snap),
        Err(ReplicationError::BadEntry { index: 50, .. })
    ));
    assert_eq!(rl.first_index().unwrap(), 1);
    assert_eq!(last_index(&rl), 3);
}

#[test]
fn a_snapshot_from_a_later_term_never_saves_the_vote_of_an_earlier_one() {
    // Term and vote as saved once a crash forgot every unsynced save,
    // after a vote for 2 in term 5 and a snapshot of `snap_term` from the
    // leader of a later term.
    let after_crash = |snap_term: u64| {
        let dir = tempfile::tempdir().unwrap();
        let store = MemoryStateStore::default();
        let mut rl = open_memory(dir.path(), &store);
        let voted = RaftHardState {
            term: 5,
            vote: 2,
            ..RaftHardState::default()
        };
        let sync = rl.set_hard_state(&voted, true).unwrap().unwrap();
        rl.complete_state_sync(sync.run().unwrap());
        // raft-rs is in the leader's term with no vote by now; the crash
        // comes before that hard state's own save is synced.
        rl.apply_snapshot(&snapshot_at(50, snap_term, 777)).unwrap();
        drop(rl);
        store.crash(false);
        let rl = open_memory(dir.path(), &store);
        (rl.state().hard.term, rl.state().hard.vote)
    };
    // Leader 3 of term 6, its snapshot's last entry from term 6 or from
    // the voted term itself.
    assert_eq!(
        after_crash(6),
        (Term(6), None),
        "never the vote for 2 under term 6"
    );
    assert_eq!(
        after_crash(5),
        (Term(5), Some(BrokerId(2))),
        "the vote stays with its own term"
    );
}

/// Replaces `to` with a copy of the files in `from`.
fn copy_dir(from: &Path, to: &Path) {
    if to.exists() {
        std::fs::remove_dir_all(to).unwrap();
    }
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

#[test]
fn an_fsync_false_truncation_lost_to_a_power_cut_never_makes_the_cut_entries_committed() {
    let root = tempfile::tempdir().unwrap();
    let (dir, disk) = (root.path().join("replica"), root.path().join("disk"));
    std::fs::create_dir(&dir).unwrap();
    let store = MemoryStateStore::default();
    let open = || {
        let mut rl = open_memory(&dir, &store);
        rl.set_entries_need_sync(false);
        rl
    };
    // Entries 1-5 of term 1, 1-3 committed; the open after a restart
    // syncs them all (4 and 5 included, never committed).
    let mut rl = open();
    rl.append(&data_entries(1, 5, 1), false).unwrap();
    let hs = |term, commit| RaftHardState {
        term,
        vote: 2,
        commit,
        ..RaftHardState::default()
    };
    let sync = rl.set_hard_state(&hs(1, 3), true).unwrap().unwrap();
    rl.complete_state_sync(sync.run().unwrap());
    drop(rl);
    let mut rl = open();
    copy_dir(&dir, &disk);

    // Leader 2 of term 2 replaces 4 and 5 and commits through 7; the new
    // term is synced with whatever commit index it carries.
    rl.append(&data_entries(4, 4, 2), false).unwrap();
    let sync = rl.set_hard_state(&hs(2, 7), true).unwrap().unwrap();
    rl.complete_state_sync(sync.run().unwrap());
    rl.set_commit(RaftIndex(7)).unwrap();
    drop(rl);

    // A power cut: nothing written since the open reached the disk. The
    // sealed segment still holds entries 4 and 5 of term 1; the segment
    // that replaced them is gone.
    copy_dir(&disk, &dir);
    store.crash(false);
    let rl = open();
    let commit = rl.state().hard.commit.get();
    assert_eq!(rl.term(5).unwrap(), 1, "the cut entries are back");
    for i in 1..=commit {
        assert!(
            i <= 3 || rl.term(i).unwrap() == 2,
            "entry {i} of term {} counts as committed (commit {commit})",
            rl.term(i).unwrap()
        );
    }
}

#[test]
fn reads_below_the_snapshot_point_are_compacted_and_past_the_end_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let mut rl = open_memory(dir.path(), &MemoryStateStore::default());
    rl.append(&data_entries(1, 5, 1), false).unwrap();
    rl.apply_snapshot(&snapshot_at(50, 4, 777)).unwrap();
    rl.append(&data_entries(51, 3, 4), false).unwrap();

    for (lo, hi) in [(1, 51), (49, 52), (50, 51), (50, 54), (1, 2)] {
        assert!(
            is_compacted(rl.entries(lo, hi, None, ctx())),
            "entries [{lo}, {hi})"
        );
    }
    for i in [0, 1, 5, 49] {
        assert!(is_compacted(rl.term(i)), "term({i})");
    }
    assert_eq!(rl.term(50).unwrap(), 4);
    assert_eq!(rl.term(53).unwrap(), 4);
    assert_eq!(entries(&rl, 51, 54).len(), 3);
    for (lo, hi) in [(51, 55), (54, 55), (53, 60)] {
        assert!(
            is_unavailable(rl.entries(lo, hi, None, ctx())),
            "entries [{lo}, {hi})"
        );
    }
    for i in [54, 55, 1000] {
        assert!(is_unavailable(rl.term(i)), "term({i})");
    }
}

#[test]
fn an_append_at_or_below_the_snapshot_point_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut rl = open_memory(dir.path(), &MemoryStateStore::default());
    rl.apply_snapshot(&snapshot_at(50, 4, 777)).unwrap();
    rl.append(&data_entries(51, 2, 4), false).unwrap();
    for index in [50, 10] {
        let err = rl.append(&[noop(index, 5)], false).unwrap_err();
        assert!(matches!(err, ReplicationError::BadEntry { .. }), "{err}");
    }
    assert_eq!(last_index(&rl), 52);
    assert_eq!(rl.first_index().unwrap(), 51);
}

// ---------------------------------------------------------------------------
// Opening after crashes.
// ---------------------------------------------------------------------------

#[test]
fn open_finishes_a_snapshot_install_interrupted_before_the_log_was_reset() {
    let dir = tempfile::tempdir().unwrap();
    let init = || ReplicaState::initial(voters_123());
    let (store, state) = FileStateStore::open(dir.path(), init).unwrap();
    let mut rl = open_with(dir.path(), Box::new(store), state).unwrap();
    rl.append(&data_entries(1, 5, 1), false).unwrap();
    drop(rl);
    // The snapshot point reached the state file; the crash came before the
    // log was reset to it.
    let snapshot_state = ReplicaState {
        hard: HardState {
            term: Term(3),
            vote: Some(BrokerId(2)),
            commit: RaftIndex(100),
        },
        truncated: TruncatedState {
            index: RaftIndex(100),
            term: Term(3),
            next_offset: Offset(5_000),
            membership: Membership::from_raft(&conf_state_123_4()),
        },
    };
    let (mut store, _) = FileStateStore::open(dir.path(), init).unwrap();
    save_synced(&mut store, &snapshot_state);
    drop(store);

    let (store, state) = FileStateStore::open(dir.path(), init).unwrap();
    assert_eq!(state, snapshot_state);
    let mut rl = open_with(dir.path(), Box::new(store), state).unwrap();
    assert_eq!(rl.first_index().unwrap(), 101);
    assert_eq!(last_index(&rl), 100);
    assert_eq!(rl.term(100).unwrap(), 3);
    assert!(is_compacted(rl.term(5)));
    assert_eq!(segment_files(dir.path()), vec![(5_000, 101)]);
    let rs = rl.initial_state().unwrap();
    assert_eq!(rs.hard_state.commit, 100);
    assert_eq!(rs.conf_state, conf_state_123_4());
    let e = data_entry(101, 3, &data_batch(101, 2));
    rl.append(std::slice::from_ref(&e), false).unwrap();
    assert_same_entry(&entries(&rl, 101, 102)[0], &e, Offset(5_000));
    assert_eq!(rl.next_offset_after(RaftIndex(101)).unwrap(), Offset(5_002));
}

#[test]
fn open_keeps_a_log_that_continues_the_snapshot_point_and_serves_only_after_it() {
    // Retention left entries at or below the snapshot point in the log.
    let dir = tempfile::tempdir().unwrap();
    let store = MemoryStateStore::default();
    let mut rl = open_memory(dir.path(), &store);
    let old = data_entries(1, 10, 1);
    rl.append(&old, false).unwrap();
    let after_5 = rl.next_offset_after(RaftIndex(5)).unwrap();
    drop(rl);
    let mut s = store.clone();
    save_synced(
        &mut s,
        &ReplicaState {
            hard: HardState {
                term: Term(1),
                vote: None,
                commit: RaftIndex(7),
            },
            truncated: TruncatedState {
                index: RaftIndex(5),
                term: Term(1),
                next_offset: after_5,
                membership: voters_123(),
            },
        },
    );
    let rl = open_memory(dir.path(), &store);
    assert_eq!(rl.first_index().unwrap(), 6);
    assert_eq!(last_index(&rl), 10);
    assert_eq!(rl.term(5).unwrap(), 1);
    assert!(is_compacted(rl.term(4)));
    assert!(is_compacted(rl.entries(5, 7, None, ctx())));
    let read = entries(&rl, 6, 11);
    let mut offset = after_5;
    for (r, a) in read.iter().zip(&old[5..]) {
        assert_same_entry(r, a, offset);
        offset = Offset(offset.get() + records_of(r));
    }
    assert_eq!(rl.next_offset_after(RaftIndex(5)).unwrap(), after_5);
    assert_eq!(rl.initial_state().unwrap().hard_state.commit, 7);
}

#[test]
fn open_resets_a_log_whose_term_at_the_snapshot_point_disagrees() {
    let dir = tempfile::tempdir().unwrap();
    let store = MemoryStateStore::default();
    let mut rl = open_memory(dir.path(), &store);
    rl.append(&data_entries(1, 10, 1), false).unwrap();
    drop(rl);
    let mut s = store.clone();
    save_synced(
        &mut s,
        &ReplicaState {
            hard: HardState {
                term: Term(9),
                vote: None,
                commit: RaftIndex(5),
            },
            truncated: TruncatedState {
                index: RaftIndex(5),
                term: Term(9),
                next_offset: Offset(300),
                membership: voters_123(),
            },
        },
    );
    let mut rl = open_memory(dir.path(), &store);
    assert_eq!(rl.first_index().unwrap(), 6);
    assert_eq!(last_index(&rl), 5);
    assert_eq!(rl.term(5).unwrap(), 9);
    rl.append(&data_entries(6, 1, 9), false).unwrap();
    assert_eq!(
        stored_batch(&entries(&rl, 6, 7)[0]).header().base_offset,
        Offset(300)
    );
}

#[test]
fn open_lowers_a_commit_beyond_the_last_entry_to_the_last_index() {
    let dir = tempfile::tempdir().unwrap();
    let store = MemoryStateStore::default();
    let mut rl = open_memory(dir.path(), &store);
    rl.append(&data_entries(1, 3, 2), false).unwrap();
    drop(rl);
    let mut s = store.clone();
    save_synced(
        &mut s,
        &ReplicaState {
            hard: HardState {
                term: Term(2),
                vote: Some(BrokerId(3)),
                commit: RaftIndex(100),
            },
            truncated: TruncatedState {
                membership: voters_123(),
                ..TruncatedState::default()
            },
        },
    );
    let rl = open_memory(dir.path(), &store);
    let hs = rl.initial_state().unwrap().hard_state;
    assert_eq!((hs.term, hs.vote, hs.commit), (2, 3, 3));
    assert_eq!(rl.state().hard.commit, RaftIndex(3));
}

#[test]
fn hard_state_survives_reopen_and_a_commit_saved_without_sync_may_be_lost() {
    let dir = tempfile::tempdir().unwrap();
    let store = MemoryStateStore::default();
    let mut rl = open_memory(dir.path(), &store);
    rl.append(&data_entries(1, 4, 5), false).unwrap();
    let done = rl.sync_plan().run().unwrap();
    rl.complete_log_sync(done).unwrap();
    let hs = RaftHardState {
        term: 5,
        vote: 2,
        commit: 1,
        ..RaftHardState::default()
    };
    let sync = rl.set_hard_state(&hs, true).unwrap().unwrap();
    rl.complete_state_sync(sync.run().unwrap());
    rl.set_commit(RaftIndex(3)).unwrap();
    // A lower commit never moves it back.
    rl.set_commit(RaftIndex(2)).unwrap();
    assert_eq!(rl.initial_state().unwrap().hard_state.commit, 3);
    drop(rl);

    let rl = open_memory(dir.path(), &store);
    assert_eq!(
        rl.initial_state().unwrap().hard_state,
        RaftHardState {
            commit: 3,
            ..hs.clone()
        }
    );
    drop(rl);
    store.crash(false);
    let rl = open_memory(dir.path(), &store);
    assert_eq!(rl.initial_state().unwrap().hard_state, hs);
}

#[test]
fn a_crash_forgetting_unsynced_bytes_keeps_exactly_the_synced_entries() {
    // Entry 4's size, to tear it at chosen points.
    let e4 = data_entry(4, 1, &data_batch(4, 2));
    let l4 = e4.data.len() as u64;
    // Its last byte is a zero (the record's header count), so forgetting
    // only that byte loses nothing: tear it before its last value byte.
    assert_eq!(e4.data.last(), Some(&0));
    assert_ne!(e4.data[e4.data.len() - 2], 0);
    for (keep, last) in [
        (0, 3),
        (1, 3),
        (l4 / 2, 3),
        (l4 - 2, 3),
        (l4, 4),
        (l4 + 10, 4),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let store = MemoryStateStore::default();
        let mut rl = open_memory(dir.path(), &store);
        let synced = data_entries(1, 3, 1);
        rl.append(&synced, false).unwrap();
        let done = rl.sync_plan().run().unwrap();
        rl.complete_log_sync(done).unwrap();
        rl.append(
            &[e4.clone(), noop(5, 1), data_entry(6, 1, &data_batch(6, 1))],
            false,
        )
        .unwrap();
        let durable = rl.durable();
        assert_eq!(durable.raft_index, RaftIndex(4));
        let before = entries(&rl, 1, 5);
        drop(rl);
        forget_unsynced(dir.path(), durable, keep).unwrap();

        let mut rl = open_memory(dir.path(), &store);
        assert_eq!(last_index(&rl), last, "keeping {keep} unsynced bytes");
        assert_eq!(entries(&rl, 1, last + 1), before[..last as usize]);
        assert!(is_unavailable(rl.term(last + 1)));
        // Appends continue after what survived.
        let next = last + 1;
        rl.append(&[data_entry(next, 2, &data_batch(99, 1))], false)
            .unwrap();
        let expected_offset = rl.next_offset_after(RaftIndex(last)).unwrap();
        assert_eq!(
            stored_batch(&entries(&rl, next, next + 1)[0])
                .header()
                .base_offset,
            expected_offset
        );
    }
}

#[test]
fn open_fails_rather_than_serve_a_log_not_at_the_snapshot_offset() {
    // The log continues the snapshot point with the right term, but its
    // first entry after the point is not at the recorded offset: refusing
    // is the only safe answer.
    let dir = tempfile::tempdir().unwrap();
    let store = MemoryStateStore::default();
    let mut rl = open_memory(dir.path(), &store);
    rl.append(&data_entries(1, 6, 1), false).unwrap();
    let after_3 = rl.next_offset_after(RaftIndex(3)).unwrap();
    drop(rl);
    let mut s = store.clone();
    save_synced(
        &mut s,
        &ReplicaState {
            hard: HardState {
                term: Term(1),
                vote: None,
                commit: RaftIndex(3),
            },
            truncated: TruncatedState {
                index: RaftIndex(3),
                term: Term(1),
                next_offset: Offset(after_3.get() + 1),
                membership: voters_123(),
            },
        },
    );
    let err = try_open_memory(dir.path(), &store).unwrap_err();
    assert!(
        matches!(err, ReplicationError::BadEntry { index: 4, .. }),
        "{err}"
    );
}

#[test]
fn a_commit_index_is_never_saved_past_the_synced_log() {
    // A state saved before the round's log sync must not claim entries a
    // crash could still take away.
    let dir = tempfile::tempdir().unwrap();
    let store = MemoryStateStore::default();
    let mut rl = open_memory(dir.path(), &store);
    rl.append(&data_entries(1, 2, 1), false).unwrap();
    let done = rl.sync_plan().run().unwrap();
    rl.complete_log_sync(done).unwrap();
    rl.append(&data_entries(3, 3, 1), false).unwrap();
    let hs = RaftHardState {
        term: 1,
        commit: 5,
        ..RaftHardState::default()
    };
    assert!(rl.set_hard_state(&hs, false).unwrap().is_none());
    assert_eq!(rl.state().hard.commit, RaftIndex(2));
    rl.set_commit(RaftIndex(5)).unwrap();
    assert_eq!(rl.state().hard.commit, RaftIndex(2));
    let done = rl.sync_plan().run().unwrap();
    rl.complete_log_sync(done).unwrap();
    rl.set_commit(RaftIndex(5)).unwrap();
    assert_eq!(rl.state().hard.commit, RaftIndex(5));
}
