//! The state file on disk (`FileStateStore`): the two-slot discipline that
//! keeps the newest synced state readable through torn writes, corruption
//! and crashes (synced saves alternate slots with growing sequence numbers,
//! unsynced saves never overwrite the last synced state's slot, the newest
//! valid slot wins on open), and the directory syncs a new file's first
//! durable save carries.
#![allow(clippy::unwrap_used)]

mod helpers;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use helpers::replica_state::{ids, initial, state_n, used_bytes};
use rill_replication::ReplicationError;
use rill_replication::state::{FileStateStore, ReplicaState, SLOT_BYTES, StateStore, StateSync};

fn state_path(dir: &Path) -> PathBuf {
    dir.join(FileStateStore::FILE_NAME)
}

/// The decoded contents of both slots of the file.
fn read_slots(dir: &Path) -> [Option<(u64, ReplicaState)>; 2] {
    let bytes = std::fs::read(state_path(dir)).unwrap();
    let slot = |i: usize| {
        let start = (i * SLOT_BYTES).min(bytes.len());
        let end = ((i + 1) * SLOT_BYTES).min(bytes.len());
        ReplicaState::decode_slot(&bytes[start..end])
    };
    [slot(0), slot(1)]
}

/// Which slot holds `state`.
fn slot_of(dir: &Path, state: &ReplicaState) -> usize {
    let slots = read_slots(dir);
    let found: Vec<usize> = (0..2)
        .filter(|&i| slots[i].as_ref().is_some_and(|(_, s)| s == state))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "exactly one slot holds {state:?}: {slots:?}"
    );
    found[0]
}

fn write_at(dir: &Path, at: u64, bytes: &[u8]) {
    let f = OpenOptions::new()
        .write(true)
        .open(state_path(dir))
        .unwrap();
    f.write_all_at(bytes, at).unwrap();
}

/// Overwrites the start of slot `slot` with garbage.
fn corrupt_slot(dir: &Path, slot: usize) {
    write_at(dir, (slot * SLOT_BYTES + 8) as u64, &[0xA5; 40]);
}

fn save_synced(store: &mut FileStateStore, state: &ReplicaState) {
    let sync = store.save(state, true).unwrap().unwrap();
    let done = sync.run().unwrap();
    assert!(done.ran());
    store.complete_sync(done);
}

fn save_unsynced(store: &mut FileStateStore, state: &ReplicaState) {
    assert!(store.save(state, false).unwrap().is_none());
}

fn reopen(dir: &Path) -> Result<ReplicaState, ReplicationError> {
    FileStateStore::open(dir, || panic!("the state file exists; initial not wanted"))
        .map(|(_, s)| s)
}

#[test]
fn open_creates_the_file_holding_the_initial_state() {
    let dir = tempfile::tempdir().unwrap();
    assert!(!state_path(dir.path()).exists());
    let (_store, state) = FileStateStore::open(dir.path(), initial).unwrap();
    assert_eq!(state, initial());
    assert!(state_path(dir.path()).exists());
    let slots = read_slots(dir.path());
    assert_eq!(slots.iter().flatten().count(), 1, "{slots:?}");
    assert_eq!(slots.iter().flatten().next().unwrap().1, initial());
    assert_eq!(reopen(dir.path()).unwrap(), initial());
}

#[test]
fn a_new_files_directory_is_synced_with_its_first_durable_save_only() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = FileStateStore::open(dir.path(), initial).unwrap();
    save_unsynced(&mut store, &state_n(1));
    let first = store.save(&state_n(2), true).unwrap().unwrap();
    assert!(first.syncs_dir(), "the file's entry is not yet durable");
    let first = first.run().unwrap();
    store.complete_sync(first);
    let second = store.save(&state_n(3), true).unwrap().unwrap();
    assert!(!second.syncs_dir(), "synced once is enough");
    drop(second);
    drop(store);

    // Reopened, the file's entry is synced on open, with the state found.
    let (mut store, _) = FileStateStore::open(dir.path(), initial).unwrap();
    let sync = store.save(&state_n(4), true).unwrap().unwrap();
    assert!(!sync.syncs_dir());
}

