//! Typed errors of the storage crate.
//!
//! [`BatchError`] says why bytes are not a valid record batch; it never
//! carries the bytes themselves, so it is cheap to build from hostile input.
//! [`LogError`] wraps it with the failures of the log itself (I/O, ordering,
//! ranges, configuration).

use std::io;
use std::path::PathBuf;

use crate::types::{Offset, RaftIndex, Term};

/// Why a byte string is not an acceptable record batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// Fewer bytes are present than the header or the length field requires.
    #[error("truncated batch: need {needed_bytes} bytes, have {available_bytes}")]
    Truncated {
        /// Bytes the batch needs.
        needed_bytes: usize,
        /// Bytes present.
        available_bytes: usize,
    },
    /// The length field is smaller than a batch header.
    #[error("batch length field {length} is shorter than a batch header")]
    LengthTooSmall {
        /// The length field as stored.
        length: u32,
    },
    /// The batch is larger than the configured maximum (the wire's `RecordTooLarge`).
    #[error("batch of {batch_bytes} bytes exceeds the maximum of {max_batch_bytes} bytes")]
    TooLarge {
        /// Size of the whole batch, length field included.
        batch_bytes: u64,
        /// The limit in force.
        max_batch_bytes: u64,
    },
    /// The buffer holds more or fewer bytes than the length field announces.
    #[error("batch length field announces {declared_bytes} bytes but {actual_bytes} were given")]
    LengthMismatch {
        /// Whole-batch size from the length field.
        declared_bytes: u64,
        /// Bytes handed over.
        actual_bytes: u64,
    },
    /// The CRC stored in the header does not match the bytes it covers.
    #[error("batch CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch {
        /// CRC from the header.
        stored: u32,
        /// CRC of the bytes.
        computed: u32,
    },
    /// The format version byte is not one this build reads.
    #[error("unsupported batch format version {0}")]
    UnsupportedVersion(u8),
    /// Reserved header bits or bytes are set.
    #[error(
        "reserved batch header bits are set (attributes {attributes:#06x}, reserved {reserved})"
    )]
    ReservedBitsSet {
        /// The attributes field.
        attributes: u16,
        /// The reserved byte.
        reserved: u8,
    },
    /// The compression codec is not one this build handles.
    #[error("unsupported compression codec {0} (rill takes 0 none, 3 lz4, 4 zstd)")]
    UnsupportedCompression(u8),
    /// A compressed batch whose records declare a decompressed size over
    /// the limit (the batch size limit, less the header): refused before
    /// the block is decoded. A block expanding past the size it declared is
    /// [`BatchError::CorruptCompressed`].
    #[error(
        "compressed records expand to {records_bytes} bytes, more than the {max_records_bytes} allowed"
    )]
    DecompressedTooLarge {
        /// Bytes declared or reached.
        records_bytes: u64,
        /// The limit.
        max_records_bytes: u64,
    },
    /// A compressed records section that does not decompress, or not to
    /// exactly the size it declared.
    #[error("corrupt compressed records: {reason}")]
    CorruptCompressed {
        /// What is wrong.
        reason: &'static str,
    },
    /// The codec failed to compress (records too large for its format).
    #[error("could not compress the batch with {codec}")]
    CompressFailed {
        /// The codec's name.
        codec: &'static str,
    },
    /// A record count that cannot be: zero records in a data batch, records in
    /// a control batch, or more records than offsets.
    #[error(
        "impossible record count {record_count} (last offset delta {last_offset_delta}, control {control})"
    )]
    ImpossibleRecordCount {
        /// The record count field.
        record_count: u32,
        /// The last offset delta field.
        last_offset_delta: u32,
        /// Whether the control bit is set.
        control: bool,
    },
    /// A data batch's `last_offset_delta` is not `record_count - 1`: its
    /// offsets would have gaps. Refused because a small batch could
    /// otherwise claim up to four billion offsets.
    #[error(
        "last offset delta {last_offset_delta} of a data batch of {record_count} records must be {record_count} - 1: offsets in a batch have no gaps"
    )]
    SparseOffsets {
        /// The record count field.
        record_count: u32,
        /// The last offset delta field.
        last_offset_delta: u32,
    },
    /// A batch with a producer id but a negative epoch or sequence.
    #[error(
        "producer {producer_id} has epoch {producer_epoch} and base sequence {base_sequence}; both must be at least 0"
    )]
    InvalidProducerFields {
        /// The producer id field.
        producer_id: i64,
        /// The producer epoch field.
        producer_epoch: i16,
        /// The base sequence field.
        base_sequence: i32,
    },
    /// A record's offset delta is not its position in the batch: deltas
    /// run 0, 1, 2, … without gaps.
    #[error("record {record} has offset delta {offset_delta}; it must be {record}")]
    OffsetDeltaOutOfSequence {
        /// Zero-based position of the record in the batch.
        record: u32,
        /// The offset delta it carries.
        offset_delta: i32,
    },
    /// A record's timestamp lies past the header's `max_timestamp`: the
    /// broker checks record times against the clock through the header,
    /// so the header must bound every record.
    #[error(
        "record {record} is stamped {timestamp_ms} ms, past the batch's max_timestamp {max_timestamp_ms} ms"
    )]
    TimestampPastMax {
        /// Zero-based position of the record in the batch.
        record: u32,
        /// Its timestamp, ms since the epoch.
        timestamp_ms: i64,
        /// The header's `max_timestamp`, ms since the epoch.
        max_timestamp_ms: i64,
    },
    /// A record inside the batch is malformed.
    #[error("record {record} is malformed: {reason}")]
    CorruptRecord {
        /// Zero-based position of the record in the batch.
        record: u32,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A single record cannot fit in a batch of the maximum size.
    #[error(
        "record of {record_bytes} bytes cannot fit in a batch of at most {max_batch_bytes} bytes"
    )]
    RecordTooLarge {
        /// Encoded size of the record.
        record_bytes: u64,
        /// The batch limit in force.
        max_batch_bytes: u64,
    },
}

