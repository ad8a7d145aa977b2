//! The consumer: reads assigned partitions from chosen positions, one
//! fetch for all partitions led by the same broker, and starts the next
//! fetch as soon as a poll returns, so the broker works while the caller
//! does. Control batches are skipped; records come out in offset order
//! within each partition.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rill_storage::Batches;
use tokio::task::JoinHandle;

use crate::cluster::Cluster;
use crate::error::ClientError;
use crate::protocol::messages::{
    EARLIEST_TIMESTAMP, FetchPartition, FetchRequest, FetchTopic, LATEST_TIMESTAMP,
    ListOffsetsPartition, ListOffsetsRequest, ListOffsetsTopic,
};
use crate::protocol::{ErrorCode, Request, Response};

/// How long finding a starting offset retries while leaders move, ms.
pub const LIST_OFFSETS_RETRY_MS: u64 = 30_000;

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
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            max_wait_ms: 500,
            max_bytes: 8 << 20,
            partition_max_bytes: 1 << 20,
            request_timeout_ms: 30_000,
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
    /// Milliseconds since the epoch.
    pub timestamp_ms: i64,
    /// The key.
    pub key: Option<Bytes>,
    /// The value.
    pub value: Option<Bytes>,
    /// Headers.
    pub headers: Vec<(String, Option<Bytes>)>,
}

type Key = (String, u32);
type Fetched = Vec<(Key, Result<(Vec<Bytes>, u64), ClientError>)>;

/// The consumer.
#[derive(Debug)]
pub struct Consumer {
    cluster: Arc<Cluster>,
    config: ConsumerConfig,
    /// Next offset to read per assigned partition.
    positions: BTreeMap<Key, u64>,
    buffered: VecDeque<ConsumerRecord>,
    prefetch: Option<JoinHandle<Fetched>>,
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
        }
    }

    fn invalidate_prefetch(&mut self) {
        if let Some(p) = self.prefetch.take() {
            p.abort();
        }
        self.buffered.clear();
    }

    /// Assigns `partitions` of `topic` (all of them when `None`), starting
    /// at `from`. Fails for a topic that does not exist.
    pub async fn assign(
        &mut self,
        topic: &str,
        partitions: Option<Vec<u32>>,
        from: SeekTo,
    ) -> Result<(), ClientError> {
        let wait = Duration::from_millis(crate::cluster::UNKNOWN_TOPIC_WAIT_MS);
        let info = self.cluster.topic_within(topic, wait).await?;
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

    /// Moves the position of an assigned (or newly assigned) partition.
    pub async fn seek(
        &mut self,
        topic: &str,
        partition: u32,
        to: SeekTo,
    ) -> Result<(), ClientError> {
        self.invalidate_prefetch();
        let offset = match to {
            SeekTo::Offset(o) => o,
            SeekTo::Earliest => {
                self.list_offset(topic, partition, EARLIEST_TIMESTAMP)
                    .await?
            }
            SeekTo::Latest => self.list_offset(topic, partition, LATEST_TIMESTAMP).await?,
            SeekTo::Timestamp(t) => {
                let o = self.list_offset(topic, partition, t.max(0)).await?;
                if o == u64::MAX {
                    self.list_offset(topic, partition, LATEST_TIMESTAMP).await?
                } else {
                    o
                }
            }
        };
        self.positions
            .insert((topic.to_string(), partition), offset);
        Ok(())
    }

    /// The offset for a `ListOffsets` timestamp; `u64::MAX` for "none".
    /// Retriable errors (a leader moving, a broker down) are retried with
    /// fresh metadata for up to [`LIST_OFFSETS_RETRY_MS`].
    async fn list_offset(
        &self,
        topic: &str,
        partition: u32,
        timestamp_ms: i64,
    ) -> Result<u64, ClientError> {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(LIST_OFFSETS_RETRY_MS);
        let mut pause_ms = 50;
        loop {
            match self.list_offset_once(topic, partition, timestamp_ms).await {
                Err(ClientError::LeaderMoved { .. }) if tokio::time::Instant::now() < deadline => {}
                Err(e) if e.is_retriable() && tokio::time::Instant::now() < deadline => {
                    tracing::debug!(topic, partition, error = %e, "list offsets will be retried");
                    self.cluster.invalidate_partition(topic, partition);
                    tokio::time::sleep(Duration::from_millis(pause_ms)).await;
                    pause_ms = (pause_ms * 2).min(1_000);
                }
                other => return other,
            }
        }
    }

    async fn list_offset_once(
        &self,
        topic: &str,
        partition: u32,
        timestamp_ms: i64,
    ) -> Result<u64, ClientError> {
        let conn = self.cluster.leader(topic, partition).await?;
        let r = conn
            .request(
                Request::ListOffsets(ListOffsetsRequest {
                    topics: vec![ListOffsetsTopic {
                        name: topic.to_string(),
                        partitions: vec![ListOffsetsPartition {
                            partition,
                            timestamp_ms,
                        }],
                    }],
                }),
                Duration::from_millis(self.config.request_timeout_ms),
            )
            .await?;
        let Response::ListOffsets(l) = r else {
            return Err(ClientError::code(ErrorCode::Unknown));
        };
        let p = l
            .topics
            .first()
            .and_then(|t| t.partitions.first())
            .ok_or_else(|| ClientError::code(ErrorCode::Unknown))?;
        if !p.error.is_ok() {
            return Err(self.cluster.partition_error(
                topic,
                partition,
                p.error,
                p.leader_hint,
                p.leader_epoch,
            ));
        }
        Ok(u64::try_from(p.offset).unwrap_or(u64::MAX))
    }

    fn start_fetch(&mut self) {
        let cluster = Arc::clone(&self.cluster);
        let positions = self.positions.clone();
        let config = self.config.clone();
        self.prefetch = Some(tokio::spawn(async move {
            fetch(&cluster, &positions, &config).await
        }));
    }

    /// Returns the next records, waiting at most `timeout` for some to
    /// arrive (an empty list when none did).
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>, ClientError> {
        if self.positions.is_empty() {
            return Err(ClientError::Invalid("no partition assigned".into()));
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if !self.buffered.is_empty() {
                let out: Vec<_> = self.buffered.drain(..).collect();
                // Prefetch the next while the caller works on these.
                self.start_fetch();
                return Ok(out);
            }
            if self.prefetch.is_none() {
                self.start_fetch();
            }
            let handle = self.prefetch.as_mut().expect("started above");
            let fetched = match tokio::time::timeout_at(deadline, handle).await {
                Err(_) => return Ok(Vec::new()),
                Ok(joined) => {
                    self.prefetch = None;
                    joined.map_err(|_| ClientError::Invalid("fetch task failed".into()))?
                }
            };
            self.absorb(fetched)?;
            if self.buffered.is_empty() && tokio::time::Instant::now() >= deadline {
                return Ok(Vec::new());
            }
        }
    }

    /// Turns fetched batches into records past each partition's position.
    fn absorb(&mut self, fetched: Fetched) -> Result<(), ClientError> {
        for (key, result) in fetched {
            let Some(&position) = self.positions.get(&key) else {
                continue;
            };
            let chunks = match result {
                Ok((chunks, _hw)) => chunks,
                Err(ClientError::LeaderMoved { .. }) => continue,
                Err(e) if e.is_retriable() => {
                    self.cluster.invalidate_partition(&key.0, key.1);
                    continue;
                }
                Err(e) => return Err(e),
            };
            let mut next = position;
            for chunk in chunks {
                for batch in Batches::new(chunk, usize::MAX) {
                    let batch = batch.map_err(|e| {
                        ClientError::Invalid(format!("corrupt batch from the broker: {e}"))
                    })?;
                    batch.verify_crc().map_err(|e| {
                        ClientError::Invalid(format!("corrupt batch from the broker: {e}"))
                    })?;
                    if batch.header().is_control() {
                        continue;
                    }
                    for r in batch.records() {
                        let r = r.map_err(|e| {
                            ClientError::Invalid(format!("corrupt record from the broker: {e}"))
                        })?;
                        if r.offset.get() < next {
                            continue;
                        }
                        next = r.offset.get() + 1;
                        self.buffered.push_back(ConsumerRecord {
                            topic: key.0.clone(),
                            partition: key.1,
                            offset: r.offset.get(),
                            timestamp_ms: r.timestamp_ms,
                            key: r.key,
                            value: r.value,
                            headers: r
                                .headers
                                .into_iter()
                                .map(|h| (String::from_utf8_lossy(&h.key).into_owned(), h.value))
                                .collect(),
                        });
                    }
                }
            }
            self.positions.insert(key, next);
        }
        Ok(())
    }
}

