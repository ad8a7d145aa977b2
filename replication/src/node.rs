//! The Raft groups of one broker and the Ready loop that drives them, free
//! of tokio, sockets and clocks: the broker and the simulator run the same
//! code, feeding it ticks, messages and proposals, running the syncs it
//! asks for, and carrying the messages it emits.
//!
//! # One iteration
//!
//! 1. Inputs: [`Node::tick`], [`Node::step`], [`Node::propose`].
//! 2. [`Node::start_round`] takes every group's Ready and hands out its
//!    `messages()`, which may leave before anything is durable. Then
//!    [`Node::write_round`], in raft-rs's documented order per group: a
//!    snapshot is installed; the committed entries are applied (raft-rs
//!    hands out only entries that are already durable here, so they need
//!    not wait for this round's syncs); entries are written to the log;
//!    the hard state is written. What must be made durable is returned as
//!    [`SyncJob`]s: one per log written (an `fsync` topic's) and one per
//!    hard state whose term or vote changed, across every group on the
//!    broker. The broker sends the `messages()` once the round is written,
//!    with [`Node::attach_file_spans`]: a leader's appends then carry where
//!    their entries lie in its segment files, and the transport sends them
//!    from there (`sendfile`) rather than copying them out of memory. The
//!    write is to the page cache; the syncs still follow the sends.
//! 3. The caller runs the jobs (in parallel, off this thread) and hands the
//!    results to [`Node::finish_round`], which, per group, sends the
//!    `persisted_messages()` (votes, append responses: only now may they
//!    leave), calls `advance()`, sends the
//!    `LightReady`'s messages, applies its committed entries, and calls
//!    `advance_apply()`.
//!
//! Deferred syncs: instead of waiting for a round's syncs before step 3,
//! the caller may call [`Node::defer_syncs`] after step 2. The Readies of
//! groups with other voters are then handed back to raft-rs at once
//! (`advance_append_async`); their syncs form a [`SyncBatch`] that runs in
//! the background, in order with earlier batches, and
//! [`Node::complete_syncs`] later reports them persisted
//! (`on_persist_ready`) and releases the messages they held. Meanwhile the
//! node steps messages and runs further rounds: a leader counts its
//! followers' acknowledgements while its own sync runs, and every broker
//! writes the next entries while the previous ones sync.
//!
//! A group whose topic has `fsync=false` counts an entry as persisted once
//! it is written to the file (the page cache): it asks for no sync, and survives a crash of the
//! process but not of the machine.
//!
//! Determinism: groups live in a `BTreeMap`, `max_election_tick` is
//! `election_tick + 1` (raft-rs's own randomisation picks from a range of
//! one), and election jitter comes from a seeded generator: a group misses
//! each tick with probability 1/4, so no election timeout is shorter than
//! `election_tick` ticks.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use raft::eraftpb::{Entry, Message, MessageType};
use raft::{RawNode, Ready, StateRole};
use rill_storage::batch::BatchHeader;
use rill_storage::{Clock, LogConfig, LogError, Offset, RaftIndex, SyncDone, SyncPlan, Term};

use crate::contain::raft_call;
use crate::error::ReplicationError;
use crate::ids::{BrokerId, GroupId};
use crate::outgoing::Dropped;
use crate::state::{ReplicaState, StateStore, StateSync};
use crate::storage::{ReplicaLog, SharedLog};

pub use crate::outgoing::Outgoing;

/// Snapshots one round installs, at most: each is synced and replaces the
/// group's segments inside the round, on the thread that runs every
/// group's heartbeats.
pub const SNAPSHOT_INSTALLS_PER_ROUND_MAX: usize = 8;

/// Settings shared by every group of a node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This broker.
    pub id: BrokerId,
    /// Ticks without a leader's word before a follower campaigns. With the
    /// broker's 100 ms tick the default, 10, is a 1 s election timeout.
    pub election_tick: usize,
    /// Ticks between a leader's heartbeats.
    pub heartbeat_tick: usize,
    /// Most entry bytes in one append message.
    pub max_size_per_msg_bytes: u64,
    /// Most append messages in flight to one follower.
    pub max_inflight_msgs: usize,
    /// Most committed entry bytes handed out in one Ready.
    pub max_committed_size_per_ready_bytes: u64,
    /// Most bytes a leader holds proposed but not committed; beyond it a
    /// proposal is refused (retriable). With syncs running beside the Raft
    /// thread nothing else stops producers from outrunning a stalled disk.
    pub max_uncommitted_bytes: u64,
    /// Seed of the election jitter.
    pub jitter_seed: u64,
}

impl NodeConfig {
    /// The defaults for broker `id`.
    pub fn new(id: BrokerId) -> NodeConfig {
        NodeConfig {
            id,
            election_tick: 10,
            heartbeat_tick: 2,
            max_size_per_msg_bytes: 1 << 20,
            max_inflight_msgs: 256,
            max_committed_size_per_ready_bytes: 16 << 20,
            max_uncommitted_bytes: 256 << 20,
            jitter_seed: id.get(),
        }
    }
}

/// What happened in a round, for the broker (answering produces, waking
/// fetches, routing requests) and the simulator (checking safety).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Entries up to `index` are in the leader's log (in the mapping):
    /// `acks=1` produces up to there may be answered.
    Appended {
        /// The group.
        group: GroupId,
        /// The last index written.
        index: RaftIndex,
        /// Its term.
        term: Term,
    },
    /// Entries up to `index` committed and were applied here; consumers
    /// may read below `high_watermark`.
    Committed {
        /// The group.
        group: GroupId,
        /// The last index applied.
        index: RaftIndex,
        /// The offset after it.
        high_watermark: Offset,
    },
    /// The group's leader or this replica's role changed.
    RoleChanged {
        /// The group.
        group: GroupId,
        /// The leader known now.
        leader: Option<BrokerId>,
        /// Whether it is this broker.
        is_leader: bool,
        /// The current term.
        term: Term,
    },
    /// This replica was too far behind its leader's log start and was
    /// restored from a snapshot: its log now starts at `index + 1`, offset
    /// `next_offset`.
    Restored {
        /// The group.
        group: GroupId,
        /// The snapshot's index.
        index: RaftIndex,
        /// The log start offset now.
        next_offset: Offset,
    },
    /// A sync or write failed: the group stopped here (an fsync error is
    /// not retried: the page cache may have dropped what it failed to
    /// write).
    Failed {
        /// The group.
        group: GroupId,
        /// Why.
        reason: String,
    },
}

