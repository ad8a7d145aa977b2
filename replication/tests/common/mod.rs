//! A deterministic simulator of rill's replication layer.
//!
//! Several brokers, each a [`Node`] with many groups, exchange Raft
//! messages through a simulated network, under a simulated clock, and keep
//! their logs in real segment files whose unsynced bytes are forgotten when
//! a broker "crashes" (see `rill_storage::fault`). Every choice (message
//! loss, delay, duplication, link cuts, crashes, restarts, proposals) comes
//! from one seeded generator, so a seed replays the same history exactly.
//!
//! After each run the simulator checks Raft's safety properties:
//! - at most one leader per term in each group;
//! - an entry, once reported committed by any replica, never changes and is
//!   never lost (every later commit report agrees with it);
//! - after the faults stop and the cluster settles, every replica holds the
//!   same committed prefix and has caught up to the same commit index;
//! - every acknowledged (`acks=all`) batch is in the log at the offset its
//!   producer was told.
//!
//! Each broker runs its rounds with the broker's own [`Driver`]; the
//! simulator is only its I/O ([`RoundIo`]): a seeded network, sync rounds
//! that complete a few steps later, and a checker that observes every
//! event. So the deferred syncs run as the broker runs them: one sync round
//! out at a time, later rounds' syncs merged behind it, no round while the
//! queued one is full (a small bound, drawn per broker, so the simulator
//! meets it), while the broker goes on stepping messages and running
//! rounds; a crash forgets every sync round not yet completed along with
//! the bytes it would have synced, and a crash in the middle of a round
//! comes where the broker would meet it: after the round's writes and first
//! messages, before its own syncs.
//!
//! With `fsync: false` the groups write without syncing, so a crash (a
//! power cut here) may take acknowledged entries with it, as that mode
//! allows: the two durability checks (committed entries never lost,
//! acknowledged batches present) are off, the others hold. Such a crash
//! is then one of three: of the process alone (nothing is lost, and the
//! next open syncs it all), a power cut that keeps nothing written since
//! the last open (a segment sealed by a truncation since still holds the
//! entries cut from it; the segment that replaced them is gone), or one
//! that forgets what came after the log's durable position.
//!
//! This file holds the configuration, the state and the step loop; beside
//! it: `io.rs` (the simulator as each broker's `RoundIo`), `network.rs`,
//! `lifecycle.rs` (starts, crashes, controlled shutdowns, reopened
//! replicas), `faults.rs` (which fault may come when) and `checks.rs`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use rill_replication::outgoing::Dropped;
use rill_replication::state::{Membership, MemoryStateStore, ReplicaState};
use rill_replication::{
    BrokerId, CheckedBatch, Driver, Event, GroupId, Node, NodeConfig, Outgoing, ReplicaLogReader,
    ReplicaSpec, ReplicationError, RoundIo, SyncJob, SyncResult, SyncRound,
};
use rill_storage::{BatchBuilder, LogConfig, ManualClock, NewRecord, Offset, RaftIndex, Term};
use rill_storage::{Expired, SyncDone};

mod checks;
mod controller;
mod faults;
mod io;
mod lifecycle;
mod network;

/// Steps a deferred sync round takes to complete, at most.
const SYNC_STEPS_MAX: u64 = 3;
/// The bound on a broker's queued sync round (see
/// `Driver::queued_readies_max`), at most: drawn per broker start from
/// 1 to this, far below the broker's own, so rounds wait for it.
const QUEUED_READIES_MAX: u64 = 24;

/// splitmix64: the simulator's only source of choices.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    /// True with probability `per_mille / 1000`.
    pub fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

/// How hostile a run is. Probabilities are per mille, per step.
#[derive(Debug, Clone)]
pub struct Faults {
    /// A message is dropped.
    pub drop: u64,
    /// A message is delivered twice.
    pub duplicate: u64,
    /// Most steps a message may be delayed.
    pub delay_steps_max: u64,
    /// A broker crashes (if fewer than a minority are down).
    pub crash: u64,
    /// A down broker restarts.
    pub restart: u64,
    /// A link between two brokers is cut (both directions).
    pub cut: u64,
    /// A cut link heals.
    pub heal: u64,
    /// A live broker closes one of its replicas between rounds and opens
    /// it again from its files (as a broker reopens a replica whose write
    /// failed): a new life of the group, while syncs of the old one may
    /// still be out.
    pub reopen: u64,
    /// A group's leader is asked to hand leadership to another member.
    pub transfer: u64,
    /// A broker begins a controlled shutdown: it hands its leaderships
    /// over, stops once it leads nothing (or a deadline passes) after
    /// running its syncs and flushing its logs, and loses nothing.
    pub stop: u64,
}

