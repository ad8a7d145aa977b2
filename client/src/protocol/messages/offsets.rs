//! Committed offsets: finding a group's coordinator, committing offsets to
//! it and reading them back (`FindCoordinator`, `OffsetCommit`,
//! `OffsetFetch`, version 0).
//!
//! A group's coordinator is the leader of the `__consumer_offsets`
//! partition its id hashes to; the broker works that out, the codec only
//! carries the answer.
//!
//! Byte layouts (primitives as in [`crate::protocol::wire`]: `string` is a
//! `u16` length then UTF-8, `[T]` a `u32` count then the elements, `T?` a
//! `u8` presence flag then the value):
//!
//! | message | fields, in wire order |
//! | --- | --- |
//! | `FindCoordinator` request | `group string` |
//! | `FindCoordinator` response | `error i16`, `coordinator i32` ([`NO_BROKER`](super::NO_BROKER) when none), `host string`, `port u16` |
//! | `OffsetCommit` request | `group string`, `member_id string`, `member_epoch i32`, `topics [name string, partitions [partition u32, offset u64, leader_epoch u64, metadata string?]]` |
//! | `OffsetCommit` response | `topics [name string, partitions [partition u32, error i16]]` |
//! | `OffsetFetch` request | `group string`, `topics [topic string, partitions [u32]]?` (absent: every partition the group has a commit for) |
//! | `OffsetFetch` response | `error i16`, `topics [name string, partitions [partition u32, offset i64, leader_epoch u64, metadata string?, error i16]]` |
//!
//! A leader epoch is the Raft term of the partition's leader, as in the
//! fetch and metadata answers (0 when unknown), so a consumer commits the
//! epoch a fetch told it without converting it.

use super::{
    MIN_TOPIC, TopicPartitions, error_code, read_topic_partitions, write_topic_partitions,
};
use crate::protocol::error::{DecodeError, ErrorCode};
use crate::protocol::wire::{Reader, Writer};

/// `OffsetCommit` member epoch of a commit made outside any group
/// generation (a consumer that assigns itself partitions, as Kafka's simple
/// consumers): with it, the member id is empty.
pub const NO_MEMBER_EPOCH: i32 = -1;
/// `OffsetFetch` offset of a partition the group has no commit for.
pub const NO_COMMITTED_OFFSET: i64 = -1;

/// Which broker coordinates a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FindCoordinatorRequest {
    /// The group id.
    pub group: String,
}

/// The broker coordinating a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FindCoordinatorResponse {
    /// `CoordinatorNotAvailable` while the group's `__consumer_offsets`
    /// partition has no leader; `InvalidGroupId` for an empty id.
    pub error: ErrorCode,
    /// The coordinator's broker id, or [`NO_BROKER`](super::NO_BROKER).
    pub coordinator: i32,
    /// Host clients reach the coordinator at (empty when none).
    pub host: String,
    /// Port clients reach the coordinator at (0 when none).
    pub port: u16,
}

/// Offsets a group commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetCommitRequest {
    /// The group id.
    pub group: String,
    /// The committing member's id; empty with [`NO_MEMBER_EPOCH`].
    pub member_id: String,
    /// The member's current epoch, or [`NO_MEMBER_EPOCH`]; a stale epoch
    /// is refused with `FencedMemberEpoch`, so a member that lost its
    /// partitions cannot overwrite its successor's commits.
    pub member_epoch: i32,
    /// Per topic.
    pub topics: Vec<OffsetCommitTopic>,
}

/// Offsets committed in one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetCommitTopic {
    /// The topic.
    pub name: String,
    /// Per partition.
    pub partitions: Vec<OffsetCommitPartition>,
}

/// The offset committed for one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetCommitPartition {
    /// The partition.
    pub partition: u32,
    /// The next offset to consume (one past the last one processed).
    pub offset: u64,
    /// The leader epoch the consumer last saw for the partition, or 0
    /// when unknown.
    pub leader_epoch: u64,
    /// Free text kept with the commit, if any.
    pub metadata: Option<String>,
}

/// Outcome of a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetCommitResponse {
    /// Per topic, as in the request.
    pub topics: Vec<OffsetCommitTopicResponse>,
}

/// Outcome of a commit in one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetCommitTopicResponse {
    /// The topic.
    pub name: String,
    /// Per partition.
    pub partitions: Vec<OffsetCommitPartitionResponse>,
}

/// Outcome of a commit for one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetCommitPartitionResponse {
    /// The partition.
    pub partition: u32,
    /// The outcome: `None` once the commit is committed in Raft.
    pub error: ErrorCode,
}

/// Committed offsets to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetFetchRequest {
    /// The group id.
    pub group: String,
    /// The partitions wanted, or `None` for every partition the group has a
    /// commit for.
    pub topics: Option<Vec<TopicPartitions>>,
}

/// A group's committed offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetFetchResponse {
    /// A group-level error (such as `NotCoordinator`); `topics` is then
    /// empty.
    pub error: ErrorCode,
    /// Per topic.
    pub topics: Vec<OffsetFetchTopicResponse>,
}

