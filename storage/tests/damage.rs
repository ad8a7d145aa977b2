//! A segment file damaged under an open log (cut short by `truncate`, as
//! an operator's mistake or a failing disk may) answers typed errors from
//! every read instead of raising SIGBUS in the process, and the segments it
//! does not touch stay readable.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{batch_at, batches, small_config};
use rill_storage::{Log, LogError, Offset, RaftIndex, Term};

const VALUE_BYTES: usize = 40;

fn fill(log: &mut Log, n: u64) {
    for _ in 0..n {
        let next = log.next_offset().get();
        log.append(&batch_at(next, 3, VALUE_BYTES, 1000 + next as i64), Term(1))
            .unwrap();
    }
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    v.sort();
    v
}

fn cut_to_nothing(path: &Path) {
    fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(0)
        .unwrap();
}

fn cut_to_half(path: &Path) {
    let f = fs::OpenOptions::new().write(true).open(path).unwrap();
    let len = f.metadata().unwrap().len();
    f.set_len(len / 2).unwrap();
}

fn assert_damaged<T: std::fmt::Debug>(r: Result<T, LogError>, file: &Path, what: &str) {
    match r {
        Err(LogError::Damaged { path, .. }) => assert_eq!(path, file, "{what}"),
        other => panic!(
            "{what}: expected damage in {}, got {other:?}",
            file.display()
        ),
    }
}

#[test]
fn a_sealed_segment_cut_short_under_an_open_log_answers_damaged_to_every_read() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    fill(&mut log, 800);
    log.flush().unwrap();
    let bases = log.segment_bases();
    assert!(bases.len() >= 3);
    let first = segment_files(dir.path())[0].clone();
    cut_to_half(&first);
    // In the first segment, at its start and past the cut.
    let last_of_first = bases[1].1.get() - 1;
    assert_damaged(log.read(Offset(0), 1 << 20), &first, "read from the start");
    assert_damaged(log.read(Offset(0), 1), &first, "read of the first batch");
    assert_damaged(
        log.read_entries(RaftIndex(last_of_first), RaftIndex(last_of_first + 1), 1),
        &first,
        "read of the last entry of the first segment",
    );
    assert_damaged(
        log.term_of(RaftIndex(last_of_first)),
        &first,
        "term of the last entry of the first segment",
    );
    let last_ts = 1000 + (bases[1].0.get() - 1) as i64;
    assert_damaged(
        log.offset_for_timestamp(last_ts),
        &first,
        "lookup of a time in the first segment",
    );
    // The segments after it are untouched and still served.
    let second = bases[1];
    let chunks = log.read(second.0, 1).unwrap();
    assert_eq!(batches(&chunks)[0].header().base_offset, second.0);
    let entries = log.read_entries(second.1, second.1.next(), 1).unwrap();
    assert_eq!(entries[0].header().raft_index, second.1);
    assert_eq!(log.term_of(second.1).unwrap(), Term(1));
}

#[test]
fn the_active_segment_cut_short_under_an_open_log_answers_damaged() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    fill(&mut log, 20);
    log.flush().unwrap();
    let active = segment_files(dir.path()).pop().unwrap();
    cut_to_nothing(&active);
    assert_damaged(log.read(Offset(0), 1 << 20), &active, "read");
    assert_damaged(
        log.read_entries(RaftIndex(5), RaftIndex(6), 1),
        &active,
        "entries",
    );
    assert_damaged(log.term_of(RaftIndex(19)), &active, "term");
    let e = log.read(Offset(30), 1).unwrap_err();
    assert!(e.is_damage(), "{e}");
}

#[test]
fn an_append_to_a_segment_cut_short_under_the_log_is_refused_as_damage() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    fill(&mut log, 20);
    log.flush().unwrap();
    assert!(log.verify_files().is_ok());
    let active = segment_files(dir.path()).pop().unwrap();
    fs::OpenOptions::new()
        .write(true)
        .open(&active)
        .unwrap()
        .set_len(log.size_bytes() / 2)
        .unwrap();
    let end = log.end();
    // Written past the cut, the batch would extend the file over a hole of
    // zeros that no length check could see any more.
    assert_damaged(
        log.append(&batch_at(end.offset.get(), 3, VALUE_BYTES, 9000), Term(1)),
        &active,
        "append",
    );
    assert_eq!(log.end(), end, "nothing was appended");
    assert_damaged(log.verify_files(), &active, "verify_files");
    // The last entry's term is known without reading the file.
    assert_eq!(log.term_of(RaftIndex(20)).unwrap(), Term(1));
}

#[test]
fn a_record_corrupted_under_the_log_is_damage_to_a_time_lookup() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    fill(&mut log, 20);
    log.flush().unwrap();
    let active = segment_files(dir.path()).pop().unwrap();
    let mut bytes = fs::read(&active).unwrap();
    // A byte of the first batch's records, past its header.
    bytes[100] ^= 0x5a;
    fs::write(&active, &bytes).unwrap();
    assert_damaged(log.offset_for_timestamp(1000), &active, "time lookup");
}

#[test]
fn small_entries_read_back_stay_readable_after_their_file_is_cut_to_nothing() {
    // Entries under ENTRY_COPY_BELOW_BYTES are copied by whoever sends or
    // decodes them: read back as bytes of the mapping, touching them after
    // the file was cut would raise SIGBUS and end this test's process.
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    fill(&mut log, 20);
    log.flush().unwrap();
    let entries = log
        .read_entries(RaftIndex(1), RaftIndex(21), u64::MAX)
        .unwrap();
    assert_eq!(entries.len(), 20);
    assert!(
        entries
            .iter()
            .all(|b| (b.bytes().len() as u64) < rill_storage::ENTRY_COPY_BELOW_BYTES),
        "the entries are small"
    );
    let expected: Vec<Vec<u8>> = entries.iter().map(|b| b.bytes().to_vec()).collect();
    let owned = log
        .read_entries_owned(RaftIndex(1), RaftIndex(21), u64::MAX)
        .unwrap();
    let active = segment_files(dir.path()).pop().unwrap();
    cut_to_nothing(&active);
    for (read, want) in entries.iter().chain(&owned).zip(expected.iter().cycle()) {
        assert_eq!(read.bytes().as_ref(), want.as_slice());
    }
}
