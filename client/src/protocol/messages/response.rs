//! What a broker answers: the [`Response`] bodies of every API, and their
//! encoding. Field order on the wire is the field order of each struct;
//! fetched records stay shared chunks of the log, never copied.

use bytes::Bytes;

use super::{
    BrokerMetadata, ConsumerGroupHeartbeatResponse, DeleteGroupsResponse, DescribeGroupsResponse,
    DescribeTopicConfigsResponse, FindCoordinatorResponse, ListGroupsResponse, MIN_STRING,
    MIN_TOPIC, OffsetCommitResponse, OffsetFetchResponse, error_code, read_broker, write_broker,
};
use crate::protocol::error::{DecodeError, ErrorCode};
use crate::protocol::header::ApiKey;
use crate::protocol::wire::{Reader, Writer};

/// A response body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// See [`ApiKey::ApiVersions`].
    ApiVersions(ApiVersionsResponse),
    /// See [`ApiKey::Metadata`].
    Metadata(MetadataResponse),
    /// See [`ApiKey::CreateTopics`].
    CreateTopics(TopicResults),
    /// See [`ApiKey::DeleteTopics`].
    DeleteTopics(TopicResults),
    /// See [`ApiKey::Produce`].
    Produce(ProduceResponse),
    /// See [`ApiKey::Fetch`].
    Fetch(FetchResponse),
    /// See [`ApiKey::ListOffsets`].
    ListOffsets(ListOffsetsResponse),
    /// See [`ApiKey::RegisterBroker`].
    RegisterBroker(RegisterBrokerResponse),
    /// See [`ApiKey::ClusterStatus`].
    ClusterStatus(ClusterStatusResponse),
    /// See [`ApiKey::FindCoordinator`].
    FindCoordinator(FindCoordinatorResponse),
    /// See [`ApiKey::OffsetCommit`].
    OffsetCommit(OffsetCommitResponse),
    /// See [`ApiKey::OffsetFetch`].
    OffsetFetch(OffsetFetchResponse),
    /// See [`ApiKey::ConsumerGroupHeartbeat`].
    ConsumerGroupHeartbeat(ConsumerGroupHeartbeatResponse),
    /// See [`ApiKey::ListGroups`].
    ListGroups(ListGroupsResponse),
    /// See [`ApiKey::DescribeGroups`].
    DescribeGroups(DescribeGroupsResponse),
    /// See [`ApiKey::DeleteGroups`].
    DeleteGroups(DeleteGroupsResponse),
    /// See [`ApiKey::AlterTopicConfigs`].
    AlterTopicConfigs(TopicResults),
    /// See [`ApiKey::DescribeTopicConfigs`].
    DescribeTopicConfigs(DescribeTopicConfigsResponse),
    /// See [`ApiKey::CreatePartitions`].
    CreatePartitions(TopicResults),
    /// See [`ApiKey::ReassignPartitions`].
    ReassignPartitions(TopicResults),
    /// See [`ApiKey::ChangeBrokers`].
    ChangeBrokers(super::ChangeBrokersResponse),
    /// See [`ApiKey::JoinCluster`].
    JoinCluster(super::JoinClusterResponse),
    /// See [`ApiKey::InitProducerId`].
    InitProducerId(InitProducerIdResponse),
}

/// The controller's answer to a broker's registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterBrokerResponse {
    /// `None` once the registration is in the cluster's metadata.
    pub error: ErrorCode,
    /// The controller's broker id, or [`NO_BROKER`](super::NO_BROKER).
    pub controller_id: i32,
}

/// One broker's view of replication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterStatusResponse {
    /// The broker answering.
    pub broker_id: u32,
    /// The controller's broker id as it knows it, or [`NO_BROKER`](super::NO_BROKER).
    pub controller_id: i32,
    /// Every registered broker.
    pub brokers: Vec<BrokerMetadata>,
    /// Every replica this broker holds.
    pub replicas: Vec<ReplicaStatus>,
}

