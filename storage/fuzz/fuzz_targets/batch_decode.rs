//! Fuzzes every decoder of record batches with arbitrary bytes: header
//! decoding, full validation, the framing-and-CRC check, splitting a buffer into batches and iterating
//! records. None may panic, and a batch that validation accepts must iterate
//! cleanly with exactly its declared number of records. Each input is also
//! tried with its CRC recomputed, so the checks behind the CRC (lengths,
//! counts, the record walk) see mutated input too, and with its codec bits
//! set to lz4 and to zstd (CRC recomputed), so the decompressors and the
//! walk of decompressed records see every input as a compressed body.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use rill_storage::batch::{self, BatchHeader};
use rill_storage::{Batches, RecordBatch};

const MAX_BATCH_BYTES: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    decode_all(data);
    if data.len() >= batch::HEADER_BYTES {
        let mut fixed = data.to_vec();
        let crc = batch::compute_crc(&fixed);
        fixed[28..32].copy_from_slice(&crc.to_le_bytes());
        decode_all(&fixed);
        for codec in [3u16, 4] {
            let attributes = u16::from_le_bytes([fixed[34], fixed[35]]);
            let with_codec = (attributes & !batch::ATTR_COMPRESSION_MASK) | codec;
            fixed[34..36].copy_from_slice(&with_codec.to_le_bytes());
            let crc = batch::compute_crc(&fixed);
            fixed[28..32].copy_from_slice(&crc.to_le_bytes());
            decode_all(&fixed);
        }
    }
});

fn decode_all(data: &[u8]) {
    let _ = BatchHeader::decode(data);
    let validated = batch::validate(data, MAX_BATCH_BYTES);
    // A follower's check is validation less the record walk: it accepts
    // whatever full validation accepts, with the same header.
    let framed = batch::validate_without_records(data, MAX_BATCH_BYTES);
    if let Ok(h) = &validated {
        assert_eq!(framed.as_ref().ok(), Some(h), "full validation implies the framing check");
    }
    let shared = Bytes::copy_from_slice(data);
    for b in Batches::new(shared.clone(), MAX_BATCH_BYTES).flatten() {
        let _ = b.verify_crc();
        for r in b.records() {
            if r.is_err() {
                break;
            }
        }
    }
    if let Ok(rb) = RecordBatch::new(shared, MAX_BATCH_BYTES) {
        let records = rb.records().take_while(|r| r.is_ok()).count();
        if let Ok(h) = validated {
            assert_eq!(records, h.record_count as usize, "a valid batch iterates all its records");
            assert!(rb.verify_crc().is_ok(), "a valid batch's CRC verifies");
        }
    }
}
