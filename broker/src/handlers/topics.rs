//! CreateTopics and DeleteTopics: each topic is its own change through the
//! controller (see [`crate::state::Broker::admin`]), made one after
//! another, with its own result. A topic's outcome is told apart from the
//! others, so one refused name never hides what happened to the rest; the
//! code and message of a refusal are [`BrokerError::code`] and its text.

use std::sync::Arc;

use rill_client::protocol::ErrorCode;
use rill_client::protocol::messages::{
    AlterTopicConfigsRequest, ConfigEntry, ConfigSource, CreatePartitionsRequest,
    CreateTopicsRequest, DeleteTopicsRequest, DescribeTopicConfigsRequest,
    DescribeTopicConfigsResponse, INTERNAL_TOPIC_PREFIX, ReassignPartitionsRequest, TopicConfigs,
    TopicResult, TopicResults,
};

use crate::error::BrokerError;
use crate::state::Broker;

/// Creates each topic named, in order.
pub(super) async fn create_topics(
    broker: &Arc<Broker>,
    c: CreateTopicsRequest,
    forwarded: bool,
) -> TopicResults {
    let mut results = Vec::new();
    for t in c.topics {
        // Names beginning `__` are the broker's own (the offsets topic); a
        // request another broker forwards may create one.
        if !forwarded && t.name.starts_with(INTERNAL_TOPIC_PREFIX) {
            results.push(internal_topic(
                t.name,
                &format!("names beginning {INTERNAL_TOPIC_PREFIX:?} are kept for them"),
            ));
            continue;
        }
        let outcome = broker
            .create_topic(
                &t.name,
                t.partitions,
                t.replication_factor,
                &t.configs,
                forwarded,
            )
            .await;
        results.push(topic_result(t.name, outcome));
    }
    TopicResults { results }
}

/// Deletes each topic named, in order.
pub(super) async fn delete_topics(
    broker: &Arc<Broker>,
    d: DeleteTopicsRequest,
    forwarded: bool,
) -> TopicResults {
    let mut results = Vec::new();
    for name in d.names {
        // The broker's own topics hold what it cannot rebuild (every
        // group's committed offsets): nobody deletes them.
        if name.starts_with(INTERNAL_TOPIC_PREFIX) {
            results.push(internal_topic(name, "it cannot be deleted"));
            continue;
        }
        let outcome = broker.delete_topic(&name, forwarded).await;
        results.push(topic_result(name, outcome));
    }
    TopicResults { results }
}

/// The refusal of a client's change to `name`, one of rill's internal
/// topics (beginning `__`): they hold what the broker cannot rebuild.
fn internal_topic(name: String, why: &str) -> TopicResult {
    TopicResult {
        message: format!("{name:?} is one of rill's internal topics: {why}"),
        name,
        error: ErrorCode::InvalidTopic,
    }
}

fn topic_result(name: String, outcome: Result<(), BrokerError>) -> TopicResult {
    match outcome {
        Ok(()) => TopicResult {
            name,
            error: ErrorCode::None,
            message: String::new(),
        },
        Err(e) => TopicResult {
            name,
            error: e.code(),
            message: e.to_string(),
        },
    }
}

/// Changes each topic's settings, in order. Internal topics' settings are
/// the broker's own.
pub(super) async fn alter_topic_configs(
    broker: &Arc<Broker>,
    a: AlterTopicConfigsRequest,
    forwarded: bool,
) -> TopicResults {
    let mut results = Vec::new();
    for t in a.topics {
        if !forwarded && t.name.starts_with(INTERNAL_TOPIC_PREFIX) {
            results.push(internal_topic(t.name, "its settings are rill's"));
            continue;
        }
        let outcome = broker
            .alter_topic_config(&t.name, &t.set, &t.delete, forwarded)
            .await;
        results.push(topic_result(t.name, outcome));
    }
    TopicResults { results }
}

/// Every setting of each topic named, with where it comes from.
pub(super) fn describe_topic_configs(
    broker: &Broker,
    d: DescribeTopicConfigsRequest,
) -> DescribeTopicConfigsResponse {
    let image = broker.image();
    let topics = d
        .names
        .into_iter()
        .map(|name| match image.topics.get(&name) {
            Some(t) => TopicConfigs {
                configs: t
                    .config
                    .entries(&t.overrides, broker.timestamps)
                    .into_iter()
                    .map(|(key, value, set)| ConfigEntry {
                        key: key.to_string(),
                        value,
                        source: if set {
                            ConfigSource::Topic
                        } else {
                            ConfigSource::Default
                        },
                    })
                    .collect(),
                name,
                error: ErrorCode::None,
                message: String::new(),
            },
            None => TopicConfigs {
                message: format!("no topic {name:?}"),
                name,
                error: ErrorCode::UnknownTopicOrPartition,
                configs: Vec::new(),
            },
        })
        .collect();
    DescribeTopicConfigsResponse { topics }
}

/// Records each move, in order (internal topics' partitions move too: a
/// broker leaving takes every replica with it).
pub(super) async fn reassign_partitions(
    broker: &Arc<Broker>,
    r: ReassignPartitionsRequest,
    forwarded: bool,
) -> TopicResults {
    let mut results = Vec::new();
    for m in r.moves {
        let outcome = broker
            .reassign_partition(&m.topic, m.partition, &m.replicas, forwarded)
            .await;
        results.push(topic_result(m.topic, outcome));
    }
    TopicResults { results }
}

/// Adds partitions to each topic, in order. Internal topics' partition
/// counts are fixed (a group's coordinator is a function of them).
pub(super) async fn create_partitions(
    broker: &Arc<Broker>,
    c: CreatePartitionsRequest,
    forwarded: bool,
) -> TopicResults {
    let mut results = Vec::new();
    for (name, partitions) in c.topics {
        if name.starts_with(INTERNAL_TOPIC_PREFIX) {
            results.push(internal_topic(name, "its partitions are fixed"));
            continue;
        }
        let outcome = broker.add_partitions(&name, partitions, forwarded).await;
        results.push(topic_result(name, outcome));
    }
    TopicResults { results }
}
