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
    pub faults: Faults,
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
    /// Groups closed in the middle of a round (as the broker stops a
    /// replica when the controller's entries, applied mid-round, delete
    /// it), opened again before the next round. Their old log readers stay
    /// in `logs` until then: a crash forgets what they never synced.
    closed: Vec<GroupId>,
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

    fn start(&mut self, b: BrokerId) {
        let seed = self.rng.next();
        let broker = self.brokers.get(&b).expect("broker");
        let clock = Arc::new(broker.clock.clone());
        let mut config = NodeConfig::new(b);
        config.jitter_seed = seed;
        config.max_size_per_msg_bytes = 32 * 1024;
        config.max_inflight_msgs = 8;
        let mut node = Node::new(config, clock);
        // As the broker does when its peers knew an earlier life of its
        // data directory.
        node.set_rejoining(self.rejoining.contains(&b));
        let mut logs = BTreeMap::new();
        let groups: Vec<(GroupId, Vec<BrokerId>)> = self
            .members
            .iter()
            .filter(|(_, m)| m.contains(&b))
            .map(|(g, m)| (*g, m.clone()))
            .collect();
        for (g, members) in groups {
            let log = self.open_group(&mut node, b, g, members);
            logs.insert(g, log);
        }
        let queued_readies_max = 1 + self.rng.below(QUEUED_READIES_MAX) as usize;
        let broker = self.brokers.get_mut(&b).expect("broker");
        broker.node = Some(node);
        broker.driver = Driver::new(queued_readies_max);
        broker.logs = logs;
    }

    /// Opens broker `b`'s replica of group `g` from its files.
    fn open_group(
        &mut self,
        node: &mut Node,
        b: BrokerId,
        g: GroupId,
        members: Vec<BrokerId>,
    ) -> ReplicaLogReader {
        let dir = self.dir(b, g);
        let store = self.stores.entry((b, g)).or_default().clone();
        let state = store.load(|| ReplicaState::initial(Membership::voters(members)));
        let log = node
            .add_group(ReplicaSpec {
                group: g,
                dir: &dir,
                log_config: log_config(self.config.retention),
                fsync: self.config.fsync,
                store: Box::new(store),
                state,
            })
            .expect("replica opens");
        if !self.config.fsync {
            // What the open synced is all an fsync=false replica has on
            // disk until it opens again.
            copy_dir(&dir, &self.disk_image(b, g));
        }
        log
    }

    /// Broker `b` closes its replica of a group drawn at random and opens
    /// it again, between rounds.
    fn reopen_some_group(&mut self, b: BrokerId) {
        let groups: Vec<GroupId> = self.brokers[&b].logs.keys().copied().collect();
        if groups.is_empty() {
            return;
        }
        let g = groups[self.rng.below(groups.len() as u64) as usize];
        let broker = self.brokers.get_mut(&b).expect("broker");
        if broker.closed.contains(&g) {
            return;
        }
        let Some(node) = broker.node.as_mut() else {
            return;
        };
        node.remove_group(g).expect("the group is open");
        self.reopen(b, g);
    }

    /// Asks the leader of a group drawn at random to hand leadership to
    /// another member drawn at random.
    fn transfer_some_leadership(&mut self) {
        let g = GroupId(1 + self.rng.below(self.config.groups));
        let members = self.members[&g].clone();
        let to = members[self.rng.below(members.len() as u64) as usize];
        for b in self.alive() {
            let node = self
                .brokers
                .get_mut(&b)
                .and_then(|br| br.node.as_mut())
                .expect("alive");
            if node.leader(g) == Some(b) && b != to {
                // A group closed here refuses; that is all.
                if node.transfer_leader(g, to).is_ok() {
                    self.transfers += 1;
                    self.trace = mix(self.trace, 0x7F ^ (g.get() << 8) ^ to.get());
                }
                return;
            }
        }
    }

    /// Brokers in a controlled shutdown that lead nothing any more, or
    /// whose deadline passed, stop as the broker does: a last round, the
    /// sync rounds out and queued run, every log flushed. Nothing is
    /// forgotten: the process exits, the page cache keeps what it wrote.
    fn finish_stops(&mut self) {
        for b in self.alive() {
            let br = &self.brokers[&b];
            let Some(deadline) = br.stopping else {
                continue;
            };
            let node = br.node.as_ref().expect("alive");
            if node.leads_with_peers() && self.step < deadline {
                continue;
            }
            self.drive(b, false, false, |driver, io| {
                driver.round(io);
            });
            loop {
                let broker = self.brokers.get_mut(&b).expect("broker");
                let Some((_, syncs)) = broker.syncing.take() else {
                    break;
                };
                let synced = syncs.run();
                drop(synced);
                self.drive(b, false, false, |driver, io| {
                    driver.synced_while_stopping(io)
                });
            }
            let groups: Vec<GroupId> = self.brokers[&b].logs.keys().copied().collect();
            for g in groups {
                self.brokers[&b].logs[&g]
                    .flush()
                    .expect("flush at shutdown");
                if !self.config.fsync {
                    // Everything is on disk now.
                    let (dir, image) = (self.dir(b, g), self.disk_image(b, g));
                    std::fs::remove_dir_all(&image).expect("old disk image");
                    copy_dir(&dir, &image);
                }
            }
            let broker = self.brokers.get_mut(&b).expect("broker");
            broker.node = None;
            broker.logs.clear();
            broker.syncing = None;
            broker.retention_syncing.clear();
            broker.expired.clear();
            broker.closed.clear();
            broker.stopping = None;
            self.pending.retain(|p| p.broker != b);
            self.clean_stops += 1;
            self.trace = mix(self.trace, 0x5709 ^ b.get());
        }
    }

    /// Opens broker `b`'s replica of `g` again, closed since.
    fn reopen(&mut self, b: BrokerId, g: GroupId) {
        let members = self.members[&g].clone();
        let broker = self.brokers.get_mut(&b).expect("broker");
        let Some(mut node) = broker.node.take() else {
            return;
        };
        // The old log's reader holds its directory's lock.
        broker.logs.remove(&g);
        let log = self.open_group(&mut node, b, g, members);
        let broker = self.brokers.get_mut(&b).expect("broker");
        broker.logs.insert(g, log);
        broker.node = Some(node);
        self.reopens += 1;
        self.trace = mix(self.trace, 0x0E ^ (g.get() << 8) ^ b.get());
    }

    /// Opens again the groups closed in the middle of the rounds.
    fn reopen_closed(&mut self) {
        for b in self.alive() {
            let closed = std::mem::take(&mut self.brokers.get_mut(&b).expect("broker").closed);
            for g in closed {
                self.reopen(b, g);
            }
        }
    }

    /// A power cut: every byte not synced is forgotten (with fsync=false,
    /// sometimes a crash of the process alone).
    fn crash(&mut self, b: BrokerId) {
        self.crash_losing(b, &[]);
    }

    /// A power cut, as [`Sim::crash`], in which the groups of `installed`
    /// had just installed a snapshot: the new state is synced, the
    /// segment their log was reset to is not in a synced directory yet, and
    /// half the time its entry never reached the disk.
    fn crash_losing(&mut self, b: BrokerId, installed: &[GroupId]) {
        let broker = self.brokers.get_mut(&b).expect("broker");
        let Some(node) = broker.node.take() else {
            return;
        };
        let durable: Vec<(GroupId, rill_storage::LogPosition)> = broker
            .logs
            .iter()
            .map(|(g, log)| (*g, log.durable()))
            .collect();
        // Retention's windows: segments taken while the new log start's
        // state sync is out, or synced and not yet unlinked.
        if !broker.retention_syncing.is_empty() {
            self.crashes_before_retention_sync += 1;
        }
        if !broker.expired.is_empty() {
            self.crashes_before_unlink += 1;
        }
        let broker = self.brokers.get_mut(&b).expect("broker");
        broker.logs.clear();
        broker.syncing = None;
        broker.retention_syncing.clear();
        broker.expired.clear();
        broker.closed.clear();
        broker.stopping = None;
        drop(node);
        // With fsync=false, a third of the crashes are of the process alone
        // (the page cache keeps every write): the next open syncs what the
        // replica wrote, tail and truncations included, for a later power
        // cut to find.
        let process_only = !self.config.fsync && self.rng.chance(333);
        for (g, position) in durable {
            if process_only {
                self.stores.get(&(b, g)).expect("store").crash(true);
                continue;
            }
            let keep = if self.rng.chance(300) {
                self.rng.below(300)
            } else {
                0
            };
            if !self.config.fsync && self.rng.chance(500) {
                // Nothing written since the open reached the disk: a
                // segment sealed by a truncation since then still holds
                // the entries cut from it, and the segment that replaced
                // them is gone (its directory entry was never synced).
                let dir = self.dir(b, g);
                std::fs::remove_dir_all(&dir).expect("forget the directory");
                copy_dir(&self.disk_image(b, g), &dir);
            } else {
                rill_storage::fault::forget_unsynced(&self.dir(b, g), position, keep)
                    .expect("forget unsynced");
                if installed.contains(&g) && self.rng.chance(500) {
                    let gone = rill_storage::fault::forget_new_segments(&self.dir(b, g), position)
                        .expect("forget new segments");
                    self.segments_lost += gone as u64;
                }
            }
            let keep_state = self.rng.chance(500);
            self.stores.get(&(b, g)).expect("store").crash(keep_state);
        }
        // Sometimes the disk goes too: the broker comes back with nothing,
        // as a new incarnation (one such broker at a time: Raft keeps what
        // a majority holds).
        if self.disk_losses < self.config.disk_losses
            && self.rejoining.is_empty()
            && self.rng.chance(300)
        {
            let groups: Vec<GroupId> = self
                .stores
                .keys()
                .filter(|(x, _)| *x == b)
                .map(|(_, g)| *g)
                .collect();
            for g in groups {
                std::fs::remove_dir_all(self.dir(b, g)).expect("wipe the replica");
                self.stores.insert((b, g), MemoryStateStore::default());
            }
            self.rejoining.insert(b);
            self.disk_losses += 1;
            self.trace = mix(self.trace, 0xD15C ^ b.get());
        }
        self.pending.retain(|p| p.broker != b);
        self.crashes += 1;
        self.trace = mix(self.trace, 0xC0 ^ b.get());
    }

    /// The brokers that are down (crashed, not restarted yet).
    fn down(&self) -> Vec<BrokerId> {
        self.brokers
            .iter()
            .filter(|(_, br)| br.node.is_none())
            .map(|(b, _)| *b)
            .collect()
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
        let g = GroupId(1 + self.rng.below(self.config.groups));
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

    fn send(&mut self, from: BrokerId, out: Vec<Outgoing>) {
        for mut o in out {
            if o.message.get_msg_type() == raft::eraftpb::MessageType::MsgSnapshot {
                self.snapshots_sent += 1;
            }
            let f = &self.config.faults;
            let (drop, dup, delay_max) = (f.drop, f.duplicate, f.delay_steps_max);
            if self.cut.contains(&(from, o.to)) || self.rng.chance(drop) {
                continue;
            }
            // Encoded as it leaves, as a socket copies the bytes when they
            // are written: entry data may borrow the sender's mapped log,
            // whose unsynced bytes a crash before delivery would zero.
            o.message = through_the_wire(from, o.group, o.message);
            let copies = if self.rng.chance(dup) { 2 } else { 1 };
            for _ in 0..copies {
                self.msg_seq += 1;
                let delay = 1 + self.rng.below(delay_max);
                self.network.push(InFlight {
                    deliver_at: self.step + delay,
                    seq: self.msg_seq,
                    from,
                    out: o.clone(),
                });
            }
        }
    }

    fn deliver(&mut self) {
        let now = self.step;
        let mut due: Vec<InFlight> = Vec::new();
        let mut later = Vec::new();
        for m in self.network.drain(..) {
            if m.deliver_at <= now {
                due.push(m);
            } else {
                later.push(m);
            }
        }
        self.network = later;
        due.sort_by_key(|m| (m.deliver_at, m.seq));
        for m in due {
            if self.cut.contains(&(m.from, m.out.to)) {
                continue;
            }
            let Some(node) = self
                .brokers
                .get_mut(&m.out.to)
                .and_then(|br| br.node.as_mut())
            else {
                continue;
            };
            self.trace = mix(self.trace, m.seq);
            // A message for a group not here, or from a stranger, is
            // refused, as the broker would refuse it.
            let _ = node.step(m.out.group, m.out.message);
        }
    }

    /// Runs `f` with broker `b`'s driver and the simulator as its I/O,
    /// then carries out a power cut the I/O met (`crash_at_sync`).
    fn drive(
        &mut self,
        b: BrokerId,
        may_crash: bool,
        crash_at_sync: bool,
        f: impl FnOnce(&mut Driver, &mut SimIo<'_>),
    ) {
        let broker = self.brokers.get_mut(&b).expect("broker");
        let Some(node) = broker.node.take() else {
            return;
        };
        let mut driver = std::mem::take(&mut broker.driver);
        let mut io = SimIo {
            sim: self,
            b,
            node,
            crash_at_sync,
            crashed: false,
            completing: false,
            may_crash,
            installed: Vec::new(),
        };
        f(&mut driver, &mut io);
        let (node, crashed, installed) = (io.node, io.crashed, io.installed);
        let broker = self.brokers.get_mut(&b).expect("broker");
        broker.node = Some(node);
        broker.driver = driver;
        if crashed {
            if !installed.is_empty() {
                self.crashes_in_install += 1;
            }
            self.crash_losing(b, &installed);
        }
    }

    /// One round on broker `b`, unless its queued sync round is full.
    fn round(&mut self, b: BrokerId) {
        // No crash while settling (`Faults::none`).
        let may_crash =
            self.config.faults.crash > 0 && self.may_crash() && self.may_crash_broker(b);
        let crash_mid_round = may_crash && self.rng.chance(self.config.faults.crash);
        if !self.brokers[&b].driver.may_round() {
            self.rounds_held += 1;
            return;
        }
        self.drive(b, may_crash, crash_mid_round, |driver, io| {
            driver.round(io);
        });
    }

    /// Completes broker `b`'s deferred sync rounds that are due.
    fn complete_syncs(&mut self, b: BrokerId) {
        let step = self.step;
        let broker = self.brokers.get_mut(&b).expect("broker");
        if broker.node.is_none() {
            return;
        }
        let mut due = Vec::new();
        while broker
            .retention_syncing
            .front()
            .is_some_and(|(at, _)| *at <= step)
        {
            let (_, syncs) = broker.retention_syncing.pop_front().expect("front exists");
            due.push(syncs);
        }
        let deferred = match broker.syncing.take() {
            Some((at, syncs)) if at <= step => Some(syncs),
            other => {
                broker.syncing = other;
                None
            }
        };
        self.drive(b, false, false, |driver, io| {
            for syncs in due {
                driver.retention_synced(syncs.run(), io);
            }
            if let Some(syncs) = deferred {
                // The next sync round, if the rounds queued one, goes
                // out through `SimIo::start_sync` from here.
                io.completing = true;
                driver.synced(syncs.run(), io);
            }
        });
    }

    /// Whether one more broker may go down and leave a majority up.
    fn may_crash(&self) -> bool {
        let stopping = self
            .brokers
            .values()
            .filter(|b| b.stopping.is_some())
            .count();
        let down = self.config.brokers as usize - self.alive().len() + stopping;
        down < (self.config.brokers as usize - 1) / 2 && self.crashes < self.config.crashes_max
    }

    /// Whether broker `b` may crash now.
    fn may_crash_broker(&self, b: BrokerId) -> bool {
        let leads_nothing = || {
            self.brokers[&b]
                .node
                .as_ref()
                .is_some_and(|n| n.groups().all(|g| n.leader(g) != Some(b)))
        };
        (self.config.crash_leaders || leads_nothing())
            && (self.config.fsync || self.others_hold_every_commit(b))
    }

    /// Whether, in every group of `b`, every other replica holds the last
    /// entry reported committed (same index and term, so the same prefix).
    /// With `fsync=false` a power cut forgets what the broker wrote since
    /// it opened: Raft keeps the committed entries only if the other
    /// replicas hold them. When the cut takes the only other copy of one,
    /// the entry is lost (as that mode allows) and the replica that still
    /// has it can no longer agree with the new leader; the simulator does
    /// not cut power then.
    fn others_hold_every_commit(&self, b: BrokerId) -> bool {
        self.members
            .iter()
            .filter(|(_, members)| members.contains(&b))
            .all(|(g, members)| {
                let term_at = |m: &BrokerId, index: RaftIndex| {
                    let log = self.brokers[m].logs.get(g)?;
                    log.term_of(index).ok()
                };
                let highest = members
                    .iter()
                    .filter_map(|m| {
                        let node = self.brokers[m].node.as_ref()?;
                        let commit = node.status(*g)?.commit;
                        Some((commit, *m))
                    })
                    .max();
                let Some((index, holder)) = highest else {
                    return true;
                };
                if index == RaftIndex(0) {
                    return true;
                }
                let Some(term) = term_at(&holder, index) else {
                    return false;
                };
                members.iter().filter(|&&m| m != b).all(|m| {
                    self.brokers[m]
                        .logs
                        .get(g)
                        .is_some_and(|l| l.term_of(index).ok() == Some(term))
                })
            })
    }

    fn observe(&mut self, b: BrokerId, e: Event) {
        match e {
            Event::RoleChanged {
                group,
                is_leader: true,
                term,
                ..
            } => {
                self.elections += 1;
                self.trace = mix(
                    self.trace,
                    (group.get() << 40) ^ (term.get() << 8) ^ b.get(),
                );
                if let Some(other) = self.leaders.insert((group, term), b) {
                    assert_eq!(
                        other, b,
                        "seed {}: two leaders of group {group} in term {term}",
                        self.config.seed
                    );
                }
            }
            Event::Committed { group, index, .. } => {
                if self.config.fsync {
                    self.check_committed(b, group, index);
                }
                // Acknowledge the proposals this leader sees committed.
                let log = self.brokers[&b].logs.get(&group).cloned();
                let mut still = Vec::new();
                for p in std::mem::take(&mut self.pending) {
                    if p.broker != b || p.group != group || p.index > index {
                        still.push(p);
                        continue;
                    }
                    let term_there = log.as_ref().and_then(|l| l.term_of(p.index).ok());
                    if term_there == Some(p.term) {
                        self.acks.push(Ack {
                            group,
                            base_offset: p.base_offset,
                            value: p.value,
                        });
                    }
                }
                self.pending = still;
            }
            Event::Restored { .. } => self.restores += 1,
            Event::Failed { group, reason, .. } => {
                panic!(
                    "seed {}: group {group} failed on {b}: {reason}",
                    self.config.seed
                )
            }
            _ => {}
        }
    }

    /// Every committed entry reported must agree with every earlier report.
    fn check_committed(&mut self, b: BrokerId, group: GroupId, through: RaftIndex) {
        let Some(log) = self.brokers[&b].logs.get(&group).cloned() else {
            return;
        };
        let seen = self.committed.entry(group).or_default();
        let from = log.first_raft_index();
        let batches = log
            .read_entries_owned(from, through.next(), u64::MAX)
            .expect("committed entries are in the log");
        for batch in batches {
            let h = batch.header();
            let got = (h.raft_term, h.crc, h.base_offset);
            if let Some(want) = seen.get(&h.raft_index) {
                assert_eq!(
                    *want, got,
                    "seed {}: committed entry {} of group {group} changed on broker {b}",
                    self.config.seed, h.raft_index
                );
            } else {
                seen.insert(h.raft_index, got);
            }
        }
    }

    fn faults(&mut self) {
        let f = self.config.faults.clone();
        let alive = self.alive();
        // Keep a majority up so progress stays possible.
        if self.may_crash() && self.rng.chance(f.crash) {
            let b = alive[self.rng.below(alive.len() as u64) as usize];
            if self.may_crash_broker(b) {
                self.crash(b);
            }
        }
        for b in self.down() {
            if self.rng.chance(f.restart) {
                self.start(b);
                self.trace = mix(self.trace, 0x5A ^ b.get());
            }
        }
        if self.rng.chance(f.cut) {
            let a = BrokerId(1 + self.rng.below(self.config.brokers));
            let c = BrokerId(1 + self.rng.below(self.config.brokers));
            if a != c {
                self.cut.insert((a, c));
                self.cut.insert((c, a));
            }
        }
        if self.rng.chance(f.transfer) {
            self.transfer_some_leadership();
        }
        if self.may_crash() && self.rng.chance(f.stop) {
            let b = alive[self.rng.below(alive.len() as u64) as usize];
            let broker = self.brokers.get_mut(&b).expect("broker");
            if let Some(node) = broker.node.as_mut()
                && broker.stopping.is_none()
            {
                // Five ticks a second: 5 s of broker time, as
                // `HANDOVER_MS_MAX`.
                broker.stopping = Some(self.step + 250);
                node.hand_over();
                self.trace = mix(self.trace, 0x570 ^ b.get());
            }
        }
        if self.rng.chance(f.reopen) {
            let b = alive[self.rng.below(alive.len() as u64) as usize];
            if self.brokers[&b].node.is_some() {
                self.reopen_some_group(b);
            }
        }
        if !self.cut.is_empty() && self.rng.chance(f.heal) {
            let links: Vec<_> = self.cut.iter().copied().collect();
            let (a, c) = links[self.rng.below(links.len() as u64) as usize];
            self.cut.remove(&(a, c));
            self.cut.remove(&(c, a));
        }
    }

    fn one_step(&mut self, with_faults: bool) {
        self.step += 1;
        if with_faults {
            self.faults();
        }
        // A rejoining broker whose groups have all caught up is whole again.
        let brokers = &mut self.brokers;
        self.rejoining.retain(|b| {
            let node = brokers.get_mut(b).and_then(|br| br.node.as_mut());
            match node {
                Some(n) if n.catching_up() == 0 => {
                    n.set_rejoining(false);
                    false
                }
                _ => true,
            }
        });
        // One tick (100 ms of broker time) every 5 steps.
        if self.step % 5 == 0 {
            for br in self.brokers.values_mut() {
                br.clock.advance_ms(100);
                if let Some(node) = br.node.as_mut() {
                    node.tick();
                }
            }
        }
        if self.rng.chance(self.config.propose) {
            self.propose_somewhere();
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
        let propose = self.config.propose;
        self.config.propose = 0;
        for _ in 0..self.config.settle_steps {
            self.one_step(false);
        }
        self.config.propose = propose;
        self.check_end();
        self.trace
    }

    fn check_end(&mut self) {
        let seed = self.config.seed;
        for (g, members) in &self.members {
            // Every replica agrees on the committed prefix, which covers
            // everything ever reported committed.
            let mut commits = Vec::new();
            let mut statuses = Vec::new();
            for b in members {
                let status = self.brokers[b]
                    .node
                    .as_ref()
                    .and_then(|n| n.status(*g))
                    .expect("every replica runs after settling");
                commits.push(status.commit);
                statuses.push(format!(
                    "broker {b}: leader {:?} term {} commit {} last {} matched {:?}",
                    status.leader.map(|l| l.get()),
                    status.term,
                    status.commit,
                    status.last_index,
                    status.matched
                ));
            }
            let commit = *commits.iter().min().expect("members");
            assert!(
                commits.iter().all(|c| *c == commit),
                "seed {seed}: replicas of group {g} did not catch up: {statuses:#?}"
            );
            let seen_max = self
                .committed
                .get(g)
                .and_then(|m| m.keys().next_back().copied())
                .unwrap_or(RaftIndex(0));
            assert!(
                commit >= seen_max,
                "seed {seed}: group {g} settled at commit {commit} below {seen_max} reported before"
            );
            // Retention may have deleted different prefixes: compare what
            // every replica still has.
            let from = members
                .iter()
                .map(|b| self.brokers[b].logs[g].first_raft_index())
                .max()
                .expect("members");
            let mut reference: Option<Vec<(RaftIndex, Term, u32, Offset)>> = None;
            for b in members {
                let log = &self.brokers[b].logs[g];
                let entries: Vec<_> = log
                    .read_entries_owned(from, commit.next().max(from), u64::MAX)
                    .expect("committed prefix readable")
                    .iter()
                    .map(|e| {
                        let h = e.header();
                        (h.raft_index, h.raft_term, h.crc, h.base_offset)
                    })
                    .collect();
                match &reference {
                    None => reference = Some(entries),
                    Some(r) => assert_eq!(
                        r, &entries,
                        "seed {seed}: replicas of group {g} disagree on the committed prefix"
                    ),
                }
            }
        }
        // Every acknowledged batch is where its producer was told.
        if !self.config.fsync {
            return;
        }
        for ack in &self.acks {
            let leader_log = self.members[&ack.group]
                .iter()
                .map(|b| &self.brokers[b].logs[&ack.group])
                .next()
                .expect("a replica");
            let log = leader_log;
            if ack.base_offset < log.log_start_offset() {
                continue;
            }
            self.acks_checked += 1;
            let chunks = log
                .fetch(ack.base_offset, 1, log.next_offset())
                .unwrap_or_else(|e| panic!("seed {seed}: acknowledged batch unreadable: {e}"))
                .batches;
            let batch = rill_storage::batches_of(&chunks, usize::MAX)
                .next()
                .expect("a batch")
                .expect("valid");
            assert_eq!(
                batch.header().base_offset,
                ack.base_offset,
                "seed {seed}: acknowledged batch of group {} not at its offset",
                ack.group
            );
            let record = batch.records().next().expect("a record").expect("valid");
            assert_eq!(
                record.value.as_deref(),
                Some(&ack.value[..]),
                "seed {seed}: a different batch sits at acknowledged offset {} of group {}",
                ack.base_offset,
                ack.group
            );
        }
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

/// `message` as the receiving broker sees it: encoded in a peer frame by
/// `from` and decoded again, so every message Raft sends in a simulation
/// also exercises the peer codec (heartbeats in short form included).
fn through_the_wire(
    from: BrokerId,
    group: GroupId,
    message: raft::eraftpb::Message,
) -> raft::eraftpb::Message {
    let mut frame = bytes::BytesMut::new();
    rill_replication::wire::encode_frame(from, &[(group, message)], &mut frame);
    let decoded = rill_replication::wire::decode_frame(
        frame.freeze(),
        &rill_replication::wire::WireLimits::default(),
    )
    .expect("every message Raft sends decodes");
    assert_eq!(decoded.from, from);
    let mut messages = decoded.messages;
    assert_eq!(messages.len(), 1);
    let (g, m) = messages.pop().expect("one pair");
    assert_eq!(g, group);
    m
}

/// The simulator as one broker's I/O while its driver runs: the node is
/// moved out of the broker for the call.
struct SimIo<'a> {
    sim: &'a mut Sim,
    b: BrokerId,
    node: Node,
    /// A power cut comes when the round reaches its own syncs.
    crash_at_sync: bool,
    /// The power cut came: nothing after it leaves the broker.
    crashed: bool,
    /// Whether the driver is completing sync rounds (not running a round).
    completing: bool,
    /// Whether this broker may crash now (see `Sim::may_crash_broker`).
    may_crash: bool,
    /// Groups that installed a snapshot in this round: their log was reset
    /// to the snapshot point, a new segment whose directory entry is not
    /// synced yet, while the new state is.
    installed: Vec<GroupId>,
}

impl RoundIo for SimIo<'_> {
    fn node(&mut self) -> &mut Node {
        &mut self.node
    }

    fn send(&mut self, out: Vec<Outgoing>) -> Vec<Dropped> {
        if !self.crashed {
            self.sim.send(self.b, out);
        }
        Vec::new()
    }

    fn publish(&mut self, events: Vec<Event>) {
        if self.crashed {
            return;
        }
        for e in events {
            if let Event::Restored { group, .. } = &e {
                self.installed.push(*group);
            }
            self.sim.observe(self.b, e);
        }
        // As the broker applies the controller's entries here, and may
        // close a replica in the middle of a round.
        if self.sim.rng.chance(self.sim.config.faults.reopen) {
            let open: Vec<GroupId> = self.node.groups().collect();
            if !open.is_empty() {
                let g = open[self.sim.rng.below(open.len() as u64) as usize];
                self.node.remove_group(g).expect("the group is open");
                let broker = self.sim.brokers.get_mut(&self.b).expect("broker");
                broker.closed.push(g);
            }
        }
    }

    fn start_sync(&mut self, syncs: SyncRound) {
        let at = self.sim.step + self.sim.rng.below(SYNC_STEPS_MAX + 1);
        if self.completing {
            // Started as the one out came back: it waited behind it.
            self.sim.queued_syncs += 1;
        }
        let broker = self.sim.brokers.get_mut(&self.b).expect("broker");
        assert!(broker.syncing.is_none(), "one sync round out at a time");
        broker.syncing = Some((at, syncs));
    }

    fn start_retention_sync(&mut self, syncs: SyncRound) {
        let at = self.sim.step + self.sim.rng.below(SYNC_STEPS_MAX + 1);
        let broker = self.sim.brokers.get_mut(&self.b).expect("broker");
        let after = broker.retention_syncing.back().map_or(0, |(at, _)| *at);
        broker.retention_syncing.push_back((at.max(after), syncs));
    }

    fn run_syncs(&mut self, jobs: Vec<SyncJob>) -> Vec<SyncResult> {
        let unsynced = !jobs.is_empty() || self.sim.brokers[&self.b].syncing.is_some();
        // A round that installed a snapshot is a window worth cutting power
        // in: crashes there are made likelier.
        let in_install = self.may_crash && !self.installed.is_empty() && self.sim.rng.chance(250);
        if (self.crash_at_sync && unsynced) || in_install {
            // A power cut while the round's writes sit unsynced in the
            // page cache; what the round let out before is already sent.
            // The node goes with the broker: what it makes of the missing
            // results is never seen.
            self.crashed = true;
            return Vec::new();
        }
        jobs.into_iter().map(SyncJob::run).collect()
    }

    fn release(&mut self, closed: Vec<SyncDone>, expired: Vec<Expired>) {
        drop(closed);
        let broker = self.sim.brokers.get_mut(&self.b).expect("broker");
        broker.expired.extend(expired);
    }
}
