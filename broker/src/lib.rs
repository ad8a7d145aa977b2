//! rill-broker: the server.
//!
//! A request travels: [`server`] (frames off the socket, size checked) →
//! [`handlers`] (one function per API) → [`state::Broker`] (topics) →
//! [`partition::Partition`] (validation, reads, the high watermark, waiting
//! for `acks`) → [`raft_loop`] (the Raft thread: proposals, the Ready loop,
//! group commit; the only writer of partition logs). Topic names, configs
//! and their metadata files are in [`topics`]; settings in [`config`].
//!
//! Still to come in this crate: peers (replication across brokers), the
//! controller, the group coordinator and metrics.

pub mod config;
pub mod handlers;
pub mod partition;
pub mod raft_loop;
pub mod server;
pub mod state;
pub mod topics;
