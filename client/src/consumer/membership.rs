//! One consumer group member's state, with no I/O (KIP-848's protocol as
//! rill's coordinator speaks it): joining, the member id and epoch the
//! coordinator gives, the partitions the member owns, what the next
//! `ConsumerGroupHeartbeat` carries and when it is due, the partitions the
//! consumer must start, give up or drop, what a commit may cover, and
//! leaving.
//!
//! The clock is the caller's: every call that moves time takes `now_ms`,
//! milliseconds on any monotonic scale, so tests drive it by hand.
//!
//! The coordinator's answers move the target assignment; the consumer
//! learns what to do by [`Membership::take_changes`], which compares what
//! it owns with the latest target at that moment. Answers that arrive
//! while the consumer is busy therefore coalesce: a partition revoked and
//! given back before the consumer looked is never paused.
//!
//! Invariants:
//! - `revoking ⊆ owned`, and a partition leaves `owned` only when the
//!   consumer releases it ([`Membership::released`]) or the member is
//!   removed (it is then lost); so once released, a partition the target
//!   excludes is never owned again until a later answer assigns it.
//! - Every heartbeat's `owned` is exactly `owned`: the coordinator hands a
//!   revoked partition on only once no heartbeat lists it.
//! - The member id and epoch are only ever the ones the latest successful
//!   answer gave, or the protocol's fixed values (0 to join, -1 to leave).
//! - A commit covers only partitions owned now, under the epoch of now:
//!   partitions lost when the member was removed are never committed.
//! - At most one heartbeat is in flight.

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use super::Key;
use crate::error::ClientError;
use crate::protocol::ErrorCode;
use crate::protocol::messages::{
    ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse, JOIN_GROUP_MEMBER_EPOCH,
    LEAVE_GROUP_MEMBER_EPOCH, OffsetCommitPartition, OffsetCommitRequest, OffsetCommitTopic,
    TopicPartitions,
};

/// First pause before a heartbeat that failed for a retriable reason is
/// sent again, ms (doubled on each failure in a row).
pub const HEARTBEAT_RETRY_MS_MIN: u64 = 100;
/// Longest pause before a failed heartbeat is sent again, ms.
pub const HEARTBEAT_RETRY_MS_MAX: u64 = 1_000;
/// Shortest heartbeat interval taken from a coordinator, ms: an answer of
/// 0 must not turn heartbeats into a busy loop.
pub const HEARTBEAT_INTERVAL_MS_MIN: u64 = 10;

/// The offset a commit sets for one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitOffset {
    /// The next offset to read: one past the last record processed.
    pub offset: u64,
    /// The leader epoch of the last record processed, or 0 when unknown.
    pub leader_epoch: u64,
}

/// What the consumer must do to catch up with the coordinator.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Changes {
    /// Partitions the member lost when the coordinator removed it: stop
    /// reading them at once and never commit them (another member may
    /// have them already).
    pub lost: BTreeSet<Key>,
    /// Partitions revoked: stop reading them, commit them if committing
    /// automatically, then release them ([`Membership::released`]).
    pub revoked: BTreeSet<Key>,
    /// Partitions newly assigned: start reading them from the group's
    /// committed offsets.
    pub assigned: BTreeSet<Key>,
}

impl Changes {
    /// Whether there is nothing to do.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.lost.is_empty() && self.revoked.is_empty() && self.assigned.is_empty()
    }
}

/// Where a member stands in its group.
#[derive(Debug, Clone)]
pub(crate) enum Phase {
    /// No member id yet: the next heartbeat joins (epoch 0).
    Joining,
    /// A member with an id and epoch.
    Member,
    /// Leaving: the next heartbeat (epoch -1) is the last.
    Leaving,
    /// Left the group, or gave up leaving.
    Left,
    /// The coordinator refused the member for good (such as a full group
    /// or an invalid group id).
    Failed(ClientError),
}

/// Which kind of heartbeat is awaiting its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    Heartbeat,
    Leave,
}

