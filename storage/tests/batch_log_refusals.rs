//! A log that a refused batch or an out-of-order entry leaves exactly as it
//! was, across a reopen too.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::batch_cases::*;
use common::{batch_at, small_config, stamped_batch_at};
use rill_storage::batch::{self, HEADER_BYTES};
use rill_storage::{Log, LogError, LogPosition, Offset, RaftIndex, Term, control_batch};

/// Everything a reader can observe of a log.
#[derive(Debug, PartialEq, Eq)]
struct Observed {
    end: LogPosition,
    last_term: Term,
    size_bytes: u64,
    segments: Vec<(Offset, RaftIndex)>,
    bytes: Vec<u8>,
}

fn observe(log: &Log) -> Observed {
    let bytes = log
        .read(log.log_start_offset(), u64::MAX)
        .unwrap()
        .iter()
        .flat_map(|chunk| chunk.iter().copied())
        .collect();
    Observed {
        end: log.end(),
        last_term: log.last_term(),
        size_bytes: log.size_bytes(),
        segments: log.segment_bases(),
        bytes,
    }
}

/// The end of the log [`log_with_history`] writes.
const HISTORY_END: LogPosition = LogPosition {
    offset: Offset(9),
    raft_index: RaftIndex(5),
};
const HISTORY_TERM: Term = Term(5);

/// A log in `dir` holding data batches and a control batch, written in
/// terms 1, 2 and 5: offsets 0..9, Raft indexes 1..5.
fn log_with_history(dir: &Path) -> Log {
    assert_eq!(small_config().max_batch_bytes, MAX);
    let mut log = Log::open(dir, small_config()).unwrap();
    log.append(&batch_at(0, 3, 20, T), Term(1)).unwrap();
    log.append(&control_batch(b"", T + 1), Term(2)).unwrap();
    log.append(&batch_at(3, 2, 20, T + 2), Term(2)).unwrap();
    log.append(&batch_at(5, 4, 20, T + 3), HISTORY_TERM)
        .unwrap();
    assert_eq!(log.end(), HISTORY_END);
    assert_eq!(log.last_term(), HISTORY_TERM);
    log
}

/// Checks the log is as `before`, then reopens it and checks again.
fn assert_unchanged_across_a_reopen(log: Log, dir: &Path, before: &Observed) -> Log {
    assert_eq!(&observe(&log), before, "after the refusals");
    drop(log);
    let log = Log::open(dir, small_config()).unwrap();
    assert_eq!(&observe(&log), before, "after a reopen");
    log
}

/// Checks that the entry that should come next still goes in where it
/// should, with the term it is given.
fn assert_next_entry_is_accepted(log: &mut Log) {
    let next = stamped_batch_at(HISTORY_END.offset.get(), 2, 20, T + 4);
    let appended = log
        .append_entry(&next, HISTORY_TERM, HISTORY_END.raft_index)
        .unwrap();
    assert_eq!(appended.base_offset, HISTORY_END.offset);
    assert_eq!(appended.raft_index, HISTORY_END.raft_index);
    assert_eq!(appended.term, HISTORY_TERM);
    assert_eq!(log.next_offset(), Offset(HISTORY_END.offset.get() + 2));
    assert_eq!(log.next_raft_index(), HISTORY_END.raft_index.next());
}

#[test]
fn every_refused_batch_leaves_the_log_unchanged_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = log_with_history(dir.path());
    let before = observe(&log);
    for r in all_refusals() {
        match log.append(&r.bytes, HISTORY_TERM) {
            Err(LogError::Batch(e)) => assert_eq!(e, r.error, "append: {}", r.what),
            other => panic!("append {}: expected {:?}, got {other:?}", r.what, r.error),
        }
        assert_eq!(observe(&log), before, "after append of {}", r.what);
        let mut entry = r.bytes.clone();
        if entry.len() >= HEADER_BYTES {
            batch::stamp(
                &mut entry,
                HISTORY_END.offset,
                Term(0),
                HISTORY_END.raft_index,
            );
        }
        match log.append_entry(&entry, HISTORY_TERM, HISTORY_END.raft_index) {
            Err(LogError::Batch(e)) => assert_eq!(e, r.error, "append_entry: {}", r.what),
            other => panic!(
                "append_entry {}: expected {:?}, got {other:?}",
                r.what, r.error
            ),
        }
        assert_eq!(observe(&log), before, "after append_entry of {}", r.what);
    }
    let mut log = assert_unchanged_across_a_reopen(log, dir.path(), &before);
    assert_next_entry_is_accepted(&mut log);
}

