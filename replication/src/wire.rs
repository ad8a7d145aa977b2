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
//! |      0 |    1 | `entry_type` | `u8`: [`EntryType`], 0 `EntryNormal`, 1 `EntryConfChange`, 2 `EntryConfChangeV2` |
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

use bytes::{BufMut, Bytes, BytesMut};
use raft::eraftpb::{
    ConfState, Entry, EntryType, Message, MessageType, Snapshot, SnapshotMetadata,
};
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

/// Appends a whole frame payload: the header, then every pair in order.
///
/// # Panics
///
/// If `messages` has more than `u32::MAX` pairs, or a count or byte string
/// inside one is longer than `u32::MAX`: the layout cannot express it, and
/// such a frame would be far beyond what any receiver accepts
/// ([`WireLimits::frame_bytes_max`]; check with [`encoded_len`] first).
pub fn encode_frame(from: BrokerId, messages: &[(GroupId, Message)], out: &mut BytesMut) {
    encode(from, messages, out, None);
}

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

/// As [`encode_frame`], without copying entry data of
/// [`ZERO_COPY_BYTES_MIN`] bytes or more: the frame is split into `parts`
/// around each such entry's data, which becomes a part of its own: the
/// file span `spans[i][j]` names for entry `j` of message `i` when there
/// is one of its length, else the entry's shared `Bytes` (not a copy). On
/// return, what `out` held on entry followed by the frame is `parts`, in
/// order, then what `out` holds now.
///
/// # Panics
///
/// As [`encode_frame`].
pub fn encode_frame_parts(
    from: BrokerId,
    messages: &[(GroupId, Message)],
    spans: &[EntrySpans],
    out: &mut BytesMut,
    parts: &mut Vec<Part>,
) {
    encode(from, messages, out, Some((parts, spans)));
}

fn encode(
    from: BrokerId,
    messages: &[(GroupId, Message)],
    out: &mut BytesMut,
    mut parts: Option<(&mut Vec<Part>, &[EntrySpans])>,
) {
    let body: usize = messages.iter().map(|(g, m)| encoded_len(from, *g, m)).sum();
    let shared: usize = match parts {
        Some(_) => messages
            .iter()
            .flat_map(|(_, m)| m.get_entries())
            .map(|e| e.data.len())
            .filter(|&n| n >= ZERO_COPY_BYTES_MIN)
            .sum(),
        None => 0,
    };
    // One reservation: encoding never reallocates halfway through a frame.
    out.reserve(FRAME_HEADER_BYTES + body - shared);
    out.put_u8(PEER_FRAME_VERSION);
    out.put_u64_le(from.get());
    put_count(out, messages.len(), "messages");
    for (i, (group, msg)) in messages.iter().enumerate() {
        if is_short_heartbeat(from, msg) {
            out.put_u64_le(group.get());
            out.put_u8(SHORT_FORM + message_type_code(msg.get_msg_type()));
            out.put_u64_le(msg.to);
            out.put_u64_le(msg.term);
            out.put_u64_le(msg.commit);
        } else {
            let to = parts.as_mut().map(|(parts, spans)| {
                let spans: &[Option<FileSpan>] = spans.get(i).map_or(&[], Vec::as_slice);
                (&mut **parts, spans)
            });
            put_message(out, *group, msg, to);
        }
    }
}

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

fn put_count(out: &mut BytesMut, n: usize, what: &str) {
    let n = u32::try_from(n)
        .unwrap_or_else(|_| panic!("peer frame {what}: {n} does not fit the u32 count"));
    out.put_u32_le(n);
}

fn put_bytes(out: &mut BytesMut, b: &[u8], what: &str) {
    put_count(out, b.len(), what);
    out.put_slice(b);
}

fn put_flag(out: &mut BytesMut, v: bool) {
    out.put_u8(u8::from(v));
}

fn put_ids(out: &mut BytesMut, ids: &[u64], what: &str) {
    put_count(out, ids.len(), what);
    for id in ids {
        out.put_u64_le(*id);
    }
}

