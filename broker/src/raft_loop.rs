//! The Raft thread: the one place this broker's partition logs are written.
//!
//! A dedicated OS thread owns the broker's [`Node`] (every replica's
//! raft-rs group) and runs its Ready loop: it takes commands (proposals,
//! ticks, replicas to open or close) from a bounded channel, drains what
//! has queued, runs one round over every group with work, and runs the
//! round's syncs (one `fdatasync` per file written, several files in
//! parallel) before finishing it. Whatever arrives during a sync waits for
//! the next round, so one sync serves every produce that queued behind it:
//! group commit without a timer.
//!
//! Events of a round (entries appended, committed, leaders changed) are
//! published on each [`Partition`]'s watch channels, where produce handlers
//! wait for their `acks` and fetches for new data.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rill_replication::state::{FileStateStore, Membership, ReplicaState};
use rill_replication::{
    BrokerId, CheckedBatch, Event, GroupId, GroupStatus, Node, NodeConfig, Outgoing, Proposed,
    ReplicaSpec, ReplicationError, SyncJob, SyncResult,
};
use rill_storage::{LogConfig, SystemClock};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::partition::Partition;

/// Commands queued for the Raft thread, at most.
pub const COMMANDS_QUEUED_MAX: usize = 4096;
/// Commands handled per iteration, at most, so a flood of proposals still
/// leaves room for rounds.
pub const COMMANDS_PER_ROUND_MAX: usize = 1024;
/// How often every group ticks. With `election_tick` 10, an election
/// timeout of 1 s.
pub const TICK_MS: u64 = 100;
/// Threads a round's syncs spread over, at most.
pub const SYNC_THREADS_MAX: usize = 8;

/// What opening a partition replica needs.
#[derive(Debug)]
pub struct OpenReplica {
    /// The topic's name.
    pub topic: String,
    /// The partition number.
    pub index: u32,
    /// Its Raft group.
    pub group: GroupId,
    /// Its directory.
    pub dir: PathBuf,
    /// Its log settings.
    pub log_config: LogConfig,
    /// The topic's durability mode.
    pub fsync: bool,
    /// The voters it starts from (a new replica; an existing one has its
    /// membership on disk).
    pub voters: Vec<BrokerId>,
}

/// A request to the Raft thread.
#[derive(Debug)]
pub enum Command {
    /// Propose batches as the group's leader, in order.
    Propose {
        /// The group.
        group: GroupId,
        /// Whole, checked batches.
        batches: Vec<CheckedBatch>,
        /// Where each lands, or why it could not be proposed.
        reply: oneshot::Sender<Result<Vec<Proposed>, ReplicationError>>,
    },
    /// Open a replica and start its group.
    Open {
        /// What to open.
        replica: OpenReplica,
        /// The partition, serving reads from the replica's log.
        reply: oneshot::Sender<Result<Arc<Partition>, ReplicationError>>,
    },
    /// Stop a group (its files are the caller's to remove).
    Close {
        /// The group.
        group: GroupId,
        /// Done.
        reply: oneshot::Sender<()>,
    },
    /// One tick for every group.
    Tick,
    /// Apply retention to every group.
    Retention,
    /// Replication state of every group, for status reports.
    Status {
        /// The groups' states.
        reply: oneshot::Sender<Vec<GroupStatus>>,
    },
    /// Sync every log and stop the thread.
    Stop {
        /// Done.
        reply: oneshot::Sender<()>,
    },
}

/// The handle the rest of the broker uses to reach the Raft thread.
#[derive(Debug, Clone)]
pub struct RaftHandle {
    commands: mpsc::Sender<Command>,
}

/// The Raft thread has stopped (the broker is shutting down).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the replication thread has stopped")]
pub struct Stopped;

impl RaftHandle {
    /// Queues a command, waiting while the queue is full.
    pub async fn send(&self, command: Command) -> Result<(), Stopped> {
        self.commands.send(command).await.map_err(|_| Stopped)
    }

    /// Queues a command from a thread outside the async runtime.
    pub fn blocking_send(&self, command: Command) -> Result<(), Stopped> {
        self.commands.blocking_send(command).map_err(|_| Stopped)
    }

