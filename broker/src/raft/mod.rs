//! The Raft thread: the one place this broker's logs are written.
//!
//! A dedicated OS thread owns the broker's [`Node`] (the controller's
//! group and every partition replica's) and runs its Ready loop: it takes
//! commands (proposals, messages from peers, ticks) from a bounded channel,
//! drains what has queued, and runs one round over every group with work.
//! A round's syncs (one `fdatasync` per file written, several files in
//! parallel) run on the sync thread for groups with other voters: the
//! round hands their Readies back to raft-rs at once, and the thread goes
//! on stepping messages and running rounds while the disk works; the
//! outcome comes back as [`Command::Synced`]. One sync round runs at a
//! time; what the rounds defer meanwhile is merged into the next one, so a
//! sync serves every round since the last (group commit across rounds). A
//! one-voter group (a single broker) syncs inside the round. Either way, what arrives
//! during a sync is written by the next round and synced by the next sync,
//! so one sync serves every produce that queued behind it: group commit
//! without a timer. Messages a round emits go to the peer transport as soon
//! as raft-rs allows (a leader's appends before its own sync, votes and
//! acknowledgements after).
//!
//! The controller's committed entries are applied here, in order, to the
//! [`ClusterImage`]; after each change the thread opens the replicas the
//! image assigns to this broker and closes (and removes) those of deleted
//! topics. What the rest of the broker reads — the image, the partitions,
//! the controller's leader — is published in [`Published`]; events of a
//! round (entries appended, committed, leaders changed) go to each
//! [`Partition`](crate::partition::Partition)'s watch channels.
//!
//! This file holds the thread's setup ([`RaftConfig`], [`open`]), its
//! state and its loop: block for commands only when there is no round to
//! run, handle what has queued, run a round. What the rest of the broker
//! uses to reach the thread (the [`Command`]s, the [`RaftHandle`], the
//! ticker and the inbound forwarder) is in `handle.rs`, re-exported here.
//! The loop's other methods live beside it by concern: `published.rs`
//! (what other threads read, and a round's events turned into it),
//! `controller.rs` (the controller's log and metadata commands),
//! `replicas.rs` (replicas opened, stopped and reopened), `leadership.rs`
//! (elections hurried, leaderships handed over, rejoining), `round.rs`
//! (the I/O the replication crate's `Driver` runs its rounds with: this
//! loop is its `RoundIo`) and `cluster_id.rs`; `sync_pool.rs` holds the
//! threads a round's syncs run on. The loop's parts are all methods of
//! the one `RaftLoop`, run on this one thread: the node, the image and the
//! replicas change nowhere else, so no part locks against another, and
//! what other threads see of them goes through [`Published`] alone.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use rill_replication::transport::Transport;
use rill_replication::{
    BrokerId, Driver, GroupId, Node, NodeConfig, ReplicaLogReader, ReplicationError, SyncRound,
};
use rill_storage::{RaftIndex, SystemClock, Term};
use tokio::sync::{mpsc, oneshot, watch};

use crate::identity::Identity;
use crate::janitor::Janitor;
use crate::metadata::{ClusterImage, MetadataCommand, Outcome};
use crate::partition::{StopRequest, TimestampBounds};

pub mod cluster_id;
mod controller;
mod handle;
mod leadership;
mod liveness;
mod moves;
mod published;
mod replicas;
mod round;
mod sync_pool;

use controller::Answer;
pub use controller::NotController;
pub use handle::{Command, Proposal, ProposalOutcome, RaftHandle, Stopped, forward_inbound, tick};
pub use published::{Published, StatusReport};
pub use sync_pool::Syncer;

/// Commands queued for the Raft thread, at most.
pub const COMMANDS_QUEUED_MAX: usize = 4096;
/// Commands handled per iteration, at most, so a flood of proposals still
/// leaves room for rounds.
pub const COMMANDS_PER_ROUND_MAX: usize = 1024;
/// A round that takes this long or longer is logged, ms: half the
/// election timeout.
pub const SLOW_ROUND_MS: u64 = 500;
/// How often every group ticks. With `election_tick` 10, an election
/// timeout of 1 s.
pub const TICK_MS: u64 = 100;
/// Exit status of a broker whose replication stopped: the Raft thread
/// panicked (a broken invariant), or the controller's replica failed
/// (`EX_SOFTWARE`).
pub const REPLICATION_STOPPED_EXIT_CODE: i32 = 70;
/// Ticks between checks of whether a rejoining broker has caught up.
pub const REJOIN_CHECK_TICKS: u64 = 10;

