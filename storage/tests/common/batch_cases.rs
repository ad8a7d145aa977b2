//! Batches the record batch format tests share: the documented constants
//! and CRC range, the golden data batch written out from the layout table,
//! and every kind of malformed batch with the exact error it must be
//! refused with.

use std::ops::Range;

use rill_storage::batch::{
    ATTR_COMPRESSION_MASK, ATTR_CONTROL, ATTR_TRANSACTIONAL, BatchHeader, HEADER_BYTES,
};
use rill_storage::{BatchError, Offset, RaftIndex, Term, control_batch};

use super::batch_at;

/// 2023-11-14T22:13:20Z: the timestamp of the golden batches.
pub const T: i64 = 1_700_000_000_000;

/// The batch limit of `common::small_config()`. Every check here uses it,
/// so a bad batch is refused alike by `validate` and by a log.
pub const MAX: usize = 16 * 1024;

/// Where the CRC field starts and where the bytes it covers start.
pub const CRC_FIELD: Range<usize> = 28..32;
pub const CRC_COVERED_FROM: usize = 32;

/// The stamped fields (base offset, term, Raft index), outside the CRC.
pub const STAMPED: Range<usize> = 4..28;

/// Two records built by `BatchBuilder` and stamped with base offset 42, term
/// 7 and Raft index 9, written out from the layout table in the module
/// documentation of `rill_storage::batch`. Integers are little-endian,
/// record fields zig-zag varints (`n` encodes as `2n`, `-1` as `1`).
///
/// Record 0: key "k", value "v", header ("h", "x"), timestamp T.
/// Record 1: no key, no value (a tombstone), no headers, timestamp T + 5.
/// Record 0 is 12 bytes after its length varint, record 1 is 6, so the batch
/// is 74 + (1 + 12) + (1 + 6) = 94 bytes and its length field 90.
///
/// T = 1_700_000_000_000 = 0x0000_018b_cfe5_6800.
#[rustfmt::skip]
pub const GOLDEN_DATA_BATCH: [u8; 94] = [
    // ---- fixed header ----
    0x5a, 0x00, 0x00, 0x00,                         //  0 length: 90 = 94 - 4
    0x2a, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, //  4 base_offset: 42
    0x07, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // 12 raft_term: 7
    0x09, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // 20 raft_index: 9
    0xe5, 0x03, 0xb1, 0x1b,                         // 28 crc: 0x1bb1_03e5, CRC-32 of bytes 32..94
    0x01,                                           // 32 version: 1
    0x00,                                           // 33 reserved: 0
    0x00, 0x00,                                     // 34 attributes: codec none, not transactional, not control
    0x01, 0x00, 0x00, 0x00,                         // 36 last_offset_delta: 1
    0x02, 0x00, 0x00, 0x00,                         // 40 record_count: 2
    0x00, 0x68, 0xe5, 0xcf, 0x8b, 0x01, 0x00, 0x00, // 44 first_timestamp: T
    0x05, 0x68, 0xe5, 0xcf, 0x8b, 0x01, 0x00, 0x00, // 52 max_timestamp: T + 5
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // 60 producer_id: -1
    0xff, 0xff,                                     // 68 producer_epoch: -1
    0xff, 0xff, 0xff, 0xff,                         // 70 base_sequence: -1
    // ---- record 0 ----
    0x18,                                           // 74 length: 12
    0x00,                                           // 75 attributes: 0
    0x00,                                           // 76 timestamp_delta: 0
    0x00,                                           // 77 offset_delta: 0
    0x02, b'k',                                     // 78 key_length 1, key "k"
    0x02, b'v',                                     // 80 value_length 1, value "v"
    0x02,                                           // 82 header_count: 1
    0x02, b'h', 0x02, b'x',                         // 83 header key_length 1 "h", value_length 1 "x"
    // ---- record 1 ----
    0x0c,                                           // 87 length: 6
    0x00,                                           // 88 attributes: 0
    0x0a,                                           // 89 timestamp_delta: 5
    0x02,                                           // 90 offset_delta: 1
    0x01,                                           // 91 key_length: -1, no key
    0x01,                                           // 92 value_length: -1, a tombstone
    0x00,                                           // 93 header_count: 0
];

