//! FindCoordinator: which broker coordinates a consumer group. A group's
//! coordinator is the leader of one partition of the internal topic
//! [`OFFSETS_TOPIC`], the partition its id hashes to (murmur2, as keys are
//! partitioned: [`rill_client::partitioner::partition_for_key`]), so every
//! broker and client computes the same one. The topic is created through
//! the controller the first time any group is looked up, with
//! [`OFFSETS_TOPIC_PARTITIONS`] partitions on min(3, brokers) replicas.
//! Until the partition has a leader the answer is the retriable
//! `CoordinatorNotAvailable`.

use std::sync::Arc;

use rill_client::partitioner::partition_for_key;
use rill_client::protocol::ErrorCode;
use rill_client::protocol::messages::{FindCoordinatorRequest, FindCoordinatorResponse, NO_BROKER};

use crate::state::Broker;

/// The internal topic holding committed offsets and group state.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// Partitions of [`OFFSETS_TOPIC`]: fixed once created (a group's
/// partition is a function of their number). Sixteen, as Redpanda's
/// default: enough coordinators to spread groups over a cluster, few
/// enough Raft groups for a broker on a laptop.
pub const OFFSETS_TOPIC_PARTITIONS: u32 = 16;
/// Longest group id, bytes: a group id is stored in every commit of the
/// group.
pub const GROUP_ID_MAX_BYTES: usize = 255;

/// The offsets topic's settings: compacted, so only the newest record
/// of each commit, member and group stays, and its records are kept until
/// the coordinator removes them (tombstones of deleted and expired groups),
/// never by age or size, or an active group that had not committed for a
/// week would lose its offsets. Its segments are Kafka's size for this
/// topic (100 MiB), so compaction reaches commits within days, not after a
/// gigabyte of them.
fn offsets_topic_configs() -> Vec<(String, String)> {
    vec![
        ("cleanup.policy".to_string(), "compact".to_string()),
        ("retention.ms".to_string(), "-1".to_string()),
        ("retention.bytes".to_string(), "-1".to_string()),
        ("segment.bytes".to_string(), (100 << 20).to_string()),
    ]
}

/// Finds `r.group`'s coordinator, creating [`OFFSETS_TOPIC`] first if no
/// group was ever looked up.
pub(super) async fn find_coordinator(
    broker: &Arc<Broker>,
    r: FindCoordinatorRequest,
    forwarded: bool,
) -> FindCoordinatorResponse {
    let none = |error| FindCoordinatorResponse {
        error,
        coordinator: NO_BROKER,
        host: String::new(),
        port: 0,
    };
    if r.group.is_empty() || r.group.len() > GROUP_ID_MAX_BYTES {
        return none(ErrorCode::InvalidGroupId);
    }
    if !broker.image().topics.contains_key(OFFSETS_TOPIC) {
        let replicas = broker.image().voters.len().clamp(1, 3) as u16;
        // Two brokers creating it at once: the second is refused as a
        // topic that exists, and finds it in its image like the first.
        if let Err(e) = broker
            .create_topic(
                OFFSETS_TOPIC,
                OFFSETS_TOPIC_PARTITIONS,
                replicas,
                &offsets_topic_configs(),
                forwarded,
            )
            .await
            && e.code() != ErrorCode::TopicAlreadyExists
        {
            tracing::warn!(error = %e, "could not create the offsets topic");
            return none(ErrorCode::CoordinatorNotAvailable);
        }
    }
    let image = broker.image();
    let Some(topic) = image.topics.get(OFFSETS_TOPIC) else {
        return none(ErrorCode::CoordinatorNotAvailable);
    };
    let partition = partition_for_key(r.group.as_bytes(), topic.partitions());
    // A replica here knows its leader; otherwise the preferred leader is
    // the best guess, as metadata answers (a coordinator that is not the
    // leader answers NotCoordinator, and the client asks again).
    let leader = match broker.published.partition(topic.group(partition)) {
        Some(p) => p.leadership().hint().leader,
        None => topic.replicas[partition as usize].first().copied(),
    };
    let Some(info) = leader.and_then(|l| image.brokers.get(&l).map(|i| (l, i))) else {
        return none(ErrorCode::CoordinatorNotAvailable);
    };
    FindCoordinatorResponse {
        error: ErrorCode::None,
        coordinator: info.0.get() as i32,
        host: info.1.host.clone(),
        port: info.1.port,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topics::TopicConfig;

    #[test]
    fn the_offsets_topic_keeps_its_records_until_the_coordinator_removes_them() {
        let config = TopicConfig::from_pairs(&offsets_topic_configs()).expect("valid settings");
        assert_eq!(config.retention_ms, None);
        assert_eq!(config.retention_bytes, None);
    }
}
