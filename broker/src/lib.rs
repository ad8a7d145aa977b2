//! rill-broker: the server.
//!
//! A request travels: [`server`] (frames off the socket, size checked) →
//! [`handlers`] (one module per API behind one router) →
//! [`state::Broker`] (topics, the controller) → [`partition::Partition`]
//! (validation, reads, the high watermark, waiting for `acks`) → [`raft`]
//! (the Raft thread: proposals, the Ready loop, group commit; the only
//! writer of logs, and where the controller's log is applied). Cluster
//! metadata and its commands are in [`metadata`]; topic names and configs
//! in [`topics`]; settings in [`config`]; why a request or start-up
//! failed, and the code a client sees for it, in [`error`]; what clients
//! may make the broker hold in [`limits`]; whose data directory this is,
//! and what it remembers of its peers, in [`identity`]; how the heap keeps
//! freed memory for the next frame in [`heap`]; every thread and
//! long-lived task, and the order shutdown stops them in, in [`threads`].
//!
//! Consumer groups (committed offsets and membership) are in
//! [`coordinator`].
//!
//! Still to come in this crate: metrics.

pub mod balance;
pub mod compactor;
pub mod config;
pub mod coordinator;
pub mod error;
pub mod handlers;
pub mod heap;
pub mod http;
pub mod identity;
pub mod janitor;
pub mod join;
pub mod limits;
pub mod logwriter;
pub mod metadata;
pub mod metrics;
pub mod partition;
pub mod raft;
pub mod reassignment;
pub mod server;
pub mod state;
pub mod threads;
pub mod topics;
