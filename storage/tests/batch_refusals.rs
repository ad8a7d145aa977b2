//! Refusal of each kind of malformed record batch by `validate`, the one
//! gate, with its typed error: damage the CRC catches, lengths, sizes,
//! record counts, offsets, versions, reserved bits, codecs, and records
//! the walk refuses.
#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use common::batch_cases::*;
use proptest::prelude::*;
use rill_storage::batch::{self, ATTR_CONTROL, ATTR_TRANSACTIONAL, BatchHeader, HEADER_BYTES};
use rill_storage::{BatchError, Batches, RecordBatch, control_batch};

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
fn data_batch_with_zero_records_is_refused_as_sparse_offsets() {
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
fn every_compression_codec_but_none_lz4_and_zstd_is_refused_as_unsupported_compression() {
    for codec in UNSUPPORTED_CODECS {
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
