//! rill-replication: every partition replica as a raft-rs group whose log *is*
//! the partition's segment log.
//!
//! - [`ids`]: [`BrokerId`] and [`GroupId`].
//! - [`state`]: the hard state and snapshot point a replica keeps beside its
//!   log, in a two-slot file a torn write cannot destroy.
//! - [`entry`]: how a Raft entry is stored as one batch.
//! - [`storage`]: raft-rs's `Storage` over the segment log.
//! - `reader`: [`ReplicaLogReader`], a replica's log as the threads that
//!   read it (fetches, offset lookups, file checks) see it.
//! - [`node`]: the groups of one broker and the steps of a round over
//!   them, free of I/O but for the logs' mappings.
//! - [`driver`]: the round itself ([`Driver`]), run by the broker's Raft
//!   thread and by the simulator alike, its I/O behind [`RoundIo`].
//! - [`outgoing`]: the messages the node emits for peers and those the
//!   transport could not send, shared by both without either depending
//!   on the other.
//! - `catch_up`: replicas that may hold less than their group believes
//!   (a broker back with an emptied data directory) vote again only once
//!   caught up, and leaders repair them.
//! - `contain`: a replica whose log cannot be read back (raft-rs panics)
//!   stops alone, not the broker.
//! - [`forward`]: proposals a broker asks a group's leader to make for
//!   it (broker registrations), checked by the leader's broker first.
//! - [`handshake`]: how two brokers prove to each other that they hold the
//!   cluster secret before any Raft frame crosses their connection.
//! - `peer_check`: what a peer's Raft message must satisfy before raft-rs
//!   takes it (raft-rs aborts on some that break Raft's rules).
//! - [`transport`]: one TCP connection per broker pair carrying Raft
//!   messages in frames, urgent ones first.
//! - [`wire`]: rill's own encoding of Raft messages between brokers
//!   (protobuf is never parsed from the network).

mod catch_up;
pub mod conf;
mod contain;
pub mod driver;
pub mod entry;
pub mod error;
pub mod forward;
pub mod handshake;
pub mod ids;
pub mod logger;
pub mod node;
pub mod outgoing;
mod peer_check;
mod reader;
pub mod state;
pub mod storage;
pub mod transport;
pub mod wire;

pub use crate::driver::{Driver, RoundIo, RoundTimes};
pub use crate::error::ReplicationError;
pub use crate::ids::{BrokerId, GroupId};
pub use crate::node::{
    CheckedBatch, Event, GroupStatus, Node, NodeConfig, OpenedReplica, Proposed, ReplicaDir,
    ReplicaSpec, Round, SyncJob, SyncResult, SyncRound, SyncedFiles, SyncedRound,
};
pub use crate::outgoing::Outgoing;
pub use crate::reader::{Fetched, ReplicaLogReader};