/// Longest a status request waits for the next tick's report, ms.
pub const STATUS_WAIT_MS: u64 = 3 * TICK_MS;
/// Longest the Raft thread spends opening new replicas before it runs a
/// round and goes on, ms: a topic of a thousand partitions creates files
/// for seconds, and every group's heartbeats would wait for them all.
pub const OPEN_PASS_MS_MAX: u64 = 100;
/// Threads a round's syncs spread over, at most.
pub const SYNC_THREADS_MAX: usize = 8;
/// Ticks between two looks for leaderships to hand back to preferred
/// leaders.
pub const BALANCE_TICKS: u64 = 50;
/// Ticks a new partition's preferred leader keeps asking for votes at
/// every tick, at most (see `RaftLoop::eager`).
pub const EAGER_CAMPAIGN_TICKS_MAX: u64 = 50;
/// Longest a stopping broker waits for its leaderships to move, ms.
pub const HANDOVER_MS_MAX: u64 = 5_000;

/// How the Raft thread is set up.
#[derive(Debug, Clone)]
pub struct RaftConfig {
    /// This broker.
    pub id: BrokerId,
    /// The data directory: the controller's log in `controller/`, each
    /// replica in `<topic id>-<partition>/`.
    pub data_dir: PathBuf,
    /// The controller's voters: every broker of the cluster.
    pub voters: Vec<BrokerId>,
    /// This broker's timestamp bounds, for topics that set none.
    pub timestamps: TimestampBounds,
    /// Most partition replicas one broker may host, checked when this
    /// broker leads the controller.
    pub max_partition_replicas: u32,
    /// How long a replica remembers an idle idempotent producer, ms.
    pub producer_id_expiration_ms: u64,
    /// The data directory's identity (see [`crate::identity`]).
    pub identity: Identity,
    /// Raised when a peer knew an earlier incarnation of this broker: the
    /// Raft thread then rejoins, before it steps that peer's first message.
    pub rejoin_requested: Arc<AtomicBool>,
    /// The cluster's id once learnt, shared with the peer handshake (see
    /// `cluster_id`).
    pub cluster: Arc<std::sync::OnceLock<rill_replication::ids::ClusterId>>,
    /// How long a group led here stays settled before it hibernates, ms;
    /// `None`: never.
    pub hibernate_after_ms: Option<u64>,
}

/// The Raft thread and its two sync threads, ready to run: what
/// [`open`] returns, for `crate::threads` to start.
pub struct Opened {
    /// How the rest of the broker reaches the Raft thread.
    pub handle: RaftHandle,
    /// What the Raft thread publishes.
    pub published: Arc<Published>,
    /// The Raft thread's work.
    pub raft: RaftWork,
    /// The deferred syncs' thread's work.
    pub sync: Syncer,
    /// Retention's state syncs' thread's work.
    pub retention_sync: Syncer,
}

/// The Raft thread's work: its loop, until [`RaftHandle::stop`] or until
/// every [`RaftHandle`] is gone.
pub struct RaftWork {
    raft: RaftLoop,
}

impl RaftWork {
    /// Runs the loop. On the way out the loop is dropped here: its sync
    /// pool's threads are joined, and the sync threads' and the janitor's
    /// queues close, so they end too.
    pub fn run(mut self) {
        // A panic here is a broken invariant of replication (raft-rs
        // panics on a log that lost what it acknowledged): the broker
        // must not go on serving without its only writer.
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.raft.run())).is_err() {
            tracing::error!("the replication thread panicked; stopping the broker");
            crate::logwriter::flush();
            std::process::exit(REPLICATION_STOPPED_EXIT_CODE);
        }
    }
}

