//! Crash recovery: whatever state a crash leaves the files in, opening the
//! log restores the longest valid prefix and nothing else, and appends
//! continue from there.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{batch_at, batches, small_config};
use rill_storage::{Log, LogConfig, LogError, LogPosition, Offset, RaftIndex, Term};

const VALUE_BYTES: usize = 40;

/// Appends `n` batches of 3 records (offsets 3i..3i+3, timestamps 1000+3i..)
/// and returns the byte size of each batch.
fn fill(log: &mut Log, n: u64, term: Term) -> Vec<u64> {
    let mut sizes = Vec::new();
    for _ in 0..n {
        let next = log.next_offset().get();
        let a = log
            .append(&batch_at(next, 3, VALUE_BYTES, 1000 + next as i64), term)
            .unwrap();
        assert_eq!(a.base_offset, Offset(next));
        sizes.push(a.batch_bytes);
    }
    sizes
}

fn files_with_ext(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    v
}

fn copy_dir(from: &Path) -> tempfile::TempDir {
    let to = tempfile::tempdir().unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), to.path().join(e.file_name())).unwrap();
    }
    to
}

fn check_all(log: &Log) -> u64 {
    common::check_all(log, VALUE_BYTES)
}

/// After a reopen, one more append lands exactly at the log end and reads back.
fn check_append_continues(log: &mut Log) {
    let end = log.end();
    let a = log
        .append(&batch_at(end.offset.get(), 2, VALUE_BYTES, 5000), Term(9))
        .unwrap();
    assert_eq!((a.base_offset, a.raft_index), (end.offset, end.raft_index));
    check_all(log);
}

#[test]
fn last_batch_cut_at_every_byte_boundary_keeps_the_prefix_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    let sizes = fill(&mut log, 12, Term(1));
    log.close().unwrap();
    let seg = files_with_ext(dir.path(), "log").pop().unwrap();
    let full = fs::read(&seg).unwrap();
    let total: u64 = sizes.iter().sum();
    let last = *sizes.last().unwrap();
    let prefix = total - last;
    for cut in 0..last {
        let copy = copy_dir(dir.path());
        let path = copy.path().join(seg.file_name().unwrap());
        // The torn batch, then the zeros a grown file has past its writes.
        let mut bytes = full[..(prefix + cut) as usize].to_vec();
        bytes.resize(full.len(), 0);
        fs::write(&path, &bytes).unwrap();
        let mut log = Log::open(copy.path(), small_config()).unwrap();
        assert_eq!(log.next_offset(), Offset(3 * 11), "cut {cut}");
        assert_eq!(log.next_raft_index(), RaftIndex(12), "cut {cut}");
        assert_eq!(check_all(&log), 33);
        check_append_continues(&mut log);
    }
}

#[test]
fn flipped_byte_in_the_tail_ends_the_log_before_the_damaged_batch() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    let sizes = fill(&mut log, 10, Term(1));
    // The last three batches were never flushed: no index entry vouches for them.
    log.flush().unwrap();
    let more = fill(&mut log, 3, Term(1));
    drop(log);
    let seg = files_with_ext(dir.path(), "log").pop().unwrap();
    let full = fs::read(&seg).unwrap();
    let mut starts = vec![sizes.iter().sum::<u64>()];
    for s in &more {
        starts.push(starts.last().unwrap() + s);
    }
    for (k, &start) in starts[..3].iter().enumerate() {
        let len = more[k];
        // Every byte of the batch except the term (bytes 12..20), which the
        // CRC does not cover by design (it is stamped at append).
        for at in (0..len).filter(|at| !(12..20).contains(at)) {
            let copy = copy_dir(dir.path());
            let path = copy.path().join(seg.file_name().unwrap());
            let mut bytes = full.clone();
            bytes[(start + at) as usize] ^= 0x5a;
            fs::write(&path, &bytes).unwrap();
            let log = Log::open(copy.path(), small_config()).unwrap();
            let expected = 3 * (10 + k as u64);
            assert_eq!(log.next_offset(), Offset(expected), "batch {k} byte {at}");
            assert_eq!(check_all(&log), expected);
        }
    }
}