pub fn stored_crc(batch: &[u8]) -> u32 {
    u32::from_le_bytes(batch[CRC_FIELD].try_into().unwrap())
}

/// A batch that must be refused, and the exact error it must be refused with.
pub struct Refusal {
    /// What is wrong with it.
    pub what: &'static str,
    /// The batch.
    pub bytes: Vec<u8>,
    /// The error it must be refused with.
    pub error: BatchError,
    /// The stored CRC still matches: a check other than the CRC refuses it.
    pub crc_intact: bool,
}

/// A valid data batch of three records, 20-byte values, under [`MAX`].
pub fn good() -> Vec<u8> {
    batch_at(0, 3, 20, T)
}

/// Recomputes the CRC over the documented range, `[32, end)`.
pub fn reseal(batch: &mut [u8]) {
    let crc = crc32fast::hash(&batch[CRC_COVERED_FROM..]);
    batch[CRC_FIELD].copy_from_slice(&crc.to_le_bytes());
}

/// A copy of `batch` with its header rewritten by `edit` and the CRC
/// recomputed, so that only the check under test can refuse it.
pub fn with_header(batch: &[u8], edit: impl FnOnce(&mut BatchHeader)) -> Vec<u8> {
    let mut bytes = batch.to_vec();
    let mut header = BatchHeader::decode(&bytes).unwrap();
    edit(&mut header);
    header.encode_into(&mut bytes);
    reseal(&mut bytes);
    bytes
}

pub fn length_field(batch: &mut [u8], length: u32) {
    batch[0..4].copy_from_slice(&length.to_le_bytes());
}

pub fn flipped_body_byte() -> Refusal {
    let mut bytes = good();
    let stored = stored_crc(&bytes);
    bytes[HEADER_BYTES + 10] ^= 0x01;
    let computed = crc32fast::hash(&bytes[CRC_COVERED_FROM..]);
    Refusal {
        what: "a flipped body byte",
        bytes,
        error: BatchError::CrcMismatch { stored, computed },
        crc_intact: false,
    }
}

pub fn flipped_crc_byte() -> Refusal {
    let mut bytes = good();
    let computed = stored_crc(&bytes);
    bytes[CRC_FIELD.start + 2] ^= 0x80;
    let stored = stored_crc(&bytes);
    Refusal {
        what: "a flipped CRC byte",
        bytes,
        error: BatchError::CrcMismatch { stored, computed },
        crc_intact: false,
    }
}

pub fn flipped_timestamp_byte() -> Refusal {
    // first_timestamp is in the header but behind byte 32: covered.
    let mut bytes = good();
    let stored = stored_crc(&bytes);
    bytes[44] ^= 0x01;
    let computed = crc32fast::hash(&bytes[CRC_COVERED_FROM..]);
    Refusal {
        what: "a flipped first_timestamp byte",
        bytes,
        error: BatchError::CrcMismatch { stored, computed },
        crc_intact: false,
    }
}

pub fn buffer_shorter_than_the_length_field() -> Refusal {
    let good = good();
    let n = good.len() as u64;
    Refusal {
        what: "a buffer one byte shorter than its length field says",
        bytes: good[..good.len() - 1].to_vec(),
        error: BatchError::LengthMismatch {
            declared_bytes: n,
            actual_bytes: n - 1,
        },
        crc_intact: false,
    }
}

pub fn length_field_one_too_large() -> Refusal {
    let mut bytes = good();
    let n = bytes.len() as u64;
    length_field(&mut bytes, (n - 4 + 1) as u32);
    Refusal {
        what: "a length field one byte longer than the buffer",
        bytes,
        error: BatchError::LengthMismatch {
            declared_bytes: n + 1,
            actual_bytes: n,
        },
        crc_intact: true,
    }
}

