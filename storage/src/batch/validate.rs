//! The one validation gate: [`validate`] accepts a batch only if its
//! length, CRC, version, codec, record count, offsets and timestamps are
//! consistent and its records parse exactly to the end of the body, all
//! checked before anything is allocated. A compressed batch's records are
//! decompressed, with the batch size limit as a hard bound on what they
//! expand to, and walked as an uncompressed batch's. [`ValidBatch`] is the
//! proof that a batch passed it (or, replicated, that the leader's walk
//! did).

use super::compression::{self, Compression};
use super::records::parse_record_frame;
use super::{BatchHeader, HEADER_BYTES, compute_crc};
use crate::error::BatchError;

/// Fully validates one whole batch: `buf` must hold exactly one batch.
///
/// Checks, in order and before anything is allocated: that the header is
/// present, the length field against the size of `buf` and `max_batch_bytes`,
/// version, reserved bits, codec, the record-count rules, the CRC, and that
/// the records parse exactly to the end of the body.
///
/// A compressed batch's records are decompressed first, refused with
/// [`BatchError::DecompressedTooLarge`] when they would take the batch,
/// uncompressed, past `max_batch_bytes` (checked before the output buffer
/// is allocated and while decoding), so a consumer never holds a batch
/// larger than the limit however small it arrived.
pub fn validate(buf: &[u8], max_batch_bytes: usize) -> Result<BatchHeader, BatchError> {
    let header = validate_without_records(buf, max_batch_bytes)?;
    if !header.is_control() {
        let body = &buf[HEADER_BYTES..];
        match header.compression()? {
            Compression::None => validate_records(&header, body)?,
            codec => {
                let max_records_bytes = max_batch_bytes.saturating_sub(HEADER_BYTES);
                let records = compression::decompress(codec, body, max_records_bytes)?;
                validate_records(&header, &records)?;
            }
        }
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
    check_framing(buf, max_batch_bytes, OffsetRule::OnePerRecord)
}

/// Whether a batch must take exactly one offset per record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OffsetRule {
    /// A produced batch: `last_offset_delta == record_count - 1`.
    OnePerRecord,
    /// A replicated entry, which a leader may have compacted: gaps allowed,
    /// as [`BatchHeader::check`] bounds them.
    GapsAllowed,
}

/// [`validate_without_records`] under `rule`.
fn check_framing(
    buf: &[u8],
    max_batch_bytes: usize,
    rule: OffsetRule,
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
    if rule == OffsetRule::OnePerRecord
        && !header.is_control()
        && u64::from(header.last_offset_delta) + 1 != u64::from(header.record_count)
    {
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
    // After the CRC, so damage reads as damage. An idempotent producer's batch carries an epoch and a sequence
    // (-1 everywhere means no producer): the producer table reads them.
    if header.producer_id >= 0 && (header.producer_epoch < 0 || header.base_sequence < 0) {
        return Err(BatchError::InvalidProducerFields {
            producer_id: header.producer_id,
            producer_epoch: header.producer_epoch,
            base_sequence: header.base_sequence,
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
    /// [`validate_without_records`]). Offsets may have gaps: a leader sends
    /// the entries its compaction rewrote as they now are.
    pub fn replicated(buf: &'a [u8], max_batch_bytes: usize) -> Result<ValidBatch<'a>, BatchError> {
        let header = check_framing(buf, max_batch_bytes, OffsetRule::GapsAllowed)?;
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
