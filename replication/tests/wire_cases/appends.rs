//! Golden cases of the messages that replicate the log: proposals,
//! appends and their answers, snapshots and their status.

use bytes::Bytes;
use raft::eraftpb::{ConfState, EntryType, MessageType, Snapshot, SnapshotMetadata};
use rill_replication::GroupId;

use super::{Case, Golden, entry, msg};

pub fn propose() -> Case {
    // A follower forwarding a proposal to its leader.
    let mut m = msg(MessageType::MsgPropose, 2, 1, 0);
    m.set_entries(vec![entry(EntryType::EntryNormal, 0, 0, b"record batch")].into());
    let mut g = Golden::default();
    g.u64(7); // group
    g.u8(2); // MsgPropose
    g.u64(2); // to
    g.u64(1); // from
    g.u64(0); // term
    g.u64(0); // log_term
    g.u64(0); // index
    g.u64(0); // commit
    g.u64(0); // commit_term
    g.u64(0); // request_snapshot
    g.u8(0); // reject
    g.u64(0); // reject_hint
    g.u64(0); // deprecated_priority
    g.i64(0); // priority
    g.bytes(b""); // context
    g.u32(1); // 1 entry
    g.u8(0); // EntryNormal
    g.u64(0); // term
    g.u64(0); // index
    g.u8(0); // sync_log
    g.bytes(b"record batch"); // data
    g.bytes(b""); // context
    g.u8(0); // no snapshot
    Case {
        group: GroupId(7),
        msg: m,
        pair: g.0,
    }
}

pub fn append() -> Case {
    let mut m = msg(MessageType::MsgAppend, 2, 1, 5);
    m.log_term = 4;
    m.index = 100;
    m.commit = 99;
    let mut conf_change = entry(EntryType::EntryConfChangeV2, 5, 102, b"\x12\x02\x08\x03");
    conf_change.context = Bytes::from_static(b"add broker 3");
    conf_change.sync_log = true;
    m.set_entries(
        vec![
            entry(EntryType::EntryNormal, 5, 101, b"batch-101"),
            conf_change,
        ]
        .into(),
    );
    let mut g = Golden::default();
    g.u64(7); // group
    g.u8(3); // MsgAppend
    g.u64(2); // to
    g.u64(1); // from
    g.u64(5); // term
    g.u64(4); // log_term: of the entry at `index`
    g.u64(100); // index: the entries follow index 100
    g.u64(99); // commit
    g.u64(0); // commit_term
    g.u64(0); // request_snapshot
    g.u8(0); // reject
    g.u64(0); // reject_hint
    g.u64(0); // deprecated_priority
    g.i64(0); // priority
    g.bytes(b""); // context
    g.u32(2); // 2 entries
    g.u8(0); // EntryNormal
    g.u64(5); // term
    g.u64(101); // index
    g.u8(0); // sync_log
    g.bytes(b"batch-101"); // data
    g.bytes(b""); // context
    g.u8(2); // EntryConfChangeV2
    g.u64(5); // term
    g.u64(102); // index
    g.u8(1); // sync_log
    g.bytes(b"\x12\x02\x08\x03"); // data
    g.bytes(b"add broker 3"); // context
    g.u8(0); // no snapshot
    Case {
        group: GroupId(7),
        msg: m,
        pair: g.0,
    }
}

pub fn append_response() -> Case {
    // A follower rejecting an append and asking for a snapshot.
    let mut m = msg(MessageType::MsgAppendResponse, 1, 2, 5);
    m.log_term = 3;
    m.index = 100;
    m.commit = 90;
    m.request_snapshot = 95;
    m.reject = true;
    m.reject_hint = 96;
    let mut g = Golden::default();
    g.u64(7); // group
    g.u8(4); // MsgAppendResponse
    g.u64(1); // to
    g.u64(2); // from
    g.u64(5); // term
    g.u64(3); // log_term
    g.u64(100); // index
    g.u64(90); // commit
    g.u64(0); // commit_term
    g.u64(95); // request_snapshot
    g.u8(1); // reject
    g.u64(96); // reject_hint
    g.u64(0); // deprecated_priority
    g.i64(0); // priority
    g.bytes(b""); // context
    g.u32(0); // no entries
    g.u8(0); // no snapshot
    Case {
        group: GroupId(7),
        msg: m,
        pair: g.0,
    }
}

pub fn snapshot() -> Case {
    // A leader in joint consensus sending a snapshot to a new learner.
    let mut m = msg(MessageType::MsgSnapshot, 4, 1, 6);
    let conf_state = ConfState {
        voters: vec![1, 2, 3],
        learners: vec![4],
        voters_outgoing: vec![1, 2, 5],
        learners_next: vec![5],
        auto_leave: true,
        ..ConfState::default()
    };
    let metadata = SnapshotMetadata {
        index: 200,
        term: 6,
        conf_state: Some(conf_state).into(),
        ..SnapshotMetadata::default()
    };
    m.set_snapshot(Snapshot {
        data: Bytes::from_static(b"state at 200"),
        metadata: Some(metadata).into(),
        ..Snapshot::default()
    });
    let mut g = Golden::default();
    g.u64(9); // group
    g.u8(7); // MsgSnapshot
    g.u64(4); // to
    g.u64(1); // from
    g.u64(6); // term
    g.u64(0); // log_term
    g.u64(0); // index
    g.u64(0); // commit
    g.u64(0); // commit_term
    g.u64(0); // request_snapshot
    g.u8(0); // reject
    g.u64(0); // reject_hint
    g.u64(0); // deprecated_priority
    g.i64(0); // priority
    g.bytes(b""); // context
    g.u32(0); // no entries
    g.u8(1); // snapshot present
    g.bytes(b"state at 200"); // data
    g.u8(1); // metadata present
    g.u64(200); // index
    g.u64(6); // term
    g.u8(1); // conf state present
    g.ids(&[1, 2, 3]); // voters
    g.ids(&[4]); // learners
    g.ids(&[1, 2, 5]); // voters_outgoing
    g.ids(&[5]); // learners_next
    g.u8(1); // auto_leave
    Case {
        group: GroupId(9),
        msg: m,
        pair: g.0,
    }
}

pub fn snap_status() -> Case {
    // Local: a snapshot to broker 3 failed.
    let mut m = msg(MessageType::MsgSnapStatus, 0, 3, 0);
    m.reject = true;
    let mut g = Golden::default();
    g.u64(9); // group
    g.u8(11); // MsgSnapStatus
    g.u64(0); // to
    g.u64(3); // from
    g.u64(0); // term
    g.u64(0); // log_term
    g.u64(0); // index
    g.u64(0); // commit
    g.u64(0); // commit_term
    g.u64(0); // request_snapshot
    g.u8(1); // reject: the snapshot failed
    g.u64(0); // reject_hint
    g.u64(0); // deprecated_priority
    g.i64(0); // priority
    g.bytes(b""); // context
    g.u32(0); // no entries
    g.u8(0); // no snapshot
    Case {
        group: GroupId(9),
        msg: m,
        pair: g.0,
    }
}
