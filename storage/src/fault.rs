//! Fault injection for tests and the replication simulator: what a machine
//! crash does to a log's files, and a full disk under a running process.
//!
//! A SIGKILL keeps the page cache, so no black-box test can tell whether a
//! sync was missing. [`forget_unsynced`] is the crash a power cut would be:
//! applied to a closed log's directory, it keeps every byte the log had made
//! durable (its [`Log::durable`](crate::Log::durable) position when it was
//! dropped) and forgets what came after, except for an optional number of
//! bytes that "happened to reach the disk" (possibly tearing a batch).
//! Forgotten bytes read back as zeros, as a grown but unwritten extent does;
//! segments that start past the durable position vanish, as files whose
//! directory entry was never synced may.
//!
//! Only ever run on a directory no [`Log`](crate::Log) has open.
//!
//! [`ENOSPC_TRIGGER_ENV`] makes a running process (a broker under test)
//! see a full disk under one directory, without root or a small
//! filesystem: unless the variable is set, the check costs one load of a
//! value read once per process.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::batch::BatchHeader;
use crate::error::LogError;
use crate::log::LogPosition;
use crate::segment::{SegmentPaths, parse_segment_name};

/// Forgets every byte of the log in `dir` past `durable`, keeping the first
/// `keep_unsynced_bytes` of them. See the module documentation.
pub fn forget_unsynced(
    dir: &Path,
    durable: LogPosition,
    keep_unsynced_bytes: u64,
) -> Result<(), LogError> {
    let mut bases = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(LogError::io("list log directory", dir))? {
        let entry = entry.map_err(LogError::io("list log directory", dir))?;
        if let Some(base) = entry.file_name().to_str().and_then(parse_segment_name) {
            bases.push(base);
        }
    }
    bases.sort_by_key(|&(o, i)| (i, o));
    for (n, &(offset, index)) in bases.iter().enumerate() {
        let paths = SegmentPaths::new(dir, offset, index);
        let next_base = bases.get(n + 1).map(|b| b.1);
        if index > durable.raft_index {
            paths.remove("remove segment")?;
            continue;
        }
        if next_base.is_some_and(|b| b <= durable.raft_index) {
            // Wholly before the durable point (or sealed by a truncation
            // that a later segment overrides): kept as it is.
            continue;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&paths.log)
            .map_err(LogError::io("open segment", &paths.log))?;
        let mut data = Vec::new();
        file.read_to_end(&mut data)
            .map_err(LogError::io("read segment", &paths.log))?;
        // Walk to the first batch at or past the durable index.
        let mut pos = 0usize;
        while let Ok(h) = BatchHeader::decode(&data[pos..]) {
            let len = h.batch_bytes() as usize;
            if h.raft_index >= durable.raft_index || len == 0 || pos + len > data.len() {
                break;
            }
            pos += len;
        }
        let forget_from = (pos as u64).saturating_add(keep_unsynced_bytes);
        if forget_from < data.len() as u64 {
            let zeros = vec![0u8; data.len() - forget_from as usize];
            file.seek(SeekFrom::Start(forget_from))
                .and_then(|_| file.write_all(&zeros))
                .map_err(LogError::io("forget unsynced bytes", &paths.log))?;
        }
        // Index entries may cover bytes past the cut only if they were
        // written early, which the log never does; drop them anyway so the
        // next open rebuilds them from what is left.
        for p in [&paths.index, &paths.timeindex] {
            match std::fs::remove_file(p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(LogError::io("remove index", p)(e)),
            }
        }
    }
    Ok(())
}

/// Removes every segment of the log in `dir` that starts at or past
/// `durable`, whatever it holds: a power cut before the log's directory
/// was synced, when the segments created since the last directory sync
/// (a roll, or a reset to a snapshot point) lose their directory entries.
/// Apply after [`forget_unsynced`], and only to a log whose directory was
/// not synced since those segments were created. Returns how many
/// segments went.
pub fn forget_new_segments(dir: &Path, durable: LogPosition) -> Result<usize, LogError> {
    let mut gone = 0;
    for entry in std::fs::read_dir(dir).map_err(LogError::io("list log directory", dir))? {
        let entry = entry.map_err(LogError::io("list log directory", dir))?;
        let Some((offset, index)) = entry.file_name().to_str().and_then(parse_segment_name) else {
            continue;
        };
        if index < durable.raft_index {
            continue;
        }
        SegmentPaths::new(dir, offset, index).remove("remove segment")?;
        gone += 1;
    }
    Ok(gone)
}

/// The environment variable naming a trigger file: while that file exists
/// and holds a directory path, every write to a segment file under that
/// directory (and every growth of one) fails with `ENOSPC`, as on a full
/// disk. Read once per process; for tests of a running broker only.
pub const ENOSPC_TRIGGER_ENV: &str = "RILL_FAULT_ENOSPC_TRIGGER";

/// The `ENOSPC` a write to `segment` gets while the trigger file of
/// [`ENOSPC_TRIGGER_ENV`] names a directory holding it; `None` otherwise.
pub(crate) fn injected_enospc(segment: &Path) -> Option<std::io::Error> {
    static TRIGGER: OnceLock<Option<PathBuf>> = OnceLock::new();
    let trigger = TRIGGER
        .get_or_init(|| std::env::var_os(ENOSPC_TRIGGER_ENV).map(PathBuf::from))
        .as_ref()?;
    let dir = std::fs::read_to_string(trigger).ok()?;
    let dir = dir.trim();
    (!dir.is_empty() && segment.starts_with(dir))
        .then(|| std::io::Error::from_raw_os_error(libc::ENOSPC))
}
