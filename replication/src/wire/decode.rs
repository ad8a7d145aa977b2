//! Reading a frame payload: every count and length is checked against the
//! limits and the bytes that remain before anything is allocated for it,
//! every malformed input is a typed [`WireError`], and byte strings are
//! zero-copy slices of the payload. A heartbeat that has a short form but
//! came in full is refused, so each message has one encoding.

use bytes::Bytes;
use raft::eraftpb::{ConfState, Entry, Message, MessageType, Snapshot, SnapshotMetadata};

use super::codes::{entry_type, message_type};
use super::{
    HEARTBEAT_PAIR_BYTES, MIN_ENTRY_BYTES, PEER_FRAME_VERSION, PeerFrame, SHORT_FORM, WireError,
    WireLimits, is_short_heartbeat,
};
use crate::ids::{BrokerId, GroupId};

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
