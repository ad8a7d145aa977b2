//! The record batch format as documented in `rill_storage::batch`: golden
//! bytes derived by hand from the layout table, field by field, their CRC
//! computed independently, and what stamping may change.
#![allow(clippy::unwrap_used)]

mod common;

use std::ops::Range;

use bytes::Bytes;
use common::batch_at;
use common::batch_cases::*;
use rill_storage::batch::{self, BatchHeader, HEADER_BYTES};
use rill_storage::{
    BatchBuilder, Header, NewRecord, Offset, RaftIndex, Record, RecordBatch, Term, control_batch,
};

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

/// The records section of [`GOLDEN_DATA_BATCH`] compressed by hand as
/// `rill_storage::batch::compression` documents it: `records_bytes` (20,
/// little-endian), then the block. Neither codec finds anything to gain on
/// 20 bytes, so both blocks hold the records as literals; a builder would
/// write this batch uncompressed.
fn golden_compressed_sections() -> [(u16, Vec<u8>); 2] {
    let records = &GOLDEN_DATA_BATCH[HEADER_BYTES..];
    assert_eq!(records.len(), 20);
    let mut lz4 = vec![20, 0, 0, 0];
    // One LZ4 sequence of literals only: token 0xf0 (15 or more literals,
    // no match), then 15 + 5 = 20, then the literals.
    lz4.extend_from_slice(&[0xf0, 0x05]);
    lz4.extend_from_slice(records);
    let mut zstd = vec![20, 0, 0, 0];
    zstd.extend_from_slice(&[
        0x28, 0xb5, 0x2f, 0xfd, // zstd frame magic
        0x20, 20, // frame header: single segment, content size 20
        0xa1, 0x00, 0x00, // block header: last block, raw, 20 bytes
    ]);
    zstd.extend_from_slice(records);
    [(3, lz4), (4, zstd)]
}

#[test]
fn golden_compressed_batches_decode_to_the_golden_records() {
    let plain = RecordBatch::new(Bytes::from_static(&GOLDEN_DATA_BATCH), MAX).unwrap();
    let want: Vec<Record> = plain.records().map(Result::unwrap).collect();
    for (codec, section) in golden_compressed_sections() {
        let mut bytes = GOLDEN_DATA_BATCH[..HEADER_BYTES].to_vec();
        bytes.extend_from_slice(&section);
        let length = (bytes.len() - 4) as u32;
        bytes[0..4].copy_from_slice(&length.to_le_bytes());
        bytes[34..36].copy_from_slice(&codec.to_le_bytes());
        // The CRC covers the compressed bytes.
        let crc = crc32_ieee_bitwise(&bytes[CRC_COVERED_FROM..]);
        bytes[28..32].copy_from_slice(&crc.to_le_bytes());

        let header = batch::validate(&bytes, MAX).unwrap();
        assert_eq!(header.attributes, codec);
        assert_eq!(header.compression().unwrap().codec(), codec as u8);
        assert_eq!(header.record_count, 2);
        let rb = RecordBatch::new(Bytes::from(bytes), MAX).unwrap();
        rb.verify_crc().unwrap();
        let got: Vec<Record> = rb.records().map(Result::unwrap).collect();
        assert_eq!(got, want, "codec {codec}");

        // A builder asked for this codec writes the golden batch as it is.
        let codec = batch::Compression::from_codec(codec as u8).unwrap();
        let mut builder = BatchBuilder::new(MAX);
        builder.compression(codec);
        for r in &want {
            let headers: Vec<(&str, Option<&[u8]>)> = r
                .headers
                .iter()
                .map(|h| (std::str::from_utf8(&h.key).unwrap(), h.value.as_deref()))
                .collect();
            let record = NewRecord {
                key: r.key.as_deref(),
                value: r.value.as_deref(),
                headers: &headers,
                timestamp_ms: r.timestamp_ms,
            };
            assert!(builder.push(&record).unwrap());
        }
        let mut built = builder.finish().unwrap();
        batch::stamp(&mut built, Offset(42), Term(7), RaftIndex(9));
        assert_eq!(built, GOLDEN_DATA_BATCH, "{codec}");
    }
}