/// One replica's replication state, as the broker holding it sees it.
///
/// Wire layout: `topic string`, `partition u32`, `group u64`, `leader
/// i32`, `term u64`, `commit u64`, `last_index u64`, `high_watermark
/// u64`, `replicas [u32]`, `matched [broker u32, index u64]`,
/// `log_end_offset u64`, `matched_offsets [broker u32, offset u64]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaStatus {
    /// The topic (empty for the controller's own group).
    pub topic: String,
    /// The partition number.
    pub partition: u32,
    /// The Raft group.
    pub group: u64,
    /// The leader this replica knows, or [`NO_BROKER`](super::NO_BROKER).
    pub leader: i32,
    /// The Raft term.
    pub term: u64,
    /// The commit index.
    pub commit: u64,
    /// The last Raft index in this replica's log.
    pub last_index: u64,
    /// The high watermark here.
    pub high_watermark: u64,
    /// The voters.
    pub replicas: Vec<u32>,
    /// On the leader: each voter's match index (how far it has the log).
    pub matched: Vec<(u32, u64)>,
    /// On the leader: the offset after its last record (0 elsewhere).
    pub log_end_offset: u64,
    /// On the leader: each member's offset after the last record it has,
    /// so its lag in records is `log_end_offset` less it.
    pub matched_offsets: Vec<(u32, u64)>,
}

/// One API and the versions spoken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiVersionRange {
    /// The API's number.
    pub api_key: u16,
    /// Oldest version spoken.
    pub min_version: u16,
    /// Newest version spoken.
    pub max_version: u16,
}

/// The APIs a broker speaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiVersionsResponse {
    /// One entry per API.
    pub apis: Vec<ApiVersionRange>,
}

/// Cluster metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataResponse {
    /// Every live broker.
    pub brokers: Vec<BrokerMetadata>,
    /// The controller's broker id, or [`NO_BROKER`](super::NO_BROKER).
    pub controller_id: i32,
    /// The topics asked for.
    pub topics: Vec<TopicMetadata>,
}

/// One topic's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMetadata {
    /// `UnknownTopicOrPartition` for a topic that does not exist.
    pub error: ErrorCode,
    /// The name.
    pub name: String,
    /// The id given at creation (a UUID).
    pub topic_id: [u8; 16],
    /// Its partitions.
    pub partitions: Vec<PartitionMetadata>,
}

/// One partition's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionMetadata {
    /// The partition number.
    pub partition: u32,
    /// A partition-level error.
    pub error: ErrorCode,
    /// The leader's broker id, or [`NO_BROKER`](super::NO_BROKER).
    pub leader: i32,
    /// The Raft term `leader` leads in, or 0 when it is a guess: of two
    /// answers naming a leader, the one with the higher epoch is newer.
    pub leader_epoch: u64,
    /// Brokers holding a replica.
    pub replicas: Vec<u32>,
    /// First offset still stored.
    pub log_start_offset: u64,
    /// Offsets below this are readable.
    pub high_watermark: u64,
}

/// Per-topic outcome of a create or delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicResults {
    /// One per topic in the request.
    pub results: Vec<TopicResult>,
}

/// The outcome for one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicResult {
    /// The topic.
    pub name: String,
    /// The outcome.
    pub error: ErrorCode,
    /// A human-readable explanation when it failed.
    pub message: String,
}

/// Outcome of a produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceResponse {
    /// Per topic.
    pub topics: Vec<ProduceTopicResponse>,
}

/// Outcome for one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceTopicResponse {
    /// The topic.
    pub name: String,
    /// Per partition.
    pub partitions: Vec<ProducePartitionResponse>,
}

/// Outcome for one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducePartitionResponse {
    /// The partition.
    pub partition: u32,
    /// The outcome.
    pub error: ErrorCode,
    /// With `NotLeader`: the leader, if known, else [`NO_BROKER`](super::NO_BROKER).
    pub leader_hint: i32,
    /// The Raft term `leader_hint` leads in, or 0 when unknown.
    pub leader_epoch: u64,
    /// Offset of the first record appended.
    pub base_offset: u64,
    /// The partition's log start offset.
    pub log_start_offset: u64,
}

