//! Building record batches in the format of [`crate::batch`].
//!
//! A [`BatchBuilder`] encodes records one by one straight into the batch's
//! final buffer (no second pass, no re-encoding) and, on [`BatchBuilder::finish`],
//! fills in the header and the CRC. It never lets a batch grow past its
//! `max_batch_bytes`: [`BatchBuilder::push`] answers `false` when a record no
//! longer fits, so a producer starts the next batch.
//!
//! With a codec set ([`BatchBuilder::compression`]), `finish` compresses the
//! records section as one block and the CRC covers the compressed bytes.
//! The size bound stays on the uncompressed batch, the one a consumer will
//! hold and validation checks. When compressing would not make the batch
//! smaller (random bytes), the batch is written uncompressed instead, so a
//! compressed batch is never larger than the bound either. A batch with
//! records always finishes, whatever the codec.

use crate::batch::{
    ATTR_CONTROL, BatchHeader, Compression, FORMAT_VERSION, HEADER_BYTES, LENGTH_FIELD_BYTES,
    compression, compute_crc,
};
use crate::error::BatchError;
use crate::types::{Offset, RaftIndex, Term};
use crate::varint;

/// A record to be written: borrowed parts, copied once into the batch.
#[derive(Debug, Clone, Copy, Default)]
pub struct NewRecord<'a> {
    /// The key, if any.
    pub key: Option<&'a [u8]>,
    /// The value; `None` writes a tombstone.
    pub value: Option<&'a [u8]>,
    /// Headers: UTF-8 key and optional value.
    pub headers: &'a [(&'a str, Option<&'a [u8]>)],
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
}

impl<'a> NewRecord<'a> {
    /// A record with a value and a timestamp, no key, no headers.
    pub fn value(value: &'a [u8], timestamp_ms: i64) -> Self {
        NewRecord {
            value: Some(value),
            timestamp_ms,
            ..NewRecord::default()
        }
    }
}

/// The identity of an idempotent producer, written into the batch header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerStamp {
    /// Producer id.
    pub producer_id: i64,
    /// Producer epoch.
    pub producer_epoch: i16,
    /// Sequence number of the batch's first record.
    pub base_sequence: i32,
}

impl ProducerStamp {
    /// No idempotent producer: every field -1.
    pub const NONE: ProducerStamp = ProducerStamp {
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
    };
}

/// Encodes records into one batch.
#[derive(Debug)]
pub struct BatchBuilder {
    buf: Vec<u8>,
    max_batch_bytes: usize,
    record_count: u32,
    first_timestamp_ms: i64,
    max_timestamp_ms: i64,
    producer: ProducerStamp,
    compression: Compression,
}

fn bytes_field_len(b: Option<&[u8]>) -> usize {
    match b {
        None => 1,
        Some(b) => varint::encoded_len_i32(b.len() as i32) + b.len(),
    }
}

fn put_bytes(buf: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        None => varint::encode_i32(buf, -1),
        Some(b) => {
            varint::encode_i32(buf, b.len() as i32);
            buf.extend_from_slice(b);
        }
    }
}

impl BatchBuilder {
    /// An empty builder for batches of at most `max_batch_bytes`, whole batch.
    pub fn new(max_batch_bytes: usize) -> BatchBuilder {
        Self::with_capacity(max_batch_bytes, HEADER_BYTES)
    }

    /// As [`BatchBuilder::new`], reserving `capacity_bytes` up front.
    pub fn with_capacity(max_batch_bytes: usize, capacity_bytes: usize) -> BatchBuilder {
        let mut buf = Vec::with_capacity(
            capacity_bytes.clamp(HEADER_BYTES, max_batch_bytes.max(HEADER_BYTES)),
        );
        buf.resize(HEADER_BYTES, 0);
        BatchBuilder {
            buf,
            max_batch_bytes,
            record_count: 0,
            first_timestamp_ms: 0,
            max_timestamp_ms: i64::MIN,
            producer: ProducerStamp::NONE,
            compression: Compression::None,
        }
    }

    /// Compresses the records with `compression` on [`BatchBuilder::finish`].
    pub fn compression(&mut self, compression: Compression) -> &mut Self {
        self.compression = compression;
        self
    }

    /// Marks the batch as written by an idempotent producer.
    pub fn producer(&mut self, producer: ProducerStamp) -> &mut Self {
        self.producer = producer;
        self
    }

    /// Records pushed so far.
    pub fn record_count(&self) -> u32 {
        self.record_count
    }

    /// Size the batch would have if finished now uncompressed, bytes: the
    /// size its consumers hold, compressed or not.
    pub fn batch_bytes(&self) -> usize {
        self.buf.len()
    }

    /// Whether no record was pushed yet.
    pub fn is_empty(&self) -> bool {
        self.record_count == 0
    }

