//! raft-rs's `Storage` over the segment log, its snapshots: installing one
//! restarts the log at the snapshot point and survives a reopen, a later
//! term never keeps an earlier vote, and reads below the point are
//! compacted.
#![allow(clippy::unwrap_used)]

mod helpers;

use std::path::Path;

use bytes::Bytes;
use helpers::replica_log::*;
use helpers::{data_batch, data_entry, noop, open_memory, open_with, voters_123};
use raft::eraftpb::HardState as RaftHardState;
use raft::{Storage, StorageError};
use rill_replication::state::{FileStateStore, MemoryStateStore, ReplicaState};
use rill_replication::storage::ReplicaLog;
use rill_replication::{BrokerId, ReplicationError};
use rill_storage::{Offset, RaftIndex, Term};

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
fn a_snapshot_of_a_changed_membership_keeps_its_index_across_reopen_and_sends_it_on() {
    let dir = tempfile::tempdir().unwrap();
    let open = || {
        let (store, state) =
            FileStateStore::open(dir.path(), || ReplicaState::initial(voters_123())).unwrap();
        open_with(dir.path(), Box::new(store), state).unwrap()
    };
    let mut rl = open();
    let mut snap = snapshot_at(50, 4, 777);
    snap.data = rill_replication::storage::snapshot_data(Offset(777), RaftIndex(42));
    rl.apply_snapshot(&snap).unwrap();
    drop(rl);
    let rl = open();
    assert_eq!(rl.state().membership_index, RaftIndex(42));
    assert_eq!(rl.initial_state().unwrap().conf_state, conf_state_123_4());
    let sent = rl.snapshot(0, 2).unwrap();
    assert_eq!(
        sent.data, snap.data,
        "the next replica skips the same changes"
    );
    assert_eq!(sent.get_metadata(), snap.get_metadata());
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
