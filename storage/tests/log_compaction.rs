//! Log compaction: a pass keeps exactly the newest record of each key at
//! its own offset, removes tombstones only once the values they delete are
//! gone and their delay is over, never touches what is not sealed and
//! committed, and swaps its files in under readers that keep the bytes
//! they hold.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use bytes::Bytes;
use common::small_config;
use rill_storage::batch::{Compression, ValidBatch};
use rill_storage::{
    BatchBuilder, CompactionSettings, Log, NewRecord, Offset, RaftIndex, Term, Unthrottled,
    batches_of,
};

/// One record: key and value (`None`, a tombstone).
type Kv = (&'static str, Option<String>);

fn batch(records: &[Kv], codec: Compression) -> Vec<u8> {
    let mut b = BatchBuilder::new(16 * 1024);
    b.compression(codec);
    for (key, value) in records {
        assert!(
            b.push(&NewRecord {
                key: Some(key.as_bytes()),
                value: value.as_deref().map(str::as_bytes),
                headers: &[],
                timestamp_ms: 1_000,
            })
            .unwrap()
        );
    }
    b.finish().unwrap()
}

/// Every record of the log: offset → (key, value).
fn records(log: &Log) -> BTreeMap<u64, (String, Option<String>)> {
    let chunks = log.read(log.log_start_offset(), u64::MAX).unwrap();
    let mut out = BTreeMap::new();
    for b in batches_of(&chunks, 1 << 20) {
        let b = b.unwrap();
        b.verify_crc().unwrap();
        for r in b.records() {
            let r = r.unwrap();
            let key = String::from_utf8(r.key.unwrap().to_vec()).unwrap();
            let value = r.value.map(|v| String::from_utf8(v.to_vec()).unwrap());
            assert!(out.insert(r.offset.0, (key, value)).is_none());
        }
    }
    out
}

/// Writes `rounds` rounds of a value for each of `keys` keys, a batch per
/// round, rolling a segment every `per_segment` rounds.
fn write_rounds(log: &mut Log, keys: usize, rounds: usize, per_segment: usize, codec: Compression) {
    let names: Vec<&'static str> = (0..keys)
        .map(|k| &*Box::leak(format!("key-{k}").into_boxed_str()))
        .collect();
    for round in 0..rounds {
        let kvs: Vec<Kv> = names
            .iter()
            .map(|k| (*k, Some(format!("{k}@{round}"))))
            .collect();
        log.append(&batch(&kvs, codec), Term(1)).unwrap();
        if (round + 1) % per_segment == 0 {
            log.roll().unwrap();
        }
    }
}

fn compact(
    log: &mut Log,
    below: Offset,
    settings: &CompactionSettings,
) -> rill_storage::CompactionStats {
    let cleaned = log
        .reader()
        .compact(below, log.config(), settings, now_ms(), &mut Unthrottled)
        .unwrap()
        .expect("an unthrottled pass runs to the end");
    let stats = cleaned.stats;
    let outcome = log.install_cleaned(cleaned).unwrap();
    assert_eq!(outcome.stale, 0);
    if let Some(dir) = &outcome.dir_to_sync {
        rill_storage::sync_dir(dir).unwrap();
    }
    for merged in &outcome.merged_away {
        assert!(log.remove_merged_away(merged).unwrap());
        rill_storage::sync_dir(log.dir()).unwrap();
    }
    stats
}

/// [`compact`] over every sealed segment.
fn compact_all(log: &mut Log, settings: &CompactionSettings) -> rill_storage::CompactionStats {
    let end = log.next_offset();
    compact(log, end, settings)
}

/// A pass over every sealed segment of `log`, tombstones kept, not yet
/// installed.
fn pass_over_all(log: &Log) -> rill_storage::Cleaned {
    log.reader()
        .compact(
            log.next_offset(),
            log.config(),
            &keep_tombstones(),
            now_ms(),
            &mut Unthrottled,
        )
        .unwrap()
        .expect("an unthrottled pass runs to the end")
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn keep_tombstones() -> CompactionSettings {
    CompactionSettings {
        delete_retention_ms: 3_600_000,
        ..CompactionSettings::default()
    }
}

#[test]
fn a_pass_keeps_exactly_the_newest_value_of_each_key_at_its_offset() {
    for codec in Compression::ALL {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), small_config()).unwrap();
        write_rounds(&mut log, 10, 12, 3, codec);
        let before = records(&log);
        let end = log.next_offset();
        let stats = compact(&mut log, end, &keep_tombstones());
        // Four sealed segments of three rounds, merged into one file; the
        // active one is empty.
        assert_eq!(stats.segments_cleaned, 4, "{codec:?}");
        assert_eq!(stats.files_written, 1);
        assert_eq!(log.segment_count(), 2);
        assert_eq!(stats.keys, 10);
        assert_eq!(stats.records_removed, 110);
        assert!(stats.bytes_after < stats.bytes_before);
        let after = records(&log);
        assert_eq!(after.len(), 10);
        for (offset, (key, value)) in &after {
            assert_eq!(
                before[offset],
                (key.clone(), value.clone()),
                "same record, same offset"
            );
            assert!(value.as_ref().unwrap().ends_with("@11"), "{key}: {value:?}");
        }
        // Offsets, Raft indexes and the log end are where they were.
        assert_eq!(log.next_offset(), end);
        assert_eq!(log.next_raft_index(), RaftIndex(13));
        assert_eq!(log.term_of(RaftIndex(5)).unwrap(), Term(1));
        // And so after reopening, with the indexes rebuilt.
        drop(log);
        let log = Log::open(dir.path(), small_config()).unwrap();
        assert_eq!(records(&log), after);
        assert_eq!(log.next_offset(), end);
    }
}

