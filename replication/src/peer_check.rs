//! Checks of a peer's Raft message against the replica it is for, before
//! raft-rs takes it.
//!
//! raft-rs 0.7 trusts its peers: a message that breaks Raft's rules can
//! reach one of its `panic!`s (`fatal!`), and a panic on the Raft thread
//! stops the broker, at every restart too if the peer sends it again. What
//! [`check`] refuses, and the abort or damage each rule keeps out:
//!
//! - Addressing: `to` must be this broker; `from` another member of the
//!   group (raft-rs steps non-response messages from anyone), but in the
//!   controller's group, any peer that passed the transport's handshake:
//!   its leader may be a broker that joined after what a replica has
//!   applied (a broker joining replays the log from the group's first
//!   voters; one that was down while others joined is behind), and the
//!   replica learns of it only from the entries that broker sends. A
//!   replica that is no voter in its own view never campaigns, and every
//!   other rule below still applies.
//! - `request_snapshot`: rill never asks for a snapshot, so no message
//!   carries one; read-index messages likewise (raft-rs indexes a
//!   `MsgReadIndex`'s first entry without looking).
//! - `MsgAppend`: the entries run on from `index + 1` one by one without
//!   overflow; their terms are at least 1, never go down, start no lower
//!   than `log_term`, and never pass the message's term; `log_term` is 0
//!   exactly at index 0 and never passes the term. raft-rs reads a term of
//!   0 past its log, so a term-0 position past the end "matches" and leaves
//!   a gap it aborts on, and a gap or a repeat makes it cut its log at the
//!   wrong place or commit past its end. A position at or below this
//!   replica's commit index (the entry before the append, or one of its
//!   entries) must hold the term this log holds there: a committed entry
//!   is final, and raft-rs aborts on one that conflicts
//!   (`entry … conflict with committed entry`). With the entries
//!   consecutive, raft-rs commits at most through the last one it has
//!   (`min(commit, last new index)`): the append's commit needs no clamp.
//! - `MsgSnapshot`: a snapshot is present, with index and term at least
//!   1, its term no later than the message's, and data that is a log start
//!   offset. If raft-rs would install it (index at or above the commit
//!   index), its membership must be one raft-rs can restore (a valid
//!   configuration: raft-rs aborts on others) and name this broker (a
//!   group's membership moves on while a replica lags, so it may differ
//!   from the one held here), its term no earlier than the committed
//!   entry's, and its log start no lower than this replica's high
//!   watermark (what committed here is in the snapshot: the high
//!   watermark never moves back).
//! - `MsgAppendResponse` to the leader, in its term: an index or a
//!   rejection's hint past the leader's last index is refused (an
//!   acknowledgement would count entries that do not exist towards a
//!   commit; raft-rs adds 1 to the hint unchecked).
//!
//! Heartbeats carry a commit index that may lie past the log of an
//! `fsync=false` replica after a machine crash: that is a hint, clamped in
//! [`crate::node::Node::step`], not refused.

use raft::eraftpb::{Message, MessageType};
use raft::{Raft, StateRole};
use rill_storage::Offset;

use crate::ids::{BrokerId, GroupId};
use crate::state::Membership;
use crate::storage::{ReplicaLog, snapshot_point};

/// Checks `m`, from a peer, against the replica `raft` of broker `me`,
/// whose high watermark is `high_watermark`. `Err` says why it is refused.
pub(crate) fn check(
    raft: &Raft<ReplicaLog>,
    me: BrokerId,
    group: GroupId,
    high_watermark: Offset,
    m: &Message,
) -> Result<(), String> {
    if m.to != me.get() {
        return Err(format!("addressed to broker {}", m.to));
    }
    let any_peer = group == GroupId::CONTROLLER;
    if m.from == me.get() || (raft.prs().get(m.from).is_none() && !any_peer) {
        return Err("not from another member of the group".into());
    }
    if m.request_snapshot != 0 {
        return Err("asks for a snapshot, which rill never does".into());
    }
    match m.get_msg_type() {
        MessageType::MsgReadIndex | MessageType::MsgReadIndexResp => {
            Err("a read-index message, which rill never sends".into())
        }
        MessageType::MsgAppend => check_append(raft, m),
        MessageType::MsgSnapshot => check_snapshot(raft, high_watermark, m),
        MessageType::MsgAppendResponse => check_append_response(raft, m),
        _ => Ok(()),
    }
}