#[test]
fn grown_but_unwritten_zero_tail_is_not_data() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    let sizes = fill(&mut log, 5, Term(1));
    drop(log);
    let seg = files_with_ext(dir.path(), "log").pop().unwrap();
    let written: u64 = sizes.iter().sum();
    let file_bytes = fs::metadata(&seg).unwrap().len();
    assert!(
        file_bytes > written,
        "the file is grown ahead of the writer"
    );
    assert_eq!(file_bytes % 4096, 0, "in whole grow steps");
    assert!(
        fs::read(&seg).unwrap()[written as usize..]
            .iter()
            .all(|&b| b == 0)
    );
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.next_offset(), Offset(15));
    check_append_continues(&mut log);
}

#[test]
fn garbage_after_the_valid_end_is_removed_before_new_appends() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    let sizes = fill(&mut log, 6, Term(1));
    drop(log);
    let seg = files_with_ext(dir.path(), "log").pop().unwrap();
    let mut bytes = fs::read(&seg).unwrap();
    // Tear the last batch: its first half is lost, the rest is still there.
    let total: u64 = sizes.iter().sum();
    let last = *sizes.last().unwrap();
    let start = (total - last) as usize;
    bytes[start..start + 40].fill(0);
    fs::write(&seg, &bytes).unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.next_offset(), Offset(15));
    assert!(
        fs::read(&seg).unwrap()[start..].iter().all(|&b| b == 0),
        "the stale bytes past the end are gone"
    );
    check_append_continues(&mut log);
}

/// Builds a log with several segments and index entries, closes it cleanly,
/// and returns the directory and the bytes of every index file.
fn indexed_log() -> (tempfile::TempDir, Vec<(PathBuf, Vec<u8>)>) {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    fill(&mut log, 600, Term(1));
    assert!(log.segment_count() >= 3);
    log.close().unwrap();
    let mut idx = files_with_ext(dir.path(), "index");
    idx.extend(files_with_ext(dir.path(), "timeindex"));
    let saved = idx
        .into_iter()
        .map(|p| (p.clone(), fs::read(&p).unwrap()))
        .collect();
    (dir, saved)
}

/// Lookups by offset, Raft index and time agree with what was written.
fn check_lookups(log: &Log) {
    let end = log.next_offset().get();
    for off in (0..end).step_by(7) {
        let chunks = log.read(Offset(off), 1).unwrap();
        let b = &batches(&chunks)[0];
        let first = b.header().base_offset.get();
        assert!(
            first <= off && off < first + 3,
            "offset {off} found in batch at {first}"
        );
        // Batch i (Raft index i+1) holds offsets 3i..3i+3.
        assert_eq!(b.header().raft_index, RaftIndex(first / 3 + 1));
        let by_index = log
            .read_entries(RaftIndex(off / 3 + 1), RaftIndex(off / 3 + 2), 1)
            .unwrap();
        assert_eq!(by_index[0].header().base_offset, Offset(first));
        assert_eq!(log.term_of(RaftIndex(off / 3 + 1)).unwrap(), Term(1));
        // Record at offset o has timestamp 1000 + o.
        assert_eq!(
            log.offset_for_timestamp(1000 + off as i64).unwrap(),
            Some(Offset(off))
        );
    }
    assert_eq!(log.offset_for_timestamp(1000 + end as i64).unwrap(), None);
}

fn reopen_and_compare_indexes(dir: &Path, saved: &[(PathBuf, Vec<u8>)]) {
    let mut log = Log::open(dir, small_config()).unwrap();
    assert_eq!(log.next_offset(), Offset(1800));
    check_lookups(&log);
    check_all(&log);
    log.flush().unwrap();
    drop(log);
    for (p, bytes) in saved {
        assert_eq!(
            &fs::read(p).unwrap(),
            bytes,
            "{} rebuilt as it was",
            p.display()
        );
    }
}

#[test]
fn missing_index_files_are_rebuilt() {
    let (dir, saved) = indexed_log();
    for (p, _) in &saved {
        fs::remove_file(p).unwrap();
    }
    reopen_and_compare_indexes(dir.path(), &saved);
}

#[test]
fn truncated_index_files_are_rebuilt() {
    let (dir, saved) = indexed_log();
    for (i, (p, bytes)) in saved.iter().enumerate() {
        let keep = [0, 3, 16, bytes.len() / 2, bytes.len() - 1][i % 5];
        fs::write(p, &bytes[..keep.min(bytes.len())]).unwrap();
    }
    reopen_and_compare_indexes(dir.path(), &saved);
}

