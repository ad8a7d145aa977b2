//! Storage micro-benchmarks, each beside the plain system call doing the same
//! work, measured in the same run:
//!
//! - append of batches of 1,000-byte records (16 KiB and 1 MiB batches),
//!   without a flush and with a flush after every batch, against `write(2)`
//!   of the same bytes (and `write(2)` + `fdatasync`);
//! - sequential read of a cached 64 MiB log that CRC-checks every batch,
//!   against `read(2)` of a 64 MiB file into a 1 MiB buffer;
//! - lookup of a random offset (sparse index, then a walk) and of a
//!   timestamp;
//! - a compaction pass over a cached 64 MiB log of 1,000-byte records
//!   under 10,000 keys (most records superseded), writing its new files,
//!   against the CRC-checked read of the same volume above.
//!
//! Everything lives in one temporary directory, so the log and the plain
//! files share a filesystem. Run with `cargo bench -p rill-storage --bench log`.
//! Appends keep disk use bounded: the log deletes old segments by size
//! (retention), and the plain file is truncated to zero at the same volume;
//! both costs fall inside the timed loop, once every 256 MiB.

// Benchmarks are not reachable by users: a failure here should stop the run.
#![allow(clippy::unwrap_used)]

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use divan::Bencher;
use divan::counter::BytesCount;
use rill_storage::{BatchBuilder, Log, LogConfig, NewRecord, Offset, Term, batches_of};

fn main() {
    divan::main();
}

const RECORD_BYTES: usize = 1000;
/// Bytes written before old data is dropped (the log's retention, the plain
/// file's truncation).
const WRITE_WINDOW_BYTES: u64 = 256 << 20;
const READ_LOG_BYTES: u64 = 64 << 20;

/// The log configuration: 128 MiB segments, keeping the write window.
fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 128 << 20,
        retention_bytes: Some(WRITE_WINDOW_BYTES),
        retention_ms: None,
        segment_ms: None,
        ..LogConfig::default()
    }
}

const FIRST_TIMESTAMP_MS: i64 = 1_700_000_000_000;

/// A batch of 1,000-byte records filling up to `batch_bytes`, timestamped
/// one millisecond apart from `first_timestamp_ms`.
fn batch_from(batch_bytes: usize, first_timestamp_ms: i64) -> Vec<u8> {
    let value = vec![b'x'; RECORD_BYTES];
    let mut b = BatchBuilder::with_capacity(batch_bytes, batch_bytes);
    let mut ts = first_timestamp_ms;
    while b.push(&NewRecord::value(&value, ts)).unwrap() {
        ts += 1;
    }
    b.finish().unwrap()
}

fn batch_of(batch_bytes: usize) -> Vec<u8> {
    batch_from(batch_bytes, FIRST_TIMESTAMP_MS)
}

fn append_bench(bencher: Bencher<'_, '_>, batch_bytes: usize, flush: bool) {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path().join("log"), config()).unwrap();
    let batch = batch_of(batch_bytes);
    let mut since_retention = 0u64;
    bencher
        .counter(BytesCount::new(batch.len()))
        .bench_local(|| {
            log.append(&batch, Term(1)).unwrap();
            if flush {
                log.flush().unwrap();
            }
            since_retention += batch.len() as u64;
            if since_retention >= WRITE_WINDOW_BYTES {
                log.apply_retention().unwrap();
                since_retention = 0;
            }
        });
}

fn write_bench(bencher: Bencher<'_, '_>, batch_bytes: usize, sync: bool) {
    let dir = tempfile::tempdir().unwrap();
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.path().join("plain"))
        .unwrap();
    let bytes = batch_of(batch_bytes);
    let mut written = 0u64;
    bencher
        .counter(BytesCount::new(bytes.len()))
        .bench_local(|| {
            file.write_all(&bytes).unwrap();
            if sync {
                file.sync_data().unwrap();
            }
            written += bytes.len() as u64;
            if written >= WRITE_WINDOW_BYTES {
                file.set_len(0).unwrap();
                written = 0;
            }
        });
}

const BATCH_SIZES: [usize; 2] = [16 << 10, 1 << 20];

// Appends run many iterations per sample so the file is grown many times
// inside the measurement, not just once at
// open: 16 KiB batches write 100 MiB per run, 1 MiB batches 6.4 GiB (with
// retention keeping 256 MiB).

/// `Log::append` without a flush.
#[divan::bench(args = BATCH_SIZES, sample_count = 100, sample_size = 64)]
fn append_unflushed(bencher: Bencher<'_, '_>, batch_bytes: usize) {
    append_bench(bencher, batch_bytes, false);
}

/// `write(2)` of the same bytes to a plain file.
#[divan::bench(args = BATCH_SIZES, sample_count = 100, sample_size = 64)]
fn write_plain(bencher: Bencher<'_, '_>, batch_bytes: usize) {
    write_bench(bencher, batch_bytes, false);
}

/// `Log::append` then `Log::flush` (fdatasync) per batch.
#[divan::bench(args = BATCH_SIZES, sample_count = 100, sample_size = 4)]
fn append_flushed(bencher: Bencher<'_, '_>, batch_bytes: usize) {
    append_bench(bencher, batch_bytes, true);
}

/// `write(2)` then `fdatasync(2)` per batch.
#[divan::bench(args = BATCH_SIZES, sample_count = 100, sample_size = 4)]
fn write_plain_fdatasync(bencher: Bencher<'_, '_>, batch_bytes: usize) {
    write_bench(bencher, batch_bytes, true);
}

