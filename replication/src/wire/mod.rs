//! rill's own encoding of Raft messages between brokers, free of I/O.
//!
//! One peer frame carries a sequence of `(GroupId, Message)` pairs from one
//! broker to another. This module encodes and decodes the frame's *payload*;
//! the length prefix around it belongs to the transport. Protobuf is never
//! parsed from the network: raft-rs's `eraftpb` structs are only the
//! in-memory form, and every field is written here in an explicit layout, so
//! what a peer may send is exactly what this page documents.
//!
//! # Byte layout (version 2)
//!
//! All integers are **little-endian**. A *flag* is a `u8` that is 0 (false,
//! absent) or 1 (true, present); any other value is refused. A *byte string*
//! is a `u32` length then that many bytes. An *id list* is a `u32` count then
//! that many `u64`s. Enums are a `u8` holding the value's number in
//! `eraftpb.proto`; numbers that proto does not define are refused.
//!
//! The frame starts with a [`FRAME_HEADER_BYTES`] = 13 byte header:
//!
//! | offset | size | field     | meaning |
//! |-------:|-----:|-----------|---------|
//! |      0 |    1 | `version` | `u8`: [`PEER_FRAME_VERSION`]; any other is refused |
//! |      1 |    8 | `from`    | `u64`: the sending broker's [`BrokerId`] |
//! |      9 |    4 | `count`   | `u32`: number of pairs that follow |
//! |     13 |    … | pairs     | `count` pairs back to back, then nothing |
//!
//! A pair is either a heartbeat in short form or a message in full.
//!
//! **Heartbeats** are coalesced: every group's heartbeats between two brokers
//! travel together in the frames of one tick, each in [`HEARTBEAT_PAIR_BYTES`]
//! = 33 bytes instead of a full message's 107. A `MsgHeartbeat` or
//! `MsgHeartbeatResponse` takes the short form exactly when it carries
//! nothing but `to`, `term` and `commit`: `from` is the frame's sender, no
//! context (a read-index heartbeat has one), no entries, no snapshot, every
//! other field zero. raft-rs builds all its heartbeats that way.
//!
//! | offset | size | field      | meaning |
//! |-------:|-----:|------------|---------|
//! |      0 |    8 | `group`    | `u64`: the [`GroupId`] |
//! |      8 |    1 | `kind`     | `u8`: [`SHORT_FORM`] + the message type: 136 `MsgHeartbeat`, 137 `MsgHeartbeatResponse` |
//! |      9 |    8 | `to`       | `u64` |
//! |     17 |    8 | `term`     | `u64` |
//! |     25 |    8 | `commit`   | `u64` |
//!
//! A heartbeat that could take the short form but comes in full is refused
//! ([`WireError::NotShortest`]), so each message has one encoding.
//!
//! **A message in full** is at least [`MIN_PAIR_BYTES`] = 107 bytes, offsets
//! from its start (the names after `group` are [`Message`]'s fields):
//!
//! | offset | size | field                 | meaning |
//! |-------:|-----:|-----------------------|---------|
//! |      0 |    8 | `group`               | `u64`: the [`GroupId`] the message belongs to |
//! |      8 |    1 | `msg_type`            | `u8`: [`MessageType`], 0 `MsgHup` … 18 `MsgRequestPreVoteResponse` |
//! |      9 |    8 | `to`                  | `u64` |
//! |     17 |    8 | `from`                | `u64` |
//! |     25 |    8 | `term`                | `u64` |
//! |     33 |    8 | `log_term`            | `u64` |
//! |     41 |    8 | `index`               | `u64` |
//! |     49 |    8 | `commit`              | `u64` |
//! |     57 |    8 | `commit_term`         | `u64` |
//! |     65 |    8 | `request_snapshot`    | `u64` |
//! |     73 |    1 | `reject`              | flag |
//! |     74 |    8 | `reject_hint`         | `u64` |
//! |     82 |    8 | `deprecated_priority` | `u64` |
//! |     90 |    8 | `priority`            | `i64` |
//! |     98 |  4+n | `context`             | byte string |
//! |  102+n |    4 | entry count           | `u32`: number of entries that follow |
//! |      … |    … | `entries`             | that many entries, below |
//! |      … |    1 | snapshot present      | flag |
//! |      … |    … | `snapshot`            | below, only when present |
//!
//! An [`Entry`], at least [`MIN_ENTRY_BYTES`] = 26 bytes:
//!
//! | offset | size | field        | meaning |
//! |-------:|-----:|--------------|---------|
//! |      0 |    1 | `entry_type` | `u8`: [`EntryType`](raft::eraftpb::EntryType), 0 `EntryNormal`, 1 `EntryConfChange`, 2 `EntryConfChangeV2` |
//! |      1 |    8 | `term`       | `u64` |
//! |      9 |    8 | `index`      | `u64` |
//! |     17 |    1 | `sync_log`   | flag |
//! |     18 |  4+n | `data`       | byte string |
//! |   22+n |  4+m | `context`    | byte string |
//!
//! A [`Snapshot`] (its metadata and the metadata's conf state are each
//! preceded by a presence flag, so a message decodes to exactly what was
//! sent, set-but-empty included):
//!
//! |   size | field                        | meaning |
//! |-------:|------------------------------|---------|
//! |    4+n | `data`                       | byte string |
//! |      1 | metadata present             | flag; the rows below only when 1 |
//! |      8 | `metadata.index`             | `u64` |
//! |      8 | `metadata.term`              | `u64` |
//! |      1 | conf state present           | flag; the rows below only when 1 |
//! |   4+8k | `conf_state.voters`          | id list |
//! |   4+8k | `conf_state.learners`        | id list |
//! |   4+8k | `conf_state.voters_outgoing` | id list |
//! |   4+8k | `conf_state.learners_next`   | id list |
//! |      1 | `conf_state.auto_leave`      | flag |
//!
//! Every byte has one meaning, so a frame that decodes re-encodes to the same
//! bytes. Protobuf's unknown fields are not carried: raft-rs never fills them
//! in the messages it builds.
//!
//! # Invariants
//!
//! - [`decode_frame`] never panics and never reads past the payload: every
//!   malformed input is a typed [`WireError`].
//! - [`WireLimits`] are checked before anything is allocated for what they
//!   limit, and every count is checked against the bytes that remain (each
//!   item needs at least its minimum encoded size), so a frame announcing
//!   `u32::MAX` messages fails at once: allocation stays in proportion to the
//!   payload actually received.
//! - Byte strings (entry data and context, snapshot data, message context)
//!   decode as zero-copy slices of the payload.
//! - [`encoded_len`] is exactly what a pair adds to a frame, so a sender can
//!   cap frames by size before encoding them.
//! - Each message has exactly one encoding (a heartbeat that fits the short
//!   form must use it).
//!
//! # Where things live
//!
//! This module holds the layout's constants, the limits, the errors, the
//! pieces a sender writes ([`Part`]) and [`encoded_len`]; `encode` writes
//! frames ([`encode_frame`], [`encode_frame_parts`]); `decode` reads them
//! ([`decode_frame`]) through a reader that never reads past the payload;
//! `codes` maps message and entry types to their wire numbers and back.

