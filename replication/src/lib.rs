//! rill-replication: every partition replica as a raft-rs group whose log *is*
//! the partition's segment log.
//!
//! This crate will own: the `raft::Storage` implementation over
//! [`rill_storage`]'s segments (no second write-ahead log), the persisted
//! truncated and hard state of each replica, the Ready loop with one group
//! commit per iteration, the peer transport (rill's own codec for Raft
//! messages, one connection per broker pair), and the controller group that
//! holds cluster metadata. Nothing is implemented yet: the log it builds on
//! lives in `rill-storage`.
