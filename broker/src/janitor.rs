//! Removal of deleted replicas' directories and of segments past their
//! retention, away from the Raft thread.
//!
//! A replica of a deleted topic may hold hundreds of MiB of segments, much
//! of it still dirty in the page cache; unlinking them takes a few hundred
//! milliseconds per replica on an ordinary disk. On the Raft thread that
//! would hold back every group's heartbeats and cost elections across the
//! cluster (a topic of 8 partitions took over 3 s). So the Raft thread only
//! renames the directory (one metadata operation) to `<name>.deleted`, and
//! the janitor's own thread removes it.
//!
//! The replica's open files go with the directory ([`Janitor::remove_dir`]
//! takes what still holds them): the last close of an unlinked file is
//! where the filesystem frees its blocks (with `discard`, a synchronous
//! trim seen to take hundreds of milliseconds), and that must not happen
//! on the Raft thread either. Segments deleted by retention are unlinked
//! and closed here for the same reason, once the new log start is durable
//! (synced on a sync thread of its own, beside the deferred Readies' syncs).
//!
//! The data directory is synced after each rename and after each removal
//! (here, not on the Raft thread): until then a machine crash could bring
//! the live name back, a replica no topic holds any more, which nothing
//! would ever remove.
//!
//! Invariants: a directory is renamed before it is handed over, so a crash
//! at any moment leaves either the live directory (its topic's deletion is
//! replayed from the controller log and removes it again) or a `.deleted`
//! one, which the next start removes. Only `.deleted` directories are ever
//! removed here. The queue is bounded ([`QUEUED_MAX`]); when it is full the
//! caller removes the directory itself rather than wait. The thread
//! (started by `crate::threads`) runs every job queued before the last
//! [`Janitor`] is dropped, then ends: at shutdown, what the Raft thread
//! handed over is unlinked before the broker exits.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

use rill_storage::Expired;

/// Jobs waiting for the janitor, at most.
pub const QUEUED_MAX: usize = 1024;

/// The suffix of a directory renamed for removal.
pub const DELETED_SUFFIX: &str = ".deleted";

/// Makes a directory's entries durable (`fsync` of the directory). A
/// setting of the janitor so tests can see what it syncs, and when.
pub type DirSync = std::sync::Arc<dyn Fn(&Path) -> std::io::Result<()> + Send + Sync>;

/// `fsync` of the directory `dir`.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Work for the janitor's thread.
enum Job {
    /// A directory to remove, and whatever still holds its files open
    /// (dropped first).
    RemoveDir { dir: PathBuf, holder: Box<dyn Send> },
    /// Something whose drop closes deleted files.
    Drop(Box<dyn Send>),
    /// Segments retention took out of logs: unlinked, then closed.
    Unlink(Vec<Expired>),
}

impl Job {
    fn run(self, sync: &DirSync) {
        match self {
            Job::RemoveDir { dir, holder } => {
                drop(holder);
                // The rename first: once it is durable, a crash leaves a
                // `.deleted` directory, which the next start removes.
                sync_parent(&dir, sync);
                remove(&dir);
                sync_parent(&dir, sync);
            }
            Job::Drop(holder) => drop(holder),
            Job::Unlink(all) => {
                for expired in all {
                    if let Err(e) = expired.unlink() {
                        // They stay on disk below the snapshot point; the
                        // next retention pass after a restart takes them.
                        tracing::warn!(error = %e, "could not delete expired segments");
                    }
                }
            }
        }
    }
}

/// Hands directories to the janitor thread.
pub struct Janitor {
    queue: SyncSender<Job>,
    sync: DirSync,
}

/// The janitor thread's work: the `.deleted` directories an earlier run
/// left, then every job queued, until the [`Janitor`] is dropped.
pub struct JanitorWork {
    jobs: Receiver<Job>,
    /// Listed when the janitor was made, before anything was handed to
    /// it: a directory renamed later is its job's to remove.
    leftovers: Vec<PathBuf>,
    sync: DirSync,
}

impl JanitorWork {
    /// Runs the janitor: the leftovers first, then each job as it comes;
    /// returns once the queue is closed and empty.
    pub fn run(self) {
        for dir in &self.leftovers {
            remove(dir);
        }
        if let Some(dir) = self.leftovers.first() {
            sync_parent(dir, &self.sync);
        }
        for job in self.jobs {
            job.run(&self.sync);
        }
    }
}

impl Janitor {
    /// A janitor for `data_dir` and its thread's work (which starts by
    /// removing the `.deleted` directories an earlier run left there), for
    /// `crate::threads::start_janitor` to run.
    pub fn new(data_dir: &Path) -> (Janitor, JanitorWork) {
        Janitor::new_with(data_dir, std::sync::Arc::new(sync_dir))
    }

