//! The record batch format as documented in `rill_storage::batch`: golden
//! bytes derived by hand from the layout table, round trips of arbitrary
//! batches, decoders that never panic on hostile or damaged bytes, refusal
//! of each kind of malformed batch with its typed error, and a log that a
//! refused batch or an out-of-order entry leaves exactly as it was, across
//! a reopen too.
#![allow(clippy::unwrap_used)]

mod common;

use std::ops::Range;
use std::path::Path;

use bytes::Bytes;
use common::{batch_at, small_config, stamped_batch_at};
use proptest::prelude::*;
use rill_storage::batch::{
    self, ATTR_COMPRESSION_MASK, ATTR_CONTROL, ATTR_TRANSACTIONAL, BatchHeader, HEADER_BYTES,
};
use rill_storage::{
    BatchBuilder, BatchError, Batches, Header, Log, LogError, LogPosition, NewRecord, Offset,
    RaftIndex, Record, RecordBatch, Term, control_batch,
};

/// 2023-11-14T22:13:20Z: the timestamp of the golden batches.
const T: i64 = 1_700_000_000_000;

/// The batch limit of `common::small_config()`. Every check here uses it,
/// so a bad batch is refused alike by `validate` and by a log.
const MAX: usize = 16 * 1024;

/// Where the CRC field starts and where the bytes it covers start.
const CRC_FIELD: Range<usize> = 28..32;
const CRC_COVERED_FROM: usize = 32;

/// The stamped fields (base offset, term, Raft index), outside the CRC.
const STAMPED: Range<usize> = 4..28;

