//! The log's reading, rolling and retention behaviour, as a caller sees it.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::{batch_at, batches, check_all, small_config};
use rill_storage::batch::ValidBatch;
use rill_storage::{
    BatchError, Log, LogConfig, LogError, ManualClock, Offset, RaftIndex, Term, control_batch,
};

const VALUE: usize = 100;

fn append(log: &mut Log, records: u64, ts: i64) -> u64 {
    let next = log.next_offset().get();
    log.append(&batch_at(next, records, VALUE, ts), Term(1))
        .unwrap()
        .batch_bytes
}

#[test]
fn read_returns_whole_batches_within_max_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    let sizes: Vec<u64> = (0..10).map(|_| append(&mut log, 4, 0)).collect();
    let three: u64 = sizes[..3].iter().sum();
    let chunks = log.read(Offset(0), three + sizes[3] / 2).unwrap();
    let got = batches(&chunks);
    assert_eq!(got.len(), 3);
    assert_eq!(chunks.iter().map(|c| c.len() as u64).sum::<u64>(), three);
}

#[test]
fn read_returns_one_whole_batch_even_when_it_exceeds_max_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    let size = append(&mut log, 50, 0);
    append(&mut log, 50, 0);
    let got = batches(&log.read(Offset(0), 1).unwrap());
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].bytes().len() as u64, size);
}

#[test]
fn read_from_the_middle_of_a_batch_starts_with_that_batch() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    for _ in 0..5 {
        append(&mut log, 10, 0);
    }
    let got = batches(&log.read(Offset(27), 1).unwrap());
    assert_eq!(got[0].header().base_offset, Offset(20));
}

#[test]
fn read_below_a_limit_stops_before_the_batch_that_reaches_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    for _ in 0..5 {
        append(&mut log, 10, 0);
    }
    let got = batches(&log.read_below(Offset(0), u64::MAX, Offset(30)).unwrap());
    assert_eq!(got.last().unwrap().header().next_offset(), Offset(30));
    assert!(
        log.read_below(Offset(30), u64::MAX, Offset(30))
            .unwrap()
            .is_empty()
    );
}

#[test]
fn reads_outside_the_log_are_refused_and_at_the_end_are_empty() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    append(&mut log, 10, 0);
    assert!(log.read(Offset(10), 100).unwrap().is_empty());
    assert!(matches!(
        log.read(Offset(11), 100),
        Err(LogError::OffsetOutOfRange {
            requested: Offset(11),
            ..
        })
    ));
    assert!(matches!(
        log.read_entries(RaftIndex(0), RaftIndex(1), 100),
        Err(LogError::RaftIndexOutOfRange { .. })
    ));
    assert!(log.term_of(RaftIndex(2)).is_err());
}

#[test]
fn a_read_across_segments_is_one_slice_per_segment() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    while log.segment_count() < 3 {
        append(&mut log, 10, 0);
    }
    let chunks = log.read(Offset(0), u64::MAX).unwrap();
    assert_eq!(chunks.len(), 3);
    assert_eq!(check_all(&log, VALUE), log.next_offset().get());
}

#[test]
fn reads_are_zero_copy_slices_of_the_mapping() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    for _ in 0..3 {
        append(&mut log, 10, 0);
    }
    let a = log.read(Offset(0), u64::MAX).unwrap();
    let b = log.read(Offset(10), u64::MAX).unwrap();
    let first = batches(&a)[0].bytes().len();
    // The second read starts where the first batch ends, in the same memory.
    assert_eq!(a[0].as_ptr().wrapping_add(first), b[0].as_ptr());
}

#[test]
fn bytes_handed_out_never_change_even_after_truncation_and_new_appends() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    for _ in 0..10 {
        append(&mut log, 5, 0);
    }
    let held = log.read(Offset(0), u64::MAX).unwrap();
    let copy: Vec<Vec<u8>> = held.iter().map(|b| b.to_vec()).collect();
    log.truncate_suffix(RaftIndex(4)).unwrap();
    for _ in 0..10 {
        let next = log.next_offset().get();
        log.append(&batch_at(next, 5, VALUE + 7, 99), Term(2))
            .unwrap();
    }
    log.apply_retention().unwrap();
    assert_eq!(held.iter().map(|b| b.to_vec()).collect::<Vec<_>>(), copy);
}

