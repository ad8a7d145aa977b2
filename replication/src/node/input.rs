//! Step 1 of an iteration: the inputs. Ticks, a peer's messages, proposals,
//! campaigns, leader transfers, and reports of messages the transport
//! dropped, each handed to its group's raft-rs node.
//!
//! Invariants kept here:
//! - what a peer sends never stops this broker: a message for a group not
//!   here, one that breaks Raft's rules, or one raft-rs could not take
//!   without aborting is refused, and an append's entries are checked
//!   before raft-rs takes them;
//! - nothing unchecked enters a log through a leader: data is proposed only
//!   as a [`CheckedBatch`], and only by the group's leader (raft-rs would
//!   forward it silently);
//! - a replica still catching up neither votes nor campaigns, and keeps no
//!   election clock;
//! - a raft-rs call that hits an unreadable log stops that group alone,
//!   reported by the next round.

use bytes::Bytes;
use raft::eraftpb::{Entry, Message, MessageType};
use raft::{RawNode, StateRole};
use rill_storage::batch::BatchHeader;
use rill_storage::producers::{ProducerBatch, ProducerSequence, SequenceCheck, StoredAt};
use rill_storage::{LogError, Offset, RaftIndex, Term};

use super::Node;
use crate::contain::raft_call;
use crate::error::ReplicationError;
use crate::ids::{BrokerId, GroupId};
use crate::outgoing::Dropped;

/// A proposal accepted by the leader: where its records will be once the
/// entry commits (it may still be lost to a leader change: wait for
/// [`Event::Committed`] past `index` and check the term there).
///
/// [`Event::Committed`]: super::Event::Committed
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proposed {
    /// The entry's Raft index.
    pub index: RaftIndex,
    /// Its term.
    pub term: Term,
    /// Offset of its first record.
    pub base_offset: Offset,
    /// The offset after its last record.
    pub next_offset: Offset,
    /// The batch was an idempotent producer's retry of one the log holds
    /// (or this leadership proposed) already: these are that entry's
    /// index, term and offsets, and nothing new was proposed.
    pub duplicate: bool,
}

/// A record batch checked in full (length, CRC, every record) and ready to
/// be proposed. The only way to propose data: nothing unchecked enters a
/// log through a leader.
#[derive(Debug, Clone)]
pub struct CheckedBatch {
    bytes: Bytes,
    header: BatchHeader,
}

impl CheckedBatch {
    /// Validates `bytes` as one data batch of at most `max_batch_bytes`.
    /// Control batches are the replication layer's own and never proposed
    /// as data: `Ok(None)`.
    pub fn new(bytes: Bytes, max_batch_bytes: usize) -> Result<Option<CheckedBatch>, LogError> {
        let header = rill_storage::batch::validate(&bytes, max_batch_bytes)?;
        if header.is_control() {
            return Ok(None);
        }
        Ok(Some(CheckedBatch { bytes, header }))
    }

    /// The batch's header.
    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    /// The batch's bytes.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }
}

impl Node {
    /// One tick for every group, less jitter: each group misses a tick
    /// with probability 1/4, so election timeouts spread out above
    /// `election_tick` ticks and never fall below it.
    pub fn tick(&mut self) {
        let mut unreadable = Vec::new();
        let mut gone = Vec::new();
        let awake: Vec<GroupId> = self.awake.iter().copied().collect();
        for &group in &awake {
            let Some(r) = self.groups.get_mut(&group) else {
                gone.push(group);
                continue;
            };
            if let Some(c) = r.catching_up {
                let log = &r.raw.raft.raft_log;
                if c.done(log.committed, log.persisted) {
                    tracing::info!(%group, through = ?c.target(), "caught up: votes again");
                    r.catching_up = None;
                } else {
                    // No election clock: it must not campaign with a log
                    // it has lost.
                    continue;
                }
            }
            if self.jitter.next() % 4 != 0
                && let Err(e) = raft_call(group, &mut r.raw, RawNode::tick)
            {
                unreadable.push((group, e));
            }
            if r.raw.has_ready() {
                self.dirty.insert(group);
            }
        }
        for group in gone {
            self.awake.remove(&group);
        }
        for (group, e) in unreadable {
            self.stop_unreadable(group, &e);
        }
        if self.config.quiesce_after_ticks.is_some() {
            for group in awake {
                self.maybe_quiesce(group);
            }
        }
        self.farewell_tick();
    }