/// Opens what the Raft thread runs: the controller's replica, its
/// committed entries replayed into the image, and the replicas it assigns
/// here. Returns once the replicas are open (they recover their logs
/// first), so the client port opens after local recovery; the loop runs
/// once `crate::threads` starts it. `transport` carries messages to peers
/// (none for a cluster of one); `janitor` unlinks what the thread deletes.
pub fn open(
    config: RaftConfig,
    transport: Option<Transport>,
    janitor: Janitor,
) -> Result<Opened, ReplicationError> {
    let (tx, rx) = mpsc::channel(COMMANDS_QUEUED_MAX);
    let mut node_config = NodeConfig::new(config.id);
    node_config.quiesce_after_ticks = config
        .hibernate_after_ms
        .map(|ms| (ms / TICK_MS).max(1) as u32);
    // Election jitter differs from broker to broker and run to run.
    node_config.jitter_seed = config.id.get()
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
    let published = Arc::new(Published {
        image: watch::Sender::new(Arc::new(ClusterImage::new(config.voters.clone()))),
        controller: watch::Sender::new(None),
        partitions: RwLock::new(BTreeMap::new()),
        status: watch::Sender::new(Arc::default()),
        status_wanted: AtomicBool::new(false),
        last_controller: std::sync::atomic::AtomicU64::new(0),
        stopped: RwLock::new(Default::default()),
    });
    let (syncer, sync) = Syncer::new(crate::threads::SYNC, tx.downgrade(), Command::Synced);
    let (retention_syncer, retention_sync) = Syncer::new(
        crate::threads::RETENTION_SYNC,
        tx.downgrade(),
        Command::RetentionSynced,
    );
    let tick_queued = Arc::new(AtomicBool::new(false));
    let (stop_requests, stops_requested) = std::sync::mpsc::channel();
    let mut node = Node::new(node_config, Arc::new(SystemClock));
    if config.identity.rejoining {
        tracing::warn!(
            "this broker is still rejoining after losing its data: its replicas vote only once caught up"
        );
        node.set_rejoining(true);
    }
    let mut raft = RaftLoop {
        node,
        syncer,
        sync_pool: sync_pool::SyncPool::new(crate::threads::ROUND_SYNC),
        retention_syncer,
        driver: Some(Driver::default()),
        config,
        commands: rx,
        published: Arc::clone(&published),
        transport,
        controller_log: None,
        image: ClusterImage::new(Vec::new()),
        applied: RaftIndex(0),
        pending: BTreeMap::new(),
        ticks: 0,
        eager: BTreeMap::new(),
        failed: Default::default(),
        configs: BTreeMap::new(),
        backoffs: BTreeMap::new(),
        verified_up_to: None,
        stop_requests,
        stops_requested,
        janitor,
        tick_queued: Arc::clone(&tick_queued),
        open_pass_ms_max: None,
        held_answers: Vec::new(),
        reconciling: false,
        cluster_id_proposed: None,
        deletions_pending: false,
        stopping: false,
        told: BTreeMap::new(),
        peer_connections: BTreeMap::new(),
    };
    raft.open_controller()?;
    Ok(Opened {
        handle: RaftHandle::new(tx, tick_queued),
        published,
        raft: RaftWork { raft },
        sync,
        retention_sync,
    })
}

