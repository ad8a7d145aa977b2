//! The record batch codec: golden bytes for the documented layout, round
//! trips, refusal of every kind of bad batch with its typed error (and a log
//! left unchanged), and a decoder that never panics on arbitrary bytes.
#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use common::{batch_at, small_config, stamped_batch_at};
use proptest::prelude::*;
use rill_storage::batch::{self, BatchHeader, HEADER_BYTES};
use rill_storage::{
    BatchBuilder, BatchError, Batches, Log, LogError, NewRecord, Offset, RaftIndex, RecordBatch,
    Term, control_batch,
};

const T: i64 = 1_700_000_000_000;
const MAX: usize = 1 << 20;

#[rustfmt::skip]
const GOLDEN_DATA_BATCH: [u8; 94] = [
    0x5a, 0x00, 0x00, 0x00,                         // length: 90 bytes follow
    0x2a, 0, 0, 0, 0, 0, 0, 0,                      // base_offset: 42
    0x07, 0, 0, 0, 0, 0, 0, 0,                      // raft_term: 7
    0x09, 0, 0, 0, 0, 0, 0, 0,                      // raft_index: 9
    0xe5, 0x03, 0xb1, 0x1b,                         // crc: 0x1bb103e5 over bytes 32..94
    0x01,                                           // version
    0x00,                                           // reserved
    0x00, 0x00,                                     // attributes: no compression, not control
    0x01, 0x00, 0x00, 0x00,                         // last_offset_delta: 1
    0x02, 0x00, 0x00, 0x00,                         // record_count: 2
    0x00, 0x68, 0xe5, 0xcf, 0x8b, 0x01, 0x00, 0x00, // first_timestamp: 1_700_000_000_000
    0x05, 0x68, 0xe5, 0xcf, 0x8b, 0x01, 0x00, 0x00, // max_timestamp: first + 5
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // producer_id: -1
    0xff, 0xff,                                     // producer_epoch: -1
    0xff, 0xff, 0xff, 0xff,                         // base_sequence: -1
    // record 0
    0x18,                                           // length: 12 (zig-zag 24)
    0x00,                                           // attributes
    0x00,                                           // timestamp_delta: 0
    0x00,                                           // offset_delta: 0
    0x02, b'k',                                     // key: 1 byte
    0x02, b'v',                                     // value: 1 byte
    0x02,                                           // header_count: 1
    0x02, b'h', 0x02, b'x',                         // header "h" = "x"
    // record 1
    0x0c,                                           // length: 6
    0x00,                                           // attributes
    0x0a,                                           // timestamp_delta: 5
    0x02,                                           // offset_delta: 1
    0x01,                                           // key: null (-1)
    0x01,                                           // value: null (-1), a tombstone
    0x00,                                           // header_count: 0
];

#[rustfmt::skip]
const GOLDEN_CONTROL_BATCH: [u8; 74] = [
    0x46, 0x00, 0x00, 0x00,                         // length: 70 bytes follow
    0, 0, 0, 0, 0, 0, 0, 0,                         // base_offset: 0 (stamped at append)
    0, 0, 0, 0, 0, 0, 0, 0,                         // raft_term: 0
    0, 0, 0, 0, 0, 0, 0, 0,                         // raft_index: 0
    0xd9, 0x7a, 0xd8, 0x28,                         // crc: 0x28d87ad9
    0x01, 0x00,                                     // version, reserved
    0x20, 0x00,                                     // attributes: control
    0x00, 0x00, 0x00, 0x00,                         // last_offset_delta: 0
    0x00, 0x00, 0x00, 0x00,                         // record_count: 0
    0x00, 0x68, 0xe5, 0xcf, 0x8b, 0x01, 0x00, 0x00, // first_timestamp
    0x00, 0x68, 0xe5, 0xcf, 0x8b, 0x01, 0x00, 0x00, // max_timestamp
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // producer_id: -1
    0xff, 0xff,                                     // producer_epoch: -1
    0xff, 0xff, 0xff, 0xff,                         // base_sequence: -1
];

