//! One batch as compaction sees it: its records' keys, and the batch
//! again with only the records kept.
//!
//! A rewritten batch keeps every header field but `length`,
//! `record_count`, the codec bits and the CRC: base offset, last offset
//! delta, Raft index and term, timestamps and producer fields stay, and
//! the kept records keep their bytes (and so their offset and timestamp
//! deltas). A compressed batch is compressed again with its own codec; a
//! batch left with no record is an empty uncompressed data batch (see
//! [`crate::batch`]).

use std::borrow::Cow;

use crate::batch::{
    self, ATTR_COMPRESSION_MASK, BatchHeader, Compression, HEADER_BYTES, LENGTH_FIELD_BYTES,
    compression, parse_record_frame,
};
use crate::error::BatchError;
use crate::types::Offset;

/// One record of a batch, as compaction decides on it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecordKey<'a> {
    /// The record's offset.
    pub(crate) offset: Offset,
    /// Its key, if any.
    pub(crate) key: Option<&'a [u8]>,
    /// Whether its value is null (a tombstone).
    pub(crate) tombstone: bool,
}

/// The records section of a data batch (decompressed when the batch is
/// compressed, within `max_batch_bytes`).
fn records_section<'a>(
    batch: &'a [u8],
    header: &BatchHeader,
    max_batch_bytes: usize,
) -> Result<Cow<'a, [u8]>, BatchError> {
    let body = &batch[HEADER_BYTES..];
    match header.compression()? {
        Compression::None => Ok(Cow::Borrowed(body)),
        codec => Ok(Cow::Owned(compression::decompress(
            codec,
            body,
            max_batch_bytes.saturating_sub(HEADER_BYTES),
        )?)),
    }
}