/// Batches read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchResponse {
    /// Per topic.
    pub topics: Vec<FetchTopicResponse>,
}

/// Batches read from one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchTopicResponse {
    /// The topic.
    pub name: String,
    /// Per partition.
    pub partitions: Vec<FetchPartitionResponse>,
}

/// Batches read from one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchPartitionResponse {
    /// The partition.
    pub partition: u32,
    /// The outcome.
    pub error: ErrorCode,
    /// With `NotLeader`: the leader, if known, else [`NO_BROKER`](super::NO_BROKER).
    pub leader_hint: i32,
    /// The Raft term `leader_hint` leads in, or 0 when unknown.
    pub leader_epoch: u64,
    /// Offsets below this are readable.
    pub high_watermark: u64,
    /// First offset still stored.
    pub log_start_offset: u64,
    /// Whole batches, back to back; on the wire one byte string, here the
    /// chunks as they were borrowed from the log.
    pub records: Vec<Bytes>,
}

/// Offsets found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListOffsetsResponse {
    /// Per topic.
    pub topics: Vec<ListOffsetsTopicResponse>,
}

/// Offsets found in one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListOffsetsTopicResponse {
    /// The topic.
    pub name: String,
    /// Per partition.
    pub partitions: Vec<ListOffsetsPartitionResponse>,
}

/// The offset found in one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListOffsetsPartitionResponse {
    /// The partition.
    pub partition: u32,
    /// The outcome.
    pub error: ErrorCode,
    /// With `NotLeader`: the leader, if known, else [`NO_BROKER`](super::NO_BROKER).
    pub leader_hint: i32,
    /// The Raft term `leader_hint` leads in, or 0 when unknown.
    pub leader_epoch: u64,
    /// The offset, or -1 when no record is at or after the timestamp.
    pub offset: i64,
}

fn topic_results(w: &mut Writer, t: &TopicResults) {
    w.array(&t.results, |w, r| {
        w.string(&r.name);
        w.i16(r.error.code());
        w.string(&r.message);
    });
}

fn read_topic_results(r: &mut Reader) -> Result<TopicResults, DecodeError> {
    Ok(TopicResults {
        results: r.array("topic results", 2 * MIN_STRING + 2, |r| {
            Ok(TopicResult {
                name: r.string("topic name")?,
                error: error_code(r, "error code")?,
                message: r.string("message")?,
            })
        })?,
    })
}

/// A producer id: `error i16`, `producer_id i64`, `producer_epoch i16`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitProducerIdResponse {
    /// `NotController` and the like while no id can be given.
    pub error: ErrorCode,
    /// The id, unique in the cluster, never given again (-1 with an
    /// error).
    pub producer_id: i64,
    /// Its epoch (0 for a new id).
    pub producer_epoch: i16,
}

impl Response {
    /// The API this responds to.
    pub fn api_key(&self) -> ApiKey {
        match self {
            Response::ApiVersions(_) => ApiKey::ApiVersions,
            Response::Metadata(_) => ApiKey::Metadata,
            Response::CreateTopics(_) => ApiKey::CreateTopics,
            Response::DeleteTopics(_) => ApiKey::DeleteTopics,
            Response::Produce(_) => ApiKey::Produce,
            Response::Fetch(_) => ApiKey::Fetch,
            Response::ListOffsets(_) => ApiKey::ListOffsets,
            Response::RegisterBroker(_) => ApiKey::RegisterBroker,
            Response::ClusterStatus(_) => ApiKey::ClusterStatus,
            Response::FindCoordinator(_) => ApiKey::FindCoordinator,
            Response::OffsetCommit(_) => ApiKey::OffsetCommit,
            Response::OffsetFetch(_) => ApiKey::OffsetFetch,
            Response::ConsumerGroupHeartbeat(_) => ApiKey::ConsumerGroupHeartbeat,
            Response::ListGroups(_) => ApiKey::ListGroups,
            Response::DescribeGroups(_) => ApiKey::DescribeGroups,
            Response::DeleteGroups(_) => ApiKey::DeleteGroups,
            Response::AlterTopicConfigs(_) => ApiKey::AlterTopicConfigs,
            Response::DescribeTopicConfigs(_) => ApiKey::DescribeTopicConfigs,
            Response::CreatePartitions(_) => ApiKey::CreatePartitions,
            Response::ReassignPartitions(_) => ApiKey::ReassignPartitions,
            Response::ChangeBrokers(_) => ApiKey::ChangeBrokers,
            Response::JoinCluster(_) => ApiKey::JoinCluster,
            Response::InitProducerId(_) => ApiKey::InitProducerId,
        }
    }

