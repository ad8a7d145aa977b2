//! One group's membership on its coordinator, KIP-848 style: members
//! heartbeat; the coordinator keeps a target assignment (from
//! [`super::assignor`]) and moves each member towards it without ever
//! letting two members own a partition at once.
//!
//! A partition moves in two steps. First it leaves its old owner's
//! assignment and waits in that member's `revoking` set; the owner commits,
//! stops reading it, and its next heartbeat no longer lists it as owned.
//! Only then may the new owner's assignment include it. Partitions that do
//! not move are never touched, so they keep being consumed throughout.
//!
//! Epochs: the group epoch moves whenever membership or a subscription
//! changes (and the target is recomputed at it). A member's epoch is the
//! group epoch whose target it has fully reached, so a commit carrying an
//! epoch above the member's, or for a partition the member no longer owns,
//! comes from a stale incarnation and is fenced.
//!
//! Pure: time is passed in (`now_ms`, a monotonic clock), I/O is the
//! caller's. Invariant, asserted after every change: no partition is in
//! two members' `assigned ∪ revoking`.

use std::collections::{BTreeMap, BTreeSet};

use rill_client::protocol::ErrorCode;

use super::assignor::{TopicPartition, assign};
use super::record::{GroupValue, MemberValue};

/// The epoch after `epoch`: epochs are positive, and start again at 1
/// rather than wrap to the negative values that mean "leave" (members
/// holding higher epochs are then fenced and rejoin).
fn next_epoch(epoch: i32) -> i32 {
    epoch.checked_add(1).unwrap_or(1)
}

/// A member as the coordinator keeps it.
#[derive(Debug, Clone)]
pub struct Member {
    /// The client id of its requests.
    pub client_id: String,
    /// The host it connects from.
    pub host: String,
    /// The group epoch whose target it has reached.
    pub epoch: i32,
    /// The topics it subscribes to.
    pub subscribed: BTreeSet<String>,
    /// What it has been told to own.
    pub assigned: BTreeSet<TopicPartition>,
    /// What it has been told to give up and has not yet said it released.
    pub revoking: BTreeSet<TopicPartition>,
    /// When it last heartbeat, ms.
    last_seen_ms: u64,
    /// Since when it has held partitions it was told to give up, ms.
    revoking_since_ms: u64,
}

/// What a heartbeat gets back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatAnswer {
    /// The member's id.
    pub member_id: String,
    /// Its epoch from now on.
    pub member_epoch: i32,
    /// What it should own now (`None` when it left).
    pub assignment: Option<BTreeSet<TopicPartition>>,
}

/// A heartbeat, as the group needs it.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    /// The member's id (empty to join with a coordinator-made id).
    pub member_id: String,
    /// 0 to join, negative to leave, else its current epoch.
    pub member_epoch: i32,
    /// Its subscription, when it sends one.
    pub subscribed: Option<BTreeSet<String>>,
    /// What it owns now, when it says.
    pub owned: Option<BTreeSet<TopicPartition>>,
    /// The client id of the request.
    pub client_id: String,
    /// The host it came from.
    pub host: String,
}

/// The state of a group, as listed and described.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    /// No members.
    Empty,
    /// Some member has not reached its target yet.
    Reconciling,
    /// Every member owns its target.
    Stable,
}

impl GroupState {
    /// The name clients see.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::Reconciling => "Reconciling",
            GroupState::Stable => "Stable",
        }
    }
}

/// Why a commit from a member is refused.
pub type Fenced = ErrorCode;

/// A group's members and target assignment.
#[derive(Debug, Clone, Default)]
pub struct Membership {
    /// Moves whenever membership or a subscription changes.
    pub group_epoch: i32,
    /// The group epoch the target was computed at.
    pub assignment_epoch: i32,
    /// The members, by id.
    pub members: BTreeMap<String, Member>,
    target: BTreeMap<String, BTreeSet<TopicPartition>>,
}

impl Membership {
    /// The group's state.
    pub fn state(&self) -> GroupState {
        if self.members.is_empty() {
            GroupState::Empty
        } else if self.members.iter().all(|(id, m)| {
            m.revoking.is_empty() && self.target.get(id).is_some_and(|t| *t == m.assigned)
        }) {
            GroupState::Stable
        } else {
            GroupState::Reconciling
        }
    }

