//! How a Raft entry is stored: one entry, one batch in the segment log.
//!
//! - A normal entry carrying data *is* a record batch: its data is the
//!   batch's bytes, stored as they are (the log writes base offset, term
//!   and Raft index into the stored copy, outside the CRC).
//! - Every other entry (the leader's empty no-op, configuration changes) is
//!   a control batch: zero records, no offset taken, consumers never see
//!   it. Its body is rill's own small encoding of the entry:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | kind: 0 leader no-op, 1 conf change, 2 conf change v2 |
//! | 1 | 4 | data length `d` (little-endian) |
//! | 5 | d | data (a conf change as raft-rs encodes it; empty for a no-op) |
//! | 5 + d | 4 | context length `c` |
//! | 9 + d | c | context |
//!
//! Reading back reverses this exactly: an entry read from the log equals
//! the entry that was appended (term and index come from the batch header).

use bytes::{BufMut, Bytes};
use raft::eraftpb::{Entry, EntryType};
use rill_storage::batch::ValidBatch;
use rill_storage::{LogError, RaftIndex, RecordBatch, Term};

use crate::error::ReplicationError;

const KIND_NOOP: u8 = 0;
const KIND_CONF_CHANGE: u8 = 1;
const KIND_CONF_CHANGE_V2: u8 = 2;

/// What an entry becomes in the log.
#[derive(Debug)]
pub enum Stored<'a> {
    /// A record batch: the entry's data as it is.
    Batch(&'a Bytes),
    /// A control batch with this body.
    Control(Vec<u8>),
}

/// Maps an entry to what is stored. A normal entry with data must carry no
/// context (rill never proposes one): refused, since it could not be read
/// back the same.
pub fn to_stored(entry: &Entry) -> Result<Stored<'_>, ReplicationError> {
    let kind = match entry.get_entry_type() {
        EntryType::EntryNormal if !entry.data.is_empty() => {
            if !entry.context.is_empty() {
                return Err(ReplicationError::BadEntry {
                    index: entry.index,
                    reason: "a data entry with a context",
                });
            }
            return Ok(Stored::Batch(&entry.data));
        }
        EntryType::EntryNormal => KIND_NOOP,
        EntryType::EntryConfChange => KIND_CONF_CHANGE,
        EntryType::EntryConfChangeV2 => KIND_CONF_CHANGE_V2,
    };
    let mut body = Vec::with_capacity(9 + entry.data.len() + entry.context.len());
    body.put_u8(kind);
    body.put_u32_le(entry.data.len() as u32);
    body.put_slice(&entry.data);
    body.put_u32_le(entry.context.len() as u32);
    body.put_slice(&entry.context);
    Ok(Stored::Control(body))
}

/// Checks an entry as it arrives from a peer, before raft-rs takes it: a
/// data entry must be one whole batch with its framing and CRC intact, not
/// a control batch, and carry no context. Its records are not walked: the
/// leader that proposed it walked them (`CheckedBatch`), and the CRC proves
/// these are those bytes, as a Kafka follower takes them. Once checked
/// here, the entry is written without its CRC being computed again.
///
/// A leader's no-op carries nothing; a membership change must be one rill
/// encoded ([`crate::conf::check_entry`]: its context decodes, its data is
/// that change's encoding), and only ever version 2, which is all rill
/// proposes.
pub fn check_received(entry: &Entry, max_batch_bytes: usize) -> Result<(), ReplicationError> {
    let bad = |reason| ReplicationError::BadEntry {
        index: entry.index,
        reason,
    };
    match entry.get_entry_type() {
        EntryType::EntryNormal if entry.data.is_empty() => {
            return if entry.context.is_empty() {
                Ok(())
            } else {
                Err(bad("a leader no-op with a context"))
            };
        }
        EntryType::EntryNormal => {}
        EntryType::EntryConfChange => return Err(bad("a version 1 conf change")),
        EntryType::EntryConfChangeV2 => {
            return crate::conf::check_entry(&entry.data, &entry.context)
                .map(|_| ())
                .map_err(|_| bad("a conf change rill did not encode"));
        }
    }
    let Stored::Batch(data) = to_stored(entry)? else {
        return Err(bad("a data entry that is no batch"));
    };
    let batch = ValidBatch::replicated(data, max_batch_bytes)
        .map_err(|err| ReplicationError::from(LogError::from(err)))?;
    if batch.header().is_control() {
        return Err(ReplicationError::BadEntry {
            index: entry.index,
            reason: "a control batch as entry data",
        });
    }
    Ok(())
}

