//! rill-client: the wire protocol and the async client library.
//!
//! - [`protocol`]: the I/O-free wire format (frames, headers, request and
//!   response bodies, stable error codes).
//! - [`Cluster`]: bootstrap addresses, cached metadata and one connection
//!   per broker ([`connection`]), shared by the clients below.
//! - [`Admin`], [`Producer`], [`Consumer`]: topics and consumer groups,
//!   writing, reading (partitions chosen by hand, or assigned by a
//!   consumer group's coordinator).
//! - `coordinator` (crate-internal): a consumer group's coordinator, found
//!   and followed as it moves; the one way group requests are sent.
//! - [`partitioner`]: Kafka's murmur2, so keyed records land where a Kafka
//!   client would put them.
//!
//! The record batch format the protocol carries is defined once, in
//! [`rill_storage::batch`], because the bytes on the wire are the bytes on
//! disk. The `rill` command-line tool is built on this crate.

pub mod admin;
pub mod cluster;
pub mod connection;
pub mod consumer;
mod coordinator;
pub mod error;
pub mod partitioner;
pub mod producer;
pub mod protocol;
pub mod writer;

pub use admin::Admin;
pub use cluster::{Cluster, TopicInfo};
pub use consumer::{
    CommitFuture, CommitOffset, Consumer, ConsumerConfig, ConsumerRecord, GroupConfig, OffsetReset,
    RebalanceListener, SeekTo,
};
pub use error::ClientError;
pub use producer::identity::{ProducerIdentity, init_producer_id};
pub use producer::{
    Acks, Compression, DeliveryFuture, Producer, ProducerConfig, ProducerRecord, RecordMetadata,
};