/// A proposal accepted by the leader: where its records will be once the
/// entry commits (it may still be lost to a leader change: wait for
/// [`Event::Committed`] past `index` and check the term there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proposed {
    /// The entry's Raft index.
    pub index: RaftIndex,
    /// Its term.
    pub term: Term,
    /// Offset of its first record.
    pub base_offset: Offset,
    /// The offset after its last record.
    pub next_offset: Offset,
}

/// A record batch checked in full (length, CRC, every record) and ready to
/// be proposed. The only way to propose data: nothing unchecked enters a
/// log through a leader.
#[derive(Debug, Clone)]
pub struct CheckedBatch {
    bytes: Bytes,
    header: BatchHeader,
}

impl CheckedBatch {
    /// Validates `bytes` as one data batch of at most `max_batch_bytes`.
    /// Control batches are the replication layer's own and never proposed
    /// as data: `Ok(None)`.
    pub fn new(bytes: Bytes, max_batch_bytes: usize) -> Result<Option<CheckedBatch>, LogError> {
        let header = rill_storage::batch::validate(&bytes, max_batch_bytes)?;
        if header.is_control() {
            return Ok(None);
        }
        Ok(Some(CheckedBatch { bytes, header }))
    }

    /// The batch's header.
    pub fn header(&self) -> &BatchHeader {
        &self.header
    }
}

/// One replica: a raft-rs group over its log.
struct Replica {
    raw: RawNode<ReplicaLog>,
    fsync: bool,
    /// Largest batch its log takes, bytes: the bound a leader's entries
    /// are checked against as they arrive.
    max_batch_bytes: usize,
    /// What the last proposal of this leadership took: its index, term and
    /// the offset after it (the next proposal starts there while it is not
    /// yet in the log).
    last_proposed: Option<(RaftIndex, Term, Offset)>,
    high_watermark: Offset,
    leader: Option<BrokerId>,
    /// While this replica catches up after losing what it held (see
    /// `catch_up`): it neither votes nor campaigns.
    catching_up: Option<crate::catch_up::CatchUp>,
    /// Readies handed back to raft-rs before their syncs ran
    /// ([`Node::defer_syncs`]), oldest first: each one's number and the
    /// messages that may leave only once it is durable.
    unsynced: VecDeque<Unsynced>,
}

/// A Ready handed back to raft-rs whose syncs have not completed.
#[derive(Debug)]
struct Unsynced {
    /// The Ready's number.
    number: u64,
    /// Its `persisted_messages()`, held until it is durable.
    persisted: Vec<Message>,
    /// The index it lets the group apply through (0 for none).
    applies: u64,
}

impl Replica {
    /// Whether the group may take its next Ready now. Not while a deferred
    /// sync of its hard state (or retention's) runs, unless the Ready saves
    /// nothing ([`Replica::ready_saves_no_state`]): the state file keeps
    /// one save in flight at most (term and vote changes are rare; the
    /// group waits a sync). Not with a snapshot to
    /// install while earlier Readies are unsynced: a snapshot Ready is
    /// never deferred, because raft-rs would take it as installed
    /// (`advance_append_async`) before it counts as applied, and a
    /// campaign in between reads entries below the new log start.
    fn may_ready(&self) -> bool {
        let snapshot_waits =
            self.raw.raft.raft_log.unstable_snapshot().is_some() && !self.unsynced.is_empty();
        let state_waits = self.raw.store().state_sync_pending() && !self.ready_saves_no_state();
        !state_waits && !snapshot_waits
    }

    /// Whether the next Ready writes nothing that must reach the state file
    /// or the log: no entries, no snapshot, and the term and vote already
    /// durable (a commit index waits in memory; see
    /// [`ReplicaLog::set_commit`]). Such a Ready may run while a state sync
    /// is pending: retention's takes as long as the disk's writeback queue,
    /// seconds at worst, and a leader whose heartbeats stopped that long
    /// would be replaced by its followers.
    fn ready_saves_no_state(&self) -> bool {
        let raft = &self.raw.raft;
        let vote = (raft.vote != 0).then_some(BrokerId(raft.vote));
        raft.raft_log.unstable_entries().is_empty()
            && raft.raft_log.unstable_snapshot().is_none()
            && self.raw.store().durable_term_vote() == (Term(raft.term), vote)
    }
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("fsync", &self.fsync)
            .field("high_watermark", &self.high_watermark)
            .field("leader", &self.leader)
            .finish_non_exhaustive()
    }
}

/// A work item of a round's durability step. `Send`: run it anywhere.
#[derive(Debug)]
#[must_use = "a round is not finished until its syncs ran and were handed back"]
pub enum SyncJob {
    /// Sync a group's log.
    Log(GroupId, SyncPlan),
    /// Sync a group's hard state.
    State(GroupId, StateSync),
}

/// A job that ran.
#[derive(Debug)]
pub enum SyncResult {
    /// A log sync's outcome.
    Log(GroupId, Result<SyncDone, LogError>),
    /// A state sync's outcome.
    State(GroupId, Result<StateSync, ReplicationError>),
}

impl SyncJob {
    /// Runs the sync (`fdatasync` of the files written).
    pub fn run(self) -> SyncResult {
        match self {
            SyncJob::Log(g, plan) => SyncResult::Log(g, plan.run()),
            SyncJob::State(g, sync) => SyncResult::State(g, sync.run()),
        }
    }

    /// The group it belongs to.
    pub fn group(&self) -> GroupId {
        match self {
            SyncJob::Log(g, _) | SyncJob::State(g, _) => *g,
        }
    }

    /// Bytes of log data it syncs.
    pub fn bytes(&self) -> u64 {
        match self {
            SyncJob::Log(_, plan) => plan.bytes(),
            SyncJob::State(..) => 0,
        }
    }
}

/// The syncs of Readies that were handed back to raft-rs before they ran
/// ([`Node::defer_syncs`]). Batches must run in the order they were made,
/// one after another (the jobs inside one batch may run in parallel), and
/// each outcome goes back to [`Node::complete_syncs`] in that order.
/// Retention's batches ([`Node::apply_retention`]) are apart from that
/// order.
#[derive(Debug)]
#[must_use = "the groups of a deferred batch wait until it is completed"]
pub struct SyncBatch {
    /// The syncs to run.
    pub jobs: Vec<SyncJob>,
    /// The deferred Readies: group and Ready number.
    readies: Vec<(GroupId, u64)>,
}

/// A [`SyncBatch`] whose jobs ran.
#[derive(Debug)]
pub struct SyncedBatch {
    results: Vec<SyncResult>,
    readies: Vec<(GroupId, u64)>,
}

impl SyncBatch {
    /// Whether it has nothing to sync and no Ready waits for it.
    pub fn is_empty(&self) -> bool {
        self.readies.is_empty() && self.jobs.is_empty()
    }

