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
//! |     34 |    2 | `attributes`        | `u16`: bits 0-2 compression codec (0 = none, the only one defined), bit 4 transactional, bit 5 control; other bits 0 |
//! |     36 |    4 | `last_offset_delta` | `u32`: offset of the last record minus `base_offset`; `record_count - 1` for a batch entering a log, 0 for a control batch |
//! |     40 |    4 | `record_count`      | `u32`: number of records; 0 exactly when the batch is a control batch |
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
//! A control batch (attribute bit 5) has zero records and takes no offset: its
//! body is an opaque payload defined by the replication layer (empty for a
//! leader no-op). Zero records is valid for control batches only.
//!
//! A batch entering a log (a produce, a replicated entry) takes exactly one
//! offset per record: `last_offset_delta == record_count - 1` and the
//! records' offset deltas are 0 to `record_count - 1` in order
//! ([`BatchError::SparseOffsets`], [`BatchError::OffsetDeltaOutOfSequence`]).
//! Otherwise a batch of a few dozen bytes could claim four billion offsets
//! and, as an offset index entry holds a 32-bit relative offset, open a new
//! segment each time. Readers ([`BatchHeader::check`], recovery, fetches)
//! accept gaps up to `last_offset_delta`, as Kafka's compacted batches have
//! them, so bytes already stored stay readable.
//!
//! A batch is at most [`MAX_BATCH_BYTES_DEFAULT`] (1 MiB) unless the log is
//! configured otherwise; larger ones are refused with [`BatchError::TooLarge`]
//! (the wire's `RecordTooLarge`).
//!
//! # Invariants
//!
//! [`validate`] is the single gate: a batch it accepts has a consistent
//! length, a matching CRC, a known version and codec, a possible record count
//! and records that parse exactly to the end of the body. The log calls it
//! before a byte is copied, and readers re-check the CRC ([`RecordBatch::verify_crc`]).
//! Decoding never panics and never allocates more than the input can justify.

use bytes::Bytes;

