//! What a client asks: the [`Request`] bodies of every API, and their
//! encoding. Field order on the wire is the field order of each struct.

use bytes::Bytes;

use super::{
    AlterTopicConfigsRequest, BrokerMetadata, ConsumerGroupHeartbeatRequest, DeleteGroupsRequest,
    DescribeGroupsRequest, DescribeTopicConfigsRequest, FindCoordinatorRequest, MIN_STRING,
    MIN_TOPIC, OffsetCommitRequest, OffsetFetchRequest, read_broker, write_broker,
};
use crate::protocol::error::DecodeError;
use crate::protocol::header::ApiKey;
use crate::protocol::wire::{Reader, Writer};

/// A request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// See [`ApiKey::ApiVersions`].
    ApiVersions,
    /// See [`ApiKey::Metadata`].
    Metadata(MetadataRequest),
    /// See [`ApiKey::CreateTopics`].
    CreateTopics(CreateTopicsRequest),
    /// See [`ApiKey::DeleteTopics`].
    DeleteTopics(DeleteTopicsRequest),
    /// See [`ApiKey::Produce`].
    Produce(ProduceRequest),
    /// See [`ApiKey::Fetch`].
    Fetch(FetchRequest),
    /// See [`ApiKey::ListOffsets`].
    ListOffsets(ListOffsetsRequest),
    /// See [`ApiKey::RegisterBroker`].
    RegisterBroker(BrokerMetadata),
    /// See [`ApiKey::ClusterStatus`].
    ClusterStatus,
    /// See [`ApiKey::FindCoordinator`].
    FindCoordinator(FindCoordinatorRequest),
    /// See [`ApiKey::OffsetCommit`].
    OffsetCommit(OffsetCommitRequest),
    /// See [`ApiKey::OffsetFetch`].
    OffsetFetch(OffsetFetchRequest),
    /// See [`ApiKey::ConsumerGroupHeartbeat`].
    ConsumerGroupHeartbeat(ConsumerGroupHeartbeatRequest),
    /// See [`ApiKey::ListGroups`].
    ListGroups,
    /// See [`ApiKey::DescribeGroups`].
    DescribeGroups(DescribeGroupsRequest),
    /// See [`ApiKey::DeleteGroups`].
    DeleteGroups(DeleteGroupsRequest),
    /// See [`ApiKey::AlterTopicConfigs`].
    AlterTopicConfigs(AlterTopicConfigsRequest),
    /// See [`ApiKey::DescribeTopicConfigs`].
    DescribeTopicConfigs(DescribeTopicConfigsRequest),
    /// See [`ApiKey::CreatePartitions`].
    CreatePartitions(CreatePartitionsRequest),
    /// See [`ApiKey::InitProducerId`].
    InitProducerId(InitProducerIdRequest),
    /// See [`ApiKey::ReassignPartitions`].
    ReassignPartitions(ReassignPartitionsRequest),
    /// See [`ApiKey::ChangeBrokers`].
    ChangeBrokers(super::ChangeBrokersRequest),
    /// See [`ApiKey::JoinCluster`].
    JoinCluster(super::JoinClusterRequest),
}

/// Which topics to describe; `None` for all.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MetadataRequest {
    /// Topic names, or `None` for every topic.
    pub topics: Option<Vec<String>>,
}

/// Topics to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateTopicsRequest {
    /// The topics.
    pub topics: Vec<NewTopic>,
    /// How long to wait for creation, ms.
    pub timeout_ms: u32,
}

/// A topic to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTopic {
    /// Its name: `[A-Za-z0-9._-]{1,249}`, not `.` or `..`.
    pub name: String,
    /// Number of partitions.
    pub partitions: u32,
    /// Replicas per partition.
    pub replication_factor: u16,
    /// Topic configuration overrides.
    pub configs: Vec<(String, String)>,
}

/// Topics to delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteTopicsRequest {
    /// Their names.
    pub names: Vec<String>,
    /// How long to wait, ms.
    pub timeout_ms: u32,
}

/// Partitions to add to topics: `topics [name string, partitions u32]`,
/// `timeout_ms u32`; answered like `CreateTopics`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatePartitionsRequest {
    /// Per topic, how many partitions it has from then on.
    pub topics: Vec<(String, u32)>,
    /// How long to wait, ms.
    pub timeout_ms: u32,
}

