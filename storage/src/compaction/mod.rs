//! Log compaction (`cleanup.policy=compact`): keeping only the newest
//! record of each key in a log's sealed, committed segments, and removing
//! tombstones (null values) once they have been kept for
//! `delete_retention_ms`.
//!
//! A pass ([`LogReader::compact`]) runs on a thread of its own, never under
//! the log's writer: it reads the segments the log published, so the
//! writer and fetches never wait for it. It takes the sealed segments from
//! the log start whose records all lie below `clean_below` (a replica's
//! high watermark: no record not yet committed is rewritten; a segment
//! that a truncation cuts after the pass read it, at control entries past
//! the commit, no longer ends where the pass read it and is not
//! replaced), and
//! 1. reads them once to map each key to its newest record (bounded in
//!    bytes, see [`keymap`]; when the map fills, the pass covers the
//!    segments mapped whole);
//! 2. reads them again and writes each segment that loses a record to a
//!    new file beside it (`<segment>.log.cleaned`), keeping every batch
//!    (and so every Raft entry) with the same base offset, offsets, Raft
//!    index and term ([`rewrite`]); the file is synced, given the old
//!    file's modification time, and read back (CRCs, offsets and Raft
//!    indexes continuing exactly as in the segment it replaces);
//! 3. hands the new files to the writer ([`Log::install_cleaned`]), which
//!    renames each over its segment (a new inode: readers that hold the
//!    old bytes keep them) if that segment is still in the log as it was
//!    read, and publishes the new list at once, so a fetch sees one log
//!    or the other, never a mix of one segment's two versions.
//!
//! Every pass throttles its reads and writes through an [`IoBudget`], and
//! stops at once when the budget says so (a broker stopping).
//!
//! What a record keeps or loses:
//! - a record with no key is kept (a topic made compacted later may hold
//!   some; a compacted topic refuses new ones);
//! - a record older than its key's newest record is removed;
//! - a key's newest record is kept, unless it is a tombstone whose segment
//!   was last written more than `delete_retention_ms` ago, whose entry
//!   lies below [`CompactionSettings::tombstones_below_raft_index`] (for a
//!   replicated log: held by every replica, so none that lags can receive
//!   the log without the tombstone while it still holds a value the
//!   tombstone deletes), and which is the only record of its key left in
//!   the segments cleaned. So the older values a tombstone deletes are
//!   removed by one pass and the tombstone only by a later one, after the
//!   first pass's renames were made durable
//!   ([`InstallOutcome::dir_to_sync`]): a crash in the middle of any pass
//!   never brings a deleted value back, whatever order its renames reach
//!   the disk in.
//!
//! Replicas compact on their own, each its own segments, as Kafka's do.
//! A pass only removes records that a newer record of the same key, at a
//! higher offset in the same log, supersedes, and all replicas hold the
//! same committed records at the same offsets, so every replica answers a
//! read with the same newest value per key at the same offset, whichever
//! is leader; they differ only in how many superseded records each still
//! holds. Replicating the leader's result instead would send every
//! compacted segment over the network again for nothing. A leader's
//! compacted entries reach a follower that catches up as they are:
//! followers accept batches with gaps ([`crate::batch::ValidBatch::replicated`]).
//! Tombstones are the exception to "on their own": removing one is safe
//! only once no replica can still receive the log without it, which only a
//! leader knows (see [`CompactionSettings::tombstones_below_raft_index`]).

mod install;
mod keymap;
mod rewrite;
mod source;
mod write;

pub use install::{InstallOutcome, MergedAway};
use keymap::KeyMap;
use rewrite::RecordKey;
pub(crate) use source::SegmentEnd;
use source::Source;
pub(crate) use write::CleanedSegment;

use crate::batch::BatchHeader;
use crate::config::LogConfig;
use crate::error::LogError;
use crate::types::{Offset, RaftIndex, Term};
use crate::view::LogReader;

/// The suffix of a cleaned segment's file before it is installed; the log
/// removes any it finds when it opens.
pub const CLEANED_SUFFIX: &str = ".cleaned";

/// Default bound of a pass's key map, bytes (Kafka's cleaner takes
/// 128 MiB for all its threads; rill runs one pass at a time).
pub const KEY_MAP_BYTES_DEFAULT: usize = 64 << 20;

/// How a compaction pass runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactionSettings {
    /// How long a tombstone is kept after its segment was last written,
    /// ms (Kafka's `delete.retention.ms`): consumers reading the log within
    /// that time see the deletion.
    pub delete_retention_ms: u64,
    /// The most memory a pass's key map takes, bytes.
    pub key_map_bytes_max: usize,
    /// Tombstones are removed only from entries below this Raft index. A
    /// replicated log's leader gives the index every replica holds the log
    /// up to; its followers `RaftIndex(0)`, removing none: a replica that
    /// lags catches up from the leader's log as it is then. Default: any.
    pub tombstones_below_raft_index: RaftIndex,
}

