//! The record batch: rill's unit of storage, replication and transfer.
//!
//! A producer builds a batch (see [`crate::builder`]), the broker validates it
//! and appends it to a segment without re-encoding, and a fetch hands the same
//! bytes to consumers. The format is the on-disk format and the wire format.
//!
//! # Byte layout (version 1)
//!
//! All fixed-width integers are **little-endian**. The header is
//! [`HEADER_BYTES`] = 74 bytes:
//!
//! | offset | size | field               | meaning |
//! |-------:|-----:|---------------------|---------|
//! |      0 |    4 | `length`            | `u32`: bytes that follow this field; the whole batch is `4 + length` bytes |
//! |      4 |    8 | `base_offset`       | `u64`: offset of the first record; stamped by the partition leader |
//! |     12 |    8 | `raft_term`         | `u64`: term of the Raft entry holding the batch; stamped at append |
//! |     20 |    8 | `raft_index`        | `u64`: index of that Raft entry; stamped at append |
//! |     28 |    4 | `crc`               | `u32`: CRC-32 (IEEE, as `crc32fast`) of bytes `[32, 4 + length)` |
//! |     32 |    1 | `version`           | `u8`: [`FORMAT_VERSION`] |
//! |     33 |    1 | `reserved`          | `u8`: 0 |
//! |     34 |    2 | `attributes`        | `u16`: bits 0-2 compression codec (0 none, 3 lz4, 4 zstd; see [`compression`]), bit 4 transactional, bit 5 control; other bits 0 |
//! |     36 |    4 | `last_offset_delta` | `u32`: offset of the last record minus `base_offset`; `record_count - 1` for a batch entering a log, 0 for a control batch |
//! |     40 |    4 | `record_count`      | `u32`: number of records; 0 for a control batch, and for a data batch only once compaction removed all its records |
//! |     44 |    8 | `first_timestamp`   | `i64`: milliseconds since the Unix epoch of the first record |
//! |     52 |    8 | `max_timestamp`     | `i64`: the largest record timestamp, milliseconds |
//! |     60 |    8 | `producer_id`       | `i64`: -1 when the producer is not idempotent |
//! |     68 |    2 | `producer_epoch`    | `i16`: -1 when none |
//! |     70 |    4 | `base_sequence`     | `i32`: -1 when none |
//! |     74 |    … | body                | records, or a control batch's payload |
//!
//! The four fields before the CRC are written after the producer built the
//! batch, so the CRC leaves them out (as Kafka's v2 CRC leaves out the base
//! offset): stamping them never recomputes a checksum.
//!
//! A data batch's body is `record_count` records, each (zig-zag varints as in
//! Kafka's v2 records, see [`crate::varint`]):
//!
//! | field             | encoding |
//! |-------------------|----------|
//! | `length`          | varint: bytes of the record after this field |
//! | `attributes`      | `u8`: 0 |
//! | `timestamp_delta` | varlong: record timestamp minus `first_timestamp`; the timestamp is at most `max_timestamp` for a batch entering a log |
//! | `offset_delta`    | varint: record offset minus `base_offset`; the record's position in the batch (0, 1, 2, …) for a batch entering a log |
//! | `key_length`      | varint: -1 for no key |
//! | `key`             | bytes |
//! | `value_length`    | varint: -1 for no value (a tombstone) |
//! | `value`           | bytes |
//! | `header_count`    | varint |
//! | headers           | each: varint key length (≥ 0), key bytes (UTF-8), varint value length (-1 for none), value bytes |
//!
//! A compressed batch (codec 3 or 4) keeps this header uncompressed and
//! replaces the records with their compressed form, prefixed by their
//! decompressed size (layout in [`compression`]); `record_count`,
//! offsets and timestamps in the header describe the records inside. The
//! CRC covers the compressed bytes. A control batch is never compressed.
//!
//! A control batch (attribute bit 5) has zero records and takes no offset: its
//! body is an opaque payload defined by the replication layer (empty for a
//! leader no-op).
//!
//! A produced batch takes exactly one offset per record:
//! `last_offset_delta == record_count - 1` and the records' offset deltas
//! are 0 to `record_count - 1` in order ([`BatchError::SparseOffsets`],
//! [`BatchError::OffsetDeltaOutOfSequence`]). Otherwise a batch of a few
//! dozen bytes could claim four billion offsets and, as an offset index
//! entry holds a 32-bit relative offset, open a new segment each time.
//! Compaction ([`crate::compaction`]) then removes records and keeps the
//! offsets of those it keeps, as Kafka's compacted batches do: a data batch
//! always takes `last_offset_delta + 1` offsets, whatever records are left,
//! and one whose records were all removed keeps its header with
//! `record_count` 0 and an empty body (uncompressed), so its Raft entry,
//! offsets and producer sequence stay. Readers ([`BatchHeader::check`],
//! recovery, fetches) and followers ([`ValidBatch::replicated`], which a
//! leader's compacted entries reach) accept such gaps.
//!
//! A batch is at most [`MAX_BATCH_BYTES_DEFAULT`] (1 MiB) unless the log is
//! configured otherwise; larger ones are refused with [`BatchError::TooLarge`]
//! (the wire's `RecordTooLarge`).
//!
//! # Invariants
//!
//! [`validate()`] is the single gate: a batch it accepts has a consistent
//! length, a matching CRC, a known version and codec, a possible record count
//! and records that parse exactly to the end of the body. The log calls it
//! before a byte is copied, and readers re-check the CRC ([`RecordBatch::verify_crc`]).
//! Decoding never panics and never allocates more than the input can justify.
//!
//! # Where things live
//!
//! This module holds the header's layout and codec ([`BatchHeader`],
//! [`stamp`], [`compute_crc`]); `validate` the one gate ([`validate()`],
//! [`ValidBatch`]); [`compression`] the codecs and the compressed body's
//! layout; `records` reading batches and their records without
//! copying ([`RecordBatch`], [`Records`], [`Batches`]) and the record
//! framing both of those walk.