/// The entry a stored batch holds (zero-copy: data and context are slices
/// of the log's mapping).
pub fn from_stored(batch: &RecordBatch) -> Result<Entry, ReplicationError> {
    let h = batch.header();
    let mut entry = Entry {
        term: h.raft_term.get(),
        index: h.raft_index.get(),
        ..Entry::default()
    };
    if !h.is_control() {
        entry.set_entry_type(EntryType::EntryNormal);
        entry.data = batch.bytes().clone();
        return Ok(entry);
    }
    let bad = |reason| ReplicationError::BadEntry {
        index: h.raft_index.get(),
        reason,
    };
    let body = batch.body();
    let kind = *body.first().ok_or_else(|| bad("empty control body"))?;
    let entry_type = match kind {
        KIND_NOOP => EntryType::EntryNormal,
        KIND_CONF_CHANGE => EntryType::EntryConfChange,
        KIND_CONF_CHANGE_V2 => EntryType::EntryConfChangeV2,
        _ => return Err(bad("unknown control kind")),
    };
    let mut at = 1usize;
    let mut field = |what| -> Result<Bytes, ReplicationError> {
        let len_bytes = body.get(at..at + 4).ok_or_else(|| bad(what))?;
        let len = u32::from_le_bytes(len_bytes.try_into().expect("4 bytes")) as usize;
        let start = at + 4;
        let end = start.checked_add(len).ok_or_else(|| bad(what))?;
        if end > body.len() {
            return Err(bad(what));
        }
        at = end;
        Ok(body.slice(start..end))
    };
    entry.data = field("control data length")?;
    entry.context = field("control context length")?;
    if at != body.len() {
        return Err(bad("bytes after the control body"));
    }
    if kind == KIND_NOOP && !entry.data.is_empty() {
        return Err(bad("a no-op with data"));
    }
    entry.set_entry_type(entry_type);
    Ok(entry)
}

/// The term and index a stored batch says it holds.
pub fn position_of(batch: &RecordBatch) -> (RaftIndex, Term) {
    (batch.header().raft_index, batch.header().raft_term)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored_batch(entry: &Entry) -> RecordBatch {
        let bytes = match to_stored(entry).expect("storable") {
            Stored::Batch(b) => b.to_vec(),
            Stored::Control(body) => rill_storage::control_batch(&body, 7),
        };
        let mut bytes = bytes;
        rill_storage::batch::stamp(
            &mut bytes,
            rill_storage::Offset(0),
            Term(entry.term),
            RaftIndex(entry.index),
        );
        RecordBatch::new(Bytes::from(bytes), usize::MAX).expect("valid batch")
    }

    #[test]
    fn control_entries_read_back_as_they_were_written() {
        for (ty, data, context) in [
            (EntryType::EntryNormal, &b""[..], &b""[..]),
            (EntryType::EntryConfChange, b"\x08\x01", b"ctx"),
            (EntryType::EntryConfChangeV2, b"cc-v2", b""),
        ] {
            let mut e = Entry::default();
            e.set_entry_type(ty);
            e.term = 3;
            e.index = 9;
            e.data = Bytes::copy_from_slice(data);
            e.context = Bytes::copy_from_slice(context);
            let back = from_stored(&stored_batch(&e)).expect("decodes");
            assert_eq!(back, e);
        }
    }

    #[test]
    fn data_entry_is_the_batch_itself() {
        let mut b = rill_storage::BatchBuilder::new(1 << 20);
        b.push(&rill_storage::NewRecord::value(b"v", 1))
            .expect("fits");
        let e = Entry {
            term: 2,
            index: 5,
            data: Bytes::from(b.finish().expect("builds")),
            ..Entry::default()
        };
        let batch = stored_batch(&e);
        let back = from_stored(&batch).expect("decodes");
        assert_eq!((back.term, back.index), (2, 5));
        assert_eq!(back.data, *batch.bytes());
    }

    #[test]
    fn a_data_entry_with_context_is_refused() {
        let e = Entry {
            data: Bytes::from_static(b"x"),
            context: Bytes::from_static(b"y"),
            ..Entry::default()
        };
        assert!(matches!(
            to_stored(&e),
            Err(ReplicationError::BadEntry { .. })
        ));
    }
}
