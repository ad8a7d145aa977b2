//! Idle groups hibernate: they stop ticking, so a broker holding
//! thousands of replicas at rest spends next to nothing on them (as TiKV's
//! hibernating regions and CockroachDB's quiesced ranges).
//!
//! - A leader whose group has been settled for
//!   [`NodeConfig::quiesce_after_ticks`](super::NodeConfig) ticks (every
//!   entry committed, applied and persisted everywhere, every member
//!   replicating and up, no change, transfer or catch-up under way) sends
//!   one last heartbeat marked [`QUIESCE_CONTEXT`] and stops ticking. A
//!   follower that takes that heartbeat from its leader stops ticking too,
//!   its election clock frozen just after the leader's word: it keeps its
//!   lease. The controller's group never hibernates.
//! - Anything else wakes a group: a peer's message (but the leader's
//!   quiesce heartbeat and the answers to it), a proposal, a transfer, a
//!   campaign, a membership change. A woken leader heartbeats at once
//!   (which wakes its followers) and counts every live member as recently
//!   active, so check-quorum does not depose it for a silence it asked
//!   for.
//! - A hibernating group cannot notice its leader die by missing
//!   heartbeats: the broker tells the node which peers are down
//!   ([`Node::peer_down`], from the transport's liveness) and up again
//!   ([`Node::peer_up`]). A peer down wakes every group it is a member
//!   of; a follower whose leader it was gives up the leader's lease and
//!   campaigns after a delay ranked among the group's live voters, so one
//!   of them asks first and failover takes a few ticks. A vote request from
//!   a replica's own leader (restarted, it lost the lead) also ends that
//!   leader's lease.
//!
//! - A leader's replica that stops or closes on a live broker (its log
//!   failed, its partition went) tells its most caught-up voter to
//!   campaign at once ([`Node::farewell`], raft-rs's `MsgTimeoutNow`, which
//!   overrides the other voters' leases; sent once a tick for a second, in
//!   case one is lost): asleep, its followers would otherwise wait for it
//!   for ever, as its broker stays up.
//!
//! Ticking touches only awake groups ([`Node::awake`](super::Node)).

use raft::StateRole;
use raft::eraftpb::{Message, MessageType};

use std::collections::BTreeSet;

use super::{Node, Replica};
use crate::ids::{BrokerId, GroupId};

/// The context of a leader's last heartbeat before its group hibernates.
pub const QUIESCE_CONTEXT: &[u8] = b"rill:quiesce";

/// Ticks between the delays at which a group's live voters campaign once
/// its leader is down, by rank.
const CAMPAIGN_RANK_TICKS: usize = 2;

/// Ticks a departed leader's `MsgTimeoutNow` is sent again (one a tick):
/// lost, its sleeping followers would wait for it; a copy that arrives
/// after the heir won is of an older term, and ignored.
pub(super) const FAREWELL_TICKS: u32 = 10;

/// A departed leader's `MsgTimeoutNow` to its heir ([`Node::farewell`]),
/// sent once a tick until sent [`FAREWELL_TICKS`] times.
#[derive(Debug)]
pub(super) struct Farewell {
    left: u32,
    due: bool,
    out: crate::outgoing::Outgoing,
}

/// How a message from a peer bears on its group's hibernation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Arrival {
    /// The leader's last heartbeat before hibernating.
    Quiesce,
    /// A follower's answer to a heartbeat: leaves a hibernating leader
    /// asleep.
    HeartbeatAnswer,
    /// Anything else: wakes the group.
    Wakes,
}

/// What `m` does to its group's hibernation.
pub(super) fn arrival(m: &Message) -> Arrival {
    match m.get_msg_type() {
        MessageType::MsgHeartbeat if m.context.as_ref() == QUIESCE_CONTEXT => Arrival::Quiesce,
        MessageType::MsgHeartbeatResponse => Arrival::HeartbeatAnswer,
        _ => Arrival::Wakes,
    }
}

impl Node {
    /// Whether `group` hibernates here.
    pub fn is_hibernating(&self, group: GroupId) -> bool {
        self.groups.get(&group).is_some_and(|r| r.hibernating)
    }

    /// Groups awake here (ticking).
    pub fn awake_groups(&self) -> usize {
        self.awake.len()
    }

    /// Peers found down ([`Node::peer_down`]) and not up since.
    pub fn peers_down(&self) -> usize {
        self.peers_down.len()
    }

    /// Wakes `group` if it hibernates: it ticks again, and as its leader
    /// heartbeats at once.
    pub(super) fn wake(&mut self, group: GroupId) {
        let Some(r) = self.groups.get_mut(&group) else {
            return;
        };
        r.idle_ticks = 0;
        if !r.hibernating {
            return;
        }
        r.hibernating = false;
        self.awake.insert(group);
        self.dirty.insert(group);
        let raft = &mut r.raw.raft;
        if raft.state == StateRole::Leader {
            // Its silence was asked for: check-quorum counts from now.
            raft.election_elapsed = 0;
            let down = &self.peers_down;
            for (id, pr) in raft.mut_prs().iter_mut() {
                pr.recent_active = !down.contains(&BrokerId(*id));
            }
            r.raw.ping();
        }
    }

