//! The simulator's state store (`MemoryStateStore`): a crash keeps the last
//! synced save (or, when asked, the newest save), a sync counts only once
//! it ran, and clones share one disk.
#![allow(clippy::unwrap_used)]

mod helpers;

use helpers::replica_state::{initial, state_n};
use rill_replication::state::{MemoryStateStore, ReplicaState, StateStore, StateSync};

fn memory_save(store: &mut MemoryStateStore, state: &ReplicaState, durable: bool) {
    match store.save(state, durable).unwrap() {
        Some(sync) => {
            assert!(durable);
            store.complete_sync(sync.run().unwrap());
        }
        None => assert!(!durable),
    }
}

#[test]
fn memory_store_loads_the_initial_state_once_and_keeps_it_synced() {
    let store = MemoryStateStore::default();
    assert_eq!(store.load(initial), initial());
    assert_eq!(store.load(|| panic!("already initialised")), initial());
    store.crash(false);
    assert_eq!(store.load(|| panic!("already initialised")), initial());
}

#[test]
fn memory_store_crash_forgets_unsynced_saves() {
    let mut store = MemoryStateStore::default();
    store.load(initial);
    memory_save(&mut store, &state_n(1), true);
    memory_save(&mut store, &state_n(2), false);
    memory_save(&mut store, &state_n(3), false);
    assert_eq!(store.load(initial), state_n(3));
    store.crash(false);
    assert_eq!(store.load(initial), state_n(1));
}

#[test]
fn memory_store_crash_keeping_unsynced_writes_keeps_the_newest_save() {
    let mut store = MemoryStateStore::default();
    store.load(initial);
    memory_save(&mut store, &state_n(1), true);
    memory_save(&mut store, &state_n(2), false);
    store.crash(true);
    assert_eq!(store.load(initial), state_n(2));
}

#[test]
fn memory_store_synced_saves_survive_a_crash() {
    let mut store = MemoryStateStore::default();
    store.load(initial);
    memory_save(&mut store, &state_n(1), false);
    memory_save(&mut store, &state_n(2), true);
    store.crash(false);
    assert_eq!(store.load(initial), state_n(2));
    // And a later crash still finds it.
    memory_save(&mut store, &state_n(3), false);
    store.crash(false);
    assert_eq!(store.load(initial), state_n(2));
}

#[test]
fn memory_store_counts_a_sync_only_once_it_ran() {
    let mut store = MemoryStateStore::default();
    store.load(initial);
    let sync = store.save(&state_n(1), true).unwrap().unwrap();
    drop(sync);
    // A sync handed back without having run changes nothing.
    store.complete_sync(StateSync::in_memory(0));
    store.crash(false);
    assert_eq!(store.load(initial), initial());
}

#[test]
fn memory_store_clones_share_one_disk() {
    let mut a = MemoryStateStore::default();
    let b = a.clone();
    a.load(initial);
    memory_save(&mut a, &state_n(4), true);
    assert_eq!(b.load(initial), state_n(4));
    b.crash(false);
    assert_eq!(a.load(initial), state_n(4));
}