#[test]
fn the_active_segment_and_what_lies_past_the_bound_are_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    write_rounds(&mut log, 4, 6, 3, Compression::None);
    // Written into the active segment: never cleaned.
    write_rounds(&mut log, 4, 2, 100, Compression::None);
    let bound = Offset(4 * 3);
    let stats = compact(&mut log, bound, &keep_tombstones());
    assert_eq!(
        stats.segments_cleaned, 1,
        "only the first segment lies below {bound}"
    );
    assert_eq!(stats.records_removed, 8);
    let after = records(&log);
    // The first segment keeps each key's round 2; nothing after it changed.
    assert_eq!(after.len(), 4 + 4 * 3 + 4 * 2);
    assert_eq!(after.range(..12).count(), 4);
    assert!(
        after
            .range(..12)
            .all(|(_, (_, v))| v.as_ref().unwrap().ends_with("@2"))
    );
}

#[test]
fn a_tombstone_outlives_the_values_it_deletes_by_one_pass_and_then_its_delay() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    write_rounds(&mut log, 3, 2, 100, Compression::None);
    log.append(&batch(&[("key-0", None)], Compression::Lz4), Term(1))
        .unwrap();
    log.roll().unwrap();
    let end = log.next_offset();

    // Within its delay the tombstone stays, whatever the pass.
    let kept = compact(&mut log, end, &keep_tombstones());
    assert_eq!(kept.tombstones_removed, 0);
    assert!(kept.tombstone_due_ms.is_some());
    let after = records(&log);
    assert_eq!(after.len(), 3, "{after:?}");
    assert_eq!(after[&6], ("key-0".to_string(), None));

    let now = CompactionSettings {
        delete_retention_ms: 0,
        ..CompactionSettings::default()
    };
    let second = compact(&mut log, end, &now);
    assert_eq!(second.tombstones_removed, 1);
    let after = records(&log);
    assert_eq!(after.keys().copied().collect::<Vec<_>>(), vec![4, 5]);
    // The tombstone's batch is still there, empty: its offset is taken.
    assert_eq!(log.next_offset(), end);
    assert_eq!(log.next_raft_index(), RaftIndex(4));
}

#[test]
fn a_tombstone_with_older_values_in_the_same_pass_stays_for_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    write_rounds(&mut log, 1, 2, 100, Compression::None);
    log.append(&batch(&[("key-0", None)], Compression::None), Term(1))
        .unwrap();
    log.roll().unwrap();
    let now = CompactionSettings {
        delete_retention_ms: 0,
        ..CompactionSettings::default()
    };
    let first = compact_all(&mut log, &now);
    assert_eq!((first.records_removed, first.tombstones_removed), (2, 0));
    assert_eq!(records(&log).len(), 1);
    let second = compact_all(&mut log, &now);
    assert_eq!(second.tombstones_removed, 1);
    assert!(records(&log).is_empty());
}

