//! Heartbeats in short form: the bytes of a tick's heartbeats, which ones
//! may take the short form, and the refusal of a heartbeat sent in full
//! when it has one (each message has one encoding).
#![allow(clippy::unwrap_used)]

mod wire_cases;

use bytes::Bytes;
use raft::eraftpb::{Message, MessageType};
use rill_replication::GroupId;
use rill_replication::wire::*;
use wire_cases::*;

#[test]
fn a_heartbeat_frame_is_exactly_these_bytes() {
    let mut m = msg(MessageType::MsgHeartbeat, 2, 1, 6);
    m.commit = 0x0102;
    m.context = Bytes::from_static(b"hi");
    #[rustfmt::skip]
    let expected: &[u8] = &[
        2,                              // version
        1, 0, 0, 0, 0, 0, 0, 0,         // from: broker 1
        1, 0, 0, 0,                     // 1 pair
        7, 0, 0, 0, 0, 0, 0, 0,         // group 7
        8,                              // MsgHeartbeat
        2, 0, 0, 0, 0, 0, 0, 0,         // to
        1, 0, 0, 0, 0, 0, 0, 0,         // from
        6, 0, 0, 0, 0, 0, 0, 0,         // term
        0, 0, 0, 0, 0, 0, 0, 0,         // log_term
        0, 0, 0, 0, 0, 0, 0, 0,         // index
        2, 1, 0, 0, 0, 0, 0, 0,         // commit 0x0102
        0, 0, 0, 0, 0, 0, 0, 0,         // commit_term
        0, 0, 0, 0, 0, 0, 0, 0,         // request_snapshot
        0,                              // reject
        0, 0, 0, 0, 0, 0, 0, 0,         // reject_hint
        0, 0, 0, 0, 0, 0, 0, 0,         // deprecated_priority
        0, 0, 0, 0, 0, 0, 0, 0,         // priority
        2, 0, 0, 0, b'h', b'i',         // context "hi"
        0, 0, 0, 0,                     // no entries
        0,                              // no snapshot
    ];
    let messages = vec![(GroupId(7), m)];
    assert_eq!(&encode(SENDER, &messages)[..], expected);
    assert_eq!(expected.len(), FRAME_HEADER_BYTES + MIN_PAIR_BYTES + 2);
    let decoded = decode_frame(Bytes::from_static(expected), &WireLimits::default()).unwrap();
    assert_eq!(decoded.messages, messages);
}

#[test]
fn heartbeats_as_raft_builds_them_travel_in_short_form() {
    let mut beat = msg(MessageType::MsgHeartbeat, 2, 1, 6);
    beat.commit = 0x0102;
    let mut answer = msg(MessageType::MsgHeartbeatResponse, 3, 1, 6);
    answer.commit = 150;
    #[rustfmt::skip]
    let expected: &[u8] = &[
        2,                              // version
        1, 0, 0, 0, 0, 0, 0, 0,         // from: broker 1
        2, 0, 0, 0,                     // 2 pairs
        7, 0, 0, 0, 0, 0, 0, 0,         // group 7
        0x88,                           // short form + MsgHeartbeat
        2, 0, 0, 0, 0, 0, 0, 0,         // to
        6, 0, 0, 0, 0, 0, 0, 0,         // term
        2, 1, 0, 0, 0, 0, 0, 0,         // commit 0x0102
        9, 0, 0, 0, 0, 0, 0, 0,         // group 9
        0x89,                           // short form + MsgHeartbeatResponse
        3, 0, 0, 0, 0, 0, 0, 0,         // to
        6, 0, 0, 0, 0, 0, 0, 0,         // term
        150, 0, 0, 0, 0, 0, 0, 0,       // commit
    ];
    let messages = vec![(GroupId(7), beat), (GroupId(9), answer)];
    assert_eq!(&encode(SENDER, &messages)[..], expected);
    assert_eq!(
        expected.len(),
        FRAME_HEADER_BYTES + 2 * HEARTBEAT_PAIR_BYTES
    );
    for (g, m) in &messages {
        assert_eq!(encoded_len(SENDER, *g, m), HEARTBEAT_PAIR_BYTES);
    }
    let decoded = decode_frame(Bytes::from_static(expected), &WireLimits::default()).unwrap();
    assert_eq!(decoded.messages, messages);
}

#[test]
fn a_heartbeat_with_anything_more_or_from_another_sender_goes_in_full() {
    let plain = || {
        let mut m = msg(MessageType::MsgHeartbeat, 2, 1, 6);
        m.commit = 9;
        m
    };
    let variants: Vec<Message> = vec![
        {
            let mut m = plain();
            m.context = Bytes::from_static(b"read");
            m
        },
        {
            let mut m = plain();
            m.from = 3;
            m
        },
        {
            let mut m = plain();
            m.reject = true;
            m
        },
        {
            let mut m = plain();
            m.log_term = 1;
            m
        },
        {
            let mut m = plain();
            m.priority = -1;
            m
        },
    ];
    for m in variants {
        assert!(
            encoded_len(SENDER, GroupId(1), &m) >= MIN_PAIR_BYTES,
            "{m:?}"
        );
        let messages = vec![(GroupId(1), m)];
        let decoded = decode_frame(encode(SENDER, &messages), &WireLimits::default()).unwrap();
        assert_eq!(decoded.messages, messages);
    }
}

#[test]
fn a_heartbeat_sent_in_full_when_it_has_a_short_form_is_refused() {
    // The encoder itself never writes this.
    let case = heartbeat_in_full(b"");
    assert_eq!(
        encoded_len(SENDER, case.group, &case.msg),
        HEARTBEAT_PAIR_BYTES
    );
    assert_eq!(
        decode(&frame_of(&[&case.pair])),
        Err(WireError::NotShortest)
    );
}

#[test]
fn the_short_form_of_anything_but_a_heartbeat_is_refused() {
    for code in [0x80, 0x83, 0x84, 0x85, 0x8a, 0x92, 0x93, 0xff] {
        let mut g = Golden::default();
        g.u64(7); // group
        g.u8(code);
        g.u64(2); // to
        g.u64(6); // term
        g.u64(0); // commit
        assert_eq!(
            decode(&frame_of(&[&g.0])),
            Err(WireError::UnknownMessageType(code)),
            "{code:#x}"
        );
    }
}

#[test]
fn a_frame_of_short_heartbeats_may_announce_as_many_as_fit() {
    // The count check allows for the smallest pair, not the smallest full
    // message: a tick's heartbeats to 1,000 groups decode.
    let messages: Vec<(GroupId, Message)> = (0..1_000)
        .map(|g| (GroupId(g), msg(MessageType::MsgHeartbeat, 2, 1, 6)))
        .collect();
    let bytes = encode(SENDER, &messages);
    assert_eq!(
        bytes.len(),
        FRAME_HEADER_BYTES + 1_000 * HEARTBEAT_PAIR_BYTES
    );
    let decoded = decode_frame(bytes, &WireLimits::default()).unwrap();
    assert_eq!(decoded.messages, messages);
}