#[test]
fn index_files_with_wrong_entries_are_rebuilt() {
    let (dir, saved) = indexed_log();
    for (p, bytes) in &saved {
        // Shift every position by one and fix the header's CRC so only a
        // comparison with the segment can tell.
        let mut b = bytes.clone();
        let entry = if p.extension().unwrap() == "index" {
            12
        } else {
            16
        };
        for chunk in b[16..].chunks_exact_mut(entry) {
            let at = entry - 4;
            let pos = u32::from_le_bytes(chunk[at..].try_into().unwrap()) + 1;
            chunk[at..].copy_from_slice(&pos.to_le_bytes());
        }
        let crc = crc32fast::hash(&b[16..]);
        b[8..12].copy_from_slice(&crc.to_le_bytes());
        fs::write(p, &b).unwrap();
    }
    reopen_and_compare_indexes(dir.path(), &saved);
}

#[test]
fn index_files_with_garbage_are_rebuilt() {
    let (dir, saved) = indexed_log();
    for (i, (p, bytes)) in saved.iter().enumerate() {
        let mut b = bytes.clone();
        let at = (16 + (i * 37) % (b.len() - 16).max(1)).min(b.len() - 1);
        b[at] ^= 0xff;
        fs::write(p, &b).unwrap();
    }
    reopen_and_compare_indexes(dir.path(), &saved);
}

#[test]
fn truncation_then_appends_then_crash_recovers_the_new_suffix_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    fill(&mut log, 300, Term(1));
    assert!(
        log.segment_count() >= 2,
        "the cut falls in a sealed segment"
    );
    log.flush().unwrap();
    // Cut in the middle of the first segment: it is sealed there, later
    // segments are unlinked, appends continue in a new file.
    log.truncate_suffix(RaftIndex(51)).unwrap();
    assert_eq!(log.end().offset, Offset(150));
    assert_eq!(log.last_term(), Term(1));
    let new = fill(&mut log, 20, Term(2));
    assert_eq!(new.len(), 20);
    log.flush().unwrap();
    fill(&mut log, 5, Term(2));
    // Crash: no close.
    drop(log);
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.next_raft_index(), RaftIndex(76));
    assert_eq!(log.next_offset(), Offset(225));
    assert_eq!(log.term_of(RaftIndex(50)).unwrap(), Term(1));
    assert_eq!(log.term_of(RaftIndex(51)).unwrap(), Term(2));
    assert_eq!(log.last_term(), Term(2));
    assert_eq!(check_all(&log), 225);
    check_append_continues(&mut log);
}

#[test]
fn truncation_then_crash_before_any_append_ends_the_log_at_the_cut() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    fill(&mut log, 40, Term(1));
    log.flush().unwrap();
    log.truncate_suffix(RaftIndex(31)).unwrap();
    drop(log);
    // The old batches 31..40 are still in the sealed file, but the empty
    // segment starting at Raft index 31 bounds it.
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.next_raft_index(), RaftIndex(31));
    assert_eq!(check_all(&log), 90);
    check_append_continues(&mut log);
}

#[test]
fn truncation_of_whole_segments_unlinks_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    fill(&mut log, 800, Term(1));
    let bases = log.segment_bases();
    assert!(bases.len() >= 3);
    // Cut exactly at the start of the second segment.
    let cut = bases[1].1;
    log.truncate_suffix(cut).unwrap();
    assert_eq!(log.segment_bases(), vec![bases[0], bases[1]]);
    assert_eq!(files_with_ext(dir.path(), "log").len(), 2);
    drop(log);
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.next_raft_index(), cut);
    check_all(&log);
}

/// Bytes of every batch of a log of `n` batches that spans three or more
/// segments, closed cleanly, with the bases of its segments.
fn three_segments() -> (tempfile::TempDir, Vec<u64>, Vec<(Offset, RaftIndex)>) {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    let sizes = fill(&mut log, 800, Term(1));
    let bases = log.segment_bases();
    assert!(bases.len() >= 3);
    log.close().unwrap();
    (dir, sizes, bases)
}

/// Removes a segment's index files, so the next open scans it whole.
fn remove_indexes(log_file: &Path) {
    for ext in ["index", "timeindex"] {
        fs::remove_file(log_file.with_extension(ext)).unwrap();
    }
}