// ---------------------------------------------------------------------------
// Golden bytes
// ---------------------------------------------------------------------------

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
const GOLDEN_DATA_BATCH: [u8; 94] = [
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

/// The fields of [`GOLDEN_DATA_BATCH`], in order and without gaps.
const DATA_BATCH_FIELDS: &[(&str, Range<usize>)] = &[
    ("length", 0..4),
    ("base_offset", 4..12),
    ("raft_term", 12..20),
    ("raft_index", 20..28),
    ("crc", 28..32),
    ("version", 32..33),
    ("reserved", 33..34),
    ("attributes", 34..36),
    ("last_offset_delta", 36..40),
    ("record_count", 40..44),
    ("first_timestamp", 44..52),
    ("max_timestamp", 52..60),
    ("producer_id", 60..68),
    ("producer_epoch", 68..70),
    ("base_sequence", 70..74),
    ("record 0 length", 74..75),
    ("record 0 attributes", 75..76),
    ("record 0 timestamp_delta", 76..77),
    ("record 0 offset_delta", 77..78),
    ("record 0 key", 78..80),
    ("record 0 value", 80..82),
    ("record 0 header_count", 82..83),
    ("record 0 header 0", 83..87),
    ("record 1 length", 87..88),
    ("record 1 attributes", 88..89),
    ("record 1 timestamp_delta", 89..90),
    ("record 1 offset_delta", 90..91),
    ("record 1 key", 91..92),
    ("record 1 value", 92..93),
    ("record 1 header_count", 93..94),
];

/// `control_batch(b"", T)`: a leader no-op, header only, not yet stamped.
#[rustfmt::skip]
const GOLDEN_CONTROL_BATCH: [u8; 74] = [
    0x46, 0x00, 0x00, 0x00,                         //  0 length: 70 = 74 - 4
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, //  4 base_offset: 0, stamped at append
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // 12 raft_term: 0, stamped at append
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // 20 raft_index: 0, stamped at append
    0xd9, 0x7a, 0xd8, 0x28,                         // 28 crc: 0x28d8_7ad9, CRC-32 of bytes 32..74
    0x01,                                           // 32 version: 1
    0x00,                                           // 33 reserved: 0
    0x20, 0x00,                                     // 34 attributes: bit 5, control
    0x00, 0x00, 0x00, 0x00,                         // 36 last_offset_delta: 0
    0x00, 0x00, 0x00, 0x00,                         // 40 record_count: 0
    0x00, 0x68, 0xe5, 0xcf, 0x8b, 0x01, 0x00, 0x00, // 44 first_timestamp: T
    0x00, 0x68, 0xe5, 0xcf, 0x8b, 0x01, 0x00, 0x00, // 52 max_timestamp: T
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // 60 producer_id: -1
    0xff, 0xff,                                     // 68 producer_epoch: -1
    0xff, 0xff, 0xff, 0xff,                         // 70 base_sequence: -1
];

/// The fields of [`GOLDEN_CONTROL_BATCH`].
const CONTROL_BATCH_FIELDS: &[(&str, Range<usize>)] = &[
    ("length", 0..4),
    ("base_offset", 4..12),
    ("raft_term", 12..20),
    ("raft_index", 20..28),
    ("crc", 28..32),
    ("version", 32..33),
    ("reserved", 33..34),
    ("attributes", 34..36),
    ("last_offset_delta", 36..40),
    ("record_count", 40..44),
    ("first_timestamp", 44..52),
    ("max_timestamp", 52..60),
    ("producer_id", 60..68),
    ("producer_epoch", 68..70),
    ("base_sequence", 70..74),
];

/// Compares `got` with `want` one named field at a time, so a difference
/// names the field it is in.
fn assert_fields_eq(got: &[u8], want: &[u8], fields: &[(&str, Range<usize>)]) {
    let mut covered = 0;
    for (name, range) in fields {
        assert_eq!(range.start, covered, "field table has a gap before {name}");
        assert!(range.end <= got.len(), "batch ends inside field {name}");
        assert_eq!(
            &got[range.clone()],
            &want[range.clone()],
            "field {name} (bytes {range:?})"
        );
        covered = range.end;
    }
    assert_eq!(covered, want.len(), "field table covers the whole batch");
    assert_eq!(got.len(), want.len(), "batch size");
}

/// CRC-32 (IEEE 802.3, reflected polynomial 0xedb88320), bit by bit: an
/// implementation independent of the one the crate uses.
fn crc32_ieee_bitwise(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn stored_crc(batch: &[u8]) -> u32 {
    u32::from_le_bytes(batch[CRC_FIELD].try_into().unwrap())
}

#[test]
fn data_batch_built_and_stamped_encodes_to_the_documented_bytes_field_by_field() {
    let headers: &[(&str, Option<&[u8]>)] = &[("h", Some(b"x"))];
    let mut builder = BatchBuilder::new(MAX);
    assert!(
        builder
            .push(&NewRecord {
                key: Some(b"k"),
                value: Some(b"v"),
                headers,
                timestamp_ms: T,
            })
            .unwrap()
    );
    assert!(
        builder
            .push(&NewRecord {
                key: None,
                value: None,
                headers: &[],
                timestamp_ms: T + 5,
            })
            .unwrap()
    );
    assert_eq!(builder.batch_bytes(), GOLDEN_DATA_BATCH.len());
    let mut bytes = builder.finish().unwrap();
    batch::stamp(&mut bytes, Offset(42), Term(7), RaftIndex(9));
    assert_fields_eq(&bytes, &GOLDEN_DATA_BATCH, DATA_BATCH_FIELDS);
}

#[test]
fn leader_noop_control_batch_encodes_to_the_documented_bytes_field_by_field() {
    assert_fields_eq(
        &control_batch(b"", T),
        &GOLDEN_CONTROL_BATCH,
        CONTROL_BATCH_FIELDS,
    );
}

#[test]
fn golden_crcs_are_crc32_ieee_of_bytes_32_to_the_end() {
    // The reference implementation gives the standard check value.
    assert_eq!(crc32_ieee_bitwise(b"123456789"), 0xcbf4_3926);
    for (golden, expected) in [
        (&GOLDEN_DATA_BATCH[..], 0x1bb1_03e5),
        (&GOLDEN_CONTROL_BATCH[..], 0x28d8_7ad9),
    ] {
        assert_eq!(stored_crc(golden), expected);
        assert_eq!(crc32_ieee_bitwise(&golden[CRC_COVERED_FROM..]), expected);
        assert_eq!(crc32fast::hash(&golden[CRC_COVERED_FROM..]), expected);
        assert_eq!(batch::compute_crc(golden), expected);
    }
}

#[test]
fn golden_data_batch_decodes_to_the_fields_and_records_it_was_built_from() {
    let expected_header = BatchHeader {
        length: 90,
        base_offset: Offset(42),
        raft_term: Term(7),
        raft_index: RaftIndex(9),
        crc: 0x1bb1_03e5,
        version: 1,
        reserved: 0,
        attributes: 0,
        last_offset_delta: 1,
        record_count: 2,
        first_timestamp_ms: T,
        max_timestamp_ms: T + 5,
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
    };
    assert_eq!(BatchHeader::decode(&GOLDEN_DATA_BATCH), Ok(expected_header));
    let header = batch::validate(&GOLDEN_DATA_BATCH, MAX).unwrap();
    assert_eq!(header, expected_header);
    assert!(!header.is_control());
    assert_eq!(header.batch_bytes(), 94);
    assert_eq!(header.offset_span(), 2);
    assert_eq!(header.next_offset(), Offset(44));

    let mut encoded = [0u8; HEADER_BYTES];
    expected_header.encode_into(&mut encoded);
    assert_eq!(encoded, GOLDEN_DATA_BATCH[..HEADER_BYTES]);

    let rb = RecordBatch::new(Bytes::from_static(&GOLDEN_DATA_BATCH), MAX).unwrap();
    rb.verify_crc().unwrap();
    assert_eq!(&rb.body()[..], &GOLDEN_DATA_BATCH[HEADER_BYTES..]);
    let records: Vec<Record> = rb.records().map(Result::unwrap).collect();
    assert_eq!(
        records,
        vec![
            Record {
                offset: Offset(42),
                timestamp_ms: T,
                key: Some(Bytes::from_static(b"k")),
                value: Some(Bytes::from_static(b"v")),
                headers: vec![Header {
                    key: Bytes::from_static(b"h"),
                    value: Some(Bytes::from_static(b"x")),
                }],
            },
            Record {
                offset: Offset(43),
                timestamp_ms: T + 5,
                key: None,
                value: None,
                headers: vec![],
            },
        ]
    );
}

#[test]
fn golden_control_batch_takes_no_offset_and_has_no_records() {
    let header = batch::validate(&GOLDEN_CONTROL_BATCH, MAX).unwrap();
    assert!(header.is_control());
    assert_eq!(header.record_count, 0);
    assert_eq!(header.offset_span(), 0);
    assert_eq!(header.next_offset(), header.base_offset);
    assert_eq!(header.first_timestamp_ms, T);
    assert_eq!(header.max_timestamp_ms, T);
    let rb = RecordBatch::new(Bytes::from_static(&GOLDEN_CONTROL_BATCH), MAX).unwrap();
    rb.verify_crc().unwrap();
    assert!(rb.body().is_empty());
    assert_eq!(rb.records().count(), 0);
}

#[test]
fn control_batch_payload_is_the_body_after_the_header_and_is_covered_by_the_crc() {
    let bytes = control_batch(b"noop", T);
    assert_eq!(bytes.len(), HEADER_BYTES + 4);
    assert_eq!(bytes[0..4], 74u32.to_le_bytes(), "length: 78 - 4");
    // Everything but the length and the CRC is as in the empty control batch.
    assert_eq!(bytes[4..28], GOLDEN_CONTROL_BATCH[4..28]);
    assert_eq!(bytes[32..HEADER_BYTES], GOLDEN_CONTROL_BATCH[32..]);
    assert_eq!(&bytes[HEADER_BYTES..], b"noop");
    assert_eq!(
        stored_crc(&bytes),
        crc32_ieee_bitwise(&bytes[CRC_COVERED_FROM..])
    );
    let header = batch::validate(&bytes, MAX).unwrap();
    assert!(header.is_control());
    let rb = RecordBatch::new(Bytes::from(bytes), MAX).unwrap();
    assert_eq!(&rb.body()[..], b"noop");
    assert_eq!(rb.records().count(), 0);
}

#[test]
fn stamping_rewrites_only_the_fields_before_the_crc() {
    let built = batch_at(0, 3, 20, T);
    let mut stamped = built.clone();
    batch::stamp(
        &mut stamped,
        Offset(u64::MAX - 3),
        Term(u64::MAX),
        RaftIndex(u64::MAX),
    );
    assert_eq!(stamped[..4], built[..4], "length untouched");
    assert_eq!(
        stamped[CRC_FIELD.start..],
        built[CRC_FIELD.start..],
        "CRC and everything it covers untouched"
    );
    let header = batch::validate(&stamped, MAX).unwrap();
    assert_eq!(header.base_offset, Offset(u64::MAX - 3));
    assert_eq!(header.raft_term, Term(u64::MAX));
    assert_eq!(header.raft_index, RaftIndex(u64::MAX));
}

// ---------------------------------------------------------------------------
// Refusals by `validate`
// ---------------------------------------------------------------------------

/// A batch that must be refused, and the exact error it must be refused with.
struct Refusal {
    what: &'static str,
    bytes: Vec<u8>,
    error: BatchError,
    /// The stored CRC still matches: a check other than the CRC refuses it.
    crc_intact: bool,
}

/// A valid data batch of three records, 20-byte values, under [`MAX`].
fn good() -> Vec<u8> {
    batch_at(0, 3, 20, T)
}

/// Recomputes the CRC over the documented range, `[32, end)`.
fn reseal(batch: &mut [u8]) {
    let crc = crc32fast::hash(&batch[CRC_COVERED_FROM..]);
    batch[CRC_FIELD].copy_from_slice(&crc.to_le_bytes());
}

/// A copy of `batch` with its header rewritten by `edit` and the CRC
/// recomputed, so that only the check under test can refuse it.
fn with_header(batch: &[u8], edit: impl FnOnce(&mut BatchHeader)) -> Vec<u8> {
    let mut bytes = batch.to_vec();
    let mut header = BatchHeader::decode(&bytes).unwrap();
    edit(&mut header);
    header.encode_into(&mut bytes);
    reseal(&mut bytes);
    bytes
}

fn length_field(batch: &mut [u8], length: u32) {
    batch[0..4].copy_from_slice(&length.to_le_bytes());
}

fn assert_validate_refuses(r: &Refusal) {
    assert_eq!(
        batch::validate(&r.bytes, MAX),
        Err(r.error.clone()),
        "{}",
        r.what
    );
    if r.crc_intact {
        assert_eq!(
            crc32fast::hash(&r.bytes[CRC_COVERED_FROM..]),
            stored_crc(&r.bytes),
            "{}: the CRC must not be what refuses it",
            r.what
        );
    }
}

fn flipped_body_byte() -> Refusal {
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

fn flipped_crc_byte() -> Refusal {
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

fn flipped_timestamp_byte() -> Refusal {
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

fn buffer_shorter_than_the_length_field() -> Refusal {
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

fn length_field_one_too_large() -> Refusal {
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

fn buffer_longer_than_the_length_field() -> Refusal {
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

fn length_field_one_too_small() -> Refusal {
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

fn length_field_below_the_header() -> Refusal {
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

fn above_max_batch_bytes() -> Refusal {
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

fn data_batch_with_zero_records() -> Refusal {
    Refusal {
        what: "a data batch with record_count 0",
        bytes: with_header(&good(), |h| h.record_count = 0),
        error: BatchError::ImpossibleRecordCount {
            record_count: 0,
            last_offset_delta: 2,
            control: false,
        },
        crc_intact: true,
    }
}

fn control_batch_with_records() -> Refusal {
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

fn control_batch_with_an_offset_delta() -> Refusal {
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

fn more_records_than_offsets() -> Refusal {
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
fn put_varint(out: &mut Vec<u8>, v: i64) {
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
fn batch_with_offset_deltas(deltas: &[i32], last_offset_delta: u32) -> Vec<u8> {
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

fn last_offset_delta_beyond_the_records() -> Refusal {
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

fn offset_deltas_with_a_gap() -> Refusal {
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

fn offset_deltas_out_of_order() -> Refusal {
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

fn a_record_past_max_timestamp() -> Refusal {
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

fn unknown_version(version: u8) -> Refusal {
    Refusal {
        what: "an unknown version",
        bytes: with_header(&good(), |h| h.version = version),
        error: BatchError::UnsupportedVersion(version),
        crc_intact: true,
    }
}

fn unknown_attribute_bits(attributes: u16) -> Refusal {
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

fn nonzero_reserved_byte() -> Refusal {
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

fn compression_codec(codec: u8) -> Refusal {
    Refusal {
        what: "a compression codec other than none",
        bytes: with_header(&good(), |h| h.attributes = u16::from(codec)),
        error: BatchError::UnsupportedCompression(codec),
        crc_intact: true,
    }
}

/// Offsets of the record length varints in [`GOLDEN_DATA_BATCH`].
const GOLDEN_RECORD_0: usize = 74;
const GOLDEN_RECORD_1: usize = 87;

fn last_record_runs_past_the_batch() -> Refusal {
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

fn first_record_runs_past_the_batch() -> Refusal {
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

fn trailing_bytes_after_the_last_record() -> Refusal {
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

fn empty_buffer() -> Refusal {
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

/// Every refusal above.
fn all_refusals() -> Vec<Refusal> {
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
    all.extend((1..=7).map(compression_codec));
    all
}

/// Every single attribute bit that has no meaning: bit 3 and bits 6 to 15.
fn undefined_attribute_bits() -> impl Iterator<Item = u16> {
    (0..16)
        .map(|bit| 1u16 << bit)
        .filter(|&a| a & (ATTR_COMPRESSION_MASK | ATTR_TRANSACTIONAL | ATTR_CONTROL) == 0)
}

#[test]
fn batch_with_a_flipped_body_byte_is_refused_as_crc_mismatch() {
    assert_validate_refuses(&flipped_body_byte());
}

#[test]
fn batch_with_a_flipped_crc_byte_is_refused_as_crc_mismatch() {
    assert_validate_refuses(&flipped_crc_byte());
}

#[test]
fn batch_with_a_flipped_header_byte_behind_byte_32_is_refused_as_crc_mismatch() {
    assert_validate_refuses(&flipped_timestamp_byte());
}

#[test]
fn every_single_bit_flip_from_the_crc_field_on_is_refused() {
    let good = good();
    for at in CRC_FIELD.start..good.len() {
        for bit in 0..8 {
            let mut bad = good.clone();
            bad[at] ^= 1 << bit;
            let err = batch::validate(&bad, MAX).expect_err("a flip under the CRC");
            // Only the header checks that run before the CRC (bytes 32..44:
            // version, reserved, attributes, last offset delta, record count)
            // may refuse it first.
            if !(32..44).contains(&at) {
                assert!(
                    matches!(err, BatchError::CrcMismatch { .. }),
                    "flip of bit {bit} at byte {at}: {err:?}"
                );
            }
        }
    }
}

#[test]
fn bit_flips_in_the_stamped_fields_are_accepted_because_the_crc_leaves_them_out() {
    let good = good();
    for at in STAMPED {
        for bit in 0..8 {
            let mut stamped = good.clone();
            stamped[at] ^= 1 << bit;
            let header = batch::validate(&stamped, MAX).unwrap();
            assert_eq!(header.crc, stored_crc(&good));
        }
    }
}

#[test]
fn length_field_longer_than_the_buffer_is_refused_as_length_mismatch() {
    assert_validate_refuses(&buffer_shorter_than_the_length_field());
    assert_validate_refuses(&length_field_one_too_large());
}

#[test]
fn length_field_shorter_than_the_buffer_is_refused_as_length_mismatch() {
    assert_validate_refuses(&buffer_longer_than_the_length_field());
    assert_validate_refuses(&length_field_one_too_small());
}

#[test]
fn length_field_below_the_header_size_is_refused_by_every_decoder() {
    let r = length_field_below_the_header();
    // `validate` and `RecordBatch::new` compare the length with the buffer
    // first: 4 + 10 bytes announced, a header's worth given.
    assert_validate_refuses(&r);
    assert_eq!(
        RecordBatch::new(Bytes::from(r.bytes.clone()), MAX),
        Err(r.error.clone())
    );
    // Splitting a buffer trusts the length field only once it is possible.
    let mut split = Batches::new(Bytes::from(r.bytes.clone()), MAX);
    assert_eq!(
        split.next(),
        Some(Err(BatchError::LengthTooSmall { length: 10 }))
    );
    assert_eq!(split.next(), None, "splitting stops at the first error");
    // Cut to the 14 bytes the length field announces, the header is missing.
    assert_eq!(
        batch::validate(&r.bytes[..14], MAX),
        Err(BatchError::Truncated {
            needed_bytes: HEADER_BYTES,
            available_bytes: 14,
        })
    );
}

#[test]
fn batch_above_max_batch_bytes_is_refused_as_too_large() {
    let r = above_max_batch_bytes();
    assert_validate_refuses(&r);
    // The limit is inclusive.
    batch::validate(&r.bytes, r.bytes.len()).unwrap();
    assert_eq!(
        batch::validate(&r.bytes, r.bytes.len() - 1),
        Err(BatchError::TooLarge {
            batch_bytes: r.bytes.len() as u64,
            max_batch_bytes: r.bytes.len() as u64 - 1,
        })
    );
    // A length field above the limit is the answer even when the buffer
    // holds fewer bytes than announced.
    assert_eq!(batch::validate(&r.bytes[..MAX], MAX), Err(r.error.clone()));
    assert_eq!(
        Batches::new(Bytes::from(r.bytes.clone()), MAX).next(),
        Some(Err(r.error))
    );
}

#[test]
fn data_batch_with_zero_records_is_refused_as_impossible_record_count() {
    assert_validate_refuses(&data_batch_with_zero_records());
}

#[test]
fn control_batch_with_records_is_refused_as_impossible_record_count() {
    assert_validate_refuses(&control_batch_with_records());
    assert_validate_refuses(&control_batch_with_an_offset_delta());
}

#[test]
fn record_count_above_last_offset_delta_plus_one_is_refused_as_impossible_record_count() {
    assert_validate_refuses(&more_records_than_offsets());
}

#[test]
fn a_batch_whose_last_offset_delta_exceeds_its_record_count_is_refused_as_sparse_offsets() {
    let r = last_offset_delta_beyond_the_records();
    assert_validate_refuses(&r);
    // A follower checks the header rule too, though it does not walk records.
    assert_eq!(
        batch::validate_without_records(&r.bytes, MAX),
        Err(r.error.clone())
    );
    // Readers still take such a batch (stored bytes stay readable).
    let header = BatchHeader::decode(&r.bytes).unwrap();
    header.check(MAX).unwrap();
}

#[test]
fn a_batch_whose_offset_deltas_skip_or_go_back_is_refused_by_the_record_walk() {
    for r in [offset_deltas_with_a_gap(), offset_deltas_out_of_order()] {
        assert_refused_by_the_record_walk(&r);
        // The header alone is consistent: a follower's check passes it, as
        // the leader that walked the records would have refused it.
        batch::validate_without_records(&r.bytes, MAX).unwrap();
    }
    // The same records with their deltas in sequence pass.
    batch::validate(&batch_with_offset_deltas(&[0, 1, 2], 2), MAX).unwrap();
}

#[test]
fn control_batches_with_zero_records_stay_valid() {
    let control = control_batch(b"payload", T);
    let header = batch::validate(&control, MAX).unwrap();
    assert_eq!((header.record_count, header.last_offset_delta), (0, 0));
    batch::validate_without_records(&control, MAX).unwrap();
}

proptest! {
    #[test]
    fn any_last_offset_delta_other_than_count_minus_one_is_refused(
        count in 1u32..40,
        last in any::<u32>(),
    ) {
        let deltas: Vec<i32> = (0..count as i32).collect();
        let bytes = batch_with_offset_deltas(&deltas, last);
        let got = batch::validate(&bytes, MAX);
        if last == count - 1 {
            prop_assert!(got.is_ok(), "{got:?}");
        } else if last < count - 1 {
            // Fewer offsets than records: impossible, as before.
            let impossible = matches!(got, Err(BatchError::ImpossibleRecordCount { .. }));
            prop_assert!(impossible, "{got:?}");
        } else {
            prop_assert_eq!(
                got,
                Err(BatchError::SparseOffsets { record_count: count, last_offset_delta: last })
            );
        }
    }

    #[test]
    fn any_record_delta_off_its_position_is_refused(
        count in 1u32..40,
        at in any::<prop::sample::Index>(),
        delta in 0i32..100_000,
    ) {
        let at = at.index(count as usize);
        let mut deltas: Vec<i32> = (0..count as i32).collect();
        prop_assume!(delta != at as i32);
        deltas[at] = delta;
        let got = batch::validate(&batch_with_offset_deltas(&deltas, count - 1), MAX);
        prop_assert_eq!(
            got,
            Err(BatchError::OffsetDeltaOutOfSequence { record: at as u32, offset_delta: delta })
        );
    }
}

#[test]
fn unknown_format_version_is_refused_as_unsupported_version() {
    for version in [0, 2, u8::MAX] {
        assert_validate_refuses(&unknown_version(version));
    }
}

#[test]
fn every_undefined_attribute_bit_and_the_reserved_byte_are_refused_as_reserved_bits_set() {
    assert_eq!(undefined_attribute_bits().count(), 11);
    for attributes in undefined_attribute_bits() {
        assert_validate_refuses(&unknown_attribute_bits(attributes));
    }
    assert_validate_refuses(&nonzero_reserved_byte());
}

#[test]
fn transactional_bit_is_accepted_on_data_and_control_batches() {
    batch::validate(
        &with_header(&good(), |h| h.attributes = ATTR_TRANSACTIONAL),
        MAX,
    )
    .unwrap();
    let control = with_header(&control_batch(b"", T), |h| {
        h.attributes = ATTR_CONTROL | ATTR_TRANSACTIONAL;
    });
    assert!(batch::validate(&control, MAX).unwrap().is_control());
}

#[test]
fn every_compression_codec_other_than_none_is_refused_as_unsupported_compression() {
    for codec in 1..=7 {
        assert_validate_refuses(&compression_codec(codec));
    }
}

/// For a refusal that the record walk must produce: the header passes its
/// checks and the CRC matches, so nothing before the walk refuses it.
fn assert_refused_by_the_record_walk(r: &Refusal) {
    assert!(r.crc_intact);
    let header = BatchHeader::decode(&r.bytes).unwrap();
    header.check(MAX).unwrap();
    assert_validate_refuses(r);
}

#[test]
fn record_whose_length_runs_past_the_batch_is_refused_as_corrupt_record() {
    for r in [
        last_record_runs_past_the_batch(),
        first_record_runs_past_the_batch(),
    ] {
        assert_refused_by_the_record_walk(&r);
        // Iterating yields the records before it, then the error, then stops.
        let rb = RecordBatch::new(Bytes::from(r.bytes.clone()), MAX).unwrap();
        let BatchError::CorruptRecord { record, .. } = r.error else {
            unreachable!("a record refusal")
        };
        let items: Vec<_> = rb.records().collect();
        assert_eq!(items.len(), record as usize + 1, "{}", r.what);
        assert!(items[..record as usize].iter().all(Result::is_ok));
        assert_eq!(items[record as usize], Err(r.error.clone()));
    }
}

#[test]
fn trailing_bytes_after_the_last_record_are_refused_as_corrupt_record() {
    assert_refused_by_the_record_walk(&trailing_bytes_after_the_last_record());
}

#[test]
fn empty_buffer_is_refused_as_truncated() {
    assert_validate_refuses(&empty_buffer());
    assert_eq!(Batches::new(Bytes::new(), MAX).next(), None);
}

// ---------------------------------------------------------------------------
// Refusals by the log
// ---------------------------------------------------------------------------

/// Everything a reader can observe of a log.
#[derive(Debug, PartialEq, Eq)]
struct Observed {
    end: LogPosition,
    last_term: Term,
    size_bytes: u64,
    segments: Vec<(Offset, RaftIndex)>,
    bytes: Vec<u8>,
}

fn observe(log: &Log) -> Observed {
    let bytes = log
        .read(log.log_start_offset(), u64::MAX)
        .unwrap()
        .iter()
        .flat_map(|chunk| chunk.iter().copied())
        .collect();
    Observed {
        end: log.end(),
        last_term: log.last_term(),
        size_bytes: log.size_bytes(),
        segments: log.segment_bases(),
        bytes,
    }
}

/// The end of the log [`log_with_history`] writes.
const HISTORY_END: LogPosition = LogPosition {
    offset: Offset(9),
    raft_index: RaftIndex(5),
};
const HISTORY_TERM: Term = Term(5);

/// A log in `dir` holding data batches and a control batch, written in
/// terms 1, 2 and 5: offsets 0..9, Raft indexes 1..5.
fn log_with_history(dir: &Path) -> Log {
    assert_eq!(small_config().max_batch_bytes, MAX);
    let mut log = Log::open(dir, small_config()).unwrap();
    log.append(&batch_at(0, 3, 20, T), Term(1)).unwrap();
    log.append(&control_batch(b"", T + 1), Term(2)).unwrap();
    log.append(&batch_at(3, 2, 20, T + 2), Term(2)).unwrap();
    log.append(&batch_at(5, 4, 20, T + 3), HISTORY_TERM)
        .unwrap();
    assert_eq!(log.end(), HISTORY_END);
    assert_eq!(log.last_term(), HISTORY_TERM);
    log
}

/// Checks the log is as `before`, then reopens it and checks again.
fn assert_unchanged_across_a_reopen(log: Log, dir: &Path, before: &Observed) -> Log {
    assert_eq!(&observe(&log), before, "after the refusals");
    drop(log);
    let log = Log::open(dir, small_config()).unwrap();
    assert_eq!(&observe(&log), before, "after a reopen");
    log
}

/// Checks that the entry that should come next still goes in where it
/// should, with the term it is given.
fn assert_next_entry_is_accepted(log: &mut Log) {
    let next = stamped_batch_at(HISTORY_END.offset.get(), 2, 20, T + 4);
    let appended = log
        .append_entry(&next, HISTORY_TERM, HISTORY_END.raft_index)
        .unwrap();
    assert_eq!(appended.base_offset, HISTORY_END.offset);
    assert_eq!(appended.raft_index, HISTORY_END.raft_index);
    assert_eq!(appended.term, HISTORY_TERM);
    assert_eq!(log.next_offset(), Offset(HISTORY_END.offset.get() + 2));
    assert_eq!(log.next_raft_index(), HISTORY_END.raft_index.next());
}

#[test]
fn every_refused_batch_leaves_the_log_unchanged_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = log_with_history(dir.path());
    let before = observe(&log);
    for r in all_refusals() {
        match log.append(&r.bytes, HISTORY_TERM) {
            Err(LogError::Batch(e)) => assert_eq!(e, r.error, "append: {}", r.what),
            other => panic!("append {}: expected {:?}, got {other:?}", r.what, r.error),
        }
        assert_eq!(observe(&log), before, "after append of {}", r.what);
        let mut entry = r.bytes.clone();
        if entry.len() >= HEADER_BYTES {
            batch::stamp(
                &mut entry,
                HISTORY_END.offset,
                Term(0),
                HISTORY_END.raft_index,
            );
        }
        match log.append_entry(&entry, HISTORY_TERM, HISTORY_END.raft_index) {
            Err(LogError::Batch(e)) => assert_eq!(e, r.error, "append_entry: {}", r.what),
            other => panic!(
                "append_entry {}: expected {:?}, got {other:?}",
                r.what, r.error
            ),
        }
        assert_eq!(observe(&log), before, "after append_entry of {}", r.what);
    }
    let mut log = assert_unchanged_across_a_reopen(log, dir.path(), &before);
    assert_next_entry_is_accepted(&mut log);
}

#[test]
fn replicated_entry_whose_base_offset_goes_backwards_is_refused_as_offset_out_of_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = log_with_history(dir.path());
    let before = observe(&log);
    for got in [HISTORY_END.offset.get() - 1, 0] {
        let entry = stamped_batch_at(got, 2, 20, T + 4);
        match log.append_entry(&entry, HISTORY_TERM, HISTORY_END.raft_index) {
            Err(LogError::OffsetOutOfOrder { expected, got: g }) => {
                assert_eq!((expected, g), (HISTORY_END.offset, Offset(got)));
            }
            other => panic!("base offset {got}: got {other:?}"),
        }
        assert_eq!(observe(&log), before);
    }
    let mut log = assert_unchanged_across_a_reopen(log, dir.path(), &before);
    assert_next_entry_is_accepted(&mut log);
}

#[test]
fn replicated_entry_whose_base_offset_skips_ahead_is_refused_as_offset_out_of_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = log_with_history(dir.path());
    let before = observe(&log);
    for got in [HISTORY_END.offset.get() + 1, u64::MAX - 2] {
        let entry = stamped_batch_at(got, 2, 20, T + 4);
        match log.append_entry(&entry, HISTORY_TERM, HISTORY_END.raft_index) {
            Err(LogError::OffsetOutOfOrder { expected, got: g }) => {
                assert_eq!((expected, g), (HISTORY_END.offset, Offset(got)));
            }
            other => panic!("base offset {got}: got {other:?}"),
        }
        assert_eq!(observe(&log), before);
    }
    // A control batch takes no offset but still must sit at the log end.
    let mut control = control_batch(b"", T + 4);
    batch::stamp(
        &mut control,
        Offset(HISTORY_END.offset.get() + 1),
        Term(0),
        RaftIndex(0),
    );
    assert!(matches!(
        log.append_entry(&control, HISTORY_TERM, HISTORY_END.raft_index),
        Err(LogError::OffsetOutOfOrder { .. })
    ));
    let mut log = assert_unchanged_across_a_reopen(log, dir.path(), &before);
    assert_next_entry_is_accepted(&mut log);
}

#[test]
fn replicated_entry_with_a_raft_index_other_than_the_next_is_refused_as_raft_index_out_of_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = log_with_history(dir.path());
    let before = observe(&log);
    let entry = stamped_batch_at(HISTORY_END.offset.get(), 2, 20, T + 4);
    let next = HISTORY_END.raft_index.get();
    for got in [next - 1, 1, next + 1, u64::MAX] {
        match log.append_entry(&entry, HISTORY_TERM, RaftIndex(got)) {
            Err(LogError::RaftIndexOutOfOrder { expected, got: g }) => {
                assert_eq!((expected, g), (HISTORY_END.raft_index, RaftIndex(got)));
            }
            other => panic!("raft index {got}: got {other:?}"),
        }
        assert_eq!(observe(&log), before);
    }
    let mut log = assert_unchanged_across_a_reopen(log, dir.path(), &before);
    assert_next_entry_is_accepted(&mut log);
}

#[test]
fn append_with_a_term_below_the_last_is_refused_as_term_regressed() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = log_with_history(dir.path());
    let before = observe(&log);
    let entry = stamped_batch_at(HISTORY_END.offset.get(), 2, 20, T + 4);
    for got in [Term(HISTORY_TERM.get() - 1), Term(0)] {
        match log.append(&entry, got) {
            Err(LogError::TermRegressed { last, got: g }) => {
                assert_eq!((last, g), (HISTORY_TERM, got));
            }
            other => panic!("append in term {got}: got {other:?}"),
        }
        assert_eq!(observe(&log), before);
        match log.append_entry(&entry, got, HISTORY_END.raft_index) {
            Err(LogError::TermRegressed { last, got: g }) => {
                assert_eq!((last, g), (HISTORY_TERM, got));
            }
            other => panic!("append_entry in term {got}: got {other:?}"),
        }
        assert_eq!(observe(&log), before);
    }
    let mut log = assert_unchanged_across_a_reopen(log, dir.path(), &before);
    // The last term survives the reopen: a lower term is still refused.
    assert!(matches!(
        log.append(&entry, Term(HISTORY_TERM.get() - 1)),
        Err(LogError::TermRegressed { .. })
    ));
    assert_next_entry_is_accepted(&mut log);
}

// ---------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------

/// A record as a producer hands it over.
#[derive(Debug, Clone)]
struct Rec {
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
    timestamp_ms: i64,
}

fn rec() -> impl Strategy<Value = Rec> {
    let bytes = || prop::option::of(prop::collection::vec(any::<u8>(), 0..300));
    let header = (
        ".{0,12}",
        prop::option::of(prop::collection::vec(any::<u8>(), 0..40)),
    );
    (
        bytes(),
        bytes(),
        prop::collection::vec(header, 0..3),
        // 2017 to 2033, in any order within a batch.
        1_500_000_000_000i64..2_000_000_000_000,
    )
        .prop_map(|(key, value, headers, timestamp_ms)| Rec {
            key,
            value,
            headers,
            timestamp_ms,
        })
}

fn build(recs: &[Rec]) -> Vec<u8> {
    let mut builder = BatchBuilder::new(1 << 20);
    for r in recs {
        let headers: Vec<(&str, Option<&[u8]>)> = r
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_deref()))
            .collect();
        let pushed = builder
            .push(&NewRecord {
                key: r.key.as_deref(),
                value: r.value.as_deref(),
                headers: &headers,
                timestamp_ms: r.timestamp_ms,
            })
            .unwrap();
        assert!(pushed, "generated batches fit in 1 MiB");
    }
    builder.finish().unwrap()
}

/// The records `recs` must read back as from a batch based at `base`.
fn expected_records(recs: &[Rec], base: u64) -> Vec<Record> {
    recs.iter()
        .enumerate()
        .map(|(i, r)| Record {
            offset: Offset(base + i as u64),
            timestamp_ms: r.timestamp_ms,
            key: r.key.clone().map(Bytes::from),
            value: r.value.clone().map(Bytes::from),
            headers: r
                .headers
                .iter()
                .map(|(k, v)| Header {
                    key: Bytes::copy_from_slice(k.as_bytes()),
                    value: v.clone().map(Bytes::from),
                })
                .collect(),
        })
        .collect()
}

/// Runs every decoder over `bytes`: none may panic, and when `validate`
/// accepts the bytes the others must agree with it.
fn decode_everything(bytes: &[u8]) {
    let decoded = BatchHeader::decode(bytes);
    let validated = batch::validate(bytes, MAX);
    let framed = batch::validate_without_records(bytes, MAX);
    if let Ok(h) = &validated {
        assert_eq!(
            framed.as_ref().ok(),
            Some(h),
            "full validation implies the framing check"
        );
    }
    let shared = Bytes::copy_from_slice(bytes);

    let single = RecordBatch::new(shared.clone(), MAX);
    let single_records = single.as_ref().ok().map(|b| {
        let _ = b.verify_crc();
        all_records(b)
    });

    let mut split = Vec::new();
    for item in Batches::new(shared, MAX) {
        assert!(
            split.len() <= bytes.len() / HEADER_BYTES,
            "more batches than headers fit in {} bytes",
            bytes.len()
        );
        split.push(item.map(|b| {
            let _ = b.verify_crc();
            let records = all_records(&b);
            (b, records)
        }));
    }
    if let Some(first_err) = split.iter().position(Result::is_err) {
        assert_eq!(first_err, split.len() - 1, "splitting stops at an error");
    }

    let Ok(header) = validated else { return };
    assert_eq!(decoded, Ok(header));
    let rb = single.unwrap();
    rb.verify_crc().unwrap();
    let records = single_records.unwrap();
    assert_eq!(records.len(), header.record_count as usize);
    let mut prev: Option<u64> = None;
    for r in &records {
        let offset = r.as_ref().unwrap().offset.get();
        let delta = offset.wrapping_sub(header.base_offset.get());
        assert!(delta <= u64::from(header.last_offset_delta));
        assert!(prev.is_none_or(|p| p < offset), "offsets increase");
        prev = Some(offset);
    }
    assert_eq!(split.len(), 1, "a valid batch splits into itself");
    let (b, split_records) = split.pop().unwrap().unwrap();
    assert_eq!(b, rb);
    assert_eq!(split_records, records);
}

/// Every record of `b`; the iterator must stop right after an error and
/// never yield more than `record_count` items.
fn all_records(b: &RecordBatch) -> Vec<Result<Record, BatchError>> {
    let items: Vec<_> = b.records().collect();
    assert!(items.len() <= b.header().record_count as usize);
    if let Some(first_err) = items.iter().position(Result::is_err) {
        assert_eq!(first_err, items.len() - 1, "records stop at an error");
    }
    items
}

/// Header fields chosen so the header checks often pass, with the CRC
/// recomputed: the record walk sees arbitrary bodies.
fn plausible_header_over(body: &[u8], attributes: u16, record_count: u32, lod: u32) -> Vec<u8> {
    let mut bytes = control_batch(body, T);
    let mut header = BatchHeader::decode(&bytes).unwrap();
    header.attributes = attributes;
    header.record_count = record_count;
    header.last_offset_delta = lod;
    header.encode_into(&mut bytes);
    reseal(&mut bytes);
    bytes
}

/// A follower checks a replicated batch's framing and CRC, not its records:
/// it refuses everything full validation refuses, with the same error,
/// except records that are corrupt, out of sequence or stamped past the
/// header's maximum under an intact CRC (a leader walked them before they
/// entered the log).
#[test]
fn validate_without_records_refuses_all_but_corrupt_records_as_validate_does() {
    let mut corrupt_records = 0;
    for r in all_refusals() {
        let got = batch::validate_without_records(&r.bytes, MAX);
        if let BatchError::CorruptRecord { .. }
        | BatchError::OffsetDeltaOutOfSequence { .. }
        | BatchError::TimestampPastMax { .. } = r.error
        {
            assert!(r.crc_intact, "{}", r.what);
            assert_eq!(got, BatchHeader::decode(&r.bytes), "{}", r.what);
            corrupt_records += 1;
        } else {
            assert_eq!(got, Err(r.error.clone()), "{}", r.what);
        }
    }
    assert!(corrupt_records >= 3, "the refusals include corrupt records");
}

proptest! {
    #[test]
    fn any_batch_round_trips_through_validate_and_records(
        recs in prop::collection::vec(rec(), 1..50),
        base in 0u64..1 << 62,
        term in any::<u64>(),
        index in 1u64..,
    ) {
        let mut bytes = build(&recs);
        batch::stamp(&mut bytes, Offset(base), Term(term), RaftIndex(index));
        let n = recs.len() as u32;

        let header = batch::validate(&bytes, MAX.max(bytes.len())).unwrap();
        prop_assert_eq!(
            batch::validate_without_records(&bytes, MAX.max(bytes.len())).unwrap(),
            header
        );
        prop_assert_eq!(header.base_offset, Offset(base));
        prop_assert_eq!(header.raft_term, Term(term));
        prop_assert_eq!(header.raft_index, RaftIndex(index));
        prop_assert_eq!(header.record_count, n);
        prop_assert_eq!(header.last_offset_delta, n - 1);
        prop_assert_eq!(header.next_offset(), Offset(base + u64::from(n)));
        prop_assert_eq!(header.first_timestamp_ms, recs[0].timestamp_ms);
        prop_assert_eq!(
            header.max_timestamp_ms,
            recs.iter().map(|r| r.timestamp_ms).max().unwrap()
        );
        prop_assert_eq!(
            (header.producer_id, header.producer_epoch, header.base_sequence),
            (-1, -1, -1)
        );

        let rb = RecordBatch::new(Bytes::from(bytes.clone()), 1 << 20).unwrap();
        rb.verify_crc().unwrap();
        let got: Vec<Record> = rb.records().map(Result::unwrap).collect();
        prop_assert_eq!(&got, &expected_records(&recs, base));

        // Two copies back to back split into two equal batches.
        let twice = Bytes::from([bytes.clone(), bytes].concat());
        let split: Vec<RecordBatch> =
            Batches::new(twice, 1 << 20).map(Result::unwrap).collect();
        prop_assert_eq!(split.len(), 2);
        prop_assert_eq!(&split[0], &rb);
        prop_assert_eq!(&split[1], &rb);
    }

    #[test]
    fn decoders_never_panic_on_arbitrary_bytes(
        bytes in prop::collection::vec(any::<u8>(), 0..400),
    ) {
        decode_everything(&bytes);
    }

    #[test]
    fn decoders_never_panic_on_an_arbitrary_body_behind_a_plausible_header(
        body in prop::collection::vec(
            prop::sample::select(vec![0x00u8, 0x01, 0x02, 0x03, 0x04, 0x0c, 0x18, 0x7e, 0x7f, 0x80, 0xff]),
            0..300,
        ),
        attributes in prop::sample::select(vec![0u16, ATTR_TRANSACTIONAL, ATTR_CONTROL]),
        record_count in 0u32..12,
        lod in prop_oneof![0u32..12, Just(u32::MAX)],
    ) {
        decode_everything(&plausible_header_over(&body, attributes, record_count, lod));
    }

    #[test]
    fn damaged_batch_never_panics_and_is_accepted_only_when_a_stamped_field_changed(
        recs in prop::collection::vec(rec(), 1..8),
        at in any::<prop::sample::Index>(),
        xor in 1u8..,
        truncate in any::<bool>(),
    ) {
        let good = build(&recs);
        let mut bad = good.clone();
        let at = at.index(good.len());
        if truncate {
            bad.truncate(at);
        } else {
            bad[at] ^= xor;
        }
        decode_everything(&bad);
        let accepted = batch::validate(&bad, MAX).is_ok();
        prop_assert_eq!(
            accepted,
            !truncate && STAMPED.contains(&at),
            "damage at byte {} (truncate {}) accepted: {}", at, truncate, accepted
        );
        if accepted {
            prop_assert_eq!(crc32fast::hash(&bad[CRC_COVERED_FROM..]), stored_crc(&bad));
        }
        // The same damage with the CRC made to match again: now the checks
        // behind the CRC see it.
        if bad.len() >= HEADER_BYTES {
            reseal(&mut bad);
            decode_everything(&bad);
        }
    }
}
