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

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use install::InstallOutcome;
use keymap::KeyMap;
use rewrite::RecordKey;

use crate::batch::{self, BatchHeader};
use crate::config::LogConfig;
use crate::error::LogError;
use crate::index::OffsetEntry;
use crate::recovery::{FileWindow, scan};
use crate::segment::{Tail, parse_segment_name};
use crate::timeindex::TimeEntry;
use crate::types::{Offset, RaftIndex, Term};
use crate::view::{LogReader, SegmentView};

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

/// What a pass found and did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompactionStats {
    /// Sealed segments the pass covered.
    pub segments_cleaned: usize,
    /// Distinct keys in them.
    pub keys: usize,
    /// Of those, segments written again (they lost a record).
    pub segments_rewritten: usize,
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

/// Where a segment's batches ended when it was read: it is replaced only
/// if it still ends there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentEnd {
    pub(crate) position: u64,
    pub(crate) next_offset: Offset,
    pub(crate) next_raft_index: RaftIndex,
    pub(crate) last_term: Term,
}

/// The new file of one segment, synced, not yet in the log.
#[derive(Debug)]
pub(crate) struct CleanedSegment {
    pub(crate) base: (Offset, RaftIndex),
    pub(crate) old_end: SegmentEnd,
    /// The file's path until installed (then `None`: nothing to remove).
    pub(crate) tmp: Option<PathBuf>,
    pub(crate) file: Option<File>,
    pub(crate) tail: Tail,
    pub(crate) index: Vec<OffsetEntry>,
    pub(crate) times: Vec<TimeEntry>,
}

impl Drop for CleanedSegment {
    fn drop(&mut self) {
        if let Some(tmp) = self.tmp.take() {
            // Best effort: the log removes leftovers when it opens.
            let _ = std::fs::remove_file(tmp);
        }
    }
}

/// One sealed segment as a pass reads it.
struct Source {
    view: Arc<SegmentView>,
    base: (Offset, RaftIndex),
    end_position: u64,
    end_offset: Offset,
    modified_ms: i64,
}

impl LogReader {
    /// The offset the sealed segments whose records all lie below
    /// `clean_below` end at (the log start when there are none): a pass
    /// now would cover the log up to there.
    pub fn cleanable_end(&self, clean_below: Offset) -> Offset {
        let segments = self.segments();
        let mut end = segments[0].base_offset;
        for view in &segments[..segments.len() - 1] {
            let (_, end_offset) = view.sealed_end();
            if end_offset > clean_below {
                break;
            }
            end = end_offset;
        }
        end
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
            sources.push(Source {
                base: (view.base_offset, base_raft_index(view)?),
                end_position,
                end_offset,
                modified_ms: modified_ms(view)?,
                view: Arc::clone(view),
            });
        }
        let mut stats = CompactionStats {
            clean_end: segments[0].base_offset,
            pass_end: sources
                .last()
                .map_or(segments[0].base_offset, |s| s.end_offset),
            ..CompactionStats::default()
        };
        let mut map = KeyMap::new(settings.key_map_bytes_max);
        let mut covered = 0;
        let mut ends = Vec::new();
        for source in &sources {
            let Some((full, end)) = map_keys(source, config, &mut map, budget)? else {
                return Ok(None);
            };
            if full {
                break;
            }
            ends.push(end);
            covered += 1;
            stats.keys = map.len();
        }
        let mut cleaned = Vec::new();
        for (source, end) in sources.iter().take(covered).zip(ends) {
            stats.segments_cleaned += 1;
            stats.bytes_before += source.end_position;
            stats.clean_end = source.end_offset;
            let Some(segment) = rewrite_segment(
                source, end, config, settings, now_ms, &map, &mut stats, budget,
            )?
            else {
                return Ok(None);
            };
            match segment {
                Some(c) => {
                    stats.segments_rewritten += 1;
                    stats.bytes_after += c.tail.position;
                    cleaned.push(c);
                }
                None => stats.bytes_after += source.end_position,
            }
        }
        Ok(Some(Cleaned {
            segments: cleaned,
            stats,
        }))
    }
}

