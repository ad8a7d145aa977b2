//! What the replication layer asks of the log: appends at a given Raft
//! index, restarting at a snapshot point, where an entry lies in its
//! segment file (to send it from there), and the crash that forgets
//! unsynced bytes.
#![allow(clippy::unwrap_used)]

mod common;

use common::{batch_at, check_all, small_config};
use rill_storage::batch::ValidBatch;
use rill_storage::fault::forget_unsynced;
use rill_storage::{BatchError, Log, LogError, LogPosition, Offset, RaftIndex, Term};

const VALUE: usize = 100;

fn append(log: &mut Log, records: u64) {
    let next = log.next_offset().get();
    log.append(&batch_at(next, records, VALUE, 0), Term(1))
        .unwrap();
}

#[test]
fn append_at_index_assigns_the_log_offset_whatever_the_batch_carried() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    append(&mut log, 5);
    // A batch built for offset 0 still lands at the log end, offset 5.
    let batch = batch_at(0, 3, VALUE, 0);
    let err = log
        .append_valid_at(
            ValidBatch::new(&batch, 1 << 20).unwrap(),
            Term(2),
            RaftIndex(7),
        )
        .unwrap_err();
    assert!(matches!(err, LogError::RaftIndexOutOfOrder { .. }), "{err}");
    let a = log
        .append_valid_at(
            ValidBatch::new(&batch, 1 << 20).unwrap(),
            Term(2),
            RaftIndex(2),
        )
        .unwrap();
    assert_eq!((a.base_offset, a.next_offset), (Offset(5), Offset(8)));
    assert_eq!(log.term_of(RaftIndex(2)).unwrap(), Term(2));
}

#[test]
fn revalidated_batch_checks_its_length_but_not_its_crc() {
    let mut batch = batch_at(0, 2, VALUE, 0);
    let last = batch.len() - 1;
    batch[last] ^= 0xff;
    assert!(ValidBatch::new(&batch, 1 << 20).is_err());
    assert!(ValidBatch::revalidated_by_caller(&batch).is_ok());
    assert!(matches!(
        ValidBatch::revalidated_by_caller(&batch[..last]),
        Err(BatchError::LengthMismatch { .. })
    ));
}

#[test]
fn reset_to_restarts_the_log_at_a_snapshot_point_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    for _ in 0..200 {
        append(&mut log, 4);
    }
    assert!(log.segment_count() > 1);
    let held = log.read(Offset(0), 1).unwrap();
    let expired = log
        .reset_to(
            LogPosition {
                offset: Offset(5_000),
                raft_index: RaftIndex(900),
            },
            Term(3),
        )
        .unwrap();
    expired.unlink().unwrap();
    assert_eq!(log.log_start_offset(), Offset(5_000));
    assert_eq!(log.first_raft_index(), RaftIndex(900));
    assert_eq!(log.next_raft_index(), RaftIndex(900));
    // A reader's bytes from before the reset stay readable.
    assert_eq!(common::batches(&held).len(), 1);
    let next = log.next_offset().get();
    log.append(&batch_at(next, 4, VALUE, 0), Term(3)).unwrap();
    log.flush().unwrap();
    drop(log);
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.log_start_offset(), Offset(5_000));
    assert_eq!(log.first_raft_index(), RaftIndex(900));
    assert_eq!(log.next_offset(), Offset(5_004));
    assert_eq!(check_all(&log, VALUE), 4);
}

#[test]
fn reset_to_the_base_of_an_existing_segment_replaces_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    append(&mut log, 4);
    let start = LogPosition {
        offset: Offset(0),
        raft_index: RaftIndex(1),
    };
    log.reset_to(start, Term(0)).unwrap().unlink().unwrap();
    assert_eq!(log.end(), start);
    drop(log);
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.end(), start);
}

#[test]
fn forget_unsynced_keeps_exactly_the_durable_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    for _ in 0..50 {
        append(&mut log, 4);
    }
    log.flush().unwrap();
    let durable = log.durable();
    // Enough to roll into new segments that were never synced.
    for _ in 0..300 {
        append(&mut log, 4);
    }
    assert!(log.end() > durable);
    drop(log);
    forget_unsynced(dir.path(), durable, 0).unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.end(), durable);
    assert_eq!(check_all(&log, VALUE), durable.offset.get());
}

#[test]
fn forget_unsynced_may_keep_a_torn_part_of_the_next_batch() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    append(&mut log, 4);
    log.flush().unwrap();
    let durable = log.durable();
    append(&mut log, 4);
    drop(log);
    forget_unsynced(dir.path(), durable, 30).unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.end(), durable, "a torn batch never becomes visible");
}

#[test]
fn a_new_segment_reserves_disk_in_small_steps_that_double() {
    let dir = tempfile::tempdir().unwrap();
    let config = rill_storage::LogConfig {
        segment_bytes: 64 << 20,
        grow_step_bytes: 16 << 20,
        ..small_config()
    };
    let mut log = Log::open(dir.path(), config).unwrap();
    append(&mut log, 1);
    let file = || {
        std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "log"))
            .unwrap()
    };
    // Thousands of idle partitions must not each hold a full step.
    assert_eq!(std::fs::metadata(file()).unwrap().len(), 64 * 1024);
    while log.size_bytes() <= 64 * 1024 {
        append(&mut log, 4);
    }
    assert_eq!(std::fs::metadata(file()).unwrap().len(), 128 * 1024);
}

/// The bytes a span names, read from its file.
fn span_bytes(span: &rill_storage::FileSpan) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0; span.len as usize];
    span.file.read_exact_at(&mut buf, span.offset).unwrap();
    buf
}

#[test]
fn a_file_span_names_exactly_the_stored_entry_and_its_bytes_are_never_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    while log.segment_count() < 3 {
        append(&mut log, 20);
    }
    let next = log.next_raft_index();
    for i in 1..next.get() {
        let span = log.file_span(RaftIndex(i), Term(1)).unwrap();
        let stored = log
            .read_entries(RaftIndex(i), RaftIndex(i + 1), u64::MAX)
            .unwrap();
        assert_eq!(span_bytes(&span), stored[0].bytes().to_vec(), "entry {i}");
    }
    assert!(
        log.file_span(RaftIndex(1), Term(2)).is_none(),
        "another term"
    );
    assert!(log.file_span(next, Term(1)).is_none(), "past the end");
    assert!(
        log.file_span(RaftIndex(0), Term(1)).is_none(),
        "before the start"
    );

    // A truncation replaces the entries from the cut, in a new file: a span
    // taken before it still reads what it named.
    let cut = RaftIndex(next.get() - 2);
    let before = log.file_span(cut, Term(1)).unwrap();
    let bytes_before = span_bytes(&before);
    log.truncate_suffix(cut).unwrap();
    for _ in 0..3 {
        let at = log.next_offset().get();
        log.append(&batch_at(at, 20, VALUE, 7), Term(2)).unwrap();
    }
    assert_eq!(span_bytes(&before), bytes_before);
    assert!(log.file_span(cut, Term(1)).is_none());
    let after = log.file_span(cut, Term(2)).unwrap();
    assert_ne!(span_bytes(&after), bytes_before);
}