impl Faults {
    pub fn none() -> Faults {
        Faults {
            drop: 0,
            duplicate: 0,
            delay_steps_max: 1,
            crash: 0,
            restart: 1000,
            cut: 0,
            heal: 1000,
            reopen: 0,
            transfer: 0,
            stop: 0,
        }
    }
    pub fn hostile() -> Faults {
        Faults {
            drop: 50,
            duplicate: 20,
            delay_steps_max: 4,
            crash: 4,
            restart: 40,
            cut: 4,
            heal: 30,
            reopen: 5,
            transfer: 10,
            stop: 3,
        }
    }
}

/// A simulation's shape.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub seed: u64,
    pub brokers: u64,
    pub groups: u64,
    pub replication_factor: u64,
    /// Steps with faults, then steps to settle without them.
    pub steps: u64,
    pub settle_steps: u64,
    /// A proposal is tried with this probability per step (per mille).
    pub propose: u64,
    /// Small segments and a size limit, with retention applied every few
    /// steps: lagging replicas are restored from snapshots.
    pub retention: bool,
    /// The groups' durability mode (see the module documentation).
    pub fsync: bool,
    /// Crashes in a run, at most.
    pub crashes_max: u64,
    /// Whether a broker leading a group may crash.
    pub crash_leaders: bool,
    /// Crashes that also lose the broker's whole data directory, at most:
    /// it comes back as a new incarnation and must catch up before it
    /// votes. Only one broker at a time is without its data.
    pub disk_losses: u64,
    /// Whether the brokers run the controller's group (every broker a
    /// voter) and apply its metadata: groups created and deleted while
    /// the faults go on (see `controller.rs`).
    pub controller: bool,
    /// With `controller`, a metadata command is proposed with this
    /// probability per step (per mille).
    pub metadata: u64,
    /// Whether metadata commands delete groups too (else they only create
    /// them). A broker that applied a deletion and lost, in a power cut,
    /// the saved commit index that covered it replays its metadata without
    /// the deletion and opens the deleted group again, empty: a replica
    /// that forgot its votes (see the test of that name).
    pub deletes: bool,
    pub faults: Faults,
    /// Whether settled groups hibernate, each broker told at every tick
    /// which brokers are down.
    pub hibernate: bool,
}

struct Broker {
    node: Option<Node>,
    /// Its rounds, as the broker runs them.
    driver: Driver,
    logs: BTreeMap<GroupId, ReplicaLogReader>,
    clock: ManualClock,
    /// The deferred sync round out (one at a time: the driver merges the
    /// rest), with the step it completes.
    syncing: Option<(u64, SyncRound)>,
    /// Retention's sync rounds, oldest first, with the step each
    /// completes: apart from `syncing`, as a broker runs them.
    retention_syncing: VecDeque<(u64, SyncRound)>,
    /// Segments retention took, not unlinked yet (as a broker's janitor
    /// does it later): a crash leaves them on disk below the log start.
    expired: Vec<rill_storage::Expired>,
    /// The step by which a broker in a controlled shutdown stops even if
    /// it still leads a group (as the broker's `HANDOVER_MS_MAX`).
    stopping: Option<u64>,
    /// The metadata as this broker applied it: each data group and its
    /// replicas (with `SimConfig::controller`).
    image: BTreeMap<GroupId, Vec<BrokerId>>,
    /// The controller entries applied to `image`.
    applied: RaftIndex,
    /// Whether deleted groups' replicas wait for the controller's commit
    /// to be durable (retried every step).
    deletions_pending: bool,
    /// Groups closed in the middle of a round (as the broker stops a
    /// replica when the controller's entries, applied mid-round, delete
    /// it), opened again before the next round. Their old log readers stay
    /// in `logs` until then: a crash forgets what they never synced.
    closed: Vec<GroupId>,
}

impl Broker {
    /// Forgets everything of the process that is gone (a crash or a clean
    /// stop): what survives is on its disk.
    fn went_down(&mut self) {
        self.node = None;
        self.logs.clear();
        self.syncing = None;
        self.retention_syncing.clear();
        self.expired.clear();
        self.closed.clear();
        self.stopping = None;
        self.deletions_pending = false;
    }
}

/// An acknowledged batch: where its producer was told it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub group: GroupId,
    pub base_offset: Offset,
    pub value: Vec<u8>,
}

struct InFlight {
    deliver_at: u64,
    seq: u64,
    from: BrokerId,
    out: Outgoing,
}

