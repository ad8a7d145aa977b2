//! Steps 2 and 3 of an iteration: a round's Readies, from
//! [`Node::start_round`] through [`Node::write_round`] to
//! [`Node::finish_round`], and how a group that fails stops.
//!
//! Invariants kept here, in raft-rs's documented order per group:
//! - a Ready's `messages()` may leave before anything is durable; its
//!   `persisted_messages()` only once its syncs ran (a deferred Ready's
//!   heartbeat responses excepted: see `sync`);
//! - a snapshot is installed first, then the committed entries are applied
//!   (raft-rs hands out only entries already durable here), then entries
//!   and hard state are written; of the hard state, only a new term or
//!   vote asks for a sync, whatever the topic's durability mode;
//! - the high watermark never moves back;
//! - a round installs at most [`SNAPSHOT_INSTALLS_PER_ROUND_MAX`]
//!   snapshots;
//! - a group that fails is removed and reported ([`Event::Failed`]), and
//!   what retention took from it is never unlinked.

use raft::eraftpb::{Entry, EntryType, Message, MessageType};
use raft::{RawNode, Ready, StateRole};
use rill_storage::{RaftIndex, Term};

use super::{Event, Failure, Node, Outgoing, Replica, SyncJob, SyncResult};
use crate::contain::raft_call;
use crate::error::ReplicationError;
use crate::ids::{BrokerId, GroupId};

/// Snapshots one round installs, at most: each is synced and replaces the
/// group's segments inside the round, on the thread that runs every
/// group's heartbeats.
pub const SNAPSHOT_INSTALLS_PER_ROUND_MAX: usize = 8;

/// The Readies of a round, held across its syncs.
#[derive(Debug)]
#[must_use = "hand the round back to Node::finish_round"]
pub struct Round {
    /// Each group's Ready, with the index it lets the group apply through
    /// (its last committed entry, or its snapshot), 0 for none.
    pub(super) readies: Vec<(GroupId, Ready, u64)>,
    /// Snapshots sent in the round, by group and follower.
    pub(super) snapshots: Vec<(GroupId, BrokerId)>,
    /// Messages of deferred Readies that need not wait for their syncs
    /// (see [`Node::defer_syncs`]), sent by [`Node::finish_round`].
    pub(super) early: Vec<Outgoing>,
}

impl Round {
    /// Whether the round handled nothing.
    pub fn is_empty(&self) -> bool {
        self.readies.is_empty()
    }
}

impl Node {
    /// Step 2 of an iteration, first half: see the module documentation.
    /// Messages that may leave now are pushed to `out`, events to `events`.
    /// Nothing is written yet: call [`Node::write_round`] next, with no
    /// other call on this node in between.
    pub fn start_round(&mut self, out: &mut Vec<Outgoing>, events: &mut Vec<Event>) -> Round {
        events.extend(self.take_stopped());
        out.extend(self.farewells_to_send());
        // A leader whose log failed a read for a follower skipped that send
        // without a panic; it stops before it would read again.
        let unreadable: Vec<_> = self
            .dirty
            .iter()
            .filter_map(|&group| {
                let r = self.groups.get(&group)?;
                crate::contain::unreadable(group, &r.raw).map(|e| (group, e))
            })
            .collect();
        for (group, e) in unreadable {
            self.fail(group, (&e).into(), events);
        }
        let mut unreadable = Vec::new();
        let mut readies = Vec::new();
        let mut snapshots = Vec::new();
        let mut installs_left = SNAPSHOT_INSTALLS_PER_ROUND_MAX;
        for group in std::mem::take(&mut self.dirty) {
            let Some(r) = self.groups.get_mut(&group) else {
                continue;
            };
            if !r.raw.has_ready() {
                continue;
            }
            // A Ready held back (a state sync in flight, the round's
            // snapshot installs used up) is looked at again next round.
            // Taken, the group is looked at again once the round is done.
            self.dirty.insert(group);
            if !r.may_ready() {
                continue;
            }
            // A snapshot is installed inside its round (synced, the old
            // segments unlinked): a broker back after a long absence may
            // have one for every group, and all of them in one round
            // would hold every heartbeat. The rest wait for later rounds.
            if r.raw.raft.raft_log.unstable_snapshot().is_some() {
                if installs_left == 0 {
                    continue;
                }
                installs_left -= 1;
            }
            // The Ready holds the committed entries, read from the log.
            let mut rd = match raft_call(group, &mut r.raw, RawNode::ready) {
                Ok(rd) => rd,
                Err(e) => {
                    unreadable.push((group, e));
                    continue;
                }
            };
            if let Some(ss) = rd.ss() {
                let leader = (ss.leader_id != 0).then_some(BrokerId(ss.leader_id));
                r.leader = leader;
                if ss.raft_state != StateRole::Leader {
                    r.last_proposed = None;
                    r.pending_producers.clear();
                }
                events.push(Event::RoleChanged {
                    group,
                    leader,
                    is_leader: ss.raft_state == StateRole::Leader,
                    term: Term(r.raw.raft.term),
                });
            }
            push_messages(group, rd.take_messages(), out, &mut snapshots);
            readies.push((group, rd, 0));
        }
        for (group, e) in unreadable {
            self.fail(group, (&e).into(), events);
        }
        Round {
            readies,
            snapshots,
            early: Vec::new(),
        }
    }

