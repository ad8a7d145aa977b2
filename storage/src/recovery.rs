//! Opening segments after any kind of stop: finding where each one's valid
//! batches end, and rebuilding indexes that are missing or wrong.
//!
//! The rule is "the longest valid prefix and nothing else". Within a segment
//! a batch is valid when its header passes [`BatchHeader::check`], its CRC
//! matches, it lies wholly inside the file, and it continues the previous
//! batch: the next offset, the next Raft index, a term no lower. The first
//! batch that fails ends the segment (a torn write, the zeros of the
//! grown-but-unwritten tail, garbage). A segment is trusted only up to the
//! next segment's base Raft index (a truncation sealed it there). A sealed
//! segment whose batches end before the next segment starts is a hole in
//! the middle of the log when a later segment holds a batch and the first
//! entry missing was committed (a replica opens its log with its saved
//! commit index): opening fails with [`LogError::Hole`] (naming the file,
//! byte and offset) rather than dropping everything after it. Otherwise it
//! is the torn tail of a log that had just rolled (a machine crash may
//! leave a later segment's pages on disk and not an earlier one's), and
//! the segments after it are cut off as the last segment's torn tail is.
//!
//! Segment files are read here with `pread` (a window at a time), never
//! through a mapping: a file cut short while it is read ends the scan
//! instead of raising SIGBUS.
//!
//! An intact index covers bytes that were durable before it was written (see
//! [`crate::index`]), so a segment with one is scanned only from its last
//! entry on; otherwise it is scanned, and its indexes rebuilt, from the start.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::batch::{self, BatchHeader};
use crate::config::LogConfig;
use crate::error::LogError;
use crate::index::{IndexFile, OffsetEntry, offset_entries_are_ordered};
use crate::segment::{Segment, SegmentPaths, Tail, takes_index_entry};
use crate::timeindex::{TimeEntry, time_entries_agree};
use crate::types::{Offset, RaftIndex, Term};

/// Bytes read from a segment file at a time while recovering it.
const WINDOW_BYTES: usize = 1 << 20;

/// A segment file read for recovery with `pread`, a window at a time:
/// recovery parses what it reads, and a file cut short (or failing) under
/// it must be an error or the end of the valid batches, never SIGBUS, as a
/// read of a mapping past the file's end would be.
pub(crate) struct FileWindow<'a> {
    file: &'a File,
    path: &'a Path,
    file_bytes: u64,
    /// File position of `buf[0]`.
    start: u64,
    buf: Vec<u8>,
}

impl<'a> FileWindow<'a> {
    /// A window over `file` (at `path`), `file_bytes` long when stat'ed.
    pub(crate) fn new(file: &'a File, path: &'a Path, file_bytes: u64) -> Self {
        FileWindow {
            file,
            path,
            file_bytes,
            start: 0,
            buf: Vec::new(),
        }
    }

    /// Length of the file, bytes.
    pub(crate) fn file_bytes(&self) -> u64 {
        self.file_bytes
    }

    /// The bytes `[position, position + len)`, or `None` when they reach
    /// past the end of the file.
    pub(crate) fn get(&mut self, position: u64, len: usize) -> Result<Option<&[u8]>, LogError> {
        let Some(end) = position.checked_add(len as u64) else {
            return Ok(None);
        };
        if end > self.file_bytes {
            return Ok(None);
        }
        if position < self.start || end > self.start + self.buf.len() as u64 {
            let want = (len.max(WINDOW_BYTES) as u64).min(self.file_bytes - position) as usize;
            self.buf.resize(want, 0);
            self.start = position;
            match self.file.read_exact_at(&mut self.buf, position) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    // Cut short since it was stat'ed: what is gone is not
                    // part of the valid prefix.
                    self.buf.clear();
                    self.file_bytes = position;
                    return Ok(None);
                }
                Err(e) => return Err(LogError::io("read segment", self.path)(e)),
            }
        }
        let at = (position - self.start) as usize;
        Ok(Some(&self.buf[at..at + len]))
    }
}