#[test]
fn a_data_batch_encodes_to_the_documented_bytes() {
    let mut b = BatchBuilder::new(MAX);
    let headers: &[(&str, Option<&[u8]>)] = &[("h", Some(b"x"))];
    b.push(&NewRecord {
        key: Some(b"k"),
        value: Some(b"v"),
        headers,
        timestamp_ms: T,
    })
    .unwrap();
    b.push(&NewRecord {
        key: None,
        value: None,
        headers: &[],
        timestamp_ms: T + 5,
    })
    .unwrap();
    let mut bytes = b.finish().unwrap();
    batch::stamp(&mut bytes, Offset(42), Term(7), RaftIndex(9));
    assert_eq!(bytes, GOLDEN_DATA_BATCH);
    assert_eq!(crc32fast::hash(&GOLDEN_DATA_BATCH[32..]), 0x1bb1_03e5);

    // And decodes back to what was written.
    let h = batch::validate(&GOLDEN_DATA_BATCH, MAX).unwrap();
    assert_eq!(
        (h.base_offset, h.raft_term, h.raft_index),
        (Offset(42), Term(7), RaftIndex(9))
    );
    let rb = RecordBatch::new(Bytes::from_static(&GOLDEN_DATA_BATCH), MAX).unwrap();
    let recs: Vec<_> = rb.records().map(|r| r.unwrap()).collect();
    assert_eq!(recs.len(), 2);
    assert_eq!((recs[0].offset, recs[0].timestamp_ms), (Offset(42), T));
    assert_eq!(recs[0].key.as_deref(), Some(&b"k"[..]));
    assert_eq!(recs[0].value.as_deref(), Some(&b"v"[..]));
    assert_eq!(&recs[0].headers[0].key[..], b"h");
    assert_eq!(recs[0].headers[0].value.as_deref(), Some(&b"x"[..]));
    assert_eq!((recs[1].offset, recs[1].timestamp_ms), (Offset(43), T + 5));
    assert_eq!((recs[1].key.clone(), recs[1].value.clone()), (None, None));
}

#[test]
fn a_control_batch_encodes_to_the_documented_bytes() {
    assert_eq!(control_batch(b"", T), GOLDEN_CONTROL_BATCH);
    let h = batch::validate(&GOLDEN_CONTROL_BATCH, MAX).unwrap();
    assert!(h.is_control());
    assert_eq!(h.offset_span(), 0);
}

/// Rewrites a header field and fixes the CRC, so that only the check under
/// test can refuse the batch.
fn edit(batch: &[u8], f: impl FnOnce(&mut BatchHeader)) -> Vec<u8> {
    let mut b = batch.to_vec();
    let mut h = BatchHeader::decode(&b).unwrap();
    f(&mut h);
    h.encode_into(&mut b);
    recrc(&mut b);
    b
}

fn recrc(b: &mut [u8]) {
    let crc = crc32fast::hash(&b[32..]);
    b[28..32].copy_from_slice(&crc.to_le_bytes());
}

/// Says whether an error is the one expected.
type Expected = fn(&BatchError) -> bool;