    /// Notes where the data entries of the appends in `out` lie in their
    /// groups' segment files, so that a sender sends them from there
    /// rather than copying them from memory. Only entries written here are
    /// found: call it once the round is written ([`Node::write_round`]).
    pub fn attach_file_spans(&self, out: &mut [Outgoing]) {
        let large = |e: &raft::eraftpb::Entry| e.data.len() >= crate::wire::ZERO_COPY_BYTES_MIN;
        for o in out.iter_mut() {
            let entries = o.message.get_entries();
            if o.message.get_msg_type() != MessageType::MsgAppend || !entries.iter().any(large) {
                continue;
            }
            let Some(r) = self.groups.get(&o.group) else {
                continue;
            };
            let log = crate::storage::lock(r.raw.store().log());
            o.spans = entries
                .iter()
                .map(|e| {
                    large(e)
                        .then(|| log.file_span(RaftIndex(e.index), Term(e.term)))
                        .flatten()
                })
                .collect();
        }
    }

    /// Step 2 of an iteration, second half: writes what the round's Readies
    /// hold (snapshot, entries, hard state) and pushes the syncs it needs
    /// to `jobs`. A group whose write fails stops (an [`Event::Failed`]).
    pub fn write_round(
        &mut self,
        round: &mut Round,
        jobs: &mut Vec<SyncJob>,
        events: &mut Vec<Event>,
    ) {
        let mut failed = Vec::new();
        round.readies.retain_mut(|(group, rd, applies)| {
            let Some(r) = self.groups.get_mut(group) else {
                return false;
            };
            match persist(*group, r, rd, jobs, events) {
                Ok(through) => {
                    *applies = through;
                    true
                }
                Err(e) => {
                    failed.push((*group, e));
                    false
                }
            }
        });
        for (group, e) in failed {
            self.fail(group, (&e).into(), events);
        }
    }

    /// Step 3 of an iteration: see the module documentation.
    pub fn finish_round(
        &mut self,
        round: Round,
        results: Vec<SyncResult>,
        out: &mut Vec<Outgoing>,
        events: &mut Vec<Event>,
    ) {
        let mut failed = self.record_syncs(results);
        out.extend(round.early);
        let mut snapshots = round.snapshots;
        for (group, rd, _) in round.readies {
            if failed.contains_key(&group) {
                continue;
            }
            self.dirty.insert(group);
            let Some(r) = self.groups.get_mut(&group) else {
                continue;
            };
            if let Err(e) = advance(group, r, rd, out, events, &mut snapshots) {
                failed.insert(group, (&e).into());
            }
        }
        // A snapshot is tiny (the log start point) and sent in one message:
        // once handed out it counts as delivered. If it was lost, the
        // follower rejects the next append and the leader sends another.
        for (group, to) in snapshots {
            if let Some(r) = self.groups.get_mut(&group) {
                r.raw
                    .report_snapshot(to.get(), raft::SnapshotStatus::Finish);
            }
        }
        for (group, failure) in failed {
            self.fail(group, failure, events);
        }
    }

    /// The groups stopped between rounds (a raft-rs call on them hit an
    /// unreadable log), as [`Event::Failed`]s: the next round reports them,
    /// and a caller that opens replicas between rounds takes them first,
    /// so it never reopens a group whose failure it has not yet heard of.
    pub fn take_stopped(&mut self) -> Vec<Event> {
        self.stopped_between_rounds
            .drain(..)
            .map(|(group, f)| Event::Failed {
                group,
                reason: f.reason,
                damaged: f.damaged,
            })
            .collect()
    }