pub fn buffer_longer_than_the_length_field() -> Refusal {
    let mut bytes = good();
    let n = bytes.len() as u64;
    bytes.push(0);
    Refusal {
        what: "a buffer one byte longer than its length field says",
        bytes,
        error: BatchError::LengthMismatch {
            declared_bytes: n,
            actual_bytes: n + 1,
        },
        crc_intact: false,
    }
}

pub fn length_field_one_too_small() -> Refusal {
    let mut bytes = good();
    let n = bytes.len() as u64;
    length_field(&mut bytes, (n - 4 - 1) as u32);
    Refusal {
        what: "a length field one byte shorter than the buffer",
        bytes,
        error: BatchError::LengthMismatch {
            declared_bytes: n - 1,
            actual_bytes: n,
        },
        crc_intact: true,
    }
}

pub fn length_field_below_the_header() -> Refusal {
    // A whole header's worth of bytes whose length field says 10.
    let mut bytes = control_batch(b"", T);
    length_field(&mut bytes, 10);
    Refusal {
        what: "a length field below the header size",
        bytes,
        error: BatchError::LengthMismatch {
            declared_bytes: 14,
            actual_bytes: HEADER_BYTES as u64,
        },
        crc_intact: true,
    }
}

pub fn above_max_batch_bytes() -> Refusal {
    let bytes = batch_at(0, 200, 100, T);
    assert!(bytes.len() > MAX, "the batch must exceed the limit");
    Refusal {
        what: "a batch above max_batch_bytes",
        error: BatchError::TooLarge {
            batch_bytes: bytes.len() as u64,
            max_batch_bytes: MAX as u64,
        },
        bytes,
        crc_intact: true,
    }
}

pub fn data_batch_with_zero_records() -> Refusal {
    Refusal {
        what: "a data batch with record_count 0",
        bytes: with_header(&good(), |h| h.record_count = 0),
        // Readable (compaction leaves such batches), but no produced batch
        // may take offsets without records.
        error: BatchError::SparseOffsets {
            record_count: 0,
            last_offset_delta: 2,
        },
        crc_intact: true,
    }
}

pub fn control_batch_with_records() -> Refusal {
    Refusal {
        what: "a control batch with records",
        bytes: with_header(&good(), |h| h.attributes = ATTR_CONTROL),
        error: BatchError::ImpossibleRecordCount {
            record_count: 3,
            last_offset_delta: 2,
            control: true,
        },
        crc_intact: true,
    }
}

pub fn control_batch_with_an_offset_delta() -> Refusal {
    Refusal {
        what: "a control batch with last_offset_delta 1",
        bytes: with_header(&control_batch(b"", T), |h| h.last_offset_delta = 1),
        error: BatchError::ImpossibleRecordCount {
            record_count: 0,
            last_offset_delta: 1,
            control: true,
        },
        crc_intact: true,
    }
}

pub fn more_records_than_offsets() -> Refusal {
    Refusal {
        what: "record_count greater than last_offset_delta + 1",
        bytes: with_header(&good(), |h| h.last_offset_delta = 1),
        error: BatchError::ImpossibleRecordCount {
            record_count: 3,
            last_offset_delta: 1,
            control: false,
        },
        crc_intact: true,
    }
}

