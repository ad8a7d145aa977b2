//! The client library's errors.

use crate::protocol::{DecodeError, ErrorCode};

/// Why a client operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// No connection could be made or it broke.
    #[error("connection to {addr} failed: {message}")]
    Io {
        /// The broker address.
        addr: String,
        /// What the operating system said.
        message: String,
    },
    /// The connection closed with the request unanswered.
    #[error("connection to {addr} closed")]
    Closed {
        /// The broker address.
        addr: String,
    },
    /// The broker's bytes could not be decoded.
    #[error("bad response from {addr}: {error}")]
    Protocol {
        /// The broker address.
        addr: String,
        /// The decoding error.
        error: DecodeError,
    },
    /// The broker answered with an error code.
    #[error("{code}{}", if message.is_empty() { String::new() } else { format!(": {message}") })]
    Broker {
        /// The error code.
        code: ErrorCode,
        /// The broker's explanation, if any.
        message: String,
    },
    /// No answer in time.
    #[error("timed out after {ms} ms")]
    Timeout {
        /// How long was waited, ms.
        ms: u64,
    },
    /// The broker asked does not lead the partition and named a newer
    /// leader, which the client's metadata now points at: retry at once.
    #[error("the partition's leader moved to broker {leader} (epoch {leader_epoch})")]
    LeaderMoved {
        /// The new leader's broker id.
        leader: u32,
        /// The Raft term it leads in.
        leader_epoch: u64,
    },
    /// The topic does not exist.
    #[error("topic {0:?} does not exist")]
    UnknownTopic(String),
    /// An admin request got no answer from the controller for as long as
    /// the caller would wait.
    #[error(
        "no controller answered within {waited_ms} ms: a majority of the controller's brokers must be up and reach each other (last: {last})"
    )]
    ControllerUnanswered {
        /// How long it was waited for, ms.
        waited_ms: u64,
        /// The last error met.
        last: String,
    },
    /// No broker led the partition for as long as the caller would wait.
    #[error(
        "topic {topic:?} partition {partition} has no leader this client could reach (waited {waited_ms} ms): it serves again once a majority of its replicas is up"
    )]
    NoLeader {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// How long it was waited for, ms.
        waited_ms: u64,
    },
    /// The consumer group does not exist: it has neither members nor
    /// committed offsets.
    #[error("group {0:?} does not exist")]
    UnknownGroup(String),
    /// The consumer group has active members, so it can be neither
    /// deleted nor have its offsets set from outside (the broker's
    /// `NonEmptyGroup`).
    #[error(
        "group {0:?} has active members: stop its consumers (or wait for their sessions to time out) first"
    )]
    GroupHasMembers(String),
    /// A consumer group refused a commit because this consumer does not
    /// own the partitions in it now: the coordinator removed the member
    /// (its session timed out, or it was fenced), or handed the partitions
    /// to another member. Nothing was committed; the new owner reads on
    /// from the group's earlier commits.
    #[error(
        "commit refused by group {group:?} ({code}): this consumer no longer owns those partitions in the group (it was removed from the group, or they were handed to another member)"
    )]
    Fenced {
        /// The group id.
        group: String,
        /// `UnknownMemberId` or `FencedMemberEpoch`.
        code: ErrorCode,
    },
    /// The request cannot be made as asked.
    #[error("{0}")]
    Invalid(String),
}

impl ClientError {
    /// A broker error with no message.
    pub fn code(code: ErrorCode) -> ClientError {
        ClientError::Broker {
            code,
            message: String::new(),
        }
    }

    /// Whether trying again later may succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            ClientError::Io { .. }
            | ClientError::Closed { .. }
            | ClientError::Timeout { .. }
            | ClientError::LeaderMoved { .. } => true,
            ClientError::Broker { code, .. } => code.is_retriable(),
            _ => false,
        }
    }
}