/// The base Raft index a segment's file name holds.
fn base_raft_index(view: &SegmentView) -> Result<RaftIndex, LogError> {
    view.path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(parse_segment_name)
        .map(|(_, index)| index)
        .ok_or_else(|| LogError::Corrupt {
            path: view.path.clone(),
            reason: "not a segment file name".into(),
        })
}

fn modified_ms(view: &SegmentView) -> Result<i64, LogError> {
    let modified = view
        .file
        .metadata()
        .and_then(|m| m.modified())
        .map_err(LogError::io("read segment time", &view.path))?;
    Ok(modified
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)))
}

/// Calls `f` with each batch of `source` (header and whole bytes, CRC
/// checked) and its position. `Ok(false)` when the budget stopped it.
fn for_each_batch(
    source: &Source,
    max_batch_bytes: usize,
    budget: &mut dyn IoBudget,
    mut f: impl FnMut(u64, &BatchHeader, &[u8]) -> Result<(), LogError>,
) -> Result<bool, LogError> {
    let view = &source.view;
    let mut window = FileWindow::new(&view.file, &view.path, source.end_position);
    let mut position = 0;
    while position < source.end_position {
        let damaged = |reason: String| view.damaged(position, reason);
        let head = window
            .get(position, batch::HEADER_BYTES)?
            .ok_or_else(|| damaged("the segment ends inside a batch header".into()))?;
        let header = BatchHeader::decode(head).map_err(|e| damaged(e.to_string()))?;
        header
            .check(max_batch_bytes)
            .map_err(|e| damaged(e.to_string()))?;
        let len = header.batch_bytes();
        let bytes = window
            .get(position, usize::try_from(len).unwrap_or(usize::MAX))?
            .ok_or_else(|| damaged(format!("a batch of {len} bytes runs past the segment")))?;
        // Read back as the log wrote it: damage stops the pass rather than
        // being copied into a new file.
        let crc = batch::compute_crc(bytes);
        if crc != header.crc {
            return Err(damaged(format!(
                "CRC {crc:#010x} does not match the stored {:#010x}",
                header.crc
            )));
        }
        f(position, &header, bytes)?;
        position += len;
        if !budget.spend(len) {
            return Ok(false);
        }
    }
    Ok(true)
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
    let finished = for_each_batch(
        source,
        config.max_batch_bytes,
        budget,
        |position, header, bytes| {
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
        },
    )?;
    if !finished {
        return Ok(None);
    }
    Ok(Some((full, end)))
}

/// Writes `source` again without the records the map supersedes and the
/// tombstones due for removal: `Some(None)` when it loses none, `None`
/// when the budget stopped the pass.
#[allow(clippy::too_many_arguments)]
fn rewrite_segment(
    source: &Source,
    end: SegmentEnd,
    config: &LogConfig,
    settings: &CompactionSettings,
    now_ms: i64,
    map: &KeyMap,
    stats: &mut CompactionStats,
    budget: &mut dyn IoBudget,
) -> Result<Option<Option<CleanedSegment>>, LogError> {
    let tombstones_due_ms = source
        .modified_ms
        .saturating_add(i64::try_from(settings.delete_retention_ms).unwrap_or(i64::MAX));
    let tmp = {
        let mut name = source.view.path.clone().into_os_string();
        name.push(CLEANED_SUFFIX);
        PathBuf::from(name)
    };
    // Created at the first batch that changes, from a copy of the ones
    // before it.
    let mut out: Option<(BufWriter<File>, CleanedSegment)> = None;
    let mut written = 0u64;
    let finished = for_each_batch(
        source,
        config.max_batch_bytes,
        budget,
        |position, header, bytes| {
            let rewritten = if header.is_control() {
                None
            } else {
                rewrite::filter(bytes, header, config.max_batch_bytes, |r: RecordKey<'_>| {
                    let keep = keeps(
                        r,
                        header.raft_index,
                        map,
                        settings,
                        tombstones_due_ms,
                        now_ms,
                        stats,
                    );
                    if !keep {
                        stats.records_removed += 1;
                        stats.tombstones_removed += u64::from(r.tombstone);
                    }
                    keep
                })
                .map_err(|e| source.view.damaged(position, e.to_string()))?
            };
            if out.is_none() && rewritten.is_some() {
                out = Some(start_file(source, end, &tmp, position)?);
                written = position;
            }
            if let Some((w, _)) = out.as_mut() {
                let bytes = rewritten.as_deref().unwrap_or(bytes);
                w.write_all(bytes)
                    .map_err(LogError::io("write cleaned segment", &tmp))?;
                written += bytes.len() as u64;
            }
            Ok(())
        },
    )?;
    if !finished {
        return Ok(None);
    }
    let Some((w, mut cleaned)) = out else {
        return Ok(Some(None));
    };
    let file = w
        .into_inner()
        .map_err(|e| LogError::io("write cleaned segment", &tmp)(e.into_error()))?;
    let modified = std::time::UNIX_EPOCH
        + std::time::Duration::from_millis(u64::try_from(source.modified_ms).unwrap_or(0));
    // The old file's time: retention, the producer table and tombstones
    // read it, and a rewrite is no new write of the records.
    file.set_modified(modified)
        .map_err(LogError::io("set cleaned segment time", &tmp))?;
    file.sync_all()
        .map_err(LogError::io("sync cleaned segment", &tmp))?;
    if !budget.spend(written) {
        return Ok(None);
    }
    read_back(&file, &tmp, source, end, config, written, &mut cleaned)?;
    cleaned.file = Some(file);
    Ok(Some(Some(cleaned)))
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