    /// How many Readies wait for the batch.
    pub fn readies(&self) -> usize {
        self.readies.len()
    }

    /// Folds `later` (made after this batch, which has not run) into this
    /// batch, so that one run syncs both: group commit across rounds while
    /// an earlier batch keeps the disk busy. A group's newer log plan
    /// covers its older one (nothing of the group completed in between,
    /// so every file still unsynced then is still unsynced now, and
    /// `fdatasync` works on whole files): the older plan is dropped.
    pub fn merge(&mut self, later: SyncBatch) {
        let mut logs: BTreeMap<GroupId, usize> = self
            .jobs
            .iter()
            .enumerate()
            .filter_map(|(i, j)| match j {
                SyncJob::Log(g, _) => Some((*g, i)),
                SyncJob::State(..) => None,
            })
            .collect();
        for job in later.jobs {
            if let SyncJob::Log(group, _) = &job {
                if let Some(&i) = logs.get(group) {
                    self.jobs[i] = job;
                    continue;
                }
                logs.insert(*group, self.jobs.len());
            }
            self.jobs.push(job);
        }
        self.readies.extend(later.readies);
    }

    /// Runs the jobs with `run`, which returns one result per job.
    pub fn run_with(self, run: impl FnOnce(Vec<SyncJob>) -> Vec<SyncResult>) -> SyncedBatch {
        SyncedBatch {
            results: run(self.jobs),
            readies: self.readies,
        }
    }

    /// Runs the jobs one after another, here.
    pub fn run(self) -> SyncedBatch {
        self.run_with(|jobs| jobs.into_iter().map(SyncJob::run).collect())
    }
}

/// The Readies of a round, held across its syncs.
#[derive(Debug)]
#[must_use = "hand the round back to Node::finish_round"]
pub struct Round {
    /// Each group's Ready, with the index it lets the group apply through
    /// (its last committed entry, or its snapshot), 0 for none.
    readies: Vec<(GroupId, Ready, u64)>,
    /// Snapshots sent in the round, by group and follower.
    snapshots: Vec<(GroupId, BrokerId)>,
    /// Messages of deferred Readies that need not wait for their syncs
    /// (see [`Node::defer_syncs`]), sent by [`Node::finish_round`].
    early: Vec<Outgoing>,
}

impl Round {
    /// Whether the round handled nothing.
    pub fn is_empty(&self) -> bool {
        self.readies.is_empty()
    }
}

/// A snapshot of one group's replication, for `cluster status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupStatus {
    /// The group.
    pub group: GroupId,
    /// The leader this replica knows.
    pub leader: Option<BrokerId>,
    /// The current term.
    pub term: Term,
    /// The commit index.
    pub commit: RaftIndex,
    /// The last index in this replica's log.
    pub last_index: RaftIndex,
    /// The high watermark here.
    pub high_watermark: Offset,
    /// On the leader: each voter's match index.
    pub matched: Vec<(BrokerId, RaftIndex)>,
}

/// splitmix64: a tiny seeded generator for election jitter.
#[derive(Debug, Clone)]
struct Jitter(u64);

impl Jitter {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Every Raft group of one broker. See the module documentation.
#[derive(Debug)]
pub struct Node {
    config: NodeConfig,
    groups: BTreeMap<GroupId, Replica>,
    clock: Arc<dyn Clock>,
    jitter: Jitter,
    logger: slog::Logger,
    /// Completed syncs of groups closed after they were planned; see
    /// [`Node::take_closed_syncs`].
    closed_syncs: Vec<SyncDone>,
    /// Segments retention took, by group, waiting for the sync of the new
    /// snapshot point before they may be unlinked (one per group at most:
    /// retention skips a group while a state sync is pending).
    retention_waiting: BTreeMap<GroupId, rill_storage::Expired>,
    /// Segments retention took whose new snapshot point is durable; see
    /// [`Node::take_expired`].
    expired: Vec<rill_storage::Expired>,
    /// Whether this broker rejoins after losing its data: every group
    /// opened while it is set starts catching up ([`Node::set_rejoining`]).
    rejoining: bool,
    /// Groups stopped between rounds because their log could not be read
    /// back (see `contain`), with why: reported by the next round.
    stopped_between_rounds: Vec<(GroupId, String)>,
}

/// What opening a replica needs.
#[derive(Debug)]
pub struct ReplicaSpec<'a> {
    /// The group.
    pub group: GroupId,
    /// The replica's directory.
    pub dir: &'a Path,
    /// The log's settings.
    pub log_config: LogConfig,
    /// Whether persisted means fdatasync'ed (`true`) or in the mapping.
    pub fsync: bool,
    /// Where the hard state lives, and what it loaded.
    pub store: Box<dyn StateStore>,
    /// The loaded state.
    pub state: ReplicaState,
}

impl Node {
    /// A node with no groups.
    pub fn new(config: NodeConfig, clock: Arc<dyn Clock>) -> Node {
        let logger = crate::logger::logger(slog::o!("broker" => config.id.get()));
        Node {
            jitter: Jitter(config.jitter_seed),
            config,
            groups: BTreeMap::new(),
            clock,
            logger,
            closed_syncs: Vec::new(),
            retention_waiting: BTreeMap::new(),
            expired: Vec::new(),
            rejoining: false,
            stopped_between_rounds: Vec::new(),
        }
    }

    /// Whether this broker rejoins its cluster after losing what it had
    /// acknowledged (a new incarnation of its data directory). While set,
    /// every group here, and every group opened later, catches up before it
    /// votes or campaigns again (see `catch_up`); clearing it stops only
    /// groups opened from then on from starting so.
    pub fn set_rejoining(&mut self, rejoining: bool) {
        self.rejoining = rejoining;
        if rejoining {
            for r in self.groups.values_mut() {
                r.catching_up.get_or_insert_with(Default::default);
            }
        }
    }

    /// Groups here still catching up: they neither vote nor campaign.
    pub fn catching_up(&self) -> usize {
        self.groups
            .values()
            .filter(|r| r.catching_up.is_some())
            .count()
    }

    /// Completed syncs of groups closed since they were planned (their
    /// topics deleted). Each still holds its segment files open, and the
    /// last close of a deleted file is where the filesystem frees it (with
    /// `discard`, a synchronous trim): the caller may drop them on a thread
    /// where that wait harms nothing.
    pub fn take_closed_syncs(&mut self) -> Vec<SyncDone> {
        std::mem::take(&mut self.closed_syncs)
    }

