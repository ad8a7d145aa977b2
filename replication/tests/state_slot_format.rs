//! The replica state file's slot: its byte layout, what encoding refuses
//! (more members than `MEMBERS_MAX`), and what decoding refuses (a wrong
//! magic, any flipped bit of the used bytes, impossible counts or commits,
//! slots cut short), whatever bytes it is given.
#![allow(clippy::unwrap_used)]

mod helpers;

use helpers::replica_state::{FIXED, ids, used_bytes};
use proptest::prelude::*;
use rill_replication::state::{
    HardState, MEMBERS_MAX, Membership, ReplicaState, SLOT_BYTES, TruncatedState,
};
use rill_replication::{BrokerId, ReplicationError};
use rill_storage::{Offset, RaftIndex, Term};

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
        },
        membership: Membership {
            voters: ids(&[1, 2, 3]),
            learners: ids(&[4]),
            voters_outgoing: Vec::new(),
            learners_next: Vec::new(),
            auto_leave: false,
        },
        membership_index: RaftIndex(35),
    }
}

/// Recomputes the CRC of a hand-edited slot whose counts say `members` ids.
fn reseal(slot: &mut [u8], members: usize) {
    let end = FIXED + 8 * members;
    let crc = crc32fast::hash(&slot[..end]);
    slot[end..end + 4].copy_from_slice(&crc.to_le_bytes());
}

#[test]
fn encode_slot_matches_the_documented_layout_byte_for_byte() {
    fn field(out: &mut Vec<u8>, at: usize, bytes: &[u8]) {
        assert_eq!(out.len(), at, "field at documented offset {at}");
        out.extend_from_slice(bytes);
    }
    let mut expected = Vec::new();
    let e = &mut expected;
    field(e, 0, b"RST2");
    field(e, 4, &5u64.to_le_bytes()); // sequence
    field(e, 12, &7u64.to_le_bytes()); // hard: term
    field(e, 20, &2u64.to_le_bytes()); // hard: vote
    field(e, 28, &41u64.to_le_bytes()); // hard: commit
    field(e, 36, &30u64.to_le_bytes()); // truncated: index
    field(e, 44, &6u64.to_le_bytes()); // truncated: term
    field(e, 52, &1234u64.to_le_bytes()); // truncated: next offset
    field(e, 60, &35u64.to_le_bytes()); // membership index
    field(e, 68, &[0]); // auto_leave
    field(e, 69, &3u16.to_le_bytes()); // voters
    field(e, 71, &1u16.to_le_bytes()); // learners
    field(e, 73, &0u16.to_le_bytes()); // voters outgoing
    field(e, 75, &0u16.to_le_bytes()); // learners next
    for (i, id) in [1u64, 2, 3, 4].into_iter().enumerate() {
        field(e, 77 + 8 * i, &id.to_le_bytes());
    }
    let crc = crc32fast::hash(e);
    field(e, 77 + 8 * 4, &crc.to_le_bytes());
    expected.resize(SLOT_BYTES, 0);

    let slot = golden_state().encode_slot(5).unwrap();
    assert_eq!(slot.len(), SLOT_BYTES);
    assert_eq!(&slot[..], &expected[..]);
    assert_eq!(ReplicaState::decode_slot(&slot), Some((5, golden_state())));
}

#[test]
fn a_slot_of_the_first_layout_loads_with_the_groups_first_membership() {
    // Written before membership changes existed: no membership index, so
    // the membership fields sit 8 bytes sooner.
    let mut v1 = Vec::new();
    v1.extend_from_slice(b"RST1");
    for n in [5u64, 7, 2, 41, 30, 6, 1234] {
        v1.extend_from_slice(&n.to_le_bytes());
    }
    v1.push(0);
    for count in [3u16, 1, 0, 0] {
        v1.extend_from_slice(&count.to_le_bytes());
    }
    for id in [1u64, 2, 3, 4] {
        v1.extend_from_slice(&id.to_le_bytes());
    }
    let crc = crc32fast::hash(&v1);
    v1.extend_from_slice(&crc.to_le_bytes());
    v1.resize(SLOT_BYTES, 0);
    let mut expected = golden_state();
    expected.membership_index = RaftIndex(0);
    assert_eq!(ReplicaState::decode_slot(&v1), Some((5, expected.clone())));
    // Saved again, it takes the current layout.
    let again = expected.encode_slot(6).unwrap();
    assert_eq!(&again[..4], b"RST2");
    assert_eq!(ReplicaState::decode_slot(&again), Some((6, expected)));
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
fn auto_leave_is_one_byte_at_offset_sixty_eight() {
    let mut s = golden_state();
    s.membership.auto_leave = true;
    let slot = s.encode_slot(1).unwrap();
    assert_eq!(slot[68], 1);
    assert_eq!(ReplicaState::decode_slot(&slot), Some((1, s)));
}

#[test]
fn exactly_members_max_members_round_trip() {
    let mut s = golden_state();
    let m = &mut s.membership;
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
    s.membership.voters = (1..=MEMBERS_MAX as u64).map(BrokerId).collect();
    assert_eq!(s.membership.learners.len(), 1);
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
    slot[..4].copy_from_slice(b"RST3");
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
    slot[69..71].copy_from_slice(&200u16.to_le_bytes());
    slot[71..73].copy_from_slice(&57u16.to_le_bytes());
    for i in 0..MEMBERS_MAX + 1 {
        let at = FIXED + 8 * i;
        slot[at..at + 8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
    }
    reseal(&mut slot, MEMBERS_MAX + 1);
    assert_eq!(ReplicaState::decode_slot(&slot), None);

    // Counts whose ids could not even fit the slot.
    let mut slot = s.encode_slot(5).unwrap();
    for at in [69, 71, 73, 75] {
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
    slot[68] = 2;
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
        (any::<u64>(), any::<u64>(), any::<u64>()),
        prop::collection::vec((0..4usize, arb_ids()), members),
        any::<bool>(),
    )
        .prop_map(
            |(
                (term, vote, a, b),
                (trunc_term, next_offset, membership_index),
                members,
                auto_leave,
            )| {
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
                    },
                    membership: Membership {
                        voters,
                        learners,
                        voters_outgoing,
                        learners_next,
                        auto_leave,
                    },
                    membership_index: RaftIndex(membership_index),
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
                head[..4].copy_from_slice(b"RST2");
            }
            for (i, c) in counts.iter().enumerate() {
                head[69 + 2 * i..71 + 2 * i].copy_from_slice(&c.to_le_bytes());
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
        let count = state.membership.member_count();
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
            let magic: &[u8; 4] = if bytes[0] % 2 == 0 { b"RST2" } else { b"RST1" };
            bytes[..4].copy_from_slice(magic);
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