fn put_message(
    out: &mut BytesMut,
    group: GroupId,
    m: &Message,
    mut parts: Option<(&mut Vec<Part>, &[Option<FileSpan>])>,
) {
    out.put_u64_le(group.get());
    out.put_u8(message_type_code(m.get_msg_type()));
    out.put_u64_le(m.to);
    out.put_u64_le(m.from);
    out.put_u64_le(m.term);
    out.put_u64_le(m.log_term);
    out.put_u64_le(m.index);
    out.put_u64_le(m.commit);
    out.put_u64_le(m.commit_term);
    out.put_u64_le(m.request_snapshot);
    put_flag(out, m.reject);
    out.put_u64_le(m.reject_hint);
    out.put_u64_le(m.deprecated_priority);
    out.put_i64_le(m.priority);
    put_bytes(out, &m.context, "message context");
    put_count(out, m.get_entries().len(), "entries");
    for (j, e) in m.get_entries().iter().enumerate() {
        let to = parts.as_mut().map(|(parts, spans)| {
            let span = spans.get(j).and_then(Option::as_ref);
            (&mut **parts, span)
        });
        put_entry(out, e, to);
    }
    put_flag(out, m.has_snapshot());
    if m.has_snapshot() {
        put_snapshot(out, m.get_snapshot());
    }
}

fn put_entry(out: &mut BytesMut, e: &Entry, parts: Option<(&mut Vec<Part>, Option<&FileSpan>)>) {
    out.put_u8(entry_type_code(e.get_entry_type()));
    out.put_u64_le(e.term);
    out.put_u64_le(e.index);
    put_flag(out, e.sync_log);
    match parts {
        Some((parts, span)) if e.data.len() >= ZERO_COPY_BYTES_MIN => {
            put_count(out, e.data.len(), "entry data");
            // What is encoded so far leaves as one part; the capacity
            // reserved for the rest of the frame stays with `out`.
            parts.push(Part::Bytes(out.split().freeze()));
            parts.push(match span {
                Some(f) if f.len == e.data.len() as u64 => Part::File(f.clone()),
                _ => Part::Bytes(e.data.clone()),
            });
        }
        _ => put_bytes(out, &e.data, "entry data"),
    }
    put_bytes(out, &e.context, "entry context");
}

fn put_snapshot(out: &mut BytesMut, s: &Snapshot) {
    put_bytes(out, &s.data, "snapshot data");
    put_flag(out, s.has_metadata());
    if !s.has_metadata() {
        return;
    }
    let meta = s.get_metadata();
    out.put_u64_le(meta.index);
    out.put_u64_le(meta.term);
    put_flag(out, meta.has_conf_state());
    if !meta.has_conf_state() {
        return;
    }
    let cs = meta.get_conf_state();
    put_ids(out, &cs.voters, "voters");
    put_ids(out, &cs.learners, "learners");
    put_ids(out, &cs.voters_outgoing, "voters_outgoing");
    put_ids(out, &cs.learners_next, "learners_next");
    put_flag(out, cs.auto_leave);
}

/// Decodes a frame payload, checking `limits` before allocating.
pub fn decode_frame(payload: Bytes, limits: &WireLimits) -> Result<PeerFrame, WireError> {
    if payload.len() > limits.frame_bytes_max {
        return Err(WireError::TooLarge {
            what: "frame",
            len: payload.len(),
            max: limits.frame_bytes_max,
        });
    }
    let mut r = Reader::new(payload);
    let version = r.u8("version")?;
    if version != PEER_FRAME_VERSION {
        return Err(WireError::UnknownVersion(version));
    }
    let from = BrokerId(r.u64("sender")?);
    let count = r.count("messages", HEARTBEAT_PAIR_BYTES, limits.messages_max)?;
    let mut messages = Vec::with_capacity(count);
    for _ in 0..count {
        let group = GroupId(r.u64("group")?);
        let code = r.u8("message type")?;
        let msg = if code >= SHORT_FORM {
            read_short_heartbeat(&mut r, from, code)?
        } else {
            let m = read_message(&mut r, code, limits)?;
            if is_short_heartbeat(from, &m) {
                return Err(WireError::NotShortest);
            }
            m
        };
        messages.push((group, msg));
    }
    r.finish()?;
    Ok(PeerFrame { from, messages })
}