    /// Hands a message from a peer to its group. A message for a group not
    /// here is refused (the sender learns of it from the controller), and
    /// so is one that breaks Raft's rules or that raft-rs could not take
    /// without aborting ([`ReplicationError::RefusedMessage`]; see
    /// `peer_check`): what a peer sends never stops this broker.
    pub fn step(&mut self, group: GroupId, message: Message) -> Result<(), ReplicationError> {
        if self.groups.contains_key(&group) {
            self.dirty.insert(group);
        }
        let arrived = super::hibernate::arrival(&message);
        let from = BrokerId(message.from);
        let term_sent = message.term;
        let r = self
            .groups
            .get_mut(&group)
            .ok_or(ReplicationError::UnknownGroup(group))?;
        let mut message = message;
        // Proposals enter through `propose` only, validated; local messages
        // (campaign, beat, reports) never come from a peer, and raft-rs
        // would take a term-0 one as a local command.
        let local = matches!(
            message.get_msg_type(),
            MessageType::MsgPropose
                | MessageType::MsgHup
                | MessageType::MsgBeat
                | MessageType::MsgUnreachable
                | MessageType::MsgSnapStatus
                | MessageType::MsgCheckQuorum
        );
        if local || message.term == 0 {
            return Err(ReplicationError::Raft(raft::Error::StepLocalMsg));
        }
        crate::peer_check::check(
            &r.raw.raft,
            self.config.id,
            group,
            r.high_watermark,
            &message,
        )
        .map_err(|reason| ReplicationError::RefusedMessage {
            group,
            from: BrokerId(message.from),
            reason,
        })?;
        if let Some(c) = r.catching_up.as_mut() {
            if crate::catch_up::refused_while_catching_up(&message) {
                return Err(ReplicationError::CatchingUp { group });
            }
            c.heard(&message);
        }
        let r = if arrived == super::hibernate::Arrival::Wakes {
            super::hibernate::end_lease_for(r, &self.peers_down, &message);
            // Most messages reach an awake group: only a sleeping one is
            // looked up again.
            if r.hibernating {
                self.wake(group);
                self.groups
                    .get_mut(&group)
                    .ok_or(ReplicationError::UnknownGroup(group))?
            } else {
                r.idle_ticks = 0;
                r
            }
        } else {
            r
        };
        let term = r.raw.raft.term;
        if r.raw.raft.state == StateRole::Leader
            && message.term == term
            && let Some(pr) = r.raw.raft.mut_prs().get_mut(message.from)
            && let Some(probe_from) = crate::catch_up::believed_too_much(&message, pr.matched)
        {
            // The follower holds less than this leader believed: nothing of
            // it counts as matched until it answers a probe from its hint
            // (its entry there may differ too), and it is sent what it
            // lacks (entries or a snapshot).
            tracing::warn!(
                %group,
                follower = message.from,
                believed = pr.matched,
                holds = probe_from,
                "a follower holds less than it had acknowledged; catching it up"
            );
            pr.become_probe();
            pr.matched = 0;
            pr.next_idx = probe_from + 1;
            let to = message.from;
            return raft_call(group, &mut r.raw, |raw| raw.raft.send_append(to))
                .inspect_err(|e| self.stop_unreadable(group, e));
        }
        let mut lost = None;
        let mut unverified = None;
        match message.get_msg_type() {
            // An append's entries are checked before raft-rs takes them:
            // once in its log, a bad one could only fail the group when
            // written. Refused whole, the leader sends them again.
            MessageType::MsgAppend => {
                for e in message.get_entries() {
                    crate::entry::check_received(e, r.max_batch_bytes).map_err(|source| {
                        ReplicationError::RefusedEntry {
                            index: e.index,
                            source: Box::new(source),
                        }
                    })?;
                }
            }
            MessageType::MsgHeartbeat => {
                // A leader advertises the commit it believes this follower
                // can take; after a machine crash of an `fsync=false`
                // replica that may lie past its log, which raft-rs treats
                // as fatal, or past what the log is known to share with the
                // leader (`Replica::verified_through`). The commit is a
                // hint: clamp it, and have the leader probe.
                let last = r.raw.raft.raft_log.last_index();
                let known = r.verified_through.map_or(last, |v| v.min(last));
                lost = crate::catch_up::lost_entries_reply(&message, last);
                if lost.is_none() && message.commit > known {
                    unverified = Some((message.from, message.commit, known));
                }
                message.commit = message.commit.min(known);
            }
            _ => {}
        }
        // An append of the current term that raft-rs checked against this
        // log (its previous entry at or past the commit, and here with its
        // term) leaves the log sharing the leader's through its last entry.
        let append = (message.get_msg_type() == MessageType::MsgAppend).then(|| {
            let n = message.get_entries().len() as u64;
            let committed = r.raw.raft.raft_log.committed;
            (
                message.term,
                message.index,
                message.log_term,
                message.index + n,
                committed,
            )
        });
        let verified = &mut r.verified_through;
        let stepped = raft_call(group, &mut r.raw, |raw| {
            raw.step(message)?;
            if let (Some(v), Some((term, prev, prev_term, through, committed))) =
                (verified.as_mut(), append)
                && term == raw.raft.term
                && prev >= committed
                && raw.raft.raft_log.match_term(prev, prev_term)
            {
                *v = (*v).max(through);
            }
            // Within the log but past what it is known to share with the
            // leader: the leader is told it holds only that much, as a
            // rejected append would tell it, and probes from there.
            if let Some((leader, commit, known)) = unverified {
                raw.raft.msgs.push(crate::catch_up::unverified_reply(
                    raw.raft.id,
                    leader,
                    raw.raft.term,
                    commit,
                    known,
                    raw.raft.raft_log.term(known).unwrap_or(0),
                    raw.raft.raft_log.committed,
                ));
            }
            // Past the log: the leader is told what this replica really
            // holds.
            match lost {
                Some(probe) => raw.step(probe),
                None => Ok(()),
            }
        });
        match stepped {
            Ok(result) => {
                result?;
                self.after_step(group, from, term_sent, arrived);
                Ok(())
            }
            Err(e) => {
                self.stop_unreadable(group, &e);
                Err(e)
            }
        }
    }