    /// As [`Janitor::new`], syncing directories with `sync`.
    pub fn new_with(data_dir: &Path, sync: DirSync) -> (Janitor, JanitorWork) {
        let (queue, jobs) = sync_channel::<Job>(QUEUED_MAX);
        let work = JanitorWork {
            jobs,
            leftovers: leftovers(data_dir),
            sync: sync.clone(),
        };
        (Janitor { queue, sync }, work)
    }

    /// Renames `dir` out of the way and has it removed in the background,
    /// after dropping `holder` (what still holds the directory's files
    /// open, so that their last close happens there too). Returns once the
    /// rename is done: from then on nothing opens the old name's files.
    /// On error `holder` is dropped here.
    pub fn remove_dir(&self, dir: &Path, holder: impl Send + 'static) -> std::io::Result<()> {
        let mut name = dir.as_os_str().to_owned();
        name.push(DELETED_SUFFIX);
        let renamed = PathBuf::from(name);
        std::fs::rename(dir, &renamed)?;
        self.submit(Job::RemoveDir {
            dir: renamed,
            holder: Box::new(holder),
        });
        Ok(())
    }

    /// Has `holder` dropped on the janitor's thread: what still holds a
    /// deleted replica's files open (a sync that completed after its group
    /// closed).
    pub fn drop_later(&self, holder: impl Send + 'static) {
        self.submit(Job::Drop(Box::new(holder)));
    }

    /// Has the segments retention took out of logs unlinked and closed on
    /// the janitor's thread: with `discard`, unlinking and the last close
    /// free the blocks synchronously. One job for all of them, so a full
    /// queue cannot push a pass's worth back onto the caller.
    pub fn unlink_expired(&self, expired: Vec<Expired>) {
        if !expired.is_empty() {
            self.submit(Job::Unlink(expired));
        }
    }

    /// Queues `job`, or runs it here when the queue is full.
    fn submit(&self, job: Job) {
        if let Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) =
            self.queue.try_send(job)
        {
            job.run(&self.sync);
        }
    }
}

/// The `.deleted` directories directly under `data_dir`.
fn leftovers(data_dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(data_dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.ends_with(DELETED_SUFFIX))
        })
        .collect()
}

/// Syncs the directory holding `dir`. A failure is logged: the removal
/// itself is done, and at worst a machine crash brings the directory back.
fn sync_parent(dir: &Path, sync: &DirSync) {
    let Some(parent) = dir.parent() else {
        return;
    };
    if let Err(e) = sync(parent) {
        tracing::warn!(dir = %parent.display(), error = %e, "could not sync the data directory after a removal");
    }
}

