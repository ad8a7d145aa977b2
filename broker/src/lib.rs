//! rill-broker: the server.
//!
//! A request travels: [`server`] (frames off the socket, size checked) →
//! [`handlers`] (one function per API) → [`state::Broker`] (topics) →
//! [`partition::Partition`] (validation, the log, the high watermark) →
//! [`flusher`] (group commit for `fsync` topics). Topic names, configs and
//! their metadata files are in [`topics`]; settings in [`config`].
//!
//! Still to come in this crate: replication through Raft, the group
//! coordinator and metrics.

pub mod config;
pub mod flusher;
pub mod handlers;
pub mod partition;
pub mod server;
pub mod state;
pub mod topics;