    /// Proposes a step of a membership change as the group's leader (see
    /// [`crate::conf`]) and returns the Raft index of its entry. Refused
    /// (`MembershipChangeRefused`) while an earlier change is not yet
    /// applied here or a leadership transfer is under way (raft-rs would
    /// silently turn the entry into an empty one), and when the step does
    /// not apply to the membership; `NotLeader` on a follower.
    pub fn propose_membership_change(
        &mut self,
        group: GroupId,
        change: &crate::conf::MembershipChange,
    ) -> Result<RaftIndex, ReplicationError> {
        self.touch(group);
        let r = self
            .groups
            .get_mut(&group)
            .ok_or(ReplicationError::UnknownGroup(group))?;
        let refused = |reason: String| ReplicationError::MembershipChangeRefused { group, reason };
        let raft = &r.raw.raft;
        if raft.state != StateRole::Leader {
            let leader = (raft.leader_id != 0 && raft.leader_id != raft.id)
                .then_some(BrokerId(raft.leader_id));
            return Err(ReplicationError::NotLeader { group, leader });
        }
        if raft.lead_transferee.is_some() {
            return Err(refused("a leadership transfer is under way".into()));
        }
        if raft.has_pending_conf() {
            return Err(refused(
                "an earlier membership change is not applied yet".into(),
            ));
        }
        let membership = &r.raw.store().state().membership;
        if let Err(e) = membership.apply(change) {
            return Err(refused(e.to_string()));
        }
        raft_call(group, &mut r.raw, |raw| {
            raw.propose_conf_change(change.encode(), change.to_raft())
        })??;
        let raft = &r.raw.raft;
        let index = raft.raft_log.last_index();
        let entry_type = raft
            .raft_log
            .entries(index, 1, raft::GetEntriesContext::empty(false))
            .ok()
            .and_then(|e| e.first().map(|e| e.get_entry_type()));
        if entry_type != Some(raft::eraftpb::EntryType::EntryConfChangeV2) {
            // raft-rs replaced it with an empty entry (checked above, so
            // this is a disagreement with raft-rs's own rules).
            return Err(refused(
                "raft-rs did not take it as a membership change".into(),
            ));
        }
        Ok(RaftIndex(index))
    }

