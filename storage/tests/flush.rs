//! Durability is a step of its own: a flush syncs exactly the segment files
//! written since the last one, and the directory after a segment was created
//! or unlinked (a fresh log's first segment included: its directory is
//! synced with its first entries, not on open); the durable position only
//! moves when a sync completes.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;

use common::{batch_at, small_config};
use rill_storage::{Log, LogConfig, LogPosition, Offset, RaftIndex, Term};

fn planned(log: &Log) -> (Vec<PathBuf>, bool) {
    let plan = log.sync_plan();
    let files = plan
        .file_paths()
        .map(|p| p.file_name().unwrap().into())
        .collect();
    (files, plan.syncs_dir())
}

fn append(log: &mut Log, records: u64) {
    let next = log.next_offset().get();
    log.append(&batch_at(next, records, 100, 0), Term(1))
        .unwrap();
}

#[test]
fn a_fresh_log_syncs_its_directory_with_its_first_sync_not_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(
        log.durable(),
        log.end(),
        "an empty log is durable to its end"
    );
    assert_eq!(
        planned(&log),
        (vec![], true),
        "the new segment's directory entry waits for the first sync"
    );
    append(&mut log, 3);
    let first: PathBuf = "00000000000000000000-00000000000000000001.log".into();
    assert_eq!(
        planned(&log),
        (vec![first], true),
        "synced with the first entries"
    );
    log.flush().unwrap();
    assert!(log.sync_plan().is_empty());
}

#[test]
fn reopening_an_empty_log_still_leaves_its_directory_to_the_first_sync() {
    // Its segment may have been created by an open whose directory was
    // never synced: nothing on reopening vouches for the entry.
    let dir = tempfile::tempdir().unwrap();
    drop(Log::open(dir.path(), small_config()).unwrap());
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.segment_count(), 1);
    assert_eq!(planned(&log), (vec![], true));
}

#[test]
fn reopening_a_log_with_entries_makes_them_and_the_directory_durable() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    append(&mut log, 3);
    drop(log);
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.durable(), log.end());
    assert!(
        log.sync_plan().is_empty(),
        "the open's filesystem sync covered the files and the directory"
    );
}

#[test]
fn flush_syncs_exactly_the_files_written_since_the_last_flush() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    log.flush().unwrap();
    append(&mut log, 3);
    let first: PathBuf = "00000000000000000000-00000000000000000001.log".into();
    assert_eq!(planned(&log), (vec![first.clone()], false));
    assert_eq!(
        log.durable().offset,
        Offset(0),
        "appends alone are not durable"
    );
    assert_eq!(log.flush().unwrap(), log.end());
    assert!(log.sync_plan().is_empty());

    // Fill the first segment until the log rolls: the old segment's tail and
    // the new file are both written, and the directory gained an entry.
    let segments = log.segment_count();
    while log.segment_count() == segments {
        append(&mut log, 20);
    }
    let (files, dir_sync) = planned(&log);
    assert_eq!(files.len(), 2);
    assert_eq!(files[0], first);
    assert!(dir_sync);
    log.flush().unwrap();

    // Only the active segment now.
    append(&mut log, 1);
    let (files, dir_sync) = planned(&log);
    assert_eq!(files.len(), 1);
    assert_ne!(files[0], first);
    assert!(!dir_sync);
}

#[test]
fn unlinking_a_segment_makes_the_next_flush_sync_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        retention_bytes: Some(1),
        ..small_config()
    };
    let mut log = Log::open(dir.path(), config).unwrap();
    while log.segment_count() < 3 {
        append(&mut log, 20);
    }
    log.flush().unwrap();
    assert!(log.sync_plan().is_empty());
    let out = log.apply_retention().unwrap();
    assert_eq!(out.segments_deleted, 2);
    assert_eq!(planned(&log), (vec![], true));
}

#[test]
fn a_sync_planned_before_a_truncation_does_not_vouch_for_what_follows_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    for _ in 0..10 {
        append(&mut log, 2);
    }
    let plan = log.sync_plan();
    assert_eq!(plan.position().raft_index, RaftIndex(11));
    log.truncate_suffix(RaftIndex(6)).unwrap();
    append(&mut log, 2);
    let done = plan.run().unwrap();
    let durable = log.complete_sync(done).unwrap();
    assert!(
        durable
            <= LogPosition {
                offset: Offset(10),
                raft_index: RaftIndex(6)
            }
    );
    assert_eq!(log.flush().unwrap(), log.end());
}

#[test]
fn a_plan_runs_on_another_thread_while_the_log_keeps_appending() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    append(&mut log, 5);
    let plan = log.sync_plan();
    let position = plan.position();
    let handle = std::thread::spawn(move || plan.run());
    append(&mut log, 5);
    let durable = log.complete_sync(handle.join().unwrap().unwrap()).unwrap();
    assert_eq!(durable, position);
    assert!(durable < log.end());
    assert_eq!(
        planned(&log).0.len(),
        1,
        "the later append still needs its sync"
    );
}