/// Every kind of bad batch, with the error it must get.
fn bad_batches() -> Vec<(&'static str, Vec<u8>, Expected)> {
    let good = batch_at(0, 3, 50, T);
    let mut flipped = good.clone();
    flipped[HEADER_BYTES + 5] ^= 1;
    let mut longer = good.clone();
    longer.push(0);
    let shorter = good[..good.len() - 1].to_vec();
    let tiny = edit(&good[..HEADER_BYTES], |h| h.length = 10);
    let mut trailing = good.clone();
    trailing.push(0);
    let trailing = edit(&trailing, |h| h.length += 1);
    // The first record's length varint claims more than the batch holds.
    let mut runs_past = good.clone();
    runs_past[HEADER_BYTES] = 0x7e;
    recrc(&mut runs_past);
    vec![
        ("wrong crc", flipped, |e| {
            matches!(e, BatchError::CrcMismatch { .. })
        }),
        ("length longer than the bytes", shorter, |e| {
            matches!(e, BatchError::LengthMismatch { .. })
        }),
        ("length shorter than the bytes", longer, |e| {
            matches!(e, BatchError::LengthMismatch { .. })
        }),
        ("length below a header", tiny, |e| {
            matches!(
                e,
                BatchError::LengthMismatch { .. } | BatchError::LengthTooSmall { .. }
            )
        }),
        ("over the maximum size", batch_at(0, 200, 100, T), |e| {
            matches!(e, BatchError::TooLarge { .. })
        }),
        (
            "data batch with zero records",
            edit(&good, |h| h.record_count = 0),
            |e| matches!(e, BatchError::ImpossibleRecordCount { .. }),
        ),
        (
            "more records than offsets",
            edit(&good, |h| h.last_offset_delta = 1),
            |e| matches!(e, BatchError::ImpossibleRecordCount { .. }),
        ),
        (
            "control batch with records",
            edit(&good, |h| h.attributes = batch::ATTR_CONTROL),
            |e| matches!(e, BatchError::ImpossibleRecordCount { .. }),
        ),
        (
            "record count the records do not match",
            edit(&good, |h| {
                h.record_count = 2;
            }),
            |e| matches!(e, BatchError::CorruptRecord { .. }),
        ),
        ("unknown version", edit(&good, |h| h.version = 2), |e| {
            matches!(e, BatchError::UnsupportedVersion(2))
        }),
        (
            "unknown attribute bits",
            edit(&good, |h| h.attributes = 1 << 9),
            |e| matches!(e, BatchError::ReservedBitsSet { .. }),
        ),
        (
            "a compression codec",
            edit(&good, |h| h.attributes = 3),
            |e| matches!(e, BatchError::UnsupportedCompression(3)),
        ),
        ("a record running past the batch", runs_past, |e| {
            matches!(e, BatchError::CorruptRecord { .. })
        }),
        ("bytes after the last record", trailing, |e| {
            matches!(e, BatchError::CorruptRecord { .. })
        }),
        ("an empty buffer", Vec::new(), |e| {
            matches!(e, BatchError::Truncated { .. })
        }),
    ]
}

#[test]
fn every_kind_of_bad_batch_is_refused_with_its_typed_error() {
    for (what, bytes, is_expected) in bad_batches() {
        let err = batch::validate(&bytes, 16 * 1024).expect_err(what);
        assert!(is_expected(&err), "{what}: got {err:?}");
    }
}

#[test]
fn a_refused_batch_leaves_the_log_unchanged_even_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    for i in 0..5 {
        log.append(&batch_at(3 * i, 3, 50, T), Term(2)).unwrap();
    }
    let snapshot = |log: &Log| {
        let bytes: Vec<u8> = log
            .read(Offset(0), u64::MAX)
            .unwrap()
            .iter()
            .flat_map(|b| b.to_vec())
            .collect();
        (log.end(), log.size_bytes(), log.last_term(), bytes)
    };
    let before = snapshot(&log);
    for (what, bytes, is_expected) in bad_batches() {
        match log.append(&bytes, Term(2)) {
            Err(LogError::Batch(e)) => assert!(is_expected(&e), "{what}: got {e:?}"),
            other => panic!("{what}: expected a batch error, got {other:?}"),
        }
        assert_eq!(snapshot(&log), before, "{what}");
    }
    // Ordering rules, for replicated entries.
    let next = log.end();
    let backwards = stamped_batch_at(next.offset.get() - 1, 3, 50, T);
    assert!(matches!(
        log.append_entry(&backwards, Term(2), next.raft_index),
        Err(LogError::OffsetOutOfOrder { .. })
    ));
    let ahead = stamped_batch_at(next.offset.get() + 1, 3, 50, T);
    assert!(matches!(
        log.append_entry(&ahead, Term(2), next.raft_index),
        Err(LogError::OffsetOutOfOrder { .. })
    ));
    let right = stamped_batch_at(next.offset.get(), 3, 50, T);
    assert!(matches!(
        log.append_entry(&right, Term(2), next.raft_index.next()),
        Err(LogError::RaftIndexOutOfOrder { .. })
    ));
    assert!(matches!(
        log.append_entry(&right, Term(1), next.raft_index),
        Err(LogError::TermRegressed { .. })
    ));
    assert!(matches!(
        log.append(&right, Term(1)),
        Err(LogError::TermRegressed { .. })
    ));
    assert_eq!(snapshot(&log), before);
    drop(log);
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(snapshot(&log), before);
    // And the right entry still goes in where it should.
    let a = log.append_entry(&right, Term(3), next.raft_index).unwrap();
    assert_eq!(
        (a.base_offset, a.raft_index, a.term),
        (next.offset, next.raft_index, Term(3))
    );
}

