//! Reading a log from another thread while its writer appends, rolls,
//! truncates and applies retention: the reader ([`rill_storage::LogReader`])
//! never takes the writer's lock, and what it returns below a committed
//! bound is whole, CRC-valid, in offset order and never a truncated entry.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use common::{batch_at, batches, check_records, small_config};
use rill_storage::{Log, LogConfig, LogError, Offset, Term};

/// Values of committed records; entries later truncated carry values of
/// another length, so a reader that returned one fails its value check.
const VALUE: usize = 100;
const DOOMED_VALUE: usize = 37;

fn config() -> LogConfig {
    LogConfig {
        // Retention takes a segment whenever the log passes about four.
        retention_bytes: Some(4 * 64 * 1024),
        ..small_config()
    }
}

/// Reads everything below `committed` from `from`, checking each batch,
/// and returns where the next read starts.
fn read_checked(
    reader: &rill_storage::LogReader,
    from: u64,
    committed: u64,
    max_bytes: u64,
) -> u64 {
    let read = reader
        .read_below(Offset(from), max_bytes, Offset(committed))
        .unwrap();
    if from < read.log_start.get() {
        // Retention passed the reader by: it starts again at the log start,
        // a segment's first batch.
        return read.log_start.get();
    }
    assert!(
        read.log_end.get() >= committed,
        "the end never falls below a commit"
    );
    let found = batches(&read.batches);
    let offsets = check_records(&found, VALUE);
    let mut next = from;
    for b in &found {
        assert_eq!(
            b.header().base_offset.get(),
            next,
            "batches follow in offset order"
        );
        next = b.header().next_offset().get();
    }
    assert_eq!(offsets, (from..next).collect::<Vec<_>>());
    assert!(
        next <= committed,
        "nothing at or past the committed bound is returned"
    );
    next
}

#[test]
fn a_reader_sees_only_whole_committed_batches_while_the_writer_rolls_truncates_and_expires() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), config()).unwrap();
    let reader = log.reader();
    let committed = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let reads = {
        let (committed, done) = (Arc::clone(&committed), Arc::clone(&done));
        std::thread::spawn(move || {
            let mut next = 0;
            let mut reads = 0u64;
            let mut budgets = [1u64, 700, 5000, 64 * 1024, u64::MAX].into_iter().cycle();
            loop {
                let finished = done.load(Ordering::Acquire);
                // The bound is loaded before the read takes its view.
                let bound = committed.load(Ordering::Acquire);
                next = read_checked(&reader, next, bound, budgets.next().unwrap());
                reads += 1;
                if finished && next == bound {
                    return (next, reads);
                }
            }
        })
    };
    let mut rounds = 0u64;
    for round in 0..2000u64 {
        rounds = round;
        for n in 1..=(round % 5 + 1) {
            let next = log.next_offset().get();
            log.append(&batch_at(next, n, VALUE, 0), Term(1)).unwrap();
        }
        committed.store(log.next_offset().get(), Ordering::Release);
        if round % 3 == 0 {
            // Entries never committed, cut again (Raft conflict
            // resolution): the next appends take their offsets.
            let cut = log.next_raft_index();
            for _ in 0..(round % 4 + 1) {
                let next = log.next_offset().get();
                log.append(&batch_at(next, 3, DOOMED_VALUE, 0), Term(1))
                    .unwrap();
            }
            log.truncate_suffix(cut).unwrap();
        }
        if round % 50 == 0 {
            log.apply_retention().unwrap();
        }
        if round % 97 == 0 {
            log.roll().unwrap();
        }
    }
    done.store(true, Ordering::Release);
    let (end, reads) = reads.join().unwrap();
    assert_eq!(end, log.next_offset().get());
    assert!(
        log.log_start_offset().get() > 0,
        "retention took segments ({rounds} rounds)"
    );
    assert!(log.segment_count() > 1);
    assert!(reads > 0);
}

#[test]
fn a_reader_holding_segments_retention_took_still_reads_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), config()).unwrap();
    let reader = log.reader();
    while log.segment_count() < 8 {
        let next = log.next_offset().get();
        log.append(&batch_at(next, 10, VALUE, 0), Term(1)).unwrap();
    }
    let end = log.next_offset().get();
    let held = reader.read_below(Offset(0), u64::MAX, Offset(end)).unwrap();
    log.apply_retention().unwrap();
    assert!(log.log_start_offset().get() > 0);
    // The files are gone; the bytes read before are not.
    let offsets = check_records(&batches(&held.batches), VALUE);
    assert_eq!(offsets, (0..end).collect::<Vec<_>>());
    // A new read starts at the new log start.
    let now = reader.read_below(Offset(0), u64::MAX, Offset(end)).unwrap();
    assert_eq!(now.log_start, log.log_start_offset());
    assert!(now.batches.is_empty());
}

#[test]
fn a_reader_finds_a_segment_cut_short_under_the_log_damaged() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), config()).unwrap();
    let reader = log.reader();
    for _ in 0..5 {
        let next = log.next_offset().get();
        log.append(&batch_at(next, 10, VALUE, 0), Term(1)).unwrap();
    }
    let end = log.next_offset();
    let segment = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "log"))
        .unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap()
        .set_len(100)
        .unwrap();
    assert!(matches!(
        reader.read_below(Offset(0), u64::MAX, end),
        Err(LogError::Damaged { .. })
    ));
}