pub mod compression;
mod records;
mod validate;

pub use compression::Compression;

pub(crate) use records::parse_record_frame;
pub use records::{Batches, Header, Record, RecordBatch, Records};
pub use validate::{ValidBatch, validate, validate_without_records};

use crate::error::BatchError;
use crate::types::{Offset, RaftIndex, Term};

/// Size of the fixed batch header, bytes.
pub const HEADER_BYTES: usize = 74;
/// The format version this build writes and reads.
pub const FORMAT_VERSION: u8 = 1;
/// Default maximum size of one batch, length field included: 1 MiB.
pub const MAX_BATCH_BYTES_DEFAULT: usize = 1 << 20;
/// Size of the `length` field that starts every batch, bytes.
pub const LENGTH_FIELD_BYTES: usize = 4;

pub(crate) const OFF_LENGTH: usize = 0;
pub(crate) const OFF_BASE_OFFSET: usize = 4;
pub(crate) const OFF_RAFT_TERM: usize = 12;
pub(crate) const OFF_RAFT_INDEX: usize = 20;
pub(crate) const OFF_CRC: usize = 28;
/// First byte covered by the CRC.
pub(crate) const CRC_START: usize = 32;
const OFF_VERSION: usize = 32;
const OFF_RESERVED: usize = 33;
const OFF_ATTRIBUTES: usize = 34;
const OFF_LAST_OFFSET_DELTA: usize = 36;
const OFF_RECORD_COUNT: usize = 40;
const OFF_FIRST_TIMESTAMP: usize = 44;
const OFF_MAX_TIMESTAMP: usize = 52;
const OFF_PRODUCER_ID: usize = 60;
const OFF_PRODUCER_EPOCH: usize = 68;
const OFF_BASE_SEQUENCE: usize = 70;

/// Attribute bits 0-2: the compression codec.
pub const ATTR_COMPRESSION_MASK: u16 = 0b111;
/// Attribute bit 4: the batch belongs to a transaction.
pub const ATTR_TRANSACTIONAL: u16 = 1 << 4;
/// Attribute bit 5: a control batch (zero records, takes no offset).
pub const ATTR_CONTROL: u16 = 1 << 5;
const ATTR_KNOWN: u16 = ATTR_COMPRESSION_MASK | ATTR_TRANSACTIONAL | ATTR_CONTROL;

/// The decoded fixed header of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Bytes after the length field.
    pub length: u32,
    /// Offset of the first record.
    pub base_offset: Offset,
    /// Term of the Raft entry holding the batch.
    pub raft_term: Term,
    /// Index of the Raft entry holding the batch.
    pub raft_index: RaftIndex,
    /// CRC-32 of bytes `[32, 4 + length)`.
    pub crc: u32,
    /// Format version.
    pub version: u8,
    /// Reserved byte, 0.
    pub reserved: u8,
    /// Attribute bits (compression, transactional, control).
    pub attributes: u16,
    /// Offset of the last record minus `base_offset`.
    pub last_offset_delta: u32,
    /// Number of records.
    pub record_count: u32,
    /// Timestamp of the first record, ms since the epoch.
    pub first_timestamp_ms: i64,
    /// Largest record timestamp, ms since the epoch.
    pub max_timestamp_ms: i64,
    /// Idempotent producer id, -1 for none.
    pub producer_id: i64,
    /// Producer epoch, -1 for none.
    pub producer_epoch: i16,
    /// Sequence number of the first record, -1 for none.
    pub base_sequence: i32,
}

#[inline]
fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
#[inline]
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4-byte slice"))
}
#[inline]
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8-byte slice"))
}