#[test]
fn a_bad_batch_in_the_middle_of_the_first_of_three_segments_fails_the_open_naming_file_and_offset()
{
    let (dir, sizes, bases) = three_segments();
    let first = files_with_ext(dir.path(), "log")[0].clone();
    // Batch 100 of the first segment (offsets 300..303): one byte of its
    // records flipped, as a disk fault would.
    let damaged = 100usize;
    assert!(
        (damaged as u64) < bases[1].1.get() - 1,
        "inside the first segment"
    );
    let position: u64 = sizes[..damaged].iter().sum();
    let mut bytes = fs::read(&first).unwrap();
    bytes[(position + sizes[damaged] / 2) as usize] ^= 0x5a;
    fs::write(&first, &bytes).unwrap();
    remove_indexes(&first);
    let segments_before = files_with_ext(dir.path(), "log");
    match Log::open(dir.path(), small_config()) {
        Err(LogError::Hole {
            path,
            position: at,
            offset,
            raft_index,
        }) => {
            assert_eq!(path, first);
            assert_eq!(at, position);
            assert_eq!(offset, Offset(3 * damaged as u64));
            assert_eq!(raft_index, RaftIndex(damaged as u64 + 1));
        }
        other => panic!("expected a hole in {}, got {other:?}", first.display()),
    }
    let e = Log::open(dir.path(), small_config()).unwrap_err();
    let message = e.to_string();
    assert!(
        message.contains(&first.display().to_string()) && message.contains("offset 300"),
        "the error names the file and the offset: {message}"
    );
    assert_eq!(
        files_with_ext(dir.path(), "log"),
        segments_before,
        "nothing after the hole is deleted"
    );
}

#[test]
fn a_hole_past_what_was_committed_is_cut_as_an_unsynced_tail() {
    // A machine crash right after a roll: the new segment's pages reached
    // the disk, the end of the sealed one's did not. Nothing there was
    // committed, so it is a torn tail, cut for Raft to send again; the same
    // hole at or below the commit index fails the open.
    let (dir, sizes, bases) = three_segments();
    let first = files_with_ext(dir.path(), "log")[0].clone();
    let damaged = 100usize;
    let position: u64 = sizes[..damaged].iter().sum();
    let mut bytes = fs::read(&first).unwrap();
    bytes[(position + sizes[damaged] / 2) as usize] ^= 0x5a;
    fs::write(&first, &bytes).unwrap();
    remove_indexes(&first);
    let clock: std::sync::Arc<dyn rill_storage::Clock> =
        std::sync::Arc::new(rill_storage::SystemClock);
    let hole = RaftIndex(damaged as u64 + 1);
    assert!(matches!(
        Log::open_committed_through(dir.path(), small_config(), clock.clone(), hole),
        Err(LogError::Hole { .. })
    ));
    let log =
        Log::open_committed_through(dir.path(), small_config(), clock, RaftIndex(hole.get() - 1))
            .unwrap();
    assert_eq!(log.next_raft_index(), hole, "cut at the first bad batch");
    assert!(bases.len() >= 3);
    assert_eq!(files_with_ext(dir.path(), "log"), vec![first]);
}

#[test]
fn a_sealed_segment_cut_short_before_later_segments_fails_the_open() {
    let (dir, sizes, bases) = three_segments();
    // Lose the tail of the first segment: the second no longer starts
    // where the first ends, and it holds batches.
    let first = &files_with_ext(dir.path(), "log")[0];
    let first_bytes: u64 = sizes[..(bases[1].1.get() - 1) as usize].iter().sum();
    fs::OpenOptions::new()
        .write(true)
        .open(first)
        .unwrap()
        .set_len(first_bytes - 10)
        .unwrap();
    let e = Log::open(dir.path(), small_config()).unwrap_err();
    assert!(
        matches!(&e, LogError::Hole { path, .. } if path == first),
        "{e:?}"
    );
    assert!(e.is_damage());
    assert_eq!(files_with_ext(dir.path(), "log").len(), bases.len());
}

