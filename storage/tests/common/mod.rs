//! Helpers shared by the storage integration tests: small configurations
//! that roll and index often, and deterministic batches whose contents can
//! be recomputed from their position in the log. `batch_cases` holds the
//! golden and malformed batches of the batch format tests.
#![allow(dead_code, clippy::unwrap_used)]

pub mod batch_cases;

use rill_storage::batch::Compression;
use rill_storage::{BatchBuilder, LogConfig, NewRecord, RecordBatch, batches_of};

/// A configuration that exercises rolling and indexing with little data:
/// 64 KiB segments grown in 4 KiB steps, an index entry every 256 bytes,
/// batches up to 16 KiB, no time-based rolling or retention.
pub fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 64 * 1024,
        segment_ms: None,
        grow_step_bytes: 4096,
        index_interval_bytes: 256,
        max_batch_bytes: 16 * 1024,
        retention_ms: None,
        retention_bytes: None,
        ..LogConfig::default()
    }
}

/// The value of record `n` of the log: recomputable from its offset alone.
pub fn value_for(offset: u64, len: usize) -> Vec<u8> {
    let mut v = format!("record-{offset}-").into_bytes();
    while v.len() < len {
        v.push(b'a' + (offset % 26) as u8);
    }
    v.truncate(len.max(1));
    v
}

/// A batch of `count` records that will take offsets `first_offset..`,
/// record `i` with timestamp `timestamp_ms + i`, key `k<offset>` and the
/// value [`value_for`] of its offset.
pub fn batch_at(first_offset: u64, count: u64, value_len: usize, timestamp_ms: i64) -> Vec<u8> {
    compressed_batch_at(
        first_offset,
        count,
        value_len,
        timestamp_ms,
        Compression::None,
    )
}

/// As [`batch_at`], compressed with `codec` (when that makes it smaller).
pub fn compressed_batch_at(
    first_offset: u64,
    count: u64,
    value_len: usize,
    timestamp_ms: i64,
    codec: Compression,
) -> Vec<u8> {
    let mut b = BatchBuilder::new(1 << 20);
    b.compression(codec);
    for i in 0..count {
        let off = first_offset + i;
        let key = format!("k{off}");
        let value = value_for(off, value_len);
        let rec = NewRecord {
            key: Some(key.as_bytes()),
            value: Some(&value),
            headers: &[("h", Some(b"v"))],
            timestamp_ms: timestamp_ms + i as i64,
        };
        assert!(b.push(&rec).unwrap(), "test batches fit in 1 MiB");
    }
    b.finish().unwrap()
}

/// The same batch with its base offset stamped (for `append_entry`).
pub fn stamped_batch_at(
    first_offset: u64,
    count: u64,
    value_len: usize,
    timestamp_ms: i64,
) -> Vec<u8> {
    let mut b = batch_at(first_offset, count, value_len, timestamp_ms);
    b[4..12].copy_from_slice(&first_offset.to_le_bytes());
    b
}

/// Every batch of a read, CRC checked.
pub fn batches(chunks: &[bytes::Bytes]) -> Vec<RecordBatch> {
    batches_of(chunks, usize::MAX)
        .map(|b| {
            let b = b.unwrap();
            b.verify_crc().unwrap();
            b
        })
        .collect()
}

/// Checks that every record of `batches` carries the value and key
/// [`batch_at`] gave its offset, and returns the offsets in order.
pub fn check_records(batches: &[RecordBatch], value_len: usize) -> Vec<u64> {
    let mut offsets = Vec::new();
    for b in batches {
        for r in b.records() {
            let r = r.unwrap();
            let off = r.offset.get();
            assert_eq!(
                r.value.as_deref(),
                Some(&value_for(off, value_len)[..]),
                "value of offset {off}"
            );
            assert_eq!(
                r.key.as_deref(),
                Some(format!("k{off}").as_bytes()),
                "key of offset {off}"
            );
            offsets.push(off);
        }
    }
    offsets
}

/// Reads the whole log and checks every record is the one [`batch_at`]
/// wrote for its offset, with offsets contiguous from the log start to the
/// log end. Returns the number of records.
pub fn check_all(log: &rill_storage::Log, value_len: usize) -> u64 {
    let chunks = log.read(log.log_start_offset(), u64::MAX).unwrap();
    let offsets = check_records(&batches(&chunks), value_len);
    let start = log.log_start_offset().get();
    assert_eq!(
        offsets,
        (start..start + offsets.len() as u64).collect::<Vec<_>>()
    );
    assert_eq!(start + offsets.len() as u64, log.next_offset().get());
    offsets.len() as u64
}
