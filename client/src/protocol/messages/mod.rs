//! The request and response bodies of every API (version 0), with their
//! encodings. Field order on the wire is the field order of each struct;
//! the primitive encodings are those of [`crate::protocol::wire`]. Until
//! rill's first release, version 0 still changes (`leader_epoch` was added
//! to the metadata, produce, fetch and list-offsets answers): clients and
//! brokers must come from the same build.
//!
//! Decoding checks every count against the bytes left before allocating,
//! and record payloads are zero-copy slices of the frame.
//!
//! [`Request`] and what a client asks, with its codec, live in `request`;
//! [`Response`] and what a broker answers, with its codec, in `response`;
//! the consumer group APIs, requests and responses together with their byte
//! layouts, in `offsets` (finding a coordinator, committing and fetching
//! offsets) and `groups` (membership, listing, describing and deleting
//! groups); what
//! they all share (a broker's address, a topic's partitions, the smallest
//! encodings) here.

mod brokers;
mod configs;
mod groups;
mod offsets;
mod request;
mod response;

pub use brokers::{
    BrokerAction, ChangeBrokersRequest, ChangeBrokersResponse, JOIN_PEERS_MAX, JoinClusterRequest,
    JoinClusterResponse,
};
pub use configs::{
    AlterTopicConfigsRequest, ConfigEntry, ConfigSource, DescribeTopicConfigsRequest,
    DescribeTopicConfigsResponse, TopicConfigChange, TopicConfigs,
};
pub use groups::{
    ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse, DeleteGroupsRequest,
    DeleteGroupsResponse, DeletedGroup, DescribeGroupsRequest, DescribeGroupsResponse,
    DescribedGroup, DescribedMember, JOIN_GROUP_MEMBER_EPOCH, LEAVE_GROUP_MEMBER_EPOCH,
    LEAVE_GROUP_STATIC_MEMBER_EPOCH, ListGroupsResponse, ListedGroup,
};
pub use offsets::{
    FindCoordinatorRequest, FindCoordinatorResponse, NO_COMMITTED_OFFSET, NO_MEMBER_EPOCH,
    OffsetCommitPartition, OffsetCommitPartitionResponse, OffsetCommitRequest,
    OffsetCommitResponse, OffsetCommitTopic, OffsetCommitTopicResponse,
    OffsetFetchPartitionResponse, OffsetFetchRequest, OffsetFetchResponse,
    OffsetFetchTopicResponse,
};

pub use request::{
    CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest, FetchPartition,
    FetchRequest, FetchTopic, InitProducerIdRequest, ListOffsetsPartition, ListOffsetsRequest,
    ListOffsetsTopic, MOVE_REPLICAS_MAX, MetadataRequest, NewTopic, PartitionMove,
    ProducePartition, ProduceRequest, ProduceTopic, ReassignPartitionsRequest, Request,
};
pub use response::{
    ApiVersionRange, ApiVersionsResponse, ClusterStatusResponse, FetchPartitionResponse,
    FetchResponse, FetchTopicResponse, InitProducerIdResponse, ListOffsetsPartitionResponse,
    ListOffsetsResponse, ListOffsetsTopicResponse, MetadataResponse, PartitionMetadata,
    ProducePartitionResponse, ProduceResponse, ProduceTopicResponse, RegisterBrokerResponse,
    ReplicaStatus, Response, TopicMetadata, TopicResult, TopicResults,
};

use crate::protocol::error::{DecodeError, ErrorCode};
use crate::protocol::wire::{Reader, Writer};

/// `ListOffsets` timestamp asking for the log start offset.
pub const EARLIEST_TIMESTAMP: i64 = -2;
/// `ListOffsets` timestamp asking for the log end offset.
pub const LATEST_TIMESTAMP: i64 = -1;
/// "No broker" in a leader or hint field.
pub const NO_BROKER: i32 = -1;
/// The prefix of the broker's internal topics' names (such as
/// `__consumer_offsets`): clients may not create such topics, and listings
/// leave them out unless asked.
pub const INTERNAL_TOPIC_PREFIX: &str = "__";

fn error_code(r: &mut Reader, what: &'static str) -> Result<ErrorCode, DecodeError> {
    Ok(ErrorCode::from_code(r.i16(what)?))
}

/// A broker in the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerMetadata {
    /// Its id.
    pub broker_id: u32,
    /// Host clients connect to.
    pub host: String,
    /// Port clients connect to.
    pub port: u16,
}

// Smallest encodings, for the allocation checks of arrays.
const MIN_STRING: usize = 2;
const MIN_TOPIC: usize = MIN_STRING + 4;

/// Some partitions of one topic: what a group member subscribes to, owns
/// or is assigned, and which committed offsets to fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPartitions {
    /// The topic.
    pub topic: String,
    /// Its partitions.
    pub partitions: Vec<u32>,
}

fn write_topic_partitions(w: &mut Writer, t: &TopicPartitions) {
    w.string(&t.topic);
    w.array(&t.partitions, |w, p| w.u32(*p));
}

fn read_topic_partitions(r: &mut Reader) -> Result<TopicPartitions, DecodeError> {
    Ok(TopicPartitions {
        topic: r.string("topic name")?,
        partitions: r.array("partitions", 4, |r| r.u32("partition"))?,
    })
}

fn write_broker(w: &mut Writer, b: &BrokerMetadata) {
    w.u32(b.broker_id);
    w.string(&b.host);
    w.u16(b.port);
}

fn read_broker(r: &mut Reader) -> Result<BrokerMetadata, DecodeError> {
    Ok(BrokerMetadata {
        broker_id: r.u32("broker id")?,
        host: r.string("host")?,
        port: r.u16("port")?,
    })
}
