//! The replica state file: its byte layout, what decoding refuses, and the
//! two-slot discipline that keeps the newest synced state readable through
//! torn writes, corruption and crashes.
#![allow(clippy::unwrap_used)]

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use rill_replication::state::{
    FileStateStore, HardState, MEMBERS_MAX, Membership, MemoryStateStore, ReplicaState, SLOT_BYTES,
    StateStore, StateSync, TruncatedState,
};
use rill_replication::{BrokerId, ReplicationError};
use rill_storage::{Offset, RaftIndex, Term};

/// Bytes before the member ids (magic .. the four counts).
const FIXED: usize = 69;

fn ids(raw: &[u64]) -> Vec<BrokerId> {
    raw.iter().map(|&b| BrokerId(b)).collect()
}

/// The state of the golden test.
fn golden_state() -> ReplicaState {
    ReplicaState {
        hard: HardState {
            term: Term(7),
            vote: Some(BrokerId(2)),
            commit: RaftIndex(41),
        },
        truncated: TruncatedState {
            index: RaftIndex(30),
            term: Term(6),
            next_offset: Offset(1234),
            membership: Membership {
                voters: ids(&[1, 2, 3]),
                learners: ids(&[4]),
                voters_outgoing: Vec::new(),
                learners_next: Vec::new(),
                auto_leave: false,
            },
        },
    }
}

/// A state with a distinguishing term (and commit), for store tests.
fn state_n(n: u64) -> ReplicaState {
    ReplicaState {
        hard: HardState {
            term: Term(n),
            vote: Some(BrokerId(1 + n % 3)),
            commit: RaftIndex(10 * n),
        },
        truncated: TruncatedState {
            index: RaftIndex(n),
            term: Term(n),
            next_offset: Offset(100 * n),
            membership: Membership::voters(ids(&[1, 2, 3])),
        },
    }
}

fn initial() -> ReplicaState {
    ReplicaState::initial(Membership::voters(ids(&[1, 2, 3])))
}

/// Bytes of the slot a state encodes to that are not padding (CRC included).
fn used_bytes(state: &ReplicaState) -> usize {
    FIXED + 8 * state.truncated.membership.member_count() + 4
}

/// Recomputes the CRC of a hand-edited slot whose counts say `members` ids.
fn reseal(slot: &mut [u8], members: usize) {
    let end = FIXED + 8 * members;
    let crc = crc32fast::hash(&slot[..end]);
    slot[end..end + 4].copy_from_slice(&crc.to_le_bytes());
}

// ---------------------------------------------------------------------------
// The slot encoding.
// ---------------------------------------------------------------------------

#[test]
fn encode_slot_matches_the_documented_layout_byte_for_byte() {
    fn field(out: &mut Vec<u8>, at: usize, bytes: &[u8]) {
        assert_eq!(out.len(), at, "field at documented offset {at}");
        out.extend_from_slice(bytes);
    }
    let mut expected = Vec::new();
    let e = &mut expected;
    field(e, 0, b"RST1");
    field(e, 4, &5u64.to_le_bytes()); // sequence
    field(e, 12, &7u64.to_le_bytes()); // hard: term
    field(e, 20, &2u64.to_le_bytes()); // hard: vote
    field(e, 28, &41u64.to_le_bytes()); // hard: commit
    field(e, 36, &30u64.to_le_bytes()); // truncated: index
    field(e, 44, &6u64.to_le_bytes()); // truncated: term
    field(e, 52, &1234u64.to_le_bytes()); // truncated: next offset
    field(e, 60, &[0]); // auto_leave
    field(e, 61, &3u16.to_le_bytes()); // voters
    field(e, 63, &1u16.to_le_bytes()); // learners
    field(e, 65, &0u16.to_le_bytes()); // voters outgoing
    field(e, 67, &0u16.to_le_bytes()); // learners next
    for (i, id) in [1u64, 2, 3, 4].into_iter().enumerate() {
        field(e, 69 + 8 * i, &id.to_le_bytes());
    }
    let crc = crc32fast::hash(e);
    field(e, 69 + 8 * 4, &crc.to_le_bytes());
    expected.resize(SLOT_BYTES, 0);

    let slot = golden_state().encode_slot(5).unwrap();
    assert_eq!(slot.len(), SLOT_BYTES);
    assert_eq!(&slot[..], &expected[..]);
    assert_eq!(ReplicaState::decode_slot(&slot), Some((5, golden_state())));
}

#[test]
fn no_vote_encodes_as_zero_and_decodes_as_none() {
    let mut s = golden_state();
    s.hard.vote = None;
    let slot = s.encode_slot(1).unwrap();
    assert_eq!(&slot[20..28], &[0; 8]);
    assert_eq!(ReplicaState::decode_slot(&slot).unwrap().1.hard.vote, None);
}

#[test]
fn auto_leave_is_one_byte_at_offset_sixty() {
    let mut s = golden_state();
    s.truncated.membership.auto_leave = true;
    let slot = s.encode_slot(1).unwrap();
    assert_eq!(slot[60], 1);
    assert_eq!(ReplicaState::decode_slot(&slot), Some((1, s)));
}

