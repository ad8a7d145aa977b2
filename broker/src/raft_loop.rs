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
//! outcome comes back as [`Command::Synced`]. One batch runs at a time;
//! what the rounds defer meanwhile is merged into the next one, so a sync
//! serves every round since the last (group commit across rounds). A one-voter group
//! (a single broker) syncs inside the round. Either way, what arrives
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
//! [`Partition`]'s watch channels.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rill_replication::state::{FileStateStore, Membership, ReplicaState};
use rill_replication::storage::{SharedLog, lock};
use rill_replication::transport::{Dropped, Inbound, Transport};
use rill_replication::{
    BrokerId, CheckedBatch, Event, GroupId, GroupStatus, Node, NodeConfig, Outgoing, Proposed,
    ReplicaSpec, ReplicationError, SyncBatch, SyncJob, SyncResult, SyncedBatch,
};
use rill_storage::{BatchBuilder, LogConfig, NewRecord, RaftIndex, SystemClock, Term};
use tokio::sync::{Notify, mpsc, oneshot, watch};

use crate::identity::Identity;
use crate::janitor::Janitor;
use crate::metadata::{ClusterImage, MetadataCommand, Outcome, TopicImage};
use crate::partition::{Partition, StopRequest, TimestampBounds};
use crate::topics::partition_dir;

mod cluster_id;

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
/// Ticks between checks of whether a rejoining broker has caught up.
pub const REJOIN_CHECK_TICKS: u64 = 10;

/// First wait before reopening a replica that an I/O error stopped.
const REOPEN_BACKOFF_FIRST: Duration = Duration::from_secs(1);
/// Longest wait between two attempts to reopen a stopped replica; the wait
/// doubles from [`REOPEN_BACKOFF_FIRST`] with every failure in a row.
const REOPEN_BACKOFF_MAX: Duration = Duration::from_secs(60);
/// Replicas whose segment files' lengths are checked (`fstat`) at each
/// tick, in turn: a file cut short under an idle replica stops it before
/// Raft (which treats a failed read of its log as fatal) or a reader meets
/// the damage, without a pass over thousands of replicas holding up a tick.
const VERIFY_PER_TICK: usize = 64;
/// Longest a status request waits for the next tick's report, ms.
pub const STATUS_WAIT_MS: u64 = 3 * TICK_MS;
/// Longest the Raft thread spends opening new replicas before it runs a
/// round and goes on, ms: a topic of a thousand partitions creates files
/// for seconds, and every group's heartbeats would wait for them all.
pub const OPEN_PASS_MS_MAX: u64 = 100;
/// Threads a round's syncs spread over, at most.
pub const SYNC_THREADS_MAX: usize = 8;
/// Deferred Readies waiting for the sync after the one in flight, at most;
/// at the bound the Raft thread steps messages but starts no round until
/// the sync completes.
pub const SYNC_QUEUED_READIES_MAX: usize = 16_384;
/// Ticks between two looks for leaderships to hand back to preferred
/// leaders.
pub const BALANCE_TICKS: u64 = 50;
/// Ticks a new partition's preferred leader keeps asking for votes at
/// every tick, at most (see `RaftLoop::eager`).
pub const EAGER_CAMPAIGN_TICKS_MAX: u64 = 50;
/// Longest a stopping broker waits for its leaderships to move, ms.
pub const HANDOVER_MS_MAX: u64 = 5_000;
/// Largest controller entry, bytes.
const CONTROLLER_BATCH_BYTES_MAX: usize = 1 << 20;

/// What the rest of the broker reads of the Raft thread's state.
#[derive(Debug)]
pub struct Published {
    /// The cluster metadata as applied here.
    pub image: watch::Sender<Arc<ClusterImage>>,
    /// The controller group's leader as known here.
    pub controller: watch::Sender<Option<BrokerId>>,
    /// The partition replicas open here, by group. Guards the map only:
    /// lookups, inserts and removals.
    pub partitions: RwLock<BTreeMap<GroupId, Arc<Partition>>>,
    /// Every group's replication state, as of the last tick at which
    /// someone asked for it: however many requests ask, the Raft thread
    /// computes it at most once a tick, never per request.
    pub status: watch::Sender<Arc<StatusReport>>,
    /// Whether someone waits for a fresher [`Published::status`].
    pub status_wanted: AtomicBool,
    /// Groups whose replica here stopped after a storage failure and is
    /// not open (a reopen pending or failed): their clients are answered
    /// `StorageError` rather than sent to another broker.
    pub stopped: RwLock<std::collections::BTreeSet<GroupId>>,
}

impl Published {
    /// Whether `group`'s replica here stopped after a storage failure.
    pub fn is_stopped(&self, group: GroupId) -> bool {
        self.stopped
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&group)
    }

    fn set_stopped(&self, group: GroupId, stopped: bool) {
        let mut set = self.stopped.write().unwrap_or_else(|p| p.into_inner());
        if stopped {
            set.insert(group);
        } else {
            set.remove(&group);
        }
    }

    /// Every group's replication state, at most about a tick old: asks the
    /// Raft thread for the next tick's report and waits for it (at most
    /// [`STATUS_WAIT_MS`]), else answers the last one.
    pub async fn fresh_status(&self) -> Arc<StatusReport> {
        let mut rx = self.status.subscribe();
        rx.mark_unchanged();
        self.status_wanted.store(true, Ordering::Release);
        let _ = tokio::time::timeout(Duration::from_millis(STATUS_WAIT_MS), rx.changed()).await;
        rx.borrow().clone()
    }

    /// The replica of `group` here, if any.
    pub fn partition(&self, group: GroupId) -> Option<Arc<Partition>> {
        self.partitions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&group)
            .cloned()
    }

    /// Takes the replica of `group` out of what is published, if there.
    pub fn remove_partition(&self, group: GroupId) -> Option<Arc<Partition>> {
        self.partitions
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&group)
    }

    /// Every replica open here.
    pub fn all_partitions(&self) -> Vec<Arc<Partition>> {
        self.partitions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }
}

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
    /// The data directory's identity (see [`crate::identity`]).
    pub identity: Identity,
    /// Raised when a peer knew an earlier incarnation of this broker: the
    /// Raft thread then rejoins, before it steps that peer's first message.
    pub rejoin_requested: Arc<AtomicBool>,
    /// The cluster's id once learnt, shared with the peer handshake (see
    /// `cluster_id`).
    pub cluster: Arc<std::sync::OnceLock<rill_replication::ids::ClusterId>>,
}