impl Default for CompactionSettings {
    fn default() -> Self {
        CompactionSettings {
            delete_retention_ms: 24 * 60 * 60 * 1000,
            key_map_bytes_max: KEY_MAP_BYTES_DEFAULT,
            tombstones_below_raft_index: RaftIndex(u64::MAX),
        }
    }
}

/// Paces a pass's reads and writes.
pub trait IoBudget {
    /// Called after `bytes` were read or written; may sleep to keep a
    /// rate. `false` stops the pass (nothing is installed).
    fn spend(&mut self, bytes: u64) -> bool;
}

/// An [`IoBudget`] that never waits or stops.
#[derive(Debug, Clone, Copy, Default)]
pub struct Unthrottled;

impl IoBudget for Unthrottled {
    fn spend(&mut self, _bytes: u64) -> bool {
        true
    }
}

/// What a compaction pass started now would cover
/// ([`LogReader::cleanable`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cleanable {
    /// The offset the segments it would cover end at (the log start when
    /// none).
    pub end: Offset,
    /// Their bytes.
    pub bytes: u64,
    /// Of those, bytes in segments written since the last pass.
    pub dirty_bytes: u64,
}

/// What a pass found and did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompactionStats {
    /// Sealed segments the pass covered.
    pub segments_cleaned: usize,
    /// Distinct keys in them.
    pub keys: usize,
    /// Of those, segments written again (they lost a record, or were
    /// merged with their neighbours).
    pub segments_rewritten: usize,
    /// New files written: one per group of segments merged.
    pub files_written: usize,
    /// Records removed, tombstones among them.
    pub records_removed: u64,
    /// Tombstones removed.
    pub tombstones_removed: u64,
    /// Bytes of the segments covered, before and after.
    pub bytes_before: u64,
    /// See `bytes_before`.
    pub bytes_after: u64,
    /// The offset the covered segments end at (the log start when none).
    pub clean_end: Offset,
    /// The offset the segments the pass looked at end at: past
    /// `clean_end` when the key map filled before the last of them. A pass
    /// is worth running again once sealed segments reach past it.
    pub pass_end: Offset,
    /// The earliest time a tombstone kept by this pass may be removed,
    /// ms since the epoch: a later pass is due then even if nothing was
    /// written.
    pub tombstone_due_ms: Option<i64>,
    /// The Raft index every replica must hold the log up to before a
    /// tombstone this pass kept for them may be removed.
    pub tombstone_waits_for_raft_index: Option<RaftIndex>,
}

/// The result of a pass: new files for the segments that lost records,
/// to be installed by the log's writer ([`Log::install_cleaned`]).
/// Dropped without being installed, the files are removed.
#[derive(Debug)]
#[must_use = "cleaned segments do nothing until installed"]
pub struct Cleaned {
    pub(crate) segments: Vec<CleanedSegment>,
    /// What the pass found and did.
    pub stats: CompactionStats,
}

impl Cleaned {
    /// Whether no segment needs replacing.
    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }
}

impl LogReader {
    /// What a pass now would cover: the sealed segments whose records all
    /// lie below `clean_below`, and how many of their bytes lie in
    /// segments starting at or after `dirty_from` (written since a pass
    /// that ended there).
    pub fn cleanable(&self, clean_below: Offset, dirty_from: Offset) -> Cleanable {
        let segments = self.segments();
        let mut c = Cleanable {
            end: segments[0].base_offset,
            ..Cleanable::default()
        };
        for view in &segments[..segments.len() - 1] {
            let (end_position, end_offset) = view.sealed_end();
            if end_offset > clean_below {
                break;
            }
            c.end = end_offset;
            c.bytes += end_position;
            if view.base_offset >= dirty_from {
                c.dirty_bytes += end_position;
            }
        }
        c
    }

