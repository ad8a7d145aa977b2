//! Micro-benchmarks of the record batch codec, the hottest code on both
//! paths: building a batch (the producer), validating it (the broker, once
//! per produced batch), and decoding it record by record (the consumer).
//! Batches of 1,000-byte and 100-byte records, 256 KiB each (the producer's
//! default batch size). Counters are bytes of batch, so figures read as
//! GB/s. Run with `cargo bench -p rill-storage --bench batch`.

// Benchmarks are not reachable by users: a failure here should stop the run.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use divan::Bencher;
use divan::counter::{BytesCount, ItemsCount};
use rill_storage::batch::{Batches, validate};
use rill_storage::{BatchBuilder, MAX_BATCH_BYTES_DEFAULT, NewRecord};

fn main() {
    divan::main();
}

const BATCH_BYTES: usize = 256 * 1024;
const RECORD_SIZES: [usize; 2] = [100, 1000];

fn build(value: &[u8]) -> Vec<u8> {
    let mut b = BatchBuilder::with_capacity(MAX_BATCH_BYTES_DEFAULT, BATCH_BYTES);
    let mut ts = 1_700_000_000_000;
    while b.batch_bytes() < BATCH_BYTES {
        let r = NewRecord::value(value, ts);
        if !b.push(&r).unwrap() {
            break;
        }
        ts += 1;
    }
    b.finish().unwrap()
}

#[divan::bench(args = RECORD_SIZES)]
fn encode(bencher: Bencher<'_, '_>, record_bytes: usize) {
    let value = vec![b'v'; record_bytes];
    let len = build(&value).len();
    bencher
        .counter(BytesCount::new(len))
        .bench(|| build(divan::black_box(&value)));
}

#[divan::bench(args = RECORD_SIZES)]
fn validate_crc_and_records(bencher: Bencher<'_, '_>, record_bytes: usize) {
    let batch = build(&vec![b'v'; record_bytes]);
    bencher
        .counter(BytesCount::new(batch.len()))
        .bench(|| validate(divan::black_box(&batch), MAX_BATCH_BYTES_DEFAULT).unwrap());
}

#[divan::bench(args = RECORD_SIZES)]
fn decode_every_record(bencher: Bencher<'_, '_>, record_bytes: usize) {
    let batch = Bytes::from(build(&vec![b'v'; record_bytes]));
    let records = Batches::new(batch.clone(), MAX_BATCH_BYTES_DEFAULT)
        .next()
        .unwrap()
        .unwrap()
        .records()
        .count();
    bencher.counter(ItemsCount::new(records)).bench(|| {
        let mut value_bytes = 0;
        for b in Batches::new(divan::black_box(batch.clone()), MAX_BATCH_BYTES_DEFAULT) {
            for r in b.unwrap().records() {
                value_bytes += r.unwrap().value.map_or(0, |v| v.len());
            }
        }
        value_bytes
    });
}