    /// Proposes a batch as the group's leader. Refused with
    /// [`ReplicationError::NotLeader`] (and the leader this replica knows)
    /// anywhere else: raft-rs would forward it silently.
    pub fn propose(
        &mut self,
        group: GroupId,
        batch: CheckedBatch,
    ) -> Result<Proposed, ReplicationError> {
        self.touch(group);
        let r = self
            .groups
            .get_mut(&group)
            .ok_or(ReplicationError::UnknownGroup(group))?;
        let raft = &r.raw.raft;
        if raft.state != StateRole::Leader || raft.lead_transferee.is_some() {
            let leader = (raft.leader_id != 0 && raft.leader_id != raft.id)
                .then_some(BrokerId(raft.leader_id));
            return Err(ReplicationError::NotLeader { group, leader });
        }
        let term = Term(raft.term);
        let index = RaftIndex(raft.raft_log.last_index() + 1);
        let stable_last = raft.raft_log.store().last_index();
        let log = crate::storage::lock(raft.raft_log.store().log());
        let base_offset = match r.last_proposed {
            Some((i, t, end)) if t == term && i > stable_last => end,
            _ => log.next_offset(),
        };
        // An idempotent producer's batch is checked against every batch
        // the log holds, committed or not (a leader never cuts its own
        // log, so a previous leader's copy it holds will commit), and this
        // leadership's proposals not yet written: here, on the one thread
        // that proposes, so two copies in flight cannot both pass.
        let sequence = ProducerSequence::of(&batch.header);
        if let Some(seq) = &sequence {
            let written = log.next_raft_index();
            r.pending_producers
                .retain(|p| p.at.raft_index >= written && p.at.term == term);
            match log.producers().check(seq, &r.pending_producers) {
                SequenceCheck::Append => {}
                SequenceCheck::Duplicate(at) => {
                    return Ok(Proposed {
                        index: at.raft_index,
                        term: at.term,
                        base_offset: at.base_offset,
                        next_offset: at.next_offset,
                        duplicate: true,
                    });
                }
                SequenceCheck::OutOfOrder { expected, got } => {
                    return Err(ReplicationError::OutOfOrderSequence {
                        group,
                        producer_id: seq.producer_id,
                        expected,
                        got,
                    });
                }
                SequenceCheck::Fenced { epoch, got } => {
                    return Err(ReplicationError::ProducerFenced {
                        group,
                        producer_id: seq.producer_id,
                        epoch,
                        got,
                    });
                }
            }
        }
        drop(log);
        let next_offset = batch
            .header
            .offset_span()
            .checked_add(base_offset.get())
            .map(Offset)
            .ok_or(ReplicationError::BadEntry {
                index: index.get(),
                reason: "offsets overflow",
            })?;
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgPropose);
        m.from = self.config.id.get();
        m.set_entries(
            vec![Entry {
                data: batch.bytes,
                ..Entry::default()
            }]
            .into(),
        );
        // Appending sends the entry to every follower, reading what a
        // lagging one lacks from the log.
        match raft_call(group, &mut r.raw, |raw| raw.step(m)) {
            Ok(stepped) => stepped?,
            Err(e) => {
                self.stop_unreadable(group, &e);
                return Err(e);
            }
        }
        let appended = RaftIndex(r.raw.raft.raft_log.last_index());
        assert_eq!(appended, index, "a leader appends a proposal at the end");
        r.last_proposed = Some((index, term, next_offset));
        if let Some(sequence) = sequence {
            r.pending_producers.push(ProducerBatch {
                sequence,
                at: StoredAt {
                    base_offset,
                    next_offset,
                    raft_index: index,
                    term,
                },
            });
        }
        Ok(Proposed {
            index,
            term,
            base_offset,
            next_offset,
            duplicate: false,
        })
    }

    /// Asks the group's leader (this broker) to hand leadership to `to`.
    pub fn transfer_leader(
        &mut self,
        group: GroupId,
        to: BrokerId,
    ) -> Result<(), ReplicationError> {
        self.touch(group);
        let r = self
            .groups
            .get_mut(&group)
            .ok_or(ReplicationError::UnknownGroup(group))?;
        raft_call(group, &mut r.raw, |raw| raw.transfer_leader(to.get()))
            .inspect_err(|e| self.stop_unreadable(group, e))
    }

    /// Tells the groups about messages the transport could not send: the
    /// follower is probed again, and a dropped snapshot is retried. Call
    /// between rounds, never between `start_round` and `finish_round`.
    pub fn report_dropped(&mut self, dropped: &[Dropped]) {
        for d in dropped {
            self.touch(d.group);
            if let Some(r) = self.groups.get_mut(&d.group) {
                let reported = raft_call(d.group, &mut r.raw, |raw| {
                    raw.report_unreachable(d.to.get());
                    if d.snapshot {
                        raw.report_snapshot(d.to.get(), raft::SnapshotStatus::Failure);
                    }
                });
                if let Err(e) = reported {
                    self.stop_unreadable(d.group, &e);
                }
            }
        }
    }

    /// Makes this replica campaign now (a one-voter group elects itself at
    /// once instead of after an election timeout).
    pub fn campaign(&mut self, group: GroupId) -> Result<(), ReplicationError> {
        self.touch(group);
        let r = self
            .groups
            .get_mut(&group)
            .ok_or(ReplicationError::UnknownGroup(group))?;
        if r.catching_up.is_some() {
            return Err(ReplicationError::CatchingUp { group });
        }
        match raft_call(group, &mut r.raw, RawNode::campaign) {
            Ok(campaigned) => Ok(campaigned?),
            Err(e) => {
                self.stop_unreadable(group, &e);
                Err(e)
            }
        }
    }
}