/// The rest of a heartbeat in short form whose kind byte was `code`.
fn read_short_heartbeat(r: &mut Reader, from: BrokerId, code: u8) -> Result<Message, WireError> {
    let unknown = WireError::UnknownMessageType(code);
    let msg_type = match message_type(code - SHORT_FORM).map_err(|_| unknown.clone())? {
        t @ (MessageType::MsgHeartbeat | MessageType::MsgHeartbeatResponse) => t,
        _ => return Err(unknown),
    };
    let mut m = Message::default();
    m.set_msg_type(msg_type);
    m.from = from.get();
    m.to = r.u64("to")?;
    m.term = r.u64("term")?;
    m.commit = r.u64("commit")?;
    Ok(m)
}

fn read_message(r: &mut Reader, code: u8, limits: &WireLimits) -> Result<Message, WireError> {
    let mut m = Message::default();
    m.set_msg_type(message_type(code)?);
    m.to = r.u64("to")?;
    m.from = r.u64("from")?;
    m.term = r.u64("term")?;
    m.log_term = r.u64("log_term")?;
    m.index = r.u64("index")?;
    m.commit = r.u64("commit")?;
    m.commit_term = r.u64("commit_term")?;
    m.request_snapshot = r.u64("request_snapshot")?;
    m.reject = r.flag("reject")?;
    m.reject_hint = r.u64("reject_hint")?;
    m.deprecated_priority = r.u64("deprecated_priority")?;
    m.priority = r.i64("priority")?;
    m.context = r.bytes("message context")?;
    let count = r.count("entries", MIN_ENTRY_BYTES, limits.entries_max)?;
    let mut entries = Vec::with_capacity(count);
    for _ in 0..count {
        entries.push(read_entry(r)?);
    }
    m.set_entries(entries.into());
    if r.flag("snapshot present")? {
        m.set_snapshot(read_snapshot(r)?);
    }
    Ok(m)
}

fn read_entry(r: &mut Reader) -> Result<Entry, WireError> {
    let mut e = Entry::default();
    e.set_entry_type(entry_type(r.u8("entry type")?)?);
    e.term = r.u64("entry term")?;
    e.index = r.u64("entry index")?;
    e.sync_log = r.flag("sync_log")?;
    e.data = r.bytes("entry data")?;
    e.context = r.bytes("entry context")?;
    Ok(e)
}

fn read_snapshot(r: &mut Reader) -> Result<Snapshot, WireError> {
    // Struct fields are evaluated in the order written: the wire order.
    let data = r.bytes("snapshot data")?;
    let metadata = if r.flag("snapshot metadata present")? {
        Some(SnapshotMetadata {
            index: r.u64("snapshot index")?,
            term: r.u64("snapshot term")?,
            conf_state: read_conf_state(r)?.into(),
            ..SnapshotMetadata::default()
        })
    } else {
        None
    };
    Ok(Snapshot {
        data,
        metadata: metadata.into(),
        ..Snapshot::default()
    })
}

fn read_conf_state(r: &mut Reader) -> Result<Option<ConfState>, WireError> {
    if !r.flag("conf state present")? {
        return Ok(None);
    }
    Ok(Some(ConfState {
        voters: r.ids("voters")?,
        learners: r.ids("learners")?,
        voters_outgoing: r.ids("voters_outgoing")?,
        learners_next: r.ids("learners_next")?,
        auto_leave: r.flag("auto_leave")?,
        ..ConfState::default()
    }))
}

/// The wire number of a message type: its number in `eraftpb.proto`,
/// spelled out so the wire never depends on how the enum is generated.
fn message_type_code(t: MessageType) -> u8 {
    match t {
        MessageType::MsgHup => 0,
        MessageType::MsgBeat => 1,
        MessageType::MsgPropose => 2,
        MessageType::MsgAppend => 3,
        MessageType::MsgAppendResponse => 4,
        MessageType::MsgRequestVote => 5,
        MessageType::MsgRequestVoteResponse => 6,
        MessageType::MsgSnapshot => 7,
        MessageType::MsgHeartbeat => 8,
        MessageType::MsgHeartbeatResponse => 9,
        MessageType::MsgUnreachable => 10,
        MessageType::MsgSnapStatus => 11,
        MessageType::MsgCheckQuorum => 12,
        MessageType::MsgTransferLeader => 13,
        MessageType::MsgTimeoutNow => 14,
        MessageType::MsgReadIndex => 15,
        MessageType::MsgReadIndexResp => 16,
        MessageType::MsgRequestPreVote => 17,
        MessageType::MsgRequestPreVoteResponse => 18,
    }
}