struct RaftLoop {
    node: Node,
    /// Deferred sync rounds go to the sync thread through here.
    syncer: std::sync::mpsc::Sender<SyncRound>,
    /// Runs the syncs of one-voter groups, within their round.
    sync_pool: sync_pool::SyncPool,
    /// Retention's state syncs go to a thread of their own through here:
    /// they need not wait behind the log syncs (see
    /// [`Node::apply_retention`]), and their groups take no Ready until
    /// they are back.
    retention_syncer: std::sync::mpsc::Sender<SyncRound>,
    /// Runs the rounds over `node`, with this loop as its I/O (see
    /// `round.rs`): one deferred sync round with the sync thread at a
    /// time (back as [`Command::Synced`]), later rounds' syncs merged
    /// behind it. Out of the loop only while one of its calls runs.
    driver: Option<Driver>,
    config: RaftConfig,
    commands: mpsc::Receiver<Command>,
    published: Arc<Published>,
    transport: Option<Transport>,
    controller_log: Option<ReplicaLogReader>,
    image: ClusterImage,
    /// The controller entries applied to the image.
    applied: RaftIndex,
    /// Metadata commands proposed here, by index: their term and who waits.
    pending: BTreeMap<RaftIndex, (Term, oneshot::Sender<Result<Outcome, NotController>>)>,
    ticks: u64,
    /// New partitions this broker is the preferred leader of, with the tick
    /// after which it stops hurrying: until a leader is known it campaigns
    /// at every tick instead of waiting out an election timeout (1 s or
    /// more) for a group that has never had a leader. The first tries may
    /// find the other replicas not yet open (they apply the same metadata
    /// a little later): a retry restarts the pre-vote, which raises no
    /// term. A candidate (pre-vote won, votes asked for in a new term) is
    /// left to finish its election: campaigning again would discard the
    /// votes on their way and raise the term once more.
    eager: BTreeMap<GroupId, u64>,
    /// Groups whose replica stopped after a storage failure, with when to
    /// try opening it again: `None` for damaged files (a hole, a file cut
    /// short), which wait for an operator and a restart. An I/O error
    /// (ENOSPC, EIO) is retried with backoff: reopening recovers the log
    /// from its files, trusting nothing a failed write or sync left in
    /// memory. A stopped replica stays published, marked failed, so its
    /// clients get a retriable `StorageError`.
    failed: BTreeMap<GroupId, Option<Instant>>,
    /// The settings each open replica runs with: a topic's settings
    /// changed live are pushed to its replicas when they differ.
    configs: BTreeMap<GroupId, crate::topics::TopicConfig>,
    /// The last wait before reopening each group and when it stopped: a
    /// replica that fails again soon after it reopened waits twice as long.
    backoffs: BTreeMap<GroupId, (Duration, Instant)>,
    /// The last group whose files [`RaftLoop::verify_some`] checked.
    verified_up_to: Option<GroupId>,
    /// Handed to partitions: where their reads ask for a stop.
    stop_requests: std::sync::mpsc::Sender<StopRequest>,
    /// Stops asked for by partitions' reads, taken at every tick.
    stops_requested: std::sync::mpsc::Receiver<StopRequest>,
    /// Removes deleted replicas' directories off this thread.
    janitor: Janitor,
    /// Longest one pass of [`RaftLoop::reconcile`] spends opening new
    /// replicas, ms (`None` while the broker starts: it opens them all
    /// before its client port opens).
    open_pass_ms_max: Option<u64>,
    /// Answers to metadata commands applied while the replicas they assign
    /// here are not all open yet: sent, with the image published, once a
    /// pass of [`RaftLoop::reconcile`] finds nothing left to open.
    held_answers: Vec<Answer>,
    /// Whether the last pass of [`RaftLoop::reconcile`] left replicas to
    /// open.
    reconciling: bool,
    /// Shared with [`RaftHandle`]: cleared when a tick is taken.
    tick_queued: Arc<AtomicBool>,
    /// Whether replicas of deleted topics wait for the controller's commit
    /// to be durable (see `RaftLoop::deletions_durable`): retried at every
    /// tick.
    deletions_pending: bool,
    /// Whether the loop is handing leaderships over to stop: no replica is
    /// opened or removed meanwhile.
    stopping: bool,
    /// The controller term in which this broker, leading it, last proposed
    /// to name the cluster.
    cluster_id_proposed: Option<Term>,
    /// Per moving partition led here, the progress last sent to the
    /// controller and the tick it went at (see `moves.rs`).
    told: BTreeMap<GroupId, (MetadataCommand, u64)>,
    /// Each peer's connections opened as last seen (`liveness.rs`): one
    /// more is a reconnection.
    peer_connections: BTreeMap<BrokerId, u64>,
}

impl RaftLoop {
    fn me(&self) -> BrokerId {
        self.config.id
    }