use crate::error::BatchError;
use crate::types::{Offset, RaftIndex, Term};
use crate::varint;

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

    /// Whether this is a control batch (zero records, no offset taken).
    #[inline]
    pub fn is_control(&self) -> bool {
        self.attributes & ATTR_CONTROL != 0
    }

    /// Number of offsets the batch takes: 0 for a control batch, otherwise
    /// `last_offset_delta + 1`.
    #[inline]
    pub fn offset_span(&self) -> u64 {
        if self.record_count == 0 {
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
        let codec = (self.attributes & ATTR_COMPRESSION_MASK) as u8;
        if codec != 0 {
            return Err(BatchError::UnsupportedCompression(codec));
        }
        let impossible = if self.is_control() {
            self.record_count != 0 || self.last_offset_delta != 0
        } else {
            // Offsets inside a batch are distinct, so there are at least as
            // many offsets as records. A record needs at least 7 bytes, which
            // bounds the count by the body size.
            let body = self.length as usize + LENGTH_FIELD_BYTES - HEADER_BYTES;
            self.record_count == 0
                || u64::from(self.record_count) > u64::from(self.last_offset_delta) + 1
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

/// Fully validates one whole batch: `buf` must hold exactly one batch.
///
/// Checks, in order and before anything is allocated: that the header is
/// present, the length field against the size of `buf` and `max_batch_bytes`,
/// version, reserved bits, codec, the record-count rules, the CRC, and that
/// the records parse exactly to the end of the body.
pub fn validate(buf: &[u8], max_batch_bytes: usize) -> Result<BatchHeader, BatchError> {
    let header = validate_without_records(buf, max_batch_bytes)?;
    if !header.is_control() {
        validate_records(&header, &buf[HEADER_BYTES..])?;
    }
    Ok(header)
}

/// Checks one whole batch as [`validate`] does, in the same order, except
/// that the records are not walked. The header's offset rule (one offset
/// per record) is checked here too, so a follower refuses a leader's batch
/// claiming more offsets than records.
///
/// For a batch a leader validated in full before it entered the Raft log: a
/// matching CRC proves these are the bytes it walked, so a follower checks
/// the framing and the CRC only, as a Kafka follower does.
pub fn validate_without_records(
    buf: &[u8],
    max_batch_bytes: usize,
) -> Result<BatchHeader, BatchError> {
    let header = BatchHeader::decode(buf)?;
    if header.batch_bytes() != buf.len() as u64 {
        // A size over the maximum is the more useful answer when both hold.
        if header.batch_bytes() > max_batch_bytes as u64 {
            return Err(BatchError::TooLarge {
                batch_bytes: header.batch_bytes(),
                max_batch_bytes: max_batch_bytes as u64,
            });
        }
        return Err(BatchError::LengthMismatch {
            declared_bytes: header.batch_bytes(),
            actual_bytes: buf.len() as u64,
        });
    }
    header.check(max_batch_bytes)?;
    // Not part of `check`: readers must keep accepting stored batches with
    // gaps (see the module docs); only a batch entering a log is held to it.
    if !header.is_control() && header.last_offset_delta != header.record_count - 1 {
        return Err(BatchError::SparseOffsets {
            record_count: header.record_count,
            last_offset_delta: header.last_offset_delta,
        });
    }
    let computed = compute_crc(buf);
    if computed != header.crc {
        return Err(BatchError::CrcMismatch {
            stored: header.crc,
            computed,
        });
    }
    Ok(header)
}

/// A batch that passed [`validate`] ([`ValidBatch::new`]), or whose
/// records were walked by the leader that proposed it
/// ([`ValidBatch::replicated`], [`ValidBatch::revalidated_by_caller`]). Only
/// these make one, so code that takes one (such as
/// [`Log::append_valid`](crate::Log::append_valid)) need not check the
/// bytes again: a caller that validates several batches before appending
/// any of them walks and checksums each byte once.
#[derive(Debug, Clone, Copy)]
pub struct ValidBatch<'a> {
    bytes: &'a [u8],
    header: BatchHeader,
}

impl<'a> ValidBatch<'a> {
    /// Validates `buf` as one whole batch of at most `max_batch_bytes`.
    pub fn new(buf: &'a [u8], max_batch_bytes: usize) -> Result<ValidBatch<'a>, BatchError> {
        let header = validate(buf, max_batch_bytes)?;
        Ok(ValidBatch { bytes: buf, header })
    }

    /// Checks `buf` as one whole batch of at most `max_batch_bytes` that a
    /// leader validated in full: framing and CRC, not the records (see
    /// [`validate_without_records`]).
    pub fn replicated(buf: &'a [u8], max_batch_bytes: usize) -> Result<ValidBatch<'a>, BatchError> {
        let header = validate_without_records(buf, max_batch_bytes)?;
        Ok(ValidBatch { bytes: buf, header })
    }

    /// Takes `buf` as valid because this process validated these exact
    /// bytes already (a Raft leader appending the batch it validated when
    /// it was proposed). Only the header is decoded and its length checked
    /// against `buf`; the CRC and records are not walked again.
    pub fn revalidated_by_caller(buf: &'a [u8]) -> Result<ValidBatch<'a>, BatchError> {
        let header = BatchHeader::decode(buf)?;
        if header.batch_bytes() != buf.len() as u64 {
            return Err(BatchError::LengthMismatch {
                declared_bytes: header.batch_bytes(),
                actual_bytes: buf.len() as u64,
            });
        }
        Ok(ValidBatch { bytes: buf, header })
    }

    /// The batch's bytes.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Its decoded header.
    pub fn header(&self) -> &BatchHeader {
        &self.header
    }
}

/// Walks every record of a data batch's body without allocating.
fn validate_records(header: &BatchHeader, body: &[u8]) -> Result<(), BatchError> {
    let mut pos = 0;
    for i in 0..header.record_count {
        let fields = parse_record_frame(&body[pos..], i)?;
        // With `last_offset_delta == record_count - 1` checked, this also
        // keeps every delta within the batch's offsets.
        if u32::try_from(fields.offset_delta) != Ok(i) {
            return Err(BatchError::OffsetDeltaOutOfSequence {
                record: i,
                offset_delta: fields.offset_delta,
            });
        }
        // Past max_timestamp, a record would slip by the broker's check of
        // record times, which reads the header.
        let timestamp_ms = header
            .first_timestamp_ms
            .saturating_add(fields.timestamp_delta);
        if timestamp_ms > header.max_timestamp_ms {
            return Err(BatchError::TimestampPastMax {
                record: i,
                timestamp_ms,
                max_timestamp_ms: header.max_timestamp_ms,
            });
        }
        pos += fields.total_bytes;
    }
    if pos != body.len() {
        return Err(BatchError::CorruptRecord {
            record: header.record_count,
            reason: "bytes left after the last record",
        });
    }
    Ok(())
}

/// Positions of one record's parts inside its encoding.
struct RecordFrame {
    total_bytes: usize,
    timestamp_delta: i64,
    offset_delta: i32,
    key: Option<(usize, usize)>,
    value: Option<(usize, usize)>,
    headers_at: usize,
    header_count: usize,
}

/// A cursor over one record's bytes that fails with the record's position.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    record: u32,
}

impl Cursor<'_> {
    fn fail(&self, reason: &'static str) -> BatchError {
        BatchError::CorruptRecord {
            record: self.record,
            reason,
        }
    }
    fn varint(&mut self, what: &'static str) -> Result<i32, BatchError> {
        let (v, n) = varint::decode_i32(&self.buf[self.pos..]).ok_or_else(|| self.fail(what))?;
        self.pos += n;
        Ok(v)
    }
    fn varlong(&mut self, what: &'static str) -> Result<i64, BatchError> {
        let (v, n) = varint::decode_i64(&self.buf[self.pos..]).ok_or_else(|| self.fail(what))?;
        self.pos += n;
        Ok(v)
    }
    /// A length-prefixed byte string: `None` for length -1.
    fn bytes(&mut self, what: &'static str) -> Result<Option<(usize, usize)>, BatchError> {
        let len = self.varint(what)?;
        if len == -1 {
            return Ok(None);
        }
        let len = usize::try_from(len).map_err(|_| self.fail(what))?;
        if len > self.buf.len() - self.pos {
            return Err(self.fail(what));
        }
        let at = self.pos;
        self.pos += len;
        Ok(Some((at, len)))
    }
}

/// Parses the frame of the record at the front of `buf` (the remaining body),
/// checking that every field fits exactly inside the record's length.
fn parse_record_frame(buf: &[u8], record: u32) -> Result<RecordFrame, BatchError> {
    let (len, n) = varint::decode_i32(buf).ok_or(BatchError::CorruptRecord {
        record,
        reason: "bad record length",
    })?;
    let len = usize::try_from(len).map_err(|_| BatchError::CorruptRecord {
        record,
        reason: "negative record length",
    })?;
    if len > buf.len() - n {
        return Err(BatchError::CorruptRecord {
            record,
            reason: "record length runs past the batch",
        });
    }
    let mut c = Cursor {
        buf: &buf[..n + len],
        pos: n,
        record,
    };
    if c.pos >= c.buf.len() || c.buf[c.pos] != 0 {
        return Err(c.fail("bad record attributes"));
    }
    c.pos += 1;
    let timestamp_delta = c.varlong("bad timestamp delta")?;
    let offset_delta = c.varint("bad offset delta")?;
    if offset_delta < 0 {
        return Err(c.fail("negative offset delta"));
    }
    let key = c.bytes("bad key")?;
    let value = c.bytes("bad value")?;
    let header_count = c.varint("bad header count")?;
    let header_count =
        usize::try_from(header_count).map_err(|_| c.fail("negative header count"))?;
    let headers_at = c.pos;
    for _ in 0..header_count {
        if c.bytes("bad header key")?.is_none() {
            return Err(c.fail("null header key"));
        }
        c.bytes("bad header value")?;
    }
    if c.pos != c.buf.len() {
        return Err(c.fail("record length disagrees with its fields"));
    }
    Ok(RecordFrame {
        total_bytes: n + len,
        timestamp_delta,
        offset_delta,
        key,
        value,
        headers_at,
        header_count,
    })
}

/// One whole batch, its bytes shared (a slice of a segment mapping, a network
/// buffer or a `Vec`). Built by [`Batches`] or [`RecordBatch::new`], which
/// check that the bytes are one batch long; the CRC and records are checked by
/// [`RecordBatch::verify_crc`] and while iterating [`RecordBatch::records`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordBatch {
    header: BatchHeader,
    bytes: Bytes,
}

impl RecordBatch {
    /// Takes `bytes` as exactly one batch: the header must decode, pass
    /// [`BatchHeader::check`] and announce exactly `bytes.len()` bytes.
    pub fn new(bytes: Bytes, max_batch_bytes: usize) -> Result<RecordBatch, BatchError> {
        let header = BatchHeader::decode(&bytes)?;
        if header.batch_bytes() != bytes.len() as u64 {
            return Err(BatchError::LengthMismatch {
                declared_bytes: header.batch_bytes(),
                actual_bytes: bytes.len() as u64,
            });
        }
        header.check(max_batch_bytes)?;
        Ok(RecordBatch { header, bytes })
    }

    /// As [`RecordBatch::new`], with the header already decoded (read with
    /// `pread` from the batch's first bytes): nothing reads `bytes`, which
    /// may be pages of a mapping that only the kernel should touch.
    pub fn from_parts(header: BatchHeader, bytes: Bytes) -> Result<RecordBatch, BatchError> {
        if header.batch_bytes() != bytes.len() as u64 {
            return Err(BatchError::LengthMismatch {
                declared_bytes: header.batch_bytes(),
                actual_bytes: bytes.len() as u64,
            });
        }
        header.check(usize::MAX)?;
        Ok(RecordBatch { header, bytes })
    }

    /// The fixed header.
    #[inline]
    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    /// The whole batch, header included.
    #[inline]
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The body after the header: records, or a control batch's payload.
    pub fn body(&self) -> Bytes {
        self.bytes.slice(HEADER_BYTES..)
    }

    /// Checks the CRC against the bytes it covers.
    pub fn verify_crc(&self) -> Result<(), BatchError> {
        let computed = compute_crc(&self.bytes);
        if computed == self.header.crc {
            Ok(())
        } else {
            Err(BatchError::CrcMismatch {
                stored: self.header.crc,
                computed,
            })
        }
    }

    /// Iterates the records, each as zero-copy slices of the batch. Yields an
    /// error (and then stops) at the first malformed record.
    pub fn records(&self) -> Records<'_> {
        Records {
            batch: self,
            pos: HEADER_BYTES,
            next: 0,
            failed: false,
        }
    }
}

/// A record read back from a batch; key, value and header values share the
/// batch's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The record's offset.
    pub offset: Offset,
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// The key, if any.
    pub key: Option<Bytes>,
    /// The value; `None` is a tombstone.
    pub value: Option<Bytes>,
    /// Headers in the order the producer gave them.
    pub headers: Vec<Header>,
}