fn remove(dir: &Path) {
    let started = std::time::Instant::now();
    match std::fs::remove_dir_all(dir) {
        Ok(()) => tracing::debug!(
            dir = %dir.display(),
            ms = started.elapsed().as_millis() as u64,
            "removed a deleted replica's directory"
        ),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "could not remove a deleted replica's directory");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A janitor with its thread running (left to end with the test).
    fn start_with(data_dir: &Path, sync: DirSync) -> Janitor {
        let (janitor, work) = Janitor::new_with(data_dir, sync);
        crate::threads::spawn(crate::threads::JANITOR, move || work.run()).expect("a thread");
        janitor
    }

    fn start(data_dir: &Path) -> Janitor {
        start_with(data_dir, std::sync::Arc::new(sync_dir))
    }

    fn wait_gone(p: &Path) -> bool {
        for _ in 0..500 {
            if !p.exists() {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        false
    }

    /// `parent/name`, made with one segment file in it.
    fn replica_dir(parent: &Path, name: &str) -> PathBuf {
        let dir = parent.join(name);
        std::fs::create_dir(&dir).expect("mkdir");
        std::fs::write(dir.join("00000000000000000000.log"), b"bytes").expect("write");
        dir
    }

    #[test]
    fn removed_directory_is_renamed_at_once_and_gone_soon_after() {
        let data = tempfile::tempdir().expect("temp dir");
        let dir = replica_dir(data.path(), "t1-0");
        let janitor = start(data.path());
        janitor.remove_dir(&dir, ()).expect("remove");
        assert!(
            !dir.exists(),
            "the live name is free as soon as remove_dir returns"
        );
        assert!(wait_gone(&data.path().join("t1-0.deleted")));
    }

    /// A [`DirSync`] that records each directory synced and whether the
    /// `.deleted` directory `watched` existed then.
    fn recording(watched: PathBuf) -> (DirSync, std::sync::mpsc::Receiver<(PathBuf, bool)>) {
        let (seen, synced) = std::sync::mpsc::channel();
        let seen = std::sync::Mutex::new(seen);
        let sync: DirSync = std::sync::Arc::new(move |dir: &Path| {
            let _ = seen
                .lock()
                .expect("not poisoned")
                .send((dir.to_path_buf(), watched.exists()));
            sync_dir(dir)
        });
        (sync, synced)
    }

    #[test]
    fn the_data_directory_is_synced_after_the_rename_and_after_the_removal() {
        let data = tempfile::tempdir().expect("temp dir");
        let dir = replica_dir(data.path(), "t1-0");
        let renamed = data.path().join("t1-0.deleted");
        let (sync, synced) = recording(renamed.clone());
        let janitor = start_with(data.path(), sync);
        janitor.remove_dir(&dir, ()).expect("remove");
        let deadline = std::time::Duration::from_secs(5);
        let first = synced.recv_timeout(deadline).expect("a sync");
        assert_eq!(
            first,
            (data.path().to_path_buf(), true),
            "the rename made durable before the removal"
        );
        let second = synced.recv_timeout(deadline).expect("a sync");
        assert_eq!(
            second,
            (data.path().to_path_buf(), false),
            "the removal made durable"
        );
    }

    #[test]
    fn the_data_directory_is_synced_after_leftovers_are_removed() {
        let data = tempfile::tempdir().expect("temp dir");
        let left = replica_dir(data.path(), "t1-3.deleted");
        let (sync, synced) = recording(left.clone());
        let _janitor = start_with(data.path(), sync);
        let seen = synced
            .recv_timeout(std::time::Duration::from_secs(5))
            .expect("a sync");
        assert_eq!(seen, (data.path().to_path_buf(), false));
    }

    #[test]
    fn start_removes_what_a_crashed_run_left_and_nothing_else() {
        let data = tempfile::tempdir().expect("temp dir");
        let left = replica_dir(data.path(), "t1-3.deleted");
        let live = data.path().join("t2-0");
        std::fs::create_dir(&live).expect("mkdir");
        let _janitor = start(data.path());
        assert!(wait_gone(&left));
        assert!(live.exists(), "a live replica's directory is never touched");
    }

    #[test]
    fn the_thread_runs_every_queued_job_before_it_ends() {
        let data = tempfile::tempdir().expect("temp dir");
        let dirs: Vec<PathBuf> = (0..20)
            .map(|i| replica_dir(data.path(), &format!("t1-{i}")))
            .collect();
        let (janitor, work) = Janitor::new(data.path());
        for dir in &dirs {
            janitor.remove_dir(dir, ()).expect("remove");
        }
        // Queued before the thread even starts; dropping the janitor
        // closes the queue behind them.
        drop(janitor);
        let thread =
            crate::threads::spawn(crate::threads::JANITOR, move || work.run()).expect("a thread");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        assert!(thread.join_by(deadline), "the thread ends");
        let left: Vec<_> = std::fs::read_dir(data.path())
            .expect("read dir")
            .filter_map(Result::ok)
            .map(|e| e.file_name())
            .collect();
        assert!(left.is_empty(), "every removal done first: {left:?}");
    }

    #[test]
    fn renaming_a_missing_directory_is_an_error() {
        let data = tempfile::tempdir().expect("temp dir");
        let janitor = start(data.path());
        assert!(janitor.remove_dir(&data.path().join("absent"), ()).is_err());
    }

    /// Records, when dropped, the thread it was dropped on and whether the
    /// directory still existed then.
    struct Holder {
        dir: PathBuf,
        seen: std::sync::mpsc::Sender<(Option<String>, bool)>,
    }

    impl Drop for Holder {
        fn drop(&mut self) {
            let thread = std::thread::current().name().map(str::to_owned);
            let _ = self.seen.send((thread, self.dir.exists()));
        }
    }

    #[test]
    fn a_holder_given_alone_is_dropped_on_the_janitor_thread() {
        let data = tempfile::tempdir().expect("temp dir");
        let janitor = start(data.path());
        let (seen, dropped) = std::sync::mpsc::channel();
        janitor.drop_later(Holder {
            dir: data.path().to_path_buf(),
            seen,
        });
        let (thread, _) = dropped
            .recv_timeout(std::time::Duration::from_secs(5))
            .expect("the holder is dropped");
        assert_eq!(thread.as_deref(), Some("rill-janitor"));
    }

    #[test]
    fn the_files_last_holder_is_dropped_on_the_janitor_thread_before_removal() {
        let data = tempfile::tempdir().expect("temp dir");
        let dir = replica_dir(data.path(), "t1-0");
        let janitor = start(data.path());
        let (seen, dropped) = std::sync::mpsc::channel();
        let holder = Holder {
            dir: data.path().join("t1-0.deleted"),
            seen,
        };
        janitor.remove_dir(&dir, holder).expect("remove");
        let (thread, existed) = dropped
            .recv_timeout(std::time::Duration::from_secs(5))
            .expect("the holder is dropped");
        assert_eq!(thread.as_deref(), Some("rill-janitor"));
        assert!(existed, "dropped before the directory is removed");
        assert!(wait_gone(&data.path().join("t1-0.deleted")));
    }
}