#[test]
fn bytes_stay_readable_after_retention_unlinks_their_segment() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        retention_bytes: Some(1),
        ..small_config()
    };
    let mut log = Log::open(dir.path(), config).unwrap();
    while log.segment_count() < 3 {
        append(&mut log, 10, 0);
    }
    let held = log.read(Offset(0), 1).unwrap();
    let out = log.apply_retention().unwrap();
    assert_eq!(out.segments_deleted, 2);
    assert!(log.log_start_offset() > Offset(0));
    assert!(matches!(
        log.read(Offset(0), 1),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    common::check_records(&batches(&held), VALUE);
}

#[test]
fn control_batches_take_a_raft_index_but_no_offset() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    append(&mut log, 3, 0);
    let c = log.append(&control_batch(b"noop", 0), Term(2)).unwrap();
    assert_eq!(
        (c.base_offset, c.next_offset, c.raft_index),
        (Offset(3), Offset(3), RaftIndex(2))
    );
    let d = log.append(&batch_at(3, 2, VALUE, 0), Term(2)).unwrap();
    assert_eq!((d.base_offset, d.raft_index), (Offset(3), RaftIndex(3)));
    // By offset, the data batch holding offset 3 comes first.
    let got = batches(&log.read(Offset(3), 1).unwrap());
    assert_eq!(got[0].header().raft_index, RaftIndex(3));
    // By Raft index, the control batch is there with its payload.
    let e = log.read_entries(RaftIndex(2), RaftIndex(3), 1).unwrap();
    assert!(e[0].header().is_control());
    assert_eq!(&e[0].body()[..], b"noop");
    assert_eq!(check_all(&log, VALUE), 5);
}

#[test]
fn the_active_segment_rolls_by_age() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let config = LogConfig {
        segment_ms: Some(60_000),
        ..small_config()
    };
    let mut log = Log::open_with_clock(dir.path(), config, Arc::new(clock.clone())).unwrap();
    append(&mut log, 1, 0);
    clock.advance_ms(59_999);
    append(&mut log, 1, 0);
    assert_eq!(log.segment_count(), 1);
    clock.advance_ms(1);
    append(&mut log, 1, 0);
    assert_eq!(log.segment_bases().last().unwrap().0, Offset(2));
}

#[test]
fn the_active_segment_rolls_by_size() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    let mut written = 0;
    while log.segment_count() == 1 {
        written += append(&mut log, 10, 0);
    }
    assert!(
        written > 64 * 1024,
        "the first segment was filled to its size"
    );
    let bases = log.segment_bases();
    assert_eq!(bases[1].0, Offset(log.next_offset().get() - 10));
}

#[test]
fn retention_by_time_deletes_sealed_segments_whose_newest_record_is_too_old() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let config = LogConfig {
        retention_ms: Some(10_000),
        ..small_config()
    };
    let mut log = Log::open_with_clock(dir.path(), config, Arc::new(clock.clone())).unwrap();
    // Old records fill two segments; then new ones.
    while log.segment_count() < 3 {
        append(&mut log, 10, 900_000);
    }
    let old_end = log.segment_bases()[2].0;
    while log.segment_count() < 5 {
        append(&mut log, 10, 1_000_000);
    }
    let out = log.apply_retention().unwrap();
    assert_eq!(out.segments_deleted, 2);
    assert_eq!(log.log_start_offset(), old_end);
    assert_eq!(out.log_start_offset, old_end);
    // Nothing else is old enough yet; later, all but the active segment go.
    assert_eq!(log.apply_retention().unwrap().segments_deleted, 0);
    clock.advance_ms(20_000);
    log.apply_retention().unwrap();
    assert_eq!(log.segment_count(), 1);
    check_all(&log, VALUE);
}

#[test]
fn retention_by_bytes_keeps_the_log_under_the_limit_by_whole_segments() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        retention_bytes: Some(100 * 1024),
        ..small_config()
    };
    let mut log = Log::open(dir.path(), config).unwrap();
    while log.segment_count() < 6 {
        append(&mut log, 10, 0);
    }
    let before = log.size_bytes();
    let out = log.apply_retention().unwrap();
    assert!(out.segments_deleted >= 3);
    assert_eq!(log.size_bytes(), before - out.bytes_deleted);
    assert!(log.size_bytes() <= 100 * 1024 + 64 * 1024);
    check_all(&log, VALUE);
    drop(log);
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(
        log.log_start_offset(),
        out.log_start_offset,
        "the start survives a reopen"
    );
}

#[test]
fn bytes_held_past_a_truncation_cut_stay_readable_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    for _ in 0..40 {
        append(&mut log, 5, 0);
    }
    let held = log.read(Offset(0), u64::MAX).unwrap();
    let copy: Vec<Vec<u8>> = held.iter().map(|b| b.to_vec()).collect();
    log.truncate_suffix(RaftIndex(21)).unwrap();
    drop(log);
    // Reopening may trim files, but never under bytes a reader still holds.
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.next_raft_index(), RaftIndex(21));
    assert_eq!(held.iter().map(|b| b.to_vec()).collect::<Vec<_>>(), copy);
}

