//! API keys and the request and response headers.
//!
//! Request header: `api_key u16`, `api_version u16`, `correlation_id u32`,
//! `client_id string`. Response header: `correlation_id u32`,
//! `error_code i16`. A response whose header carries an error (an unknown
//! API or version) has no body; otherwise errors are per topic or
//! partition inside the body.

use crate::protocol::error::{DecodeError, ErrorCode};
use crate::protocol::wire::{Reader, Writer};

/// The APIs, with their stable numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum ApiKey {
    /// Which APIs and versions the broker speaks.
    ApiVersions = 0,
    /// Brokers, topics, partitions and their leaders.
    Metadata = 1,
    /// Create topics.
    CreateTopics = 2,
    /// Delete topics.
    DeleteTopics = 3,
    /// Append record batches.
    Produce = 4,
    /// Read record batches (a long poll).
    Fetch = 5,
    /// Earliest, latest, or by-timestamp offsets.
    ListOffsets = 6,
    /// A broker tells the controller the address clients reach it at.
    RegisterBroker = 7,
    /// One broker's view of replication: the controller, and for each
    /// replica it holds the leader, commit index and followers' progress.
    ClusterStatus = 8,
    /// Which broker coordinates a consumer group.
    FindCoordinator = 9,
    /// Commit a group's consumed offsets.
    OffsetCommit = 10,
    /// Read a group's committed offsets.
    OffsetFetch = 11,
    /// A consumer group member joins, heartbeats or leaves, and learns its
    /// assignment (KIP-848's protocol: the coordinator assigns).
    ConsumerGroupHeartbeat = 12,
    /// The groups a coordinator holds.
    ListGroups = 13,
    /// Groups' state, epochs and members.
    DescribeGroups = 14,
    /// Delete groups that have no members: their committed offsets go.
    DeleteGroups = 15,
    /// Change topics' settings while they serve.
    AlterTopicConfigs = 16,
    /// Topics' settings, each with where it comes from.
    DescribeTopicConfigs = 17,
    /// Add partitions to topics (never fewer).
    CreatePartitions = 18,
    /// A producer id, unique in the cluster, for an idempotent producer.
    InitProducerId = 19,
    /// Move partitions' replicas to other brokers (Kafka's
    /// AlterPartitionReassignments): answered once each move is recorded;
    /// the metadata shows the new replicas once it has ended.
    ReassignPartitions = 20,
    /// Spread replicas over the brokers, take a broker out of hosting
    /// replicas (moving its replicas away) or back in.
    ChangeBrokers = 21,
    /// A broker new to the cluster joins it (sent by `rill-broker --join`).
    JoinCluster = 22,
}

impl ApiKey {
    /// Every API, in numeric order.
    pub const ALL: [ApiKey; 23] = [
        ApiKey::ApiVersions,
        ApiKey::Metadata,
        ApiKey::CreateTopics,
        ApiKey::DeleteTopics,
        ApiKey::Produce,
        ApiKey::Fetch,
        ApiKey::ListOffsets,
        ApiKey::RegisterBroker,
        ApiKey::ClusterStatus,
        ApiKey::FindCoordinator,
        ApiKey::OffsetCommit,
        ApiKey::OffsetFetch,
        ApiKey::ConsumerGroupHeartbeat,
        ApiKey::ListGroups,
        ApiKey::DescribeGroups,
        ApiKey::DeleteGroups,
        ApiKey::AlterTopicConfigs,
        ApiKey::DescribeTopicConfigs,
        ApiKey::CreatePartitions,
        ApiKey::InitProducerId,
        ApiKey::ReassignPartitions,
        ApiKey::ChangeBrokers,
        ApiKey::JoinCluster,
    ];

    /// The API with this number, if any.
    pub fn from_u16(v: u16) -> Option<ApiKey> {
        ApiKey::ALL.get(v as usize).copied()
    }

    /// The versions this build speaks: `(min, max)`.
    pub fn versions(self) -> (u16, u16) {
        (0, 0)
    }
}

/// The header of every request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHeader {
    /// The API, as its raw number (it may be one this build does not know).
    pub api_key: u16,
    /// The API version.
    pub api_version: u16,
    /// Echoed in the response, which may come back out of order.
    pub correlation_id: u32,
    /// Free-form name of the client, for logs.
    pub client_id: String,
}

impl RequestHeader {
    /// Encodes the header.
    pub fn encode(&self, w: &mut Writer) {
        w.u16(self.api_key);
        w.u16(self.api_version);
        w.u32(self.correlation_id);
        w.string(&self.client_id);
    }

    /// Decodes the header.
    pub fn decode(r: &mut Reader) -> Result<RequestHeader, DecodeError> {
        Ok(RequestHeader {
            api_key: r.u16("api key")?,
            api_version: r.u16("api version")?,
            correlation_id: r.u32("correlation id")?,
            client_id: r.string("client id")?,
        })
    }
}

/// The header of every response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseHeader {
    /// The request's correlation id.
    pub correlation_id: u32,
    /// A request-level error; the body is absent unless it is `None`.
    pub error: ErrorCode,
}

impl ResponseHeader {
    /// Encodes the header.
    pub fn encode(&self, w: &mut Writer) {
        w.u32(self.correlation_id);
        w.i16(self.error.code());
    }

    /// Decodes the header.
    pub fn decode(r: &mut Reader) -> Result<ResponseHeader, DecodeError> {
        Ok(ResponseHeader {
            correlation_id: r.u32("correlation id")?,
            error: ErrorCode::from_code(r.i16("error code")?),
        })
    }
}
