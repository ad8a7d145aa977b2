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
//! (`advance_append_async`); their syncs form a [`SyncRound`] that runs in
//! the background, in order with earlier sync rounds, and
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
//!
//! # Where things live
//!
//! - here: the node, its replicas and their settings, opening and closing
//!   groups, and what the broker asks of a group between rounds;
//! - `input`: step 1, the inputs (ticks, peers' messages, proposals,
//!   campaigns, leader transfers, dropped messages);
//! - `round`: steps 2 and 3, a round's Readies from start to finish;
//! - `sync`: the durability step's jobs, and deferred syncs;
//! - `retention`: retention across the groups, and the segments it takes;
//! - `hibernate`: idle groups that stop ticking, what wakes them, and the
//!   broker's word on peers down and up (only awake groups tick).

mod hibernate;
mod input;
mod retention;
mod round;
mod sync;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::Path;
use std::sync::Arc;

use raft::{RawNode, StateRole};
use rill_storage::{Clock, LogConfig, Offset, RaftIndex, SyncDone, Term};

use crate::error::ReplicationError;
use crate::ids::{BrokerId, GroupId};
use crate::reader::ReplicaLogReader;
use crate::state::{FileStateStore, Membership, ReplicaState, StateStore};
use crate::storage::ReplicaLog;

pub use self::input::{CheckedBatch, Proposed};
pub use self::round::{Round, SNAPSHOT_INSTALLS_PER_ROUND_MAX};
use self::sync::Unsynced;
pub use self::sync::{SyncJob, SyncResult, SyncRound, SyncedFiles, SyncedRound};
pub use crate::outgoing::Outgoing;

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
    /// Ticks a group led here stays settled before it hibernates (see
    /// `hibernate`); `None`: groups never hibernate.
    pub quiesce_after_ticks: Option<u32>,
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
            quiesce_after_ticks: None,
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
        /// Whether its files are damaged (reopening would find the same
        /// damage), rather than failed by I/O (worth a retry).
        damaged: bool,
    },
}

/// Why a group stopped here (see [`Event::Failed`]).
#[derive(Debug, Clone)]
pub(super) struct Failure {
    reason: String,
    damaged: bool,
}

impl From<&ReplicationError> for Failure {
    fn from(e: &ReplicationError) -> Failure {
        Failure {
            reason: e.to_string(),
            damaged: e.is_damage(),
        }
    }
}