    /// Segments retention took whose groups' new snapshot points are
    /// durable: the caller unlinks them, off the Raft thread.
    pub fn take_expired(&mut self) -> Vec<rill_storage::Expired> {
        std::mem::take(&mut self.expired)
    }

    /// This broker's id.
    pub fn id(&self) -> BrokerId {
        self.config.id
    }

    /// Opens a replica (recovering its log) and starts its group.
    pub fn add_group(&mut self, spec: ReplicaSpec<'_>) -> Result<SharedLog, ReplicationError> {
        if self.groups.contains_key(&spec.group) {
            return Err(ReplicationError::GroupExists(spec.group));
        }
        let max_batch_bytes = spec.log_config.max_batch_bytes;
        let mut store = ReplicaLog::open(
            spec.dir,
            spec.log_config,
            self.clock.clone(),
            spec.store,
            spec.state,
        )?;
        store.set_entries_need_sync(spec.fsync);
        let applied = store.state().hard.commit;
        let log = store.log().clone();
        let high_watermark = store.next_offset_after(applied)?;
        let c = &self.config;
        let raft_config = raft::Config {
            id: c.id.get(),
            election_tick: c.election_tick,
            heartbeat_tick: c.heartbeat_tick,
            min_election_tick: c.election_tick,
            max_election_tick: c.election_tick + 1,
            applied: applied.get(),
            max_size_per_msg: c.max_size_per_msg_bytes,
            max_inflight_msgs: c.max_inflight_msgs,
            max_committed_size_per_ready: c.max_committed_size_per_ready_bytes,
            max_uncommitted_size: c.max_uncommitted_bytes,
            check_quorum: true,
            pre_vote: true,
            ..raft::Config::default()
        };
        let logger = self.logger.new(slog::o!("group" => spec.group.get()));
        let raw = RawNode::new(&raft_config, store, &logger)?;
        // Each group starts its election clock at its own phase.
        let mut replica = Replica {
            raw,
            fsync: spec.fsync,
            max_batch_bytes,
            last_proposed: None,
            high_watermark,
            leader: None,
            catching_up: self.rejoining.then(Default::default),
            unsynced: VecDeque::new(),
        };
        let phase = self.jitter.next() % c.election_tick as u64;
        for _ in 0..phase {
            replica.raw.tick();
        }
        self.groups.insert(spec.group, replica);
        Ok(log)
    }

    /// Stops a group and closes its replica (its files stay).
    pub fn remove_group(&mut self, group: GroupId) -> Result<(), ReplicationError> {
        // Its directory goes: segments retention took need no unlink, and
        // closing files still linked costs nothing.
        self.retention_waiting.remove(&group);
        self.groups
            .remove(&group)
            .map(drop)
            .ok_or(ReplicationError::UnknownGroup(group))
    }