#[test]
fn exactly_members_max_members_round_trip() {
    let mut s = golden_state();
    let m = &mut s.truncated.membership;
    m.voters = (1..=100).map(BrokerId).collect();
    m.learners = (101..=150).map(BrokerId).collect();
    m.voters_outgoing = (151..=200).map(BrokerId).collect();
    m.learners_next = (201..=MEMBERS_MAX as u64).map(BrokerId).collect();
    assert_eq!(m.member_count(), MEMBERS_MAX);
    let slot = s.encode_slot(9).unwrap();
    assert_eq!(ReplicaState::decode_slot(&slot), Some((9, s)));
}

#[test]
fn one_member_more_than_the_maximum_is_refused() {
    let mut s = golden_state();
    // 256 voters and the golden state's one learner.
    s.truncated.membership.voters = (1..=MEMBERS_MAX as u64).map(BrokerId).collect();
    assert_eq!(s.truncated.membership.learners.len(), 1);
    let err = s.encode_slot(1).unwrap_err();
    assert!(
        matches!(
            err,
            ReplicationError::TooManyMembers { count, max }
                if count == MEMBERS_MAX + 1 && max == MEMBERS_MAX
        ),
        "{err}"
    );
}

#[test]
fn decode_refuses_a_wrong_magic_even_with_a_valid_crc() {
    let s = golden_state();
    let mut slot = s.encode_slot(5).unwrap();
    slot[..4].copy_from_slice(b"RST2");
    reseal(&mut slot, 4);
    assert_eq!(ReplicaState::decode_slot(&slot), None);
    let mut slot = s.encode_slot(5).unwrap();
    slot[..4].copy_from_slice(&[0; 4]);
    assert_eq!(ReplicaState::decode_slot(&slot), None);
}

#[test]
fn decode_refuses_every_single_flipped_bit_of_the_used_bytes() {
    let s = golden_state();
    let slot = s.encode_slot(5).unwrap();
    for byte in 0..used_bytes(&s) {
        for bit in 0..8 {
            let mut bad = slot;
            bad[byte] ^= 1 << bit;
            assert_eq!(
                ReplicaState::decode_slot(&bad),
                None,
                "bit {bit} of byte {byte} flipped"
            );
        }
    }
}

#[test]
fn decode_ignores_the_padding_after_the_crc() {
    // The padding is not covered; only the used bytes count.
    let s = golden_state();
    let mut slot = s.encode_slot(5).unwrap();
    slot[used_bytes(&s)..].fill(0xA5);
    assert_eq!(ReplicaState::decode_slot(&slot), Some((5, s)));
}

