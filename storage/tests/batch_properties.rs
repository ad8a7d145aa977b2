//! Properties of the record batch format: arbitrary batches round trip,
//! decoders never panic on hostile or damaged bytes and agree with
//! `validate`, and a follower's check refuses what full validation
//! refuses, but for the records a leader walked.
#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use common::batch_cases::*;
use proptest::prelude::*;
use rill_storage::batch::{self, ATTR_CONTROL, ATTR_TRANSACTIONAL, BatchHeader, HEADER_BYTES};
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
