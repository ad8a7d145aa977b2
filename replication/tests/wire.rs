//! The peer codec: golden bytes for every Raft message type, round trips of
//! arbitrary frames, typed refusals of malformed frames, and a decoder that
//! never panics nor allocates for counts the payload cannot back.
#![allow(clippy::unwrap_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use raft::eraftpb::{
    ConfState, Entry, EntryType, Message, MessageType, Snapshot, SnapshotMetadata,
};
use rill_replication::wire::*;
use rill_replication::{BrokerId, GroupId};

// ---------------------------------------------------------------------------
// Allocation tracking: proves a hostile count is refused before allocating.

thread_local! {
    static LARGEST_ALLOCATION: Cell<usize> = const { Cell::new(0) };
}

struct TrackingAllocator;

// SAFETY: every call is forwarded unchanged to `System`; the only addition is
// bookkeeping in a const-initialised thread-local `Cell`, which neither
// allocates nor unwinds, so `System`'s guarantees carry over.
unsafe impl GlobalAlloc for TrackingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation(layout.size());
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation(layout.size());
        // SAFETY: the caller upholds `GlobalAlloc::alloc_zeroed`'s contract.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation(new_size);
        // SAFETY: the caller upholds `GlobalAlloc::realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller upholds `GlobalAlloc::dealloc`'s contract.
        unsafe { System.dealloc(ptr, layout) }
    }
}

fn note_allocation(size: usize) {
    // `try_with`: the slot may be gone while a thread shuts down.
    let _ = LARGEST_ALLOCATION.try_with(|l| l.set(l.get().max(size)));
}

#[global_allocator]
static ALLOCATOR: TrackingAllocator = TrackingAllocator;

/// Runs `f`, returning its result and the largest single allocation this
/// thread made meanwhile (per thread, so parallel tests do not interfere).
fn largest_allocation_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST_ALLOCATION.with(|l| l.set(0));
    let out = f();
    (out, LARGEST_ALLOCATION.with(Cell::get))
}

#[test]
fn the_allocation_tracker_sees_allocations() {
    let (v, largest) = largest_allocation_during(|| Vec::<u8>::with_capacity(10_000));
    assert!(v.capacity() >= 10_000);
    assert!(largest >= 10_000, "saw {largest} bytes");
}

// ---------------------------------------------------------------------------
// Building messages and expected bytes.

/// The sender of every golden frame.
const SENDER: BrokerId = BrokerId(1);