#[test]
fn a_reader_holding_bytes_of_a_replaced_segment_keeps_them_whole() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    write_rounds(&mut log, 5, 4, 4, Compression::Zstd);
    let reader = log.reader();
    let held: Vec<Bytes> = reader
        .read_below(Offset(0), u64::MAX, log.next_offset())
        .unwrap()
        .batches;
    let held_copy: Vec<Vec<u8>> = held.iter().map(|b| b.to_vec()).collect();
    let stats = compact_all(&mut log, &keep_tombstones());
    assert_eq!(stats.segments_rewritten, 1);
    assert_eq!(
        held.iter().map(|b| b.to_vec()).collect::<Vec<_>>(),
        held_copy
    );
    // A read now sees the new segment whole.
    let now = reader
        .read_below(Offset(0), u64::MAX, log.next_offset())
        .unwrap();
    let count: usize = batches_of(&now.batches, 1 << 20)
        .map(|b| b.unwrap().records().count())
        .sum();
    assert_eq!(count, 5);
}

#[test]
fn a_pass_over_segments_retention_took_since_installs_nothing_and_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = rill_storage::LogConfig {
        retention_bytes: Some(1),
        ..small_config()
    };
    let mut log = Log::open(dir.path(), config).unwrap();
    write_rounds(&mut log, 5, 4, 2, Compression::None);
    let cleaned = pass_over_all(&log);
    // Both sealed segments, merged into one file.
    assert_eq!(cleaned.stats.segments_rewritten, 2);
    // Retention takes the first one (the log is over its size without it).
    assert_eq!(log.apply_retention().unwrap().segments_deleted, 1);
    let before = records(&log);
    let outcome = log.install_cleaned(cleaned).unwrap();
    assert_eq!((outcome.installed, outcome.stale), (0, 1));
    assert_eq!(records(&log), before);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".cleaned"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_cleaned_file_never_installed_is_removed_when_the_log_opens() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    write_rounds(&mut log, 5, 4, 2, Compression::None);
    let before = records(&log);
    let cleaned = pass_over_all(&log);
    // As a SIGKILL would leave it: the file written, the log not told.
    std::mem::forget(cleaned);
    drop(log);
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(records(&log), before);
    assert!(std::fs::read_dir(dir.path()).unwrap().all(|e| {
        !e.unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".cleaned")
    }));
}

#[test]
fn a_stopped_pass_installs_nothing() {
    struct StopAfter(u64);
    impl rill_storage::IoBudget for StopAfter {
        fn spend(&mut self, bytes: u64) -> bool {
            self.0 = self.0.saturating_sub(bytes);
            self.0 > 0
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    write_rounds(&mut log, 5, 4, 2, Compression::None);
    let stopped = log
        .reader()
        .compact(
            log.next_offset(),
            log.config(),
            &keep_tombstones(),
            now_ms(),
            &mut StopAfter(500),
        )
        .unwrap();
    assert!(stopped.is_none());
}

#[test]
fn a_follower_appends_a_leaders_compacted_entries_at_the_same_offsets() {
    let leader_dir = tempfile::tempdir().unwrap();
    let mut leader = Log::open(leader_dir.path(), small_config()).unwrap();
    write_rounds(&mut leader, 6, 6, 3, Compression::Lz4);
    compact_all(&mut leader, &keep_tombstones());
    let follower_dir = tempfile::tempdir().unwrap();
    let mut follower = Log::open(follower_dir.path(), small_config()).unwrap();
    let entries = leader
        .read_entries(RaftIndex(1), leader.next_raft_index(), u64::MAX)
        .unwrap();
    for entry in entries {
        let valid = ValidBatch::replicated(entry.bytes(), 16 * 1024).unwrap();
        let index = valid.header().raft_index;
        follower
            .append_valid_at(valid, valid.header().raft_term, index)
            .unwrap();
    }
    assert_eq!(follower.next_offset(), leader.next_offset());
    assert_eq!(records(&follower), records(&leader));
}

#[test]
fn a_key_map_too_small_for_the_log_cleans_only_the_segments_it_covers() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    // Two rounds of keys a-* in the first segment, two of b-* in the next.
    for prefix in ["a", "b"] {
        for round in 0..2 {
            let kvs: Vec<Kv> = (0..10)
                .map(|k| {
                    let key: &'static str = Box::leak(format!("{prefix}-{k}").into_boxed_str());
                    (key, Some(format!("{key}@{round}")))
                })
                .collect();
            log.append(&batch(&kvs, Compression::None), Term(1))
                .unwrap();
        }
        log.roll().unwrap();
    }
    let before = records(&log);
    // Room for the first segment's ten keys, not the second's.
    let settings = CompactionSettings {
        key_map_bytes_max: 15 * 80,
        ..keep_tombstones()
    };
    let stats = compact_all(&mut log, &settings);
    assert_eq!((stats.segments_cleaned, stats.keys), (1, 10), "{stats:?}");
    let after = records(&log);
    assert_eq!(after.len(), 10 + 20);
    for (offset, kv) in &after {
        assert_eq!(&before[offset], kv);
    }
    // With room for every key, the next pass covers the rest.
    let stats = compact_all(&mut log, &keep_tombstones());
    assert_eq!(stats.segments_cleaned, 2);
    assert_eq!(records(&log).len(), 20);
}

#[test]
fn a_tombstone_not_yet_held_by_every_replica_stays_until_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    write_rounds(&mut log, 2, 1, 100, Compression::None);
    log.roll().unwrap();
    let tombstone = log
        .append(&batch(&[("key-0", None)], Compression::None), Term(1))
        .unwrap();
    log.roll().unwrap();
    // A replica holds the log only up to the tombstone's entry.
    let lagging = CompactionSettings {
        delete_retention_ms: 0,
        tombstones_below_raft_index: tombstone.raft_index,
        ..CompactionSettings::default()
    };
    for _ in 0..2 {
        let stats = compact_all(&mut log, &lagging);
        assert_eq!(stats.tombstones_removed, 0);
        assert_eq!(
            stats.tombstone_waits_for_raft_index,
            Some(tombstone.raft_index.next())
        );
        assert_eq!(stats.tombstone_due_ms, None);
    }
    assert_eq!(
        records(&log).get(&tombstone.base_offset.0),
        Some(&("key-0".to_string(), None))
    );
    let everywhere = CompactionSettings {
        tombstones_below_raft_index: tombstone.raft_index.next(),
        ..lagging
    };
    let stats = compact_all(&mut log, &everywhere);
    assert_eq!(stats.tombstones_removed, 1);
    assert_eq!(records(&log).len(), 1);
}