    /// Takes a message's bearing on a group's hibernation once raft-rs
    /// stepped it: the leader's quiesce heartbeat puts a follower to sleep
    /// (its answer goes without the marker). (A message that wakes its
    /// group did so before it was stepped.)
    pub(super) fn after_step(
        &mut self,
        group: GroupId,
        from: BrokerId,
        term: u64,
        arrived: Arrival,
    ) {
        match arrived {
            Arrival::Wakes | Arrival::HeartbeatAnswer => {}
            Arrival::Quiesce => {
                // A leader found down meanwhile (its last heartbeat read
                // before it died, stepped after) gets no sleeping follower:
                // `peer_down` came and went.
                if self.peers_down.contains(&from) {
                    return;
                }
                let Some(r) = self.groups.get_mut(&group) else {
                    return;
                };
                let raft = &mut r.raw.raft;
                let follows = raft.state == StateRole::Follower
                    && raft.leader_id == from.get()
                    && raft.term == term;
                if !follows || r.catching_up.is_some() {
                    return;
                }
                for m in raft.msgs.iter_mut() {
                    if m.get_msg_type() == MessageType::MsgHeartbeatResponse {
                        m.context = Default::default();
                    }
                }
                r.hibernating = true;
                r.idle_ticks = 0;
                self.awake.remove(&group);
            }
        }
    }

    /// Whether the leader of `group` may put it to sleep now (see the
    /// module documentation).
    fn settled(&self, group: GroupId) -> bool {
        let Some(r) = self.groups.get(&group) else {
            return false;
        };
        let raft = &r.raw.raft;
        let log = &raft.raft_log;
        let last = log.last_index();
        let m = &r.raw.store().state().membership;
        group != GroupId::CONTROLLER
            && !self.peers_down.iter().any(|b| m.contains(*b))
            && raft.state == StateRole::Leader
            && raft.lead_transferee.is_none()
            && !raft.has_pending_conf()
            && !m.is_joint()
            && r.catching_up.is_none()
            && r.unsynced.is_empty()
            && log.committed == last
            && log.applied == last
            && log.persisted == last
            && !r.raw.store().state_sync_pending()
            && raft.prs().iter().all(|(&id, pr)| {
                id == raft.id
                    || (pr.state == raft::ProgressState::Replicate
                        && pr.matched == last
                        && pr.committed_index == last
                        && pr.ins.count() == 0)
            })
    }

    /// After a tick: counts the idle ticks of `group` if it leads here, and
    /// puts it to sleep once it has been settled long enough.
    pub(super) fn maybe_quiesce(&mut self, group: GroupId) {
        let Some(after) = self.config.quiesce_after_ticks else {
            return;
        };
        let settled = self.settled(group);
        let Some(r) = self.groups.get_mut(&group) else {
            return;
        };
        if !settled {
            r.idle_ticks = 0;
            return;
        }
        r.idle_ticks += 1;
        if r.idle_ticks < after {
            return;
        }
        // The last heartbeat, marked: followers that take it stop ticking.
        r.raw.ping();
        for m in r.raw.raft.msgs.iter_mut() {
            if m.get_msg_type() == MessageType::MsgHeartbeat {
                m.context = bytes::Bytes::from_static(QUIESCE_CONTEXT);
            }
        }
        r.hibernating = true;
        r.idle_ticks = 0;
        self.awake.remove(&group);
        self.dirty.insert(group);
    }

    /// Takes the transport's word that broker `peer` is down: every group
    /// it is a member of wakes, and each follower whose leader it was gives
    /// up the lease and campaigns after a delay ranked among the group's
    /// live voters (the first asks on the next tick or two).
    pub fn peer_down(&mut self, peer: BrokerId) {
        if !self.peers_down.insert(peer) {
            return;
        }
        let me = self.config.id;
        let groups: Vec<GroupId> = self
            .groups
            .iter()
            .filter(|(_, r)| r.raw.store().state().membership.contains(peer))
            .map(|(g, _)| *g)
            .collect();
        tracing::info!(%peer, groups = groups.len(), "peer down: its groups here wake");
        let down = self.peers_down.clone();
        for group in groups {
            self.wake(group);
            let Some(r) = self.groups.get_mut(&group) else {
                continue;
            };
            let membership = r.raw.store().state().membership.clone();
            let raft = &mut r.raw.raft;
            if raft.state != StateRole::Follower
                || raft.leader_id != peer.get()
                || r.catching_up.is_some()
                || !membership.is_voter(me)
            {
                continue;
            }
            let term = raft.term;
            raft.become_follower(term, raft::INVALID_ID);
            // Rank among the live voters, rotated by group so that the
            // first to ask is spread over the brokers.
            let mut live: Vec<BrokerId> = membership
                .voters
                .iter()
                .chain(&membership.voters_outgoing)
                .copied()
                .filter(|b| !down.contains(b))
                .collect();
            live.sort();
            live.dedup();
            let rank = live.iter().position(|b| *b == me).map_or(0, |at| {
                (at + live.len() - (group.get() as usize % live.len().max(1))) % live.len().max(1)
            });
            let timeout = raft.randomized_election_timeout();
            raft.election_elapsed = timeout.saturating_sub(1 + CAMPAIGN_RANK_TICKS * rank);
            self.dirty.insert(group);
        }
    }

