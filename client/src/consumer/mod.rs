//! The consumer: reads assigned partitions from chosen positions, one
//! fetch for all partitions led by the same broker, and starts the next
//! fetch as soon as a poll returns, so the broker works while the caller
//! does. Control batches are skipped; records come out in offset order
//! within each partition.
//!
//! A consumer reads either partitions it assigns itself ([`Consumer::assign`])
//! or, as a member of a consumer group ([`Consumer::subscribe`]), the ones
//! the group's coordinator assigns it, from the group's committed offsets.
//!
//! Layout: this file holds the API common to both and the poll loop;
//! `fetch` the fetch requests and the decoding of what they bring back;
//! `offsets` finding a starting offset (`ListOffsets`); `group` reading as
//! a group member (subscribing, applying assignment changes, committing,
//! leaving); `membership` the member's I/O-free state machine and
//! `heartbeat` the background task that runs it.
//!
//! Invariants: a partition's position is the offset after the last record
//! `poll` returned from it (or where it was sought to), because a poll
//! returns every record it has decoded; a prefetch's answer for a partition
//! is taken only while the partition's position is still the offset it was
//! fetched from, so a seek, or a partition revoked and assigned again,
//! cannot be overtaken by a fetch started before it.

mod fetch;
mod group;
mod heartbeat;
mod membership;
mod offsets;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::task::JoinHandle;

use crate::cluster::Cluster;
use crate::error::ClientError;
use fetch::{Fetched, decode_records};
use group::Group;

pub use group::{
    AUTO_COMMIT_INTERVAL_MS_DEFAULT, CLOSE_TIMEOUT_MS_DEFAULT, CommitFuture, CommitOffset,
    GroupConfig, OffsetReset, RebalanceListener,
};
pub use offsets::LIST_OFFSETS_RETRY_MS;

/// Where to start reading a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeekTo {
    /// The log start offset.
    Earliest,
    /// The high watermark: only records produced from now on.
    Latest,
    /// An exact offset.
    Offset(u64),
    /// The first record at or after a time, ms since the epoch (the end
    /// when there is none).
    Timestamp(i64),
    /// This many offsets before the high watermark (kcat's `-o -N`), or
    /// the log start offset when the log holds fewer.
    BeforeEnd(u64),
}

/// Consumer settings.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// How long a fetch may wait at the broker for data, ms. Default 500.
    pub max_wait_ms: u32,
    /// Most bytes per fetch response. Default 8 MiB.
    pub max_bytes: u32,
    /// Most bytes per partition per fetch. Default 1 MiB.
    pub partition_max_bytes: u32,
    /// How long a request may take, ms. Default 30,000.
    pub request_timeout_ms: u64,
    /// How long finding where to start in a partition waits for it to
    /// have a leader, ms. Default 30,000.
    pub leader_wait_ms: u64,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            max_wait_ms: 500,
            max_bytes: 8 << 20,
            partition_max_bytes: 1 << 20,
            request_timeout_ms: 30_000,
            leader_wait_ms: offsets::LIST_OFFSETS_RETRY_MS,
        }
    }
}

/// A record read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRecord {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// The offset.
    pub offset: u64,
    /// The leader epoch (Raft term) the record was written in: what a
    /// commit of the offset after it carries.
    pub leader_epoch: u64,
    /// Milliseconds since the epoch.
    pub timestamp_ms: i64,
    /// The key.
    pub key: Option<Bytes>,
    /// The value.
    pub value: Option<Bytes>,
    /// Headers.
    pub headers: Vec<(String, Option<Bytes>)>,
}

/// A topic and partition.
type Key = (String, u32);

/// The consumer.
#[derive(Debug)]
pub struct Consumer {
    cluster: Arc<Cluster>,
    config: ConsumerConfig,
    /// Next offset to read per assigned partition.
    positions: BTreeMap<Key, u64>,
    buffered: VecDeque<ConsumerRecord>,
    prefetch: Option<JoinHandle<Fetched>>,
    /// The group this consumer reads as a member of, if any.
    group: Option<Group>,
}

impl Consumer {
    /// A consumer reading through `cluster`.
    pub fn new(cluster: Arc<Cluster>, config: ConsumerConfig) -> Consumer {
        Consumer {
            cluster,
            config,
            positions: BTreeMap::new(),
            buffered: VecDeque::new(),
            prefetch: None,
            group: None,
        }
    }

    fn invalidate_prefetch(&mut self) {
        if let Some(p) = self.prefetch.take() {
            p.abort();
        }
        self.buffered.clear();
    }