const ALL_MESSAGE_TYPES: [MessageType; 19] = [
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

const ALL_ENTRY_TYPES: [EntryType; 3] = [
    EntryType::EntryNormal,
    EntryType::EntryConfChange,
    EntryType::EntryConfChangeV2,
];

fn msg(msg_type: MessageType, to: u64, from: u64, term: u64) -> Message {
    let mut m = Message::default();
    m.set_msg_type(msg_type);
    m.to = to;
    m.from = from;
    m.term = term;
    m
}

fn entry(entry_type: EntryType, term: u64, index: u64, data: &'static [u8]) -> Entry {
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
struct Golden(Vec<u8>);

impl Golden {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        self.u32(b.len() as u32);
        self.0.extend_from_slice(b);
    }
    fn ids(&mut self, ids: &[u64]) {
        self.u32(ids.len() as u32);
        ids.iter().for_each(|id| self.u64(*id));
    }
}

/// A frame from [`SENDER`] holding `pairs`, each already encoded.
fn frame_of(pairs: &[&[u8]]) -> Vec<u8> {
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
struct Case {
    group: GroupId,
    msg: Message,
    pair: Vec<u8>,
}

fn encode(from: BrokerId, messages: &[(GroupId, Message)]) -> Bytes {
    let mut out = BytesMut::new();
    encode_frame(from, messages, &mut out);
    out.freeze()
}

fn check(case: Case) {
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

// ---------------------------------------------------------------------------
// One golden case per message type, with the fields raft-rs sets for it.

fn hup() -> Case {
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

fn beat() -> Case {
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

fn propose() -> Case {
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

fn append() -> Case {
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

fn append_response() -> Case {
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

fn request_vote() -> Case {
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

fn request_vote_response() -> Case {
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

fn snapshot() -> Case {
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

fn heartbeat() -> Case {
    // Carrying a read-index request's context: too much for the short form.
    heartbeat_in_full(b"read-17")
}

/// A heartbeat from [`SENDER`] in full, with `context`.
fn heartbeat_in_full(context: &'static [u8]) -> Case {
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

fn heartbeat_response() -> Case {
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

fn unreachable() -> Case {
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

fn snap_status() -> Case {
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

fn check_quorum() -> Case {
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

fn transfer_leader() -> Case {
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

fn timeout_now() -> Case {
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

fn read_index() -> Case {
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

fn read_index_resp() -> Case {
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

fn request_pre_vote() -> Case {
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

fn request_pre_vote_response() -> Case {
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

const CASES: [fn() -> Case; 19] = [
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

/// Every golden pair in one frame: many pairs, every field, every type.
fn all_cases_frame() -> (Vec<(GroupId, Message)>, Vec<u8>) {
    let cases: Vec<Case> = CASES.iter().map(|c| c()).collect();
    let pairs: Vec<&[u8]> = cases.iter().map(|c| &c.pair[..]).collect();
    let bytes = frame_of(&pairs);
    let messages = cases.into_iter().map(|c| (c.group, c.msg)).collect();
    (messages, bytes)
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

// ---------------------------------------------------------------------------
// Refusals.

fn decode(bytes: &[u8]) -> Result<PeerFrame, WireError> {
    decode_frame(Bytes::copy_from_slice(bytes), &WireLimits::default())
}

/// A frame of one golden case, and the pair's offset in it.
fn one(case: Case) -> Vec<u8> {
    frame_of(&[&case.pair])
}

const PAIR: usize = FRAME_HEADER_BYTES;

#[test]
fn a_frame_cut_short_anywhere_is_truncated() {
    let (_, full) = all_cases_frame();
    let payload = Bytes::from(full);
    for len in 0..payload.len() {
        match decode_frame(payload.slice(..len), &WireLimits::default()) {
            Err(WireError::Truncated { .. }) => {}
            other => panic!("cut at {len} of {}: {other:?}", payload.len()),
        }
    }
}

#[test]
fn u32_max_messages_are_refused_without_allocating() {
    let mut g = Golden::default();
    g.u8(PEER_FRAME_VERSION);
    g.u64(1);
    g.u32(u32::MAX);
    let payload = Bytes::from(g.0);
    let (result, largest) =
        largest_allocation_during(|| decode_frame(payload.clone(), &WireLimits::default()));
    assert_eq!(
        result,
        Err(WireError::TooLarge {
            what: "messages",
            len: u32::MAX as usize,
            max: 65_536
        })
    );
    assert!(largest < 1024, "allocated {largest} bytes");

    let unlimited = WireLimits {
        messages_max: usize::MAX,
        ..WireLimits::default()
    };
    let (result, largest) = largest_allocation_during(|| decode_frame(payload.clone(), &unlimited));
    assert_eq!(result, Err(WireError::Truncated { what: "messages" }));
    assert!(largest < 1024, "allocated {largest} bytes");
}

#[test]
fn a_message_count_more_than_the_bytes_could_hold_is_truncated() {
    let mut bytes = one(heartbeat());
    // More pairs announced than even the shortest pairs would fit in.
    let pairs = bytes.len() - FRAME_HEADER_BYTES;
    bytes[9] = (pairs / HEARTBEAT_PAIR_BYTES + 1) as u8;
    assert_eq!(
        decode(&bytes),
        Err(WireError::Truncated { what: "messages" })
    );
}

#[test]
fn u32_max_entries_are_refused_without_allocating() {
    let mut bytes = one(hup());
    let at = PAIR + 102; // entry count, after an empty context
    bytes[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    let (result, largest) = largest_allocation_during(|| decode(&bytes));
    assert_eq!(
        result,
        Err(WireError::TooLarge {
            what: "entries",
            len: u32::MAX as usize,
            max: 65_536
        })
    );
    assert!(largest < 1024, "allocated {largest} bytes");

    let unlimited = WireLimits {
        entries_max: usize::MAX,
        ..WireLimits::default()
    };
    let payload = Bytes::from(bytes);
    let (result, largest) = largest_allocation_during(|| decode_frame(payload, &unlimited));
    assert_eq!(result, Err(WireError::Truncated { what: "entries" }));
    // The one message's Vec is allowed; a vector of 4 billion entries is not.
    assert!(largest < 4096, "allocated {largest} bytes");
}

#[test]
fn a_byte_string_longer_than_the_rest_is_truncated() {
    let mut bytes = one(hup());
    let at = PAIR + 98; // message context length
    bytes[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(
        decode(&bytes),
        Err(WireError::Truncated {
            what: "message context"
        })
    );

    let mut bytes = one(propose());
    let at = PAIR + MIN_PAIR_BYTES - 1 + 18; // entry data length
    assert_eq!(bytes[at], 12, "the data length of \"record batch\"");
    bytes[at] = 200;
    assert_eq!(
        decode(&bytes),
        Err(WireError::Truncated { what: "entry data" })
    );
}

#[test]
fn u32_max_voters_are_refused_without_allocating() {
    let mut bytes = one(snapshot());
    // Snapshot: data "state at 200" (4 + 12), metadata flag, index, term,
    // conf state flag, then the voters count.
    let at = PAIR + MIN_PAIR_BYTES + 4 + 12 + 1 + 8 + 8 + 1;
    assert_eq!(bytes[at], 3, "three voters");
    bytes[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    let (result, largest) = largest_allocation_during(|| decode(&bytes));
    assert_eq!(result, Err(WireError::Truncated { what: "voters" }));
    assert!(largest < 4096, "allocated {largest} bytes");
}

#[test]
fn frames_over_the_limits_are_too_large() {
    let (_, bytes) = all_cases_frame();
    let len = bytes.len();
    let payload = Bytes::from(bytes);
    let tight = WireLimits {
        frame_bytes_max: len - 1,
        ..WireLimits::default()
    };
    assert_eq!(
        decode_frame(payload.clone(), &tight),
        Err(WireError::TooLarge {
            what: "frame",
            len,
            max: len - 1
        })
    );
    let exact = WireLimits {
        frame_bytes_max: len,
        messages_max: 19,
        entries_max: 2,
    };
    assert!(decode_frame(payload.clone(), &exact).is_ok());
    let few_messages = WireLimits {
        messages_max: 18,
        ..WireLimits::default()
    };
    assert_eq!(
        decode_frame(payload.clone(), &few_messages),
        Err(WireError::TooLarge {
            what: "messages",
            len: 19,
            max: 18
        })
    );
    let few_entries = WireLimits {
        entries_max: 1,
        ..WireLimits::default()
    };
    assert_eq!(
        decode_frame(payload, &few_entries),
        Err(WireError::TooLarge {
            what: "entries",
            len: 2,
            max: 1
        })
    );
}

#[test]
fn unknown_versions_are_refused() {
    for version in [0, 1, 3, 255] {
        let mut bytes = one(hup());
        bytes[0] = version;
        assert_eq!(decode(&bytes), Err(WireError::UnknownVersion(version)));
    }
}

#[test]
fn unknown_message_types_are_refused() {
    for code in [19, 100, 255] {
        let mut bytes = one(hup());
        bytes[PAIR + 8] = code;
        assert_eq!(decode(&bytes), Err(WireError::UnknownMessageType(code)));
    }
}

#[test]
fn unknown_entry_types_are_refused() {
    for code in [3, 255] {
        let mut bytes = one(propose());
        let at = PAIR + MIN_PAIR_BYTES - 1; // the entry, where the snapshot flag would be
        assert_eq!(bytes[at], 0, "EntryNormal");
        bytes[at] = code;
        assert_eq!(decode(&bytes), Err(WireError::UnknownEntryType(code)));
    }
}

/// A golden case, the offset of one of its flags, and the flag's name.
type FlagCase = (fn() -> Case, usize, &'static str);

#[test]
fn flags_other_than_0_or_1_are_refused() {
    let entry_at = PAIR + MIN_PAIR_BYTES - 1;
    let snapshot_at = PAIR + MIN_PAIR_BYTES - 1; // no entries: the flag is last
    let metadata_at = PAIR + MIN_PAIR_BYTES + 4 + 12;
    let cases: [FlagCase; 6] = [
        (hup, PAIR + 73, "reject"),
        (propose, entry_at + 17, "sync_log"),
        (hup, snapshot_at, "snapshot present"),
        (snapshot, metadata_at, "snapshot metadata present"),
        (snapshot, metadata_at + 17, "conf state present"),
        (snapshot, usize::MAX, "auto_leave"),
    ];
    for (case, at, what) in cases {
        let mut bytes = one(case());
        let at = if at == usize::MAX {
            bytes.len() - 1
        } else {
            at
        };
        assert!(bytes[at] <= 1, "{what} is a flag");
        for value in [2, 255] {
            bytes[at] = value;
            assert_eq!(
                decode(&bytes),
                Err(WireError::InvalidBool { what, value }),
                "{what}"
            );
        }
    }
}

#[test]
fn trailing_bytes_are_refused() {
    for n in [1, 3, 200] {
        let mut bytes = one(heartbeat());
        bytes.extend(std::iter::repeat_n(0, n));
        assert_eq!(decode(&bytes), Err(WireError::TrailingBytes { n }));
    }
    let mut empty = encode(SENDER, &[]).to_vec();
    empty.push(0);
    assert_eq!(decode(&empty), Err(WireError::TrailingBytes { n: 1 }));
}

#[test]
fn errors_say_what_was_wrong() {
    assert_eq!(
        WireError::TooLarge {
            what: "entries",
            len: 9,
            max: 8
        }
        .to_string(),
        "peer frame entries of 9 exceeds the maximum of 8"
    );
    assert_eq!(
        WireError::InvalidBool {
            what: "reject",
            value: 2
        }
        .to_string(),
        "peer frame reject is 2, not 0 or 1"
    );
}

// ---------------------------------------------------------------------------
// Properties.

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

/// Appends whose entries are sometimes large enough to be sent uncopied.
fn arb_appends() -> impl Strategy<Value = Vec<(GroupId, Message)>> {
    let data = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..24),
        prop::collection::vec(
            any::<u8>(),
            ZERO_COPY_BYTES_MIN - 2..ZERO_COPY_BYTES_MIN + 100
        ),
    ]
    .prop_map(Bytes::from);
    let entries = prop::collection::vec((any::<u64>(), data), 0..4);
    prop::collection::vec((any::<u64>(), entries), 0..4).prop_map(|pairs| {
        pairs
            .into_iter()
            .map(|(group, entries)| {
                let mut m = msg(MessageType::MsgAppend, 2, 1, 6);
                let entries: Vec<Entry> = entries
                    .into_iter()
                    .map(|(index, data)| {
                        let mut e = entry(EntryType::EntryNormal, 6, index, &[]);
                        e.data = data;
                        e
                    })
                    .collect();
                m.set_entries(entries.into());
                (GroupId(group), m)
            })
            .collect()
    })
}

proptest! {
    #[test]
    fn a_frame_in_parts_is_the_frame_with_large_entry_data_shared(messages in arb_appends()) {
        let whole = encode(SENDER, &messages);
        let mut out = BytesMut::from(&b"len!"[..]);
        let mut parts = Vec::new();
        encode_frame_parts(SENDER, &messages, &[], &mut out, &mut parts);
        let parts: Vec<Bytes> = parts
            .into_iter()
            .map(|p| match p {
                Part::Bytes(b) => b,
                Part::File(_) => panic!("no file spans were given"),
            })
            .collect();
        let mut joined: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
        joined.extend_from_slice(&out);
        prop_assert_eq!(&joined[..4], b"len!");
        prop_assert_eq!(&joined[4..], &whole[..]);
        for e in messages.iter().flat_map(|(_, m)| m.get_entries()) {
            let shared = parts.iter().any(|p| p.as_ptr() == e.data.as_ptr() && p.len() == e.data.len());
            prop_assert_eq!(shared, e.data.len() >= ZERO_COPY_BYTES_MIN);
        }
    }
}

proptest! {
    #[test]
    fn a_frame_in_parts_sends_entries_from_the_file_spans_given_for_them(
        messages in arb_appends(),
        pick in any::<u64>(),
    ) {
        use std::io::Write;
        use std::os::unix::fs::FileExt;
        use std::sync::Arc;
        // Every large entry's data in one file; some of them given a span
        // (chosen by `pick`'s bits), one of those of the wrong length.
        let mut file = tempfile::tempfile().unwrap();
        let mut at = 0u64;
        let mut bit = 0;
        let mut spans: Vec<EntrySpans> = Vec::new();
        let mut expect_files = 0;
        for (_, m) in &messages {
            let mut per = Vec::new();
            for e in m.get_entries() {
                file.write_all(&e.data).unwrap();
                let chosen = pick >> (bit % 64) & 1 == 1;
                bit += 1;
                let len = e.data.len() as u64;
                let wrong = chosen && bit % 7 == 0;
                let large = e.data.len() >= ZERO_COPY_BYTES_MIN;
                if chosen && large && !wrong {
                    expect_files += 1;
                }
                per.push(chosen.then(|| rill_storage::FileSpan {
                    file: Arc::new(file.try_clone().unwrap()),
                    offset: at,
                    len: if wrong { len + 1 } else { len },
                }));
                at += len;
            }
            spans.push(per);
        }
        let whole = encode(SENDER, &messages);
        let mut out = BytesMut::new();
        let mut parts = Vec::new();
        encode_frame_parts(SENDER, &messages, &spans, &mut out, &mut parts);
        let mut joined = Vec::new();
        let mut files = 0;
        for p in &parts {
            match p {
                Part::Bytes(b) => joined.extend_from_slice(b),
                Part::File(f) => {
                    files += 1;
                    let mut buf = vec![0; f.len as usize];
                    f.file.read_exact_at(&mut buf, f.offset).unwrap();
                    joined.extend_from_slice(&buf);
                }
            }
        }
        joined.extend_from_slice(&out);
        prop_assert_eq!(&joined[..], &whole[..]);
        prop_assert_eq!(files, expect_files);
    }
}
