//! rill-client: the wire protocol and the async client library.
//!
//! This crate will own: the framing codec and request/response types (with
//! stable error codes), the async `Admin`, `Producer` and `Consumer`, Kafka's
//! murmur2 partitioner, and the `rill` command-line tool. The record batch
//! format it sends is defined once, in [`rill_storage::batch`], because the
//! bytes on the wire are the bytes on disk.
