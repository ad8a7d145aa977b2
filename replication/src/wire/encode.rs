//! Writing a frame payload: the header, then each pair, a heartbeat in
//! short form whenever it has one. One reservation per frame, so encoding
//! never reallocates halfway; large entry data may leave as parts of its
//! own, shared or sent from the segment file, never copied.

use bytes::{BufMut, BytesMut};
use raft::eraftpb::{Entry, Message, Snapshot};
use rill_storage::FileSpan;

use super::codes::{entry_type_code, message_type_code};
use super::{
    EntrySpans, FRAME_HEADER_BYTES, PEER_FRAME_VERSION, Part, SHORT_FORM, ZERO_COPY_BYTES_MIN,
    encoded_len, is_short_heartbeat,
};
use crate::ids::{BrokerId, GroupId};

/// Appends a whole frame payload: the header, then every pair in order.
///
/// # Panics
///
/// If `messages` has more than `u32::MAX` pairs, or a count or byte string
/// inside one is longer than `u32::MAX`: the layout cannot express it, and
/// such a frame would be far beyond what any receiver accepts
/// ([`WireLimits::frame_bytes_max`](super::WireLimits::frame_bytes_max); check with [`encoded_len`] first).
pub fn encode_frame(from: BrokerId, messages: &[(GroupId, Message)], out: &mut BytesMut) {
    encode(from, messages, out, None);
}

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