/// Most brokers one move names.
pub const MOVE_REPLICAS_MAX: usize = 16;

/// Partitions to move: `moves [topic string, partition u32, replicas [u32]]`,
/// `timeout_ms u32`; answered like `CreateTopics`, one result per move, in
/// order, named for its topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReassignPartitionsRequest {
    /// The moves.
    pub moves: Vec<PartitionMove>,
    /// How long to wait, ms.
    pub timeout_ms: u32,
}

/// One partition to move.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionMove {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// The brokers it moves to, the preferred leader first (at most
    /// [`MOVE_REPLICAS_MAX`]).
    pub replicas: Vec<u32>,
}

/// A producer id for an idempotent producer: `timeout_ms u32`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitProducerIdRequest {
    /// How long to wait, ms.
    pub timeout_ms: u32,
}

/// Record batches to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceRequest {
    /// 0 (no response), 1 (leader appended) or -1 (all: committed, durable).
    pub acks: i8,
    /// How long to wait for `acks`, ms.
    pub timeout_ms: u32,
    /// Per topic.
    pub topics: Vec<ProduceTopic>,
}

/// Batches for one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceTopic {
    /// The topic.
    pub name: String,
    /// Per partition.
    pub partitions: Vec<ProducePartition>,
}

/// Batches for one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducePartition {
    /// The partition.
    pub partition: u32,
    /// One or more whole record batches, back to back, in chunks that are
    /// written without copying (a batch never spans two chunks). Decoded as
    /// one chunk, or none when empty.
    pub records: Vec<Bytes>,
}

/// A read of record batches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchRequest {
    /// Longest wait for `min_bytes` to arrive, ms.
    pub max_wait_ms: u32,
    /// Answer as soon as this much is available.
    pub min_bytes: u32,
    /// Most bytes in the whole response (at least one batch is returned).
    pub max_bytes: u32,
    /// Per topic.
    pub topics: Vec<FetchTopic>,
}

/// Partitions of one topic to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchTopic {
    /// The topic.
    pub name: String,
    /// Per partition.
    pub partitions: Vec<FetchPartition>,
}

/// Where to read one partition from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchPartition {
    /// The partition.
    pub partition: u32,
    /// First offset wanted.
    pub fetch_offset: u64,
    /// Most bytes for this partition (at least one batch is returned).
    pub partition_max_bytes: u32,
}

/// Offsets to look up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListOffsetsRequest {
    /// Per topic.
    pub topics: Vec<ListOffsetsTopic>,
}

/// Partitions of one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListOffsetsTopic {
    /// The topic.
    pub name: String,
    /// Per partition.
    pub partitions: Vec<ListOffsetsPartition>,
}

/// What to look up in one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListOffsetsPartition {
    /// The partition.
    pub partition: u32,
    /// A timestamp (ms): the first offset at or after it; or
    /// [`EARLIEST_TIMESTAMP`](super::EARLIEST_TIMESTAMP) / [`LATEST_TIMESTAMP`](super::LATEST_TIMESTAMP).
    pub timestamp_ms: i64,
}

impl Request {
    /// The API of this request.
    pub fn api_key(&self) -> ApiKey {
        match self {
            Request::ApiVersions => ApiKey::ApiVersions,
            Request::Metadata(_) => ApiKey::Metadata,
            Request::CreateTopics(_) => ApiKey::CreateTopics,
            Request::DeleteTopics(_) => ApiKey::DeleteTopics,
            Request::Produce(_) => ApiKey::Produce,
            Request::Fetch(_) => ApiKey::Fetch,
            Request::ListOffsets(_) => ApiKey::ListOffsets,
            Request::RegisterBroker(_) => ApiKey::RegisterBroker,
            Request::ClusterStatus => ApiKey::ClusterStatus,
            Request::FindCoordinator(_) => ApiKey::FindCoordinator,
            Request::OffsetCommit(_) => ApiKey::OffsetCommit,
            Request::OffsetFetch(_) => ApiKey::OffsetFetch,
            Request::ConsumerGroupHeartbeat(_) => ApiKey::ConsumerGroupHeartbeat,
            Request::ListGroups => ApiKey::ListGroups,
            Request::DescribeGroups(_) => ApiKey::DescribeGroups,
            Request::DeleteGroups(_) => ApiKey::DeleteGroups,
            Request::AlterTopicConfigs(_) => ApiKey::AlterTopicConfigs,
            Request::DescribeTopicConfigs(_) => ApiKey::DescribeTopicConfigs,
            Request::CreatePartitions(_) => ApiKey::CreatePartitions,
            Request::InitProducerId(_) => ApiKey::InitProducerId,
            Request::ReassignPartitions(_) => ApiKey::ReassignPartitions,
            Request::ChangeBrokers(_) => ApiKey::ChangeBrokers,
            Request::JoinCluster(_) => ApiKey::JoinCluster,
        }
    }