/// Zig-zag varint, as the record fields are encoded.
pub fn put_varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// A data batch whose records carry `deltas` as their offset deltas and
/// whose header says `last_offset_delta`, CRC valid: each record a 4-byte
/// value, no key, no headers, timestamp T.
pub fn batch_with_offset_deltas(deltas: &[i32], last_offset_delta: u32) -> Vec<u8> {
    let mut bytes = vec![0u8; HEADER_BYTES];
    for &d in deltas {
        let mut rec = vec![0u8]; // attributes
        put_varint(&mut rec, 0); // timestamp delta
        put_varint(&mut rec, i64::from(d));
        put_varint(&mut rec, -1); // no key
        put_varint(&mut rec, 4);
        rec.extend_from_slice(b"vvvv");
        put_varint(&mut rec, 0); // no headers
        put_varint(&mut bytes, rec.len() as i64);
        bytes.extend_from_slice(&rec);
    }
    let header = BatchHeader {
        length: (bytes.len() - 4) as u32,
        base_offset: Offset(0),
        raft_term: Term(0),
        raft_index: RaftIndex(0),
        crc: 0,
        version: 1,
        reserved: 0,
        attributes: 0,
        last_offset_delta,
        record_count: deltas.len() as u32,
        first_timestamp_ms: T,
        max_timestamp_ms: T,
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
    };
    header.encode_into(&mut bytes);
    reseal(&mut bytes);
    bytes
}

pub fn last_offset_delta_beyond_the_records() -> Refusal {
    Refusal {
        what: "three records claiming four billion offsets",
        bytes: with_header(&good(), |h| h.last_offset_delta = u32::MAX),
        error: BatchError::SparseOffsets {
            record_count: 3,
            last_offset_delta: u32::MAX,
        },
        crc_intact: true,
    }
}

pub fn offset_deltas_with_a_gap() -> Refusal {
    Refusal {
        what: "offset deltas 0, 1, 3 under last_offset_delta 2",
        bytes: batch_with_offset_deltas(&[0, 1, 3], 2),
        error: BatchError::OffsetDeltaOutOfSequence {
            record: 2,
            offset_delta: 3,
        },
        crc_intact: true,
    }
}

pub fn offset_deltas_out_of_order() -> Refusal {
    Refusal {
        what: "offset deltas 1, 0, 2",
        bytes: batch_with_offset_deltas(&[1, 0, 2], 2),
        error: BatchError::OffsetDeltaOutOfSequence {
            record: 0,
            offset_delta: 1,
        },
        crc_intact: true,
    }
}

pub fn a_record_past_max_timestamp() -> Refusal {
    Refusal {
        what: "records stamped after the header's max_timestamp",
        bytes: with_header(&good(), |h| h.max_timestamp_ms = h.first_timestamp_ms - 1),
        error: BatchError::TimestampPastMax {
            record: 0,
            timestamp_ms: T,
            max_timestamp_ms: T - 1,
        },
        crc_intact: true,
    }
}

pub fn unknown_version(version: u8) -> Refusal {
    Refusal {
        what: "an unknown version",
        bytes: with_header(&good(), |h| h.version = version),
        error: BatchError::UnsupportedVersion(version),
        crc_intact: true,
    }
}

pub fn unknown_attribute_bits(attributes: u16) -> Refusal {
    Refusal {
        what: "unknown attribute bits",
        bytes: with_header(&good(), |h| h.attributes = attributes),
        error: BatchError::ReservedBitsSet {
            attributes,
            reserved: 0,
        },
        crc_intact: true,
    }
}

pub fn nonzero_reserved_byte() -> Refusal {
    Refusal {
        what: "a nonzero reserved byte",
        bytes: with_header(&good(), |h| h.reserved = 1),
        error: BatchError::ReservedBitsSet {
            attributes: 0,
            reserved: 1,
        },
        crc_intact: true,
    }
}

/// Codec values rill does not take: Kafka's gzip (1) and snappy (2), and
/// the undefined 5 to 7.
pub const UNSUPPORTED_CODECS: [u8; 5] = [1, 2, 5, 6, 7];

pub fn compression_codec(codec: u8) -> Refusal {
    Refusal {
        what: "a compression codec other than none, lz4 or zstd",
        bytes: with_header(&good(), |h| h.attributes = u16::from(codec)),
        error: BatchError::UnsupportedCompression(codec),
        crc_intact: true,
    }
}

/// Offsets of the record length varints in [`GOLDEN_DATA_BATCH`].
pub const GOLDEN_RECORD_0: usize = 74;
pub const GOLDEN_RECORD_1: usize = 87;