mod codes;
mod decode;
mod encode;

pub use decode::decode_frame;
pub use encode::{encode_frame, encode_frame_parts};

use bytes::Bytes;
use raft::eraftpb::{Entry, Message, MessageType, Snapshot};
use rill_storage::FileSpan;

use crate::ids::{BrokerId, GroupId};

/// The version byte this build writes and the only one it reads. Version 2
/// added heartbeats in short form; every broker of a cluster runs one build.
pub const PEER_FRAME_VERSION: u8 = 2;

/// Bytes of the frame header: version, sender, pair count.
pub const FRAME_HEADER_BYTES: usize = 1 + 8 + 4;

/// Bytes of a pair before its variable parts: the group, 11 `u64`/`i64`
/// fields and two `u8`s (message type, `reject`).
const PAIR_FIXED_BYTES: usize = 8 + 1 + 11 * 8 + 1;

/// The smallest message in full: no context, no entries, no snapshot.
pub const MIN_PAIR_BYTES: usize = PAIR_FIXED_BYTES + 4 + 4 + 1;

/// Added to a message type's number in a pair's type byte: the pair is a
/// heartbeat in short form.
pub const SHORT_FORM: u8 = 0x80;

/// A heartbeat in short form: group, kind, `to`, `term`, `commit`. The
/// smallest pair of all.
pub const HEARTBEAT_PAIR_BYTES: usize = 8 + 1 + 8 + 8 + 8;

/// Bytes of an entry before its variable parts: type, term, index, `sync_log`.
const ENTRY_FIXED_BYTES: usize = 1 + 8 + 8 + 1;

/// The smallest encoded entry: empty data and context.
pub const MIN_ENTRY_BYTES: usize = ENTRY_FIXED_BYTES + 4 + 4;

/// The smallest encoded snapshot: empty data, no metadata.
const MIN_SNAPSHOT_BYTES: usize = 4 + 1;

/// Bytes of snapshot metadata besides its conf state: index, term, presence.
const METADATA_FIXED_BYTES: usize = 8 + 8 + 1;

/// Bytes of a conf state besides its ids: four counts and `auto_leave`.
const CONF_STATE_FIXED_BYTES: usize = 4 * 4 + 1;

/// Limits a decoder enforces before allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WireLimits {
    /// Largest payload accepted, bytes.
    pub frame_bytes_max: usize,
    /// Most pairs in one frame.
    pub messages_max: usize,
    /// Most entries in one message.
    pub entries_max: usize,
}

impl Default for WireLimits {
    /// A 64 MiB frame, 65 536 pairs a frame and 65 536 entries a message:
    /// room for appends to many groups at once, while what one frame can
    /// make a receiver allocate stays a small multiple of 64 MiB.
    fn default() -> Self {
        WireLimits {
            frame_bytes_max: 64 << 20,
            messages_max: 65_536,
            entries_max: 65_536,
        }
    }
}

/// A decoded peer frame.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerFrame {
    /// The broker that sent it.
    pub from: BrokerId,
    /// Its messages, each with the group it is for, in the order sent.
    pub messages: Vec<(GroupId, Message)>,
}