/// Why a metadata command got no outcome here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotController {
    /// The controller as known here.
    pub leader: Option<BrokerId>,
}

/// A report of every group here.
#[derive(Debug, Clone, Default)]
pub struct StatusReport {
    /// The controller's leader as known here.
    pub controller: Option<BrokerId>,
    /// Every group's state (the controller's included).
    pub groups: Vec<GroupStatus>,
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
    /// Propose a metadata command (on the controller's leader only); the
    /// reply comes once it is applied here.
    Metadata {
        /// The command.
        command: MetadataCommand,
        /// Its outcome.
        reply: oneshot::Sender<Result<Outcome, NotController>>,
    },
    /// Messages from a peer.
    Step(Inbound),
    /// One tick for every group.
    Tick,
    /// Apply retention to every group.
    Retention,
    /// Hand leaderships over, sync every log, and stop the thread.
    Stop {
        /// Done.
        reply: oneshot::Sender<()>,
    },
    /// A deferred sync batch ran (sent by the sync thread only).
    Synced(SyncedBatch),
    /// Retention's batch of state syncs ran (sent by the retention sync
    /// thread only).
    RetentionSynced(SyncedBatch),
}

/// The handle the rest of the broker uses to reach the Raft thread.
#[derive(Debug, Clone)]
pub struct RaftHandle {
    commands: mpsc::Sender<Command>,
    /// Whether a [`Command::Tick`] is queued and not yet handled; see
    /// [`tick`].
    tick_queued: Arc<AtomicBool>,
}

/// Where a queued proposal's outcome arrives: where each batch landed, or
/// why nothing was proposed.
pub type ProposalOutcome = oneshot::Receiver<Result<Vec<Proposed>, ReplicationError>>;

/// The Raft thread has stopped (the broker is shutting down).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the replication thread has stopped")]
pub struct Stopped;

impl RaftHandle {
    /// Queues a command, waiting while the queue is full.
    pub async fn send(&self, command: Command) -> Result<(), Stopped> {
        self.commands.send(command).await.map_err(|_| Stopped)
    }

    /// Proposes batches; see [`Command::Propose`].
    pub async fn propose(
        &self,
        group: GroupId,
        batches: Vec<CheckedBatch>,
    ) -> Result<Result<Vec<Proposed>, ReplicationError>, Stopped> {
        self.propose_queued(group, batches)
            .await?
            .await
            .map_err(|_| Stopped)
    }

    /// Queues a proposal (see [`Command::Propose`]) and returns where its
    /// outcome will arrive: proposals queued one after another are
    /// proposed in that order, and a caller may queue several before
    /// waiting for any.
    pub async fn propose_queued(
        &self,
        group: GroupId,
        batches: Vec<CheckedBatch>,
    ) -> Result<ProposalOutcome, Stopped> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Propose {
            group,
            batches,
            reply,
        })
        .await?;
        Ok(rx)
    }

    /// Proposes a metadata command; see [`Command::Metadata`].
    pub async fn metadata(
        &self,
        command: MetadataCommand,
    ) -> Result<Result<Outcome, NotController>, Stopped> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Metadata { command, reply }).await?;
        rx.await.map_err(|_| Stopped)
    }

    /// Hands leaderships over, syncs every log and stops the thread.
    pub async fn stop(&self) {
        let (reply, rx) = oneshot::channel();
        if self.send(Command::Stop { reply }).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// Starts the Raft thread: opens the controller's replica, replays its
/// committed entries into the image, opens the replicas it assigns here,
/// and runs the loop. Returns once the replicas are open (they recover
/// their logs first), so the client port opens after local recovery.
/// `transport` carries messages to peers (none for a cluster of one).
pub fn start(
    config: RaftConfig,
    data_arrived: Arc<Notify>,
    transport: Option<Transport>,
) -> Result<(RaftHandle, Arc<Published>), ReplicationError> {
    let (tx, rx) = mpsc::channel(COMMANDS_QUEUED_MAX);
    let mut node_config = NodeConfig::new(config.id);
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
        stopped: RwLock::new(Default::default()),
    });
    let syncer = start_syncer("rill-sync", tx.downgrade(), Command::Synced)?;
    let retention_syncer = start_syncer(
        "rill-retention-sync",
        tx.downgrade(),
        Command::RetentionSynced,
    )?;
    let tick_queued = Arc::new(AtomicBool::new(false));
    let (stop_requests, stops_requested) = std::sync::mpsc::channel();
    let janitor = Janitor::start(&config.data_dir).map_err(ReplicationError::io(
        "start the janitor thread",
        "rill-janitor",
    ))?;
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
        retention_syncer,
        syncing: false,
        sync_queued: None,
        config,
        commands: rx,
        data_arrived,
        published: Arc::clone(&published),
        transport,
        controller_log: None,
        image: ClusterImage::new(Vec::new()),
        applied: RaftIndex(0),
        pending: BTreeMap::new(),
        ticks: 0,
        eager: BTreeMap::new(),
        failed: Default::default(),
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
    };
    raft.open_controller()?;
    std::thread::Builder::new()
        .name("rill-raft".into())
        .spawn(move || {
            // A panic here is a broken invariant of replication (raft-rs
            // panics on a log that lost what it acknowledged): the broker
            // must not go on serving without its only writer.
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| raft.run())).is_err() {
                tracing::error!("the replication thread panicked; stopping the broker");
                crate::logwriter::flush();
                std::process::exit(70);
            }
        })
        .map_err(ReplicationError::io(
            "start the replication thread",
            "rill-raft",
        ))?;
    Ok((
        RaftHandle {
            commands: tx,
            tick_queued,
        },
        published,
    ))
}