    /// Drops a group whose raft-rs call hit its unreadable log, or whose
    /// state could not be made durable, between rounds;
    /// [`Node::take_stopped`] reports it.
    pub(super) fn stop_unreadable(&mut self, group: GroupId, e: &ReplicationError) {
        tracing::error!(%group, reason = %e, "replica stopped between rounds (a panic raft-rs reported for it, if any, is contained to it)");
        self.retention_waiting.remove(&group);
        self.dirty.remove(&group);
        self.farewell(group);
        self.groups.remove(&group);
        self.stopped_between_rounds.push((group, e.into()));
    }

    pub(super) fn fail(&mut self, group: GroupId, failure: Failure, events: &mut Vec<Event>) {
        tracing::error!(%group, reason = %failure.reason, "replica stopped");
        // Never unlinked: the new snapshot point may not be durable.
        self.retention_waiting.remove(&group);
        self.dirty.remove(&group);
        self.farewell(group);
        self.groups.remove(&group);
        events.push(Event::Failed {
            group,
            reason: failure.reason,
            damaged: failure.damaged,
        });
    }
}

/// Moves a Ready's messages to `out`, noting the snapshots among them.
pub(super) fn push_messages(
    group: GroupId,
    msgs: Vec<Message>,
    out: &mut Vec<Outgoing>,
    snapshots: &mut Vec<(GroupId, BrokerId)>,
) {
    for message in msgs {
        let to = BrokerId(message.to);
        if message.get_msg_type() == MessageType::MsgSnapshot {
            snapshots.push((group, to));
        }
        out.push(Outgoing {
            to,
            group,
            message,
            spans: Vec::new(),
        });
    }
}

/// Writes a Ready's snapshot, applies its committed entries, writes its
/// entries and hard state, and queues their syncs. Returns the index the
/// Ready lets the group apply through (0 for none).
fn persist(
    group: GroupId,
    r: &mut Replica,
    rd: &mut Ready,
    jobs: &mut Vec<SyncJob>,
    events: &mut Vec<Event>,
) -> Result<u64, ReplicationError> {
    let mut applies = rd.snapshot().get_metadata().index;
    let life = r.life(group);
    let is_leader = r.raw.raft.state == StateRole::Leader;
    let fsync = r.fsync;
    if !rd.snapshot().is_empty() {
        let store = r.raw.mut_store();
        store.apply_snapshot(rd.snapshot())?;
        let index = RaftIndex(rd.snapshot().get_metadata().index);
        let next_offset = store.state().truncated.next_offset;
        let hw = next_offset.max(r.high_watermark);
        r.high_watermark = hw;
        events.push(Event::Restored {
            group,
            index,
            next_offset,
        });
        events.push(Event::Committed {
            group,
            index,
            high_watermark: hw,
        });
    }
    // A Ready's committed entries are committed and already durable here
    // (raft-rs hands out none beyond the persisted index), so they are
    // applied now, as raft-rs's own example does, rather than after this
    // round's syncs: a produce waiting on them is answered one sync sooner.
    let committed = rd.take_committed_entries();
    if let Some(last) = committed.last() {
        applies = applies.max(last.index);
    }
    apply(group, r, committed, events)?;
    let store = r.raw.mut_store();
    if let Some(last) = rd.entries().last() {
        let last = (RaftIndex(last.index), Term(last.term));
        // Every entry was checked as it reached this replica: a leader's
        // own when proposed, a follower's when its append arrived (`step`).
        store.append(rd.entries(), true)?;
        if fsync {
            jobs.push(SyncJob::log(life, store.sync_plan()));
        }
        if is_leader {
            events.push(Event::Appended {
                group,
                index: last.0,
                term: last.1,
            });
        }
    }
    if let Some(hs) = rd.hs() {
        // Only a new term or vote must be synced before messages leave (the
        // entries are synced with the log; the commit index is a hint that
        // is learnt again). Term and vote are synced whatever the topic's
        // durability mode: rare, and a vote forgotten by a machine crash
        // could elect two leaders in one term.
        let before = store.state().hard;
        let durable =
            before.term.get() != hs.term || before.vote.map_or(0, BrokerId::get) != hs.vote;
        if let Some(sync) = store.set_hard_state(hs, durable)? {
            jobs.push(SyncJob::state(life, sync));
        }
    }
    Ok(applies)
}