#[test]
fn replicated_entry_whose_base_offset_goes_backwards_is_refused_as_offset_out_of_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = log_with_history(dir.path());
    let before = observe(&log);
    for got in [HISTORY_END.offset.get() - 1, 0] {
        let entry = stamped_batch_at(got, 2, 20, T + 4);
        match log.append_entry(&entry, HISTORY_TERM, HISTORY_END.raft_index) {
            Err(LogError::OffsetOutOfOrder { expected, got: g }) => {
                assert_eq!((expected, g), (HISTORY_END.offset, Offset(got)));
            }
            other => panic!("base offset {got}: got {other:?}"),
        }
        assert_eq!(observe(&log), before);
    }
    let mut log = assert_unchanged_across_a_reopen(log, dir.path(), &before);
    assert_next_entry_is_accepted(&mut log);
}

#[test]
fn replicated_entry_whose_base_offset_skips_ahead_is_refused_as_offset_out_of_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = log_with_history(dir.path());
    let before = observe(&log);
    for got in [HISTORY_END.offset.get() + 1, u64::MAX - 2] {
        let entry = stamped_batch_at(got, 2, 20, T + 4);
        match log.append_entry(&entry, HISTORY_TERM, HISTORY_END.raft_index) {
            Err(LogError::OffsetOutOfOrder { expected, got: g }) => {
                assert_eq!((expected, g), (HISTORY_END.offset, Offset(got)));
            }
            other => panic!("base offset {got}: got {other:?}"),
        }
        assert_eq!(observe(&log), before);
    }
    // A control batch takes no offset but still must sit at the log end.
    let mut control = control_batch(b"", T + 4);
    batch::stamp(
        &mut control,
        Offset(HISTORY_END.offset.get() + 1),
        Term(0),
        RaftIndex(0),
    );
    assert!(matches!(
        log.append_entry(&control, HISTORY_TERM, HISTORY_END.raft_index),
        Err(LogError::OffsetOutOfOrder { .. })
    ));
    let mut log = assert_unchanged_across_a_reopen(log, dir.path(), &before);
    assert_next_entry_is_accepted(&mut log);
}

#[test]
fn replicated_entry_with_a_raft_index_other_than_the_next_is_refused_as_raft_index_out_of_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = log_with_history(dir.path());
    let before = observe(&log);
    let entry = stamped_batch_at(HISTORY_END.offset.get(), 2, 20, T + 4);
    let next = HISTORY_END.raft_index.get();
    for got in [next - 1, 1, next + 1, u64::MAX] {
        match log.append_entry(&entry, HISTORY_TERM, RaftIndex(got)) {
            Err(LogError::RaftIndexOutOfOrder { expected, got: g }) => {
                assert_eq!((expected, g), (HISTORY_END.raft_index, RaftIndex(got)));
            }
            other => panic!("raft index {got}: got {other:?}"),
        }
        assert_eq!(observe(&log), before);
    }
    let mut log = assert_unchanged_across_a_reopen(log, dir.path(), &before);
    assert_next_entry_is_accepted(&mut log);
}

#[test]
fn append_with_a_term_below_the_last_is_refused_as_term_regressed() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = log_with_history(dir.path());
    let before = observe(&log);
    let entry = stamped_batch_at(HISTORY_END.offset.get(), 2, 20, T + 4);
    for got in [Term(HISTORY_TERM.get() - 1), Term(0)] {
        match log.append(&entry, got) {
            Err(LogError::TermRegressed { last, got: g }) => {
                assert_eq!((last, g), (HISTORY_TERM, got));
            }
            other => panic!("append in term {got}: got {other:?}"),
        }
        assert_eq!(observe(&log), before);
        match log.append_entry(&entry, got, HISTORY_END.raft_index) {
            Err(LogError::TermRegressed { last, got: g }) => {
                assert_eq!((last, g), (HISTORY_TERM, got));
            }
            other => panic!("append_entry in term {got}: got {other:?}"),
        }
        assert_eq!(observe(&log), before);
    }
    let mut log = assert_unchanged_across_a_reopen(log, dir.path(), &before);
    // The last term survives the reopen: a lower term is still refused.
    assert!(matches!(
        log.append(&entry, Term(HISTORY_TERM.get() - 1)),
        Err(LogError::TermRegressed { .. })
    ));
    assert_next_entry_is_accepted(&mut log);
}
