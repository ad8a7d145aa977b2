//! Properties of the peer codec over arbitrary messages: any frame round
//! trips, `encoded_len` is exact, arbitrary or damaged bytes never panic
//! the decoder and what it reserves stays in proportion to the payload.
#![allow(clippy::unwrap_used)]

mod wire_cases;

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use raft::eraftpb::{ConfState, Entry, Message, Snapshot, SnapshotMetadata};
use rill_replication::wire::*;
use rill_replication::{BrokerId, GroupId};
use wire_cases::*;

fn arb_bytes() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..24).prop_map(Bytes::from)
}

fn arb_entry() -> impl Strategy<Value = Entry> {
    (
        prop::sample::select(&ALL_ENTRY_TYPES[..]),
        any::<u64>(),
        any::<u64>(),
        any::<bool>(),
        arb_bytes(),
        arb_bytes(),
    )
        .prop_map(|(entry_type, term, index, sync_log, data, context)| {
            let mut e = Entry::default();
            e.set_entry_type(entry_type);
            e.term = term;
            e.index = index;
            e.sync_log = sync_log;
            e.data = data;
            e.context = context;
            e
        })
}

fn arb_ids() -> impl Strategy<Value = Vec<u64>> {
    prop::collection::vec(any::<u64>(), 0..5)
}

fn arb_conf_state() -> impl Strategy<Value = ConfState> {
    (arb_ids(), arb_ids(), arb_ids(), arb_ids(), any::<bool>()).prop_map(
        |(voters, learners, voters_outgoing, learners_next, auto_leave)| ConfState {
            voters,
            learners,
            voters_outgoing,
            learners_next,
            auto_leave,
            ..ConfState::default()
        },
    )
}

fn arb_snapshot() -> impl Strategy<Value = Snapshot> {
    let metadata = (
        any::<u64>(),
        any::<u64>(),
        prop::option::of(arb_conf_state()),
    )
        .prop_map(|(index, term, conf_state)| SnapshotMetadata {
            index,
            term,
            conf_state: conf_state.into(),
            ..SnapshotMetadata::default()
        });
    (arb_bytes(), prop::option::of(metadata)).prop_map(|(data, metadata)| Snapshot {
        data,
        metadata: metadata.into(),
        ..Snapshot::default()
    })
}

fn arb_message() -> impl Strategy<Value = Message> {
    let numbers = prop::array::uniform10(any::<u64>());
    (
        prop::sample::select(&ALL_MESSAGE_TYPES[..]),
        numbers,
        any::<bool>(),
        any::<i64>(),
        arb_bytes(),
        prop::collection::vec(arb_entry(), 0..4),
        prop::option::of(arb_snapshot()),
    )
        .prop_map(
            |(msg_type, n, reject, priority, context, entries, snapshot)| {
                let mut m = Message::default();
                m.set_msg_type(msg_type);
                [m.to, m.from, m.term, m.log_term, m.index] = [n[0], n[1], n[2], n[3], n[4]];
                [m.commit, m.commit_term, m.request_snapshot] = [n[5], n[6], n[7]];
                [m.reject_hint, m.deprecated_priority] = [n[8], n[9]];
                m.reject = reject;
                m.priority = priority;
                m.context = context;
                m.set_entries(entries.into());
                if let Some(s) = snapshot {
                    m.set_snapshot(s);
                }
                m
            },
        )
}

fn arb_messages() -> impl Strategy<Value = Vec<(GroupId, Message)>> {
    prop::collection::vec((any::<u64>().prop_map(GroupId), arb_message()), 0..5)
}

/// The most one decoder allocation may be, per payload byte: an in-memory
/// `(GroupId, Message)` or `Entry` is a few times its smallest encoding.
const ALLOCATION_PER_PAYLOAD_BYTE: usize = 8;