#[test]
fn decode_refuses_member_counts_above_the_maximum_even_with_a_valid_crc() {
    let s = golden_state();
    // 257 members in all: fits the slot, CRC valid, still refused.
    let mut slot = s.encode_slot(5).unwrap();
    slot[61..63].copy_from_slice(&200u16.to_le_bytes());
    slot[63..65].copy_from_slice(&57u16.to_le_bytes());
    for i in 0..MEMBERS_MAX + 1 {
        let at = FIXED + 8 * i;
        slot[at..at + 8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
    }
    reseal(&mut slot, MEMBERS_MAX + 1);
    assert_eq!(ReplicaState::decode_slot(&slot), None);

    // Counts whose ids could not even fit the slot.
    let mut slot = s.encode_slot(5).unwrap();
    for at in [61, 63, 65, 67] {
        slot[at..at + 2].copy_from_slice(&u16::MAX.to_le_bytes());
    }
    assert_eq!(ReplicaState::decode_slot(&slot), None);
}

#[test]
fn decode_refuses_a_commit_below_the_truncated_index() {
    let mut s = golden_state();
    s.hard.commit = RaftIndex(29);
    // Encoding does not check; the slot is well formed but impossible.
    let slot = s.encode_slot(5).unwrap();
    assert_eq!(ReplicaState::decode_slot(&slot), None);
    // The boundary: a commit equal to the truncated index is fine.
    s.hard.commit = RaftIndex(30);
    let slot = s.encode_slot(5).unwrap();
    assert_eq!(ReplicaState::decode_slot(&slot), Some((5, s)));
}

#[test]
fn decode_refuses_an_auto_leave_byte_other_than_zero_or_one() {
    let s = golden_state();
    let mut slot = s.encode_slot(5).unwrap();
    slot[60] = 2;
    reseal(&mut slot, 4);
    assert_eq!(ReplicaState::decode_slot(&slot), None);
}

#[test]
fn decode_refuses_slots_cut_short_and_the_empty_slot() {
    let s = golden_state();
    let slot = s.encode_slot(5).unwrap();
    let used = used_bytes(&s);
    for len in 0..used {
        assert_eq!(ReplicaState::decode_slot(&slot[..len]), None, "len {len}");
    }
    // The used bytes alone are a whole slot's worth of information.
    assert_eq!(
        ReplicaState::decode_slot(&slot[..used]),
        Some((5, s.clone()))
    );
    assert_eq!(ReplicaState::decode_slot(&[0u8; SLOT_BYTES]), None);
}

fn arb_ids() -> impl Strategy<Value = u64> {
    // Raft reserves 0; ids are otherwise opaque.
    1..=u64::MAX
}

/// Any state with at most `members` ids and commit >= truncated index.
fn arb_state(members: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = ReplicaState> {
    (
        (
            any::<u64>(),
            prop::option::of(arb_ids()),
            any::<u64>(),
            any::<u64>(),
        ),
        (any::<u64>(), any::<u64>()),
        prop::collection::vec((0..4usize, arb_ids()), members),
        any::<bool>(),
    )
        .prop_map(
            |((term, vote, a, b), (trunc_term, next_offset), members, auto_leave)| {
                let mut lists: [Vec<BrokerId>; 4] = Default::default();
                for (list, id) in members {
                    lists[list].push(BrokerId(id));
                }
                let [voters, learners, voters_outgoing, learners_next] = lists;
                ReplicaState {
                    hard: HardState {
                        term: Term(term),
                        vote: vote.map(BrokerId),
                        commit: RaftIndex(a.max(b)),
                    },
                    truncated: TruncatedState {
                        index: RaftIndex(a.min(b)),
                        term: Term(trunc_term),
                        next_offset: Offset(next_offset),
                        membership: Membership {
                            voters,
                            learners,
                            voters_outgoing,
                            learners_next,
                            auto_leave,
                        },
                    },
                }
            },
        )
}

/// A slot whose header is arbitrary but whose CRC is right whenever the
/// counts fit: exercises decoding past the CRC check.
fn arb_crafted_slot() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::collection::vec(any::<u8>(), FIXED..FIXED + 1),
        prop::collection::vec(0u16..80, 4..5),
        prop::collection::vec(any::<u8>(), 0..SLOT_BYTES),
        any::<bool>(),
        0..=SLOT_BYTES,
    )
        .prop_map(|(mut head, counts, rest, magic, len)| {
            if magic {
                head[..4].copy_from_slice(b"RST1");
            }
            for (i, c) in counts.iter().enumerate() {
                head[61 + 2 * i..63 + 2 * i].copy_from_slice(&c.to_le_bytes());
            }
            let mut slot = head;
            slot.extend_from_slice(&rest);
            slot.resize(SLOT_BYTES, 0);
            let n: usize = counts.iter().map(|&c| usize::from(c)).sum();
            if FIXED + 8 * n + 4 <= SLOT_BYTES {
                reseal(&mut slot, n);
            }
            slot.truncate(len);
            slot
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn any_state_within_the_member_limit_round_trips(
        state in arb_state(0..=MEMBERS_MAX),
        sequence in any::<u64>(),
    ) {
        let slot = state.encode_slot(sequence).unwrap();
        prop_assert!(slot[used_bytes(&state)..].iter().all(|&b| b == 0));
        prop_assert_eq!(ReplicaState::decode_slot(&slot), Some((sequence, state)));
    }

    #[test]
    fn any_state_over_the_member_limit_is_refused(
        state in arb_state(MEMBERS_MAX + 1..=MEMBERS_MAX + 64),
    ) {
        let count = state.truncated.membership.member_count();
        let refused = matches!(
            state.encode_slot(1),
            Err(ReplicationError::TooManyMembers { count: c, max })
                if c == count && max == MEMBERS_MAX
        );
        prop_assert!(refused);
    }

    #[test]
    fn decode_never_panics_on_arbitrary_bytes(
        bytes in prop::collection::vec(any::<u8>(), 0..SLOT_BYTES + 100),
        magic in any::<bool>(),
    ) {
        let mut bytes = bytes;
        if magic && bytes.len() >= 4 {
            bytes[..4].copy_from_slice(b"RST1");
        }
        let _ = ReplicaState::decode_slot(&bytes);
    }

    #[test]
    fn decode_never_panics_on_crafted_slots_and_what_it_accepts_re_encodes(
        slot in arb_crafted_slot(),
    ) {
        if let Some((seq, state)) = ReplicaState::decode_slot(&slot) {
            prop_assert!(state.hard.commit >= state.truncated.index);
            let again = state.encode_slot(seq).unwrap();
            let used = used_bytes(&state);
            prop_assert_eq!(&again[..used], &slot[..used]);
        }
    }

    #[test]
    fn decode_never_panics_on_damaged_valid_slots(
        state in arb_state(0..=16),
        damage in prop::collection::vec((0..SLOT_BYTES, any::<u8>()), 1..8),
        len in 0..=SLOT_BYTES,
    ) {
        let mut slot = state.encode_slot(3).unwrap().to_vec();
        for (at, b) in damage {
            slot[at] = b;
        }
        slot.truncate(len);
        if let Some((_, s)) = ReplicaState::decode_slot(&slot) {
            prop_assert!(s.hard.commit >= s.truncated.index);
        }
    }
}

// ---------------------------------------------------------------------------
// FileStateStore.
// ---------------------------------------------------------------------------

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
    newer.truncated.membership.learners = ids(&[9]);
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

// ---------------------------------------------------------------------------
// MemoryStateStore.
// ---------------------------------------------------------------------------

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