/// Scans batches in `data` from `tail`, appending the index entries a fresh
/// append would have made, and returns the tail after the last valid batch.
/// Stops before a batch at or past `bound` (the next segment's base index).
#[allow(clippy::too_many_arguments)]
pub(crate) fn scan(
    data: &mut FileWindow<'_>,
    mut tail: Tail,
    base: (Offset, RaftIndex),
    bound: Option<RaftIndex>,
    config: &LogConfig,
    index: &mut Vec<OffsetEntry>,
    time: &mut Vec<TimeEntry>,
) -> Result<Tail, LogError> {
    while let Some(head) = data.get(tail.position, batch::HEADER_BYTES)? {
        let Ok(h) = BatchHeader::decode(head) else {
            break;
        };
        if h.check(config.max_batch_bytes).is_err() {
            break;
        }
        if bound.is_some_and(|b| h.raft_index >= b) {
            break;
        }
        if h.base_offset != tail.next_offset
            || h.raft_index != tail.next_raft_index
            || h.raft_term < tail.last_term
        {
            break;
        }
        let len = h.batch_bytes();
        let Some(whole) = data.get(tail.position, len as usize)? else {
            break;
        };
        if batch::compute_crc(whole) != h.crc {
            break;
        }
        if takes_index_entry(
            tail.position,
            tail.bytes_since_entry,
            config.index_interval_bytes,
        ) {
            let relative_offset = (h.base_offset.0 - base.0.0) as u32;
            index.push(OffsetEntry {
                relative_offset,
                relative_raft_index: (h.raft_index.0 - base.1.0) as u32,
                position: tail.position as u32,
            });
            time.push(TimeEntry {
                max_timestamp_before_ms: tail.max_timestamp_ms,
                relative_offset,
                position: tail.position as u32,
            });
            tail.bytes_since_entry = 0;
        }
        tail = Tail {
            position: tail.position + len,
            next_offset: h.next_offset(),
            next_raft_index: h.raft_index.next(),
            last_term: h.raft_term,
            max_timestamp_ms: tail.max_timestamp_ms.max(h.max_timestamp_ms),
            bytes_since_entry: tail.bytes_since_entry + len,
        };
    }
    Ok(tail)
}

/// Where the previous segment left off: what this one must start with.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Expect {
    pub(crate) last_term: Term,
}

/// Opens the segment at `paths`, finds its valid end (bounded by `bound`),
/// repairs its indexes and maps it (read-only; the active segment, when
/// `last`, is written with `pwritev`). The file is trimmed after its last
/// valid batch (for a sealed segment, counting batches past the bound).
pub(crate) fn open_segment(
    paths: SegmentPaths,
    base: (Offset, RaftIndex),
    expect: Expect,
    bound: Option<RaftIndex>,
    last: bool,
    config: &LogConfig,
) -> Result<Segment, LogError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&paths.log)
        .map_err(LogError::io("open segment", &paths.log))?;
    let file_bytes = file
        .metadata()
        .map_err(LogError::io("stat segment", &paths.log))?
        .len();
    let (tail, index, time_index, keep_bytes, garbage_after_end) = {
        let mut data = FileWindow::new(&file, &paths.log, file_bytes);
        let (tail, index, time_index) =
            recover_tail(&mut data, &paths, base, expect, bound, config)?;
        // A segment sealed by a truncation still holds valid batches past
        // the cut, and a reader in this process may still hold them: the
        // file keeps every valid batch and loses only what follows them.
        let keep_bytes = if last {
            tail.position
        } else {
            scan(
                &mut data,
                tail,
                base,
                None,
                config,
                &mut Vec::new(),
                &mut Vec::new(),
            )?
            .position
        };
        let file_bytes = data.file_bytes();
        let look = (file_bytes.saturating_sub(keep_bytes)).min(64 * 1024) as usize;
        let garbage = data
            .get(keep_bytes, look)?
            .is_some_and(|after| after.iter().any(|&b| b != 0));
        (tail, index, time_index, keep_bytes, garbage)
    };
    if file_bytes > keep_bytes {
        // Shrinking is safe: no mapping in this process reaches past the
        // valid batches. It drops the zero tail of a grown file and, after a
        // crash, torn or stale bytes that must never be mistaken for batches
        // once new ones are written before them.
        file.set_len(keep_bytes)
            .map_err(LogError::io("trim segment", &paths.log))?;
        if garbage_after_end {
            file.sync_all()
                .map_err(LogError::io("sync trimmed segment", &paths.log))?;
        }
        tracing::debug!(path = %paths.log.display(), valid_bytes = tail.position, keep_bytes, file_bytes, "trimmed segment tail");
    }
    if last {
        Segment::activate(paths, file, tail.position, tail, index, time_index, config)
    } else {
        Segment::sealed(paths, file, tail, index, time_index, base)
    }
}

