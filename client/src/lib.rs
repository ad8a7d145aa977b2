//! rill-client: the wire protocol and the async client library.
//!
//! Built so far: [`protocol`], the I/O-free wire format (frames, headers,
//! request and response bodies, stable error codes). To come in this
//! crate: the async `Admin`, `Producer` and `Consumer`, Kafka's murmur2
//! partitioner, and the `rill` command-line tool. The record batch format
//! the protocol carries is defined once, in [`rill_storage::batch`], because
//! the bytes on the wire are the bytes on disk.

pub mod protocol;
