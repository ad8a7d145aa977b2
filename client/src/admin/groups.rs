//! Consumer group administration: listing every group, describing one
//! (its members, and per partition its committed offset, the high
//! watermark and the lag), setting a member-less group's committed offsets,
//! and deleting a group with its offsets.
//!
//! Requests about one group go to its coordinator through
//! [`coordinator_request`](crate::coordinator::coordinator_request), which
//! follows the coordinator as it moves. Listing is the exception: each
//! broker answers only for the groups it coordinates, so every broker in
//! the metadata is asked and the answers merged; a broker that cannot
//! answer fails the listing rather than leaving its groups out unseen.
//!
//! Offsets are set only while a group has no members: a member would go
//! on committing its own positions over them. The group is described
//! first for a clear refusal, and the coordinator refuses the commit
//! (`NonEmptyGroup`) all the same should a member join in between; both
//! give [`ClientError::GroupHasMembers`]. Every operation ends within
//! [`ADMIN_TIMEOUT_MS`], retries included.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::offsets::{ResetTo, high_watermarks, reset_targets};
use super::{ADMIN_RETRY_MS_MAX, ADMIN_TIMEOUT_MS, Admin, left, unexpected};
use crate::cluster::{Cluster, UNKNOWN_TOPIC_WAIT_MS};
use crate::coordinator::{check_group_id, coordinator_call, coordinator_request};
use crate::error::ClientError;
use crate::protocol::messages::{
    DeleteGroupsRequest, DescribeGroupsRequest, DescribedGroup, ListedGroup, NO_MEMBER_EPOCH,
    OffsetCommitPartition, OffsetCommitRequest, OffsetCommitTopic, OffsetFetchRequest,
    TopicPartitions,
};
use crate::protocol::{ErrorCode, Request, Response};

/// A group as listed: its id and its state as its coordinator names it
/// (`Empty`, `Reconciling`, `Stable`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    /// The group id.
    pub group: String,
    /// Its state.
    pub state: String,
}

/// A group described: its state, members, and where it stands in each
/// partition it has committed offsets for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    /// The group id.
    pub group: String,
    /// Its state, as in [`GroupListing::state`].
    pub state: String,
    /// Its members, by member id.
    pub members: Vec<GroupMember>,
    /// Every partition it has a committed offset for, by topic then
    /// partition.
    pub partitions: Vec<PartitionLag>,
}

/// One member of a described group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMember {
    /// Its id, given by the coordinator.
    pub member_id: String,
    /// The client id of its requests.
    pub client_id: String,
    /// The host it connects from.
    pub host: String,
    /// The partitions assigned to it, by topic, partitions in order.
    pub assigned: Vec<TopicPartitions>,
}

/// Where a group stands in one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// The offset committed: the next one the group will read.
    pub committed_offset: u64,
    /// The partition's high watermark, or `None` when the partition no
    /// longer exists (its topic was deleted).
    pub high_watermark: Option<u64>,
    /// How many records the group has yet to read: the high watermark less
    /// the committed offset, never below 0 (a commit can be past the high
    /// watermark, for example after the topic was recreated); `None`
    /// without a high watermark.
    pub lag: Option<u64>,
}

impl PartitionLag {
    /// The group's place in `topic`/`partition`, its lag worked out.
    pub fn new(
        topic: &str,
        partition: u32,
        committed_offset: u64,
        high_watermark: Option<u64>,
    ) -> PartitionLag {
        PartitionLag {
            topic: topic.to_string(),
            partition,
            committed_offset,
            high_watermark,
            lag: high_watermark.map(|hw| hw.saturating_sub(committed_offset)),
        }
    }
}

/// An offset set for a group in one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionOffset {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// The offset committed: the next one the group will read.
    pub offset: u64,
}

/// Runs `operation` until `deadline`: what it waits on that has no
/// deadline of its own (a metadata refresh) is cut short too.
async fn within<T>(
    deadline: Instant,
    operation: impl Future<Output = Result<T, ClientError>>,
) -> Result<T, ClientError> {
    tokio::time::timeout_at(deadline, operation)
        .await
        .unwrap_or(Err(ClientError::Timeout {
            ms: ADMIN_TIMEOUT_MS,
        }))
}

