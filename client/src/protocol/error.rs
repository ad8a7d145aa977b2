//! Error codes a client can see, with stable numbers, and the errors of
//! decoding a frame.
//!
//! The numbers are part of the protocol: never renumber a code, only add.
//! Each code says whether retrying the same request may succeed
//! ([`ErrorCode::is_retriable`]).

/// An error code carried in responses. `None` (0) means success.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i16)]
pub enum ErrorCode {
    /// Success.
    None = 0,
    /// The broker failed in a way it cannot describe better.
    Unknown = 1,
    /// A batch failed its CRC or structural checks.
    CorruptMessage = 2,
    /// The topic or partition does not exist (yet, or here).
    UnknownTopicOrPartition = 3,
    /// The offset asked for lies outside the partition's log.
    OffsetOutOfRange = 4,
    /// A batch is larger than the broker accepts.
    RecordTooLarge = 5,
    /// This broker does not lead the partition; a leader hint may follow.
    NotLeader = 6,
    /// The request did not complete in time.
    RequestTimedOut = 7,
    /// The topic name is not valid.
    InvalidTopic = 8,
    /// A topic with that name already exists.
    TopicAlreadyExists = 9,
    /// The partition count is not valid.
    InvalidPartitions = 10,
    /// The replication factor cannot be met.
    InvalidReplicationFactor = 11,
    /// A topic configuration key or value is not valid.
    InvalidConfig = 12,
    /// The API version is not supported by this broker.
    UnsupportedVersion = 13,
    /// The request is malformed or contradicts itself.
    InvalidRequest = 14,
    /// Too few replicas are in sync to accept the write.
    NotEnoughReplicas = 15,
    /// The leader cannot serve this offset yet (its high watermark lags).
    OffsetNotAvailable = 16,
    /// The broker's storage failed for this partition.
    StorageError = 17,
    /// `acks` is not 0, 1 or -1.
    InvalidRequiredAcks = 18,
    /// The API key is unknown.
    UnsupportedApi = 19,
    /// No controller is known yet (elections, or a broker still starting):
    /// retry.
    NotController = 20,
    /// A batch is well formed but breaks a rule records must keep (such as
    /// one offset per record); sending it again will not help.
    InvalidRecord = 21,
    /// A record's timestamp is further from the broker's clock than the
    /// topic allows (`message.timestamp.after.max.ms`,
    /// `message.timestamp.before.max.ms`).
    InvalidTimestamp = 22,
    /// This broker is not the coordinator of the group (it no longer
    /// leads the group's `__consumer_offsets` partition): find the
    /// coordinator again and retry there.
    NotCoordinator = 23,
    /// The group's coordinator is unknown or unreachable for now (its
    /// `__consumer_offsets` partition has no leader, or the topic does not
    /// exist yet): retry.
    CoordinatorNotAvailable = 24,
    /// The coordinator is still rebuilding the group's state from its
    /// `__consumer_offsets` partition (it just became leader): retry.
    CoordinatorLoadInProgress = 25,
    /// The coordinator does not know this member id (it left, or its
    /// session timed out): join again with member epoch 0.
    UnknownMemberId = 26,
    /// The member epoch is not the member's current one: the member was
    /// fenced (its partitions may be someone else's now), so a commit or
    /// heartbeat with it is refused. Join again with member epoch 0.
    FencedMemberEpoch = 27,
    /// No group has this id.
    GroupIdNotFound = 28,
    /// The group id is empty or otherwise not valid.
    InvalidGroupId = 29,
    /// The group already has as many members as the coordinator allows.
    GroupMaxSizeReached = 30,
    /// A commit's metadata text is longer than the coordinator accepts.
    OffsetMetadataTooLarge = 31,
    /// The group has active members: it cannot be deleted, nor its offsets
    /// committed from outside the group (an empty member id with
    /// `NO_MEMBER_EPOCH`), until they leave.
    NonEmptyGroup = 32,
    /// An idempotent producer's batch does not continue its sequence on
    /// the partition: a batch before it is missing. Retriable only while
    /// an earlier batch of the partition is still being retried.
    OutOfOrderSequence = 33,
    /// An idempotent producer's batch carries an epoch older than one the
    /// partition holds for its producer id.
    ProducerFenced = 34,
}