    /// Handles one heartbeat at `now_ms`. `partitions` gives each existing
    /// topic's partition count; `new_id` makes a member id for a join;
    /// `max_members` bounds the group.
    pub fn heartbeat(
        &mut self,
        hb: Heartbeat,
        now_ms: u64,
        partitions: &BTreeMap<String, u32>,
        new_id: impl FnOnce() -> String,
        max_members: usize,
    ) -> Result<HeartbeatAnswer, ErrorCode> {
        if hb.member_epoch < 0 {
            if self.members.remove(&hb.member_id).is_some() {
                self.membership_changed(partitions);
            }
            self.reconcile_all();
            return Ok(HeartbeatAnswer {
                member_id: hb.member_id,
                member_epoch: hb.member_epoch,
                assignment: None,
            });
        }
        let id = if hb.member_epoch == 0 {
            let Some(subscribed) = hb.subscribed.clone() else {
                return Err(ErrorCode::InvalidRequest);
            };
            let id = if hb.member_id.is_empty() {
                new_id()
            } else {
                hb.member_id.clone()
            };
            // A member rejoining under its id starts over: whatever it had
            // is free for others (it says what it owns below).
            let rejoin = self.members.remove(&id).is_some();
            if !rejoin && self.members.len() >= max_members {
                return Err(ErrorCode::GroupMaxSizeReached);
            }
            self.group_epoch = next_epoch(self.group_epoch);
            self.members.insert(
                id.clone(),
                Member {
                    client_id: hb.client_id.clone(),
                    host: hb.host.clone(),
                    epoch: self.group_epoch,
                    subscribed,
                    assigned: BTreeSet::new(),
                    revoking: BTreeSet::new(),
                    last_seen_ms: now_ms,
                    revoking_since_ms: now_ms,
                },
            );
            self.retarget(partitions);
            id
        } else {
            let group_epoch = self.group_epoch;
            let Some(member) = self.members.get_mut(&hb.member_id) else {
                return Err(ErrorCode::UnknownMemberId);
            };
            if hb.member_epoch > member.epoch {
                return Err(ErrorCode::FencedMemberEpoch);
            }
            // A member claims only what it was given (an older epoch is a
            // member that missed an answer, fine on those terms): anything
            // else is a stale incarnation, or an owner this coordinator
            // does not know of, and must start over.
            if let Some(owned) = &hb.owned
                && owned
                    .iter()
                    .any(|tp| !member.assigned.contains(tp) && !member.revoking.contains(tp))
            {
                return Err(ErrorCode::FencedMemberEpoch);
            }
            member.last_seen_ms = now_ms;
            member.client_id.clone_from(&hb.client_id);
            member.host.clone_from(&hb.host);
            let mut changed = false;
            if let Some(s) = &hb.subscribed
                && *s != member.subscribed
            {
                member.subscribed = s.clone();
                changed = true;
            }
            if let Some(owned) = &hb.owned {
                member.revoking.retain(|tp| owned.contains(tp));
            }
            if changed {
                self.group_epoch = next_epoch(group_epoch);
                self.retarget(partitions);
            }
            hb.member_id.clone()
        };
        self.reconcile_all();
        let member = self
            .members
            .get_mut(&id)
            .expect("the member was just found or added");
        member.last_seen_ms = now_ms;
        Ok(HeartbeatAnswer {
            member_id: id,
            member_epoch: member.epoch,
            assignment: Some(member.assigned.clone()),
        })
    }