#[test]
fn the_first_durable_save_of_each_open_syncs_the_replica_directorys_entry_in_the_data_directory() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("replica-0");
    std::fs::create_dir(&dir).unwrap();
    let (mut store, _) = FileStateStore::open(&dir, initial).unwrap();
    let first = store.save(&state_n(1), true).unwrap().unwrap();
    assert_eq!(
        first.parent_dir_to_sync(),
        Some(data.path()),
        "the new directory's entry in the data directory"
    );
    store.complete_sync(first.run().unwrap());
    let second = store.save(&state_n(2), true).unwrap().unwrap();
    assert_eq!(second.parent_dir_to_sync(), None, "synced once is enough");
    drop(second);
    drop(store);

    // An open cannot tell whether an earlier one's first sync ran: the
    // directory may be one a crash interrupted before it.
    let (mut store, _) = FileStateStore::open(&dir, initial).unwrap();
    let sync = store.save(&state_n(3), true).unwrap().unwrap();
    assert_eq!(sync.parent_dir_to_sync(), Some(data.path()));
    // One that failed to run leaves the parent to the next.
    store.complete_sync(sync);
    let again = store.save(&state_n(4), true).unwrap().unwrap();
    assert_eq!(again.parent_dir_to_sync(), Some(data.path()));
    store.complete_sync(again.run().unwrap());
}

#[test]
fn a_sync_that_failed_to_run_leaves_the_directory_to_the_next_one() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = FileStateStore::open(dir.path(), initial).unwrap();
    let sync = store.save(&state_n(1), true).unwrap().unwrap();
    assert!(sync.syncs_dir());
    // Handed back without running (its batch was dropped by a crash).
    store.complete_sync(sync);
    let again = store.save(&state_n(2), true).unwrap().unwrap();
    assert!(again.syncs_dir());
}

#[test]
fn open_of_an_empty_file_starts_from_the_initial_state() {
    // A crash after the file was created, before its first slot was written.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(state_path(dir.path()), b"").unwrap();
    let (_store, state) = FileStateStore::open(dir.path(), initial).unwrap();
    assert_eq!(state, initial());
    assert_eq!(reopen(dir.path()).unwrap(), initial());
}

#[test]
fn a_durable_save_is_what_the_next_open_loads() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = FileStateStore::open(dir.path(), initial).unwrap();
    save_synced(&mut store, &state_n(1));
    save_synced(&mut store, &state_n(2));
    drop(store);
    assert_eq!(reopen(dir.path()).unwrap(), state_n(2));
}

#[test]
fn synced_saves_alternate_slots_with_growing_sequence_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = FileStateStore::open(dir.path(), initial).unwrap();
    // The initial state was never synced: nothing keeps its slot.
    save_synced(&mut store, &state_n(1));
    let mut prev_slot = slot_of(dir.path(), &state_n(1));
    let mut prev_seq = read_slots(dir.path())[prev_slot].as_ref().unwrap().0;
    for n in 2..=6 {
        save_synced(&mut store, &state_n(n));
        let slot = slot_of(dir.path(), &state_n(n));
        assert_ne!(slot, prev_slot, "save {n} went to the slot of the last one");
        let seq = read_slots(dir.path())[slot].as_ref().unwrap().0;
        assert_eq!(seq, prev_seq + 1);
        // The other slot still holds the previous synced state.
        let other = read_slots(dir.path())[prev_slot].clone().unwrap().1;
        assert_eq!(other, state_n(n - 1));
        (prev_slot, prev_seq) = (slot, seq);
    }
}

#[test]
fn unsynced_saves_never_overwrite_the_slot_of_the_last_synced_state() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = FileStateStore::open(dir.path(), initial).unwrap();
    let (a, b, c) = (state_n(1), state_n(2), state_n(3));
    save_synced(&mut store, &a);
    let a_slot = slot_of(dir.path(), &a);
    save_unsynced(&mut store, &b);
    assert_eq!(slot_of(dir.path(), &a), a_slot);
    save_unsynced(&mut store, &c);
    assert_eq!(slot_of(dir.path(), &a), a_slot);
    let c_slot = slot_of(dir.path(), &c);
    assert_ne!(c_slot, a_slot);
    drop(store);
    // Intact, the newest state wins.
    assert_eq!(reopen(dir.path()).unwrap(), c);
    // With C's slot corrupt, the newest valid state left: A (B's slot was
    // reused by C).
    corrupt_slot(dir.path(), c_slot);
    assert_eq!(reopen(dir.path()).unwrap(), a);
}

#[test]
fn a_durable_save_whose_sync_never_completed_does_not_move_the_synced_slot() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = FileStateStore::open(dir.path(), initial).unwrap();
    save_synced(&mut store, &state_n(1));
    let a_slot = slot_of(dir.path(), &state_n(1));
    // Asked durable, but the sync is never run nor handed back.
    let sync: StateSync = store.save(&state_n(2), true).unwrap().unwrap();
    assert_ne!(sync.slot(), a_slot);
    drop(sync);
    save_unsynced(&mut store, &state_n(3));
    assert_eq!(slot_of(dir.path(), &state_n(1)), a_slot);
    drop(store);
    corrupt_slot(dir.path(), 1 - a_slot);
    assert_eq!(reopen(dir.path()).unwrap(), state_n(1));
}