/// Whether opening a replica failed on damaged files (a hole in its log, a
/// corrupt state file), which reopening cannot fix.
fn open_error_is_damage(e: &ReplicationError) -> bool {
    match e {
        ReplicationError::Storage(e) => e.is_damage(),
        ReplicationError::CorruptState { .. } => true,
        _ => false,
    }
}

/// The wait before reopening a replica stopped at `now`, given the wait
/// before its last reopening and when it stopped then: doubled (up to
/// [`REOPEN_BACKOFF_MAX`]) when it failed again within that wait plus the
/// longest one after it was due, as the failure has not gone away;
/// [`REOPEN_BACKOFF_FIRST`] otherwise.
fn reopen_backoff(last: Option<(Duration, Instant)>, now: Instant) -> Duration {
    match last {
        Some((wait, at)) if now.saturating_duration_since(at) <= wait + REOPEN_BACKOFF_MAX => {
            (wait * 2).min(REOPEN_BACKOFF_MAX)
        }
        _ => REOPEN_BACKOFF_FIRST,
    }
}

/// Sends a tick every [`TICK_MS`] until the Raft thread stops.
///
/// At most one tick waits in the queue: ticks the Raft thread could not take
/// in time are dropped, not delivered in a burst (as etcd's ticker drops
/// them). A thread held up for seconds (a disk stall, starved CPU) would
/// otherwise come back to a run of ticks with no messages between them, and
/// a leader would count its followers' silence over time in which it sent
/// them nothing: check-quorum deposed leaders right after each such stall.
pub async fn tick(handle: RaftHandle) {
    let mut every = tokio::time::interval(Duration::from_millis(TICK_MS));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        every.tick().await;
        if handle.tick_queued.swap(true, Ordering::AcqRel) {
            continue;
        }
        if handle.send(Command::Tick).await.is_err() {
            return;
        }
    }
}

/// Hands messages from peers to the Raft thread.
pub async fn forward_inbound(mut inbound: mpsc::Receiver<Inbound>, handle: RaftHandle) {
    while let Some(i) = inbound.recv().await {
        if handle.send(Command::Step(i)).await.is_err() {
            return;
        }
    }
}

struct RaftLoop {
    node: Node,
    /// Deferred sync batches go to the sync thread through here.
    syncer: std::sync::mpsc::Sender<SyncBatch>,
    /// Retention's state syncs go to a thread of their own through here:
    /// they need not wait behind the log batches (see
    /// [`Node::apply_retention`]), and their groups take no Ready until
    /// they are back.
    retention_syncer: std::sync::mpsc::Sender<SyncBatch>,
    /// Whether a batch is with the sync thread (not yet back as
    /// [`Command::Synced`]). One at a time: what the rounds defer meanwhile
    /// waits in `sync_queued`, merged, and is synced by the next batch.
    syncing: bool,
    /// The next batch, merged from every round since the one in flight
    /// left: group commit across rounds.
    sync_queued: Option<SyncBatch>,
    config: RaftConfig,
    commands: mpsc::Receiver<Command>,
    data_arrived: Arc<Notify>,
    published: Arc<Published>,
    transport: Option<Transport>,
    controller_log: Option<SharedLog>,
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
    /// The controller term in which this broker, leading it, last proposed
    /// to name the cluster.
    cluster_id_proposed: Option<Term>,
}

/// A metadata command's answer and who waits for it.
type Answer = (
    oneshot::Sender<Result<Outcome, NotController>>,
    Option<Outcome>,
);

fn controller_log_config() -> LogConfig {
    LogConfig {
        segment_bytes: 64 << 20,
        grow_step_bytes: 1 << 20,
        retention_ms: None,
        retention_bytes: None,
        segment_ms: None,
        max_batch_bytes: CONTROLLER_BATCH_BYTES_MAX,
        ..LogConfig::default()
    }
}

impl RaftLoop {
    fn me(&self) -> BrokerId {
        self.config.id
    }

    /// Opens the controller's replica and replays what it has committed.
    fn open_controller(&mut self) -> Result<(), ReplicationError> {
        let dir = self.config.data_dir.join("controller");
        std::fs::create_dir_all(&dir)
            .map_err(ReplicationError::io("create controller directory", &dir))?;
        let voters = self.config.voters.clone();
        let (store, state) =
            FileStateStore::open(&dir, || ReplicaState::initial(Membership::voters(voters)))?;
        let mut voters = state.truncated.membership.voters.clone();
        voters.sort();
        let single = voters == [self.me()];
        let log = self.node.add_group(ReplicaSpec {
            group: GroupId::CONTROLLER,
            dir: &dir,
            log_config: controller_log_config(),
            fsync: true,
            store: Box::new(store),
            state,
        })?;
        self.controller_log = Some(log);
        self.image = ClusterImage::new(voters);
        // The commit index as validated against the log on open (never
        // past the last entry that survived).
        let commit = self
            .node
            .status(GroupId::CONTROLLER)
            .expect("the controller was just added")
            .commit;
        self.apply_controller(commit)?;
        if single {
            self.node.campaign(GroupId::CONTROLLER)?;
            self.round();
        }
        Ok(())
    }

