//! Consumer group membership (KIP-848's protocol): a member joins,
//! heartbeats and leaves with one API, `ConsumerGroupHeartbeat`, and the
//! coordinator computes the assignment and hands it out in the answers;
//! `ListGroups` and `DescribeGroups` show the groups, and `DeleteGroups`
//! removes groups without members, with their commits (version 0).
//!
//! The member epoch drives membership: 0 joins, [`LEAVE_GROUP_MEMBER_EPOCH`]
//! leaves, [`LEAVE_GROUP_STATIC_MEMBER_EPOCH`] leaves for a while, and any
//! other value is the epoch the coordinator last gave the member. Fields a
//! member resends only when they change are optional: absent means
//! unchanged since the last heartbeat, so a steady heartbeat stays small.
//! The client id and host are the frame header's and the connection's,
//! never repeated in the body.
//!
//! Byte layouts (primitives as in [`crate::protocol::wire`]: `string` is a
//! `u16` length then UTF-8, `[T]` a `u32` count then the elements, `T?` a
//! `u8` presence flag then the value; `topic_partitions` is `topic string`,
//! `partitions [u32]`):
//!
//! | message | fields, in wire order |
//! | --- | --- |
//! | `ConsumerGroupHeartbeat` request | `group string`, `member_id string`, `member_epoch i32`, `subscribed_topics [string]?`, `owned [topic_partitions]?` |
//! | `ConsumerGroupHeartbeat` response | `error i16`, `member_id string?`, `member_epoch i32`, `heartbeat_interval_ms u32`, `assignment [topic_partitions]?` |
//! | `ListGroups` request | (empty) |
//! | `ListGroups` response | `error i16`, `groups [group string, state string]` |
//! | `DescribeGroups` request | `groups [string]` |
//! | `DescribeGroups` response | `groups [group string, error i16, state string, group_epoch i32, assignment_epoch i32, members [member_id string, client_id string, host string, member_epoch i32, assigned [topic_partitions]]]` |
//! | `DeleteGroups` request | `groups [string]` |
//! | `DeleteGroups` response | `groups [group string, error i16]` |

use super::{
    MIN_STRING, MIN_TOPIC, TopicPartitions, error_code, read_topic_partitions,
    write_topic_partitions,
};
use crate::protocol::error::{DecodeError, ErrorCode};
use crate::protocol::wire::{Reader, Writer};

/// `ConsumerGroupHeartbeat` member epoch of a member joining (with an
/// empty member id: the coordinator gives it one).
pub const JOIN_GROUP_MEMBER_EPOCH: i32 = 0;
/// `ConsumerGroupHeartbeat` member epoch of a member leaving for good: its
/// partitions are handed over at once.
pub const LEAVE_GROUP_MEMBER_EPOCH: i32 = -1;
/// `ConsumerGroupHeartbeat` member epoch of a member leaving for a while
/// (a restart): its partitions wait for it until its session times out.
pub const LEAVE_GROUP_STATIC_MEMBER_EPOCH: i32 = -2;

/// A member's heartbeat: how it joins, stays and leaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerGroupHeartbeatRequest {
    /// The group id.
    pub group: String,
    /// The member's id; empty to join (the coordinator gives one).
    pub member_id: String,
    /// [`JOIN_GROUP_MEMBER_EPOCH`], [`LEAVE_GROUP_MEMBER_EPOCH`],
    /// [`LEAVE_GROUP_STATIC_MEMBER_EPOCH`], or the member's current epoch.
    pub member_epoch: i32,
    /// The topics the member subscribes to, or `None` when unchanged since
    /// its last heartbeat (a join sends them).
    pub subscribed_topics: Option<Vec<String>>,
    /// The partitions the member owns now, or `None` when unchanged since
    /// its last heartbeat: once it has given up the ones revoked from it,
    /// saying so lets the coordinator hand them on.
    pub owned: Option<Vec<TopicPartitions>>,
}