impl BatchHeader {
    /// Decodes the fixed header from the front of `buf` without checking the
    /// CRC or the body.
    pub fn decode(buf: &[u8]) -> Result<BatchHeader, BatchError> {
        if buf.len() < HEADER_BYTES {
            return Err(BatchError::Truncated {
                needed_bytes: HEADER_BYTES,
                available_bytes: buf.len(),
            });
        }
        Ok(BatchHeader {
            length: u32_at(buf, OFF_LENGTH),
            base_offset: Offset(u64_at(buf, OFF_BASE_OFFSET)),
            raft_term: Term(u64_at(buf, OFF_RAFT_TERM)),
            raft_index: RaftIndex(u64_at(buf, OFF_RAFT_INDEX)),
            crc: u32_at(buf, OFF_CRC),
            version: buf[OFF_VERSION],
            reserved: buf[OFF_RESERVED],
            attributes: u16_at(buf, OFF_ATTRIBUTES),
            last_offset_delta: u32_at(buf, OFF_LAST_OFFSET_DELTA),
            record_count: u32_at(buf, OFF_RECORD_COUNT),
            first_timestamp_ms: u64_at(buf, OFF_FIRST_TIMESTAMP) as i64,
            max_timestamp_ms: u64_at(buf, OFF_MAX_TIMESTAMP) as i64,
            producer_id: u64_at(buf, OFF_PRODUCER_ID) as i64,
            producer_epoch: u16_at(buf, OFF_PRODUCER_EPOCH) as i16,
            base_sequence: u32_at(buf, OFF_BASE_SEQUENCE) as i32,
        })
    }

    /// Writes the header into the first [`HEADER_BYTES`] of `out`.
    ///
    /// # Panics
    /// If `out` is shorter than a header (a caller bug, not input).
    pub fn encode_into(&self, out: &mut [u8]) {
        let out = &mut out[..HEADER_BYTES];
        out[OFF_LENGTH..OFF_LENGTH + 4].copy_from_slice(&self.length.to_le_bytes());
        out[OFF_BASE_OFFSET..OFF_BASE_OFFSET + 8]
            .copy_from_slice(&self.base_offset.0.to_le_bytes());
        out[OFF_RAFT_TERM..OFF_RAFT_TERM + 8].copy_from_slice(&self.raft_term.0.to_le_bytes());
        out[OFF_RAFT_INDEX..OFF_RAFT_INDEX + 8].copy_from_slice(&self.raft_index.0.to_le_bytes());
        out[OFF_CRC..OFF_CRC + 4].copy_from_slice(&self.crc.to_le_bytes());
        out[OFF_VERSION] = self.version;
        out[OFF_RESERVED] = self.reserved;
        out[OFF_ATTRIBUTES..OFF_ATTRIBUTES + 2].copy_from_slice(&self.attributes.to_le_bytes());
        out[OFF_LAST_OFFSET_DELTA..OFF_LAST_OFFSET_DELTA + 4]
            .copy_from_slice(&self.last_offset_delta.to_le_bytes());
        out[OFF_RECORD_COUNT..OFF_RECORD_COUNT + 4]
            .copy_from_slice(&self.record_count.to_le_bytes());
        out[OFF_FIRST_TIMESTAMP..OFF_FIRST_TIMESTAMP + 8]
            .copy_from_slice(&self.first_timestamp_ms.to_le_bytes());
        out[OFF_MAX_TIMESTAMP..OFF_MAX_TIMESTAMP + 8]
            .copy_from_slice(&self.max_timestamp_ms.to_le_bytes());
        out[OFF_PRODUCER_ID..OFF_PRODUCER_ID + 8].copy_from_slice(&self.producer_id.to_le_bytes());
        out[OFF_PRODUCER_EPOCH..OFF_PRODUCER_EPOCH + 2]
            .copy_from_slice(&self.producer_epoch.to_le_bytes());
        out[OFF_BASE_SEQUENCE..OFF_BASE_SEQUENCE + 4]
            .copy_from_slice(&self.base_sequence.to_le_bytes());
    }

    /// Size of the whole batch, length field included, bytes.
    #[inline]
    pub fn batch_bytes(&self) -> u64 {
        LENGTH_FIELD_BYTES as u64 + u64::from(self.length)
    }

    /// The compression codec of attribute bits 0-2, refused when unknown.
    #[inline]
    pub fn compression(&self) -> Result<Compression, BatchError> {
        Compression::from_codec((self.attributes & ATTR_COMPRESSION_MASK) as u8)
    }

    /// Whether this is a control batch (zero records, no offset taken).
    #[inline]
    pub fn is_control(&self) -> bool {
        self.attributes & ATTR_CONTROL != 0
    }

    /// Number of offsets the batch takes: 0 for a control batch, otherwise
    /// `last_offset_delta + 1` (also when compaction removed records).
    #[inline]
    pub fn offset_span(&self) -> u64 {
        if self.is_control() {
            0
        } else {
            u64::from(self.last_offset_delta) + 1
        }
    }