/// A record header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The header key, UTF-8 as written by rill producers (not checked on read).
    pub key: Bytes,
    /// The header value, if any.
    pub value: Option<Bytes>,
}

/// Iterator over the records of a [`RecordBatch`].
pub struct Records<'a> {
    batch: &'a RecordBatch,
    pos: usize,
    next: u32,
    failed: bool,
}

impl Iterator for Records<'_> {
    type Item = Result<Record, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.next >= self.batch.header.record_count {
            return None;
        }
        let bytes = &self.batch.bytes;
        let frame = match parse_record_frame(&bytes[self.pos..], self.next) {
            Ok(f) => f,
            Err(e) => {
                self.failed = true;
                return Some(Err(e));
            }
        };
        let base = self.pos;
        let slice = |(at, len): (usize, usize)| bytes.slice(base + at..base + at + len);
        // Header count is bounded by the record's bytes (each header takes at
        // least two), checked by `parse_record_frame` before we allocate.
        let mut headers = Vec::with_capacity(frame.header_count);
        let mut c = Cursor {
            buf: &bytes[base..base + frame.total_bytes],
            pos: frame.headers_at,
            record: self.next,
        };
        for _ in 0..frame.header_count {
            // Cannot fail: the same bytes parsed in `parse_record_frame`.
            let (Ok(Some(k)), Ok(v)) = (c.bytes("bad header key"), c.bytes("bad header value"))
            else {
                self.failed = true;
                return Some(Err(c.fail("bad header")));
            };
            headers.push(Header {
                key: slice(k),
                value: v.map(slice),
            });
        }
        let header = &self.batch.header;
        let record = Record {
            offset: Offset(header.base_offset.0.wrapping_add(frame.offset_delta as u64)),
            timestamp_ms: header
                .first_timestamp_ms
                .wrapping_add(frame.timestamp_delta),
            key: frame.key.map(slice),
            value: frame.value.map(slice),
            headers,
        };
        self.pos += frame.total_bytes;
        self.next += 1;
        Some(Ok(record))
    }
}

/// Splits a buffer of consecutive whole batches (a fetch response, a segment
/// read) into [`RecordBatch`]es without copying. Stops with an error at the
/// first batch whose header is bad or whose bytes are cut short.
pub struct Batches {
    bytes: Bytes,
    max_batch_bytes: usize,
    failed: bool,
}

impl Batches {
    /// Iterates the batches in `bytes`, refusing any above `max_batch_bytes`.
    pub fn new(bytes: Bytes, max_batch_bytes: usize) -> Batches {
        Batches {
            bytes,
            max_batch_bytes,
            failed: false,
        }
    }
}

impl Iterator for Batches {
    type Item = Result<RecordBatch, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.bytes.is_empty() {
            return None;
        }
        let result = (|| {
            let header = BatchHeader::decode(&self.bytes)?;
            header.check(self.max_batch_bytes)?;
            let len = header.batch_bytes() as usize;
            if len > self.bytes.len() {
                return Err(BatchError::Truncated {
                    needed_bytes: len,
                    available_bytes: self.bytes.len(),
                });
            }
            Ok(RecordBatch {
                header,
                bytes: self.bytes.split_to(len),
            })
        })();
        self.failed = result.is_err();
        Some(result)
    }
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
