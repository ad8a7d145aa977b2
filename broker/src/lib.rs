//! rill-broker: the server.
//!
//! This crate will own: the client and peer listeners, request routing and
//! handlers, topic metadata, the group coordinator, metrics, and the
//! `rill-broker` binary. Until then the storage engine it will serve from is
//! `rill_storage::Log`.
