//! Durability as a step of its own, so a caller can group-commit.
//!
//! Appends only write bytes to the page cache. [`Log::sync_plan`] lists the
//! segment files written since the last sync, with the ranges written (and
//! the directory, when a segment was created or unlinked); [`SyncPlan::run`]
//! syncs them (`fdatasync` of each file) and may run on any
//! thread, in parallel with other logs' plans, while the log keeps taking
//! appends; [`Log::complete_sync`] records the result and writes the index
//! entries that the newly durable bytes cover. [`Log::flush`] does all three.
//!
//! Invariant: `durable` only moves to a position whose bytes were synced by
//! a plan that no truncation overtook; an index entry reaches its file only
//! once the bytes before it are durable.

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

use crate::error::LogError;
use crate::log::{Log, LogPosition};
use crate::recovery::sync_dir;
use crate::types::RaftIndex;

/// The syncs one flush needs. `Send`: run it wherever suits.
#[derive(Debug)]
#[must_use = "a plan does nothing until it is run and completed"]
pub struct SyncPlan {
    files: Vec<PlannedFile>,
    dir: Option<PathBuf>,
    dir_generation: u64,
    truncations: u64,
    position: LogPosition,
}

#[derive(Debug)]
struct PlannedFile {
    file: Arc<File>,
    path: PathBuf,
    segment: RaftIndex,
    /// The range written since the last sync.
    start: u64,
    end: u64,
}

/// A plan that ran: hand it to [`Log::complete_sync`].
#[derive(Debug)]
#[must_use = "the log only counts a sync once it is completed"]
pub struct SyncDone(SyncPlan);

impl SyncPlan {
    /// Bytes of segment data the plan syncs.
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.end - f.start).sum()
    }

    /// Whether there is nothing to sync.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty() && self.dir.is_none()
    }

    /// The log position that is durable once this plan completes.
    pub fn position(&self) -> LogPosition {
        self.position
    }

    /// The segment files this plan syncs.
    pub fn file_paths(&self) -> impl Iterator<Item = &std::path::Path> {
        self.files.iter().map(|f| f.path.as_path())
    }

    /// Whether this plan syncs the log directory (a segment was created or
    /// unlinked since the last sync).
    pub fn syncs_dir(&self) -> bool {
        self.dir.is_some()
    }

    /// Syncs every planned file (`fdatasync`: the range written since the
    /// last sync is all a segment file has unsynced), then the directory.
    pub fn run(self) -> Result<SyncDone, LogError> {
        for f in &self.files {
            f.file
                .sync_data()
                .map_err(LogError::io("sync segment", &f.path))?;
        }
        if let Some(dir) = &self.dir {
            sync_dir(dir)?;
        }
        Ok(SyncDone(self))
    }
}

impl Log {
    /// Lists what must be synced for everything appended so far to be durable.
    pub fn sync_plan(&self) -> SyncPlan {
        let files = self
            .segments
            .iter()
            .filter(|s| s.synced_end < s.tail.position)
            .map(|s| PlannedFile {
                file: Arc::clone(&s.file),
                path: s.paths.log.clone(),
                segment: s.base_raft_index,
                start: s.synced_end,
                end: s.tail.position,
            })
            .collect();
        SyncPlan {
            files,
            dir: (self.dir_generation > self.dir_synced_generation)
                .then(|| self.dir().to_path_buf()),
            dir_generation: self.dir_generation,
            truncations: self.truncations,
            position: self.end(),
        }
    }

    /// Records a plan that ran and returns the durable position. Writes the
    /// index entries the synced bytes now cover (never synced themselves).
    pub fn complete_sync(&mut self, done: SyncDone) -> Result<LogPosition, LogError> {
        let plan = done.0;
        if plan.truncations == self.truncations {
            for f in &plan.files {
                if let Some(seg) = self
                    .segments
                    .iter_mut()
                    .find(|s| s.base_raft_index == f.segment)
                {
                    seg.synced_end = seg.synced_end.max(f.end.min(seg.tail.position));
                }
            }
            self.durable = self.durable.max(plan.position.min(self.end()));
        }
        self.dir_synced_generation = self.dir_synced_generation.max(plan.dir_generation);
        for seg in self.segments.iter_mut() {
            seg.persist_indexes(false)?;
        }
        Ok(self.durable)
    }

    /// Makes everything appended so far durable: plan, run and complete in
    /// one call. Returns the durable position.
    pub fn flush(&mut self) -> Result<LogPosition, LogError> {
        let plan = self.sync_plan();
        let done = plan.run()?;
        self.complete_sync(done)
    }
}