/// A pending proposal: acknowledged once its leader reports it committed
/// with the same term at its index.
#[derive(Debug, Clone)]
struct Pending {
    broker: BrokerId,
    group: GroupId,
    index: RaftIndex,
    term: Term,
    base_offset: Offset,
    value: Vec<u8>,
}

/// The simulator. See the module documentation.
pub struct Sim {
    pub config: SimConfig,
    rng: Rng,
    root: tempfile::TempDir,
    brokers: BTreeMap<BrokerId, Broker>,
    stores: BTreeMap<(BrokerId, GroupId), MemoryStateStore>,
    members: BTreeMap<GroupId, Vec<BrokerId>>,
    network: Vec<InFlight>,
    cut: BTreeSet<(BrokerId, BrokerId)>,
    /// Brokers back after losing their data, not yet caught up everywhere.
    rejoining: BTreeSet<BrokerId>,
    /// Disk losses so far.
    pub disk_losses: u64,
    step: u64,
    msg_seq: u64,
    value_seq: u64,
    pending: Vec<Pending>,
    pub acks: Vec<Ack>,
    /// (group, term) -> the broker that led it.
    leaders: BTreeMap<(GroupId, Term), BrokerId>,
    /// Per group, the committed entries seen so far: index -> (term, crc, base offset).
    committed: BTreeMap<GroupId, BTreeMap<RaftIndex, (Term, u32, Offset)>>,
    /// A digest of everything that happened, to compare replays.
    pub trace: u64,
    pub crashes: u64,
    pub elections: u64,
    pub restores: u64,
    /// Snapshot messages sent.
    pub snapshots_sent: u64,
    /// Rounds a broker did not start because its queued sync round was
    /// full.
    pub rounds_held: u64,
    /// Replicas closed and opened again between rounds.
    pub reopens: u64,
    /// Power cuts in a round that installed a snapshot, before its syncs.
    pub crashes_in_install: u64,
    /// Segments such power cuts took (their directory entries lost).
    pub segments_lost: u64,
    /// Power cuts while retention's state sync was out.
    pub crashes_before_retention_sync: u64,
    /// Power cuts after retention's state sync, before its unlink.
    pub crashes_before_unlink: u64,
    /// The last group id a metadata command created.
    next_group: u64,
    /// The controller entries any broker applied so far: `members` is the
    /// metadata through them.
    metadata_applied: RaftIndex,
    /// Metadata commands proposed, groups they created and deleted.
    pub metadata_proposed: u64,
    pub groups_created: u64,
    pub groups_deleted: u64,
    /// Brokers whose metadata was checked at the end.
    pub metadata_checked: u64,
    /// Leadership transfers asked for.
    pub transfers: u64,
    /// Controlled shutdowns completed.
    pub clean_stops: u64,
    /// Deferred sync rounds that waited behind the one out, the syncs of
    /// every round meanwhile merged into them.
    pub queued_syncs: u64,
    /// Acknowledged batches checked at the end (the rest were deleted by
    /// retention).
    pub acks_checked: u64,
}

/// The tests' small log; with retention, tinier segments and a size limit
/// so logs move past a replica that is down for a while.
fn log_config(retention: bool) -> LogConfig {
    let small = super::helpers::small_config();
    if retention {
        return LogConfig {
            segment_bytes: 4 * 1024,
            max_batch_bytes: 2 * 1024,
            retention_bytes: Some(4 * 1024),
            ..small
        };
    }
    small
}

fn mix(trace: u64, x: u64) -> u64 {
    (trace ^ x).wrapping_mul(0x100_0000_01B3).rotate_left(7)
}