#[test]
fn a_batch_validated_elsewhere_is_appended_unchecked_but_never_above_the_logs_limit() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    let fits = batch_at(0, 4, VALUE, 0);
    let valid = ValidBatch::new(&fits, 1 << 20).unwrap();
    assert_eq!(
        log.append_valid(valid, Term(1)).unwrap().base_offset,
        Offset(0)
    );

    // Valid under a looser limit than the log's 16 KiB: still refused.
    let big = batch_at(4, 200, VALUE, 0);
    assert!(big.len() > 16 * 1024);
    let valid = ValidBatch::new(&big, 1 << 20).unwrap();
    assert!(matches!(
        log.append_valid(valid, Term(1)),
        Err(LogError::Batch(BatchError::TooLarge { .. }))
    ));
    assert_eq!(log.next_offset(), Offset(4), "the log is unchanged");
    assert_eq!(check_all(&log, VALUE), 4);
}

#[test]
fn expired_segments_leave_the_log_at_once_and_the_disk_when_unlinked() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        retention_bytes: Some(1),
        ..small_config()
    };
    let mut log = Log::open(dir.path(), config.clone()).unwrap();
    while log.segment_count() < 3 {
        append(&mut log, 10, 0);
    }
    let logs_on_disk = || {
        std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension() == Some("log".as_ref()))
            .count()
    };
    let (out, expired) = log.take_expired();
    assert_eq!(out.segments_deleted, 2);
    assert_eq!(log.segment_count(), 1);
    assert!(matches!(
        log.read(Offset(0), 1),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    assert_eq!(logs_on_disk(), 3, "nothing unlinked yet");
    expired.unlink().unwrap();
    assert_eq!(logs_on_disk(), 1);

    // Appends and a reopen see the log that is left.
    append(&mut log, 10, 0);
    let next = log.next_offset();
    drop(log);
    let log = Log::open(dir.path(), config).unwrap();
    assert_eq!(log.next_offset(), next);
    assert_eq!(log.log_start_offset(), out.log_start_offset);
}

#[test]
fn compressed_batches_are_stored_as_they_came_and_read_back_after_reopening() {
    use common::compressed_batch_at;
    use rill_storage::batch::{BatchHeader, Compression};

    let dir = tempfile::tempdir().unwrap();
    let codecs = [Compression::Lz4, Compression::Zstd, Compression::None];
    let mut sent = Vec::new();
    {
        let mut log = Log::open(dir.path(), small_config()).unwrap();
        for i in 0..30u64 {
            let next = log.next_offset().get();
            let codec = codecs[i as usize % codecs.len()];
            let bytes = compressed_batch_at(next, 20, VALUE, 1000 + next as i64, codec);
            assert_eq!(
                BatchHeader::decode(&bytes).unwrap().compression().unwrap(),
                codec,
                "the values compress"
            );
            log.append(&bytes, Term(1)).unwrap();
            sent.push(bytes);
        }
        assert_eq!(check_all(&log, VALUE), 600);
    }
    // Recovery reads the compressed batches back as they were written.
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(check_all(&log, VALUE), 600);
    let read = batches(&log.read(Offset(0), u64::MAX).unwrap());
    assert_eq!(read.len(), sent.len());
    for (b, sent) in read.iter().zip(&sent) {
        // Stored as they came: only the fields before the CRC are stamped.
        assert_eq!(b.bytes()[28..], sent[28..]);
    }
    // Time lookups look inside compressed batches too.
    for off in [0u64, 7, 19, 20, 333, 599] {
        assert_eq!(
            log.offset_for_timestamp(1000 + off as i64).unwrap(),
            Some(Offset(off))
        );
    }
    assert_eq!(log.offset_for_timestamp(1600).unwrap(), None);
}

#[test]
fn the_log_refuses_a_batch_that_decompresses_past_its_maximum() {
    use rill_storage::batch::Compression;
    use rill_storage::{BatchBuilder, NewRecord};

    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    // 64 KiB of zeros in a batch of a few hundred bytes, against 16 KiB.
    let mut b = BatchBuilder::new(1 << 20);
    b.compression(Compression::Zstd);
    assert!(b.push(&NewRecord::value(&[0; 64 << 10], 1)).unwrap());
    let bomb = b.finish().unwrap();
    assert!(bomb.len() < 1024);
    assert!(matches!(
        log.append(&bomb, Term(1)),
        Err(LogError::Batch(BatchError::DecompressedTooLarge { .. }))
    ));
    assert_eq!(log.next_offset(), Offset(0));
}