fn check_append(raft: &Raft<ReplicaLog>, m: &Message) -> Result<(), String> {
    if m.log_term > m.term {
        return Err(format!(
            "its entry before has term {}, after the message's term {}",
            m.log_term, m.term
        ));
    }
    if (m.index == 0) != (m.log_term == 0) {
        return Err(format!(
            "its entry before is index {} of term {}: only index 0 has term 0",
            m.index, m.log_term
        ));
    }
    let mut previous_term = m.log_term;
    for (i, e) in m.get_entries().iter().enumerate() {
        let expected = (i as u64)
            .checked_add(1)
            .and_then(|n| m.index.checked_add(n))
            .ok_or_else(|| format!("its entries' indexes pass {}", u64::MAX))?;
        if e.index != expected {
            return Err(format!(
                "entry {i} has index {}, not {expected}: entries run on from index {} one by one",
                e.index, m.index
            ));
        }
        if e.term == 0 || e.term < previous_term || e.term > m.term {
            return Err(format!(
                "entry {} has term {}, outside {}..={} (terms never go down, nor pass the message's)",
                e.index,
                e.term,
                previous_term.max(1),
                m.term
            ));
        }
        previous_term = e.term;
    }
    let positions = std::iter::once((m.index, m.log_term))
        .chain(m.get_entries().iter().map(|e| (e.index, e.term)));
    for (index, term) in positions {
        if let Some(committed_term) = committed_term(raft, index) {
            if committed_term != term {
                return Err(format!(
                    "it has term {term} at index {index}, where this replica committed term {committed_term}"
                ));
            }
        }
    }
    Ok(())
}

/// The term of the entry at `index` if it is committed here and still in
/// the log (or its snapshot point); `None` otherwise.
fn committed_term(raft: &Raft<ReplicaLog>, index: u64) -> Option<u64> {
    let log = &raft.raft_log;
    // raft-rs answers 0 for an index outside the log rather than an error.
    if index > log.committed || index.saturating_add(1) < log.first_index() {
        return None;
    }
    log.term(index).ok()
}

fn check_snapshot(
    raft: &Raft<ReplicaLog>,
    high_watermark: Offset,
    m: &Message,
) -> Result<(), String> {
    if !m.has_snapshot() {
        return Err("a snapshot message without a snapshot".into());
    }
    let snapshot = m.get_snapshot();
    let meta = snapshot.get_metadata();
    if meta.index == 0 || meta.term == 0 || meta.term > m.term {
        return Err(format!(
            "a snapshot at index {} of term {}: both must be at least 1, and the term no later than the message's {}",
            meta.index, meta.term, m.term
        ));
    }
    let Some((next_offset, _)) = snapshot_point(&snapshot.data) else {
        return Err("snapshot data that is not a log start offset (and membership index)".into());
    };
    let log = &raft.raft_log;
    if meta.index < log.committed {
        // raft-rs ignores it and tells the leader its commit index.
        return Ok(());
    }
    let members = Membership::from_raft(meta.get_conf_state());
    if !members.is_valid() || !members.contains(BrokerId(m.to)) {
        return Err(format!(
            "a snapshot of members {members:?}: not a valid membership naming this broker"
        ));
    }
    if let Some(committed_term) = committed_term(raft, log.committed) {
        if meta.term < committed_term {
            return Err(format!(
                "a snapshot of term {} after index {}, committed here in term {committed_term}",
                meta.term, log.committed
            ));
        }
    }
    if next_offset < high_watermark {
        return Err(format!(
            "a snapshot whose log starts at offset {}, below this replica's high watermark {}",
            next_offset.get(),
            high_watermark.get()
        ));
    }
    Ok(())
}

fn check_append_response(raft: &Raft<ReplicaLog>, m: &Message) -> Result<(), String> {
    if raft.state != StateRole::Leader || m.term != raft.term {
        // raft-rs drops it unread.
        return Ok(());
    }
    // A follower answers about positions of this leader's log: the index
    // it was sent (or its commit index, or its snapshot's, all in this
    // log), and on a rejection a hint no greater than that index.
    let last = raft.raft_log.last_index();
    if m.index > last || (m.reject && m.reject_hint > last) {
        return Err(format!(
            "answers about index {} (hint {}), past this leader's last index {last}",
            m.index, m.reject_hint
        ));
    }
    Ok(())
}