/// Calls `f` for every record of the data batch `batch` (one whole batch
/// whose CRC matched), with the bytes the record takes in its records
/// section.
fn walk(
    section: &[u8],
    header: &BatchHeader,
    mut f: impl FnMut(RecordKey<'_>, &[u8]),
) -> Result<(), BatchError> {
    let mut pos = 0;
    for i in 0..header.record_count {
        let frame = parse_record_frame(&section[pos..], i)?;
        let bytes = &section[pos..pos + frame.total_bytes];
        let offset_delta = u64::try_from(frame.offset_delta).expect("parsed as non-negative");
        if offset_delta > u64::from(header.last_offset_delta) {
            return Err(BatchError::CorruptRecord {
                record: i,
                reason: "offset delta past the batch's last offset",
            });
        }
        f(
            RecordKey {
                offset: Offset(header.base_offset.0 + offset_delta),
                key: frame.key.map(|(at, len)| &bytes[at..at + len]),
                tombstone: frame.value.is_none(),
            },
            bytes,
        );
        pos += frame.total_bytes;
    }
    if pos != section.len() {
        return Err(BatchError::CorruptRecord {
            record: header.record_count,
            reason: "bytes left after the last record",
        });
    }
    Ok(())
}

/// Calls `f` for every record of the data batch `batch`, in offset order.
pub(crate) fn for_each_record(
    batch: &[u8],
    header: &BatchHeader,
    max_batch_bytes: usize,
    mut f: impl FnMut(RecordKey<'_>),
) -> Result<(), BatchError> {
    let section = records_section(batch, header, max_batch_bytes)?;
    walk(&section, header, |r, _| f(r))
}

/// The data batch `batch` with only the records `keep` accepts: `None`
/// when it keeps them all (the batch stays as it is).
pub(crate) fn filter(
    batch: &[u8],
    header: &BatchHeader,
    max_batch_bytes: usize,
    mut keep: impl FnMut(RecordKey<'_>) -> bool,
) -> Result<Option<Vec<u8>>, BatchError> {
    let section = records_section(batch, header, max_batch_bytes)?;
    let mut kept = Vec::with_capacity(section.len());
    let mut kept_count = 0u32;
    walk(&section, header, |r, bytes| {
        if keep(r) {
            kept.extend_from_slice(bytes);
            kept_count += 1;
        }
    })?;
    if kept_count == header.record_count {
        return Ok(None);
    }
    let codec = if kept_count == 0 {
        Compression::None
    } else {
        header.compression()?
    };
    let mut out = Vec::with_capacity(HEADER_BYTES + kept.len());
    out.extend_from_slice(&batch[..HEADER_BYTES]);
    compression::compress_into(codec, &kept, &mut out)?;
    let length = u32::try_from(out.len() - LENGTH_FIELD_BYTES)
        .expect("a batch no larger than the one it was cut from");
    let mut rewritten = BatchHeader {
        length,
        record_count: kept_count,
        attributes: (header.attributes & !ATTR_COMPRESSION_MASK) | u16::from(codec.codec()),
        ..*header
    };
    rewritten.encode_into(&mut out);
    rewritten.crc = batch::compute_crc(&out);
    rewritten.encode_into(&mut out);
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::{BatchBuilder, NewRecord};

    /// A key and a value (`None`, a tombstone).
    type Kv<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

    fn built(records: &[Kv<'_>], codec: Compression) -> Vec<u8> {
        let mut b = BatchBuilder::new(1 << 20);
        b.compression(codec);
        for &(key, value) in records {
            b.push(&NewRecord {
                timestamp_ms: 1_000,
                key,
                value,
                headers: &[],
            })
            .unwrap();
        }
        let mut bytes = b.finish().unwrap();
        batch::stamp(&mut bytes, Offset(100), crate::Term(3), crate::RaftIndex(7));
        bytes
    }

    #[test]
    fn a_filtered_batch_keeps_its_offsets_and_the_kept_records_their_own() {
        for codec in Compression::ALL {
            // Values long and repetitive enough that the codec is used.
            let one = [b'1'; 300];
            let two = [b'2'; 300];
            let bytes = built(
                &[
                    (Some(b"a"), Some(&one)),
                    (Some(b"b"), Some(&two)),
                    (Some(b"a"), None),
                ],
                codec,
            );
            let header = batch::validate(&bytes, 1 << 20).unwrap();
            assert_eq!(header.compression().unwrap(), codec);
            let out = filter(&bytes, &header, 1 << 20, |r| r.offset != Offset(100))
                .unwrap()
                .expect("a record was removed");
            let rewritten = crate::RecordBatch::new(out.into(), 1 << 20).unwrap();
            rewritten.verify_crc().unwrap();
            let h = rewritten.header();
            assert_eq!(h.record_count, 2);
            assert_eq!(h.last_offset_delta, 2);
            assert_eq!(h.next_offset(), Offset(103));
            assert_eq!(h.raft_index, crate::RaftIndex(7));
            assert_eq!(h.compression().unwrap(), codec);
            let records: Vec<_> = rewritten.records().map(Result::unwrap).collect();
            assert_eq!(records[0].offset, Offset(101));
            assert_eq!(records[0].value.as_deref(), Some(&two[..]));
            assert_eq!(records[1].offset, Offset(102));
            assert_eq!(records[1].value, None);
        }
    }

    #[test]
    fn a_batch_left_without_records_is_an_empty_uncompressed_batch_taking_its_offsets() {
        let bytes = built(
            &[(Some(b"a"), Some(b"1")), (Some(b"a"), Some(b"2"))],
            Compression::Zstd,
        );
        let header = batch::validate(&bytes, 1 << 20).unwrap();
        let out = filter(&bytes, &header, 1 << 20, |_| false)
            .unwrap()
            .unwrap();
        assert_eq!(out.len(), HEADER_BYTES);
        let h = BatchHeader::decode(&out).unwrap();
        h.check(1 << 20).unwrap();
        assert_eq!(h.record_count, 0);
        assert_eq!(h.compression().unwrap(), Compression::None);
        assert_eq!(h.offset_span(), 2);
        assert_eq!(batch::compute_crc(&out), h.crc);
        // Not a batch a producer may send, but one a follower takes.
        assert!(batch::validate(&out, 1 << 20).is_err());
        assert!(batch::ValidBatch::replicated(&out, 1 << 20).is_ok());
    }

    #[test]
    fn a_batch_keeping_every_record_is_left_as_it_is() {
        let bytes = built(&[(Some(b"a"), Some(b"1"))], Compression::None);
        let header = batch::validate(&bytes, 1 << 20).unwrap();
        assert_eq!(filter(&bytes, &header, 1 << 20, |_| true).unwrap(), None);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]

        /// Whatever records are kept, the rewritten batch passes a
        /// reader's and a follower's checks, takes the same offsets, and
        /// holds exactly the kept records with their own offsets, keys and
        /// values.
        #[test]
        fn a_filtered_batch_holds_exactly_the_kept_records(
            records in proptest::collection::vec(
                (proptest::option::of(0u8..4), proptest::option::of(0usize..300), proptest::bool::ANY),
                1..40,
            ),
            codec in proptest::sample::select(Compression::ALL.to_vec()),
        ) {
            let keys: Vec<Option<Vec<u8>>> =
                records.iter().map(|(k, _, _)| k.map(|k| vec![b'k', k])).collect();
            let values: Vec<Option<Vec<u8>>> =
                records.iter().map(|(_, v, _)| v.map(|n| vec![b'v'; n])).collect();
            let kvs: Vec<Kv<'_>> = keys
                .iter()
                .zip(&values)
                .map(|(k, v)| (k.as_deref(), v.as_deref()))
                .collect();
            let bytes = built(&kvs, codec);
            let header = batch::validate(&bytes, 1 << 20).unwrap();
            let keep: Vec<bool> = records.iter().map(|(_, _, keep)| *keep).collect();
            let out = filter(&bytes, &header, 1 << 20, |r| keep[(r.offset.0 - 100) as usize]).unwrap();
            if keep.iter().all(|k| *k) {
                proptest::prop_assert!(out.is_none());
                return Ok(());
            }
            let out = out.unwrap();
            let valid = batch::ValidBatch::replicated(&out, 1 << 20).unwrap();
            proptest::prop_assert_eq!(valid.header().next_offset(), header.next_offset());
            proptest::prop_assert_eq!(valid.header().raft_index, header.raft_index);
            let rewritten = crate::RecordBatch::new(out.clone().into(), 1 << 20).unwrap();
            rewritten.verify_crc().unwrap();
            let got: Vec<_> = rewritten.records().map(Result::unwrap).collect();
            let want: Vec<usize> = (0..records.len()).filter(|&i| keep[i]).collect();
            proptest::prop_assert_eq!(got.len(), want.len());
            for (r, &i) in got.iter().zip(&want) {
                proptest::prop_assert_eq!(r.offset, Offset(100 + i as u64));
                proptest::prop_assert_eq!(r.key.as_deref(), keys[i].as_deref());
                proptest::prop_assert_eq!(r.value.as_deref(), values[i].as_deref());
            }
        }
    }
}
