//! Golden cases of the messages that elect a leader or hand leadership
//! over: campaigns, votes, pre-votes, leader transfers.

use bytes::Bytes;
use raft::eraftpb::MessageType;
use rill_replication::GroupId;

use super::{Case, Golden, msg};

pub fn hup() -> Case {
    // Local: a follower's election timeout fired.
    let m = msg(MessageType::MsgHup, 0, 1, 0);
    let mut g = Golden::default();
    g.u64(7); // group
    g.u8(0); // MsgHup
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

pub fn request_vote() -> Case {
    // A leadership transfer's campaign, with a priority.
    let mut m = msg(MessageType::MsgRequestVote, 2, 1, 6);
    m.log_term = 5;
    m.index = 102;
    m.commit = 101;
    m.commit_term = 5;
    m.deprecated_priority = 3;
    m.priority = 3;
    m.context = Bytes::from_static(b"CampaignTransfer");
    let mut g = Golden::default();
    g.u64(0); // group: the controller
    g.u8(5); // MsgRequestVote
    g.u64(2); // to
    g.u64(1); // from
    g.u64(6); // term
    g.u64(5); // log_term: of the candidate's last entry
    g.u64(102); // index: of the candidate's last entry
    g.u64(101); // commit
    g.u64(5); // commit_term
    g.u64(0); // request_snapshot
    g.u8(0); // reject
    g.u64(0); // reject_hint
    g.u64(3); // deprecated_priority
    g.i64(3); // priority
    g.bytes(b"CampaignTransfer"); // context
    g.u32(0); // no entries
    g.u8(0); // no snapshot
    Case {
        group: GroupId::CONTROLLER,
        msg: m,
        pair: g.0,
    }
}

pub fn request_vote_response() -> Case {
    let mut m = msg(MessageType::MsgRequestVoteResponse, 1, 2, 6);
    m.reject = true;
    let mut g = Golden::default();
    g.u64(0); // group: the controller
    g.u8(6); // MsgRequestVoteResponse
    g.u64(1); // to
    g.u64(2); // from
    g.u64(6); // term
    g.u64(0); // log_term
    g.u64(0); // index
    g.u64(0); // commit
    g.u64(0); // commit_term
    g.u64(0); // request_snapshot
    g.u8(1); // reject
    g.u64(0); // reject_hint
    g.u64(0); // deprecated_priority
    g.i64(0); // priority
    g.bytes(b""); // context
    g.u32(0); // no entries
    g.u8(0); // no snapshot
    Case {
        group: GroupId::CONTROLLER,
        msg: m,
        pair: g.0,
    }
}

pub fn request_pre_vote() -> Case {
    // Sent at the term the candidate would move to, without moving yet.
    let mut m = msg(MessageType::MsgRequestPreVote, 3, 2, 7);
    m.log_term = 6;
    m.index = 150;
    m.commit = 150;
    m.commit_term = 6;
    m.priority = -1;
    let mut g = Golden::default();
    g.u64(u64::MAX); // group: the largest id
    g.u8(17); // MsgRequestPreVote
    g.u64(3); // to
    g.u64(2); // from
    g.u64(7); // term
    g.u64(6); // log_term
    g.u64(150); // index
    g.u64(150); // commit
    g.u64(6); // commit_term
    g.u64(0); // request_snapshot
    g.u8(0); // reject
    g.u64(0); // reject_hint
    g.u64(0); // deprecated_priority
    g.i64(-1); // priority: below the default of 0
    g.bytes(b""); // context
    g.u32(0); // no entries
    g.u8(0); // no snapshot
    Case {
        group: GroupId(u64::MAX),
        msg: m,
        pair: g.0,
    }
}

pub fn request_pre_vote_response() -> Case {
    let m = msg(MessageType::MsgRequestPreVoteResponse, 2, 3, 7);
    let mut g = Golden::default();
    g.u64(u64::MAX); // group
    g.u8(18); // MsgRequestPreVoteResponse
    g.u64(2); // to
    g.u64(3); // from
    g.u64(7); // term
    g.u64(0); // log_term
    g.u64(0); // index
    g.u64(0); // commit
    g.u64(0); // commit_term
    g.u64(0); // request_snapshot
    g.u8(0); // reject: granted
    g.u64(0); // reject_hint
    g.u64(0); // deprecated_priority
    g.i64(0); // priority
    g.bytes(b""); // context
    g.u32(0); // no entries
    g.u8(0); // no snapshot
    Case {
        group: GroupId(u64::MAX),
        msg: m,
        pair: g.0,
    }
}

pub fn transfer_leader() -> Case {
    // Broker 2 asking the leader to hand leadership over to it.
    let m = msg(MessageType::MsgTransferLeader, 1, 2, 6);
    let mut g = Golden::default();
    g.u64(7); // group
    g.u8(13); // MsgTransferLeader
    g.u64(1); // to
    g.u64(2); // from: the transferee
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
    g.u8(0); // no snapshot
    Case {
        group: GroupId(7),
        msg: m,
        pair: g.0,
    }
}

pub fn timeout_now() -> Case {
    let m = msg(MessageType::MsgTimeoutNow, 2, 1, 6);
    let mut g = Golden::default();
    g.u64(7); // group
    g.u8(14); // MsgTimeoutNow
    g.u64(2); // to
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
    g.u8(0); // no snapshot
    Case {
        group: GroupId(7),
        msg: m,
        pair: g.0,
    }
}