#[test]
fn the_newest_valid_slot_wins_whichever_slot_it_is_in() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = FileStateStore::open(dir.path(), initial).unwrap();
    save_synced(&mut store, &state_n(1));
    save_synced(&mut store, &state_n(2));
    drop(store);
    let s1 = slot_of(dir.path(), &state_n(1));
    let s2 = slot_of(dir.path(), &state_n(2));
    // Swap the slots: the sequence number, not the position, decides.
    let bytes = std::fs::read(state_path(dir.path())).unwrap();
    let one = bytes[s1 * SLOT_BYTES..(s1 + 1) * SLOT_BYTES].to_vec();
    let two = bytes[s2 * SLOT_BYTES..(s2 + 1) * SLOT_BYTES].to_vec();
    write_at(dir.path(), (s1 * SLOT_BYTES) as u64, &two);
    write_at(dir.path(), (s2 * SLOT_BYTES) as u64, &one);
    assert_eq!(reopen(dir.path()).unwrap(), state_n(2));
}

#[test]
fn saves_after_a_reopen_continue_the_sequence_in_the_other_slot() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = FileStateStore::open(dir.path(), initial).unwrap();
    save_synced(&mut store, &state_n(1));
    save_synced(&mut store, &state_n(2));
    drop(store);
    let newest_slot = slot_of(dir.path(), &state_n(2));
    let newest_seq = read_slots(dir.path())[newest_slot].as_ref().unwrap().0;
    let (mut store, loaded) = FileStateStore::open(dir.path(), initial).unwrap();
    assert_eq!(loaded, state_n(2));
    save_unsynced(&mut store, &state_n(3));
    let slot = slot_of(dir.path(), &state_n(3));
    assert_ne!(slot, newest_slot);
    assert_eq!(
        read_slots(dir.path())[slot].as_ref().unwrap().0,
        newest_seq + 1
    );
    drop(store);
    assert_eq!(reopen(dir.path()).unwrap(), state_n(3));
}

#[test]
fn both_slots_corrupt_is_an_error_not_a_fresh_state() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = FileStateStore::open(dir.path(), initial).unwrap();
    save_synced(&mut store, &state_n(1));
    drop(store);
    corrupt_slot(dir.path(), 0);
    corrupt_slot(dir.path(), 1);
    let err = reopen(dir.path()).unwrap_err();
    assert!(
        matches!(&err, ReplicationError::CorruptState { path } if *path == state_path(dir.path())),
        "{err}"
    );
}

#[test]
fn a_file_of_garbage_past_the_first_slot_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(state_path(dir.path()), vec![0x5A; 2 * SLOT_BYTES]).unwrap();
    let err = reopen(dir.path()).unwrap_err();
    assert!(
        matches!(err, ReplicationError::CorruptState { .. }),
        "{err}"
    );
}

#[test]
fn a_torn_first_save_starts_over_from_the_initial_state() {
    // Only the initial save ever wrote a file no longer than one slot:
    // nothing was acted on yet, so starting over is safe.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(state_path(dir.path()), [0x5A; 100]).unwrap();
    let (_store, state) = FileStateStore::open(dir.path(), initial).unwrap();
    assert_eq!(state, initial());
}

#[test]
fn a_torn_write_over_the_older_slot_leaves_the_other_slot_loading() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = FileStateStore::open(dir.path(), initial).unwrap();
    let older = state_n(1);
    save_synced(&mut store, &older);
    let survivor = state_n(2);
    save_synced(&mut store, &survivor);
    drop(store);
    let victim = slot_of(dir.path(), &older);
    let victim_seq = read_slots(dir.path())[victim].as_ref().unwrap().0;
    let pristine = std::fs::read(state_path(dir.path())).unwrap();

    // The next save (one more member, so its CRC lands past the old one's)
    // torn after every possible prefix length of its used bytes.
    let mut newer = state_n(3);
    newer.membership.learners = ids(&[9]);
    let full = newer.encode_slot(victim_seq + 2).unwrap();
    let used = used_bytes(&newer);
    for n in 0..=used {
        std::fs::write(state_path(dir.path()), &pristine).unwrap();
        write_at(dir.path(), (victim * SLOT_BYTES) as u64, &full[..n]);
        let loaded = reopen(dir.path()).unwrap();
        let expected = if n == used { &newer } else { &survivor };
        assert_eq!(&loaded, expected, "torn after {n} bytes");
    }
}