    /// The offset after this batch's last record (equal to `base_offset` for a
    /// control batch).
    #[inline]
    pub fn next_offset(&self) -> Offset {
        Offset(self.base_offset.0.saturating_add(self.offset_span()))
    }

    /// Checks everything about the header that does not need the body: size
    /// bounds, version, reserved bits, codec and the record count rules.
    pub fn check(&self, max_batch_bytes: usize) -> Result<(), BatchError> {
        if (self.length as usize) < HEADER_BYTES - LENGTH_FIELD_BYTES {
            return Err(BatchError::LengthTooSmall {
                length: self.length,
            });
        }
        if self.batch_bytes() > max_batch_bytes as u64 {
            return Err(BatchError::TooLarge {
                batch_bytes: self.batch_bytes(),
                max_batch_bytes: max_batch_bytes as u64,
            });
        }
        if self.version != FORMAT_VERSION {
            return Err(BatchError::UnsupportedVersion(self.version));
        }
        if self.reserved != 0 || self.attributes & !ATTR_KNOWN != 0 {
            return Err(BatchError::ReservedBitsSet {
                attributes: self.attributes,
                reserved: self.reserved,
            });
        }
        let compression = self.compression()?;
        if compression != Compression::None && self.is_control() {
            // A control batch's payload belongs to the replication layer,
            // which reads it as it is.
            return Err(BatchError::UnsupportedCompression(compression.codec()));
        }
        let impossible = if self.is_control() {
            self.record_count != 0 || self.last_offset_delta != 0
        } else {
            // Offsets inside a batch are distinct, so there are at least as
            // many offsets as records. A record needs at least 7 bytes, which
            // bounds the count by the body size. Zero records is a batch
            // compaction emptied (a produced one is held to one offset per
            // record, see `validate`).
            // A compressed body is bounded by what it may decompress to.
            let body = match compression {
                Compression::None => self.length as usize + LENGTH_FIELD_BYTES - HEADER_BYTES,
                _ => max_batch_bytes.saturating_sub(HEADER_BYTES),
            };
            u64::from(self.record_count) > u64::from(self.last_offset_delta) + 1
                || self.record_count as usize > body / MIN_RECORD_BYTES
        };
        if impossible {
            return Err(BatchError::ImpossibleRecordCount {
                record_count: self.record_count,
                last_offset_delta: self.last_offset_delta,
                control: self.is_control(),
            });
        }
        Ok(())
    }
}

/// The smallest possible encoded record: length, attributes, two deltas, null
/// key, null value and zero headers, one byte each.
pub(crate) const MIN_RECORD_BYTES: usize = 7;

/// The total size of the batch starting at the front of `buf`, if at least its
/// length field is present. Says nothing about validity.
#[inline]
pub fn declared_batch_bytes(buf: &[u8]) -> Option<u64> {
    if buf.len() < LENGTH_FIELD_BYTES {
        return None;
    }
    Some(LENGTH_FIELD_BYTES as u64 + u64::from(u32_at(buf, OFF_LENGTH)))
}

/// CRC-32 of the bytes a batch's CRC covers.
#[inline]
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32fast::hash(&batch[CRC_START..])
}

/// Overwrites the fields stamped after the producer built the batch. They lie
/// before the CRC, so the CRC stays valid.
///
/// # Panics
/// If `batch` is shorter than a header (a caller bug).
#[inline]
pub fn stamp(batch: &mut [u8], base_offset: Offset, term: Term, index: RaftIndex) {
    batch[OFF_BASE_OFFSET..OFF_BASE_OFFSET + 8].copy_from_slice(&base_offset.0.to_le_bytes());
    batch[OFF_RAFT_TERM..OFF_RAFT_TERM + 8].copy_from_slice(&term.0.to_le_bytes());
    batch[OFF_RAFT_INDEX..OFF_RAFT_INDEX + 8].copy_from_slice(&index.0.to_le_bytes());
}

/// Rewrites an idempotent producer's epoch and first sequence in a built
/// batch and computes its CRC again (a producer giving batches it never
/// sent a new epoch after an earlier batch failed).
///
/// # Panics
/// If `batch` is shorter than a header (a caller bug).
pub fn restamp_producer(batch: &mut [u8], producer_epoch: i16, base_sequence: i32) {
    batch[OFF_PRODUCER_EPOCH..OFF_PRODUCER_EPOCH + 2]
        .copy_from_slice(&producer_epoch.to_le_bytes());
    batch[OFF_BASE_SEQUENCE..OFF_BASE_SEQUENCE + 4].copy_from_slice(&base_sequence.to_le_bytes());
    let crc = compute_crc(batch);
    batch[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_le_bytes());
}