impl Sim {
    pub fn new(config: SimConfig) -> Sim {
        let mut sim = Sim {
            rng: Rng::new(config.seed),
            root: tempfile::tempdir().expect("temp dir"),
            brokers: BTreeMap::new(),
            stores: BTreeMap::new(),
            members: BTreeMap::new(),
            network: Vec::new(),
            cut: BTreeSet::new(),
            rejoining: BTreeSet::new(),
            disk_losses: 0,
            step: 0,
            msg_seq: 0,
            value_seq: 0,
            pending: Vec::new(),
            acks: Vec::new(),
            leaders: BTreeMap::new(),
            committed: BTreeMap::new(),
            trace: 0xcbf2_9ce4_8422_2325,
            crashes: 0,
            elections: 0,
            restores: 0,
            snapshots_sent: 0,
            rounds_held: 0,
            reopens: 0,
            crashes_in_install: 0,
            segments_lost: 0,
            crashes_before_retention_sync: 0,
            crashes_before_unlink: 0,
            transfers: 0,
            clean_stops: 0,
            queued_syncs: 0,
            acks_checked: 0,
            next_group: 0,
            metadata_applied: RaftIndex(0),
            metadata_proposed: 0,
            groups_created: 0,
            groups_deleted: 0,
            metadata_checked: 0,
            config,
        };
        // Replicas placed round-robin, as the controller does.
        let n = sim.config.brokers;
        for g in 1..=sim.config.groups {
            let members = (0..sim.config.replication_factor)
                .map(|k| BrokerId((g + k) % n + 1))
                .collect();
            sim.members.insert(GroupId(g), members);
        }
        sim.next_group = sim.config.groups;
        if sim.config.controller {
            sim.members
                .insert(GroupId::CONTROLLER, (1..=n).map(BrokerId).collect());
        }
        for b in 1..=n {
            sim.brokers.insert(
                BrokerId(b),
                Broker {
                    node: None,
                    driver: Driver::default(),
                    logs: BTreeMap::new(),
                    clock: ManualClock::new(1_000_000),
                    syncing: None,
                    retention_syncing: VecDeque::new(),
                    expired: Vec::new(),
                    closed: Vec::new(),
                    stopping: None,
                    image: BTreeMap::new(),
                    applied: RaftIndex(0),
                    deletions_pending: false,
                },
            );
            sim.start(BrokerId(b));
        }
        sim
    }

    fn dir(&self, b: BrokerId, g: GroupId) -> PathBuf {
        self.root.path().join(format!("b{b}")).join(format!("g{g}"))
    }

    /// An fsync=false replica's directory as its last open left it synced.
    fn disk_image(&self, b: BrokerId, g: GroupId) -> PathBuf {
        self.root
            .path()
            .join(format!("b{b}"))
            .join(format!("g{g}.disk"))
    }

    /// The brokers that are down (crashed, not restarted yet).
    fn down(&self) -> Vec<BrokerId> {
        self.brokers
            .iter()
            .filter(|(_, br)| br.node.is_none())
            .map(|(b, _)| *b)
            .collect()
    }

    /// Groups hibernating on the brokers up now.
    pub fn asleep(&self) -> usize {
        self.brokers
            .values()
            .filter_map(|br| br.node.as_ref())
            .map(|n| n.groups().filter(|g| n.is_hibernating(*g)).count())
            .sum()
    }

    fn alive(&self) -> Vec<BrokerId> {
        self.brokers
            .iter()
            .filter(|(_, br)| br.node.is_some())
            .map(|(b, _)| *b)
            .collect()
    }

    fn batch(&mut self) -> (Bytes, Vec<u8>) {
        self.value_seq += 1;
        let mut value = format!("v{}-{}-", self.config.seed, self.value_seq).into_bytes();
        if self.config.retention {
            // Bigger batches: logs outgrow their retention within the time
            // a crashed broker stays down.
            value.resize(200, b'x');
        }
        let mut b = BatchBuilder::new(16 * 1024);
        let records = 1 + self.rng.below(3);
        for _ in 0..records {
            b.push(&NewRecord::value(&value, 1_000_000)).expect("fits");
        }
        (Bytes::from(b.finish().expect("builds")), value)
    }

    fn propose_somewhere(&mut self) {
        let groups = self.data_groups();
        if groups.is_empty() {
            return;
        }
        let g = groups[self.rng.below(groups.len() as u64) as usize];
        let alive = self.alive();
        let b = alive[self.rng.below(alive.len() as u64) as usize];
        let (bytes, value) = self.batch();
        let batch = CheckedBatch::new(bytes, 16 * 1024)
            .expect("valid")
            .expect("data batch");
        // A client asks any broker and follows the leader hint once.
        let mut target = b;
        let mut result = Err(ReplicationError::UnknownGroup(g));
        for _ in 0..2 {
            let Some(node) = self
                .brokers
                .get_mut(&target)
                .and_then(|br| br.node.as_mut())
            else {
                return;
            };
            if !node.has_group(g) {
                return;
            }
            result = node.propose(g, batch.clone());
            match &result {
                Err(ReplicationError::NotLeader {
                    leader: Some(l), ..
                }) => target = *l,
                _ => break,
            }
        }
        let b = target;
        match result {
            Ok(p) => {
                self.trace = mix(self.trace, p.index.get() ^ (p.term.get() << 32));
                self.pending.push(Pending {
                    broker: b,
                    group: g,
                    index: p.index,
                    term: p.term,
                    base_offset: p.base_offset,
                    value,
                });
            }
            Err(ReplicationError::NotLeader { .. }) | Err(ReplicationError::Raft(_)) => {}
            Err(e) => panic!("propose failed: {e}"),
        }
    }