    /// Applies the controller's entries up to `through` to the image, then
    /// opens and closes replicas to match it.
    fn apply_controller(&mut self, through: RaftIndex) -> Result<(), ReplicationError> {
        if through <= self.applied {
            return Ok(());
        }
        let log = self
            .controller_log
            .clone()
            .expect("the controller is open before anything is applied");
        let batches = {
            let log = lock(&log);
            let from = self.applied.next().max(log.first_raft_index());
            // Owned copies: applying decodes the commands inside.
            log.read_entries_owned(from, through.next(), u64::MAX)?
        };
        let mut answers = Vec::new();
        for b in batches {
            let (index, term) = (b.header().raft_index, b.header().raft_term);
            let outcome = if b.header().is_control() {
                None
            } else {
                let record = b.records().next().and_then(Result::ok);
                match record
                    .and_then(|r| r.value)
                    .and_then(|v| MetadataCommand::decode(&v))
                {
                    Some(cmd) => Some(self.image.apply(&cmd)),
                    None => {
                        tracing::error!(%index, "controller entry is not a metadata command; skipped");
                        None
                    }
                }
            };
            self.applied = index;
            if let Some((t, reply)) = self.pending.remove(&index) {
                answers.push((reply, outcome.filter(|_| t == term)));
            }
        }
        // Proposals at or below the applied index that were not answered
        // were replaced by another leader's entries.
        let lost: Vec<RaftIndex> = self
            .pending
            .range(..=self.applied)
            .map(|(i, _)| *i)
            .collect();
        for i in lost {
            if let Some((_, reply)) = self.pending.remove(&i) {
                answers.push((reply, None));
            }
        }
        self.learn_cluster_id();
        // Replicas open (and one-voter ones lead) before anyone hears the
        // outcome.
        self.held_answers.extend(answers);
        self.reconcile();
        Ok(())
    }

    /// Publishes the image and sends the held answers, once every replica
    /// the image assigns here is open.
    fn answer_held(&mut self) {
        // Published before anyone hears the outcome: a client that created
        // a topic finds it in the next metadata it asks for.
        self.published
            .image
            .send_replace(Arc::new(self.image.clone()));
        let leader = self.node.leader(GroupId::CONTROLLER);
        for (reply, outcome) in self.held_answers.drain(..) {
            let _ = reply.send(outcome.ok_or(NotController { leader }));
        }
    }

    /// Opens the replicas the image assigns here; closes and removes those
    /// of topics no longer in it. Opening one creates or recovers its files
    /// on this thread, which every group's heartbeats wait for: once the
    /// broker runs, a pass stops opening after [`Self::open_pass_ms_max`]
    /// and the loop calls again after its next round ([`Self::reconciling`]).
    /// A pass that leaves nothing to open publishes the image and answers
    /// the commands applied meanwhile.
    fn reconcile(&mut self) {
        let me = self.me();
        let wanted: Vec<(TopicImage, u32)> = self
            .image
            .topics
            .values()
            .flat_map(|t| {
                (0..t.partitions())
                    .filter(|&p| t.replicas[p as usize].contains(&me))
                    .map(|p| (t.clone(), p))
                    .collect::<Vec<_>>()
            })
            .collect();
        let started = Instant::now();
        let mut left = false;
        for (t, p) in wanted {
            let group = t.group(p);
            if self.node.has_group(group) {
                continue;
            }
            let retrying = match self.failed.get(&group) {
                None => false,
                Some(Some(at)) if *at <= started => true,
                Some(_) => continue,
            };
            if self
                .open_pass_ms_max
                .is_some_and(|ms| started.elapsed() >= Duration::from_millis(ms))
            {
                left = true;
                break;
            }
            if retrying {
                // The stopped replica's log goes first: it holds the
                // directory's lock until its last reader lets go.
                self.published.remove_partition(group);
            }
            match self.open(&t, p) {
                Ok(()) if retrying => {
                    self.failed.remove(&group);
                    self.published.set_stopped(group, false);
                    tracing::info!("replica {}/{p} reopened", t.name);
                }
                Ok(()) => {}
                Err(e) => {
                    // Retried only after a backoff, as a replica whose
                    // storage failed: a pass retrying a slow failure first
                    // would never reach the replicas after it.
                    let retry = !open_error_is_damage(&e);
                    tracing::error!("replica {}/{p} failed: cannot open: {e}", t.name);
                    self.stop_replica(group, retry);
                }
            }
        }
        self.reconciling = left;
        // Stopped replicas of deleted topics: their directories go too.
        let gone: Vec<GroupId> = self
            .failed
            .keys()
            .copied()
            .filter(|g| *g != GroupId::CONTROLLER && self.image.partition_of(*g).is_none())
            .collect();
        for group in gone {
            self.failed.remove(&group);
            self.published.set_stopped(group, false);
            self.backoffs.remove(&group);
            let removed = self.published.remove_partition(group);
            if let Some(p) = removed {
                let dir = p.dir().to_path_buf();
                if let Err(e) = self.janitor.remove_dir(&dir, p) {
                    tracing::warn!(dir = %dir.display(), error = %e, "could not remove a deleted topic's replica");
                }
            }
        }
        let open: Vec<GroupId> = self
            .node
            .groups()
            .filter(|g| *g != GroupId::CONTROLLER)
            .collect();
        for group in open {
            if self.image.partition_of(group).is_some() {
                continue;
            }
            let started = Instant::now();
            let removed = self.published.remove_partition(group);
            // The replica's own hold on its log goes first, so that the
            // partition handed to the janitor is usually the last; a sync
            // in flight, a fetch or a queued send may outlast it (the
            // first comes back to the janitor too, see `drop_closed_syncs`).
            let _ = self.node.remove_group(group);
            if let Some(p) = removed {
                p.set_failed();
                let (topic, index, dir) = (p.topic.clone(), p.index, p.dir().to_path_buf());
                if let Err(e) = self.janitor.remove_dir(&dir, p) {
                    tracing::warn!(dir = %dir.display(), error = %e, "could not remove a deleted topic's replica");
                }
                tracing::info!(
                    %topic,
                    partition = index,
                    us = started.elapsed().as_micros() as u64,
                    "removed replica of a deleted topic"
                );
            }
        }
        if !self.reconciling {
            self.answer_held();
        }
    }

    /// Stops `group`'s replica after a storage failure (the node may have
    /// dropped it already) and schedules its reopening when `retry`. Its
    /// partition stays published, marked failed.
    fn stop_replica(&mut self, group: GroupId, retry: bool) {
        let _ = self.node.remove_group(group);
        self.eager.remove(&group);
        if let Some(p) = self.published.partition(group) {
            p.set_failed();
        }
        let now = Instant::now();
        let retry_at = retry.then(|| {
            let backoff = reopen_backoff(self.backoffs.get(&group).copied(), now);
            self.backoffs.insert(group, (backoff, now));
            match self.published.partition(group) {
                Some(p) => tracing::warn!(
                    "replica {}/{} will be reopened in {} ms",
                    p.topic,
                    p.index,
                    backoff.as_millis()
                ),
                None => tracing::warn!(%group, backoff_ms = backoff.as_millis() as u64, "replica will be reopened after a backoff"),
            }
            now + backoff
        });
        self.failed.insert(group, retry_at);
        self.published.set_stopped(group, true);
    }

