//! What the peer codec tests share: messages and the bytes they must
//! encode to, written field by field from the layout tables of
//! `rill_replication::wire` independently of the encoder; one golden case
//! per Raft message type (`election`, `appends`, `liveness`); and the
//! tracking allocator every wire test binary runs under (`allocations`).
#![allow(dead_code, clippy::unwrap_used)]

mod allocations;
mod appends;
mod election;
mod liveness;

#[allow(unused_imports)] // used by the binaries that measure allocations
pub use allocations::largest_allocation_during;
pub use appends::*;
pub use election::*;
pub use liveness::*;

use bytes::{Bytes, BytesMut};
use raft::eraftpb::{Entry, EntryType, Message, MessageType};
use rill_replication::wire::*;
use rill_replication::{BrokerId, GroupId};

/// The sender of every golden frame.
pub const SENDER: BrokerId = BrokerId(1);

pub const ALL_MESSAGE_TYPES: [MessageType; 19] = [
    MessageType::MsgHup,
    MessageType::MsgBeat,
    MessageType::MsgPropose,
    MessageType::MsgAppend,
    MessageType::MsgAppendResponse,
    MessageType::MsgRequestVote,
    MessageType::MsgRequestVoteResponse,
    MessageType::MsgSnapshot,
    MessageType::MsgHeartbeat,
    MessageType::MsgHeartbeatResponse,
    MessageType::MsgUnreachable,
    MessageType::MsgSnapStatus,
    MessageType::MsgCheckQuorum,
    MessageType::MsgTransferLeader,
    MessageType::MsgTimeoutNow,
    MessageType::MsgReadIndex,
    MessageType::MsgReadIndexResp,
    MessageType::MsgRequestPreVote,
    MessageType::MsgRequestPreVoteResponse,
];

pub const ALL_ENTRY_TYPES: [EntryType; 3] = [
    EntryType::EntryNormal,
    EntryType::EntryConfChange,
    EntryType::EntryConfChangeV2,
];

pub fn msg(msg_type: MessageType, to: u64, from: u64, term: u64) -> Message {
    let mut m = Message::default();
    m.set_msg_type(msg_type);
    m.to = to;
    m.from = from;
    m.term = term;
    m
}

pub fn entry(entry_type: EntryType, term: u64, index: u64, data: &'static [u8]) -> Entry {
    let mut e = Entry::default();
    e.set_entry_type(entry_type);
    e.term = term;
    e.index = index;
    e.data = Bytes::from_static(data);
    e
}

/// Expected bytes, appended field by field from the layout tables in the
/// module documentation, independently of the encoder.
#[derive(Default)]
pub struct Golden(pub Vec<u8>);

impl Golden {
    pub fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    pub fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn bytes(&mut self, b: &[u8]) {
        self.u32(b.len() as u32);
        self.0.extend_from_slice(b);
    }
    pub fn ids(&mut self, ids: &[u64]) {
        self.u32(ids.len() as u32);
        ids.iter().for_each(|id| self.u64(*id));
    }
}

/// A frame from [`SENDER`] holding `pairs`, each already encoded.
pub fn frame_of(pairs: &[&[u8]]) -> Vec<u8> {
    let mut g = Golden::default();
    g.u8(2); // version
    g.u64(SENDER.0); // from
    g.u32(pairs.len() as u32); // pair count
    for p in pairs {
        g.0.extend_from_slice(p);
    }
    g.0
}

/// One golden pair: the message and the bytes it must encode to.
pub struct Case {
    /// The group the message is for.
    pub group: GroupId,
    /// The message.
    pub msg: Message,
    /// Its bytes in a frame.
    pub pair: Vec<u8>,
}

pub fn encode(from: BrokerId, messages: &[(GroupId, Message)]) -> Bytes {
    let mut out = BytesMut::new();
    encode_frame(from, messages, &mut out);
    out.freeze()
}

pub fn check(case: Case) {
    let expected = frame_of(&[&case.pair]);
    let messages = vec![(case.group, case.msg)];
    assert_eq!(
        encode(SENDER, &messages)[..],
        expected[..],
        "{:?} encodes to the documented bytes",
        messages[0].1.get_msg_type()
    );
    assert_eq!(
        encoded_len(SENDER, case.group, &messages[0].1),
        case.pair.len()
    );
    let decoded = decode_frame(Bytes::from(expected), &WireLimits::default()).unwrap();
    assert_eq!(
        decoded,
        PeerFrame {
            from: SENDER,
            messages
        }
    );
}

pub const CASES: [fn() -> Case; 19] = [
    hup,
    beat,
    propose,
    append,
    append_response,
    request_vote,
    request_vote_response,
    snapshot,
    heartbeat,
    heartbeat_response,
    unreachable,
    snap_status,
    check_quorum,
    transfer_leader,
    timeout_now,
    read_index,
    read_index_resp,
    request_pre_vote,
    request_pre_vote_response,
];

/// Every golden pair in one frame: many pairs, every field, every type.
pub fn all_cases_frame() -> (Vec<(GroupId, Message)>, Vec<u8>) {
    let cases: Vec<Case> = CASES.iter().map(|c| c()).collect();
    let pairs: Vec<&[u8]> = cases.iter().map(|c| &c.pair[..]).collect();
    let bytes = frame_of(&pairs);
    let messages = cases.into_iter().map(|c| (c.group, c.msg)).collect();
    (messages, bytes)
}

pub fn decode(bytes: &[u8]) -> Result<PeerFrame, WireError> {
    decode_frame(Bytes::copy_from_slice(bytes), &WireLimits::default())
}

/// A frame of one golden case, and the pair's offset in it.
pub fn one(case: Case) -> Vec<u8> {
    frame_of(&[&case.pair])
}

pub const PAIR: usize = FRAME_HEADER_BYTES;