    /// Encodes the body.
    pub fn encode(&self, w: &mut Writer) {
        match self {
            Request::ApiVersions => {}
            Request::Metadata(m) => {
                w.option(m.topics.as_ref(), |w, t| w.array(t, |w, n| w.string(n)))
            }
            Request::CreateTopics(c) => {
                w.array(&c.topics, |w, t| {
                    w.string(&t.name);
                    w.u32(t.partitions);
                    w.u16(t.replication_factor);
                    w.array(&t.configs, |w, (k, v)| {
                        w.string(k);
                        w.string(v);
                    });
                });
                w.u32(c.timeout_ms);
            }
            Request::DeleteTopics(d) => {
                w.array(&d.names, |w, n| w.string(n));
                w.u32(d.timeout_ms);
            }
            Request::Produce(p) => {
                w.i8(p.acks);
                w.u32(p.timeout_ms);
                w.array(&p.topics, |w, t| {
                    w.string(&t.name);
                    w.array(&t.partitions, |w, p| {
                        w.u32(p.partition);
                        w.shared_bytes(&p.records);
                    });
                });
            }
            Request::Fetch(f) => {
                w.u32(f.max_wait_ms);
                w.u32(f.min_bytes);
                w.u32(f.max_bytes);
                w.array(&f.topics, |w, t| {
                    w.string(&t.name);
                    w.array(&t.partitions, |w, p| {
                        w.u32(p.partition);
                        w.u64(p.fetch_offset);
                        w.u32(p.partition_max_bytes);
                    });
                });
            }
            Request::ListOffsets(l) => w.array(&l.topics, |w, t| {
                w.string(&t.name);
                w.array(&t.partitions, |w, p| {
                    w.u32(p.partition);
                    w.i64(p.timestamp_ms);
                });
            }),
            Request::RegisterBroker(b) => write_broker(w, b),
            Request::ClusterStatus => {}
            Request::FindCoordinator(f) => f.encode(w),
            Request::OffsetCommit(c) => c.encode(w),
            Request::OffsetFetch(f) => f.encode(w),
            Request::ConsumerGroupHeartbeat(h) => h.encode(w),
            Request::ListGroups => {}
            Request::DescribeGroups(d) => d.encode(w),
            Request::DeleteGroups(d) => d.encode(w),
            Request::AlterTopicConfigs(a) => a.encode(w),
            Request::DescribeTopicConfigs(d) => d.encode(w),
            Request::CreatePartitions(c) => {
                w.array(&c.topics, |w, (name, partitions)| {
                    w.string(name);
                    w.u32(*partitions);
                });
                w.u32(c.timeout_ms);
            }
            Request::InitProducerId(i) => w.u32(i.timeout_ms),
            Request::ReassignPartitions(m) => {
                w.array(&m.moves, super::brokers::write_move);
                w.u32(m.timeout_ms);
            }
            Request::ChangeBrokers(c) => c.encode(w),
            Request::JoinCluster(j) => j.encode(w),
        }
    }