impl Admin {
    /// Every group in the cluster with its state, by group id: each
    /// broker in the metadata is asked for the groups it coordinates.
    /// A group listed by two brokers (its coordinator moving as they
    /// answered) appears once.
    pub async fn list_groups(&self) -> Result<Vec<GroupListing>, ClientError> {
        let deadline = Instant::now() + Duration::from_millis(ADMIN_TIMEOUT_MS);
        within(deadline, async {
            let metadata = self.cluster.refresh(None).await?;
            let mut brokers: Vec<_> = metadata
                .brokers
                .iter()
                .map(|b| (b.broker_id, format!("{}:{}", b.host, b.port)))
                .collect();
            brokers.sort();
            let asks: Vec<_> = brokers
                .into_iter()
                .map(|(_, addr)| tokio::spawn(groups_at(Arc::clone(&self.cluster), addr, deadline)))
                .collect();
            let mut merged: BTreeMap<String, String> = BTreeMap::new();
            for ask in asks {
                let listed = ask
                    .await
                    .map_err(|e| ClientError::Invalid(format!("listing groups failed: {e}")))??;
                for g in listed {
                    merged.entry(g.group).or_insert(g.state);
                }
            }
            Ok(merged
                .into_iter()
                .map(|(group, state)| GroupListing { group, state })
                .collect())
        })
        .await
    }

    /// `group`'s state and members, and per partition it has committed
    /// offsets for, the committed offset, the high watermark and the lag.
    /// [`ClientError::UnknownGroup`] when it has neither members nor
    /// commits.
    pub async fn describe_group(&self, group: &str) -> Result<GroupDescription, ClientError> {
        let deadline = Instant::now() + Duration::from_millis(ADMIN_TIMEOUT_MS);
        within(deadline, async {
            let described = self
                .described(group, deadline)
                .await?
                .ok_or_else(|| ClientError::UnknownGroup(group.to_string()))?;
            let mut members: Vec<GroupMember> = described
                .members
                .into_iter()
                .map(|m| {
                    let mut assigned = m.assigned;
                    assigned.sort_by(|a, b| a.topic.cmp(&b.topic));
                    for t in &mut assigned {
                        t.partitions.sort_unstable();
                    }
                    GroupMember {
                        member_id: m.member_id,
                        client_id: m.client_id,
                        host: m.host,
                        assigned,
                    }
                })
                .collect();
            members.sort_by(|a, b| a.member_id.cmp(&b.member_id));
            let mut partitions = Vec::new();
            for (topic, committed) in self.committed(group, deadline).await? {
                let wanted: Vec<u32> = committed.keys().copied().collect();
                let high_watermarks =
                    high_watermarks(&self.cluster, &topic, &wanted, deadline).await?;
                for (partition, offset) in committed {
                    let hw = high_watermarks.get(&partition).copied().flatten();
                    partitions.push(PartitionLag::new(&topic, partition, offset, hw));
                }
            }
            Ok(GroupDescription {
                group: described.group,
                state: described.state,
                members,
                partitions,
            })
        })
        .await
    }

    /// Sets `group`'s committed offset in every partition of `topic` to
    /// `to`, and returns what it set, by partition. Refused with
    /// [`ClientError::GroupHasMembers`] while the group has members; a
    /// group that does not exist yet is created by the commit.
    pub async fn reset_offsets(
        &self,
        group: &str,
        topic: &str,
        to: ResetTo,
    ) -> Result<Vec<PartitionOffset>, ClientError> {
        if let ResetTo::Timestamp(ms) = to
            && ms < 0
        {
            return Err(ClientError::Invalid(format!(
                "a time to reset to is ms since the epoch, not {ms}"
            )));
        }
        check_group_id(group)?;
        let deadline = Instant::now() + Duration::from_millis(ADMIN_TIMEOUT_MS);
        within(deadline, async {
            if let Some(described) = self.described(group, deadline).await?
                && !described.members.is_empty()
            {
                return Err(ClientError::GroupHasMembers(group.to_string()));
            }
            self.cluster.invalidate(topic);
            let info = self
                .cluster
                .topic_within(topic, Duration::from_millis(UNKNOWN_TOPIC_WAIT_MS))
                .await?;
            let mut partitions: Vec<u32> = info.partitions.iter().map(|p| p.partition).collect();
            partitions.sort_unstable();
            let targets = reset_targets(&self.cluster, topic, &partitions, to, deadline).await?;
            self.commit_offsets(group, topic, &targets, deadline)
                .await?;
            Ok(targets
                .into_iter()
                .map(|(partition, offset)| PartitionOffset {
                    topic: topic.to_string(),
                    partition,
                    offset,
                })
                .collect())
        })
        .await
    }

