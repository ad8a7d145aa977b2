//! ConsumerGroupHeartbeat, ListGroups, DescribeGroups and DeleteGroups:
//! group membership at the coordinator (see [`crate::coordinator`]; the state
//! machine is `coordinator/group.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bytes::Bytes;

use rill_client::protocol::ErrorCode;
use rill_client::protocol::messages::{
    ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse, DeleteGroupsRequest,
    DeleteGroupsResponse, DeletedGroup, DescribeGroupsRequest, DescribeGroupsResponse,
    DescribedGroup, DescribedMember, ListGroupsResponse, ListedGroup, TopicPartitions,
};

use super::Caller;
use crate::coordinator::ShardState;
use crate::coordinator::assignor::TopicPartition;
use crate::coordinator::group::{GroupState, Heartbeat, HeartbeatAnswer};
use crate::coordinator::{GROUPS_PER_PARTITION_MAX, GroupSettings, shard};
use crate::metadata::ClusterImage;
use crate::state::Broker;
use crate::topics::validate_topic_name;

/// The heartbeat interval told to members while their group moves
/// partitions, ms, when the steady one is longer.
pub const RECONCILING_HEARTBEAT_INTERVAL_MS: u32 = 200;
/// Longest member id a member may choose, bytes.
pub const MEMBER_ID_MAX_BYTES: usize = 255;
/// Most topics one member may subscribe to.
pub const SUBSCRIBED_TOPICS_MAX: usize = 1_000;
/// Longest client id kept with a member, bytes (longer ones are cut).
pub const CLIENT_ID_KEPT_MAX_BYTES: usize = 255;