fn message_type(code: u8) -> Result<MessageType, WireError> {
    Ok(match code {
        0 => MessageType::MsgHup,
        1 => MessageType::MsgBeat,
        2 => MessageType::MsgPropose,
        3 => MessageType::MsgAppend,
        4 => MessageType::MsgAppendResponse,
        5 => MessageType::MsgRequestVote,
        6 => MessageType::MsgRequestVoteResponse,
        7 => MessageType::MsgSnapshot,
        8 => MessageType::MsgHeartbeat,
        9 => MessageType::MsgHeartbeatResponse,
        10 => MessageType::MsgUnreachable,
        11 => MessageType::MsgSnapStatus,
        12 => MessageType::MsgCheckQuorum,
        13 => MessageType::MsgTransferLeader,
        14 => MessageType::MsgTimeoutNow,
        15 => MessageType::MsgReadIndex,
        16 => MessageType::MsgReadIndexResp,
        17 => MessageType::MsgRequestPreVote,
        18 => MessageType::MsgRequestPreVoteResponse,
        _ => return Err(WireError::UnknownMessageType(code)),
    })
}

fn entry_type_code(t: EntryType) -> u8 {
    match t {
        EntryType::EntryNormal => 0,
        EntryType::EntryConfChange => 1,
        EntryType::EntryConfChangeV2 => 2,
    }
}

fn entry_type(code: u8) -> Result<EntryType, WireError> {
    Ok(match code {
        0 => EntryType::EntryNormal,
        1 => EntryType::EntryConfChange,
        2 => EntryType::EntryConfChangeV2,
        _ => return Err(WireError::UnknownEntryType(code)),
    })
}

/// Reads values from the front of a payload; never past its end.
struct Reader {
    buf: Bytes,
    pos: usize,
}

impl Reader {
    fn new(buf: Bytes) -> Self {
        Reader { buf, pos: 0 }
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], WireError> {
        let end = self.pos + N;
        let raw = self
            .buf
            .get(self.pos..end)
            .and_then(|s| <[u8; N]>::try_from(s).ok())
            .ok_or(WireError::Truncated { what })?;
        self.pos = end;
        Ok(raw)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, WireError> {
        let [b] = self.take::<1>(what)?;
        Ok(b)
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, WireError> {
        self.take(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, WireError> {
        self.take(what).map(u64::from_le_bytes)
    }

    fn i64(&mut self, what: &'static str) -> Result<i64, WireError> {
        self.take(what).map(i64::from_le_bytes)
    }

    fn flag(&mut self, what: &'static str) -> Result<bool, WireError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            value => Err(WireError::InvalidBool { what, value }),
        }
    }

    /// A byte string, as a zero-copy slice of the payload.
    fn bytes(&mut self, what: &'static str) -> Result<Bytes, WireError> {
        let len = self.u32(what)? as usize;
        if len > self.remaining() {
            return Err(WireError::Truncated { what });
        }
        let b = self.buf.slice(self.pos..self.pos + len);
        self.pos += len;
        Ok(b)
    }

    /// A count of items each at least `min_item_bytes` long, refused when
    /// over `max` or when the remaining bytes could not hold that many, so
    /// the caller may allocate for it.
    fn count(
        &mut self,
        what: &'static str,
        min_item_bytes: usize,
        max: usize,
    ) -> Result<usize, WireError> {
        let n = self.u32(what)? as usize;
        if n > max {
            return Err(WireError::TooLarge { what, len: n, max });
        }
        if n.saturating_mul(min_item_bytes) > self.remaining() {
            return Err(WireError::Truncated { what });
        }
        Ok(n)
    }

    fn ids(&mut self, what: &'static str) -> Result<Vec<u64>, WireError> {
        // Id lists are bounded by the bytes alone: 8 per id.
        let n = self.count(what, 8, usize::MAX)?;
        (0..n).map(|_| self.u64(what)).collect()
    }

    fn finish(&self) -> Result<(), WireError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(WireError::TrailingBytes { n }),
        }
    }
}