/// The coordinator's answer to a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerGroupHeartbeatResponse {
    /// `UnknownMemberId` or `FencedMemberEpoch` tell the member to join
    /// again with epoch 0.
    pub error: ErrorCode,
    /// The member's id, given on a join; `None` when it is unchanged.
    pub member_id: Option<String>,
    /// The member's epoch from now on.
    pub member_epoch: i32,
    /// How often to heartbeat, ms.
    pub heartbeat_interval_ms: u32,
    /// The partitions the member should own now, or `None` when unchanged
    /// since the last answer. Partitions missing from it that the member
    /// owns are revoked: it commits and gives them up, then says so.
    pub assignment: Option<Vec<TopicPartitions>>,
}

/// The groups a coordinator holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListGroupsResponse {
    /// A broker-level error (such as `CoordinatorLoadInProgress`).
    pub error: ErrorCode,
    /// The groups.
    pub groups: Vec<ListedGroup>,
}

/// A group as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedGroup {
    /// The group id.
    pub group: String,
    /// Its state, as the coordinator names it (such as `Empty`, `Stable`,
    /// `Reconciling`, `Dead`).
    pub state: String,
}

/// Groups to describe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribeGroupsRequest {
    /// Their ids.
    pub groups: Vec<String>,
}

/// Groups described.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribeGroupsResponse {
    /// One per group in the request.
    pub groups: Vec<DescribedGroup>,
}

/// One group's state and members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribedGroup {
    /// The group id.
    pub group: String,
    /// `GroupIdNotFound`, `NotCoordinator` and the like.
    pub error: ErrorCode,
    /// Its state, as in [`ListedGroup::state`].
    pub state: String,
    /// The epoch of the group's membership and subscriptions: it moves
    /// whenever they change.
    pub group_epoch: i32,
    /// The group epoch the current target assignment was computed at.
    pub assignment_epoch: i32,
    /// The members.
    pub members: Vec<DescribedMember>,
}

/// One member of a described group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribedMember {
    /// Its id.
    pub member_id: String,
    /// The client id of its requests.
    pub client_id: String,
    /// The host it connects from.
    pub host: String,
    /// Its current epoch.
    pub member_epoch: i32,
    /// The partitions assigned to it.
    pub assigned: Vec<TopicPartitions>,
}

/// Groups to delete, each with its committed offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteGroupsRequest {
    /// Their ids.
    pub groups: Vec<String>,
}

/// Groups deleted, or why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteGroupsResponse {
    /// One per group in the request.
    pub groups: Vec<DeletedGroup>,
}

/// The outcome of deleting one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeletedGroup {
    /// The group id.
    pub group: String,
    /// `None` once its commits are removed; `NonEmptyGroup` while it has
    /// members, `GroupIdNotFound`, `NotCoordinator` and the like.
    pub error: ErrorCode,
}

fn write_partition_lists(w: &mut Writer, lists: &Option<Vec<TopicPartitions>>) {
    w.option(lists.as_ref(), |w, l| w.array(l, write_topic_partitions));
}

fn read_partition_lists(
    r: &mut Reader,
    what: &'static str,
) -> Result<Option<Vec<TopicPartitions>>, DecodeError> {
    r.option(what, |r| r.array(what, MIN_TOPIC, read_topic_partitions))
}

impl ConsumerGroupHeartbeatRequest {
    pub(super) fn encode(&self, w: &mut Writer) {
        w.string(&self.group);
        w.string(&self.member_id);
        w.i32(self.member_epoch);
        w.option(self.subscribed_topics.as_ref(), |w, t| {
            w.array(t, |w, n| w.string(n))
        });
        write_partition_lists(w, &self.owned);
    }

    pub(super) fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(ConsumerGroupHeartbeatRequest {
            group: r.string("group id")?,
            member_id: r.string("member id")?,
            member_epoch: r.i32("member epoch")?,
            subscribed_topics: r.option("subscribed topics", |r| {
                r.array("subscribed topics", MIN_STRING, |r| r.string("topic name"))
            })?,
            owned: read_partition_lists(r, "owned partitions")?,
        })
    }
}