    /// Assigns `partitions` of `topic` (all of them when `None`), starting
    /// at `from`. Fails for a topic that does not exist, and in a consumer
    /// reading as a group member.
    pub async fn assign(
        &mut self,
        topic: &str,
        partitions: Option<Vec<u32>>,
        from: SeekTo,
    ) -> Result<(), ClientError> {
        if let Some(group) = self.group_id() {
            return Err(ClientError::Invalid(format!(
                "this consumer reads the partitions group {group:?} assigns it; it cannot assign itself others"
            )));
        }
        // No longer than the caller would wait for a leader either.
        let wait_ms = crate::cluster::UNKNOWN_TOPIC_WAIT_MS.min(self.config.leader_wait_ms);
        let info = self
            .cluster
            .topic_within(topic, Duration::from_millis(wait_ms))
            .await?;
        let all: Vec<u32> = info.partitions.iter().map(|p| p.partition).collect();
        let chosen = partitions.unwrap_or_else(|| all.clone());
        for p in &chosen {
            if !all.contains(p) {
                return Err(ClientError::Invalid(format!(
                    "topic {topic:?} has no partition {p}"
                )));
            }
        }
        for p in chosen {
            self.seek(topic, p, from).await?;
        }
        Ok(())
    }

    /// The partitions assigned, with the next offset each will read.
    pub fn positions(&self) -> &BTreeMap<(String, u32), u64> {
        &self.positions
    }

    /// Moves the position of an assigned (or, outside a group, newly
    /// assigned) partition. In a group, a commit after it commits the new
    /// position.
    pub async fn seek(
        &mut self,
        topic: &str,
        partition: u32,
        to: SeekTo,
    ) -> Result<(), ClientError> {
        let key = (topic.to_string(), partition);
        if let Some(group) = self.group_id()
            && !self.positions.contains_key(&key)
        {
            return Err(ClientError::Invalid(format!(
                "group {group:?} has not assigned topic {topic:?} partition {partition} to this consumer (or it is still starting)"
            )));
        }
        self.invalidate_prefetch();
        let offset = offsets::resolve(&self.cluster, &self.config, topic, partition, to).await?;
        self.sought(&key, offset);
        self.positions.insert(key, offset);
        Ok(())
    }

    fn start_fetch(&mut self) {
        let cluster = Arc::clone(&self.cluster);
        let positions = self.positions.clone();
        let config = self.config.clone();
        self.prefetch = Some(tokio::spawn(async move {
            fetch::fetch(&cluster, &positions, &config).await
        }));
    }

    /// Returns the next records, waiting at most `timeout` for some to
    /// arrive (an empty list when none did).
    ///
    /// In a group, it first applies the changes to this consumer's
    /// assignment (and applies those that arrive while it waits), and
    /// commits what earlier polls returned when auto-commit is due; while
    /// the group has assigned it nothing it waits for an assignment.
    /// Applying changes waits for the coordinator (a revoked partition's
    /// commit, a new one's committed offset), so a poll during a rebalance
    /// may take longer than `timeout`.
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>, ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        if self.group.is_some() {
            self.reconcile().await?;
            self.auto_commit();
        } else if self.positions.is_empty() {
            return Err(ClientError::Invalid("no partition assigned".into()));
        }
        loop {
            if !self.buffered.is_empty() {
                let out: Vec<_> = self.buffered.drain(..).collect();
                self.returned(&out);
                // Prefetch the next while the caller works on these.
                self.start_fetch();
                return Ok(out);
            }
            // Waiting on a copy leaves the news unseen for `reconcile`.
            let news = self.group.as_ref().map(|g| g.news.clone());
            if self.positions.is_empty() {
                // A group member with nothing to read yet.
                tokio::select! {
                    _ = news_of(news) => {
                        self.reconcile().await?;
                        continue;
                    }
                    _ = tokio::time::sleep_until(deadline) => return Ok(Vec::new()),
                }
            }
            if self.prefetch.is_none() {
                self.start_fetch();
            }
            let handle = self.prefetch.as_mut().expect("started above");
            let joined = tokio::select! {
                joined = handle => joined,
                _ = news_of(news) => {
                    self.reconcile().await?;
                    continue;
                }
                _ = tokio::time::sleep_until(deadline) => return Ok(Vec::new()),
            };
            self.prefetch = None;
            let fetched = joined.map_err(|_| ClientError::Invalid("fetch task failed".into()))?;
            self.absorb(fetched)?;
            if self.buffered.is_empty() && tokio::time::Instant::now() >= deadline {
                return Ok(Vec::new());
            }
        }
    }

    /// Turns fetched batches into records past each partition's position.
    fn absorb(&mut self, fetched: Fetched) -> Result<(), ClientError> {
        let mut records = Vec::new();
        for (key, from, result) in fetched {
            match self.positions.get(&key) {
                Some(&position) if position == from => {}
                // Sought elsewhere, or no longer read, since the fetch began.
                _ => continue,
            }
            let chunks = match result {
                Ok((chunks, _hw)) => chunks,
                Err(ClientError::LeaderMoved { .. }) => continue,
                Err(e) if e.is_retriable() => {
                    self.cluster.invalidate_partition(&key.0, key.1);
                    continue;
                }
                Err(e) => return Err(e),
            };
            let next = decode_records(&key, from, chunks, &mut records)?;
            self.buffered.extend(records.drain(..));
            self.positions.insert(key, next);
        }
        Ok(())
    }
}

/// Resolves when the group's membership task has news (or has ended);
/// never without a group.
async fn news_of(news: Option<tokio::sync::watch::Receiver<u64>>) {
    match news {
        Some(mut news) => {
            let _ = news.changed().await;
        }
        None => std::future::pending().await,
    }
}