/// One group member's state.
#[derive(Debug)]
pub(crate) struct Membership {
    group: String,
    topics: Vec<String>,
    phase: Phase,
    member_id: String,
    member_epoch: i32,
    /// The latest assignment the coordinator gave.
    target: BTreeSet<Key>,
    /// What the consumer was handed and has not released or lost.
    owned: BTreeSet<Key>,
    /// The part of `owned` the consumer was told to give up.
    revoking: BTreeSet<Key>,
    /// What the member lost when it was removed, not yet told.
    lost: BTreeSet<Key>,
    heartbeat_interval_ms: u64,
    in_flight: Option<Sent>,
    next_at_ms: u64,
    /// Whether `owned` shrank since the last heartbeat was built: the
    /// coordinator is waiting to hear it, so the next one goes at once.
    released_since_sent: bool,
    retry_ms: u64,
}

/// A fresh member id: 32 hex digits from the process's randomly keyed
/// hasher, the clock and the process id, unique among the members of a
/// group in practice.
fn new_member_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut id = String::with_capacity(32);
    for half in 0..2u8 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u8(half);
        h.write_u128(nanos);
        h.write_u32(std::process::id());
        id.push_str(&format!("{:016x}", h.finish()));
    }
    id
}

impl Membership {
    /// A member about to join `group` subscribed to `topics`; its first
    /// heartbeat is due at once.
    pub fn new(group: String, topics: Vec<String>, now_ms: u64) -> Membership {
        Membership {
            group,
            topics,
            phase: Phase::Joining,
            member_id: String::new(),
            member_epoch: JOIN_GROUP_MEMBER_EPOCH,
            target: BTreeSet::new(),
            owned: BTreeSet::new(),
            revoking: BTreeSet::new(),
            lost: BTreeSet::new(),
            heartbeat_interval_ms: HEARTBEAT_INTERVAL_MS_MIN,
            in_flight: None,
            next_at_ms: now_ms,
            released_since_sent: false,
            retry_ms: HEARTBEAT_RETRY_MS_MIN,
        }
    }

    /// The group id.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// Where the member stands.
    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    /// The member id the coordinator gave (empty while joining).
    #[cfg(test)]
    pub fn member_id(&self) -> &str {
        &self.member_id
    }

    /// The member epoch of the latest answer (0 while joining).
    pub fn member_epoch(&self) -> i32 {
        self.member_epoch
    }

    /// The partitions the consumer holds, revoked ones not yet released
    /// included.
    #[cfg(test)]
    pub fn owned(&self) -> &BTreeSet<Key> {
        &self.owned
    }

    /// The latest assignment.
    #[cfg(test)]
    pub fn target(&self) -> &BTreeSet<Key> {
        &self.target
    }

    /// When the next heartbeat is due, on the caller's clock; `None` while
    /// one is in flight, and once the member has left or failed.
    pub fn next_heartbeat_at_ms(&self) -> Option<u64> {
        match self.phase {
            Phase::Left | Phase::Failed(_) => None,
            _ if self.in_flight.is_some() => None,
            _ => Some(self.next_at_ms),
        }
    }

    /// Whether [`Membership::take_changes`] has something to hand out.
    pub fn has_changes(&self) -> bool {
        !self.lost.is_empty()
            || self
                .owned
                .iter()
                .any(|p| !self.target.contains(p) && !self.revoking.contains(p))
            || (matches!(self.phase, Phase::Member)
                && self.target.iter().any(|p| !self.owned.contains(p)))
    }

    /// The heartbeat to send now, if one is due; it is then in flight until
    /// [`Membership::on_answer`] or [`Membership::on_failure`].
    pub fn heartbeat(&mut self, now_ms: u64) -> Option<ConsumerGroupHeartbeatRequest> {
        if self.in_flight.is_some() || now_ms < self.next_at_ms {
            return None;
        }
        let (member_epoch, subscribed_topics, sent) = match self.phase {
            Phase::Joining => {
                // The id is this member's from its first join on: a join
                // retried after its answer was lost is the same member to
                // the coordinator, not a second one holding partitions
                // until its session ends.
                if self.member_id.is_empty() {
                    self.member_id = new_member_id();
                }
                (
                    JOIN_GROUP_MEMBER_EPOCH,
                    Some(self.topics.clone()),
                    Sent::Heartbeat,
                )
            }
            Phase::Member => (self.member_epoch, None, Sent::Heartbeat),
            Phase::Leaving if self.member_id.is_empty() => {
                // Never joined: there is nothing to leave.
                self.phase = Phase::Left;
                return None;
            }
            Phase::Leaving => (LEAVE_GROUP_MEMBER_EPOCH, None, Sent::Leave),
            Phase::Left | Phase::Failed(_) => return None,
        };
        self.in_flight = Some(sent);
        self.released_since_sent = false;
        Some(ConsumerGroupHeartbeatRequest {
            group: self.group.clone(),
            member_id: self.member_id.clone(),
            member_epoch,
            subscribed_topics,
            owned: Some(to_topic_partitions(&self.owned)),
        })
    }

