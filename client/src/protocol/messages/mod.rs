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
//! what both share (a broker's address, the smallest encodings) here.

mod request;
mod response;

pub use request::{
    CreateTopicsRequest, DeleteTopicsRequest, FetchPartition, FetchRequest, FetchTopic,
    ListOffsetsPartition, ListOffsetsRequest, ListOffsetsTopic, MetadataRequest, NewTopic,
    ProducePartition, ProduceRequest, ProduceTopic, Request,
};
pub use response::{
    ApiVersionRange, ApiVersionsResponse, ClusterStatusResponse, FetchPartitionResponse,
    FetchResponse, FetchTopicResponse, ListOffsetsPartitionResponse, ListOffsetsResponse,
    ListOffsetsTopicResponse, MetadataResponse, PartitionMetadata, ProducePartitionResponse,
    ProduceResponse, ProduceTopicResponse, RegisterBrokerResponse, ReplicaStatus, Response,
    TopicMetadata, TopicResult, TopicResults,
};

use crate::protocol::error::{DecodeError, ErrorCode};
use crate::protocol::wire::{Reader, Writer};

/// `ListOffsets` timestamp asking for the log start offset.
pub const EARLIEST_TIMESTAMP: i64 = -2;
/// `ListOffsets` timestamp asking for the log end offset.
pub const LATEST_TIMESTAMP: i64 = -1;
/// "No broker" in a leader or hint field.
pub const NO_BROKER: i32 = -1;

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