#[derive(Debug, Clone)]
struct Rec {
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
    timestamp_ms: i64,
}

fn rec() -> impl Strategy<Value = Rec> {
    let bytes = || prop::option::of(prop::collection::vec(any::<u8>(), 0..300));
    (
        bytes(),
        bytes(),
        prop::collection::vec(
            (
                "[a-z]{0,8}",
                prop::option::of(prop::collection::vec(any::<u8>(), 0..20)),
            ),
            0..3,
        ),
        T - 1_000_000..T + 1_000_000,
    )
        .prop_map(|(key, value, headers, timestamp_ms)| Rec {
            key,
            value,
            headers,
            timestamp_ms,
        })
}

fn encode(recs: &[Rec]) -> Vec<u8> {
    let mut b = BatchBuilder::new(MAX);
    for r in recs {
        let headers: Vec<(&str, Option<&[u8]>)> = r
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_deref()))
            .collect();
        assert!(
            b.push(&NewRecord {
                key: r.key.as_deref(),
                value: r.value.as_deref(),
                headers: &headers,
                timestamp_ms: r.timestamp_ms,
            })
            .unwrap()
        );
    }
    b.finish().unwrap()
}

proptest! {
    #[test]
    fn any_batch_round_trips(recs in prop::collection::vec(rec(), 1..50), base in 0u64..1 << 60) {
        let mut bytes = encode(&recs);
        batch::stamp(&mut bytes, Offset(base), Term(3), RaftIndex(4));
        let h = batch::validate(&bytes, MAX).unwrap();
        prop_assert_eq!(h.record_count as usize, recs.len());
        prop_assert_eq!(h.max_timestamp_ms, recs.iter().map(|r| r.timestamp_ms).max().unwrap());
        let rb = RecordBatch::new(Bytes::from(bytes), MAX).unwrap();
        rb.verify_crc().unwrap();
        let got: Vec<_> = rb.records().map(|r| r.unwrap()).collect();
        prop_assert_eq!(got.len(), recs.len());
        for (i, (g, r)) in got.iter().zip(&recs).enumerate() {
            prop_assert_eq!(g.offset, Offset(base + i as u64));
            prop_assert_eq!(g.timestamp_ms, r.timestamp_ms);
            prop_assert_eq!(g.key.as_deref(), r.key.as_deref());
            prop_assert_eq!(g.value.as_deref(), r.value.as_deref());
            prop_assert_eq!(g.headers.len(), r.headers.len());
            for (gh, (k, v)) in g.headers.iter().zip(&r.headers) {
                prop_assert_eq!(&gh.key[..], k.as_bytes());
                prop_assert_eq!(gh.value.as_deref(), v.as_deref());
            }
        }
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        decode_everything(&bytes);
    }

    #[test]
    fn a_damaged_batch_is_refused_or_still_verifies(
        recs in prop::collection::vec(rec(), 1..8),
        at in any::<prop::sample::Index>(),
        xor in 1u8..,
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let good = encode(&recs);
        let mut bad = good.clone();
        if truncate {
            bad.truncate(cut.index(good.len()));
        } else {
            bad[at.index(good.len())] ^= xor;
        }
        decode_everything(&bad);
        if batch::validate(&bad, MAX).is_ok() {
            // Only the stamped fields, outside the CRC, may change unnoticed.
            let i = at.index(good.len());
            prop_assert!(!truncate && (4..28).contains(&i), "damage at {} accepted", i);
        }
    }
}

/// Runs every decoder over `bytes`; a batch that `validate` accepts must
/// also iterate cleanly with exactly `record_count` records.
fn decode_everything(bytes: &[u8]) {
    let _ = BatchHeader::decode(bytes);
    let valid = batch::validate(bytes, MAX);
    let shared = Bytes::copy_from_slice(bytes);
    for b in Batches::new(shared.clone(), MAX).flatten() {
        let _ = b.verify_crc();
        for r in b.records() {
            if r.is_err() {
                break;
            }
        }
    }
    if let Ok(rb) = RecordBatch::new(shared, MAX) {
        let n = rb.records().take_while(|r| r.is_ok()).count();
        if let Ok(h) = valid {
            assert_eq!(n, h.record_count as usize);
        }
    }
}