/// Finds the valid end of `data` and the segment's indexes, using intact
/// index files to skip the covered prefix.
fn recover_tail(
    data: &mut FileWindow<'_>,
    paths: &SegmentPaths,
    base: (Offset, RaftIndex),
    expect: Expect,
    bound: Option<RaftIndex>,
    config: &LogConfig,
) -> Result<(Tail, IndexFile<OffsetEntry>, IndexFile<TimeEntry>), LogError> {
    let start = Tail {
        position: 0,
        next_offset: base.0,
        next_raft_index: base.1,
        last_term: expect.last_term,
        max_timestamp_ms: i64::MIN,
        bytes_since_entry: 0,
    };
    if let Some((entries, times)) = load_indexes(paths, data.file_bytes()) {
        // Resume at the last entry that lies below the bound: entries past a
        // truncation cut are dropped, the ones before it still hold.
        let keep = entries.partition_point(|e| {
            bound.is_none_or(|b| base.1.0 + u64::from(e.relative_raft_index) < b.0)
        });
        let resume = match (entries[..keep].last(), times[..keep].last()) {
            (Some(e), Some(t)) => Some(Tail {
                position: u64::from(e.position),
                next_offset: Offset(base.0.0 + u64::from(e.relative_offset)),
                next_raft_index: RaftIndex(base.1.0 + u64::from(e.relative_raft_index)),
                // Unknown until the first batch is scanned, which may not
                // regress below the term before the segment.
                last_term: expect.last_term,
                max_timestamp_ms: t.max_timestamp_before_ms,
                bytes_since_entry: 0,
            }),
            _ => None,
        };
        let from = resume.unwrap_or(start);
        let (mut new_entries, mut new_times) = (Vec::new(), Vec::new());
        let tail = scan(
            data,
            from,
            base,
            bound,
            config,
            &mut new_entries,
            &mut new_times,
        )?;
        // The batch at the last entry must itself be valid, or the index
        // disagrees with the log: then fall through to a full rebuild.
        if resume.is_none() || tail.position > from.position {
            let first_dropped = entries.get(keep).map(|e| e.position);
            let mut index = IndexFile::loaded(paths.index.clone(), entries);
            let mut time_index = IndexFile::loaded(paths.timeindex.clone(), times);
            if let Some(p) = first_dropped {
                // Entries past a truncation cut: the files get rewritten.
                index.truncate_from(p);
                time_index.truncate_from(p);
            }
            new_entries.into_iter().for_each(|e| index.push(e));
            new_times.into_iter().for_each(|t| time_index.push(t));
            return Ok((tail, index, time_index));
        }
        tracing::warn!(path = %paths.index.display(), "index disagrees with the segment; rebuilding");
    }
    let (mut entries, mut times) = (Vec::new(), Vec::new());
    let tail = scan(data, start, base, bound, config, &mut entries, &mut times)?;
    Ok((
        tail,
        IndexFile::new(paths.index.clone(), entries),
        IndexFile::new(paths.timeindex.clone(), times),
    ))
}

/// Loads both index files if both are intact, ordered, inside the segment's
/// bytes, and agree with each other.
fn load_indexes(
    paths: &SegmentPaths,
    data_bytes: u64,
) -> Option<(Vec<OffsetEntry>, Vec<TimeEntry>)> {
    let entries = IndexFile::<OffsetEntry>::load(&paths.index)?;
    let times = IndexFile::<TimeEntry>::load(&paths.timeindex)?;
    if !offset_entries_are_ordered(&entries, data_bytes) || !time_entries_agree(&times, &entries) {
        return None;
    }
    Some((entries, times))
}

/// Syncs a directory, making file creations and removals in it durable.
pub fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(LogError::io("sync directory", dir))
}