    /// Encodes the body; fetched records stay shared parts of the writer.
    pub fn encode(&self, w: &mut Writer) {
        match self {
            Response::ApiVersions(a) => w.array(&a.apis, |w, v| {
                w.u16(v.api_key);
                w.u16(v.min_version);
                w.u16(v.max_version);
            }),
            Response::Metadata(m) => {
                w.array(&m.brokers, write_broker);
                w.i32(m.controller_id);
                w.array(&m.topics, |w, t| {
                    w.i16(t.error.code());
                    w.string(&t.name);
                    w.uuid(&t.topic_id);
                    w.array(&t.partitions, |w, p| {
                        w.u32(p.partition);
                        w.i16(p.error.code());
                        w.i32(p.leader);
                        w.u64(p.leader_epoch);
                        w.array(&p.replicas, |w, r| w.u32(*r));
                        w.u64(p.log_start_offset);
                        w.u64(p.high_watermark);
                    });
                });
            }
            Response::CreateTopics(t) | Response::DeleteTopics(t) => topic_results(w, t),
            Response::Produce(p) => w.array(&p.topics, |w, t| {
                w.string(&t.name);
                w.array(&t.partitions, |w, p| {
                    w.u32(p.partition);
                    w.i16(p.error.code());
                    w.i32(p.leader_hint);
                    w.u64(p.leader_epoch);
                    w.u64(p.base_offset);
                    w.u64(p.log_start_offset);
                });
            }),
            Response::Fetch(f) => w.array(&f.topics, |w, t| {
                w.string(&t.name);
                w.array(&t.partitions, |w, p| {
                    w.u32(p.partition);
                    w.i16(p.error.code());
                    w.i32(p.leader_hint);
                    w.u64(p.leader_epoch);
                    w.u64(p.high_watermark);
                    w.u64(p.log_start_offset);
                    w.shared_bytes(&p.records);
                });
            }),
            Response::ListOffsets(l) => w.array(&l.topics, |w, t| {
                w.string(&t.name);
                w.array(&t.partitions, |w, p| {
                    w.u32(p.partition);
                    w.i16(p.error.code());
                    w.i32(p.leader_hint);
                    w.u64(p.leader_epoch);
                    w.i64(p.offset);
                });
            }),
            Response::RegisterBroker(b) => {
                w.i16(b.error.code());
                w.i32(b.controller_id);
            }
            Response::ClusterStatus(c) => {
                w.u32(c.broker_id);
                w.i32(c.controller_id);
                w.array(&c.brokers, write_broker);
                w.array(&c.replicas, |w, r| {
                    w.string(&r.topic);
                    w.u32(r.partition);
                    w.u64(r.group);
                    w.i32(r.leader);
                    w.u64(r.term);
                    w.u64(r.commit);
                    w.u64(r.last_index);
                    w.u64(r.high_watermark);
                    w.array(&r.replicas, |w, b| w.u32(*b));
                    w.array(&r.matched, |w, (b, i)| {
                        w.u32(*b);
                        w.u64(*i);
                    });
                    w.u64(r.log_end_offset);
                    w.array(&r.matched_offsets, |w, (b, o)| {
                        w.u32(*b);
                        w.u64(*o);
                    });
                });
            }
            Response::FindCoordinator(f) => f.encode(w),
            Response::OffsetCommit(c) => c.encode(w),
            Response::OffsetFetch(f) => f.encode(w),
            Response::ConsumerGroupHeartbeat(h) => h.encode(w),
            Response::ListGroups(l) => l.encode(w),
            Response::DescribeGroups(d) => d.encode(w),
            Response::DeleteGroups(d) => d.encode(w),
            Response::AlterTopicConfigs(t)
            | Response::CreatePartitions(t)
            | Response::ReassignPartitions(t) => topic_results(w, t),
            Response::DescribeTopicConfigs(d) => d.encode(w),
            Response::ChangeBrokers(c) => c.encode(w),
            Response::JoinCluster(j) => j.encode(w),
            Response::InitProducerId(i) => {
                w.i16(i.error.code());
                w.i64(i.producer_id);
                w.i16(i.producer_epoch);
            }
        }
    }

