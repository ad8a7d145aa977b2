//! The peer codec's golden bytes: one case per Raft message type, written
//! from the layout tables independently of the encoder, and round trips of
//! whole frames (every type at once, empty, set-but-empty snapshot parts,
//! byte strings as slices of the payload).
#![allow(clippy::unwrap_used)]

mod wire_cases;

use bytes::{Bytes, BytesMut};
use raft::eraftpb::{ConfState, Message, MessageType, Snapshot, SnapshotMetadata};
use rill_replication::wire::*;
use rill_replication::{BrokerId, GroupId};
use wire_cases::*;

#[test]
fn every_message_type_has_a_golden_case_with_its_proto_number() {
    for (code, case) in CASES.iter().enumerate() {
        let case = case();
        assert_eq!(case.msg.get_msg_type(), ALL_MESSAGE_TYPES[code]);
        assert_eq!(case.pair[8] as usize, code, "type byte after the group id");
        assert_eq!(
            ALL_MESSAGE_TYPES[code] as usize, code,
            "eraftpb.proto's number"
        );
    }
}

#[test]
fn golden_msg_hup() {
    check(hup());
}
#[test]
fn golden_msg_beat() {
    check(beat());
}
#[test]
fn golden_msg_propose() {
    check(propose());
}
#[test]
fn golden_msg_append() {
    check(append());
}
#[test]
fn golden_msg_append_response() {
    check(append_response());
}
#[test]
fn golden_msg_request_vote() {
    check(request_vote());
}
#[test]
fn golden_msg_request_vote_response() {
    check(request_vote_response());
}
#[test]
fn golden_msg_snapshot() {
    check(snapshot());
}
#[test]
fn golden_msg_heartbeat() {
    check(heartbeat());
}
#[test]
fn golden_msg_heartbeat_response() {
    check(heartbeat_response());
}
#[test]
fn golden_msg_unreachable() {
    check(unreachable());
}
#[test]
fn golden_msg_snap_status() {
    check(snap_status());
}
#[test]
fn golden_msg_check_quorum() {
    check(check_quorum());
}
#[test]
fn golden_msg_transfer_leader() {
    check(transfer_leader());
}
#[test]
fn golden_msg_timeout_now() {
    check(timeout_now());
}
#[test]
fn golden_msg_read_index() {
    check(read_index());
}
#[test]
fn golden_msg_read_index_resp() {
    check(read_index_resp());
}
#[test]
fn golden_msg_request_pre_vote() {
    check(request_pre_vote());
}
#[test]
fn golden_msg_request_pre_vote_response() {
    check(request_pre_vote_response());
}

#[test]
fn a_frame_of_every_message_type_round_trips() {
    let (messages, expected) = all_cases_frame();
    assert_eq!(encode(SENDER, &messages)[..], expected[..]);
    let decoded = decode_frame(Bytes::from(expected), &WireLimits::default()).unwrap();
    assert_eq!(decoded.from, SENDER);
    assert_eq!(decoded.messages, messages);
}

#[test]
fn an_empty_frame_round_trips() {
    let bytes = encode(BrokerId(3), &[]);
    assert_eq!(bytes.len(), FRAME_HEADER_BYTES);
    let decoded = decode_frame(bytes, &WireLimits::default()).unwrap();
    assert_eq!(
        decoded,
        PeerFrame {
            from: BrokerId(3),
            messages: vec![]
        }
    );
}

#[test]
fn encoding_appends_to_what_the_buffer_holds() {
    let mut out = BytesMut::from(&b"xyz"[..]);
    let messages = vec![(GroupId(7), heartbeat().msg)];
    encode_frame(SENDER, &messages, &mut out);
    assert_eq!(&out[..3], b"xyz");
    assert_eq!(&out[3..], &encode(SENDER, &messages)[..]);
}

#[test]
fn set_but_empty_snapshot_parts_survive_the_round_trip() {
    // protobuf's `has_*` is part of equality: an empty snapshot that is set
    // must not come back unset, nor the other way round.
    let mut empty_snapshot = msg(MessageType::MsgSnapshot, 2, 1, 1);
    empty_snapshot.set_snapshot(Snapshot::default());
    let mut empty_metadata = empty_snapshot.clone();
    empty_metadata
        .mut_snapshot()
        .set_metadata(SnapshotMetadata::default());
    let mut empty_conf_state = empty_metadata.clone();
    empty_conf_state
        .mut_snapshot()
        .mut_metadata()
        .set_conf_state(ConfState::default());
    let messages: Vec<(GroupId, Message)> = [
        msg(MessageType::MsgSnapshot, 2, 1, 1),
        empty_snapshot,
        empty_metadata,
        empty_conf_state,
    ]
    .into_iter()
    .map(|m| (GroupId(1), m))
    .collect();
    let decoded = decode_frame(encode(SENDER, &messages), &WireLimits::default()).unwrap();
    assert_eq!(decoded.messages, messages);
    assert!(!decoded.messages[0].1.has_snapshot());
    assert!(decoded.messages[1].1.has_snapshot());
    assert!(!decoded.messages[1].1.get_snapshot().has_metadata());
    assert!(decoded.messages[2].1.get_snapshot().has_metadata());
    assert!(
        !decoded.messages[2]
            .1
            .get_snapshot()
            .get_metadata()
            .has_conf_state()
    );
    assert!(
        decoded.messages[3]
            .1
            .get_snapshot()
            .get_metadata()
            .has_conf_state()
    );
}

#[test]
fn byte_strings_decode_as_slices_of_the_payload() {
    let (_, bytes) = all_cases_frame();
    let payload = Bytes::from(bytes);
    let range = payload.as_ptr() as usize..payload.as_ptr() as usize + payload.len();
    let inside = |b: &Bytes| b.is_empty() || range.contains(&(b.as_ptr() as usize));
    let decoded = decode_frame(payload.clone(), &WireLimits::default()).unwrap();
    for (_, m) in &decoded.messages {
        assert!(inside(&m.context));
        for e in m.get_entries() {
            assert!(inside(&e.data) && inside(&e.context));
        }
        assert!(inside(&m.get_snapshot().data));
    }
}

#[test]
fn the_default_limits_are_the_documented_ones() {
    assert_eq!(
        WireLimits::default(),
        WireLimits {
            frame_bytes_max: 64 << 20,
            messages_max: 65_536,
            entries_max: 65_536,
        }
    );
}
