//! The files a compaction pass writes: one per group of consecutive
//! sealed segments, named after the first and replacing them all.
//!
//! Segments are grouped while their bytes before cleaning fit one segment
//! (`segment_bytes`) and their offsets and Raft indexes fit an index
//! entry's 32-bit relative fields, as Kafka's cleaner groups them: a
//! compacted log's segments, smaller after each pass, are merged by the
//! next, so a log that is never deleted by retention does not collect a
//! file (and a mapping) per roll forever. A group of one segment that
//! loses no record is not written; a group of several always is.
//!
//! A file is written beside the first segment (`<segment>.log.cleaned`),
//! synced, given the newest modification time of the segments it
//! replaces, and read back as recovery would read it: its CRCs, offsets
//! and Raft indexes must continue exactly as in the segments it replaces,
//! and end where the last of them ends.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use super::rewrite::{self, RecordKey};
use super::source::{SegmentEnd, Source};
use super::{CLEANED_SUFFIX, IoBudget};
use crate::batch::BatchHeader;
use crate::config::LogConfig;
use crate::error::LogError;
use crate::index::OffsetEntry;
use crate::recovery::{FileWindow, scan};
use crate::segment::Tail;
use crate::timeindex::TimeEntry;
use crate::types::{Offset, RaftIndex, Term};

/// The new file of a group of segments, synced, not yet in the log.
#[derive(Debug)]
pub(crate) struct CleanedSegment {
    /// The base of the first segment it replaces, and its name.
    pub(crate) base: (Offset, RaftIndex),
    /// The segments it replaces, oldest first: each one's base, and where
    /// its batches ended when the pass read it.
    pub(crate) replaces: Vec<((Offset, RaftIndex), SegmentEnd)>,
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

/// Splits `sources` (with their `ends`) into runs written to one file
/// each. See the module documentation.
pub(crate) fn groups(
    sources: &[Source],
    ends: &[SegmentEnd],
    segment_bytes: u64,
) -> Vec<Range<usize>> {
    let mut groups = Vec::new();
    let mut start = 0;
    let mut bytes = 0u64;
    for (i, source) in sources.iter().enumerate() {
        let first = &sources[start];
        let fits = i > start
            && bytes + source.end_position <= segment_bytes
            && ends[i].next_offset.0 - first.base.0.0 <= u64::from(u32::MAX)
            && ends[i].next_raft_index.0 - first.base.1.0 <= u64::from(u32::MAX);
        if i > start && !fits {
            groups.push(start..i);
            start = i;
            bytes = 0;
        }
        bytes += source.end_position;
    }
    if start < sources.len() {
        groups.push(start..sources.len());
    }
    groups
}

/// What decides each record of a batch: the segment it is in, the
/// batch's header, the record.
pub(crate) type Decide<'a> = dyn FnMut(&Source, &BatchHeader, RecordKey<'_>) -> bool + 'a;