/// The rest of a Ready once its syncs ran, then its LightReady.
fn advance(
    group: GroupId,
    r: &mut Replica,
    mut rd: Ready,
    out: &mut Vec<Outgoing>,
    events: &mut Vec<Event>,
    snapshots: &mut Vec<(GroupId, BrokerId)>,
) -> Result<(), ReplicationError> {
    push_messages(group, rd.take_persisted_messages(), out, snapshots);
    debug_assert!(rd.committed_entries().is_empty(), "applied when written");
    // The LightReady holds the entries committed since, read from the log.
    let mut light = raft_call(group, &mut r.raw, |raw| raw.advance(rd))?;
    push_messages(group, light.take_messages(), out, snapshots);
    // Applied before the commit index is saved: a saved commit never
    // passes what was applied (a membership change it covers is saved
    // with it).
    apply(group, r, light.take_committed_entries(), events)?;
    if let Some(commit) = light.commit_index() {
        r.raw.mut_store().set_commit(RaftIndex(commit))?;
    }
    raft_call(group, &mut r.raw, RawNode::advance_apply)?;
    Ok(())
}

/// Applies committed entries: a partition's state machine is its log, so
/// applying moves the high watermark; a membership change is applied to
/// raft-rs and recorded in the replica's state (saved with the commit
/// index that covers it).
fn apply(
    group: GroupId,
    r: &mut Replica,
    entries: Vec<Entry>,
    events: &mut Vec<Event>,
) -> Result<(), ReplicationError> {
    let Some(last) = entries.last() else {
        return Ok(());
    };
    for e in &entries {
        if e.get_entry_type() == EntryType::EntryConfChangeV2 {
            apply_membership_change(group, r, e, events)?;
        }
    }
    let index = RaftIndex(last.index);
    let hw = r.raw.store().next_offset_after(index)?;
    assert!(
        hw >= r.high_watermark,
        "the high watermark never moves back"
    );
    r.high_watermark = hw;
    r.raw.mut_store().set_applied(index);
    events.push(Event::Committed {
        group,
        index,
        high_watermark: hw,
    });
    Ok(())
}

/// Applies the membership change committed at `e`, unless the replica's
/// membership holds it already (it is at or below the membership index:
/// handed out again after a restart, or covered by a snapshot). A change
/// that does not apply to the membership is skipped, as raft-rs allows:
/// every replica skips it alike, since each applies the same entries to
/// the same memberships. A leader the change leaves without a vote steps
/// down at once (raft-rs 0.7 would keep leading, and fail on its next
/// commit without itself among the voters).
fn apply_membership_change(
    group: GroupId,
    r: &mut Replica,
    e: &Entry,
    events: &mut Vec<Event>,
) -> Result<(), ReplicationError> {
    let index = RaftIndex(e.index);
    let state = r.raw.store().state();
    if index <= state.membership_index {
        return Ok(());
    }
    // Checked when proposed here or when received: a failure is damage.
    let change =
        crate::conf::check_entry(&e.data, &e.context).map_err(|_| ReplicationError::BadEntry {
            index: e.index,
            reason: "a committed membership change rill did not encode",
        })?;
    let next = match state.membership.apply(&change) {
        Ok(next) => next,
        Err(why) => {
            tracing::warn!(%group, index = e.index, %why, "membership change skipped");
            return Ok(());
        }
    };
    let cs = raft_call(group, &mut r.raw, |raw| {
        raw.apply_conf_change(&change.to_raft())
    })?
    .map_err(|_| ReplicationError::BadEntry {
        index: e.index,
        reason: "a membership change raft-rs refused after rill accepted it",
    })?;
    if crate::state::Membership::from_raft(&cs).normalized() != next.normalized() {
        return Err(ReplicationError::BadEntry {
            index: e.index,
            reason: "raft-rs and rill disagree on a membership",
        });
    }
    tracing::info!(%group, index = e.index, ?change, voters = ?next.voters, learners = ?next.learners, outgoing = ?next.voters_outgoing, "membership changed");
    let me = BrokerId(r.raw.raft.id);
    r.raw.mut_store().set_membership(index, next.normalized());
    if r.raw.raft.state == StateRole::Leader && !next.is_voter(me) {
        let term = r.raw.raft.term;
        r.raw.raft.become_follower(term, raft::INVALID_ID);
        r.leader = None;
        r.last_proposed = None;
        r.pending_producers.clear();
        events.push(Event::RoleChanged {
            group,
            leader: None,
            is_leader: false,
            term: Term(term),
        });
    }
    Ok(())
}