    /// Takes the transport's word that broker `peer` is up again: groups
    /// led here that it is a member of wake and heartbeat, so its replicas
    /// learn their leaders at once, and its progress is probed again (it
    /// may be a new incarnation that lost its log, or not have opened its
    /// replicas yet): none of them sleeps before it has answered.
    pub fn peer_up(&mut self, peer: BrokerId) {
        if !self.peers_down.remove(&peer) {
            return;
        }
        self.peer_reconnected(peer);
    }

    /// `peer` connected again, perhaps too soon after it went to be found
    /// down (a broker restarted at once, with its disk or without): the
    /// groups led here that it is a member of wake and probe it, as a
    /// replica that lost its log (a rejoining one) neither campaigns nor
    /// sends anything until its leader does.
    pub fn peer_reconnected(&mut self, peer: BrokerId) {
        let me = self.config.id.get();
        let groups: Vec<GroupId> = self
            .groups
            .iter()
            .filter(|(_, r)| {
                r.raw.raft.leader_id == me && r.raw.store().state().membership.contains(peer)
            })
            .map(|(g, _)| *g)
            .collect();
        for group in groups {
            self.wake(group);
            if let Some(pr) = self
                .groups
                .get_mut(&group)
                .and_then(|r| r.raw.raft.mut_prs().get_mut(peer.get()))
            {
                pr.become_probe();
            }
        }
    }

    /// Before `group`'s replica goes while it leads with other voters (its
    /// log failed, its partition was closed here): a `MsgTimeoutNow` to
    /// its most caught-up voter, which campaigns at once, past the other
    /// voters' leases. Sent with the next round.
    pub(super) fn farewell(&mut self, group: GroupId) {
        let Some(r) = self.groups.get(&group) else {
            return;
        };
        let raft = &r.raw.raft;
        if raft.state != StateRole::Leader {
            return;
        }
        let m = &r.raw.store().state().membership;
        let heir = raft
            .prs()
            .iter()
            .filter(|(id, _)| **id != raft.id && m.voters.contains(&BrokerId(**id)))
            .filter(|(id, _)| !self.peers_down.contains(&BrokerId(**id)))
            .max_by_key(|(id, pr)| (pr.matched, std::cmp::Reverse(**id)))
            .map(|(id, _)| *id);
        let Some(to) = heir else {
            return;
        };
        let mut message = Message {
            from: raft.id,
            to,
            term: raft.term,
            ..Message::default()
        };
        message.set_msg_type(MessageType::MsgTimeoutNow);
        tracing::info!(%group, heir = to, "a leading replica goes: its heir campaigns now");
        self.farewells.push(Farewell {
            left: FAREWELL_TICKS,
            due: true,
            out: crate::outgoing::Outgoing {
                to: BrokerId(to),
                group,
                message,
                spans: Vec::new(),
            },
        });
    }

    /// The departed leaders' messages to send with this round (see
    /// [`Farewell`]).
    pub(super) fn farewells_to_send(&mut self) -> Vec<crate::outgoing::Outgoing> {
        self.farewells
            .iter_mut()
            .filter(|f| f.due)
            .map(|f| {
                f.due = false;
                f.left -= 1;
                f.out.clone()
            })
            .collect()
    }

    /// A tick: each departed leader's message is due again, until sent
    /// [`FAREWELL_TICKS`] times.
    pub(super) fn farewell_tick(&mut self) {
        self.farewells.retain(|f| f.left > 0);
        for f in &mut self.farewells {
            f.due = true;
        }
    }
}

/// Before a vote request from a peer is stepped into `r`: one from the
/// replica's own leader, or while its leader is among `peers_down`, ends
/// the leader's lease (raft-rs would ignore the request while the lease
/// holds, and a hibernating follower's lease never runs out).
pub(super) fn end_lease_for(r: &mut Replica, peers_down: &BTreeSet<BrokerId>, m: &Message) {
    let asks = matches!(
        m.get_msg_type(),
        MessageType::MsgRequestVote | MessageType::MsgRequestPreVote
    );
    let raft = &mut r.raw.raft;
    let leader = raft.leader_id;
    if asks
        && m.term > raft.term
        && raft.state == StateRole::Follower
        && leader != raft::INVALID_ID
        && (leader == m.from || peers_down.contains(&BrokerId(leader)))
    {
        let term = raft.term;
        raft.become_follower(term, raft::INVALID_ID);
    }
}
