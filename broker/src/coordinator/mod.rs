//! The group coordinator: committed offsets and group membership for the
//! groups whose `__consumer_offsets` partition this broker leads.
//!
//! Committed offsets live in the log and only there: a commit is written as
//! a record (`record.rs`) through Raft, acknowledged once committed, and
//! every replica of an offsets partition tails its log into memory
//! (`shard.rs`), leader or not, so a new leader has the state at hand the
//! moment it has caught up with what its predecessor committed. The log is
//! the one source of truth: the in-memory commits are a function of it, in
//! log order, whoever wrote them.
//!
//! Membership (`group.rs`, assignments from `assignor.rs`) is changed by
//! the leader in memory and stored in the same log (member and group-epoch
//! records) before a heartbeat is answered; a new coordinator restores it
//! from there, every member's session starting afresh, so the group
//! carries on across a failover without rejoining.
//!
//! A request finds its group's shard with [`Coordinator::shard_for`]: the
//! replica here must lead the group's partition and have applied
//! everything committed in its term (`CoordinatorLoadInProgress` until
//! then). [`Coordinator::run`] ticks every [`SWEEP_MS`]: it starts tailing
//! new offsets replicas, forgets closed ones, expires silent members and
//! removes the commits of groups empty for longer than the offsets
//! retention. `lag.rs` measures the lag of the groups coordinated here for
//! `/metrics`.

pub mod assignor;
pub mod group;
pub mod lag;
pub mod record;
pub mod shard;
pub mod state;
mod tail;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rill_client::partitioner::partition_for_key;
use rill_client::protocol::ErrorCode;

use crate::handlers::find_coordinator::OFFSETS_TOPIC;
use crate::partition::Partition;
use crate::state::{Broker, Lookup};

pub use shard::Shard;
pub use state::{Group, ShardState};

/// How often the coordinator sweeps (expiry, retention, new replicas), ms.
pub const SWEEP_MS: u64 = 1_000;
/// Default session timeout: a member silent this long is removed, ms
/// (Kafka's `group.consumer.session.timeout.ms`).
pub const SESSION_TIMEOUT_MS_DEFAULT: u64 = 45_000;
/// Default heartbeat interval told to members, ms (Kafka's
/// `group.consumer.heartbeat.interval.ms`).
pub const HEARTBEAT_INTERVAL_MS_DEFAULT: u32 = 5_000;
/// Default time the commits of an empty group are kept, ms
/// (`offsets.retention.minutes` = 7 days, as Kafka).
pub const OFFSETS_RETENTION_MS_DEFAULT: u64 = 7 * 24 * 60 * 60 * 1_000;
/// Default rebalance timeout, ms (5 minutes, Kafka's default
/// `max.poll.interval.ms`).
pub const REBALANCE_TIMEOUT_MS_DEFAULT: u64 = 300_000;
/// Default most members of one group.
pub const GROUP_MAX_SIZE_DEFAULT: usize = 1_000;
/// Most groups one offsets partition's coordinator holds in memory: each
/// costs memory a client could otherwise grow without bound.
pub const GROUPS_PER_PARTITION_MAX: usize = 100_000;
/// Longest metadata text kept with a commit, bytes (Kafka's
/// `offset.metadata.max.bytes`).
pub const OFFSET_METADATA_MAX_BYTES: usize = 4_096;
/// Longest a request waits for a new coordinator to catch up, ms, before
/// answering `CoordinatorLoadInProgress`.
pub const LOAD_WAIT_MS: u64 = 5_000;
/// Longest a commit waits for Raft, ms.
pub const COMMIT_TIMEOUT_MS: u64 = 30_000;

/// How the coordinator treats groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupSettings {
    /// A member silent this long is removed, ms.
    pub session_timeout_ms: u64,
    /// How often members heartbeat, ms.
    pub heartbeat_interval_ms: u32,
    /// How long the commits of an empty group are kept, ms.
    pub offsets_retention_ms: u64,
    /// Most members of one group.
    pub group_max_size: usize,
    /// A member told to give partitions up that has not released them
    /// this long later is removed, ms (Kafka's rebalance timeout, a
    /// consumer's `max.poll.interval.ms`).
    pub rebalance_timeout_ms: u64,
    /// How often the lag of the groups coordinated here is measured for
    /// `/metrics`, ms (Redpanda's
    /// `consumer_group_lag_collection_interval_sec`).
    pub lag_refresh_ms: u64,
}

impl Default for GroupSettings {
    fn default() -> Self {
        GroupSettings {
            session_timeout_ms: SESSION_TIMEOUT_MS_DEFAULT,
            heartbeat_interval_ms: HEARTBEAT_INTERVAL_MS_DEFAULT,
            offsets_retention_ms: OFFSETS_RETENTION_MS_DEFAULT,
            group_max_size: GROUP_MAX_SIZE_DEFAULT,
            rebalance_timeout_ms: REBALANCE_TIMEOUT_MS_DEFAULT,
            lag_refresh_ms: lag::LAG_REFRESH_MS_DEFAULT,
        }
    }
}

