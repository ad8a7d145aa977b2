//! The errors of replication, typed so the broker can map each to the
//! protocol's stable codes.

use std::path::PathBuf;

use rill_storage::LogError;

use crate::ids::{BrokerId, GroupId};

/// An error of replication.
#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    /// The segment log failed (boxed: it is large and rare).
    #[error("log: {0}")]
    Storage(Box<LogError>),
    /// A file outside the log failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Neither slot of a replica's state file holds a valid state.
    #[error("replica state {path} is corrupt in both slots")]
    CorruptState {
        /// The state file.
        path: PathBuf,
    },
    /// A membership larger than a state slot holds.
    #[error("membership of {count} brokers exceeds the maximum of {max}")]
    TooManyMembers {
        /// Members asked for.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// This replica is not the group's leader; `leader` is the one it knows.
    #[error("not the leader of group {group} (leader: {leader:?})")]
    NotLeader {
        /// The group.
        group: GroupId,
        /// The leader this replica knows of, if any.
        leader: Option<BrokerId>,
    },
    /// An idempotent producer's batch does not continue its sequence: a
    /// batch before it is missing (see `rill_storage::producers`).
    #[error("group {group}: producer {producer_id} sent sequence {got}, expected {expected}")]
    OutOfOrderSequence {
        /// The group.
        group: GroupId,
        /// The producer.
        producer_id: i64,
        /// The sequence its next batch must start at.
        expected: i32,
        /// The batch's first sequence.
        got: i32,
    },
    /// An idempotent producer's batch carries an epoch older than one the
    /// log holds for it.
    #[error("group {group}: producer {producer_id} epoch {got} is older than {epoch}")]
    ProducerFenced {
        /// The group.
        group: GroupId,
        /// The producer.
        producer_id: i64,
        /// The producer's newest epoch here.
        epoch: i16,
        /// The batch's.
        got: i16,
    },
    /// No such group on this broker.
    #[error("no replica of group {0} here")]
    UnknownGroup(GroupId),
    /// A membership change that cannot be proposed now: one is still
    /// being applied, a leadership transfer is under way, or it does not
    /// apply to the group's membership.
    #[error("group {group}: membership change refused: {reason}")]
    MembershipChangeRefused {
        /// The group.
        group: GroupId,
        /// Why.
        reason: String,
    },
    /// The thread driving replication has stopped (the broker is shutting
    /// down).
    #[error("replication has stopped")]
    Stopped,
    /// A group of that id exists already.
    #[error("group {0} exists already")]
    GroupExists(GroupId),
    /// raft-rs refused (a dropped proposal, a message from a stranger).
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    /// A stored entry that cannot be a Raft entry.
    #[error("stored entry at index {index} is invalid: {reason}")]
    BadEntry {
        /// Its Raft index.
        index: u64,
        /// What is wrong.
        reason: &'static str,
    },
    /// A peer's append carried an entry that cannot be stored (a batch
    /// whose framing or CRC is wrong): the message was refused whole, before
    /// raft-rs saw it, and its leader sends the entries again.
    #[error("refused an append whose entry {index} is invalid: {source}")]
    RefusedEntry {
        /// The entry's Raft index.
        index: u64,
        /// What is wrong with it.
        #[source]
        source: Box<ReplicationError>,
    },
    /// A vote, pre-vote or leadership transfer for a replica that is
    /// catching up after its broker lost its data: it takes none until it
    /// holds what its group had committed.
    #[error("group {group}: catching up; no vote or election until then")]
    CatchingUp {
        /// The group.
        group: GroupId,
    },
    /// A peer's message that breaks Raft's rules, or that this replica
    /// could not take without aborting (raft-rs panics on some of them):
    /// refused before raft-rs saw it, and nothing of it was taken.
    #[error("group {group}: refused a message from broker {from}: {reason}")]
    RefusedMessage {
        /// The group it was for.
        group: GroupId,
        /// The broker it claims to come from.
        from: BrokerId,
        /// What is wrong with it.
        reason: String,
    },
    /// The replica's log could not be read back (a segment cut short or
    /// corrupted under the broker, an I/O error): the group stopped here,
    /// and every other group goes on.
    #[error("group {group}: the log cannot be read back: {reason}")]
    LogUnreadable {
        /// The group.
        group: GroupId,
        /// What failed.
        reason: String,
        /// Whether the files are damaged (see [`ReplicationError::is_damage`]),
        /// not failed by I/O.
        damaged: bool,
    },
}

impl From<LogError> for ReplicationError {
    fn from(e: LogError) -> Self {
        ReplicationError::Storage(Box::new(e))
    }
}

impl ReplicationError {
    /// Wraps an I/O error with what was being done and where.
    pub fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| ReplicationError::Io { op, path, source }
    }

    /// Whether the error says a replica's files are damaged (cut short,
    /// corrupted, a hole in the log): reopening would find the same
    /// damage, where an I/O error (ENOSPC, EIO) may pass.
    pub fn is_damage(&self) -> bool {
        match self {
            ReplicationError::Storage(e) => e.is_damage(),
            ReplicationError::LogUnreadable { damaged, .. } => *damaged,
            ReplicationError::BadEntry { .. } | ReplicationError::CorruptState { .. } => true,
            _ => false,
        }
    }

    /// Whether a client may retry after this error (leadership moves).
    pub fn is_retriable(&self) -> bool {
        matches!(
            self,
            ReplicationError::NotLeader { .. }
                | ReplicationError::Raft(raft::Error::ProposalDropped)
        )
    }
}