impl ErrorCode {
    /// Every code, in numeric order.
    pub const ALL: [ErrorCode; 35] = [
        ErrorCode::None,
        ErrorCode::Unknown,
        ErrorCode::CorruptMessage,
        ErrorCode::UnknownTopicOrPartition,
        ErrorCode::OffsetOutOfRange,
        ErrorCode::RecordTooLarge,
        ErrorCode::NotLeader,
        ErrorCode::RequestTimedOut,
        ErrorCode::InvalidTopic,
        ErrorCode::TopicAlreadyExists,
        ErrorCode::InvalidPartitions,
        ErrorCode::InvalidReplicationFactor,
        ErrorCode::InvalidConfig,
        ErrorCode::UnsupportedVersion,
        ErrorCode::InvalidRequest,
        ErrorCode::NotEnoughReplicas,
        ErrorCode::OffsetNotAvailable,
        ErrorCode::StorageError,
        ErrorCode::InvalidRequiredAcks,
        ErrorCode::UnsupportedApi,
        ErrorCode::NotController,
        ErrorCode::InvalidRecord,
        ErrorCode::InvalidTimestamp,
        ErrorCode::NotCoordinator,
        ErrorCode::CoordinatorNotAvailable,
        ErrorCode::CoordinatorLoadInProgress,
        ErrorCode::UnknownMemberId,
        ErrorCode::FencedMemberEpoch,
        ErrorCode::GroupIdNotFound,
        ErrorCode::InvalidGroupId,
        ErrorCode::GroupMaxSizeReached,
        ErrorCode::OffsetMetadataTooLarge,
        ErrorCode::NonEmptyGroup,
        ErrorCode::OutOfOrderSequence,
        ErrorCode::ProducerFenced,
    ];

    /// The stable number on the wire.
    pub fn code(self) -> i16 {
        self as i16
    }

    /// The code for a number; unknown numbers (from a newer broker) map to
    /// [`ErrorCode::Unknown`].
    pub fn from_code(code: i16) -> ErrorCode {
        usize::try_from(code)
            .ok()
            .and_then(|i| ErrorCode::ALL.get(i).copied())
            .unwrap_or(ErrorCode::Unknown)
    }

    /// Whether the same request may succeed if retried later.
    pub fn is_retriable(self) -> bool {
        matches!(
            self,
            ErrorCode::CorruptMessage
                | ErrorCode::UnknownTopicOrPartition
                | ErrorCode::NotLeader
                | ErrorCode::RequestTimedOut
                | ErrorCode::NotEnoughReplicas
                | ErrorCode::OffsetNotAvailable
                | ErrorCode::StorageError
                | ErrorCode::NotController
                | ErrorCode::NotCoordinator
                | ErrorCode::CoordinatorNotAvailable
                | ErrorCode::CoordinatorLoadInProgress
        )
    }

    /// Whether this is success.
    pub fn is_ok(self) -> bool {
        self == ErrorCode::None
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?} ({})", self.code())
    }
}

/// Why a frame could not be decoded. The connection that sent it is closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The frame ended inside a field.
    #[error("frame truncated in {what}")]
    Truncated {
        /// The field being read.
        what: &'static str,
    },
    /// A string is not UTF-8.
    #[error("{what} is not valid UTF-8")]
    InvalidUtf8 {
        /// The field being read.
        what: &'static str,
    },
    /// A field holds a value it never may.
    #[error("invalid {what}")]
    Invalid {
        /// The field being read.
        what: &'static str,
    },
    /// Bytes were left after the message.
    #[error("{bytes} bytes left after the message")]
    TrailingBytes {
        /// How many.
        bytes: usize,
    },
}