    /// Decodes the body of a response to `api`; every byte must be used.
    pub fn decode(api: ApiKey, r: &mut Reader) -> Result<Response, DecodeError> {
        let resp = match api {
            ApiKey::ApiVersions => Response::ApiVersions(ApiVersionsResponse {
                apis: r.array("apis", 6, |r| {
                    Ok(ApiVersionRange {
                        api_key: r.u16("api key")?,
                        min_version: r.u16("min version")?,
                        max_version: r.u16("max version")?,
                    })
                })?,
            }),
            ApiKey::Metadata => Response::Metadata(MetadataResponse {
                brokers: r.array("brokers", 4 + MIN_STRING + 2, read_broker)?,
                controller_id: r.i32("controller id")?,
                topics: r.array("topics", 2 + MIN_STRING + 16 + 4, |r| {
                    Ok(TopicMetadata {
                        error: error_code(r, "topic error")?,
                        name: r.string("topic name")?,
                        topic_id: r.uuid("topic id")?,
                        partitions: r.array("partitions", 4 + 2 + 4 + 8 + 4 + 16, |r| {
                            Ok(PartitionMetadata {
                                partition: r.u32("partition")?,
                                error: error_code(r, "partition error")?,
                                leader: r.i32("leader")?,
                                leader_epoch: r.u64("leader epoch")?,
                                replicas: r.array("replicas", 4, |r| r.u32("replica"))?,
                                log_start_offset: r.u64("log start offset")?,
                                high_watermark: r.u64("high watermark")?,
                            })
                        })?,
                    })
                })?,
            }),
            ApiKey::CreateTopics => Response::CreateTopics(read_topic_results(r)?),
            ApiKey::DeleteTopics => Response::DeleteTopics(read_topic_results(r)?),
            ApiKey::Produce => Response::Produce(ProduceResponse {
                topics: r.array("topics", MIN_TOPIC, |r| {
                    Ok(ProduceTopicResponse {
                        name: r.string("topic name")?,
                        partitions: r.array("partitions", 34, |r| {
                            Ok(ProducePartitionResponse {
                                partition: r.u32("partition")?,
                                error: error_code(r, "error code")?,
                                leader_hint: r.i32("leader hint")?,
                                leader_epoch: r.u64("leader epoch")?,
                                base_offset: r.u64("base offset")?,
                                log_start_offset: r.u64("log start offset")?,
                            })
                        })?,
                    })
                })?,
            }),
            ApiKey::Fetch => Response::Fetch(FetchResponse {
                topics: r.array("topics", MIN_TOPIC, |r| {
                    Ok(FetchTopicResponse {
                        name: r.string("topic name")?,
                        partitions: r.array("partitions", 38, |r| {
                            Ok(FetchPartitionResponse {
                                partition: r.u32("partition")?,
                                error: error_code(r, "error code")?,
                                leader_hint: r.i32("leader hint")?,
                                leader_epoch: r.u64("leader epoch")?,
                                high_watermark: r.u64("high watermark")?,
                                log_start_offset: r.u64("log start offset")?,
                                records: r.chunks("records")?,
                            })
                        })?,
                    })
                })?,
            }),
            ApiKey::ListOffsets => Response::ListOffsets(ListOffsetsResponse {
                topics: r.array("topics", MIN_TOPIC, |r| {
                    Ok(ListOffsetsTopicResponse {
                        name: r.string("topic name")?,
                        partitions: r.array("partitions", 26, |r| {
                            Ok(ListOffsetsPartitionResponse {
                                partition: r.u32("partition")?,
                                error: error_code(r, "error code")?,
                                leader_hint: r.i32("leader hint")?,
                                leader_epoch: r.u64("leader epoch")?,
                                offset: r.i64("offset")?,
                            })
                        })?,
                    })
                })?,
            }),
            ApiKey::RegisterBroker => Response::RegisterBroker(RegisterBrokerResponse {
                error: error_code(r, "error code")?,
                controller_id: r.i32("controller id")?,
            }),
            ApiKey::ClusterStatus => Response::ClusterStatus(ClusterStatusResponse {
                broker_id: r.u32("broker id")?,
                controller_id: r.i32("controller id")?,
                brokers: r.array("brokers", 4 + MIN_STRING + 2, read_broker)?,
                replicas: r.array("replicas", MIN_STRING + 68, |r| {
                    Ok(ReplicaStatus {
                        topic: r.string("topic name")?,
                        partition: r.u32("partition")?,
                        group: r.u64("group")?,
                        leader: r.i32("leader")?,
                        term: r.u64("term")?,
                        commit: r.u64("commit")?,
                        last_index: r.u64("last index")?,
                        high_watermark: r.u64("high watermark")?,
                        replicas: r.array("replicas", 4, |r| r.u32("replica"))?,
                        matched: r.array("matched", 12, |r| {
                            Ok((r.u32("broker")?, r.u64("match index")?))
                        })?,
                        log_end_offset: r.u64("log end offset")?,
                        matched_offsets: r.array("matched offsets", 12, |r| {
                            Ok((r.u32("broker")?, r.u64("matched offset")?))
                        })?,
                    })
                })?,
            }),
            ApiKey::FindCoordinator => {
                Response::FindCoordinator(FindCoordinatorResponse::decode(r)?)
            }
            ApiKey::OffsetCommit => Response::OffsetCommit(OffsetCommitResponse::decode(r)?),
            ApiKey::OffsetFetch => Response::OffsetFetch(OffsetFetchResponse::decode(r)?),
            ApiKey::ConsumerGroupHeartbeat => {
                Response::ConsumerGroupHeartbeat(ConsumerGroupHeartbeatResponse::decode(r)?)
            }
            ApiKey::ListGroups => Response::ListGroups(ListGroupsResponse::decode(r)?),
            ApiKey::DescribeGroups => Response::DescribeGroups(DescribeGroupsResponse::decode(r)?),
            ApiKey::DeleteGroups => Response::DeleteGroups(DeleteGroupsResponse::decode(r)?),
            ApiKey::AlterTopicConfigs => Response::AlterTopicConfigs(read_topic_results(r)?),
            ApiKey::CreatePartitions => Response::CreatePartitions(read_topic_results(r)?),
            ApiKey::ReassignPartitions => Response::ReassignPartitions(read_topic_results(r)?),
            ApiKey::ChangeBrokers => {
                Response::ChangeBrokers(super::ChangeBrokersResponse::decode(r)?)
            }
            ApiKey::JoinCluster => Response::JoinCluster(super::JoinClusterResponse::decode(r)?),
            ApiKey::InitProducerId => Response::InitProducerId(InitProducerIdResponse {
                error: error_code(r, "error code")?,
                producer_id: r.i64("producer id")?,
                producer_epoch: r.i16("producer epoch")?,
            }),
            ApiKey::DescribeTopicConfigs => {
                Response::DescribeTopicConfigs(DescribeTopicConfigsResponse::decode(r)?)
            }
        };
        r.finish()?;
        Ok(resp)
    }
}