/// `s` cut to at most `max_bytes`, on a character boundary.
fn truncated(s: &str, max_bytes: usize) -> String {
    let mut end = s.len().min(max_bytes);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// One member's heartbeat: join, stay, or leave.
pub(super) async fn heartbeat(
    broker: &Arc<Broker>,
    r: ConsumerGroupHeartbeatRequest,
    caller: &Caller,
) -> ConsumerGroupHeartbeatResponse {
    let settings = broker.groups.settings;
    let refuse = |error| ConsumerGroupHeartbeatResponse {
        error,
        member_id: None,
        member_epoch: r.member_epoch,
        heartbeat_interval_ms: settings.heartbeat_interval_ms,
        assignment: None,
    };
    // What a member makes the coordinator keep is bounded: its id, its
    // subscription and (below) its client id.
    if r.member_id.len() > MEMBER_ID_MAX_BYTES
        || r.subscribed_topics.as_ref().is_some_and(|t| {
            t.len() > SUBSCRIBED_TOPICS_MAX || t.iter().any(|n| validate_topic_name(n).is_err())
        })
    {
        return refuse(ErrorCode::InvalidRequest);
    }
    let shard = match broker.groups.shard_for(broker, &r.group).await {
        Ok(s) => s,
        Err(e) => return refuse(e),
    };
    let image = broker.image();
    // Held until this heartbeat's changes are stored (see
    // `Shard::writer`): no heartbeat is answered from a membership the log
    // does not hold.
    let writer = shard.writer().await;
    let now_ms = broker.groups.now_ms();
    // The state's lock is taken and let go within this one statement:
    // nothing is held across the write below.
    let changed = shard
        .state()
        .and_then(|mut state| change(&mut state, &r, caller, &image, now_ms, &settings));
    let (answer, records, reconciling) = match changed {
        Ok(c) => c,
        Err(e) => return refuse(e),
    };
    // A new coordinator carries on with the member as this one left it.
    if let Err(e) = shard
        .store_membership(broker, &r.group, &records, writer)
        .await
    {
        return refuse(e);
    }
    match answer {
        Ok(a) => ConsumerGroupHeartbeatResponse {
            error: ErrorCode::None,
            member_id: Some(a.member_id),
            member_epoch: a.member_epoch,
            // While partitions move, members heartbeat often: a revocation
            // reaches its owner, and a released partition its next owner,
            // within a fraction of the steady interval.
            heartbeat_interval_ms: if reconciling {
                settings
                    .heartbeat_interval_ms
                    .min(RECONCILING_HEARTBEAT_INTERVAL_MS)
            } else {
                settings.heartbeat_interval_ms
            },
            assignment: a.assignment.map(|set| by_topic(&set)),
        },
        Err(e) => refuse(e),
    }
}

/// A heartbeat's answer, the records that store what it changed, and
/// whether the group is still moving partitions.
type Changed = (
    Result<HeartbeatAnswer, ErrorCode>,
    Vec<(Bytes, Option<Bytes>)>,
    bool,
);

/// Applies heartbeat `r` to its group in `state`.
fn change(
    state: &mut ShardState,
    r: &ConsumerGroupHeartbeatRequest,
    caller: &Caller,
    image: &ClusterImage,
    now_ms: u64,
    settings: &GroupSettings,
) -> Result<Changed, ErrorCode> {
    if !state.groups.contains_key(&r.group) && state.groups.len() >= GROUPS_PER_PARTITION_MAX {
        return Err(ErrorCode::GroupMaxSizeReached);
    }
    if r.member_epoch != 0 && !state.groups.contains_key(&r.group) {
        return Err(ErrorCode::UnknownMemberId);
    }
    let group = state.groups.entry(r.group.clone()).or_default();
    // The partition counts of the topics any member (this one included)
    // subscribes to: all the assignor looks at.
    let mut topics: BTreeSet<&String> = group
        .membership
        .members
        .values()
        .flat_map(|m| m.subscribed.iter())
        .collect();
    topics.extend(r.subscribed_topics.iter().flatten());
    let partitions: BTreeMap<String, u32> = topics
        .into_iter()
        .filter_map(|t| image.topics.get(t).map(|i| (t.clone(), i.partitions())))
        .collect();
    let hb = Heartbeat {
        member_id: r.member_id.clone(),
        member_epoch: r.member_epoch,
        subscribed: r
            .subscribed_topics
            .as_ref()
            .map(|t| t.iter().cloned().collect()),
        owned: r.owned.as_ref().map(|o| {
            o.iter()
                .flat_map(|t| t.partitions.iter().map(|p| (t.topic.clone(), *p)))
                .collect()
        }),
        client_id: truncated(&caller.client_id, CLIENT_ID_KEPT_MAX_BYTES),
        host: caller.host.clone(),
    };
    let before = group.membership.stored();
    let answer = group.membership.heartbeat(
        hb,
        now_ms,
        &partitions,
        || uuid::Uuid::new_v4().to_string(),
        settings.group_max_size,
    );
    if !group.membership.members.is_empty() || r.member_epoch < 0 {
        group.last_active_wall_ms = shard::wall_clock_ms();
    }
    let records = shard::membership_records(&r.group, &before, &group.membership.stored());
    let reconciling = group.membership.state() == GroupState::Reconciling;
    state.forget_unused(&r.group);
    Ok((answer, records, reconciling))
}

/// Partitions grouped by topic, in order.
fn by_topic(set: &BTreeSet<TopicPartition>) -> Vec<TopicPartitions> {
    let mut out: Vec<TopicPartitions> = Vec::new();
    for (topic, partition) in set {
        match out.last_mut() {
            Some(last) if last.topic == *topic => last.partitions.push(*partition),
            _ => out.push(TopicPartitions {
                topic: topic.clone(),
                partitions: vec![*partition],
            }),
        }
    }
    out
}

/// The groups this broker coordinates (a client asks every broker and
/// merges).
pub(super) fn list_groups(broker: &Broker) -> ListGroupsResponse {
    let mut groups = Vec::new();
    for shard in broker.groups.leading_shards() {
        let Ok(state) = shard.state() else {
            continue;
        };
        groups.extend(state.groups.iter().map(|(id, g)| ListedGroup {
            group: id.clone(),
            state: g.membership.state().name().to_string(),
        }));
    }
    groups.sort_by(|a, b| a.group.cmp(&b.group));
    ListGroupsResponse {
        error: ErrorCode::None,
        groups,
    }
}

/// Each group's state and members, from its coordinator.
pub(super) async fn describe_groups(
    broker: &Arc<Broker>,
    r: DescribeGroupsRequest,
) -> DescribeGroupsResponse {
    let mut groups = Vec::with_capacity(r.groups.len());
    for id in r.groups {
        let refuse = |error, group: String| DescribedGroup {
            group,
            error,
            state: String::new(),
            group_epoch: 0,
            assignment_epoch: 0,
            members: Vec::new(),
        };
        let shard = match broker.groups.shard_for(broker, &id).await {
            Ok(s) => s,
            Err(e) => {
                groups.push(refuse(e, id));
                continue;
            }
        };
        let state = match shard.state() {
            Ok(s) => s,
            Err(e) => {
                groups.push(refuse(e, id));
                continue;
            }
        };
        let Some(g) = state.groups.get(&id) else {
            groups.push(refuse(ErrorCode::GroupIdNotFound, id));
            continue;
        };
        let m = &g.membership;
        groups.push(DescribedGroup {
            error: ErrorCode::None,
            state: m.state().name().to_string(),
            group_epoch: m.group_epoch,
            assignment_epoch: m.assignment_epoch,
            members: m
                .members
                .iter()
                .map(|(member_id, member)| DescribedMember {
                    member_id: member_id.clone(),
                    client_id: member.client_id.clone(),
                    host: member.host.clone(),
                    member_epoch: member.epoch,
                    assigned: by_topic(&member.assigned),
                })
                .collect(),
            group: id,
        });
    }
    DescribeGroupsResponse { groups }
}

/// Deletes each group's commits, at its coordinator: refused while it has
/// members (`NonEmptyGroup`).
pub(super) async fn delete_groups(
    broker: &Arc<Broker>,
    r: DeleteGroupsRequest,
) -> DeleteGroupsResponse {
    let mut groups = Vec::with_capacity(r.groups.len());
    for group in r.groups {
        let error = match broker.groups.shard_for(broker, &group).await {
            Err(e) => e,
            Ok(shard) => {
                let known = shard.state().map(|s| s.groups.contains_key(&group));
                if let Err(e) = known {
                    e
                } else if known == Ok(false) {
                    ErrorCode::GroupIdNotFound
                } else {
                    match shard.delete_commits(broker, &group, None).await {
                        Ok(true) => ErrorCode::None,
                        Ok(false) => ErrorCode::NonEmptyGroup,
                        Err(e) => e,
                    }
                }
            }
        };
        groups.push(DeletedGroup { group, error });
    }
    DeleteGroupsResponse { groups }
}