    /// Proposes batches; see [`Command::Propose`].
    pub async fn propose(
        &self,
        group: GroupId,
        batches: Vec<CheckedBatch>,
    ) -> Result<Result<Vec<Proposed>, ReplicationError>, Stopped> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Propose {
            group,
            batches,
            reply,
        })
        .await?;
        rx.await.map_err(|_| Stopped)
    }

    /// Opens a replica; see [`Command::Open`].
    pub async fn open(&self, replica: OpenReplica) -> Result<Arc<Partition>, ReplicationError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Open { replica, reply })
            .await
            .map_err(|_| ReplicationError::Stopped)?;
        rx.await.map_err(|_| ReplicationError::Stopped)?
    }

    /// As [`RaftHandle::open`], from outside the runtime (start-up).
    pub fn blocking_open(&self, replica: OpenReplica) -> Result<Arc<Partition>, ReplicationError> {
        let (reply, rx) = oneshot::channel();
        self.blocking_send(Command::Open { replica, reply })
            .map_err(|_| ReplicationError::Stopped)?;
        rx.blocking_recv().map_err(|_| ReplicationError::Stopped)?
    }

    /// Closes a group; see [`Command::Close`].
    pub async fn close(&self, group: GroupId) {
        let (reply, rx) = oneshot::channel();
        if self.send(Command::Close { group, reply }).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Every group's replication state.
    pub async fn status(&self) -> Vec<GroupStatus> {
        let (reply, rx) = oneshot::channel();
        if self.send(Command::Status { reply }).await.is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    /// Syncs every log and stops the thread.
    pub async fn stop(&self) {
        let (reply, rx) = oneshot::channel();
        if self.send(Command::Stop { reply }).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// Starts the Raft thread for broker `id`, with a tick task on the current
/// tokio runtime. `data_arrived` is woken whenever a high watermark moves.
pub fn start(id: BrokerId, data_arrived: Arc<Notify>) -> std::io::Result<RaftHandle> {
    let (tx, rx) = mpsc::channel(COMMANDS_QUEUED_MAX);
    let mut config = NodeConfig::new(id);
    // Election jitter differs from broker to broker and run to run.
    config.jitter_seed = id.get()
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
    let node = Node::new(config, Arc::new(SystemClock));
    let mut raft = RaftLoop {
        node,
        partitions: BTreeMap::new(),
        commands: rx,
        data_arrived,
    };
    std::thread::Builder::new()
        .name("rill-raft".into())
        .spawn(move || raft.run())?;
    let handle = RaftHandle { commands: tx };
    Ok(handle)
}

/// Sends a tick every [`TICK_MS`] until the Raft thread stops.
pub async fn tick(handle: RaftHandle) {
    let mut every = tokio::time::interval(Duration::from_millis(TICK_MS));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        every.tick().await;
        if handle.send(Command::Tick).await.is_err() {
            return;
        }
    }
}

struct RaftLoop {
    node: Node,
    partitions: BTreeMap<GroupId, Arc<Partition>>,
    commands: mpsc::Receiver<Command>,
    data_arrived: Arc<Notify>,
}

impl RaftLoop {
    fn run(&mut self) {
        let mut stop_reply = None;
        'outer: loop {
            // Block only when no group has work left over.
            let first = if self.node.has_ready() {
                self.commands.try_recv().ok()
            } else {
                match self.commands.blocking_recv() {
                    Some(c) => Some(c),
                    None => break,
                }
            };
            let mut handled = 0;
            let mut next = first;
            while let Some(command) = next {
                if let Some(reply) = self.handle(command) {
                    stop_reply = Some(reply);
                    break 'outer;
                }
                handled += 1;
                if handled >= COMMANDS_PER_ROUND_MAX {
                    break;
                }
                next = self.commands.try_recv().ok();
            }
            self.round();
        }
        self.round();
        for p in self.partitions.values() {
            if let Err(e) = p.flush() {
                tracing::error!(topic = %p.topic, partition = p.index, error = %e, "sync at shutdown failed");
            }
        }
        if let Some(reply) = stop_reply {
            let _ = reply.send(());
        }
    }

    /// Handles one command; returns the reply of a stop.
    fn handle(&mut self, command: Command) -> Option<oneshot::Sender<()>> {
        match command {
            Command::Propose {
                group,
                batches,
                reply,
            } => {
                let mut proposed = Vec::with_capacity(batches.len());
                let mut result = Ok(());
                for b in batches {
                    match self.node.propose(group, b) {
                        Ok(p) => proposed.push(p),
                        Err(e) => {
                            result = Err(e);
                            break;
                        }
                    }
                }
                // Batches proposed before a refusal still go ahead (they
                // were accepted in order); the caller hears of the refusal.
                let _ = reply.send(result.map(|()| proposed));
            }
            Command::Open { replica, reply } => {
                let _ = reply.send(self.open(replica));
            }
            Command::Close { group, reply } => {
                let _ = self.node.remove_group(group);
                self.partitions.remove(&group);
                let _ = reply.send(());
            }
            Command::Tick => self.node.tick(),
            Command::Retention => {
                let mut events = Vec::new();
                self.node.apply_retention(&mut events);
                self.publish(events);
                for p in self.partitions.values() {
                    p.refresh_log_start();
                }
            }
            Command::Status { reply } => {
                let status = self
                    .node
                    .groups()
                    .filter_map(|g| self.node.status(g))
                    .collect();
                let _ = reply.send(status);
            }
            Command::Stop { reply } => return Some(reply),
        }
        None
    }

    fn open(&mut self, r: OpenReplica) -> Result<Arc<Partition>, ReplicationError> {
        std::fs::create_dir_all(&r.dir)
            .map_err(ReplicationError::io("create replica directory", &r.dir))?;
        let voters = r.voters.clone();
        let (store, state) =
            FileStateStore::open(&r.dir, || ReplicaState::initial(Membership::voters(voters)))?;
        let single_voter = state.truncated.membership.voters == [self.node.id()]
            && state.truncated.membership.voters_outgoing.is_empty();
        let max_batch_bytes = r.log_config.max_batch_bytes;
        let log = self.node.add_group(ReplicaSpec {
            group: r.group,
            dir: &r.dir,
            log_config: r.log_config,
            fsync: r.fsync,
            store: Box::new(store),
            state,
        })?;
        let status = self.node.status(r.group).expect("the group was just added");
        let partition = Arc::new(Partition::new(
            &r.topic,
            r.index,
            r.group,
            log,
            r.fsync,
            max_batch_bytes,
            status.high_watermark,
        ));
        self.partitions.insert(r.group, Arc::clone(&partition));
        if single_voter {
            // A one-voter group need not wait out an election timeout, and
            // leads before its partition is handed out.
            self.node.campaign(r.group)?;
            self.round();
        }
        Ok(partition)
    }

    fn round(&mut self) {
        let mut out: Vec<Outgoing> = Vec::new();
        let mut events = Vec::new();
        let mut jobs = Vec::new();
        let round = self.node.start_round(&mut out, &mut events, &mut jobs);
        if round.is_empty() && events.is_empty() {
            return;
        }
        // `acks=1` waits for the append alone: answer it before the syncs.
        self.publish(std::mem::take(&mut events));
        let started = std::time::Instant::now();
        let bytes: u64 = jobs.iter().map(SyncJob::bytes).sum();
        let job_count = jobs.len();
        let results = run_jobs(jobs);
        if job_count > 0 {
            tracing::debug!(
                files = job_count,
                bytes,
                us = started.elapsed().as_micros() as u64,
                "sync round"
            );
        }
        self.node
            .finish_round(round, results, &mut out, &mut events);
        self.publish(events);
        // Single-voter groups only, for now: nothing leaves this broker.
        if !out.is_empty() {
            tracing::trace!(messages = out.len(), "no peers to send to");
        }
    }

    fn publish(&mut self, events: Vec<Event>) {
        let mut moved = false;
        for e in events {
            match e {
                Event::Appended { group, index, .. } => {
                    if let Some(p) = self.partitions.get(&group) {
                        p.set_appended(index);
                    }
                }
                Event::Committed {
                    group,
                    index,
                    high_watermark,
                } => {
                    if let Some(p) = self.partitions.get(&group) {
                        p.set_committed(index, high_watermark);
                        moved = true;
                    }
                }
                Event::RoleChanged {
                    group,
                    leader,
                    is_leader,
                    term,
                } => {
                    if let Some(p) = self.partitions.get(&group) {
                        p.set_leader(leader, is_leader, term);
                    }
                }
                Event::Failed { group, reason } => {
                    tracing::error!(%group, %reason, "partition replica stopped");
                    if let Some(p) = self.partitions.remove(&group) {
                        p.set_failed();
                    }
                }
            }
        }
        if moved {
            self.data_arrived.notify_waiters();
        }
    }
}

/// Runs a round's syncs: inline when there is one, otherwise spread over
/// up to [`SYNC_THREADS_MAX`] threads (each `fdatasync` waits on the disk,
/// not the CPU, so they overlap).
fn run_jobs(jobs: Vec<SyncJob>) -> Vec<SyncResult> {
    if jobs.len() <= 1 {
        return jobs.into_iter().map(SyncJob::run).collect();
    }
    let threads = jobs.len().min(SYNC_THREADS_MAX);
    let mut buckets: Vec<Vec<SyncJob>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, job) in jobs.into_iter().enumerate() {
        buckets[i % threads].push(job);
    }
    std::thread::scope(|s| {
        let handles: Vec<_> = buckets
            .into_iter()
            .map(|bucket| s.spawn(move || bucket.into_iter().map(SyncJob::run).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a sync job does not panic"))
            .collect()
    })
}
