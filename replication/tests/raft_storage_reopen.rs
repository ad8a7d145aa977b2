//! raft-rs's `Storage` over the segment log, opened again after crashes at
//! every awkward moment: an interrupted snapshot install, a log that
//! disagrees with the snapshot point, a commit index past the log, unsynced
//! bytes forgotten.
#![allow(clippy::unwrap_used)]

mod helpers;

use helpers::replica_log::*;
use helpers::{
    data_batch, data_entry, noop, open_memory, open_with, stored_batch, try_open_memory, voters_123,
};
use raft::Storage;
use raft::eraftpb::HardState as RaftHardState;
use rill_replication::state::{
    FileStateStore, HardState, Membership, MemoryStateStore, ReplicaState, TruncatedState,
};
use rill_replication::{BrokerId, ReplicationError};
use rill_storage::fault::forget_unsynced;
use rill_storage::{Offset, RaftIndex, Term};

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
        },
        membership: Membership::from_raft(&conf_state_123_4()),
        membership_index: RaftIndex(0),
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
            },
            membership: voters_123(),
            membership_index: RaftIndex(0),
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
            },
            membership: voters_123(),
            membership_index: RaftIndex(0),
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
            truncated: TruncatedState::default(),
            membership: voters_123(),
            membership_index: RaftIndex(0),
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
    rl.set_applied(RaftIndex(4));
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
            },
            membership: voters_123(),
            membership_index: RaftIndex(0),
        },
    );
    let err = try_open_memory(dir.path(), &store).unwrap_err();
    assert!(
        matches!(err, ReplicationError::BadEntry { index: 4, .. }),
        "{err}"
    );
}

#[test]
fn a_commit_index_is_never_saved_past_the_last_entry_applied() {
    // The saved membership holds the changes up to the last entry
    // applied: a commit saved past it would have a restart skip a change
    // it lacks.
    let dir = tempfile::tempdir().unwrap();
    let store = MemoryStateStore::default();
    let mut rl = open_memory(dir.path(), &store);
    rl.append(&data_entries(1, 5, 1), false).unwrap();
    let done = rl.sync_plan().run().unwrap();
    rl.complete_log_sync(done).unwrap();
    rl.set_applied(RaftIndex(3));
    let hs = RaftHardState {
        term: 1,
        commit: 5,
        ..RaftHardState::default()
    };
    assert!(rl.set_hard_state(&hs, false).unwrap().is_none());
    assert_eq!(rl.state().hard.commit, RaftIndex(3));
    rl.set_commit(RaftIndex(5)).unwrap();
    assert_eq!(rl.state().hard.commit, RaftIndex(3));
    rl.set_applied(RaftIndex(5));
    rl.set_commit(RaftIndex(5)).unwrap();
    assert_eq!(rl.state().hard.commit, RaftIndex(5));
    drop(rl);
    let rl = open_memory(dir.path(), &store);
    assert_eq!(
        rl.applied(),
        RaftIndex(5),
        "what was saved committed counts as applied"
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
    rl.set_applied(RaftIndex(5));
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