    /// Checks the segment files of the next [`VERIFY_PER_TICK`] open
    /// replicas, and stops those cut short under them.
    fn verify_some(&mut self) {
        let next: Vec<Arc<Partition>> = {
            let partitions = self
                .published
                .partitions
                .read()
                .unwrap_or_else(|p| p.into_inner());
            let after = match self.verified_up_to {
                Some(g) => {
                    partitions.range((std::ops::Bound::Excluded(g), std::ops::Bound::Unbounded))
                }
                None => partitions.range(..),
            };
            after
                .take(VERIFY_PER_TICK)
                .map(|(_, p)| Arc::clone(p))
                .collect()
        };
        self.verified_up_to = next.last().map(|p| p.group);
        for p in next {
            if p.is_failed() {
                continue;
            }
            if let Err(e) = p.verify_files()
                && e.is_damage()
            {
                tracing::error!("replica {}/{} failed: {e}", p.topic, p.index);
                self.stop_replica(p.group, false);
            }
        }
    }

    /// Takes the stops partitions' reads asked for, and reopens the stopped
    /// replicas whose backoff is over.
    fn stops_and_reopens(&mut self) {
        while let Ok(r) = self.stops_requested.try_recv() {
            if self.node.has_group(r.group) {
                tracing::debug!(group = %r.group, reason = %r.reason, "stopping a replica whose read failed");
                self.stop_replica(r.group, r.retry);
            }
        }
        let now = Instant::now();
        if !self.reconciling
            && self
                .failed
                .values()
                .any(|at| at.is_some_and(|at| at <= now))
        {
            self.reconcile();
        }
    }