impl From<&rill_storage::LogError> for Failure {
    fn from(e: &rill_storage::LogError) -> Failure {
        Failure {
            reason: e.to_string(),
            damaged: e.is_damage(),
        }
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
    /// The idempotent producers' batches this leadership proposed that
    /// are not in the log yet, oldest first: checked with the log's own
    /// table, so a retry arriving before its first copy is written is
    /// still recognised. Emptied as they are written and when the
    /// leadership ends; at most as many as proposals in flight.
    pending_producers: Vec<rill_storage::producers::ProducerBatch>,
    high_watermark: Offset,
    leader: Option<BrokerId>,
    /// While this replica catches up after losing what it held (see
    /// `catch_up`): it neither votes nor campaigns.
    catching_up: Option<crate::catch_up::CatchUp>,
    /// For an `fsync=false` replica: the last index its log is known to
    /// share with its leaders since it opened (its commit then, raised by
    /// every append that matched). A power cut can bring back entries a
    /// truncation had replaced, as long as the ones the replica acknowledged
    /// instead: a heartbeat's commit, which its leader bases on what it
    /// acknowledged, may then name entries this log holds with other terms.
    /// Past this index a heartbeat's commit is not taken, and the leader is
    /// told to probe (see `catch_up::lost_entries_reply`). `None` for
    /// `fsync=true` replicas, which never lose what they acknowledged.
    verified_through: Option<u64>,
    /// Readies handed back to raft-rs before their syncs ran
    /// ([`Node::defer_syncs`]), oldest first: each one's number and the
    /// messages that may leave only once it is durable.
    unsynced: VecDeque<Unsynced>,
    /// Which opening of its group on this node it is (see `sync::Life`).
    generation: u64,
    /// Whether it hibernates: not ticking (see `hibernate`).
    hibernating: bool,
    /// On a leader, the ticks its group has stayed settled.
    idle_ticks: u32,
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
    /// On the leader: each member's match index (learners' too).
    pub matched: Vec<(BrokerId, RaftIndex)>,
    /// On the leader, and only from [`Node::status_with_offsets`]: the
    /// offset after its last record (0 otherwise).
    pub log_end_offset: Offset,
    /// On the leader, and only from [`Node::status_with_offsets`]: each
    /// member's offset after the last record it has.
    pub matched_offsets: Vec<(BrokerId, Offset)>,
    /// The membership as of the last membership change applied here.
    pub membership: Membership,
    /// The Raft index of that change (0: the group's first membership).
    pub membership_index: RaftIndex,
    /// Whether a membership change is proposed and not yet applied here.
    pub membership_change_pending: bool,
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
    stopped_between_rounds: Vec<(GroupId, Failure)>,
    /// Groups opened so far: the next one opened is this generation.
    generations: u64,
    /// The groups that may have a Ready: every input to a group (a
    /// message, a proposal, a campaign, a sync handed back, a round it
    /// took part in) puts it here, and a round looks at these alone, not
    /// at every group: with thousands of groups at rest, walking them all
    /// on every pass was most of an idle broker's CPU. A tick puts in
    /// every group it left with a Ready, so nothing waits longer than a
    /// tick even if an input were missed. Ordered: rounds visit groups in
    /// id order, as the simulator replays them.
    dirty: BTreeSet<GroupId>,
    /// The groups that tick: every group but those hibernating (see
    /// `hibernate`).
    awake: BTreeSet<GroupId>,
    /// Peers the broker found down ([`Node::peer_down`]).
    peers_down: BTreeSet<BrokerId>,
    /// Messages from leading replicas that went, sent with the next rounds
    /// (see [`Node::farewell`]).
    farewells: Vec<hibernate::Farewell>,
}

/// What opening a replica needs (see [`Node::open_replica`] for a replica
/// whose state lives in its own directory).
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

/// A replica whose hard state lives in its directory beside its log (a
/// [`FileStateStore`]), as a broker opens it with [`Node::open_replica`].
#[derive(Debug)]
pub struct ReplicaDir<'a> {
    /// The group.
    pub group: GroupId,
    /// The replica's directory (it exists).
    pub dir: &'a Path,
    /// The log's settings.
    pub log_config: LogConfig,
    /// Whether persisted means fdatasync'ed (`true`) or in the mapping.
    pub fsync: bool,
    /// The membership of a replica opened for the first time (no state
    /// file yet); one opened again keeps the membership it saved.
    pub membership: Membership,
    /// The Raft index `membership` holds as of, for a replica opened for
    /// the first time: 0 for a group's first replicas; for a replica added
    /// to a running group, the index of a membership change that includes
    /// it, so that changes at or below it, which `membership` holds
    /// already, are not applied again as its log arrives.
    pub membership_index: RaftIndex,
}

/// A replica [`Node::open_replica`] opened.
#[derive(Debug)]
pub struct OpenedReplica {
    /// Its log, for readers on other threads.
    pub log: ReplicaLogReader,
    /// The membership its state held when it was loaded (the initial one
    /// for a new replica).
    pub membership: Membership,
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
            generations: 0,
            dirty: BTreeSet::new(),
            awake: BTreeSet::new(),
            peers_down: BTreeSet::new(),
            farewells: Vec::new(),
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
            let groups: Vec<GroupId> = self.groups.keys().copied().collect();
            for group in groups {
                self.wake(group);
                if let Some(r) = self.groups.get_mut(&group) {
                    r.catching_up.get_or_insert_with(Default::default);
                }
                self.dirty.insert(group);
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

    /// This broker's id.
    pub fn id(&self) -> BrokerId {
        self.config.id
    }

    /// Opens the replica in `spec.dir`: its state file (created with
    /// `spec.membership` when there is none), then its log (recovered), and
    /// starts its group ([`Node::add_group`]).
    pub fn open_replica(
        &mut self,
        spec: ReplicaDir<'_>,
    ) -> Result<OpenedReplica, ReplicationError> {
        let (membership, membership_index) = (spec.membership, spec.membership_index);
        let (store, state) = FileStateStore::open(spec.dir, || ReplicaState {
            membership_index,
            ..ReplicaState::initial(membership)
        })?;
        let membership = state.membership.clone();
        let log = self.add_group(ReplicaSpec {
            group: spec.group,
            dir: spec.dir,
            log_config: spec.log_config,
            fsync: spec.fsync,
            store: Box::new(store),
            state,
        })?;
        Ok(OpenedReplica { log, membership })
    }

    /// Opens a replica (recovering its log) and starts its group.
    pub fn add_group(
        &mut self,
        spec: ReplicaSpec<'_>,
    ) -> Result<ReplicaLogReader, ReplicationError> {
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
        let log = store.reader();
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
            pending_producers: Vec::new(),
            high_watermark,
            leader: None,
            catching_up: self.rejoining.then(Default::default),
            verified_through: None,
            unsynced: VecDeque::new(),
            generation: self.generations,
            hibernating: false,
            idle_ticks: 0,
        };
        if !spec.fsync {
            replica.verified_through = Some(replica.raw.raft.raft_log.committed);
        }
        self.generations += 1;
        let phase = self.jitter.next() % c.election_tick as u64;
        for _ in 0..phase {
            replica.raw.tick();
        }
        self.groups.insert(spec.group, replica);
        self.dirty.insert(spec.group);
        self.awake.insert(spec.group);
        Ok(log)
    }