    /// Decodes the body of a request to `api`; every byte must be used.
    pub fn decode(api: ApiKey, r: &mut Reader) -> Result<Request, DecodeError> {
        let req = match api {
            ApiKey::ApiVersions => Request::ApiVersions,
            ApiKey::Metadata => Request::Metadata(MetadataRequest {
                topics: r.option("topics", |r| {
                    r.array("topics", MIN_STRING, |r| r.string("topic name"))
                })?,
            }),
            ApiKey::CreateTopics => Request::CreateTopics(CreateTopicsRequest {
                topics: r.array("topics", MIN_STRING + 10, |r| {
                    Ok(NewTopic {
                        name: r.string("topic name")?,
                        partitions: r.u32("partitions")?,
                        replication_factor: r.u16("replication factor")?,
                        configs: r.array("configs", 2 * MIN_STRING, |r| {
                            Ok((r.string("config key")?, r.string("config value")?))
                        })?,
                    })
                })?,
                timeout_ms: r.u32("timeout")?,
            }),
            ApiKey::DeleteTopics => Request::DeleteTopics(DeleteTopicsRequest {
                names: r.array("topics", MIN_STRING, |r| r.string("topic name"))?,
                timeout_ms: r.u32("timeout")?,
            }),
            ApiKey::Produce => Request::Produce(ProduceRequest {
                acks: r.i8("acks")?,
                timeout_ms: r.u32("timeout")?,
                topics: r.array("topics", MIN_TOPIC, |r| {
                    Ok(ProduceTopic {
                        name: r.string("topic name")?,
                        partitions: r.array("partitions", 8, |r| {
                            Ok(ProducePartition {
                                partition: r.u32("partition")?,
                                records: r.chunks("records")?,
                            })
                        })?,
                    })
                })?,
            }),
            ApiKey::Fetch => Request::Fetch(FetchRequest {
                max_wait_ms: r.u32("max wait")?,
                min_bytes: r.u32("min bytes")?,
                max_bytes: r.u32("max bytes")?,
                topics: r.array("topics", MIN_TOPIC, |r| {
                    Ok(FetchTopic {
                        name: r.string("topic name")?,
                        partitions: r.array("partitions", 16, |r| {
                            Ok(FetchPartition {
                                partition: r.u32("partition")?,
                                fetch_offset: r.u64("fetch offset")?,
                                partition_max_bytes: r.u32("partition max bytes")?,
                            })
                        })?,
                    })
                })?,
            }),
            ApiKey::ListOffsets => Request::ListOffsets(ListOffsetsRequest {
                topics: r.array("topics", MIN_TOPIC, |r| {
                    Ok(ListOffsetsTopic {
                        name: r.string("topic name")?,
                        partitions: r.array("partitions", 12, |r| {
                            Ok(ListOffsetsPartition {
                                partition: r.u32("partition")?,
                                timestamp_ms: r.i64("timestamp")?,
                            })
                        })?,
                    })
                })?,
            }),
            ApiKey::RegisterBroker => Request::RegisterBroker(read_broker(r)?),
            ApiKey::ClusterStatus => Request::ClusterStatus,
            ApiKey::FindCoordinator => Request::FindCoordinator(FindCoordinatorRequest::decode(r)?),
            ApiKey::OffsetCommit => Request::OffsetCommit(OffsetCommitRequest::decode(r)?),
            ApiKey::OffsetFetch => Request::OffsetFetch(OffsetFetchRequest::decode(r)?),
            ApiKey::ConsumerGroupHeartbeat => {
                Request::ConsumerGroupHeartbeat(ConsumerGroupHeartbeatRequest::decode(r)?)
            }
            ApiKey::ListGroups => Request::ListGroups,
            ApiKey::DescribeGroups => Request::DescribeGroups(DescribeGroupsRequest::decode(r)?),
            ApiKey::DeleteGroups => Request::DeleteGroups(DeleteGroupsRequest::decode(r)?),
            ApiKey::AlterTopicConfigs => {
                Request::AlterTopicConfigs(AlterTopicConfigsRequest::decode(r)?)
            }
            ApiKey::DescribeTopicConfigs => {
                Request::DescribeTopicConfigs(DescribeTopicConfigsRequest::decode(r)?)
            }
            ApiKey::CreatePartitions => Request::CreatePartitions(CreatePartitionsRequest {
                topics: r.array("topics", MIN_STRING + 4, |r| {
                    Ok((r.string("topic name")?, r.u32("partitions")?))
                })?,
                timeout_ms: r.u32("timeout")?,
            }),
            ApiKey::InitProducerId => Request::InitProducerId(InitProducerIdRequest {
                timeout_ms: r.u32("timeout")?,
            }),
            ApiKey::ReassignPartitions => Request::ReassignPartitions(ReassignPartitionsRequest {
                moves: r.array("moves", MIN_STRING + 8, super::brokers::read_move)?,
                timeout_ms: r.u32("timeout")?,
            }),
            ApiKey::ChangeBrokers => {
                Request::ChangeBrokers(super::ChangeBrokersRequest::decode(r)?)
            }
            ApiKey::JoinCluster => Request::JoinCluster(super::JoinClusterRequest::decode(r)?),
        };
        r.finish()?;
        Ok(req)
    }
}
