//! Properties of the record batch format: arbitrary batches round trip,
//! decoders never panic on hostile or damaged bytes and agree with
//! `validate`, and a follower's check refuses what full validation
//! refuses, but for the records a leader walked.
#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use common::batch_cases::*;
use proptest::prelude::*;
use rill_storage::batch::{
    self, ATTR_CONTROL, ATTR_TRANSACTIONAL, BatchHeader, Compression, HEADER_BYTES,
};
use rill_storage::{
    BatchBuilder, BatchError, Batches, Header, NewRecord, Offset, RaftIndex, Record, RecordBatch,
    Term, control_batch,
};

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

fn build_compressed(recs: &[Rec], codec: Compression) -> Vec<u8> {
    let mut builder = BatchBuilder::new(1 << 20);
    builder.compression(codec);
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

/// A batch of `n` records of one repeated value: compresses well.
fn repetitive(n: usize, codec: Compression) -> Vec<u8> {
    let value = b"the quick brown fox jumps over the lazy dog ".repeat(4);
    let recs: Vec<Rec> = (0..n)
        .map(|i| Rec {
            key: None,
            value: Some(value.clone()),
            headers: Vec::new(),
            timestamp_ms: 1_700_000_000_000 + i as i64,
        })
        .collect();
    build_compressed(&recs, codec)
}

/// Replaces a compressed batch's records section with `section` (declared
/// size prefix and block) and re-stamps its CRC.
fn with_compressed_section(batch: &[u8], section: &[u8]) -> Vec<u8> {
    let mut out = batch[..HEADER_BYTES].to_vec();
    out.extend_from_slice(section);
    let length = (out.len() - 4) as u32;
    out[..4].copy_from_slice(&length.to_le_bytes());
    let crc = batch::compute_crc(&out);
    out[28..32].copy_from_slice(&crc.to_le_bytes());
    out
}

#[test]
fn repetitive_batches_are_written_compressed_and_smaller() {
    let plain = repetitive(100, Compression::None);
    for codec in [Compression::Lz4, Compression::Zstd] {
        let bytes = repetitive(100, codec);
        let header = batch::validate(&bytes, 1 << 20).unwrap();
        assert_eq!(header.compression().unwrap(), codec);
        assert!(
            bytes.len() * 5 < plain.len(),
            "{codec}: {} bytes against {} uncompressed",
            bytes.len(),
            plain.len()
        );
        let rb = RecordBatch::new(Bytes::from(bytes), 1 << 20).unwrap();
        let plain_rb = RecordBatch::new(Bytes::from(plain.clone()), 1 << 20).unwrap();
        let got: Vec<Record> = rb.records().map(Result::unwrap).collect();
        let want: Vec<Record> = plain_rb.records().map(Result::unwrap).collect();
        assert_eq!(got, want);
    }
}

#[test]
fn incompressible_records_are_written_uncompressed() {
    // One record of bytes that do not repeat: no codec makes it smaller.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let value: Vec<u8> = (0..4096)
        .map(|_| {
            // xorshift64: bytes without structure for a codec to find.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    for codec in [Compression::Lz4, Compression::Zstd] {
        let mut builder = BatchBuilder::new(1 << 20);
        builder.compression(codec);
        assert!(builder.push(&NewRecord::value(&value, 1)).unwrap());
        let bytes = builder.finish().unwrap();
        let header = batch::validate(&bytes, 1 << 20).unwrap();
        assert_eq!(header.compression().unwrap(), Compression::None, "{codec}");
    }
}

#[test]
fn a_decompression_bomb_is_refused_by_validate() {
    // 1 MiB of zeros compresses to a few hundred bytes; with a 64 KiB
    // limit its declared size is refused before any decoding.
    let zeros = vec![0u8; 1 << 20];
    for codec in [Compression::Lz4, Compression::Zstd] {
        let mut builder = BatchBuilder::new(2 << 20);
        builder.compression(codec);
        assert!(builder.push(&NewRecord::value(&zeros, 1)).unwrap());
        let bytes = builder.finish().unwrap();
        assert!(bytes.len() < 8 << 10, "{codec}: {} bytes", bytes.len());
        let got = batch::validate(&bytes, 64 << 10);
        assert!(
            matches!(got, Err(BatchError::DecompressedTooLarge { .. })),
            "{codec}: {got:?}"
        );
        // The same block declaring a small size is refused while decoding.
        let mut section = bytes[HEADER_BYTES..].to_vec();
        section[..4].copy_from_slice(&1000u32.to_le_bytes());
        let lying = with_compressed_section(&bytes, &section);
        assert!(
            matches!(
                batch::validate(&lying, 64 << 10),
                Err(BatchError::CorruptCompressed { .. })
            ),
            "{codec}"
        );
        let rb = RecordBatch::new(Bytes::from(lying), 64 << 10).unwrap();
        assert!(rb.records().next().unwrap().is_err(), "{codec}");
    }
}

#[test]
fn records_inside_a_compressed_batch_are_validated() {
    // A compressed batch claiming one record more than it holds.
    for codec in [Compression::Lz4, Compression::Zstd] {
        let bytes = repetitive(10, codec);
        let mut h = BatchHeader::decode(&bytes).unwrap();
        h.record_count = 11;
        h.last_offset_delta = 10;
        let mut bad = bytes.clone();
        h.encode_into(&mut bad);
        let crc = batch::compute_crc(&bad);
        bad[28..32].copy_from_slice(&crc.to_le_bytes());
        assert!(
            matches!(
                batch::validate(&bad, 1 << 20),
                Err(BatchError::CorruptRecord { .. })
            ),
            "{codec}"
        );
        // A compressed control batch is refused.
        let mut control = bytes.clone();
        let mut h = BatchHeader::decode(&bytes).unwrap();
        h.attributes |= ATTR_CONTROL;
        h.record_count = 0;
        h.last_offset_delta = 0;
        h.encode_into(&mut control);
        let crc = batch::compute_crc(&control);
        control[28..32].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            batch::validate(&control, 1 << 20),
            Err(BatchError::UnsupportedCompression(codec.codec()))
        );
    }
}

proptest! {
    #[test]
    fn any_batch_round_trips_compressed(
        recs in prop::collection::vec(rec(), 1..30),
        codec in prop::sample::select(vec![Compression::Lz4, Compression::Zstd]),
    ) {
        let bytes = build_compressed(&recs, codec);
        let plain = build(&recs);
        prop_assert!(bytes.len() <= plain.len());
        let header = batch::validate(&bytes, 1 << 20).unwrap();
        prop_assert_eq!(header.record_count, recs.len() as u32);
        let rb = RecordBatch::new(Bytes::from(bytes), 1 << 20).unwrap();
        rb.verify_crc().unwrap();
        let got: Vec<Record> = rb.records().map(Result::unwrap).collect();
        prop_assert_eq!(&got, &expected_records(&recs, 0));
    }

    #[test]
    fn damaged_compressed_batches_never_panic(
        at in any::<prop::sample::Index>(),
        flip in 1u8..,
        codec in prop::sample::select(vec![Compression::Lz4, Compression::Zstd]),
    ) {
        let bytes = repetitive(20, codec);
        let mut section = bytes[HEADER_BYTES..].to_vec();
        let i = at.index(section.len());
        section[i] ^= flip;
        // CRC re-stamped so the damage reaches the decompressor.
        let damaged = with_compressed_section(&bytes, &section);
        decode_everything(&damaged);
        let _ = batch::validate(&damaged, 1 << 20);
        if let Ok(rb) = RecordBatch::new(Bytes::from(damaged), 1 << 20) {
            for r in rb.records() {
                if r.is_err() {
                    break;
                }
            }
        }
    }
}

#[test]
fn recompressing_keeps_the_records_and_the_header() {
    for from in Compression::ALL {
        let mut original = repetitive(30, from);
        batch::stamp(&mut original, Offset(5), Term(2), RaftIndex(9));
        let want: Vec<Record> = RecordBatch::new(Bytes::from(original.clone()), 1 << 20)
            .unwrap()
            .records()
            .map(Result::unwrap)
            .collect();
        for to in Compression::ALL {
            let bytes = batch::compression::recompress(&original, to, 1 << 20).unwrap();
            let header = batch::validate(&bytes, 1 << 20).unwrap();
            assert_eq!(header.compression().unwrap(), to, "{from} to {to}");
            let before = BatchHeader::decode(&original).unwrap();
            assert_eq!(
                (
                    header.base_offset,
                    header.record_count,
                    header.max_timestamp_ms
                ),
                (
                    before.base_offset,
                    before.record_count,
                    before.max_timestamp_ms
                )
            );
            let got: Vec<Record> = RecordBatch::new(Bytes::from(bytes), 1 << 20)
                .unwrap()
                .records()
                .map(Result::unwrap)
                .collect();
            assert_eq!(got, want, "{from} to {to}");
        }
    }
}