    /// Deletes `group` and its committed offsets. Refused with
    /// [`ClientError::GroupHasMembers`] while it has members;
    /// [`ClientError::UnknownGroup`] when there is no such group.
    pub async fn delete_group(&self, group: &str) -> Result<(), ClientError> {
        let request = Request::DeleteGroups(DeleteGroupsRequest {
            groups: vec![group.to_string()],
        });
        let timeout = Duration::from_millis(ADMIN_TIMEOUT_MS);
        let answer = coordinator_call(&self.cluster, group, request, timeout).await?;
        let Response::DeleteGroups(deleted) = &answer.response else {
            return Err(unexpected(&answer.response));
        };
        let error = deleted
            .groups
            .iter()
            .find(|g| g.group == group)
            .map(|g| g.error)
            .ok_or_else(|| ClientError::Invalid(format!("no answer for group {group:?}")))?;
        match error {
            ErrorCode::None => Ok(()),
            ErrorCode::NonEmptyGroup => Err(ClientError::GroupHasMembers(group.to_string())),
            // An earlier try that the coordinator applied but whose answer
            // was lost deleted it.
            ErrorCode::GroupIdNotFound if answer.maybe_repeated => Ok(()),
            ErrorCode::GroupIdNotFound => Err(ClientError::UnknownGroup(group.to_string())),
            code => Err(ClientError::code(code)),
        }
    }

    /// `group` as its coordinator describes it, or `None` when there is no
    /// such group.
    async fn described(
        &self,
        group: &str,
        deadline: Instant,
    ) -> Result<Option<DescribedGroup>, ClientError> {
        let request = Request::DescribeGroups(DescribeGroupsRequest {
            groups: vec![group.to_string()],
        });
        let response = coordinator_request(&self.cluster, group, request, left(deadline)).await?;
        let Response::DescribeGroups(d) = response else {
            return Err(unexpected(&response));
        };
        let described = d
            .groups
            .into_iter()
            .find(|g| g.group == group)
            .ok_or_else(|| ClientError::Invalid(format!("no answer for group {group:?}")))?;
        match described.error {
            ErrorCode::None => Ok(Some(described)),
            ErrorCode::GroupIdNotFound => Ok(None),
            code => Err(ClientError::code(code)),
        }
    }

    /// `group`'s committed offsets, by topic then partition.
    async fn committed(
        &self,
        group: &str,
        deadline: Instant,
    ) -> Result<BTreeMap<String, BTreeMap<u32, u64>>, ClientError> {
        let request = Request::OffsetFetch(OffsetFetchRequest {
            group: group.to_string(),
            topics: None,
        });
        let response = coordinator_request(&self.cluster, group, request, left(deadline)).await?;
        let Response::OffsetFetch(fetched) = response else {
            return Err(unexpected(&response));
        };
        if !fetched.error.is_ok() {
            return Err(ClientError::code(fetched.error));
        }
        let mut committed: BTreeMap<String, BTreeMap<u32, u64>> = BTreeMap::new();
        for t in fetched.topics {
            for p in t.partitions {
                if !p.error.is_ok() {
                    return Err(ClientError::Broker {
                        code: p.error,
                        message: format!(
                            "the committed offset of topic {} partition {}",
                            t.name, p.partition
                        ),
                    });
                }
                // No commit (-1) in a partition asked for by name only.
                if let Ok(offset) = u64::try_from(p.offset) {
                    committed
                        .entry(t.name.clone())
                        .or_default()
                        .insert(p.partition, offset);
                }
            }
        }
        Ok(committed)
    }