/// A 64 MiB log of 16 KiB batches, flushed and cached; record `n` has
/// timestamp `FIRST_TIMESTAMP_MS + n`.
fn read_fixture(dir: &Path) -> Log {
    let mut log = Log::open(dir.join("log"), config()).unwrap();
    while log.size_bytes() < READ_LOG_BYTES {
        let batch = batch_from(
            16 << 10,
            FIRST_TIMESTAMP_MS + log.next_offset().get() as i64,
        );
        log.append(&batch, Term(1)).unwrap();
    }
    log.flush().unwrap();
    log
}

/// Reads the whole log from offset 0 in 1 MiB reads, checking every batch's CRC.
#[divan::bench(sample_count = 50)]
fn read_log_crc_checked(bencher: Bencher<'_, '_>) {
    let dir = tempfile::tempdir().unwrap();
    let log = read_fixture(dir.path());
    let total = log.size_bytes();
    bencher.counter(BytesCount::new(total)).bench_local(|| {
        let mut offset = Offset(0);
        let mut bytes = 0;
        while offset < log.next_offset() {
            let chunks = log.read(offset, 1 << 20).unwrap();
            for b in batches_of(&chunks, usize::MAX) {
                let b = b.unwrap();
                b.verify_crc().unwrap();
                bytes += b.bytes().len() as u64;
                offset = b.header().next_offset();
            }
        }
        assert_eq!(bytes, total);
    });
}

/// A 64 MiB log in 8 MiB segments of 16 KiB batches of 1,000-byte records,
/// each under one of 10,000 keys in turn, so a key has six or seven
/// versions and a compaction pass keeps about one record in seven.
fn keyed_fixture(dir: &Path) -> Log {
    let config = LogConfig {
        segment_bytes: 8 << 20,
        ..config()
    };
    let mut log = Log::open(dir, config).unwrap();
    let value = vec![b'x'; RECORD_BYTES];
    let mut n = 0u64;
    while log.size_bytes() < READ_LOG_BYTES {
        let mut b = BatchBuilder::with_capacity(16 << 10, 16 << 10);
        loop {
            let key = format!("key-{:05}", n % 10_000);
            let record = NewRecord {
                key: Some(key.as_bytes()),
                value: Some(&value),
                headers: &[],
                timestamp_ms: FIRST_TIMESTAMP_MS,
            };
            if !b.push(&record).unwrap() {
                break;
            }
            n += 1;
        }
        log.append(&b.finish().unwrap(), Term(1)).unwrap();
    }
    log.roll().unwrap();
    log.flush().unwrap();
    log
}

/// One compaction pass over [`keyed_fixture`]: every sealed segment read
/// twice (keys, then records) and written again; the files are dropped,
/// not installed, so each sample cleans the same log.
#[divan::bench(sample_count = 10)]
fn compaction_pass(bencher: Bencher<'_, '_>) {
    let dir = tempfile::tempdir().unwrap();
    let log = keyed_fixture(dir.path());
    let total = log.size_bytes();
    let reader = log.reader();
    let settings = rill_storage::CompactionSettings::default();
    bencher.counter(BytesCount::new(total)).bench_local(|| {
        let cleaned = reader
            .compact(
                log.next_offset(),
                log.config(),
                &settings,
                FIRST_TIMESTAMP_MS,
                &mut rill_storage::Unthrottled,
            )
            .unwrap()
            .unwrap();
        assert_eq!(cleaned.stats.bytes_before, total);
        assert!(cleaned.stats.bytes_after < total / 4);
        drop(divan::black_box(cleaned));
    });
}

/// `read(2)` of a 64 MiB cached file into a 1 MiB buffer, start to end.
#[divan::bench(sample_count = 50)]
fn read_plain(bencher: Bencher<'_, '_>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plain");
    let batch = batch_of(16 << 10);
    {
        let mut f = File::create(&path).unwrap();
        let mut written = 0;
        while written < READ_LOG_BYTES {
            f.write_all(&batch).unwrap();
            written += batch.len() as u64;
        }
        f.sync_data().unwrap();
    }
    let mut file = File::open(&path).unwrap();
    let total = file.metadata().unwrap().len();
    let mut buf = vec![0u8; 1 << 20];
    bencher.counter(BytesCount::new(total)).bench_local(|| {
        file.seek(SeekFrom::Start(0)).unwrap();
        let mut read = 0;
        loop {
            let n = file.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            read += n as u64;
        }
        assert_eq!(read, total);
        divan::black_box(&buf);
    });
}

/// A deterministic xorshift, so every run looks up the same offsets.
fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// Finds the batch holding a random offset (index lookup plus walk) and
/// returns it as a zero-copy slice.
#[divan::bench(sample_count = 100, sample_size = 100)]
fn lookup_offset(bencher: Bencher<'_, '_>) {
    let dir = tempfile::tempdir().unwrap();
    let log = read_fixture(dir.path());
    let end = log.next_offset().get();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    bencher.bench_local(|| {
        let offset = Offset(xorshift(&mut rng) % end);
        divan::black_box(log.read(offset, 1).unwrap());
    });
}

/// Finds the first offset at or after a random timestamp.
#[divan::bench(sample_count = 100, sample_size = 100)]
fn lookup_timestamp(bencher: Bencher<'_, '_>) {
    let dir = tempfile::tempdir().unwrap();
    let log = read_fixture(dir.path());
    let end = log.next_offset().get() as i64;
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    bencher.bench_local(|| {
        let ts = FIRST_TIMESTAMP_MS + (xorshift(&mut rng) % end as u64) as i64;
        divan::black_box(log.offset_for_timestamp(ts).unwrap());
    });
}