/// A failure of the log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// An operating-system call failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The batch was refused; the log is unchanged.
    #[error(transparent)]
    Batch(#[from] BatchError),
    /// A replica batch does not start at the log's next offset.
    #[error("batch base offset {got} does not follow the log end offset {expected}")]
    OffsetOutOfOrder {
        /// The log's next offset.
        expected: Offset,
        /// The batch's base offset.
        got: Offset,
    },
    /// A replica entry does not carry the log's next Raft index.
    #[error("raft index {got} does not follow the log's next index {expected}")]
    RaftIndexOutOfOrder {
        /// The log's next Raft index.
        expected: RaftIndex,
        /// The index given.
        got: RaftIndex,
    },
    /// An entry's term is lower than the term of the entry before it.
    #[error("term {got} is lower than the last term {last}")]
    TermRegressed {
        /// Term of the log's last entry.
        last: Term,
        /// Term given.
        got: Term,
    },
    /// A read asked for an offset outside `[log_start, log_end]`.
    #[error("offset {requested} is outside the log [{log_start}, {log_end}]")]
    OffsetOutOfRange {
        /// Offset asked for.
        requested: Offset,
        /// First offset still stored.
        log_start: Offset,
        /// The next offset to be written.
        log_end: Offset,
    },
    /// A read or truncation asked for a Raft index outside the stored entries.
    #[error("raft index {requested} is outside the log [{first}, {next})")]
    RaftIndexOutOfRange {
        /// Index asked for.
        requested: RaftIndex,
        /// First index still stored.
        first: RaftIndex,
        /// The next index to be written.
        next: RaftIndex,
    },
    /// The configuration cannot work.
    #[error("invalid log configuration: {0}")]
    InvalidConfig(String),
    /// A segment no longer holds what the log wrote there: the file is
    /// shorter than the batches written to it, or a batch header read back
    /// is not the one written. Something outside the log changed the file
    /// (a truncation, a disk fault): the replica must stop rather than
    /// serve or append over it.
    #[error("damaged segment {path} at byte {position}: {reason}")]
    Damaged {
        /// The segment file.
        path: PathBuf,
        /// Byte position in the file where the damage was found.
        position: u64,
        /// What was found.
        reason: String,
    },
    /// Recovery found a bad batch in a sealed segment that later segments
    /// follow: a hole in the middle of the log, not a torn tail. Opening
    /// refuses the log instead of dropping everything after the hole.
    #[error(
        "hole in the log: {path} has a bad batch at byte {position} (offset {offset}, raft index {raft_index}) and later segments follow"
    )]
    Hole {
        /// The sealed segment with the bad batch.
        path: PathBuf,
        /// Byte position of the first bad batch in that file.
        position: u64,
        /// The offset the bad batch should have started at.
        offset: Offset,
        /// The Raft index it should have carried.
        raft_index: RaftIndex,
    },
    /// Stored state contradicts itself in a way recovery must not guess about.
    #[error("corrupt log at {path}: {reason}")]
    Corrupt {
        /// The file concerned.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl LogError {
    /// Whether the log's files were found damaged ([`LogError::Damaged`],
    /// [`LogError::Hole`], [`LogError::Corrupt`]): reopening will not help
    /// until someone repairs or replaces the replica.
    pub fn is_damage(&self) -> bool {
        matches!(
            self,
            LogError::Damaged { .. } | LogError::Hole { .. } | LogError::Corrupt { .. }
        )
    }

    /// Wraps an I/O error with what was being done and where.
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| LogError::Io { op, path, source }
    }
}