/// The coordinator of this broker's offsets partitions.
#[derive(Debug)]
pub struct Coordinator {
    /// How groups are treated.
    pub settings: GroupSettings,
    /// The shard of each offsets partition replica here, by partition.
    /// Guards the map only: a shard is looked up or added under it, never
    /// read or written.
    shards: Mutex<HashMap<u32, Arc<Shard>>>,
    /// The monotonic clock sessions are measured on.
    started: Instant,
    /// The groups' lag as last measured, for `/metrics`.
    pub lag: Arc<lag::GroupLag>,
}

impl Coordinator {
    /// A coordinator holding no shard yet.
    pub fn new(settings: GroupSettings) -> Coordinator {
        Coordinator {
            settings,
            shards: Mutex::default(),
            started: Instant::now(),
            lag: Arc::default(),
        }
    }

    /// Milliseconds on the session clock.
    pub fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// The shard of `partition` (a replica of an offsets partition here),
    /// started (and tailing its log) if it was not.
    fn shard(&self, partition: &Arc<Partition>) -> Arc<Shard> {
        let mut shards = self.shards.lock().expect("coordinator shards poisoned");
        match shards.get(&partition.index) {
            Some(s) if Arc::ptr_eq(s.partition(), partition) => Arc::clone(s),
            _ => {
                let s = Shard::start(Arc::clone(partition), self.started);
                shards.insert(partition.index, Arc::clone(&s));
                s
            }
        }
    }

    /// The shard coordinating `group`, once this broker leads its offsets
    /// partition and has applied everything committed there; else the
    /// code to answer with (`NotCoordinator`, `CoordinatorNotAvailable`,
    /// `CoordinatorLoadInProgress`, `InvalidGroupId`).
    pub async fn shard_for(&self, broker: &Broker, group: &str) -> Result<Arc<Shard>, ErrorCode> {
        if group.is_empty() || group.len() > crate::handlers::find_coordinator::GROUP_ID_MAX_BYTES {
            return Err(ErrorCode::InvalidGroupId);
        }
        let image = broker.image();
        let Some(topic) = image.topics.get(OFFSETS_TOPIC) else {
            return Err(ErrorCode::CoordinatorNotAvailable);
        };
        let index = partition_for_key(group.as_bytes(), topic.partitions());
        let partition = match broker.lookup(OFFSETS_TOPIC, index) {
            Lookup::Here(p) => p,
            Lookup::Stopped => return Err(ErrorCode::CoordinatorNotAvailable),
            _ => return Err(ErrorCode::NotCoordinator),
        };
        if partition.not_leader().is_some() {
            return Err(ErrorCode::NotCoordinator);
        }
        let shard = self.shard(&partition);
        let deadline = tokio::time::Instant::now() + Duration::from_millis(LOAD_WAIT_MS);
        match tokio::time::timeout_at(deadline, shard.loaded()).await {
            Ok(true) => Ok(shard),
            Ok(false) => Err(ErrorCode::NotCoordinator),
            Err(_) => {
                tracing::debug!(
                    partition = index,
                    leading = partition.not_leader().is_none(),
                    high_watermark_current = partition.is_high_watermark_current(),
                    high_watermark = partition.high_watermark(),
                    applied = shard.applied(),
                    "coordinator still loading"
                );
                Err(ErrorCode::CoordinatorLoadInProgress)
            }
        }
    }

    /// The shards here that lead and have loaded (for listing groups).
    pub fn leading_shards(&self) -> Vec<Arc<Shard>> {
        let shards: Vec<Arc<Shard>> = self
            .shards
            .lock()
            .expect("coordinator shards poisoned")
            .values()
            .cloned()
            .collect();
        shards.into_iter().filter(|s| s.is_loaded()).collect()
    }

    /// The sweep, every [`SWEEP_MS`], until the broker stops: tails every
    /// offsets replica here, forgets closed ones, expires members and
    /// offsets.
    pub async fn run(broker: Arc<Broker>) {
        let mut tick = tokio::time::interval(Duration::from_millis(SWEEP_MS));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            broker.groups.sweep(&broker).await;
        }
    }

    async fn sweep(&self, broker: &Broker) {
        let image = broker.image();
        let count = image
            .topics
            .get(OFFSETS_TOPIC)
            .map_or(0, |t| t.partitions());
        let mut live = Vec::new();
        for index in 0..count {
            if let Lookup::Here(p) = broker.lookup(OFFSETS_TOPIC, index) {
                live.push(self.shard(&p));
            }
        }
        self.shards
            .lock()
            .expect("coordinator shards poisoned")
            .retain(|_, s| live.iter().any(|l| Arc::ptr_eq(l, s)));
        let partitions: BTreeMap<String, u32> = image
            .topics
            .iter()
            .map(|(name, t)| (name.clone(), t.partitions()))
            .collect();
        let now_ms = self.now_ms();
        let wall_ms = shard::wall_clock_ms();
        for shard in live.into_iter().filter(|s| s.is_loaded()) {
            let expired = shard
                .sweep(broker, now_ms, wall_ms, &self.settings, &partitions)
                .await;
            let cutoff_ms = wall_ms.saturating_sub(
                i64::try_from(self.settings.offsets_retention_ms).unwrap_or(i64::MAX),
            );
            for group in expired {
                if let Err(e) = shard.delete_commits(broker, &group, Some(cutoff_ms)).await {
                    tracing::debug!(group, error = ?e, "expiring offsets failed; retried next sweep");
                }
            }
        }
    }
}