    /// Takes the coordinator's answer to the heartbeat in flight.
    pub fn on_answer(&mut self, now_ms: u64, answer: ConsumerGroupHeartbeatResponse) {
        let Some(sent) = self.in_flight.take() else {
            return;
        };
        if sent == Sent::Leave {
            self.phase = Phase::Left;
            return;
        }
        if matches!(self.phase, Phase::Left | Phase::Failed(_)) {
            return;
        }
        match answer.error {
            ErrorCode::None => self.accept(now_ms, answer),
            code => self.refused(now_ms, code, None),
        }
    }

    /// The heartbeat in flight failed before the coordinator answered it
    /// (no connection, a timeout, a coordinator that could not be found).
    pub fn on_failure(&mut self, now_ms: u64, error: ClientError) {
        let Some(sent) = self.in_flight.take() else {
            return;
        };
        if sent == Sent::Leave {
            // The coordinator will drop the member when its session
            // times out.
            self.phase = Phase::Left;
            return;
        }
        if matches!(self.phase, Phase::Left | Phase::Failed(_)) {
            return;
        }
        match &error {
            ClientError::Broker { code, .. } => self.refused(now_ms, *code, Some(error.clone())),
            e if e.is_retriable() => self.retry_later(now_ms),
            _ => self.phase = Phase::Failed(error),
        }
    }

    fn accept(&mut self, now_ms: u64, answer: ConsumerGroupHeartbeatResponse) {
        if let Some(id) = answer.member_id.filter(|id| !id.is_empty()) {
            self.member_id = id;
        }
        if self.member_id.is_empty() {
            // A join answered without an id cannot be heartbeated on:
            // join again.
            tracing::warn!(group = %self.group, "the coordinator answered a join without a member id");
            self.retry_later(now_ms);
            return;
        }
        self.member_epoch = answer.member_epoch;
        if matches!(self.phase, Phase::Joining) {
            self.phase = Phase::Member;
        }
        if let Some(assignment) = answer.assignment {
            self.target = from_topic_partitions(&assignment);
        }
        self.heartbeat_interval_ms =
            u64::from(answer.heartbeat_interval_ms).max(HEARTBEAT_INTERVAL_MS_MIN);
        self.retry_ms = HEARTBEAT_RETRY_MS_MIN;
        self.next_at_ms = if self.released_since_sent || matches!(self.phase, Phase::Leaving) {
            now_ms
        } else {
            now_ms + self.heartbeat_interval_ms
        };
    }

    fn refused(&mut self, now_ms: u64, code: ErrorCode, error: Option<ClientError>) {
        match code {
            ErrorCode::UnknownMemberId | ErrorCode::FencedMemberEpoch => {
                let joining = matches!(self.phase, Phase::Joining);
                self.removed();
                if matches!(self.phase, Phase::Leaving) {
                    self.phase = Phase::Left;
                    return;
                }
                self.phase = Phase::Joining;
                if joining {
                    // Refused even as a newcomer: do not spin.
                    self.retry_later(now_ms);
                } else {
                    self.next_at_ms = now_ms;
                }
            }
            c if c.is_retriable() => self.retry_later(now_ms),
            c => {
                self.phase = Phase::Failed(error.unwrap_or_else(|| ClientError::Broker {
                    code: c,
                    message: format!("the coordinator of group {:?} refused it", self.group),
                }));
            }
        }
    }

    /// The coordinator no longer counts this member: everything it owned
    /// is lost.
    fn removed(&mut self) {
        self.lost.append(&mut self.owned);
        self.revoking.clear();
        self.target.clear();
        self.member_id.clear();
        self.member_epoch = JOIN_GROUP_MEMBER_EPOCH;
    }