    /// Removes members silent for `session_timeout_ms`, or still holding
    /// partitions they were told to give up after `rebalance_timeout_ms`;
    /// returns the ids of those that went.
    pub fn expire(
        &mut self,
        now_ms: u64,
        session_timeout_ms: u64,
        rebalance_timeout_ms: u64,
        partitions: &BTreeMap<String, u32>,
    ) -> Vec<String> {
        let gone: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| {
                now_ms.saturating_sub(m.last_seen_ms) > session_timeout_ms
                    || (!m.revoking.is_empty()
                        && now_ms.saturating_sub(m.revoking_since_ms) > rebalance_timeout_ms)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in &gone {
            self.members.remove(id);
        }
        if !gone.is_empty() {
            self.membership_changed(partitions);
            self.reconcile_all();
        }
        gone
    }

    /// Recomputes the target when topics' partition counts may have
    /// changed (a topic created or deleted); true when it moved.
    pub fn refresh_partitions(&mut self, partitions: &BTreeMap<String, u32>) -> bool {
        let fresh = self.compute(partitions);
        if fresh == self.target {
            return false;
        }
        self.group_epoch = next_epoch(self.group_epoch);
        self.assignment_epoch = self.group_epoch;
        self.target = fresh;
        self.reconcile_all();
        true
    }

    /// Whether a commit for `tp` from `member_id` at `member_epoch` is
    /// from the member that owns it now.
    pub fn check_commit(
        &self,
        member_id: &str,
        member_epoch: i32,
        tp: &TopicPartition,
    ) -> Result<(), Fenced> {
        let Some(m) = self.members.get(member_id) else {
            return Err(ErrorCode::UnknownMemberId);
        };
        if member_epoch > m.epoch || !(m.assigned.contains(tp) || m.revoking.contains(tp)) {
            return Err(ErrorCode::FencedMemberEpoch);
        }
        Ok(())
    }

    /// What is stored of the group: its epochs and each member, as a new
    /// coordinator needs them to carry on.
    pub fn stored(&self) -> (GroupValue, BTreeMap<String, MemberValue>) {
        let epochs = GroupValue {
            group_epoch: self.group_epoch,
            assignment_epoch: self.assignment_epoch,
        };
        let members = self
            .members
            .iter()
            .map(|(id, m)| {
                let value = MemberValue {
                    member_epoch: m.epoch,
                    client_id: m.client_id.clone(),
                    host: m.host.clone(),
                    subscribed: m.subscribed.iter().cloned().collect(),
                    assigned: m.assigned.iter().cloned().collect(),
                    revoking: m.revoking.iter().cloned().collect(),
                    target: self
                        .target
                        .get(id)
                        .map(|t| t.iter().cloned().collect())
                        .unwrap_or_default(),
                };
                (id.clone(), value)
            })
            .collect();
        (epochs, members)
    }

    /// The membership a new coordinator carries on with, from what was
    /// stored; every member's session starts at `now_ms`.
    pub fn restore(
        epochs: GroupValue,
        members: &BTreeMap<String, MemberValue>,
        now_ms: u64,
    ) -> Membership {
        let mut restored = Membership {
            group_epoch: epochs.group_epoch,
            assignment_epoch: epochs.assignment_epoch,
            members: BTreeMap::new(),
            target: BTreeMap::new(),
        };
        // A partition stored under two members (a write lost while its
        // coordinator still led) stays with the first only: never owned
        // twice, whatever the log says.
        let mut seen: BTreeSet<TopicPartition> = BTreeSet::new();
        let mut targeted: BTreeSet<TopicPartition> = BTreeSet::new();
        for (id, m) in members {
            let mut keep = |list: &[TopicPartition]| -> BTreeSet<TopicPartition> {
                list.iter()
                    .filter(|tp| seen.insert((*tp).clone()))
                    .cloned()
                    .collect()
            };
            let assigned = keep(&m.assigned);
            let revoking = keep(&m.revoking);
            restored.members.insert(
                id.clone(),
                Member {
                    client_id: m.client_id.clone(),
                    host: m.host.clone(),
                    epoch: m.member_epoch,
                    subscribed: m.subscribed.iter().cloned().collect(),
                    assigned,
                    revoking,
                    last_seen_ms: now_ms,
                    revoking_since_ms: now_ms,
                },
            );
            restored.target.insert(
                id.clone(),
                m.target
                    .iter()
                    .filter(|tp| targeted.insert((*tp).clone()))
                    .cloned()
                    .collect(),
            );
        }
        restored
    }

    fn membership_changed(&mut self, partitions: &BTreeMap<String, u32>) {
        self.group_epoch = next_epoch(self.group_epoch);
        self.retarget(partitions);
    }

    fn compute(
        &self,
        partitions: &BTreeMap<String, u32>,
    ) -> BTreeMap<String, BTreeSet<TopicPartition>> {
        let subscriptions = self
            .members
            .iter()
            .map(|(id, m)| (id.clone(), m.subscribed.clone()))
            .collect();
        assign(&subscriptions, partitions, &self.target)
    }

    fn retarget(&mut self, partitions: &BTreeMap<String, u32>) {
        self.target = self.compute(partitions);
        self.assignment_epoch = self.group_epoch;
    }

    /// Moves every member as far towards its target as it can go without a
    /// partition being owned twice: revokes first, then hands out what
    /// nobody holds any more.
    fn reconcile_all(&mut self) {
        let empty = BTreeSet::new();
        for (id, m) in &mut self.members {
            let target = self.target.get(id).unwrap_or(&empty);
            let revoked: Vec<TopicPartition> = m.assigned.difference(target).cloned().collect();
            for tp in revoked {
                m.assigned.remove(&tp);
                if m.revoking.is_empty() {
                    m.revoking_since_ms = m.last_seen_ms;
                }
                m.revoking.insert(tp);
            }
        }
        let held: BTreeSet<TopicPartition> = self
            .members
            .values()
            .flat_map(|m| m.assigned.iter().chain(m.revoking.iter()))
            .cloned()
            .collect();
        let mut held = held;
        for (id, m) in &mut self.members {
            let target = self.target.get(id).unwrap_or(&empty);
            // `held` grows as partitions are handed out: two targets naming
            // one partition (never from the assignor) cannot both get it.
            for tp in target.iter() {
                if held.insert(tp.clone()) {
                    m.assigned.insert(tp.clone());
                }
            }
            // A partition it gave up and is now given back is simply kept.
            let back: Vec<TopicPartition> = m.revoking.intersection(target).cloned().collect();
            for tp in back {
                m.revoking.remove(&tp);
                m.assigned.insert(tp);
            }
            if m.revoking.is_empty() && m.assigned == *target {
                m.epoch = self.assignment_epoch;
            }
        }
        self.assert_owned_once();
    }

    fn assert_owned_once(&self) {
        if cfg!(debug_assertions) {
            let mut seen = BTreeSet::new();
            for m in self.members.values() {
                for tp in m.assigned.iter().chain(m.revoking.iter()) {
                    assert!(seen.insert(tp.clone()), "{tp:?} owned twice");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