#[test]
fn merged_segments_leave_one_file_and_a_crash_before_the_old_ones_go_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    write_rounds(&mut log, 6, 8, 2, Compression::None);
    let end = log.next_offset();
    assert_eq!(log.segment_count(), 5);
    let cleaned = pass_over_all(&log);
    let outcome = log.install_cleaned(cleaned).unwrap();
    assert_eq!((outcome.installed, outcome.merged_away.len()), (1, 3));
    assert_eq!(log.segment_count(), 2);
    let compacted = records(&log);
    assert_eq!(compacted.len(), 6);
    rill_storage::sync_dir(dir.path()).unwrap();
    // Killed with the old segments still on disk, one of them removed.
    assert!(log.remove_merged_away(&outcome.merged_away[0]).unwrap());
    drop(log);
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.next_offset(), end);
    let reopened = records(&log);
    for (offset, kv) in &compacted {
        assert_eq!(
            reopened.get(offset),
            Some(kv),
            "every newest value at {offset}"
        );
    }
    // The merged file up to the old segments left, then those: more
    // records than compacted, each the one written at its offset.
    assert!(reopened.len() > compacted.len());
    // The old segments are the log's again: not removed behind its back.
    assert!(!log.remove_merged_away(&outcome.merged_away[1]).unwrap());
    // The next pass merges them again.
    compact_all(&mut log, &keep_tombstones());
    assert_eq!(records(&log), compacted);
    assert_eq!(log.segment_count(), 2);
}

#[test]
fn cleanable_counts_the_sealed_bytes_below_the_bound_and_those_written_since_a_pass() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    write_rounds(&mut log, 4, 6, 2, Compression::None);
    let bases: Vec<Offset> = log.segment_bases().iter().map(|b| b.0).collect();
    assert_eq!(bases.len(), 4, "three sealed segments and the active one");
    let reader = log.reader();
    let all = reader.cleanable(log.next_offset(), Offset(0));
    assert_eq!(all.end, log.next_offset());
    assert_eq!(all.dirty_bytes, all.bytes);
    assert_eq!(all.bytes, log.size_bytes());
    let since_second = reader.cleanable(log.next_offset(), bases[1]);
    assert_eq!(since_second.bytes, all.bytes);
    assert_eq!(since_second.dirty_bytes * 3, all.bytes * 2);
    // A bound inside the last sealed segment leaves it out.
    let bounded = reader.cleanable(Offset(bases[2].0 + 1), Offset(0));
    assert_eq!(bounded.end, bases[2]);
    assert_eq!(bounded.bytes * 3, all.bytes * 2);
}