    fn run(&mut self) {
        let mut stopping: Option<(oneshot::Sender<()>, Instant)> = None;
        self.open_pass_ms_max = Some(OPEN_PASS_MS_MAX);
        loop {
            if self.reconciling && stopping.is_none() {
                self.reconcile();
            }
            // Block only when no group has work left over, or no round may
            // start before a sync completes.
            let may_round = self.driver().may_round();
            let more = self.reconciling && stopping.is_none();
            let first = if more || (may_round && self.node.has_ready()) {
                self.commands.try_recv().ok()
            } else {
                match self.commands.blocking_recv() {
                    Some(c) => Some(c),
                    None => break,
                }
            };
            let mut handled = 0;
            let handling = Instant::now();
            let mut next = first;
            while let Some(command) = next {
                if let Some(reply) = self.handle(command) {
                    tracing::info!("handing leaderships over before stopping");
                    stopping = Some((reply, Instant::now()));
                    self.stopping = true;
                    self.node.hand_over();
                }
                handled += 1;
                if handled >= COMMANDS_PER_ROUND_MAX {
                    break;
                }
                next = self.commands.try_recv().ok();
            }
            let ms = handling.elapsed().as_millis() as u64;
            if ms >= SLOW_ROUND_MS {
                // Stepping messages and applying the controller's entries
                // delay rounds as much as a slow round does.
                tracing::warn!(ms, commands = handled, "slow command handling");
            }
            if self.driver().may_round() {
                let started = Instant::now();
                let times = self.with_driver(|d, io| d.round(io));
                crate::metrics::raft_round(started.elapsed());
                let ms = started.elapsed().as_millis() as u64;
                if ms >= SLOW_ROUND_MS {
                    // Every group's heartbeats waited this long: rounds
                    // near the election timeout cost elections.
                    tracing::warn!(
                        ms,
                        ready_ms = times.ready.as_millis() as u64,
                        write_ms = times.write.as_millis() as u64,
                        sync_ms = times.sync.as_millis() as u64,
                        finish_ms = times.finish.as_millis() as u64,
                        "slow replication round (disk or CPU starved)"
                    );
                }
            }
            if let Some((_, since)) = &stopping
                && (!self.node.leads_with_peers()
                    || since.elapsed() >= Duration::from_millis(HANDOVER_MS_MAX))
            {
                break;
            }
        }
        self.with_driver(|d, io| d.round(io));
        // Let the deferred syncs finish, the queued sync round too (it holds
        // the controller's last writes; their messages no longer matter).
        while self.driver().syncing() {
            match self.commands.blocking_recv() {
                Some(Command::Synced(_)) => self.with_driver(|d, io| d.synced_while_stopping(io)),
                Some(_) => {}
                None => break,
            }
        }
        for p in self.published.all_partitions() {
            if let Err(e) = p.flush() {
                tracing::error!(topic = %p.topic, partition = p.index, error = %e, "sync at shutdown failed");
            }
        }
        if let Some((reply, _)) = stopping {
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
                queued_at,
            } => {
                crate::metrics::produce_stage(
                    crate::metrics::ProduceStage::Queue,
                    queued_at.elapsed(),
                );
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
                let _ = reply.send(handle::Proposal {
                    result: result.map(|()| proposed),
                    proposed_at: std::time::Instant::now(),
                });
            }
            Command::Metadata { command, reply } => self.propose_metadata(command, reply),
            Command::Step(inbound) => {
                self.take_rejoin();
                for (group, message) in inbound.messages {
                    if message.to != self.me().get() || message.from != inbound.from.get() {
                        continue;
                    }
                    if let Some(data) = rill_replication::forward::forwarded_data(&message) {
                        self.take_forwarded(group, inbound.from, data);
                        continue;
                    }
                    // A message for a group not (yet) open here is dropped:
                    // the leader retries once this broker has applied the
                    // metadata that creates it. An append with an invalid
                    // entry is dropped too, and its leader sends it again;
                    // so is a message that breaks Raft's rules, which raft-rs
                    // never sees. Either says something is wrong on the way
                    // or at the peer, so it is told.
                    match self.node.step(group, message) {
                        Err(e @ ReplicationError::RefusedEntry { .. }) => {
                            tracing::warn!(%group, peer = %inbound.from, error = %e, "refused a peer's append");
                        }
                        Err(e @ ReplicationError::RefusedMessage { .. }) => {
                            tracing::warn!(%group, peer = %inbound.from, error = %e, "refused a peer's message");
                        }
                        _ => {}
                    }
                }
            }
            Command::Tick => {
                self.tick_queued.store(false, Ordering::Release);
                self.verify_some();
                self.stops_and_reopens();
                self.node.tick();
                self.check_peers();
                self.ticks += 1;
                self.campaign_eagerly();
                if self.ticks % BALANCE_TICKS == 0 {
                    self.balance();
                }
                if self.ticks % moves::MOVE_TICKS == 0 && !self.stopping {
                    self.drive_moves();
                    self.drive_controller_membership();
                }
                if self.ticks % REJOIN_CHECK_TICKS == 0 {
                    self.check_rejoined();
                }
                self.propose_cluster_id();
                if self.deletions_pending && !self.stopping {
                    self.reconcile();
                }
                if self.published.status_wanted.swap(false, Ordering::AcqRel) {
                    let groups = self
                        .node
                        .groups()
                        .filter_map(|g| self.node.status_with_offsets(g))
                        .collect();
                    self.published.status.send_replace(Arc::new(StatusReport {
                        controller: self.node.leader(GroupId::CONTROLLER),
                        groups,
                    }));
                }
            }
            Command::Retention => {
                // The new log starts' syncs run on their own thread; the
                // segments go once they are back.
                self.with_driver(|d, io| d.apply_retention(io));
                for p in self.published.all_partitions() {
                    p.refresh_log_start();
                }
            }
            Command::HeldByEveryReplica { group, reply } => {
                let _ = reply.send(self.node.held_by_every_replica(group));
            }
            Command::RemoveMergedAway {
                group,
                merged,
                reply,
            } => {
                let _ = reply.send(self.node.remove_merged_away(group, &merged));
            }
            Command::InstallCleaned {
                group,
                cleaned,
                reply,
            } => {
                // Renames only: the compactor syncs the directory.
                let _ = reply.send(self.node.install_cleaned(group, cleaned));
            }
            Command::Stop { reply } => return Some(reply),
            Command::RetentionSynced(done) => {
                self.with_driver(|d, io| d.retention_synced(done, io));
            }
            // The disk is free: what queued meanwhile goes at once.
            Command::Synced(done) => self.with_driver(|d, io| d.synced(done, io)),
        }
        None
    }
}
