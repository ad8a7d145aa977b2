//! Installing a compaction pass's files: the writer's side of a pass.
//!
//! Runs where the log is written (for a Raft replica, the Raft thread),
//! and does no I/O but renames and index removals: each cleaned file
//! replaces its segment only if that segment is still in the log and ends
//! where the pass read it (retention, a truncation or a reset to a
//! snapshot may have taken or changed it since; then the file is dropped).
//! A segment's index files go first and its `.log` is renamed over after,
//! so a crash between the two leaves a segment without an index, which
//! opening rebuilds, never an index of the other version. The new list is
//! published once, after every rename. Making the renames durable is the
//! caller's, off the writer ([`InstallOutcome::dir_to_sync`]).

use std::path::PathBuf;

use super::Cleaned;
use crate::error::LogError;
use crate::index::IndexFile;
use crate::log::Log;
use crate::segment::Segment;

/// What installing a pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstallOutcome {
    /// Segments replaced by their cleaned files.
    pub installed: usize,
    /// Cleaned files dropped: their segment was taken or changed since.
    pub stale: usize,
    /// The log directory, when something was renamed in it: sync it
    /// ([`crate::sync_dir`]) before the next pass over this log.
    pub dir_to_sync: Option<PathBuf>,
}

impl Log {
    /// Replaces the segments a compaction pass cleaned (see
    /// [`crate::compaction`]) by their new files, where they are still as
    /// the pass read them.
    pub fn install_cleaned(&mut self, cleaned: Cleaned) -> Result<InstallOutcome, LogError> {
        let mut outcome = InstallOutcome::default();
        let last = self.segments.len() - 1;
        for mut c in cleaned.segments {
            let found = self.segments.iter().take(last).position(|s| {
                (s.base_offset, s.base_raft_index) == c.base
                    && s.tail.position == c.old_end.position
                    && s.tail.next_offset == c.old_end.next_offset
                    && s.tail.next_raft_index == c.old_end.next_raft_index
                    && s.tail.last_term == c.old_end.last_term
            });
            let Some(i) = found else {
                outcome.stale += 1;
                continue;
            };
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
                    // The old segment's file and mapping live on in the
                    // readers that hold them.
                    self.segments[i] = segment;
                    outcome.installed += 1;
                }
                Err(e) => {
                    // The new file is in place on disk and the old one
                    // still serves this process: both hold the same
                    // newest records, and the next open takes the new one.
                    self.publish_if(&outcome);
                    return Err(e);
                }
            }
        }
        self.publish_if(&outcome);
        if outcome.installed > 0 {
            tracing::debug!(dir = %self.dir().display(), ?outcome, "installed cleaned segments");
        }
        Ok(outcome)
    }

    fn publish_if(&self, outcome: &InstallOutcome) {
        if outcome.installed > 0 {
            self.publish_segments();
        }
    }
}