    /// The groups here.
    pub fn groups(&self) -> impl Iterator<Item = GroupId> + '_ {
        self.groups.keys().copied()
    }

    /// Whether `group` has a replica here.
    pub fn has_group(&self, group: GroupId) -> bool {
        self.groups.contains_key(&group)
    }

    /// Whether any group has a Ready to handle (the caller need not wait
    /// for input before the next round).
    pub fn has_ready(&self) -> bool {
        self.groups
            .values()
            .any(|r| r.raw.has_ready() && r.may_ready())
    }

    /// One tick for every group, less jitter: each group misses a tick
    /// with probability 1/4, so election timeouts spread out above
    /// `election_tick` ticks and never fall below it.
    pub fn tick(&mut self) {
        let mut unreadable = Vec::new();
        for (&group, r) in self.groups.iter_mut() {
            if let Some(c) = r.catching_up {
                let log = &r.raw.raft.raft_log;
                if c.done(log.committed, log.persisted) {
                    tracing::info!(%group, through = ?c.target(), "caught up: votes again");
                    r.catching_up = None;
                } else {
                    // No election clock: it must not campaign with a log
                    // it has lost.
                    continue;
                }
            }
            if self.jitter.next() % 4 != 0
                && let Err(e) = raft_call(group, &mut r.raw, RawNode::tick)
            {
                unreadable.push((group, e));
            }
        }
        for (group, e) in unreadable {
            self.stop_unreadable(group, &e);
        }
    }

    /// Hands a message from a peer to its group. A message for a group not
    /// here is refused (the sender learns of it from the controller), and
    /// so is one that breaks Raft's rules or that raft-rs could not take
    /// without aborting ([`ReplicationError::RefusedMessage`]; see
    /// `peer_check`): what a peer sends never stops this broker.
    pub fn step(&mut self, group: GroupId, message: Message) -> Result<(), ReplicationError> {
        let r = self
            .groups
            .get_mut(&group)
            .ok_or(ReplicationError::UnknownGroup(group))?;
        let mut message = message;
        // Proposals enter through `propose` only, validated; local messages
        // (campaign, beat, reports) never come from a peer, and raft-rs
        // would take a term-0 one as a local command.
        let local = matches!(
            message.get_msg_type(),
            MessageType::MsgPropose
                | MessageType::MsgHup
                | MessageType::MsgBeat
                | MessageType::MsgUnreachable
                | MessageType::MsgSnapStatus
                | MessageType::MsgCheckQuorum
        );
        if local || message.term == 0 {
            return Err(ReplicationError::Raft(raft::Error::StepLocalMsg));
        }
        crate::peer_check::check(&r.raw.raft, self.config.id, r.high_watermark, &message).map_err(
            |reason| ReplicationError::RefusedMessage {
                group,
                from: BrokerId(message.from),
                reason,
            },
        )?;
        if let Some(c) = r.catching_up.as_mut() {
            if crate::catch_up::refused_while_catching_up(&message) {
                return Err(ReplicationError::CatchingUp { group });
            }
            c.heard(&message);
        }
        let term = r.raw.raft.term;
        if r.raw.raft.state == StateRole::Leader
            && message.term == term
            && let Some(pr) = r.raw.raft.mut_prs().get_mut(message.from)
            && let Some(probe_from) = crate::catch_up::believed_too_much(&message, pr.matched)
        {
            // The follower holds less than this leader believed: nothing of
            // it counts as matched until it answers a probe from its hint
            // (its entry there may differ too), and it is sent what it
            // lacks (entries or a snapshot).
            tracing::warn!(
                %group,
                follower = message.from,
                believed = pr.matched,
                holds = probe_from,
                "a follower holds less than it had acknowledged; catching it up"
            );
            pr.become_probe();
            pr.matched = 0;
            pr.next_idx = probe_from + 1;
            let to = message.from;
            return raft_call(group, &mut r.raw, |raw| raw.raft.send_append(to))
                .inspect_err(|e| self.stop_unreadable(group, e));
        }
        let mut lost = None;
        match message.get_msg_type() {
            // An append's entries are checked before raft-rs takes them:
            // once in its log, a bad one could only fail the group when
            // written. Refused whole, the leader sends them again.
            MessageType::MsgAppend => {
                for e in message.get_entries() {
                    crate::entry::check_received(e, r.max_batch_bytes).map_err(|source| {
                        ReplicationError::RefusedEntry {
                            index: e.index,
                            source: Box::new(source),
                        }
                    })?;
                }
            }
            MessageType::MsgHeartbeat => {
                // A leader advertises the commit it believes this follower
                // can take; after a machine crash of an `fsync=false`
                // replica that may lie past its log, which raft-rs treats
                // as fatal. The commit is a hint: clamp it.
                let last = r.raw.raft.raft_log.last_index();
                lost = crate::catch_up::lost_entries_reply(&message, last);
                message.commit = message.commit.min(last);
            }
            _ => {}
        }
        let stepped = raft_call(group, &mut r.raw, |raw| {
            raw.step(message)?;
            // Past the log: the leader is told what this replica really
            // holds.
            match lost {
                Some(probe) => raw.step(probe),
                None => Ok(()),
            }
        });
        match stepped {
            Ok(result) => Ok(result?),
            Err(e) => {
                self.stop_unreadable(group, &e);
                Err(e)
            }
        }
    }

    /// Proposes a batch as the group's leader. Refused with
    /// [`ReplicationError::NotLeader`] (and the leader this replica knows)
    /// anywhere else: raft-rs would forward it silently.
    pub fn propose(
        &mut self,
        group: GroupId,
        batch: CheckedBatch,
    ) -> Result<Proposed, ReplicationError> {
        let r = self
            .groups
            .get_mut(&group)
            .ok_or(ReplicationError::UnknownGroup(group))?;
        let raft = &r.raw.raft;
        if raft.state != StateRole::Leader || raft.lead_transferee.is_some() {
            let leader = (raft.leader_id != 0 && raft.leader_id != raft.id)
                .then_some(BrokerId(raft.leader_id));
            return Err(ReplicationError::NotLeader { group, leader });
        }
        let term = Term(raft.term);
        let index = RaftIndex(raft.raft_log.last_index() + 1);
        let stable_last = raft.raft_log.store().last_index();
        let base_offset = match r.last_proposed {
            Some((i, t, end)) if t == term && i > stable_last => end,
            _ => crate::storage::lock(raft.raft_log.store().log()).next_offset(),
        };
        let next_offset = batch
            .header
            .offset_span()
            .checked_add(base_offset.get())
            .map(Offset)
            .ok_or(ReplicationError::BadEntry {
                index: index.get(),
                reason: "offsets overflow",
            })?;
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgPropose);
        m.from = self.config.id.get();
        m.set_entries(
            vec![Entry {
                data: batch.bytes,
                ..Entry::default()
            }]
            .into(),
        );
        // Appending sends the entry to every follower, reading what a
        // lagging one lacks from the log.
        match raft_call(group, &mut r.raw, |raw| raw.step(m)) {
            Ok(stepped) => stepped?,
            Err(e) => {
                self.stop_unreadable(group, &e);
                return Err(e);
            }
        }
        let appended = RaftIndex(r.raw.raft.raft_log.last_index());
        assert_eq!(appended, index, "a leader appends a proposal at the end");
        r.last_proposed = Some((index, term, next_offset));
        Ok(Proposed {
            index,
            term,
            base_offset,
            next_offset,
        })
    }

    /// Asks the group's leader (this broker) to hand leadership to `to`.
    pub fn transfer_leader(
        &mut self,
        group: GroupId,
        to: BrokerId,
    ) -> Result<(), ReplicationError> {
        let r = self
            .groups
            .get_mut(&group)
            .ok_or(ReplicationError::UnknownGroup(group))?;
        raft_call(group, &mut r.raw, |raw| raw.transfer_leader(to.get()))
            .inspect_err(|e| self.stop_unreadable(group, e))
    }

    /// Tells the groups about messages the transport could not send: the
    /// follower is probed again, and a dropped snapshot is retried. Call
    /// between rounds, never between `start_round` and `finish_round`.
    pub fn report_dropped(&mut self, dropped: &[Dropped]) {
        for d in dropped {
            if let Some(r) = self.groups.get_mut(&d.group) {
                let reported = raft_call(d.group, &mut r.raw, |raw| {
                    raw.report_unreachable(d.to.get());
                    if d.snapshot {
                        raw.report_snapshot(d.to.get(), raft::SnapshotStatus::Failure);
                    }
                });
                if let Err(e) = reported {
                    self.stop_unreadable(d.group, &e);
                }
            }
        }
    }

    /// Makes this replica campaign now (a one-voter group elects itself at
    /// once instead of after an election timeout).
    pub fn campaign(&mut self, group: GroupId) -> Result<(), ReplicationError> {
        let r = self
            .groups
            .get_mut(&group)
            .ok_or(ReplicationError::UnknownGroup(group))?;
        if r.catching_up.is_some() {
            return Err(ReplicationError::CatchingUp { group });
        }
        match raft_call(group, &mut r.raw, RawNode::campaign) {
            Ok(campaigned) => Ok(campaigned?),
            Err(e) => {
                self.stop_unreadable(group, &e);
                Err(e)
            }
        }
    }

    /// Applies retention to every group (only applied entries are ever
    /// deleted). Call between rounds. Returns the syncs of the groups' new
    /// snapshot points, to run and hand back to [`Node::complete_syncs`];
    /// the segments taken come out of [`Node::take_expired`] once their
    /// group's sync is back (at once for a group whose point did not move).
    /// Until its sync is back a group takes only Readies that save nothing
    /// (heartbeats and answers in its durable term, commits), no entries. The batch holds
    /// only state syncs of groups with none in flight, so it need not wait
    /// for the deferred batches: it may run beside them and come back in
    /// any order with them.
    pub fn apply_retention(&mut self, events: &mut Vec<Event>) -> SyncBatch {
        let mut batch = SyncBatch {
            jobs: Vec::new(),
            readies: Vec::new(),
        };
        let mut failed = Vec::new();
        for (&group, r) in self.groups.iter_mut() {
            if r.raw.store().state_sync_pending() {
                // Retention saves the state; it runs again later.
                continue;
            }
            let applied = RaftIndex(r.raw.raft.raft_log.applied);
            match r.raw.mut_store().apply_retention(applied) {
                Ok((_, taken)) if taken.is_empty() => {}
                Ok((None, taken)) => self.expired.push(taken),
                Ok((Some(sync), taken)) => {
                    batch.jobs.push(SyncJob::State(group, sync));
                    let earlier = self.retention_waiting.insert(group, taken);
                    assert!(
                        earlier.is_none(),
                        "a group with a pending state sync is skipped"
                    );
                }
                Err(e) => failed.push((group, e)),
            }
        }
        for (group, e) in failed {
            self.fail(group, &e, events);
        }
        batch
    }

    /// The group's state here.
    pub fn status(&self, group: GroupId) -> Option<GroupStatus> {
        let r = self.groups.get(&group)?;
        let raft = &r.raw.raft;
        let matched = if raft.state == StateRole::Leader {
            let mut m: Vec<_> = raft
                .prs()
                .iter()
                .map(|(id, pr)| (BrokerId(*id), RaftIndex(pr.matched)))
                .collect();
            m.sort();
            m
        } else {
            Vec::new()
        };
        Some(GroupStatus {
            group,
            leader: (raft.leader_id != 0).then_some(BrokerId(raft.leader_id)),
            term: Term(raft.term),
            commit: RaftIndex(raft.raft_log.committed),
            last_index: RaftIndex(raft.raft_log.last_index()),
            high_watermark: r.high_watermark,
            matched,
        })
    }

    /// Whether this replica of `group` is a candidate: it has asked for
    /// votes in a new term and is waiting for them.
    pub fn is_candidate(&self, group: GroupId) -> bool {
        self.groups
            .get(&group)
            .is_some_and(|r| r.raw.raft.state == StateRole::Candidate)
    }

    /// The leader of `group` as this replica knows it.
    pub fn leader(&self, group: GroupId) -> Option<BrokerId> {
        self.groups.get(&group).and_then(|r| r.leader)
    }

    /// Step 2 of an iteration, first half: see the module documentation.
    /// Messages that may leave now are pushed to `out`, events to `events`.
    /// Nothing is written yet: call [`Node::write_round`] next, with no
    /// other call on this node in between.
    pub fn start_round(&mut self, out: &mut Vec<Outgoing>, events: &mut Vec<Event>) -> Round {
        for (group, reason) in self.stopped_between_rounds.drain(..) {
            events.push(Event::Failed { group, reason });
        }
        // A leader whose log failed a read for a follower skipped that send
        // without a panic; it stops before it would read again.
        let unreadable: Vec<_> = self
            .groups
            .iter()
            .filter_map(|(&group, r)| crate::contain::unreadable(group, &r.raw).map(|e| (group, e)))
            .collect();
        for (group, e) in unreadable {
            self.fail(group, &e, events);
        }
        let mut unreadable = Vec::new();
        let mut readies = Vec::new();
        let mut snapshots = Vec::new();
        let mut installs_left = SNAPSHOT_INSTALLS_PER_ROUND_MAX;
        for (&group, r) in self.groups.iter_mut() {
            if !r.raw.has_ready() || !r.may_ready() {
                continue;
            }
            // A snapshot is installed inside its round (synced, the old
            // segments unlinked): a broker back after a long absence may
            // have one for every group, and all of them in one round
            // would hold every heartbeat. The rest wait for later rounds.
            if r.raw.raft.raft_log.unstable_snapshot().is_some() {
                if installs_left == 0 {
                    continue;
                }
                installs_left -= 1;
            }
            // The Ready holds the committed entries, read from the log.
            let mut rd = match raft_call(group, &mut r.raw, RawNode::ready) {
                Ok(rd) => rd,
                Err(e) => {
                    unreadable.push((group, e));
                    continue;
                }
            };
            if let Some(ss) = rd.ss() {
                let leader = (ss.leader_id != 0).then_some(BrokerId(ss.leader_id));
                r.leader = leader;
                if ss.raft_state != StateRole::Leader {
                    r.last_proposed = None;
                }
                events.push(Event::RoleChanged {
                    group,
                    leader,
                    is_leader: ss.raft_state == StateRole::Leader,
                    term: Term(r.raw.raft.term),
                });
            }
            push_messages(group, rd.take_messages(), out, &mut snapshots);
            readies.push((group, rd, 0));
        }
        for (group, e) in unreadable {
            self.fail(group, &e, events);
        }
        Round {
            readies,
            snapshots,
            early: Vec::new(),
        }
    }

    /// Notes where the data entries of the appends in `out` lie in their
    /// groups' segment files, so that a sender sends them from there
    /// rather than copying them from memory. Only entries written here are
    /// found: call it once the round is written ([`Node::write_round`]).
    pub fn attach_file_spans(&self, out: &mut [Outgoing]) {
        let large = |e: &raft::eraftpb::Entry| e.data.len() >= crate::wire::ZERO_COPY_BYTES_MIN;
        for o in out.iter_mut() {
            let entries = o.message.get_entries();
            if o.message.get_msg_type() != MessageType::MsgAppend || !entries.iter().any(large) {
                continue;
            }
            let Some(r) = self.groups.get(&o.group) else {
                continue;
            };
            let log = crate::storage::lock(r.raw.store().log());
            o.spans = entries
                .iter()
                .map(|e| {
                    large(e)
                        .then(|| log.file_span(RaftIndex(e.index), Term(e.term)))
                        .flatten()
                })
                .collect();
        }
    }

    /// Step 2 of an iteration, second half: writes what the round's Readies
    /// hold (snapshot, entries, hard state) and pushes the syncs it needs
    /// to `jobs`. A group whose write fails stops (an [`Event::Failed`]).
    pub fn write_round(
        &mut self,
        round: &mut Round,
        jobs: &mut Vec<SyncJob>,
        events: &mut Vec<Event>,
    ) {
        let mut failed = Vec::new();
        round.readies.retain_mut(|(group, rd, applies)| {
            let Some(r) = self.groups.get_mut(group) else {
                return false;
            };
            match persist(*group, r, rd, jobs, events) {
                Ok(through) => {
                    *applies = through;
                    true
                }
                Err(e) => {
                    failed.push((*group, e));
                    false
                }
            }
        });
        for (group, e) in failed {
            self.fail(group, &e, events);
        }
    }

    /// Between steps 2 and 3: hands back to raft-rs, before their syncs
    /// run, the Readies of every group that has other voters and either
    /// needs a sync this round or still waits for an earlier deferred one.
    /// Their jobs move from `jobs` to the returned batch, and their
    /// `persisted_messages()` are held until [`Node::complete_syncs`],
    /// except heartbeat responses of a Ready whose term and vote need no
    /// sync: those go out with the round ([`Node::finish_round`]). The
    /// thread driving the node is then free to step messages (a leader
    /// learns that followers have an entry while its own sync runs) and run
    /// further rounds, whose writes the next batch syncs. What stays in
    /// `round` and `jobs` finishes as before, through
    /// [`Node::finish_round`]. A one-voter group is never deferred: it
    /// commits only through its own sync, and raft-rs makes it leader at
    /// once when it campaigns, which it refuses with entries still
    /// unpersisted.
    pub fn defer_syncs(&mut self, round: &mut Round, jobs: &mut Vec<SyncJob>) -> SyncBatch {
        let needs_sync: BTreeSet<GroupId> = jobs.iter().map(SyncJob::group).collect();
        let term_or_vote_syncs: BTreeSet<GroupId> = jobs
            .iter()
            .filter_map(|j| match j {
                SyncJob::State(g, _) => Some(*g),
                SyncJob::Log(..) => None,
            })
            .collect();
        let mut deferred = BTreeSet::new();
        let mut batch = SyncBatch {
            jobs: Vec::new(),
            readies: Vec::new(),
        };
        for (group, mut rd, applies) in std::mem::take(&mut round.readies) {
            let Some(r) = self.groups.get_mut(&group) else {
                continue;
            };
            let waits = needs_sync.contains(&group) || !r.unsynced.is_empty();
            // `may_ready` held the snapshot back until nothing was unsynced.
            let inline = r.unsynced.is_empty()
                && (r.raw.raft.prs().is_singleton() || !rd.snapshot().is_empty());
            if !waits || inline {
                round.readies.push((group, rd, applies));
                continue;
            }
            // Committed entries were applied when the round was written;
            // raft-rs hears of it once the Ready is persisted (a snapshot's
            // index may not count as applied before).
            debug_assert!(rd.committed_entries().is_empty(), "applied when written");
            let number = rd.number();
            let mut persisted = rd.take_persisted_messages();
            let is_heartbeat_response =
                |m: &Message| m.get_msg_type() == MessageType::MsgHeartbeatResponse;
            if !term_or_vote_syncs.contains(&group) && persisted.iter().any(is_heartbeat_response) {
                // A heartbeat response vouches for nothing a log sync
                // holds: only for the follower's term, durable already
                // (a term or vote change is synced with a State job, and
                // `may_ready` starts no Ready while one runs). The commit
                // index it carries may pass the durable log, but raft-rs
                // only records it (`Progress::committed_index`) and decides
                // no commit by it. It also lets the leader resume sending
                // appends, as an fsync=false follower's does. Held back,
                // it would wait for an fsync=true group's log sync, which
                // under heavy writeback takes seconds: longer than the
                // leader's check-quorum allows.
                let (now, held): (Vec<Message>, Vec<Message>) =
                    persisted.into_iter().partition(is_heartbeat_response);
                push_messages(group, now, &mut round.early, &mut round.snapshots);
                persisted = held;
            }
            r.unsynced.push_back(Unsynced {
                number,
                persisted,
                applies,
            });
            if let Err(e) = raft_call(group, &mut r.raw, |raw| raw.advance_append_async(rd)) {
                // Its syncs still run, and come back for a closed group.
                self.stop_unreadable(group, &e);
                continue;
            }
            batch.readies.push((group, number));
            deferred.insert(group);
        }
        let (later, now): (Vec<SyncJob>, Vec<SyncJob>) = std::mem::take(jobs)
            .into_iter()
            .partition(|j| deferred.contains(&j.group()));
        *jobs = now;
        batch.jobs = later;
        batch
    }

    /// Records a deferred batch's syncs: each group's Readies up to the
    /// batch's count as persisted (raft-rs may now commit them and answer
    /// from them), and the messages they held leave. A group whose sync
    /// failed stops.
    pub fn complete_syncs(
        &mut self,
        done: SyncedBatch,
        out: &mut Vec<Outgoing>,
        events: &mut Vec<Event>,
    ) {
        let failed = self.record_syncs(done.results);
        let mut snapshots = Vec::new();
        let mut unreadable = Vec::new();
        for (group, number) in done.readies {
            if failed.contains_key(&group) {
                continue;
            }
            let Some(r) = self.groups.get_mut(&group) else {
                continue;
            };
            let mut released = Vec::new();
            let persisted = raft_call(group, &mut r.raw, |raw| {
                raw.on_persist_ready(number);
                while r.unsynced.front().is_some_and(|u| u.number <= number) {
                    let u = r.unsynced.pop_front().expect("front exists");
                    if u.applies > raw.raft.raft_log.applied {
                        raw.advance_apply_to(u.applies);
                    }
                    released.push(u.persisted);
                }
            });
            match persisted {
                Ok(()) => {
                    for messages in released {
                        push_messages(group, messages, out, &mut snapshots);
                    }
                }
                Err(e) => unreadable.push((group, e)),
            }
        }
        for (group, e) in unreadable {
            self.fail(group, &e, events);
        }
        debug_assert!(
            snapshots.is_empty(),
            "snapshots are sent by leaders, at once"
        );
        for (group, reason) in failed {
            self.fail(group, &reason, events);
        }
    }

    /// Records the outcome of sync jobs; returns the groups whose sync
    /// failed, with why.
    fn record_syncs(&mut self, results: Vec<SyncResult>) -> BTreeMap<GroupId, String> {
        let mut failed: BTreeMap<GroupId, String> = BTreeMap::new();
        for result in results {
            match result {
                SyncResult::Log(group, Ok(done)) => match self.groups.get_mut(&group) {
                    Some(r) => {
                        if let Err(e) = r.raw.mut_store().complete_log_sync(done) {
                            failed.insert(group, e.to_string());
                        }
                    }
                    None => self.closed_syncs.push(done),
                },
                SyncResult::State(group, Ok(done)) => {
                    if let Some(r) = self.groups.get_mut(&group) {
                        r.raw.mut_store().complete_state_sync(done);
                        // The new snapshot point is durable: what retention
                        // took below it may go.
                        if let Some(taken) = self.retention_waiting.remove(&group) {
                            self.expired.push(taken);
                        }
                    }
                }
                // A group closed since (its topic deleted) may have lost
                // its directory under the sync: nothing to stop.
                SyncResult::Log(group, Err(e)) if self.groups.contains_key(&group) => {
                    failed.insert(group, e.to_string());
                }
                SyncResult::State(group, Err(e)) if self.groups.contains_key(&group) => {
                    failed.insert(group, e.to_string());
                }
                SyncResult::Log(..) | SyncResult::State(..) => {}
            }
        }
        failed
    }

    /// Step 3 of an iteration: see the module documentation.
    pub fn finish_round(
        &mut self,
        round: Round,
        results: Vec<SyncResult>,
        out: &mut Vec<Outgoing>,
        events: &mut Vec<Event>,
    ) {
        let mut failed = self.record_syncs(results);
        out.extend(round.early);
        let mut snapshots = round.snapshots;
        for (group, rd, _) in round.readies {
            if failed.contains_key(&group) {
                continue;
            }
            let Some(r) = self.groups.get_mut(&group) else {
                continue;
            };
            if let Err(e) = advance(group, r, rd, out, events, &mut snapshots) {
                failed.insert(group, e.to_string());
            }
        }
        // A snapshot is tiny (the log start point) and sent in one message:
        // once handed out it counts as delivered. If it was lost, the
        // follower rejects the next append and the leader sends another.
        for (group, to) in snapshots {
            if let Some(r) = self.groups.get_mut(&group) {
                r.raw
                    .report_snapshot(to.get(), raft::SnapshotStatus::Finish);
            }
        }
        for (group, reason) in failed {
            self.fail(group, &reason, events);
        }
    }

    /// Drops a group whose raft-rs call hit its unreadable log between
    /// rounds; the next round reports it failed.
    fn stop_unreadable(&mut self, group: GroupId, e: &ReplicationError) {
        tracing::error!(%group, reason = %e, "replica stopped");
        self.retention_waiting.remove(&group);
        self.groups.remove(&group);
        self.stopped_between_rounds.push((group, e.to_string()));
    }

    fn fail(&mut self, group: GroupId, reason: &dyn std::fmt::Display, events: &mut Vec<Event>) {
        tracing::error!(%group, %reason, "replica stopped");
        // Never unlinked: the new snapshot point may not be durable.
        self.retention_waiting.remove(&group);
        self.groups.remove(&group);
        events.push(Event::Failed {
            group,
            reason: reason.to_string(),
        });
    }
}

