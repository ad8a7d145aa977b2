//! Sync pools: threads that run one sync round's `fdatasync`s side by side.
//!
//! Each sync waits on the disk, not the CPU, so several in flight overlap:
//! a round's jobs are spread over up to [`SYNC_THREADS_MAX`] threads. The
//! threads are started the first time a round needs them and then kept for
//! the pool's life, so a round pays no thread start (rounds used to spawn
//! their threads afresh, every round).
//!
//! Each sync thread (the deferred rounds', retention's) and the Raft thread
//! (one-voter groups, synced within the round) owns a pool of its own:
//! retention's state syncs never queue behind the log's, as they never did.
//! A sync thread's work is a [`Syncer`]: its sync rounds, one after
//! another, on its pool (`crate::threads` starts and joins the thread).
//!
//! Invariants: every job handed to [`SyncPool::run`] comes back as exactly
//! one result, in the order given; a worker holds at most one bucket of
//! jobs (its queue is bounded at one, and `run` waits for every bucket
//! before it returns); dropping the pool closes the queues and joins every
//! worker (idle by then: `run` has had every bucket back).

use std::sync::mpsc;
use std::time::{Duration, Instant};

use rill_replication::{SyncJob, SyncResult, SyncRound, SyncedRound};
use tokio::sync::mpsc as tokio_mpsc;

use super::round::run_syncs;
use super::{Command, SYNC_THREADS_MAX};
use crate::threads::{self, Thread};

/// Longest a dropping pool waits for its threads to end, ms: they are
/// idle then, so this is only a guard against a stuck disk.
const POOL_JOIN_MS_MAX: u64 = 10_000;

/// Jobs with their places in the round, and where their results go.
type Bucket = (
    Vec<(usize, SyncJob)>,
    mpsc::Sender<Vec<(usize, SyncResult)>>,
);

/// A pool of sync threads. See the module documentation.
#[derive(Debug)]
pub(super) struct SyncPool {
    /// Names its threads: `<name>-<n>`.
    name: String,
    workers: Vec<Worker>,
}

#[derive(Debug)]
struct Worker {
    /// `None` once the pool is dropping: closing it ends the thread.
    work: Option<mpsc::SyncSender<Bucket>>,
    thread: Option<Thread>,
}

impl SyncPool {
    /// A pool with no threads yet; its threads are named `<name>-<n>`.
    pub(super) fn new(name: &str) -> SyncPool {
        SyncPool {
            name: name.to_string(),
            workers: Vec::new(),
        }
    }

    /// Runs a round's jobs: inline when there is one, otherwise spread
    /// over up to [`SYNC_THREADS_MAX`] of the pool's threads. Returns one
    /// result per job, in the jobs' order.
    pub(super) fn run(&mut self, jobs: Vec<SyncJob>) -> Vec<SyncResult> {
        if jobs.len() <= 1 {
            return jobs.into_iter().map(SyncJob::run).collect();
        }
        let threads = self.grow_to(jobs.len().min(SYNC_THREADS_MAX));
        if threads == 0 {
            return jobs.into_iter().map(SyncJob::run).collect();
        }
        let count = jobs.len();
        let mut buckets: Vec<Vec<(usize, SyncJob)>> = (0..threads).map(|_| Vec::new()).collect();
        for (i, job) in jobs.into_iter().enumerate() {
            buckets[i % threads].push((i, job));
        }
        let (results_tx, results_rx) = mpsc::channel();
        let mut inline = Vec::new();
        for (worker, bucket) in self.workers.iter().zip(buckets) {
            let sent = worker
                .work
                .as_ref()
                .expect("the pool's queues close only when it drops")
                .send((bucket, results_tx.clone()));
            // A worker gone (it cannot panic: a sync job reports its
            // failure as a result) leaves its bucket to run here.
            if let Err(mpsc::SendError((bucket, _))) = sent {
                inline.extend(bucket);
            }
        }
        drop(results_tx);
        let mut results: Vec<(usize, SyncResult)> = Vec::with_capacity(count);
        results.extend(inline.into_iter().map(|(i, job)| (i, job.run())));
        for bucket in results_rx.iter() {
            results.extend(bucket);
        }
        assert_eq!(results.len(), count, "a sync job does not panic");
        results.sort_unstable_by_key(|(i, _)| *i);
        results.into_iter().map(|(_, r)| r).collect()
    }

    /// Starts threads until the pool has `threads` (fewer if the system
    /// refuses more); returns how many it has.
    fn grow_to(&mut self, threads: usize) -> usize {
        while self.workers.len() < threads {
            let (tx, rx) = mpsc::sync_channel::<Bucket>(1);
            let name = format!("{}-{}", self.name, self.workers.len());
            let spawned = threads::spawn(name, move || {
                while let Ok((bucket, results)) = rx.recv() {
                    let done = bucket.into_iter().map(|(i, job)| (i, job.run())).collect();
                    let _ = results.send(done);
                }
            });
            match spawned {
                Ok(thread) => self.workers.push(Worker {
                    work: Some(tx),
                    thread: Some(thread),
                }),
                Err(e) => {
                    tracing::warn!(error = %e, pool = %self.name, "could not start a sync thread; syncing with fewer");
                    break;
                }
            }
        }
        self.workers.len()
    }
}