/// One fetch per leader for every assigned partition.
async fn fetch(
    cluster: &Cluster,
    positions: &BTreeMap<Key, u64>,
    config: &ConsumerConfig,
) -> Fetched {
    let mut by_leader: HashMap<String, Vec<(Key, u64)>> = HashMap::new();
    let mut out: Fetched = Vec::new();
    for (key, &offset) in positions {
        match cluster.leader(&key.0, key.1).await {
            Ok(conn) => by_leader
                .entry(conn.addr().to_string())
                .or_default()
                .push((key.clone(), offset)),
            Err(e) => out.push((key.clone(), Err(e))),
        }
    }
    for (addr, parts) in by_leader {
        let mut topics: BTreeMap<&str, Vec<FetchPartition>> = BTreeMap::new();
        for ((topic, partition), offset) in &parts {
            topics
                .entry(topic.as_str())
                .or_default()
                .push(FetchPartition {
                    partition: *partition,
                    fetch_offset: *offset,
                    partition_max_bytes: config.partition_max_bytes,
                });
        }
        let request = Request::Fetch(FetchRequest {
            max_wait_ms: config.max_wait_ms,
            min_bytes: 1,
            max_bytes: config.max_bytes,
            topics: topics
                .into_iter()
                .map(|(name, partitions)| FetchTopic {
                    name: name.to_string(),
                    partitions,
                })
                .collect(),
        });
        let timeout =
            Duration::from_millis(config.request_timeout_ms + u64::from(config.max_wait_ms));
        let response = match cluster.connection(&addr).await {
            Ok(conn) => conn.request(request, timeout).await,
            Err(e) => Err(e),
        };
        match response {
            Ok(Response::Fetch(f)) => {
                for t in f.topics {
                    for p in t.partitions {
                        let key = (t.name.clone(), p.partition);
                        let r = if p.error.is_ok() {
                            Ok((p.records, p.high_watermark))
                        } else {
                            Err(cluster.partition_error(
                                &t.name,
                                p.partition,
                                p.error,
                                p.leader_hint,
                                p.leader_epoch,
                            ))
                        };
                        out.push((key, r));
                    }
                }
            }
            Ok(_) => parts
                .into_iter()
                .for_each(|(k, _)| out.push((k, Err(ClientError::code(ErrorCode::Unknown))))),
            Err(e) => parts
                .into_iter()
                .for_each(|(k, _)| out.push((k, Err(e.clone())))),
        }
    }
    out
}