    fn open(&mut self, t: &TopicImage, p: u32) -> Result<(), ReplicationError> {
        let group = t.group(p);
        let dir = partition_dir(&self.config.data_dir, &t.id, p);
        std::fs::create_dir_all(&dir)
            .map_err(ReplicationError::io("create replica directory", &dir))?;
        let voters = t.replicas[p as usize].clone();
        let (store, state) =
            FileStateStore::open(&dir, || ReplicaState::initial(Membership::voters(voters)))?;
        let single_voter = state.truncated.membership.voters == [self.me()]
            && state.truncated.membership.voters_outgoing.is_empty();
        let log_config = t.config.log_config();
        let max_batch_bytes = log_config.max_batch_bytes;
        let log = self.node.add_group(ReplicaSpec {
            group,
            dir: &dir,
            log_config,
            fsync: t.config.fsync,
            store: Box::new(store),
            state,
        })?;
        let status = self.node.status(group).expect("the group was just added");
        let partition = Arc::new(
            Partition::new(
                &t.name,
                p,
                group,
                dir,
                log,
                t.config.fsync,
                max_batch_bytes,
                TimestampBounds {
                    after_max_ms: t
                        .config
                        .timestamp_after_max_ms
                        .or(self.config.timestamps.after_max_ms),
                    before_max_ms: t
                        .config
                        .timestamp_before_max_ms
                        .or(self.config.timestamps.before_max_ms),
                },
                status.high_watermark,
                t.replicas[p as usize].clone(),
            )
            .reporting_stops_to(self.stop_requests.clone()),
        );
        self.published
            .partitions
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(group, partition);
        if single_voter {
            // A one-voter group need not wait out an election timeout: it
            // leads at once, before its topic's creation is answered.
            self.node.campaign(group)?;
            if let Some(s) = self.node.status(group)
                && s.leader == Some(self.me())
                && let Some(p) = self.published.partition(group)
            {
                p.set_leader(s.leader, true, s.term);
            }
        } else if status.term == Term(0) && t.replicas[p as usize].first() == Some(&self.me()) {
            // A group that has never had a leader (just created): its
            // preferred leader campaigns now and at every tick until one
            // is elected (see `eager`).
            self.node.campaign(group)?;
            self.eager
                .insert(group, self.ticks + EAGER_CAMPAIGN_TICKS_MAX);
        }
        Ok(())
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
            let may_round = self.may_round();
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
                    self.hand_over();
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
            if self.may_round() {
                let started = Instant::now();
                let times = self.round();
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
                && (!self.leads_with_peers()
                    || since.elapsed() >= Duration::from_millis(HANDOVER_MS_MAX))
            {
                break;
            }
        }
        self.round();
        // Let the deferred syncs finish, the queued batch too (it holds the
        // controller's last writes; their messages no longer matter).
        while self.syncing {
            match self.commands.blocking_recv() {
                Some(Command::Synced(_)) => {
                    self.syncing = false;
                    if let Some(next) = self.sync_queued.take() {
                        self.start_sync(next);
                    }
                }
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

    /// Whether this broker still leads a group that has other voters.
    fn leads_with_peers(&self) -> bool {
        let me = self.me();
        self.node.groups().any(|g| {
            self.node
                .status(g)
                .is_some_and(|s| s.leader == Some(me) && s.matched.len() > 1)
        })
    }

    /// Asks every group led here to hand leadership to its most caught-up
    /// follower (controlled shutdown).
    fn hand_over(&mut self) {
        let me = self.me();
        let groups: Vec<GroupId> = self.node.groups().collect();
        for g in groups {
            let Some(s) = self.node.status(g) else {
                continue;
            };
            if s.leader != Some(me) {
                continue;
            }
            if let Some((to, _)) = s
                .matched
                .iter()
                .filter(|(b, _)| *b != me)
                .max_by_key(|(b, m)| (*m, std::cmp::Reverse(*b)))
            {
                let _ = self.node.transfer_leader(g, *to);
            }
        }
    }

    /// Hands leadership back to preferred leaders that have caught up.
    fn balance(&mut self) {
        let me = self.me();
        for p in self.published.all_partitions() {
            let Some(&preferred) = p.replicas().first() else {
                continue;
            };
            if preferred == me {
                continue;
            }
            let Some(s) = self.node.status(p.group) else {
                continue;
            };
            if s.leader != Some(me) {
                continue;
            }
            let caught_up = s
                .matched
                .iter()
                .any(|(b, m)| *b == preferred && *m >= s.last_index);
            if caught_up {
                let _ = self.node.transfer_leader(p.group, preferred);
            }
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
                self.ticks += 1;
                let (node, ticks) = (&mut self.node, self.ticks);
                self.eager.retain(|&group, &mut until| {
                    let waiting =
                        ticks <= until && node.has_group(group) && node.leader(group).is_none();
                    waiting && (node.is_candidate(group) || node.campaign(group).is_ok())
                });
                if self.ticks % BALANCE_TICKS == 0 {
                    self.balance();
                }
                if self.ticks % REJOIN_CHECK_TICKS == 0 {
                    self.check_rejoined();
                }
                self.propose_cluster_id();
                if self.published.status_wanted.swap(false, Ordering::AcqRel) {
                    let groups = self
                        .node
                        .groups()
                        .filter_map(|g| self.node.status(g))
                        .collect();
                    self.published.status.send_replace(Arc::new(StatusReport {
                        controller: self.node.leader(GroupId::CONTROLLER),
                        groups,
                    }));
                }
            }
            Command::Retention => {
                let mut events = Vec::new();
                // The new log starts' syncs run on their own thread; the
                // segments go once they are back.
                let syncs = self.node.apply_retention(&mut events);
                // The thread ends only once the rest of the broker has let
                // go of this loop, which then ends too: its groups may wait.
                if !syncs.is_empty() && self.retention_syncer.send(syncs).is_err() {
                    tracing::warn!("the retention sync thread is gone: the broker is stopping");
                }
                self.unlink_expired();
                self.publish(events);
                for p in self.published.all_partitions() {
                    p.refresh_log_start();
                }
            }
            Command::Stop { reply } => return Some(reply),
            Command::RetentionSynced(done) => {
                let mut out = Vec::new();
                let mut events = Vec::new();
                self.node.complete_syncs(done, &mut out, &mut events);
                debug_assert!(out.is_empty(), "no Ready waits for retention's syncs");
                self.unlink_expired();
                self.publish(events);
            }
            Command::Synced(done) => {
                self.syncing = false;
                // The disk is free: what queued meanwhile goes at once.
                if let Some(next) = self.sync_queued.take() {
                    self.start_sync(next);
                }
                let mut out = Vec::new();
                let mut events = Vec::new();
                self.node.complete_syncs(done, &mut out, &mut events);
                self.drop_closed_syncs();
                self.unlink_expired();
                let dropped = self.send(out);
                if !dropped.is_empty() {
                    self.node.report_dropped(&dropped);
                }
                self.publish(events);
            }
        }
        None
    }

    fn propose_metadata(
        &mut self,
        mut command: MetadataCommand,
        reply: oneshot::Sender<Result<Outcome, NotController>>,
    ) {
        let leader = self.node.leader(GroupId::CONTROLLER);
        if leader != Some(self.me()) {
            // This broker's own registration goes to the controller over
            // the authenticated peer connection, never a client port.
            if let (Some(l), MetadataCommand::RegisterBroker { id, .. }) = (leader, &command)
                && *id == self.me().get()
            {
                let out = rill_replication::forward::forward_proposal(
                    self.me(),
                    l,
                    GroupId::CONTROLLER,
                    Bytes::from(command.encode()),
                );
                // Dropped when the link is full: the broker asks again.
                let _ = self.send(vec![out]);
            }
            let _ = reply.send(Err(NotController { leader }));
            return;
        }
        // The limit is a per-broker setting, so it travels in the command:
        // every broker then applies the same check with the same number,
        // and two creations proposed before either applied cannot both
        // pass it.
        if let MetadataCommand::CreateTopic {
            max_partition_replicas,
            ..
        } = &mut command
        {
            *max_partition_replicas = Some(self.config.max_partition_replicas);
        }
        // Refused now if it would be refused when applied (it is checked
        // again then: another command may come first).
        if let refused @ Outcome::Refused(..) = self.image.check(&command) {
            let _ = reply.send(Ok(refused));
            return;
        }
        let mut builder = BatchBuilder::new(CONTROLLER_BATCH_BYTES_MAX);
        let value = command.encode();
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let batch = builder
            .push(&NewRecord::value(&value, now_ms))
            .ok()
            .filter(|fits| *fits)
            .and_then(|_| builder.finish().ok())
            .and_then(|b| CheckedBatch::new(Bytes::from(b), CONTROLLER_BATCH_BYTES_MAX).ok())
            .flatten();
        let Some(batch) = batch else {
            let _ = reply.send(Ok(Outcome::Refused(
                rill_client::protocol::ErrorCode::InvalidRequest,
                "metadata command too large".into(),
            )));
            return;
        };
        match self.node.propose(GroupId::CONTROLLER, batch) {
            Ok(p) => {
                self.pending.insert(p.index, (p.term, reply));
            }
            Err(_) => {
                let _ = reply.send(Err(NotController {
                    leader: self.node.leader(GroupId::CONTROLLER),
                }));
            }
        }
    }

    /// Takes a peer's word that this broker lost what it had acknowledged
    /// (see [`crate::identity`]): every replica catches up before it votes
    /// again, and the identity says so across restarts.
    fn take_rejoin(&mut self) {
        if !self.config.rejoin_requested.swap(false, Ordering::AcqRel)
            || self.config.identity.rejoining
        {
            return;
        }
        self.node.set_rejoining(true);
        self.config.identity.rejoining = true;
        if let Err(e) = self.config.identity.save(&self.config.data_dir) {
            tracing::error!(error = %e, "could not record that this broker rejoins");
        }
    }

    /// Ends rejoining once every replica the metadata places here is open
    /// and caught up, and the metadata itself is: a replica opened after
    /// that is new, with nothing to have lost.
    fn check_rejoined(&mut self) {
        if !self.config.identity.rejoining || self.node.catching_up() > 0 {
            return;
        }
        let controller_applied = self
            .node
            .status(GroupId::CONTROLLER)
            .is_some_and(|s| self.applied >= s.commit);
        let me = self.me();
        let all_open = self.image.topics.values().all(|t| {
            (0..t.partitions()).all(|p| {
                let g = t.group(p);
                !t.replicas[p as usize].contains(&me)
                    || self.node.has_group(g)
                    || self.failed.contains_key(&g)
            })
        });
        if !(controller_applied && all_open) {
            return;
        }
        self.node.set_rejoining(false);
        self.config.identity.rejoining = false;
        match self.config.identity.save(&self.config.data_dir) {
            Ok(()) => tracing::info!("caught up in every group: this broker votes again"),
            Err(e) => tracing::error!(error = %e, "could not record that this broker has rejoined"),
        }
    }

    /// Proposes what peer `from` asked this broker to propose for it: only
    /// its own registration on the controller, which must lead here (the
    /// peer asks again otherwise). Anything else is dropped and logged.
    fn take_forwarded(&mut self, group: GroupId, from: BrokerId, data: Vec<Bytes>) {
        for d in data {
            match MetadataCommand::decode(&d) {
                Some(command @ MetadataCommand::RegisterBroker { id, .. })
                    if group == GroupId::CONTROLLER && id == from.get() =>
                {
                    // Nobody here waits for the outcome: the peer sees its
                    // address in the metadata it applies.
                    let (reply, _) = oneshot::channel();
                    self.propose_metadata(command, reply);
                }
                _ => {
                    tracing::warn!(%group, peer = %from, "a peer asked for a proposal it may not make; dropped")
                }
            }
        }
    }

    /// Queues messages for the peers; returns those that could not be
    /// queued (reported to raft-rs once the round is finished: not while a
    /// Ready is outstanding).
    fn send(&mut self, out: Vec<Outgoing>) -> Vec<Dropped> {
        if out.is_empty() {
            return Vec::new();
        }
        match &self.transport {
            Some(t) => t.send(out),
            None => {
                tracing::trace!(messages = out.len(), "no peers to send to");
                Vec::new()
            }
        }
    }

    /// Syncs that completed after their group closed hold its deleted
    /// files open: their last close goes to the janitor.
    fn drop_closed_syncs(&mut self) {
        let closed = self.node.take_closed_syncs();
        if !closed.is_empty() {
            self.janitor.drop_later(closed);
        }
    }

    /// One round over every group with work; returns where its time went.
    fn round(&mut self) -> RoundTimes {
        let mut times = RoundTimes::default();
        let mut phase = Instant::now();
        let mut lap = |t: &mut Duration| {
            *t = phase.elapsed();
            phase = Instant::now();
        };
        let mut out: Vec<Outgoing> = Vec::new();
        let mut events = Vec::new();
        let mut jobs = Vec::new();
        let mut round = self.node.start_round(&mut out, &mut events);
        lap(&mut times.ready);
        if round.is_empty() && events.is_empty() && out.is_empty() {
            return times;
        }
        self.node.write_round(&mut round, &mut jobs, &mut events);
        lap(&mut times.write);
        // The round's messages leave once its writes are done (to the
        // page cache): a leader's appends then send their large entries
        // from the segment files rather than copying them from memory.
        self.node.attach_file_spans(&mut out);
        let mut dropped = self.send(std::mem::take(&mut out));
        let deferred = self.node.defer_syncs(&mut round, &mut jobs);
        if !deferred.is_empty() {
            match (&mut self.sync_queued, self.syncing) {
                (_, false) => self.start_sync(deferred),
                (Some(queued), true) => queued.merge(deferred),
                (queued @ None, true) => *queued = Some(deferred),
            }
        }
        // `acks=1` waits for the leader's write alone, and a Ready's
        // committed entries were durable before it: both before the syncs.
        self.publish(std::mem::take(&mut events));
        let results = run_syncs(jobs, false);
        lap(&mut times.sync);
        self.node
            .finish_round(round, results, &mut out, &mut events);
        self.drop_closed_syncs();
        self.node.attach_file_spans(&mut out);
        dropped.extend(self.send(out));
        if !dropped.is_empty() {
            self.node.report_dropped(&dropped);
        }
        self.publish(events);
        lap(&mut times.finish);
        times
    }

    /// Whether a round may start: not while the batch queued behind the
    /// sync in flight is full.
    fn may_round(&self) -> bool {
        self.sync_queued
            .as_ref()
            .is_none_or(|q| q.readies() < SYNC_QUEUED_READIES_MAX)
    }

    /// Hands the segments retention took, whose new log starts are now
    /// durable, to the janitor to unlink and close.
    fn unlink_expired(&mut self) {
        self.janitor.unlink_expired(self.node.take_expired());
    }

    fn start_sync(&mut self, batch: SyncBatch) {
        debug_assert!(!self.syncing, "one sync batch in flight at a time");
        self.syncing = true;
        if self.syncer.send(batch).is_err() {
            // The sync thread only ends when this loop drops its sender:
            // it cannot be gone while the loop runs.
            unreachable!("the sync thread outlives the Raft thread's loop");
        }
    }

    fn publish(&mut self, events: Vec<Event>) {
        let mut moved = false;
        let mut controller_commit = None;
        for e in events {
            match e {
                Event::Committed { group, index, .. } if group == GroupId::CONTROLLER => {
                    controller_commit = Some(index);
                }
                Event::RoleChanged {
                    group,
                    leader,
                    is_leader,
                    ..
                } if group == GroupId::CONTROLLER => {
                    if !is_leader {
                        // Proposals of a leadership that ended may never
                        // be applied: their proposers retry elsewhere.
                        for (_, (_, reply)) in std::mem::take(&mut self.pending) {
                            let _ = reply.send(Err(NotController { leader }));
                        }
                    }
                    self.published.controller.send_replace(leader);
                    tracing::info!(leader = ?leader.map(|l| l.get()), "controller leader changed");
                }
                Event::Appended { group, index, term } => {
                    if let Some(p) = self.published.partition(group) {
                        p.set_appended(term, index);
                    }
                }
                Event::Committed {
                    group,
                    index,
                    high_watermark,
                } => {
                    if let Some(p) = self.published.partition(group) {
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
                    if let Some(p) = self.published.partition(group) {
                        p.set_leader(leader, is_leader, term);
                    }
                }
                Event::Restored {
                    group,
                    index,
                    next_offset,
                } => {
                    tracing::info!(%group, %index, %next_offset, "replica restored from its leader's snapshot");
                    if let Some(p) = self.published.partition(group) {
                        p.refresh_log_start();
                    }
                }
                Event::Failed { group, reason } => {
                    // A write or sync failed (ENOSPC, EIO): reopened after
                    // a backoff, from what its files hold, unless they were
                    // cut short under it (recovery would take that for a
                    // torn tail and quietly lose what was cut).
                    let mut retry = group != GroupId::CONTROLLER;
                    match self.published.partition(group) {
                        Some(p) => {
                            tracing::error!("replica {}/{} failed: {reason}", p.topic, p.index);
                            if let Err(e) = p.verify_files().map_err(|e| e.is_damage().then_some(e))
                                && let Some(e) = e
                            {
                                tracing::error!(
                                    "replica {}/{} is not reopened: {e}",
                                    p.topic,
                                    p.index
                                );
                                retry = false;
                            }
                        }
                        None => tracing::error!(%group, %reason, "replica stopped"),
                    }
                    self.stop_replica(group, retry);
                }
            }
        }
        if let Some(index) = controller_commit
            && let Err(e) = self.apply_controller(index)
        {
            tracing::error!(error = %e, "applying the controller's log failed");
        }
        if moved {
            self.data_arrived.notify_waiters();
        }
    }
}

/// Starts a sync thread named `name`: it runs sync batches one after
/// another, in the order the Raft thread made them, and hands each outcome
/// back as the command `done` makes of it. It holds only a weak sender, so
/// the Raft thread still sees its channel close when the rest of the broker
/// lets go; it ends when the Raft thread drops the batch sender.
///
/// Its queue needs no bound of its own: the deferred batches' thread has
/// one batch at a time (`RaftLoop::syncing`), and a retention batch holds
/// only groups with no state sync in flight, so all of them together hold
/// each group once at most.
fn start_syncer(
    name: &str,
    commands: mpsc::WeakSender<Command>,
    done: fn(SyncedBatch) -> Command,
) -> Result<std::sync::mpsc::Sender<SyncBatch>, ReplicationError> {
    let (tx, rx) = std::sync::mpsc::channel::<SyncBatch>();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            while let Ok(batch) = rx.recv() {
                let synced = batch.run_with(|jobs| run_syncs(jobs, true));
                let Some(commands) = commands.upgrade() else {
                    return;
                };
                if commands.blocking_send(done(synced)).is_err() {
                    return;
                }
            }
        })
        .map_err(ReplicationError::io("start a sync thread", name))?;
    Ok(tx)
}

/// Where a round's time went, for the slow-round warning.
#[derive(Debug, Default)]
struct RoundTimes {
    /// Collecting the Readies (raft-rs reads the entries they carry).
    ready: Duration,
    /// Writing entries, hard states and snapshots, and queueing messages.
    write: Duration,
    /// Deferring syncs, publishing, and the syncs run inside the round
    /// (one-voter groups).
    sync: Duration,
    /// Applying, advancing, and sending what the syncs released.
    finish: Duration,
}

/// Runs sync jobs ([`run_jobs`]) and logs the round at debug level: files,
/// bytes and time, and whether it ran on the sync thread (`deferred`).
/// bench.sh reads W3's mean sync size from these lines.
fn run_syncs(jobs: Vec<SyncJob>, deferred: bool) -> Vec<SyncResult> {
    let started = Instant::now();
    let bytes: u64 = jobs.iter().map(SyncJob::bytes).sum();
    let files = jobs.len();
    let results = run_jobs(jobs);
    if files > 0 {
        tracing::debug!(
            files,
            bytes,
            deferred,
            us = started.elapsed().as_micros() as u64,
            "sync round"
        );
    }
    results
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reopen_backoff_doubles_from_one_second_to_a_minute_while_failures_repeat() {
        let t0 = Instant::now();
        let mut last = None;
        let mut waits = Vec::new();
        let mut now = t0;
        for _ in 0..9 {
            let wait = reopen_backoff(last, now);
            waits.push(wait.as_secs());
            last = Some((wait, now));
            // Reopened when due, and failed again at once.
            now += wait;
        }
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        // A replica that then ran for longer than its wait plus a minute
        // starts over.
        let (wait, at) = last.unwrap();
        let later = at + wait + REOPEN_BACKOFF_MAX + Duration::from_secs(1);
        assert_eq!(reopen_backoff(last, later), REOPEN_BACKOFF_FIRST);
    }

    #[tokio::test]
    async fn ticks_the_raft_thread_has_not_taken_are_dropped_not_queued() {
        let (tx, mut rx) = mpsc::channel(64);
        let tick_queued = Arc::new(AtomicBool::new(false));
        let handle = RaftHandle {
            commands: tx,
            tick_queued: Arc::clone(&tick_queued),
        };
        let ticker = tokio::spawn(tick(handle));
        // Five tick periods with nobody taking ticks: one waits, not five.
        tokio::time::sleep(Duration::from_millis(5 * TICK_MS)).await;
        assert!(matches!(rx.try_recv(), Ok(Command::Tick)));
        assert!(rx.try_recv().is_err(), "missed ticks are not queued");
        // Taken (as the Raft thread marks it), the next tick comes.
        tick_queued.store(false, Ordering::Release);
        tokio::time::sleep(Duration::from_millis(3 * TICK_MS)).await;
        assert!(matches!(rx.try_recv(), Ok(Command::Tick)));
        assert!(rx.try_recv().is_err());
        ticker.abort();
    }
}
