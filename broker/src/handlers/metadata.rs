//! Metadata: the brokers, the controller and the topics as applied here.
//! A request that names topics gets each described once, and at most
//! `metadata_max_topics` of them, so its answer never grows past what the
//! limit allows however the request repeats itself. A leader this broker
//! has no replica to know is a guess (the preferred leader), which the
//! named broker corrects with `NotLeader`.

use std::sync::Arc;

use rill_client::protocol::ErrorCode;
use rill_client::protocol::messages::{
    BrokerMetadata, MetadataRequest, MetadataResponse, PartitionMetadata, TopicMetadata,
};

use super::hint;
use crate::metadata::ClusterImage;
use crate::partition::LeaderHint;
use crate::state::Broker;

/// Describes the topics asked for, or all of them.
pub(super) fn metadata(broker: &Arc<Broker>, m: MetadataRequest) -> MetadataResponse {
    let image = broker.image();
    let describe = |name: &str| match image.topics.get(name) {
        None => TopicMetadata {
            error: ErrorCode::UnknownTopicOrPartition,
            name: name.to_string(),
            topic_id: [0; 16],
            partitions: Vec::new(),
        },
        Some(t) => TopicMetadata {
            error: ErrorCode::None,
            name: t.name.clone(),
            topic_id: uuid::Uuid::parse_str(&t.id).map_or([0; 16], |u| *u.as_bytes()),
            partitions: (0..t.partitions())
                .map(|i| {
                    let replicas = &t.replicas[i as usize];
                    // A replica here knows its leader; otherwise the
                    // preferred leader is the best guess (it answers
                    // NotLeader with the real one if it is wrong).
                    let (leader, start, hw) = match broker.published.partition(t.group(i)) {
                        Some(p) => (
                            p.leadership().hint(),
                            p.log_start_offset(),
                            p.high_watermark(),
                        ),
                        None => (LeaderHint::guess(replicas.first().copied()), 0, 0),
                    };
                    PartitionMetadata {
                        partition: i,
                        error: ErrorCode::None,
                        leader: hint(leader.leader),
                        leader_epoch: leader.epoch.get(),
                        replicas: replicas.iter().map(|b| b.get() as u32).collect(),
                        log_start_offset: start,
                        high_watermark: hw,
                    }
                })
                .collect(),
        },
    };
    let topics = match m.topics {
        // Each topic described once however often it is named (one
        // request naming a large topic many times asked for terabytes),
        // and no more than `metadata_max_topics` of them.
        Some(names) => {
            let mut seen = std::collections::HashSet::new();
            let mut described = 0;
            names
                .into_iter()
                .filter(|n| seen.insert(n.clone()))
                .map(|name| {
                    described += 1;
                    if described > broker.limits.metadata_max_topics {
                        TopicMetadata {
                            error: ErrorCode::InvalidRequest,
                            name,
                            topic_id: [0; 16],
                            partitions: Vec::new(),
                        }
                    } else {
                        describe(&name)
                    }
                })
                .collect()
        }
        None => image.topics.keys().map(|n| describe(n)).collect(),
    };
    MetadataResponse {
        brokers: brokers(broker, &image),
        controller_id: hint(broker.controller()),
        topics,
    }
}

/// The registered brokers, with this one as it is now: its registration
/// may still carry the port of its previous run. A broker removed from
/// hosting replicas that holds none is left out: it may be stopped, and
/// is no broker of the cluster's any more.
pub(super) fn brokers(broker: &Broker, image: &ClusterImage) -> Vec<BrokerMetadata> {
    let gone = if image.removed.is_empty() {
        Default::default()
    } else {
        crate::balance::holding_nothing(image)
    };
    let mut all: Vec<BrokerMetadata> = image
        .brokers
        .iter()
        .filter(|(id, _)| **id != broker.id())
        .filter(|(id, _)| !(image.removed.contains(id) && gone.contains(id)))
        .map(|(id, b)| BrokerMetadata {
            broker_id: id.get() as u32,
            host: b.host.clone(),
            port: b.port,
        })
        .collect();
    all.push(BrokerMetadata {
        broker_id: broker.node_id.get() as u32,
        host: broker.advertised_host.clone(),
        port: broker.advertised_port,
    });
    all.sort_by_key(|b| b.broker_id);
    all
}
