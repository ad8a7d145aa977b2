//! Replicas that may hold less than their group believes, and how they
//! are caught up safely.
//!
//! A replica can lose entries it once acknowledged: its broker's data
//! directory was emptied and the broker came back as a new
//! [`crate::ids::Incarnation`], or an `fsync=false` log lost its page
//! cache in a machine crash. Raft assumes it never does, and two things
//! then go wrong:
//!
//! - **Votes.** With an empty log the replica grants its vote to any
//!   candidate, even one missing entries this replica helped commit, and a
//!   fresh hard state lets it vote a second time in a term it voted in. So
//!   a rejoining replica is *catching up*: it grants no vote, answers no
//!   pre-vote, takes no leadership transfer and starts no election (its
//!   election clock does not run) until it has heard from a leader and
//!   holds, durably, everything that leader had committed when first heard
//!   from ([`CatchUp`]). It then votes again.
//! - **Repair.** A leader that believes the follower already holds its log
//!   sends it only heartbeats; raft-rs ignores a rejection below what it
//!   believes matched, and the follower would never be sent the entries.
//!   A follower whose log ends below a heartbeat's commit (what the leader
//!   believes it holds) answers with a rejection naming its last index
//!   ([`lost_entries_reply`]), and a leader that gets a rejection below its
//!   match index for that follower forgets what it believed matched and
//!   probes from the hint ([`believed_too_much`]), sending entries or a
//!   snapshot; the match index counts again once the follower accepts.
//!   `rill cluster status` then shows the follower's real match index.
//! - **Entries that come back.** An `fsync=false` log can also return, after
//!   a power cut, entries a truncation had replaced, as long as the ones it
//!   acknowledged in their place: same length, other terms. A heartbeat
//!   carries no term to tell, and its commit would make them committed
//!   here. Such a replica takes a heartbeat's commit only through what an
//!   append since it opened showed it shares with its leader, and answers
//!   past that with a rejection naming it ([`unverified_reply`]), so the
//!   leader probes and raft-rs's own check of each append repairs the log.

use raft::eraftpb::{Message, MessageType};

/// A replica catching up: what it must hold before it votes again.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CatchUp {
    /// The commit index a leader advertised first, once heard from.
    target: Option<u64>,
}

impl CatchUp {
    /// Notes a message from a peer; a leader's append, heartbeat or
    /// snapshot sets the target if none is set yet.
    pub(crate) fn heard(&mut self, m: &Message) {
        let commit = match m.get_msg_type() {
            MessageType::MsgAppend | MessageType::MsgHeartbeat => m.commit,
            MessageType::MsgSnapshot => m.get_snapshot().get_metadata().index,
            _ => return,
        };
        self.target.get_or_insert(commit);
    }

    /// Whether a replica that has committed and made durable everything
    /// through `committed` and `persisted` has caught up.
    pub(crate) fn done(&self, committed: u64, persisted: u64) -> bool {
        self.target
            .is_some_and(|t| committed >= t && persisted >= t)
    }

    /// The target, once a leader was heard from.
    pub(crate) fn target(&self) -> Option<u64> {
        self.target
    }
}

/// Whether a catching-up replica must not take `m`: votes, pre-votes and
/// leadership transfers would let it decide an election with a log it has
/// lost.
pub(crate) fn refused_while_catching_up(m: &Message) -> bool {
    matches!(
        m.get_msg_type(),
        MessageType::MsgRequestVote | MessageType::MsgRequestPreVote | MessageType::MsgTimeoutNow
    )
}

/// For a follower whose log ends at `last_index` and that got `heartbeat`
/// from its leader: when the heartbeat's commit lies past the log (the
/// leader believes it holds entries it lost), an append that raft-rs will
/// reject, answering the leader with the follower's last index as its
/// hint. Stepped after the heartbeat.
pub(crate) fn lost_entries_reply(heartbeat: &Message, last_index: u64) -> Option<Message> {
    if heartbeat.commit <= last_index {
        return None;
    }
    let mut probe = Message {
        from: heartbeat.from,
        to: heartbeat.to,
        term: heartbeat.term,
        // No entry is at `commit` here: raft-rs rejects, with a hint of at
        // most this log's last index.
        index: heartbeat.commit,
        log_term: heartbeat.term,
        ..Message::default()
    };
    probe.set_msg_type(MessageType::MsgAppend);
    Some(probe)
}