/// Committed offsets in one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetFetchTopicResponse {
    /// The topic.
    pub name: String,
    /// Per partition.
    pub partitions: Vec<OffsetFetchPartitionResponse>,
}

/// The committed offset of one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetFetchPartitionResponse {
    /// The partition.
    pub partition: u32,
    /// The committed offset, or [`NO_COMMITTED_OFFSET`].
    pub offset: i64,
    /// The leader epoch committed with it, or 0 when unknown.
    pub leader_epoch: u64,
    /// The metadata text committed with it, if any.
    pub metadata: Option<String>,
    /// A partition-level error.
    pub error: ErrorCode,
}

impl FindCoordinatorRequest {
    pub(super) fn encode(&self, w: &mut Writer) {
        w.string(&self.group);
    }

    pub(super) fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(FindCoordinatorRequest {
            group: r.string("group id")?,
        })
    }
}

impl FindCoordinatorResponse {
    pub(super) fn encode(&self, w: &mut Writer) {
        w.i16(self.error.code());
        w.i32(self.coordinator);
        w.string(&self.host);
        w.u16(self.port);
    }

    pub(super) fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(FindCoordinatorResponse {
            error: error_code(r, "error code")?,
            coordinator: r.i32("coordinator")?,
            host: r.string("host")?,
            port: r.u16("port")?,
        })
    }
}

fn write_metadata(w: &mut Writer, metadata: &Option<String>) {
    w.option(metadata.as_ref(), |w, m| w.string(m));
}

fn read_metadata(r: &mut Reader) -> Result<Option<String>, DecodeError> {
    r.option("metadata", |r| r.string("metadata"))
}

impl OffsetCommitRequest {
    pub(super) fn encode(&self, w: &mut Writer) {
        w.string(&self.group);
        w.string(&self.member_id);
        w.i32(self.member_epoch);
        w.array(&self.topics, |w, t| {
            w.string(&t.name);
            w.array(&t.partitions, |w, p| {
                w.u32(p.partition);
                w.u64(p.offset);
                w.u64(p.leader_epoch);
                write_metadata(w, &p.metadata);
            });
        });
    }

    pub(super) fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(OffsetCommitRequest {
            group: r.string("group id")?,
            member_id: r.string("member id")?,
            member_epoch: r.i32("member epoch")?,
            topics: r.array("topics", MIN_TOPIC, |r| {
                Ok(OffsetCommitTopic {
                    name: r.string("topic name")?,
                    partitions: r.array("partitions", 4 + 8 + 8 + 1, |r| {
                        Ok(OffsetCommitPartition {
                            partition: r.u32("partition")?,
                            offset: r.u64("offset")?,
                            leader_epoch: r.u64("leader epoch")?,
                            metadata: read_metadata(r)?,
                        })
                    })?,
                })
            })?,
        })
    }
}

impl OffsetCommitResponse {
    pub(super) fn encode(&self, w: &mut Writer) {
        w.array(&self.topics, |w, t| {
            w.string(&t.name);
            w.array(&t.partitions, |w, p| {
                w.u32(p.partition);
                w.i16(p.error.code());
            });
        });
    }

    pub(super) fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(OffsetCommitResponse {
            topics: r.array("topics", MIN_TOPIC, |r| {
                Ok(OffsetCommitTopicResponse {
                    name: r.string("topic name")?,
                    partitions: r.array("partitions", 4 + 2, |r| {
                        Ok(OffsetCommitPartitionResponse {
                            partition: r.u32("partition")?,
                            error: error_code(r, "error code")?,
                        })
                    })?,
                })
            })?,
        })
    }
}

impl OffsetFetchRequest {
    pub(super) fn encode(&self, w: &mut Writer) {
        w.string(&self.group);
        w.option(self.topics.as_ref(), |w, t| {
            w.array(t, write_topic_partitions)
        });
    }

    pub(super) fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(OffsetFetchRequest {
            group: r.string("group id")?,
            topics: r.option("topics", |r| {
                r.array("topics", MIN_TOPIC, read_topic_partitions)
            })?,
        })
    }
}

impl OffsetFetchResponse {
    pub(super) fn encode(&self, w: &mut Writer) {
        w.i16(self.error.code());
        w.array(&self.topics, |w, t| {
            w.string(&t.name);
            w.array(&t.partitions, |w, p| {
                w.u32(p.partition);
                w.i64(p.offset);
                w.u64(p.leader_epoch);
                write_metadata(w, &p.metadata);
                w.i16(p.error.code());
            });
        });
    }

    pub(super) fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(OffsetFetchResponse {
            error: error_code(r, "error code")?,
            topics: r.array("topics", MIN_TOPIC, |r| {
                Ok(OffsetFetchTopicResponse {
                    name: r.string("topic name")?,
                    partitions: r.array("partitions", 4 + 8 + 8 + 1 + 2, |r| {
                        Ok(OffsetFetchPartitionResponse {
                            partition: r.u32("partition")?,
                            offset: r.i64("offset")?,
                            leader_epoch: r.u64("leader epoch")?,
                            metadata: read_metadata(r)?,
                            error: error_code(r, "error code")?,
                        })
                    })?,
                })
            })?,
        })
    }
}