    /// Commits `offsets` (by partition of `topic`) for `group` from outside
    /// it: no member id, [`NO_MEMBER_EPOCH`].
    async fn commit_offsets(
        &self,
        group: &str,
        topic: &str,
        offsets: &BTreeMap<u32, u64>,
        deadline: Instant,
    ) -> Result<(), ClientError> {
        let request = Request::OffsetCommit(OffsetCommitRequest {
            group: group.to_string(),
            member_id: String::new(),
            member_epoch: NO_MEMBER_EPOCH,
            topics: vec![OffsetCommitTopic {
                name: topic.to_string(),
                partitions: offsets
                    .iter()
                    .map(|(&partition, &offset)| OffsetCommitPartition {
                        partition,
                        offset,
                        leader_epoch: 0,
                        metadata: None,
                    })
                    .collect(),
            }],
        });
        let response = coordinator_request(&self.cluster, group, request, left(deadline)).await?;
        let Response::OffsetCommit(committed) = response else {
            return Err(unexpected(&response));
        };
        let mut answered = BTreeSet::new();
        for t in committed.topics.iter().filter(|t| t.name == topic) {
            for p in &t.partitions {
                match p.error {
                    ErrorCode::None => {
                        answered.insert(p.partition);
                    }
                    ErrorCode::NonEmptyGroup => {
                        return Err(ClientError::GroupHasMembers(group.to_string()));
                    }
                    code => {
                        return Err(ClientError::Broker {
                            code,
                            message: format!("committing topic {topic} partition {}", p.partition),
                        });
                    }
                }
            }
        }
        match offsets.keys().find(|p| !answered.contains(p)) {
            Some(p) => Err(ClientError::Invalid(format!(
                "the coordinator did not confirm the commit of topic {topic} partition {p}"
            ))),
            None => Ok(()),
        }
    }
}

/// The groups the broker at `addr` coordinates, retrying while it is
/// loading them or cannot be reached, until `deadline`.
async fn groups_at(
    cluster: Arc<Cluster>,
    addr: String,
    deadline: Instant,
) -> Result<Vec<ListedGroup>, ClientError> {
    let mut pause_ms = 50;
    loop {
        let answer = async {
            let connection = cluster.connection(&addr).await?;
            connection
                .request(Request::ListGroups, left(deadline))
                .await
        };
        let error = match answer.await {
            Ok(Response::ListGroups(l)) if l.error.is_ok() => return Ok(l.groups),
            Ok(Response::ListGroups(l)) => ClientError::Broker {
                code: l.error,
                message: format!("listing the groups of the broker at {addr}"),
            },
            Ok(other) => return Err(unexpected(&other)),
            Err(e) => e,
        };
        let pause = Duration::from_millis(pause_ms);
        if !error.is_retriable() || Instant::now() + pause >= deadline {
            return Err(error);
        }
        tracing::debug!(addr, %error, "listing groups will be retried");
        tokio::time::sleep(pause).await;
        pause_ms = (pause_ms * 2).min(ADMIN_RETRY_MS_MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_is_the_high_watermark_less_the_commit_and_never_negative() {
        let lag = |committed, hw| PartitionLag::new("t", 0, committed, hw).lag;
        assert_eq!(lag(3, Some(10)), Some(7));
        assert_eq!(lag(10, Some(10)), Some(0));
        assert_eq!(lag(0, Some(0)), Some(0));
        // Committed past the end: the topic was recreated, or a commit
        // raced a truncation.
        assert_eq!(lag(12, Some(10)), Some(0));
        assert_eq!(lag(u64::MAX, Some(0)), Some(0));
        assert_eq!(lag(0, Some(u64::MAX)), Some(u64::MAX));
        // The partition is gone.
        assert_eq!(lag(5, None), None);
        let p = PartitionLag::new("t", 2, 3, Some(10));
        assert_eq!(
            (
                p.topic.as_str(),
                p.partition,
                p.committed_offset,
                p.high_watermark
            ),
            ("t", 2, 3, Some(10))
        );
    }
}