/// For an `fsync=false` follower that got a heartbeat advertising
/// `commit` while its log is known to share its leader's only through
/// `known` (see `Replica::verified_through`): the rejection an append at
/// `commit` would draw were the entries between different, naming `known`
/// (of term `known_term`) as the hint, so the leader probes from there and
/// sends entries whose previous entry raft-rs checks. `from` is this
/// replica, `committed` its commit index.
pub(crate) fn unverified_reply(
    from: u64,
    leader: u64,
    term: u64,
    commit: u64,
    known: u64,
    known_term: u64,
    committed: u64,
) -> Message {
    let mut m = Message {
        from,
        to: leader,
        term,
        index: commit,
        reject: true,
        reject_hint: known,
        log_term: known_term,
        commit: committed,
        ..Message::default()
    };
    m.set_msg_type(MessageType::MsgAppendResponse);
    m
}

/// For a leader that believes `from` holds its log through `matched`:
/// whether `m`, `from`'s rejection, says the follower holds less (its hint
/// lies below `matched`), and from which index to probe it.
pub(crate) fn believed_too_much(m: &Message, matched: u64) -> Option<u64> {
    (m.get_msg_type() == MessageType::MsgAppendResponse && m.reject && m.reject_hint < matched)
        .then_some(m.reject_hint)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(t: MessageType, commit: u64) -> Message {
        let mut m = Message {
            commit,
            from: 1,
            to: 2,
            term: 3,
            ..Message::default()
        };
        m.set_msg_type(t);
        m
    }

    #[test]
    fn the_target_is_the_first_commit_a_leader_advertised() {
        let mut c = CatchUp::default();
        assert!(!c.done(100, 100), "not before a leader is heard from");
        c.heard(&msg(MessageType::MsgRequestVote, 50));
        assert_eq!(c.target(), None);
        c.heard(&msg(MessageType::MsgHeartbeat, 40));
        c.heard(&msg(MessageType::MsgAppend, 60));
        assert_eq!(c.target(), Some(40));
        assert!(!c.done(40, 39), "committed but not yet durable");
        assert!(c.done(40, 40));
    }

    #[test]
    fn an_unverified_reply_rejects_at_the_commit_and_names_what_is_known() {
        let m = unverified_reply(2, 1, 7, 419, 385, 6, 380);
        assert_eq!(m.get_msg_type(), MessageType::MsgAppendResponse);
        assert!(m.reject);
        assert_eq!((m.from, m.to, m.term), (2, 1, 7));
        assert_eq!(
            (m.index, m.reject_hint, m.log_term, m.commit),
            (419, 385, 6, 380)
        );
        // The leader that believed 419 matched now probes from 385.
        assert_eq!(believed_too_much(&m, 419), Some(385));
    }

    #[test]
    fn only_a_heartbeat_past_the_log_draws_a_rejection() {
        let hb = msg(MessageType::MsgHeartbeat, 10);
        assert!(lost_entries_reply(&hb, 10).is_none());
        let probe = lost_entries_reply(&hb, 3).expect("past the log");
        assert_eq!(probe.get_msg_type(), MessageType::MsgAppend);
        assert_eq!((probe.index, probe.term, probe.from), (10, 3, 1));
    }

    #[test]
    fn a_rejection_below_the_match_index_is_believed() {
        let mut r = msg(MessageType::MsgAppendResponse, 0);
        r.reject = true;
        r.reject_hint = 4;
        assert_eq!(believed_too_much(&r, 10), Some(4));
        assert_eq!(believed_too_much(&r, 4), None);
        r.reject = false;
        assert_eq!(believed_too_much(&r, 10), None);
    }
}
