//! OffsetCommit and OffsetFetch: a group's committed offsets, at its
//! coordinator (see [`crate::coordinator`]). A commit is checked against
//! the group's membership (fencing), written through Raft into the
//! group's `__consumer_offsets` partition, and answered once committed
//! and applied; a fetch reads what the coordinator applied.

use std::collections::BTreeMap;
use std::sync::Arc;

use rill_client::protocol::ErrorCode;
use rill_client::protocol::messages::{
    NO_COMMITTED_OFFSET, NO_MEMBER_EPOCH, OffsetCommitPartitionResponse, OffsetCommitRequest,
    OffsetCommitResponse, OffsetCommitTopicResponse, OffsetFetchPartitionResponse,
    OffsetFetchRequest, OffsetFetchResponse, OffsetFetchTopicResponse,
};

use crate::coordinator::record::{CommitKey, CommitValue};
use crate::coordinator::{GROUPS_PER_PARTITION_MAX, OFFSET_METADATA_MAX_BYTES, shard};
use crate::state::Broker;

/// Commits `r`'s offsets: each partition checked, the accepted ones
/// written in one go, every partition answered.
pub(super) async fn offset_commit(
    broker: &Arc<Broker>,
    r: OffsetCommitRequest,
) -> OffsetCommitResponse {
    let shard = match broker.groups.shard_for(broker, &r.group).await {
        Ok(s) => s,
        Err(e) => return commit_answer(&r, |_, _| e),
    };
    let image = broker.image();
    let wall_ms = shard::wall_clock_ms();
    let mut errors: BTreeMap<(usize, usize), ErrorCode> = BTreeMap::new();
    let mut records = Vec::new();
    // Held from the checks until the records are proposed: the log takes
    // commits in the order they were checked (see `Shard::writer`).
    let writer = shard.writer().await;
    {
        let state = match shard.state() {
            Ok(s) => s,
            Err(e) => return commit_answer(&r, |_, _| e),
        };
        let group = state.groups.get(&r.group);
        let full = group.is_none() && state.groups.len() >= GROUPS_PER_PARTITION_MAX;
        let simple = r.member_id.is_empty() && r.member_epoch == NO_MEMBER_EPOCH;
        for (ti, t) in r.topics.iter().enumerate() {
            let partitions = image.topics.get(&t.name).map_or(0, |t| t.partitions());
            for (pi, p) in t.partitions.iter().enumerate() {
                let tp = (t.name.clone(), p.partition);
                let error = if full {
                    ErrorCode::GroupMaxSizeReached
                } else if p.partition >= partitions {
                    ErrorCode::UnknownTopicOrPartition
                } else if p.offset > i64::MAX as u64 {
                    // Offsets are read back as signed, as Kafka's are.
                    ErrorCode::InvalidRequest
                } else if p
                    .metadata
                    .as_ref()
                    .is_some_and(|m| m.len() > OFFSET_METADATA_MAX_BYTES)
                {
                    ErrorCode::OffsetMetadataTooLarge
                } else if simple {
                    // Outside any generation: only while nobody consumes.
                    match group {
                        Some(g) if !g.membership.members.is_empty() => ErrorCode::NonEmptyGroup,
                        _ => ErrorCode::None,
                    }
                } else {
                    match group
                        .map(|g| g.membership.check_commit(&r.member_id, r.member_epoch, &tp))
                    {
                        Some(Ok(())) => ErrorCode::None,
                        Some(Err(e)) => e,
                        None => ErrorCode::UnknownMemberId,
                    }
                };
                if error == ErrorCode::None {
                    let key = CommitKey {
                        group: r.group.clone(),
                        topic: t.name.clone(),
                        partition: p.partition,
                    };
                    let value = CommitValue {
                        offset: p.offset,
                        leader_epoch: p.leader_epoch,
                        commit_timestamp_ms: wall_ms,
                        metadata: p.metadata.clone(),
                    };
                    records.push((key.encode(), Some(value.encode())));
                }
                errors.insert((ti, pi), error);
            }
        }
    }
    let written = shard.write(broker, &records, writer).await;
    commit_answer(&r, |ti, pi| match errors.get(&(ti, pi)) {
        Some(ErrorCode::None) | None => written.err().unwrap_or(ErrorCode::None),
        Some(e) => *e,
    })
}

fn commit_answer(
    r: &OffsetCommitRequest,
    error: impl Fn(usize, usize) -> ErrorCode,
) -> OffsetCommitResponse {
    OffsetCommitResponse {
        topics: r
            .topics
            .iter()
            .enumerate()
            .map(|(ti, t)| OffsetCommitTopicResponse {
                name: t.name.clone(),
                partitions: t
                    .partitions
                    .iter()
                    .enumerate()
                    .map(|(pi, p)| OffsetCommitPartitionResponse {
                        partition: p.partition,
                        error: error(ti, pi),
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// The committed offsets `r` asks for: the partitions named, or every one
/// the group has a commit for.
pub(super) async fn offset_fetch(
    broker: &Arc<Broker>,
    r: OffsetFetchRequest,
) -> OffsetFetchResponse {
    let shard = match broker.groups.shard_for(broker, &r.group).await {
        Ok(s) => s,
        Err(error) => {
            return OffsetFetchResponse {
                error,
                topics: Vec::new(),
            };
        }
    };
    let state = match shard.state() {
        Ok(s) => s,
        Err(error) => {
            return OffsetFetchResponse {
                error,
                topics: Vec::new(),
            };
        }
    };
    let commits = state.groups.get(&r.group).map(|g| &g.commits);
    let answer = |topic: &str, partition: u32| {
        let c = commits.and_then(|c| c.get(&(topic.to_string(), partition)));
        OffsetFetchPartitionResponse {
            partition,
            offset: c.map_or(NO_COMMITTED_OFFSET, |c| c.offset as i64),
            leader_epoch: c.map_or(0, |c| c.leader_epoch),
            metadata: c.and_then(|c| c.metadata.clone()),
            error: ErrorCode::None,
        }
    };
    let topics = match r.topics {
        Some(wanted) => wanted
            .into_iter()
            .map(|t| OffsetFetchTopicResponse {
                partitions: t.partitions.iter().map(|p| answer(&t.topic, *p)).collect(),
                name: t.topic,
            })
            .collect(),
        None => {
            let mut by_topic: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
            for (topic, partition) in commits.into_iter().flat_map(|c| c.keys()) {
                by_topic.entry(topic).or_default().push(*partition);
            }
            by_topic
                .into_iter()
                .map(|(topic, partitions)| OffsetFetchTopicResponse {
                    name: topic.to_string(),
                    partitions: partitions.into_iter().map(|p| answer(topic, p)).collect(),
                })
                .collect()
        }
    };
    OffsetFetchResponse {
        error: ErrorCode::None,
        topics,
    }
}