    /// Appends a record. Returns `Ok(false)`, leaving the batch unchanged, when
    /// the record would take the batch past its maximum; fails only when the
    /// record could not fit even in an empty batch.
    pub fn push(&mut self, record: &NewRecord<'_>) -> Result<bool, BatchError> {
        let first_ts = if self.record_count == 0 {
            record.timestamp_ms
        } else {
            self.first_timestamp_ms
        };
        let ts_delta = record.timestamp_ms.wrapping_sub(first_ts);
        let offset_delta = self.record_count as i32;
        let mut body =
            1 + varint::encoded_len_i64(ts_delta) + varint::encoded_len_i32(offset_delta);
        body += bytes_field_len(record.key) + bytes_field_len(record.value);
        body += varint::encoded_len_i32(record.headers.len() as i32);
        for (k, v) in record.headers {
            body += bytes_field_len(Some(k.as_bytes())) + bytes_field_len(*v);
        }
        let total = varint::encoded_len_i32(body as i32) + body;
        if HEADER_BYTES + total > self.max_batch_bytes || body > i32::MAX as usize {
            return Err(BatchError::RecordTooLarge {
                record_bytes: total as u64,
                max_batch_bytes: self.max_batch_bytes as u64,
            });
        }
        if self.buf.len() + total > self.max_batch_bytes {
            return Ok(false);
        }
        let buf = &mut self.buf;
        let start = buf.len();
        varint::encode_i32(buf, body as i32);
        buf.push(0);
        varint::encode_i64(buf, ts_delta);
        varint::encode_i32(buf, offset_delta);
        put_bytes(buf, record.key);
        put_bytes(buf, record.value);
        varint::encode_i32(buf, record.headers.len() as i32);
        for (k, v) in record.headers {
            put_bytes(buf, Some(k.as_bytes()));
            put_bytes(buf, *v);
        }
        debug_assert_eq!(
            buf.len() - start,
            total,
            "record size computed before writing"
        );
        self.first_timestamp_ms = first_ts;
        self.max_timestamp_ms = self.max_timestamp_ms.max(record.timestamp_ms);
        self.record_count += 1;
        Ok(true)
    }

    /// Fills in the header and CRC and returns the encoded batch, with base
    /// offset 0 and Raft term and index 0: the log stamps those.
    ///
    /// Fails with [`BatchError::ImpossibleRecordCount`] when no record was
    /// pushed: a data batch has at least one record (use [`control_batch`]
    /// for a zero-record batch).
    pub fn finish(mut self) -> Result<Vec<u8>, BatchError> {
        if self.record_count == 0 {
            return Err(BatchError::ImpossibleRecordCount {
                record_count: 0,
                last_offset_delta: 0,
                control: false,
            });
        }
        let mut attributes = 0;
        if self.compression != Compression::None {
            let mut compressed = Vec::with_capacity(self.buf.len());
            compressed.extend_from_slice(&self.buf[..HEADER_BYTES]);
            // A codec that fails leaves the batch uncompressed, as one that
            // does not shrink it does: the records are valid either way.
            let done = compression::compress_into(
                self.compression,
                &self.buf[HEADER_BYTES..],
                &mut compressed,
            );
            if done.is_ok() && compressed.len() < self.buf.len() {
                self.buf = compressed;
                attributes = u16::from(self.compression.codec());
            }
        }
        let header = BatchHeader {
            length: (self.buf.len() - LENGTH_FIELD_BYTES) as u32,
            base_offset: Offset(0),
            raft_term: Term(0),
            raft_index: RaftIndex(0),
            crc: 0,
            version: FORMAT_VERSION,
            reserved: 0,
            attributes,
            last_offset_delta: self.record_count - 1,
            record_count: self.record_count,
            first_timestamp_ms: self.first_timestamp_ms,
            max_timestamp_ms: self.max_timestamp_ms,
            producer_id: self.producer.producer_id,
            producer_epoch: self.producer.producer_epoch,
            base_sequence: self.producer.base_sequence,
        };
        Ok(seal(self.buf, header))
    }
}

fn seal(mut buf: Vec<u8>, header: BatchHeader) -> Vec<u8> {
    header.encode_into(&mut buf);
    let crc = compute_crc(&buf);
    BatchHeader { crc, ..header }.encode_into(&mut buf);
    buf
}

/// Encodes a control batch: zero records, no offset taken, `payload` as its
/// body (empty for a leader no-op). The payload's meaning belongs to the
/// replication layer.
pub fn control_batch(payload: &[u8], timestamp_ms: i64) -> Vec<u8> {
    let mut buf = vec![0; HEADER_BYTES];
    buf.extend_from_slice(payload);
    let header = BatchHeader {
        length: (buf.len() - LENGTH_FIELD_BYTES) as u32,
        base_offset: Offset(0),
        raft_term: Term(0),
        raft_index: RaftIndex(0),
        crc: 0,
        version: FORMAT_VERSION,
        reserved: 0,
        attributes: ATTR_CONTROL,
        last_offset_delta: 0,
        record_count: 0,
        first_timestamp_ms: timestamp_ms,
        max_timestamp_ms: timestamp_ms,
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
    };
    seal(buf, header)
}
