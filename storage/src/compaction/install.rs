//! Installing a compaction pass's files: the writer's side of a pass.
//!
//! Runs where the log is written (for a Raft replica, the Raft thread),
//! and does no I/O but renames and removals of index files: each cleaned
//! file replaces its group of segments only if every one of them is still
//! in the log and ends where the pass read it (retention, a truncation or
//! a reset to a snapshot may have taken or changed one since; then the
//! file is dropped). The first segment's index files go first and the new
//! file is renamed over its `.log` after, so a crash between the two
//! leaves a segment without an index, which opening rebuilds, never an
//! index of the other version. The new list is published once, after
//! every rename.
//!
//! The other segments of a group leave the list at once but stay on disk
//! ([`InstallOutcome::merged_away`]): the caller makes the renames durable
//! ([`InstallOutcome::dir_to_sync`]), then has the writer remove them one
//! at a time, oldest first, syncing the directory after each
//! ([`Log::remove_merged_away`]). Recovery trusts a segment only up to the
//! next one's base, so at every step the log on disk is the new file up to
//! the first old segment left, then those old segments: the same records
//! or more, never a hole.

use std::path::PathBuf;

use super::Cleaned;
use crate::error::LogError;
use crate::index::IndexFile;
use crate::log::Log;
use crate::segment::{Segment, SegmentPaths};

/// What installing a pass did.
#[derive(Debug, Default)]
pub struct InstallOutcome {
    /// Files installed, each replacing a group of segments.
    pub installed: usize,
    /// Cleaned files dropped: a segment of theirs was taken or changed
    /// since.
    pub stale: usize,
    /// The log directory, when something was renamed in it: sync it
    /// ([`crate::sync_dir`]) before removing what was merged away and
    /// before the next pass over this log.
    pub dir_to_sync: Option<PathBuf>,
    /// Segments merged into an installed file, out of the log but still on
    /// disk, oldest first: remove each with [`Log::remove_merged_away`],
    /// in order, syncing the directory after each.
    pub merged_away: Vec<MergedAway>,
}

/// A segment merged into another's cleaned file: out of the log, its
/// files still on disk.
#[derive(Debug, Clone)]
pub struct MergedAway {
    paths: SegmentPaths,
}

impl Log {
    /// Replaces the segments a compaction pass cleaned (see
    /// [`crate::compaction`]) by their new files, where they are still as
    /// the pass read them.
    pub fn install_cleaned(&mut self, cleaned: Cleaned) -> Result<InstallOutcome, LogError> {
        let mut outcome = InstallOutcome::default();
        for mut c in cleaned.segments {
            let last = self.segments.len() - 1;
            let Some(i) = self
                .segments
                .iter()
                .position(|s| (s.base_offset, s.base_raft_index) == c.base)
            else {
                outcome.stale += 1;
                continue;
            };
            let n = c.replaces.len();
            let unchanged = i + n <= last
                && self
                    .segments
                    .range(i..i + n)
                    .zip(&c.replaces)
                    .all(|(s, (base, end))| {
                        (s.base_offset, s.base_raft_index) == *base
                            && s.tail.position == end.position
                            && s.tail.next_offset == end.next_offset
                            && s.tail.next_raft_index == end.next_raft_index
                            && s.tail.last_term == end.last_term
                    });
            if !unchanged {
                outcome.stale += 1;
                continue;
            }
            let tmp = c
                .tmp
                .take()
                .expect("a cleaned segment not yet installed has its file");
            let file = c
                .file
                .take()
                .expect("a cleaned segment is built with its file");
            let paths = self.segments[i].paths.clone();
            let remove_index = |p: &PathBuf| match std::fs::remove_file(p) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(LogError::io("remove index of a cleaned segment", p)(e)),
            };
            let renamed = remove_index(&paths.index)
                .and_then(|()| remove_index(&paths.timeindex))
                .and_then(|()| {
                    std::fs::rename(&tmp, &paths.log)
                        .map_err(LogError::io("install cleaned segment", &paths.log))
                });
            if let Err(e) = renamed {
                let _ = std::fs::remove_file(&tmp);
                self.publish_if(&outcome);
                return Err(e);
            }
            outcome.dir_to_sync = Some(self.dir().to_path_buf());
            self.dir_generation += 1;
            let index = IndexFile::new(paths.index.clone(), std::mem::take(&mut c.index));
            let times = IndexFile::new(paths.timeindex.clone(), std::mem::take(&mut c.times));
            match Segment::sealed(paths, file, c.tail, index, times, c.base) {
                Ok(segment) => {
                    // The old segments' files and mappings live on in the
                    // readers that hold them.
                    let replaced: Vec<Segment> = self.segments.drain(i..i + n).collect();
                    self.segments.insert(i, segment);
                    outcome.merged_away.extend(
                        replaced
                            .into_iter()
                            .skip(1)
                            .map(|s| MergedAway { paths: s.paths }),
                    );
                    outcome.installed += 1;
                }
                Err(e) => {
                    // The new file is in place on disk and the old
                    // segments still serve this process: they hold the
                    // same newest records, and the next open takes the new
                    // file up to the first old segment after it.
                    self.publish_if(&outcome);
                    return Err(e);
                }
            }
        }
        self.publish_if(&outcome);
        if outcome.installed > 0 {
            tracing::debug!(dir = %self.dir().display(), installed = outcome.installed, stale = outcome.stale, merged_away = outcome.merged_away.len(), "installed cleaned segments");
        }
        Ok(outcome)
    }

    /// Removes the files of a segment merged away by
    /// [`Log::install_cleaned`], unless the log holds a segment of that
    /// name again (it was reopened since, finding the file): `false` then.
    pub fn remove_merged_away(&mut self, merged: &MergedAway) -> Result<bool, LogError> {
        if self
            .segments
            .iter()
            .any(|s| s.paths.log == merged.paths.log)
        {
            return Ok(false);
        }
        merged.paths.remove("remove a merged segment")?;
        self.dir_generation += 1;
        Ok(true)
    }

    fn publish_if(&self, outcome: &InstallOutcome) {
        if outcome.installed > 0 {
            self.publish_segments();
        }
    }
}
