//! What a coordinator holds of its groups: for each, the committed
//! offsets, the membership as the log stores it, and the live membership
//! the leader changes. Pure data: the tailer (`tail.rs`) applies the log's
//! records here, the shard (`shard.rs`) reads and changes it under its
//! lock.
//!
//! Invariant: `commits`, `stored_epochs` and `stored_members` are a
//! function of the log's records applied so far, in log order (the newest
//! record per key wins; a tombstone removes). The live membership starts
//! from the stored one whenever it cannot be trusted (a new leadership
//! term, a change whose write failed).

use std::collections::{BTreeMap, BTreeSet};

use rill_storage::Term;

use super::assignor::TopicPartition;
use super::group::Membership;
use super::record::{CommitValue, GroupValue, Key, MemberValue, Value};

/// One group on its coordinator.
#[derive(Debug, Clone, Default)]
pub struct Group {
    /// Its committed offsets.
    pub commits: BTreeMap<TopicPartition, CommitValue>,
    /// Its members as the leader changes them (this term).
    pub membership: Membership,
    /// Its epochs as the log stores them.
    pub(super) stored_epochs: GroupValue,
    /// Its members as the log stores them.
    pub(super) stored_members: BTreeMap<String, MemberValue>,
    /// When it last had members or a commit, ms since the epoch: its
    /// commits expire this long after it went empty.
    pub last_active_wall_ms: i64,
}

impl Group {
    pub(super) fn is_unused(&self) -> bool {
        self.commits.is_empty()
            && self.membership.members.is_empty()
            && self.stored_members.is_empty()
            && self.stored_epochs == GroupValue::default()
    }

    /// Its live membership restarted from what the log stores, every
    /// member's session starting at `now_ms`.
    pub(super) fn restore(&mut self, now_ms: u64) {
        self.membership = Membership::restore(self.stored_epochs, &self.stored_members, now_ms);
    }
}

/// The groups of one offsets partition.
#[derive(Debug, Default)]
pub struct ShardState {
    /// By group id.
    pub groups: BTreeMap<String, Group>,
    /// The leadership term the live memberships were built in.
    pub(super) members_term: Term,
    /// Groups whose live membership is to restart from the stored one: a
    /// change to it could not be stored.
    pub(super) restore_pending: BTreeSet<String>,
}

impl ShardState {
    /// Applies one record of the log.
    pub(super) fn apply(&mut self, key: Key, value: Option<Value>) {
        let id = key.group().to_string();
        let group = self.groups.entry(id.clone()).or_default();
        match (key, value) {
            (Key::Commit(k), Some(Value::Commit(v))) => {
                group.last_active_wall_ms = group.last_active_wall_ms.max(v.commit_timestamp_ms);
                group.commits.insert((k.topic, k.partition), v);
            }
            (Key::Commit(k), None) => {
                group.commits.remove(&(k.topic, k.partition));
            }
            (Key::Member { member_id, .. }, Some(Value::Member(m))) => {
                group.stored_members.insert(member_id, m);
            }
            (Key::Member { member_id, .. }, None) => {
                group.stored_members.remove(&member_id);
            }
            (Key::Group { .. }, Some(Value::Group(g))) => group.stored_epochs = g,
            (Key::Group { .. }, None) => group.stored_epochs = GroupValue::default(),
            (key, Some(_)) => {
                tracing::warn!(
                    ?key,
                    "an offsets record whose value is not of its key's kind"
                );
            }
        }
        if group.is_unused() {
            self.groups.remove(&id);
        }
    }

    /// Drops `group` if it holds nothing any more (a member-less join that
    /// never committed).
    pub fn forget_unused(&mut self, group: &str) {
        if self.groups.get(group).is_some_and(Group::is_unused) {
            self.groups.remove(group);
        }
    }
}