#[test]
fn in_memory_items_are_a_few_times_their_smallest_encoding() {
    let pair = std::mem::size_of::<(GroupId, Message)>();
    let entry = std::mem::size_of::<Entry>();
    assert!(
        pair <= ALLOCATION_PER_PAYLOAD_BYTE * HEARTBEAT_PAIR_BYTES,
        "{pair}"
    );
    assert!(
        entry <= ALLOCATION_PER_PAYLOAD_BYTE * MIN_ENTRY_BYTES,
        "{entry}"
    );
}

/// Small limits, so arbitrary input reaches them.
const SMALL: WireLimits = WireLimits {
    frame_bytes_max: 4096,
    messages_max: 8,
    entries_max: 8,
};

proptest! {
    #[test]
    fn any_frame_round_trips(from in any::<u64>(), messages in arb_messages()) {
        let mut out = BytesMut::new();
        encode_frame(BrokerId(from), &messages, &mut out);
        let lens: usize = messages.iter().map(|(g, m)| encoded_len(BrokerId(from), *g, m)).sum();
        prop_assert_eq!(out.len(), FRAME_HEADER_BYTES + lens);
        let decoded = decode_frame(out.freeze(), &WireLimits::default()).unwrap();
        prop_assert_eq!(decoded, PeerFrame { from: BrokerId(from), messages });
    }

    #[test]
    fn encoded_len_is_what_each_pair_adds(group in any::<u64>(), m in arb_message()) {
        let mut out = BytesMut::new();
        encode_frame(SENDER, &[], &mut out);
        let before = out.len();
        encode_frame(SENDER, &[(GroupId(group), m.clone())], &mut out);
        prop_assert_eq!(out.len() - before - FRAME_HEADER_BYTES, encoded_len(SENDER, GroupId(group), &m));
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let payload = Bytes::from(bytes);
        let _ = decode_frame(payload.clone(), &WireLimits::default());
        let _ = decode_frame(payload, &SMALL);
    }

    #[test]
    fn a_damaged_frame_is_refused_or_decodes_to_itself(
        messages in arb_messages(),
        at in any::<prop::sample::Index>(),
        xor in 1u8..,
    ) {
        let mut bytes = encode(SENDER, &messages).to_vec();
        let i = at.index(bytes.len());
        bytes[i] ^= xor;
        let payload = Bytes::from(bytes);
        let (result, largest) =
            largest_allocation_during(|| decode_frame(payload.clone(), &WireLimits::default()));
        // A damaged count may still pass the remaining-bytes check; what it
        // can reserve stays in proportion to the payload.
        prop_assert!(
            largest <= ALLOCATION_PER_PAYLOAD_BYTE * payload.len(),
            "{} bytes for a {} byte payload", largest, payload.len()
        );
        if let Ok(frame) = result {
            // Every byte has one meaning: what decodes re-encodes the same.
            prop_assert_eq!(encode(frame.from, &frame.messages), payload);
        }
    }

    #[test]
    fn inflated_counts_reserve_in_proportion_to_the_payload(
        messages in arb_messages(),
        at in any::<prop::sample::Index>(),
    ) {
        // Overwrite four bytes anywhere with a count as large as the rest of
        // the payload could seem to justify, to hit every count field.
        let mut bytes = encode(SENDER, &messages).to_vec();
        let count = bytes.len() as u32 / 8;
        let i = at.index(bytes.len() - 3);
        bytes[i..i + 4].copy_from_slice(&count.to_le_bytes());
        let payload = Bytes::from(bytes);
        let (_, largest) =
            largest_allocation_during(|| decode_frame(payload.clone(), &WireLimits::default()));
        prop_assert!(
            largest <= ALLOCATION_PER_PAYLOAD_BYTE * payload.len(),
            "{} bytes for a {} byte payload", largest, payload.len()
        );
    }

    #[test]
    fn a_frame_cut_short_is_truncated(messages in arb_messages(), at in any::<prop::sample::Index>()) {
        let bytes = encode(SENDER, &messages);
        let len = at.index(bytes.len());
        let result = decode_frame(bytes.slice(..len), &WireLimits::default());
        prop_assert!(matches!(result, Err(WireError::Truncated { .. })), "{:?}", result);
    }
}
