//! Golden cases of the messages that keep a leader's lease and serve
//! reads: beats, heartbeats (in full, as the short form's counterpart),
//! quorum checks, unreachable reports and read indexes.

use bytes::Bytes;
use raft::eraftpb::{EntryType, MessageType};
use rill_replication::GroupId;

use super::{Case, Golden, entry, msg};

pub fn beat() -> Case {
    // Local: the leader's heartbeat timeout fired.
    let m = msg(MessageType::MsgBeat, 0, 1, 0);
    let mut g = Golden::default();
    g.u64(7); // group
    g.u8(1); // MsgBeat
    g.u64(0); // to
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
    g.u32(0); // no entries
    g.u8(0); // no snapshot
    Case {
        group: GroupId(7),
        msg: m,
        pair: g.0,
    }
}

pub fn heartbeat() -> Case {
    // Carrying a read-index request's context: too much for the short form.
    heartbeat_in_full(b"read-17")
}

/// A heartbeat from [`SENDER`] in full, with `context`.
pub fn heartbeat_in_full(context: &'static [u8]) -> Case {
    let mut m = msg(MessageType::MsgHeartbeat, 2, 1, 6);
    m.commit = 150;
    m.context = Bytes::from_static(context);
    let mut g = Golden::default();
    g.u64(7); // group
    g.u8(8); // MsgHeartbeat
    g.u64(2); // to
    g.u64(1); // from
    g.u64(6); // term
    g.u64(0); // log_term
    g.u64(0); // index
    g.u64(150); // commit
    g.u64(0); // commit_term
    g.u64(0); // request_snapshot
    g.u8(0); // reject
    g.u64(0); // reject_hint
    g.u64(0); // deprecated_priority
    g.i64(0); // priority
    g.bytes(context); // context
    g.u32(0); // no entries
    g.u8(0); // no snapshot
    Case {
        group: GroupId(7),
        msg: m,
        pair: g.0,
    }
}

pub fn heartbeat_response() -> Case {
    let mut m = msg(MessageType::MsgHeartbeatResponse, 1, 2, 6);
    m.commit = 148;
    m.context = Bytes::from_static(b"read-17");
    let mut g = Golden::default();
    g.u64(7); // group
    g.u8(9); // MsgHeartbeatResponse
    g.u64(1); // to
    g.u64(2); // from
    g.u64(6); // term
    g.u64(0); // log_term
    g.u64(0); // index
    g.u64(148); // commit
    g.u64(0); // commit_term
    g.u64(0); // request_snapshot
    g.u8(0); // reject
    g.u64(0); // reject_hint
    g.u64(0); // deprecated_priority
    g.i64(0); // priority
    g.bytes(b"read-17"); // context
    g.u32(0); // no entries
    g.u8(0); // no snapshot
    Case {
        group: GroupId(7),
        msg: m,
        pair: g.0,
    }
}

pub fn check_quorum() -> Case {
    let m = msg(MessageType::MsgCheckQuorum, 0, 1, 0);
    let mut g = Golden::default();
    g.u64(7); // group
    g.u8(12); // MsgCheckQuorum
    g.u64(0); // to
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
    g.u32(0); // no entries
    g.u8(0); // no snapshot
    Case {
        group: GroupId(7),
        msg: m,
        pair: g.0,
    }
}

pub fn unreachable() -> Case {
    // Local: the transport reporting broker 3 unreachable.
    let m = msg(MessageType::MsgUnreachable, 0, 3, 0);
    let mut g = Golden::default();
    g.u64(7); // group
    g.u8(10); // MsgUnreachable
    g.u64(0); // to
    g.u64(3); // from
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
    g.u32(0); // no entries
    g.u8(0); // no snapshot
    Case {
        group: GroupId(7),
        msg: m,
        pair: g.0,
    }
}

pub fn read_index() -> Case {
    // A follower forwarding a linearizable read to its leader.
    let mut m = msg(MessageType::MsgReadIndex, 1, 2, 6);
    m.set_entries(vec![entry(EntryType::EntryNormal, 0, 0, b"read-17")].into());
    let mut g = Golden::default();
    g.u64(7); // group
    g.u8(15); // MsgReadIndex
    g.u64(1); // to
    g.u64(2); // from
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
    g.u32(1); // 1 entry: the request's context
    g.u8(0); // EntryNormal
    g.u64(0); // term
    g.u64(0); // index
    g.u8(0); // sync_log
    g.bytes(b"read-17"); // data
    g.bytes(b""); // context
    g.u8(0); // no snapshot
    Case {
        group: GroupId(7),
        msg: m,
        pair: g.0,
    }
}

pub fn read_index_resp() -> Case {
    let mut m = msg(MessageType::MsgReadIndexResp, 2, 1, 6);
    m.index = 150;
    m.set_entries(vec![entry(EntryType::EntryNormal, 0, 0, b"read-17")].into());
    let mut g = Golden::default();
    g.u64(7); // group
    g.u8(16); // MsgReadIndexResp
    g.u64(2); // to
    g.u64(1); // from
    g.u64(6); // term
    g.u64(0); // log_term
    g.u64(150); // index: the read index
    g.u64(0); // commit
    g.u64(0); // commit_term
    g.u64(0); // request_snapshot
    g.u8(0); // reject
    g.u64(0); // reject_hint
    g.u64(0); // deprecated_priority
    g.i64(0); // priority
    g.bytes(b""); // context
    g.u32(1); // 1 entry: the request's context
    g.u8(0); // EntryNormal
    g.u64(0); // term
    g.u64(0); // index
    g.u8(0); // sync_log
    g.bytes(b"read-17"); // data
    g.bytes(b""); // context
    g.u8(0); // no snapshot
    Case {
        group: GroupId(7),
        msg: m,
        pair: g.0,
    }
}