pub fn last_record_runs_past_the_batch() -> Refusal {
    let mut bytes = GOLDEN_DATA_BATCH.to_vec();
    // Record 1 says 7 bytes follow its length; 6 do.
    bytes[GOLDEN_RECORD_1] = 0x0e;
    reseal(&mut bytes);
    Refusal {
        what: "a last record whose length runs past the batch",
        bytes,
        error: BatchError::CorruptRecord {
            record: 1,
            reason: "record length runs past the batch",
        },
        crc_intact: true,
    }
}

pub fn first_record_runs_past_the_batch() -> Refusal {
    let mut bytes = GOLDEN_DATA_BATCH.to_vec();
    // Record 0 says 63 bytes follow its length; 19 do, in the whole body.
    bytes[GOLDEN_RECORD_0] = 0x7e;
    reseal(&mut bytes);
    Refusal {
        what: "a first record whose length runs past the batch",
        bytes,
        error: BatchError::CorruptRecord {
            record: 0,
            reason: "record length runs past the batch",
        },
        crc_intact: true,
    }
}

pub fn trailing_bytes_after_the_last_record() -> Refusal {
    let mut bytes = GOLDEN_DATA_BATCH.to_vec();
    bytes.push(0x00);
    let bytes = with_header(&bytes, |h| h.length += 1);
    Refusal {
        what: "a byte after the last record",
        bytes,
        error: BatchError::CorruptRecord {
            record: 2,
            reason: "bytes left after the last record",
        },
        crc_intact: true,
    }
}

pub fn empty_buffer() -> Refusal {
    Refusal {
        what: "an empty buffer",
        bytes: Vec::new(),
        error: BatchError::Truncated {
            needed_bytes: HEADER_BYTES,
            available_bytes: 0,
        },
        crc_intact: false,
    }
}

pub fn producer_id_without_a_sequence() -> Refusal {
    Refusal {
        what: "a producer id with base sequence -1",
        bytes: with_header(&good(), |h| {
            h.producer_id = 7;
            h.producer_epoch = 0;
        }),
        error: BatchError::InvalidProducerFields {
            producer_id: 7,
            producer_epoch: 0,
            base_sequence: -1,
        },
        crc_intact: true,
    }
}

/// Every refusal above.
pub fn all_refusals() -> Vec<Refusal> {
    let mut all = vec![
        a_record_past_max_timestamp(),
        flipped_body_byte(),
        flipped_crc_byte(),
        flipped_timestamp_byte(),
        buffer_shorter_than_the_length_field(),
        length_field_one_too_large(),
        buffer_longer_than_the_length_field(),
        length_field_one_too_small(),
        length_field_below_the_header(),
        above_max_batch_bytes(),
        data_batch_with_zero_records(),
        control_batch_with_records(),
        control_batch_with_an_offset_delta(),
        more_records_than_offsets(),
        last_offset_delta_beyond_the_records(),
        offset_deltas_with_a_gap(),
        offset_deltas_out_of_order(),
        producer_id_without_a_sequence(),
        unknown_version(0),
        unknown_version(2),
        unknown_version(u8::MAX),
        nonzero_reserved_byte(),
        last_record_runs_past_the_batch(),
        first_record_runs_past_the_batch(),
        trailing_bytes_after_the_last_record(),
        empty_buffer(),
    ];
    all.extend(undefined_attribute_bits().map(unknown_attribute_bits));
    all.extend(UNSUPPORTED_CODECS.map(compression_codec));
    all
}

/// Every single attribute bit that has no meaning: bit 3 and bits 6 to 15.
pub fn undefined_attribute_bits() -> impl Iterator<Item = u16> {
    (0..16)
        .map(|bit| 1u16 << bit)
        .filter(|&a| a & (ATTR_COMPRESSION_MASK | ATTR_TRANSACTIONAL | ATTR_CONTROL) == 0)
}