    fn one_step(&mut self, with_faults: bool) {
        self.step += 1;
        if with_faults {
            self.faults();
        }
        // A rejoining broker whose groups have all caught up is whole again:
        // every one of them, so none may be closed (as the broker counts a
        // stopped replica as not caught up). Seed 3134 of the disk-loss
        // test voted with an emptied replica when a group closed at that
        // moment was left out and reopened as if caught up.
        let brokers = &mut self.brokers;
        self.rejoining.retain(|b| {
            let Some(br) = brokers.get_mut(b) else {
                return true;
            };
            let closed = !br.closed.is_empty();
            match br.node.as_mut() {
                Some(n) if n.catching_up() == 0 && !closed => {
                    n.set_rejoining(false);
                    false
                }
                _ => true,
            }
        });
        // One tick (100 ms of broker time) every 5 steps.
        if self.step % 5 == 0 {
            let down: Vec<BrokerId> = self
                .brokers
                .iter()
                .filter(|(_, br)| br.node.is_none())
                .map(|(b, _)| *b)
                .collect();
            let all: Vec<BrokerId> = self.brokers.keys().copied().collect();
            let hibernate = self.config.hibernate;
            for br in self.brokers.values_mut() {
                br.clock.advance_ms(100);
                if let Some(node) = br.node.as_mut() {
                    node.tick();
                    if hibernate {
                        for b in &all {
                            if down.contains(b) {
                                node.peer_down(*b);
                            } else {
                                node.peer_up(*b);
                            }
                        }
                    }
                }
            }
        }
        if self.rng.chance(self.config.propose) {
            self.propose_somewhere();
        }
        if self.config.controller && self.rng.chance(self.config.metadata) {
            self.propose_metadata();
        }
        // As the broker retries at every tick.
        for b in self.alive() {
            let broker = self.brokers.get_mut(&b).expect("broker");
            if broker.deletions_pending
                && let Some(mut node) = broker.node.take()
            {
                self.reconcile(b, &mut node);
                self.brokers.get_mut(&b).expect("broker").node = Some(node);
            }
        }
        if self.config.retention && self.step % 50 == 0 {
            for b in self.alive() {
                // The new snapshot points sync beside the deferred sync
                // rounds; the segments go after their sync completes.
                self.drive(b, false, false, |driver, io| driver.apply_retention(io));
                // Now and then a power cut while the new log starts' state
                // syncs are out: the segments were taken, not unlinked.
                if !self.brokers[&b].retention_syncing.is_empty()
                    && self.config.faults.crash > 0
                    && self.may_crash()
                    && self.may_crash_broker(b)
                    && self.rng.chance(100)
                {
                    self.crash(b);
                }
            }
        }
        for b in self.alive() {
            let br = self.brokers.get_mut(&b).expect("broker");
            if !br.expired.is_empty() && self.rng.chance(100) {
                for expired in br.expired.drain(..) {
                    expired.unlink().expect("unlink expired segments");
                }
            }
        }
        self.reopen_closed();
        self.finish_stops();
        self.deliver();
        for b in self.alive() {
            self.complete_syncs(b);
        }
        for b in self.alive() {
            self.round(b);
        }
    }

    /// Runs the faulty phase, heals everything, settles, and checks the
    /// end state. Returns the trace digest.
    pub fn run(&mut self) -> u64 {
        for _ in 0..self.config.steps {
            self.one_step(true);
        }
        self.cut.clear();
        // Settling restarts nobody: a controlled shutdown under way is
        // called off, and every broker down starts.
        for br in self.brokers.values_mut() {
            br.stopping = None;
        }
        for b in self.down() {
            self.start(b);
        }
        self.config.faults = Faults::none();
        // Settling proposes nothing: a follower that a power cut took
        // fsync=false entries from learns it from a heartbeat whose commit
        // lies past its log, and its leader sends them again.
        let (propose, metadata) = (self.config.propose, self.config.metadata);
        self.config.propose = 0;
        self.config.metadata = 0;
        for _ in 0..self.config.settle_steps {
            self.one_step(false);
        }
        self.config.propose = propose;
        self.config.metadata = metadata;
        self.check_end();
        if self.config.controller {
            self.check_metadata();
        }
        self.trace
    }

    pub fn root(&self) -> &Path {
        self.root.path()
    }
}

/// Replaces `to` with a copy of the files in `from`.
fn copy_dir(from: &Path, to: &Path) {
    if to.exists() {
        std::fs::remove_dir_all(to).expect("remove the old copy");
    }
    std::fs::create_dir_all(to).expect("create the copy");
    for entry in std::fs::read_dir(from).expect("list the directory") {
        let entry = entry.expect("list the directory");
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy a file");
    }
}