#[test]
fn a_torn_sealed_segment_followed_only_by_empty_segments_is_cut_as_a_torn_tail() {
    // A machine crash just after a roll: the sealed segment lost its
    // unsynced tail and the new segment never got a byte to disk.
    let (dir, sizes, bases) = three_segments();
    let logs = files_with_ext(dir.path(), "log");
    let first_bytes: u64 = sizes[..(bases[1].1.get() - 1) as usize].iter().sum();
    fs::OpenOptions::new()
        .write(true)
        .open(&logs[0])
        .unwrap()
        .set_len(first_bytes - 10)
        .unwrap();
    for later in &logs[1..] {
        let len = fs::metadata(later).unwrap().len();
        fs::write(later, vec![0u8; len as usize]).unwrap();
        remove_indexes(later);
    }
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.segment_count(), 1);
    assert!(log.next_raft_index() < bases[1].1);
    check_all(&log);
    assert_eq!(files_with_ext(dir.path(), "log").len(), 1);
    check_append_continues(&mut log);
}

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _log = Log::open(dir.path(), LogConfig::default()).unwrap();
    assert!(Log::open(dir.path(), LogConfig::default()).is_err());
}

#[test]
fn segments_left_before_the_log_start_are_removed_not_taken_for_a_hole() {
    // Retention (or a snapshot install) took the first two segments and a
    // crash came before the first one's unlink reached the disk: it sits
    // before a gap, and every entry after the gap was committed.
    let (dir, _sizes, bases) = three_segments();
    let logs = files_with_ext(dir.path(), "log");
    let (first, second, third) = (logs[0].clone(), &logs[1], logs[2].clone());
    fs::remove_file(second).unwrap();
    remove_indexes(second);
    let committed = RaftIndex(u64::MAX);
    let clock: std::sync::Arc<dyn rill_storage::Clock> =
        std::sync::Arc::new(rill_storage::SystemClock);
    assert!(
        matches!(
            Log::open_committed_through(dir.path(), small_config(), clock.clone(), committed),
            Err(LogError::Hole { .. })
        ),
        "without the log start, the gap is a hole in committed entries"
    );
    let start = LogPosition {
        offset: bases[2].0,
        raft_index: bases[2].1,
    };
    let log = Log::open_from(dir.path(), small_config(), clock, start, committed).unwrap();
    assert_eq!(log.first_raft_index(), start.raft_index);
    assert_eq!(log.log_start_offset(), bases[2].0);
    assert_eq!(files_with_ext(dir.path(), "log"), vec![third]);
    assert!(!first.exists(), "the segment before the start is gone");
}

#[test]
fn segments_reaching_the_log_start_are_kept() {
    // The start falls inside the second segment: it and everything after
    // it are the log; only the first lies wholly before the start.
    let (dir, _sizes, bases) = three_segments();
    let clock: std::sync::Arc<dyn rill_storage::Clock> =
        std::sync::Arc::new(rill_storage::SystemClock);
    let start = LogPosition {
        offset: Offset(0),
        raft_index: RaftIndex(bases[1].1.get() + 1),
    };
    let log = Log::open_from(dir.path(), small_config(), clock, start, RaftIndex(0)).unwrap();
    assert_eq!(log.first_raft_index(), bases[1].1);
    assert_eq!(files_with_ext(dir.path(), "log").len(), 2);
}

#[test]
fn at_the_log_start_the_segment_of_another_history_goes_and_the_snapshots_stays() {
    // A reset to a snapshot point took out a segment of an older history
    // that began at the same Raft index at another offset, and a crash came
    // before its unlink: the segment that begins where the snapshot point
    // says stays, whichever of the two sorts first.
    let (dir, _sizes, bases) = three_segments();
    let logs = files_with_ext(dir.path(), "log");
    let (start_offset, start_index) = bases[2];
    let other = dir.path().join(format!(
        "{:020}-{:020}.log",
        start_offset.get() + 1,
        start_index.get()
    ));
    fs::copy(&logs[2], &other).unwrap();
    let clock: std::sync::Arc<dyn rill_storage::Clock> =
        std::sync::Arc::new(rill_storage::SystemClock);
    let start = LogPosition {
        offset: start_offset,
        raft_index: start_index,
    };
    let log = Log::open_from(
        dir.path(),
        small_config(),
        clock,
        start,
        RaftIndex(u64::MAX),
    )
    .unwrap();
    assert_eq!(log.log_start_offset(), start_offset);
    assert_eq!(files_with_ext(dir.path(), "log"), vec![logs[2].clone()]);
    assert!(!other.exists(), "the other history's segment is gone");
}