    /// Runs one compaction pass over the sealed segments whose records all
    /// lie below `clean_below` (see the module documentation). `config` is
    /// the log's (batch size bound, index interval). `Ok(None)` when the
    /// budget stopped the pass.
    pub fn compact(
        &self,
        clean_below: Offset,
        config: &LogConfig,
        settings: &CompactionSettings,
        now_ms: i64,
        budget: &mut dyn IoBudget,
    ) -> Result<Option<Cleaned>, LogError> {
        let segments = self.segments();
        let sealed = &segments[..segments.len() - 1];
        let mut sources = Vec::new();
        for view in sealed {
            let (end_position, end_offset) = view.sealed_end();
            if end_offset > clean_below {
                break;
            }
            sources.push(Source::new(view, end_position, end_offset)?);
        }
        let mut stats = CompactionStats {
            clean_end: segments[0].base_offset,
            pass_end: sources
                .last()
                .map_or(segments[0].base_offset, |s| s.end_offset),
            ..CompactionStats::default()
        };
        let mut map = KeyMap::new(settings.key_map_bytes_max);
        let mut ends = Vec::new();
        for source in &sources {
            let Some((full, end)) = map_keys(source, config, &mut map, budget)? else {
                return Ok(None);
            };
            if full {
                break;
            }
            ends.push(end);
            stats.keys = map.len();
        }
        let covered = &sources[..ends.len()];
        let mut cleaned = Vec::new();
        for group in write::groups(covered, &ends, config.segment_bytes) {
            let (group, group_ends) = (&covered[group.clone()], &ends[group]);
            stats.segments_cleaned += group.len();
            let before: u64 = group.iter().map(|s| s.end_position).sum();
            stats.bytes_before += before;
            stats.clean_end = group_ends
                .last()
                .expect("a group holds a segment")
                .next_offset;
            let mut keep = |source: &Source, header: &BatchHeader, r: RecordKey<'_>| {
                let tombstones_due_ms = source.modified_ms.saturating_add(
                    i64::try_from(settings.delete_retention_ms).unwrap_or(i64::MAX),
                );
                let keep = keeps(
                    r,
                    header.raft_index,
                    &map,
                    settings,
                    tombstones_due_ms,
                    now_ms,
                    &mut stats,
                );
                if !keep {
                    stats.records_removed += 1;
                    stats.tombstones_removed += u64::from(r.tombstone);
                }
                keep
            };
            let Some(written) = write::write_group(group, group_ends, config, &mut keep, budget)?
            else {
                return Ok(None);
            };
            match written {
                Some(c) => {
                    stats.segments_rewritten += group.len();
                    stats.files_written += 1;
                    stats.bytes_after += c.tail.position;
                    cleaned.push(c);
                }
                None => stats.bytes_after += before,
            }
        }
        Ok(Some(Cleaned {
            segments: cleaned,
            stats,
        }))
    }
}

/// Maps the keys of `source`: `Some((true, _))` when the map filled inside
/// it, `Some((false, end))` when it was mapped whole, `None` when the
/// budget stopped the pass.
fn map_keys(
    source: &Source,
    config: &LogConfig,
    map: &mut KeyMap,
    budget: &mut dyn IoBudget,
) -> Result<Option<(bool, SegmentEnd)>, LogError> {
    let mut full = false;
    let mut end = SegmentEnd {
        position: source.end_position,
        next_offset: source.base.0,
        next_raft_index: source.base.1,
        last_term: Term(0),
    };
    let finished =
        source.for_each_batch(config.max_batch_bytes, budget, |position, header, bytes| {
            end.next_offset = header.next_offset();
            end.next_raft_index = header.raft_index.next();
            end.last_term = header.raft_term;
            if full || header.is_control() {
                return Ok(());
            }
            rewrite::for_each_record(bytes, header, config.max_batch_bytes, |r| {
                if let Some(key) = r.key {
                    full = full || !map.observe(key, r.offset);
                }
            })
            .map_err(|e| source.view.damaged(position, e.to_string()))
        })?;
    if !finished {
        return Ok(None);
    }
    Ok(Some((full, end)))
}

/// Whether the record `r` stays (see the module documentation).
fn keeps(
    r: RecordKey<'_>,
    raft_index: RaftIndex,
    map: &KeyMap,
    settings: &CompactionSettings,
    tombstones_due_ms: i64,
    now_ms: i64,
    stats: &mut CompactionStats,
) -> bool {
    let Some(key) = r.key else {
        return true;
    };
    let newest = map
        .get(key)
        .expect("every key of a segment covered is in the map");
    if r.offset < newest.offset {
        return false;
    }
    if !r.tombstone {
        return true;
    }
    let held_everywhere = raft_index < settings.tombstones_below_raft_index;
    if !newest.has_older && tombstones_due_ms <= now_ms && held_everywhere {
        return false;
    }
    if held_everywhere {
        // Due once its delay is over and the values it deletes are gone
        // (this pass removes them), at the next pass.
        let due = tombstones_due_ms.max(now_ms);
        stats.tombstone_due_ms = Some(stats.tombstone_due_ms.map_or(due, |d| d.min(due)));
    } else {
        // Due once every replica holds it; its delay is looked at then.
        let wait = raft_index.next();
        stats.tombstone_waits_for_raft_index = Some(
            stats
                .tombstone_waits_for_raft_index
                .map_or(wait, |w| w.min(wait)),
        );
    }
    true
}