impl Drop for SyncPool {
    fn drop(&mut self) {
        for w in &mut self.workers {
            w.work.take();
        }
        let deadline = Instant::now() + Duration::from_millis(POOL_JOIN_MS_MAX);
        for w in &mut self.workers {
            if let Some(thread) = w.thread.take() {
                thread.join_by(deadline);
            }
        }
    }
}

/// A sync thread's work: it runs sync rounds one after another, in the
/// order the Raft thread made them, and hands each outcome back as the
/// command `done` makes of it. It holds only a weak sender, so the Raft
/// thread still sees its channel close when the rest of the broker lets
/// go; it ends when the Raft thread drops the sync round sender.
///
/// Its queue needs no bound of its own: the deferred sync rounds' thread
/// has one at a time (`RaftLoop::syncing`), and a retention sync round
/// holds only groups with no state sync in flight, so all of them together
/// hold each group once at most.
pub struct Syncer {
    rounds: mpsc::Receiver<SyncRound>,
    pool: SyncPool,
    commands: tokio_mpsc::WeakSender<Command>,
    done: fn(SyncedRound) -> Command,
}

impl Syncer {
    /// A sync thread's work, named `name` (its pool's threads are
    /// `<name>-<n>`), and where the Raft thread sends it sync rounds.
    pub(super) fn new(
        name: &str,
        commands: tokio_mpsc::WeakSender<Command>,
        done: fn(SyncedRound) -> Command,
    ) -> (mpsc::Sender<SyncRound>, Syncer) {
        let (tx, rounds) = mpsc::channel::<SyncRound>();
        let syncer = Syncer {
            rounds,
            pool: SyncPool::new(name),
            commands,
            done,
        };
        (tx, syncer)
    }

    /// Runs sync rounds until the Raft thread drops its sender (or is
    /// gone); the pool's threads are joined on the way out.
    pub fn run(mut self) {
        while let Ok(syncs) = self.rounds.recv() {
            let synced = syncs.run_with(|jobs| run_syncs(&mut self.pool, jobs, true));
            let Some(commands) = self.commands.upgrade() else {
                return;
            };
            if commands.blocking_send((self.done)(synced)).is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pool_runs_every_job_of_a_round_once_and_keeps_its_threads() {
        use rill_replication::Event;
        let dir = tempfile::tempdir().expect("temp dir");
        let clock = std::sync::Arc::new(rill_storage::ManualClock::new(0));
        let mut pool = SyncPool::new("test-sync");
        for round in 0..3 {
            let mut node = rill_replication::Node::new(
                rill_replication::NodeConfig::new(rill_replication::BrokerId(1)),
                clock.clone(),
            );
            let (r, jobs) = one_voter_round(&mut node, dir.path(), round, 11);
            let count = jobs.len();
            assert!(count >= 11, "a sync per group at least: {count}");
            let results = pool.run(jobs);
            assert_eq!(results.len(), count, "one result per job");
            // Each result completes its own group's sync.
            let (mut out, mut events) = (Vec::new(), Vec::new());
            node.finish_round(r, results, &mut out, &mut events);
            assert!(
                !events.iter().any(|e| matches!(e, Event::Failed { .. })),
                "{events:?}"
            );
        }
        assert_eq!(pool.workers.len(), SYNC_THREADS_MAX, "kept across rounds");
        drop(pool);
    }

    /// A round of `groups` one-voter groups that just elected themselves,
    /// under `dir/<round>-<group>`: the round and its sync jobs.
    fn one_voter_round(
        node: &mut rill_replication::Node,
        dir: &std::path::Path,
        round: u64,
        groups: u64,
    ) -> (rill_replication::Round, Vec<SyncJob>) {
        use rill_replication::state::{Membership, MemoryStateStore, ReplicaState};
        use rill_replication::{BrokerId, GroupId, ReplicaSpec};
        for g in 1..=groups {
            let d = dir.join(format!("{round}-{g}"));
            std::fs::create_dir_all(&d).expect("dir");
            node.add_group(ReplicaSpec {
                group: GroupId(g),
                dir: &d,
                log_config: rill_storage::LogConfig::default(),
                fsync: true,
                store: Box::new(MemoryStateStore::default()),
                state: ReplicaState::initial(Membership::voters([BrokerId(1)])),
            })
            .expect("opens");
            node.campaign(GroupId(g)).expect("campaigns");
        }
        let (mut out, mut events, mut jobs) = (Vec::new(), Vec::new(), Vec::new());
        let mut r = node.start_round(&mut out, &mut events);
        node.write_round(&mut r, &mut jobs, &mut events);
        (r, jobs)
    }
}