/// Why a peer frame payload was refused. The connection it came from cannot
/// be trusted to be in step any more.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The payload ends before `what` is complete, or a count or length
    /// announces more than the bytes that remain.
    #[error("peer frame truncated in {what}")]
    Truncated {
        /// The field being read.
        what: &'static str,
    },
    /// A size or count is over its [`WireLimits`].
    #[error("peer frame {what} of {len} exceeds the maximum of {max}")]
    TooLarge {
        /// What was counted: `frame` (bytes), `messages` or `entries`.
        what: &'static str,
        /// The size or count announced.
        len: usize,
        /// The limit in force.
        max: usize,
    },
    /// The version byte is not [`PEER_FRAME_VERSION`].
    #[error("unknown peer frame version {0}")]
    UnknownVersion(u8),
    /// A message type number `eraftpb.proto` does not define.
    #[error("unknown raft message type {0}")]
    UnknownMessageType(u8),
    /// An entry type number `eraftpb.proto` does not define.
    #[error("unknown raft entry type {0}")]
    UnknownEntryType(u8),
    /// A flag (a bool or a presence byte) that is neither 0 nor 1.
    #[error("peer frame {what} is {value}, not 0 or 1")]
    InvalidBool {
        /// The field being read.
        what: &'static str,
        /// The byte found.
        value: u8,
    },
    /// A heartbeat that could have been sent in short form came in full.
    #[error("a heartbeat sent in full that has a short form")]
    NotShortest,
    /// Bytes are left after the last pair.
    #[error("{n} bytes after the end of the peer frame")]
    TrailingBytes {
        /// How many.
        n: usize,
    },
}

/// Entry data at least this long is not copied by [`encode_frame_parts`]:
/// it becomes a part of the frame of its own.
pub const ZERO_COPY_BYTES_MIN: usize = 4096;

// Entry data encoded inline is copied by this process: the log must hand
// out every such entry as an owned copy, never as bytes of a mapping a
// file cut short could fault under (see `rill_storage::ENTRY_COPY_BELOW_BYTES`).
const _: () = assert!(ZERO_COPY_BYTES_MIN as u64 <= rill_storage::ENTRY_COPY_BELOW_BYTES);

/// A piece of an encoded frame, as a sender writes it: bytes, or an
/// entry's data to be sent from where it lies in a segment file.
#[derive(Debug, Clone)]
pub enum Part {
    /// Bytes to write as they are.
    Bytes(Bytes),
    /// Entry data the sender reads from its segment file (the same bytes,
    /// up to the batch header fields stamped outside the CRC, which a
    /// follower stamps again).
    File(FileSpan),
}

impl Part {
    /// Its length, bytes.
    pub fn len(&self) -> usize {
        match self {
            Part::Bytes(b) => b.len(),
            Part::File(f) => f.len as usize,
        }
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Where each entry of a message lies in the sender's segment files, in
/// entry order (`None`, or a shorter list, for an entry sent from memory).
pub type EntrySpans = Vec<Option<FileSpan>>;

/// Whether `msg`, sent by `from`, is a heartbeat that takes the short form:
/// nothing in it but `to`, `term` and `commit`.
fn is_short_heartbeat(from: BrokerId, m: &Message) -> bool {
    matches!(
        m.get_msg_type(),
        MessageType::MsgHeartbeat | MessageType::MsgHeartbeatResponse
    ) && m.from == from.get()
        && m.log_term == 0
        && m.index == 0
        && m.commit_term == 0
        && m.request_snapshot == 0
        && !m.reject
        && m.reject_hint == 0
        && m.deprecated_priority == 0
        && m.priority == 0
        && m.context.is_empty()
        && m.get_entries().is_empty()
        && !m.has_snapshot()
}

/// The exact number of bytes `(group, msg)` adds to a frame sent by `from`.
pub fn encoded_len(from: BrokerId, group: GroupId, msg: &Message) -> usize {
    let _ = group; // every group id takes the same 8 bytes
    if is_short_heartbeat(from, msg) {
        return HEARTBEAT_PAIR_BYTES;
    }
    let entries: usize = msg.get_entries().iter().map(entry_len).sum();
    let snapshot = if msg.has_snapshot() {
        snapshot_len(msg.get_snapshot())
    } else {
        0
    };
    MIN_PAIR_BYTES + msg.context.len() + entries + snapshot
}

fn entry_len(e: &Entry) -> usize {
    MIN_ENTRY_BYTES + e.data.len() + e.context.len()
}

fn snapshot_len(s: &Snapshot) -> usize {
    let mut len = MIN_SNAPSHOT_BYTES + s.data.len();
    if s.has_metadata() {
        let meta = s.get_metadata();
        len += METADATA_FIXED_BYTES;
        if meta.has_conf_state() {
            let cs = meta.get_conf_state();
            let ids = cs.voters.len()
                + cs.learners.len()
                + cs.voters_outgoing.len()
                + cs.learners_next.len();
            len += CONF_STATE_FIXED_BYTES + 8 * ids;
        }
    }
    len
}