/// Writes `group` (consecutive segments, with their `ends`) to one file,
/// each record kept only if `keep` says so: `Some(None)` for a single
/// segment that keeps every record (nothing to write), `None` when the
/// budget stopped the pass.
pub(crate) fn write_group(
    group: &[Source],
    ends: &[SegmentEnd],
    config: &LogConfig,
    keep: &mut Decide<'_>,
    budget: &mut dyn IoBudget,
) -> Result<Option<Option<CleanedSegment>>, LogError> {
    let first = &group[0];
    let tmp = {
        let mut name = first.view.path.clone().into_os_string();
        name.push(CLEANED_SUFFIX);
        PathBuf::from(name)
    };
    let mut out = if group.len() > 1 {
        Some(create(&tmp)?)
    } else {
        // Created at the first batch that changes, from a copy of the
        // ones before it.
        None
    };
    let mut written = 0u64;
    for source in group {
        let finished =
            source.for_each_batch(config.max_batch_bytes, budget, |position, header, bytes| {
                let rewritten = if header.is_control() {
                    None
                } else {
                    rewrite::filter(bytes, header, config.max_batch_bytes, |r| {
                        keep(source, header, r)
                    })
                    .map_err(|e| source.view.damaged(position, e.to_string()))?
                };
                if out.is_none() && rewritten.is_some() {
                    let mut w = create(&tmp)?;
                    copy_prefix(source, position, &mut w, &tmp)?;
                    written = position;
                    out = Some(w);
                }
                if let Some(w) = out.as_mut() {
                    let bytes = rewritten.as_deref().unwrap_or(bytes);
                    w.write_all(bytes)
                        .map_err(LogError::io("write cleaned segment", &tmp))?;
                    written += bytes.len() as u64;
                }
                Ok(())
            })?;
        if !finished {
            return Ok(None);
        }
    }
    let Some(w) = out else {
        return Ok(Some(None));
    };
    let file = w
        .into_inner()
        .map_err(|e| LogError::io("write cleaned segment", &tmp)(e.into_error()))?;
    // The replaced files' newest time: retention, the producer table and
    // tombstones read it, and a rewrite is no new write of the records.
    let modified_ms = group.iter().map(|s| s.modified_ms).max().unwrap_or(0);
    let modified = std::time::UNIX_EPOCH
        + std::time::Duration::from_millis(u64::try_from(modified_ms).unwrap_or(0));
    let mut cleaned = CleanedSegment {
        base: first.base,
        replaces: group.iter().zip(ends).map(|(s, e)| (s.base, *e)).collect(),
        tmp: Some(tmp.clone()),
        file: None,
        tail: Tail {
            position: 0,
            next_offset: first.base.0,
            next_raft_index: first.base.1,
            last_term: Term(0),
            max_timestamp_ms: i64::MIN,
            bytes_since_entry: 0,
        },
        index: Vec::new(),
        times: Vec::new(),
    };
    file.set_modified(modified)
        .map_err(LogError::io("set cleaned segment time", &tmp))?;
    file.sync_all()
        .map_err(LogError::io("sync cleaned segment", &tmp))?;
    if !budget.spend(written) {
        return Ok(None);
    }
    let end = *ends.last().expect("a group holds a segment");
    read_back(&file, &tmp, config, written, end, &mut cleaned)?;
    cleaned.file = Some(file);
    Ok(Some(Some(cleaned)))
}

/// Creates the cleaned file at `tmp`, replacing a leftover of a pass that
/// stopped (it was never installed).
fn create(tmp: &Path) -> Result<BufWriter<File>, LogError> {
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
    Ok(BufWriter::with_capacity(1 << 20, file))
}

/// Copies the first `position` bytes of `source` (the batches before the
/// first that changes) to `w`.
fn copy_prefix(
    source: &Source,
    position: u64,
    w: &mut BufWriter<File>,
    tmp: &Path,
) -> Result<(), LogError> {
    let mut buf = vec![0u8; (1 << 20).min(position as usize)];
    let mut at = 0;
    while at < position {
        let n = buf.len().min((position - at) as usize);
        source.view.read_exact_at(&mut buf[..n], at)?;
        w.write_all(&buf[..n])
            .map_err(LogError::io("write cleaned segment", tmp))?;
        at += n as u64;
    }
    Ok(())
}

/// Reads the cleaned file back as recovery would, building its indexes,
/// and checks it ends where the segments it replaces end (`end`).
fn read_back(
    file: &File,
    tmp: &Path,
    config: &LogConfig,
    written: u64,
    end: SegmentEnd,
    cleaned: &mut CleanedSegment,
) -> Result<(), LogError> {
    let mut window = FileWindow::new(file, tmp, written);
    let (mut index, mut times) = (Vec::new(), Vec::new());
    let tail = scan(
        &mut window,
        cleaned.tail,
        cleaned.base,
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
                 the segments it replaces end at offset {}, Raft index {}, term {} ({written} bytes written)",
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