    fn retry_later(&mut self, now_ms: u64) {
        self.next_at_ms = now_ms + self.retry_ms;
        self.retry_ms = (self.retry_ms * 2).min(HEARTBEAT_RETRY_MS_MAX);
    }

    /// What the consumer must do now to match the latest assignment. From
    /// then on, `assigned` counts as owned and `revoked` as being given up
    /// until released; `lost` is forgotten.
    pub fn take_changes(&mut self) -> Changes {
        let lost = std::mem::take(&mut self.lost);
        let revoked: BTreeSet<Key> = self
            .owned
            .iter()
            .filter(|p| !self.target.contains(*p) && !self.revoking.contains(*p))
            .cloned()
            .collect();
        self.revoking.extend(revoked.iter().cloned());
        let assigned: BTreeSet<Key> = if matches!(self.phase, Phase::Member) {
            self.target.difference(&self.owned).cloned().collect()
        } else {
            BTreeSet::new()
        };
        self.owned.extend(assigned.iter().cloned());
        Changes {
            lost,
            revoked,
            assigned,
        }
    }

    /// The consumer gave up `partitions` (revoked ones; others are
    /// ignored). The next heartbeat says so, at once.
    pub fn released(&mut self, now_ms: u64, partitions: &BTreeSet<Key>) {
        let mut any = false;
        for p in partitions {
            if self.revoking.remove(p) {
                self.owned.remove(p);
                any = true;
            }
        }
        if any {
            self.released_since_sent = true;
            if self.in_flight.is_none() {
                self.next_at_ms = self.next_at_ms.min(now_ms);
            }
        }
    }

    /// Starts leaving: the next heartbeat, due at once, is the last (after
    /// the one in flight, if any, is answered).
    pub fn leave(&mut self, now_ms: u64) {
        match self.phase {
            Phase::Joining | Phase::Member => {
                self.phase = Phase::Leaving;
                self.next_at_ms = now_ms;
            }
            Phase::Leaving => {}
            Phase::Left | Phase::Failed(_) => self.phase = Phase::Left,
        }
    }

    /// The `OffsetCommit` setting `offsets`, under the member's id and
    /// epoch of now; refused unless the member owns every one of them.
    pub fn commit_request(
        &self,
        offsets: &BTreeMap<Key, CommitOffset>,
    ) -> Result<OffsetCommitRequest, ClientError> {
        let fenced = |code| ClientError::Fenced {
            group: self.group.clone(),
            code,
        };
        if !matches!(self.phase, Phase::Member) {
            return Err(fenced(ErrorCode::UnknownMemberId));
        }
        if offsets.keys().any(|k| !self.owned.contains(k)) {
            return Err(fenced(ErrorCode::FencedMemberEpoch));
        }
        let mut topics: BTreeMap<&str, Vec<OffsetCommitPartition>> = BTreeMap::new();
        for ((topic, partition), c) in offsets {
            topics
                .entry(topic)
                .or_default()
                .push(OffsetCommitPartition {
                    partition: *partition,
                    offset: c.offset,
                    leader_epoch: c.leader_epoch,
                    metadata: None,
                });
        }
        Ok(OffsetCommitRequest {
            group: self.group.clone(),
            member_id: self.member_id.clone(),
            member_epoch: self.member_epoch,
            topics: topics
                .into_iter()
                .map(|(name, partitions)| OffsetCommitTopic {
                    name: name.to_string(),
                    partitions,
                })
                .collect(),
        })
    }
}

/// Partitions grouped by topic, as the protocol carries them.
pub(crate) fn to_topic_partitions(keys: &BTreeSet<Key>) -> Vec<TopicPartitions> {
    let mut out: Vec<TopicPartitions> = Vec::new();
    for (topic, partition) in keys {
        match out.last_mut() {
            Some(t) if &t.topic == topic => t.partitions.push(*partition),
            _ => out.push(TopicPartitions {
                topic: topic.clone(),
                partitions: vec![*partition],
            }),
        }
    }
    out
}

fn from_topic_partitions(lists: &[TopicPartitions]) -> BTreeSet<Key> {
    lists
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| (t.topic.clone(), *p)))
        .collect()
}