/// Moves a Ready's messages to `out`, noting the snapshots among them.
fn push_messages(
    group: GroupId,
    msgs: Vec<Message>,
    out: &mut Vec<Outgoing>,
    snapshots: &mut Vec<(GroupId, BrokerId)>,
) {
    for message in msgs {
        let to = BrokerId(message.to);
        if message.get_msg_type() == MessageType::MsgSnapshot {
            snapshots.push((group, to));
        }
        out.push(Outgoing {
            to,
            group,
            message,
            spans: Vec::new(),
        });
    }
}

/// Writes a Ready's snapshot, applies its committed entries, writes its
/// entries and hard state, and queues their syncs. Returns the index the
/// Ready lets the group apply through (0 for none).
fn persist(
    group: GroupId,
    r: &mut Replica,
    rd: &mut Ready,
    jobs: &mut Vec<SyncJob>,
    events: &mut Vec<Event>,
) -> Result<u64, ReplicationError> {
    let mut applies = rd.snapshot().get_metadata().index;
    let is_leader = r.raw.raft.state == StateRole::Leader;
    let fsync = r.fsync;
    if !rd.snapshot().is_empty() {
        let store = r.raw.mut_store();
        store.apply_snapshot(rd.snapshot())?;
        let index = RaftIndex(rd.snapshot().get_metadata().index);
        let next_offset = store.state().truncated.next_offset;
        let hw = next_offset.max(r.high_watermark);
        r.high_watermark = hw;
        events.push(Event::Restored {
            group,
            index,
            next_offset,
        });
        events.push(Event::Committed {
            group,
            index,
            high_watermark: hw,
        });
    }
    // A Ready's committed entries are committed and already durable here
    // (raft-rs hands out none beyond the persisted index), so they are
    // applied now, as raft-rs's own example does, rather than after this
    // round's syncs: a produce waiting on them is answered one sync sooner.
    let committed = rd.take_committed_entries();
    if let Some(last) = committed.last() {
        applies = applies.max(last.index);
    }
    apply(group, r, committed, events)?;
    let store = r.raw.mut_store();
    if let Some(last) = rd.entries().last() {
        let last = (RaftIndex(last.index), Term(last.term));
        // Every entry was checked as it reached this replica: a leader's
        // own when proposed, a follower's when its append arrived (`step`).
        store.append(rd.entries(), true)?;
        if fsync {
            jobs.push(SyncJob::Log(group, store.sync_plan()));
        }
        if is_leader {
            events.push(Event::Appended {
                group,
                index: last.0,
                term: last.1,
            });
        }
    }
    if let Some(hs) = rd.hs() {
        // Only a new term or vote must be synced before messages leave (the
        // entries are synced with the log; the commit index is a hint that
        // is learnt again). Term and vote are synced whatever the topic's
        // durability mode: rare, and a vote forgotten by a machine crash
        // could elect two leaders in one term.
        let before = store.state().hard;
        let durable =
            before.term.get() != hs.term || before.vote.map_or(0, BrokerId::get) != hs.vote;
        if let Some(sync) = store.set_hard_state(hs, durable)? {
            jobs.push(SyncJob::State(group, sync));
        }
    }
    Ok(applies)
}