impl ConsumerGroupHeartbeatResponse {
    pub(super) fn encode(&self, w: &mut Writer) {
        w.i16(self.error.code());
        w.option(self.member_id.as_ref(), |w, m| w.string(m));
        w.i32(self.member_epoch);
        w.u32(self.heartbeat_interval_ms);
        write_partition_lists(w, &self.assignment);
    }

    pub(super) fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(ConsumerGroupHeartbeatResponse {
            error: error_code(r, "error code")?,
            member_id: r.option("member id", |r| r.string("member id"))?,
            member_epoch: r.i32("member epoch")?,
            heartbeat_interval_ms: r.u32("heartbeat interval")?,
            assignment: read_partition_lists(r, "assignment")?,
        })
    }
}

impl ListGroupsResponse {
    pub(super) fn encode(&self, w: &mut Writer) {
        w.i16(self.error.code());
        w.array(&self.groups, |w, g| {
            w.string(&g.group);
            w.string(&g.state);
        });
    }

    pub(super) fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(ListGroupsResponse {
            error: error_code(r, "error code")?,
            groups: r.array("groups", 2 * MIN_STRING, |r| {
                Ok(ListedGroup {
                    group: r.string("group id")?,
                    state: r.string("group state")?,
                })
            })?,
        })
    }
}

impl DescribeGroupsRequest {
    pub(super) fn encode(&self, w: &mut Writer) {
        w.array(&self.groups, |w, g| w.string(g));
    }

    pub(super) fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(DescribeGroupsRequest {
            groups: r.array("groups", MIN_STRING, |r| r.string("group id"))?,
        })
    }
}

impl DescribeGroupsResponse {
    pub(super) fn encode(&self, w: &mut Writer) {
        w.array(&self.groups, |w, g| {
            w.string(&g.group);
            w.i16(g.error.code());
            w.string(&g.state);
            w.i32(g.group_epoch);
            w.i32(g.assignment_epoch);
            w.array(&g.members, |w, m| {
                w.string(&m.member_id);
                w.string(&m.client_id);
                w.string(&m.host);
                w.i32(m.member_epoch);
                w.array(&m.assigned, write_topic_partitions);
            });
        });
    }

    pub(super) fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(DescribeGroupsResponse {
            groups: r.array("groups", MIN_STRING + 2 + MIN_STRING + 4 + 4 + 4, |r| {
                Ok(DescribedGroup {
                    group: r.string("group id")?,
                    error: error_code(r, "error code")?,
                    state: r.string("group state")?,
                    group_epoch: r.i32("group epoch")?,
                    assignment_epoch: r.i32("assignment epoch")?,
                    members: r.array("members", 3 * MIN_STRING + 4 + 4, |r| {
                        Ok(DescribedMember {
                            member_id: r.string("member id")?,
                            client_id: r.string("client id")?,
                            host: r.string("host")?,
                            member_epoch: r.i32("member epoch")?,
                            assigned: r.array(
                                "assigned partitions",
                                MIN_TOPIC,
                                read_topic_partitions,
                            )?,
                        })
                    })?,
                })
            })?,
        })
    }
}

impl DeleteGroupsRequest {
    pub(super) fn encode(&self, w: &mut Writer) {
        w.array(&self.groups, |w, g| w.string(g));
    }

    pub(super) fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(DeleteGroupsRequest {
            groups: r.array("groups", MIN_STRING, |r| r.string("group id"))?,
        })
    }
}

impl DeleteGroupsResponse {
    pub(super) fn encode(&self, w: &mut Writer) {
        w.array(&self.groups, |w, g| {
            w.string(&g.group);
            w.i16(g.error.code());
        });
    }

    pub(super) fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(DeleteGroupsResponse {
            groups: r.array("groups", MIN_STRING + 2, |r| {
                Ok(DeletedGroup {
                    group: r.string("group id")?,
                    error: error_code(r, "error code")?,
                })
            })?,
        })
    }
}