    /// Stops a group and closes its replica (its files stay).
    pub fn remove_group(&mut self, group: GroupId) -> Result<(), ReplicationError> {
        // Its directory goes: segments retention took need no unlink, and
        // closing files still linked costs nothing.
        self.retention_waiting.remove(&group);
        self.dirty.remove(&group);
        self.farewell(group);
        self.groups
            .remove(&group)
            .map(drop)
            .ok_or(ReplicationError::UnknownGroup(group))
    }

    /// The groups here.
    pub fn groups(&self) -> impl Iterator<Item = GroupId> + '_ {
        self.groups.keys().copied()
    }

    /// Changes the settings of `group`'s log while it serves (see
    /// [`rill_storage::Log::set_config`]).
    pub fn set_log_config(
        &mut self,
        group: GroupId,
        config: rill_storage::LogConfig,
    ) -> Result<(), ReplicationError> {
        let r = self
            .groups
            .get(&group)
            .ok_or(ReplicationError::UnknownGroup(group))?;
        crate::storage::lock(r.raw.store().log()).set_config(config)?;
        Ok(())
    }

    /// Installs a compaction pass's files in `group`'s log (see
    /// [`rill_storage::Log::install_cleaned`]): the same entries at the
    /// same indexes, with fewer records, so nothing Raft holds of the log
    /// changes. Renames only; the caller syncs the directory, off this
    /// thread.
    pub fn install_cleaned(
        &mut self,
        group: GroupId,
        cleaned: rill_storage::Cleaned,
    ) -> Result<rill_storage::InstallOutcome, ReplicationError> {
        let r = self
            .groups
            .get(&group)
            .ok_or(ReplicationError::UnknownGroup(group))?;
        Ok(crate::storage::lock(r.raw.store().log()).install_cleaned(cleaned)?)
    }

    /// Removes the files of a segment merged away by
    /// [`Node::install_cleaned`] from `group`'s log, unless the log holds a
    /// segment of that name again (see
    /// [`rill_storage::Log::remove_merged_away`]).
    pub fn remove_merged_away(
        &mut self,
        group: GroupId,
        merged: &rill_storage::MergedAway,
    ) -> Result<bool, ReplicationError> {
        let r = self
            .groups
            .get(&group)
            .ok_or(ReplicationError::UnknownGroup(group))?;
        Ok(crate::storage::lock(r.raw.store().log()).remove_merged_away(merged)?)
    }

    /// On `group`'s leader, the Raft index every replica (voters and
    /// learners) holds the log below, by the leader's progress tracking;
    /// `None` elsewhere. What compaction may remove tombstones under: no
    /// replica that lags can then miss one.
    pub fn held_by_every_replica(&self, group: GroupId) -> Option<RaftIndex> {
        let raft = &self.groups.get(&group)?.raw.raft;
        if raft.state != StateRole::Leader {
            return None;
        }
        let matched = raft.prs().iter().map(|(_, pr)| pr.matched).min()?;
        Some(RaftIndex(matched + 1))
    }

    /// Whether `group` has a replica here.
    pub fn has_group(&self, group: GroupId) -> bool {
        self.groups.contains_key(&group)
    }

    /// Whether any group has a Ready to handle (the caller need not wait
    /// for input before the next round).
    pub fn has_ready(&self) -> bool {
        self.dirty.iter().any(|g| {
            self.groups
                .get(g)
                .is_some_and(|r| r.raw.has_ready() && r.may_ready())
        })
    }

    /// Notes that `group` may have a Ready (see `dirty`), and wakes it: an
    /// input for it (a proposal, a transfer, a campaign) has come.
    pub(super) fn touch(&mut self, group: GroupId) {
        if self.groups.contains_key(&group) {
            self.dirty.insert(group);
            self.wake(group);
        }
    }

    /// Puts `group` among those that may have a Ready, without waking it
    /// (a sync handed back is no news for a hibernating group).
    pub(super) fn mark(&mut self, group: GroupId) {
        if self.groups.contains_key(&group) {
            self.dirty.insert(group);
        }
    }

    /// As [`Node::status`], with the leader's log end offset and each
    /// member's matched offset, for lags in records. Reads one entry's
    /// header from the log per member: for operators' reports, not for
    /// every round.
    pub fn status_with_offsets(&self, group: GroupId) -> Option<GroupStatus> {
        let mut status = self.status(group)?;
        if status.matched.is_empty() {
            return Some(status);
        }
        let store = self.groups.get(&group)?.raw.store();
        let offset = |index: RaftIndex| store.next_offset_after(index).ok();
        if let Some(end) = offset(status.last_index) {
            status.log_end_offset = end;
            status.matched_offsets = status
                .matched
                .iter()
                .filter_map(|(b, i)| offset(*i).map(|o| (*b, o)))
                .collect();
        }
        Some(status)
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
            log_end_offset: Offset(0),
            matched_offsets: Vec::new(),
            membership: r.raw.store().state().membership.clone(),
            membership_index: r.raw.store().state().membership_index,
            membership_change_pending: raft.has_pending_conf(),
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

    /// Makes `group`'s saved hard state, its commit index among it,
    /// durable now (see [`crate::storage::ReplicaLog::persist_state`]):
    /// `false` while a sync of its state is in flight. A caller that
    /// carries out what committed entries ask, in a way a replay must not
    /// undo (the controller's deletions), does so only once this is true.
    pub fn persist_state(&mut self, group: GroupId) -> Result<bool, ReplicationError> {
        let r = self
            .groups
            .get_mut(&group)
            .ok_or(ReplicationError::UnknownGroup(group))?;
        // A failed sync is never retried (the page cache may have dropped
        // what it could not write): the group stops, reported by the next
        // round as any failed sync is.
        r.raw
            .mut_store()
            .persist_state()
            .inspect_err(|e| self.stop_unreadable(group, e))
    }

    /// Whether this broker still leads a group that has other voters.
    pub fn leads_with_peers(&self) -> bool {
        let me = self.id();
        self.groups().any(|g| {
            self.status(g).is_some_and(|s| {
                s.leader == Some(me)
                    && s.matched
                        .iter()
                        .any(|(b, _)| *b != me && s.membership.is_voter(*b))
            })
        })
    }

    /// Asks every group led here to hand leadership to its most caught-up
    /// voter (controlled shutdown; raft-rs ignores a transfer to a learner). raft-rs completes a transfer once
    /// the target holds every entry; until then the group keeps its
    /// leader, so a stopping broker costs its groups no election timeout.
    pub fn hand_over(&mut self) {
        let me = self.id();
        let groups: Vec<GroupId> = self.groups().collect();
        for g in groups {
            let Some(s) = self.status(g) else {
                continue;
            };
            if s.leader != Some(me) {
                continue;
            }
            if let Some((to, _)) = s
                .matched
                .iter()
                .filter(|(b, _)| *b != me && s.membership.is_voter(*b))
                .max_by_key(|(b, m)| (*m, std::cmp::Reverse(*b)))
            {
                // A group whose log cannot be read stops alone (see
                // `transfer_leader`); the others still hand over.
                let _ = self.transfer_leader(g, *to);
            }
        }
    }
}