/// Creates the cleaned file of `source` with its first `position` bytes
/// copied (the batches before the first that changes).
fn start_file(
    source: &Source,
    end: SegmentEnd,
    tmp: &Path,
    position: u64,
) -> Result<(BufWriter<File>, CleanedSegment), LogError> {
    // A leftover of a pass that stopped: it was never installed.
    match std::fs::remove_file(tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(LogError::io("remove stale cleaned segment", tmp)(e)),
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(tmp)
        .map_err(LogError::io("create cleaned segment", tmp))?;
    let cleaned = CleanedSegment {
        base: source.base,
        old_end: end,
        tmp: Some(tmp.to_path_buf()),
        file: None,
        tail: Tail {
            position: 0,
            next_offset: source.base.0,
            next_raft_index: source.base.1,
            last_term: Term(0),
            max_timestamp_ms: i64::MIN,
            bytes_since_entry: 0,
        },
        index: Vec::new(),
        times: Vec::new(),
    };
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let mut buf = vec![0u8; (1 << 20).min(position as usize)];
    let mut at = 0;
    while at < position {
        let n = buf.len().min((position - at) as usize);
        source.view.read_exact_at(&mut buf[..n], at)?;
        w.write_all(&buf[..n])
            .map_err(LogError::io("write cleaned segment", tmp))?;
        at += n as u64;
    }
    Ok((w, cleaned))
}

/// Reads the cleaned file back as recovery would, building its indexes,
/// and checks it ends where the segment it replaces ends.
fn read_back(
    file: &File,
    tmp: &Path,
    source: &Source,
    end: SegmentEnd,
    config: &LogConfig,
    written: u64,
    cleaned: &mut CleanedSegment,
) -> Result<(), LogError> {
    let mut window = FileWindow::new(file, tmp, written);
    let (mut index, mut times) = (Vec::new(), Vec::new());
    let tail = scan(
        &mut window,
        cleaned.tail,
        source.base,
        None,
        config,
        &mut index,
        &mut times,
    )?;
    let ends_alike = tail.position == written
        && tail.next_offset == end.next_offset
        && tail.next_raft_index == end.next_raft_index
        && tail.last_term == end.last_term;
    if !ends_alike {
        return Err(LogError::Corrupt {
            path: tmp.to_path_buf(),
            reason: format!(
                "a cleaned segment reads back ending at byte {}, offset {}, Raft index {}, term {}; \
                 the segment it replaces ends at offset {}, Raft index {}, term {} ({written} bytes written)",
                tail.position,
                tail.next_offset,
                tail.next_raft_index,
                tail.last_term,
                end.next_offset,
                end.next_raft_index,
                end.last_term,
            ),
        });
    }
    cleaned.tail = tail;
    cleaned.index = index;
    cleaned.times = times;
    Ok(())
}