/// The rest of a Ready once its syncs ran, then its LightReady.
fn advance(
    group: GroupId,
    r: &mut Replica,
    mut rd: Ready,
    out: &mut Vec<Outgoing>,
    events: &mut Vec<Event>,
    snapshots: &mut Vec<(GroupId, BrokerId)>,
) -> Result<(), ReplicationError> {
    push_messages(group, rd.take_persisted_messages(), out, snapshots);
    debug_assert!(rd.committed_entries().is_empty(), "applied when written");
    // The LightReady holds the entries committed since, read from the log.
    let mut light = raft_call(group, &mut r.raw, |raw| raw.advance(rd))?;
    if let Some(commit) = light.commit_index() {
        r.raw.mut_store().set_commit(RaftIndex(commit))?;
    }
    push_messages(group, light.take_messages(), out, snapshots);
    apply(group, r, light.take_committed_entries(), events)?;
    raft_call(group, &mut r.raw, RawNode::advance_apply)?;
    Ok(())
}

/// Applies committed entries: a partition's state machine is its log, so
/// applying moves the high watermark.
fn apply(
    group: GroupId,
    r: &mut Replica,
    entries: Vec<Entry>,
    events: &mut Vec<Event>,
) -> Result<(), ReplicationError> {
    let Some(last) = entries.last() else {
        return Ok(());
    };
    let index = RaftIndex(last.index);
    let hw = r.raw.store().next_offset_after(index)?;
    assert!(
        hw >= r.high_watermark,
        "the high watermark never moves back"
    );
    r.high_watermark = hw;
    events.push(Event::Committed {
        group,
        index,
        high_watermark: hw,
    });
    Ok(())
}
