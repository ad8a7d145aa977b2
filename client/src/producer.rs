//! The producer: batches records per partition by size and linger time,
//! sends them to partition leaders, retries what may succeed later, and
//! resolves one future per record with its partition and offset.
//!
//! Ordering: at most one produce request is in flight per partition, so a
//! retried batch can never overtake a later one and records keep the order
//! they were sent in within each partition. A retry after a lost response
//! may store a batch twice (at-least-once) until the idempotent producer
//! exists. Keyed records go where Kafka's default partitioner would put them
//! (murmur2); keyless records stick to one partition per topic and move on
//! each time a batch for it is sealed.
//!
//! Bounds: at most [`ProducerConfig::queued_records_max`] records wait in
//! the producer; `send` waits for room beyond that.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use rill_storage::{BatchBuilder, MAX_BATCH_BYTES_DEFAULT, NewRecord};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::Instant;

use crate::cluster::Cluster;
use crate::error::ClientError;
use crate::partitioner::partition_for_key;
use crate::protocol::messages::{ProducePartition, ProduceRequest, ProduceTopic};
use crate::protocol::{ErrorCode, Request, Response};

/// How many brokers must have a record before it is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// None: fire and forget.
    None,
    /// The leader appended it.
    Leader,
    /// Committed and durable in the topic's durability mode.
    All,
}

impl Acks {
    fn wire(self) -> i8 {
        match self {
            Acks::None => 0,
            Acks::Leader => 1,
            Acks::All => -1,
        }
    }
}

/// Producer settings.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// Acknowledgement level. Default [`Acks::All`].
    pub acks: Acks,
    /// How long a batch waits for more records before it is sent, ms.
    /// Default 5.
    pub linger_ms: u64,
    /// A batch is sent once it holds this many bytes. Default 256 KiB.
    pub batch_size_bytes: usize,
    /// A record not acknowledged within this long has failed, ms. Default
    /// 30,000.
    pub delivery_timeout_ms: u64,
    /// How long one produce request may take, ms. Default 30,000.
    pub request_timeout_ms: u64,
    /// Wait between retries of a partition's batch, ms. Default 100.
    pub retry_backoff_ms: u64,
    /// Records accepted but not yet acknowledged, at most. Default 100,000.
    pub queued_records_max: usize,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            acks: Acks::All,
            linger_ms: 5,
            batch_size_bytes: 256 * 1024,
            delivery_timeout_ms: 30_000,
            request_timeout_ms: 30_000,
            retry_backoff_ms: 100,
            queued_records_max: 100_000,
        }
    }
}

/// A record to send.
#[derive(Debug, Clone, Default)]
pub struct ProducerRecord {
    /// The topic.
    pub topic: String,
    /// The partition; chosen by the partitioner when `None`.
    pub partition: Option<u32>,
    /// The key.
    pub key: Option<Bytes>,
    /// The value; `None` is a tombstone.
    pub value: Option<Bytes>,
    /// Milliseconds since the epoch; now when `None`.
    pub timestamp_ms: Option<i64>,
    /// Headers.
    pub headers: Vec<(String, Option<Bytes>)>,
}

/// Where an acknowledged record was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordMetadata {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// The offset; `None` with `acks=0`, where the broker does not answer.
    pub offset: Option<u64>,
}

type Outcome = Result<RecordMetadata, ClientError>;

/// Resolves when the record is acknowledged or has failed.
#[derive(Debug)]
pub struct DeliveryFuture(oneshot::Receiver<Outcome>);

impl Future for DeliveryFuture {
    type Output = Outcome;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        Pin::new(&mut self.0).poll(cx).map(|r| {
            r.unwrap_or_else(|_| {
                Err(ClientError::Closed {
                    addr: "producer".into(),
                })
            })
        })
    }
}

enum Command {
    Send(
        ProducerRecord,
        oneshot::Sender<Outcome>,
        tokio::sync::OwnedSemaphorePermit,
    ),
    Flush(oneshot::Sender<()>),
}

/// The producer. Cheap to share behind an `Arc`; `send` may be called from
/// many tasks.
#[derive(Debug)]
pub struct Producer {
    commands: mpsc::Sender<Command>,
    room: Arc<Semaphore>,
    task: tokio::task::JoinHandle<()>,
}

impl Producer {
    /// A producer sending through `cluster`.
    pub fn new(cluster: Arc<Cluster>, config: ProducerConfig) -> Producer {
        let (commands, rx) = mpsc::channel(1024);
        let room = Arc::new(Semaphore::new(config.queued_records_max.max(1)));
        let task = tokio::spawn(run(cluster, config, rx));
        Producer {
            commands,
            room,
            task,
        }
    }

    /// Queues `record`; the returned future resolves once it is
    /// acknowledged (or has failed). Waits while the producer is full.
    pub async fn send(&self, record: ProducerRecord) -> Result<DeliveryFuture, ClientError> {
        let closed = || ClientError::Closed {
            addr: "producer".into(),
        };
        let permit = Arc::clone(&self.room)
            .acquire_owned()
            .await
            .map_err(|_| closed())?;
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Send(record, tx, permit))
            .await
            .map_err(|_| closed())?;
        Ok(DeliveryFuture(rx))
    }

    /// Sends every queued record now and waits until all of them are
    /// acknowledged or failed.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Flushes, then stops the producer.
    pub async fn close(self) {
        self.flush().await;
        drop(self.commands);
        let _ = self.task.await;
    }
}

struct Waiter {
    reply: oneshot::Sender<Outcome>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

struct OpenBatch {
    builder: BatchBuilder,
    waiters: Vec<Waiter>,
    opened_at: Instant,
    deadline: Instant,
}

struct SealedBatch {
    bytes: Bytes,
    waiters: Vec<Waiter>,
    deadline: Instant,
}

#[derive(Default)]
struct PartitionQueue {
    open: Option<OpenBatch>,
    ready: VecDeque<SealedBatch>,
    in_flight: bool,
    retry_at: Option<Instant>,
}

type Key = (String, u32);

struct Completion {
    key: Key,
    batch: SealedBatch,
    result: Result<Option<u64>, ClientError>,
}

struct State {
    cluster: Arc<Cluster>,
    config: ProducerConfig,
    queues: HashMap<Key, PartitionQueue>,
    sticky: HashMap<String, u32>,
    flushes: Vec<oneshot::Sender<()>>,
    completions: mpsc::UnboundedSender<Completion>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn fail(waiters: Vec<Waiter>, error: &ClientError) {
    for w in waiters {
        let _ = w.reply.send(Err(error.clone()));
    }
}

async fn run(cluster: Arc<Cluster>, config: ProducerConfig, mut commands: mpsc::Receiver<Command>) {
    // Completions come from request tasks this loop spawned: at most one per
    // partition at a time, so this channel is bounded by the partition count.
    let (completions, mut done) = mpsc::unbounded_channel();
    let mut s = State {
        cluster,
        config,
        queues: HashMap::new(),
        sticky: HashMap::new(),
        flushes: Vec::new(),
        completions,
    };
    let mut closing = false;
    loop {
        let wake = s.next_wake();
        tokio::select! {
            cmd = commands.recv(), if !closing => match cmd {
                Some(Command::Send(record, reply, permit)) => s.enqueue(record, Waiter { reply, _permit: permit }).await,
                Some(Command::Flush(tx)) => {
                    s.seal_all();
                    s.flushes.push(tx);
                }
                None => {
                    closing = true;
                    s.seal_all();
                }
            },
            c = done.recv() => if let Some(c) = c { s.complete(c) },
            _ = tokio::time::sleep_until(wake.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600))), if wake.is_some() => {
                s.seal_expired();
            }
        }
        s.dispatch();
        if s.idle() {
            for f in s.flushes.drain(..) {
                let _ = f.send(());
            }
            if closing {
                return;
            }
        }
    }
}

impl State {
    fn idle(&self) -> bool {
        self.queues
            .values()
            .all(|q| q.open.is_none() && q.ready.is_empty() && !q.in_flight)
    }

    fn next_wake(&self) -> Option<Instant> {
        let linger = Duration::from_millis(self.config.linger_ms);
        self.queues
            .values()
            .flat_map(|q| {
                let open = q.open.as_ref().map(|o| o.opened_at + linger);
                let retry = q.retry_at.filter(|_| !q.in_flight && !q.ready.is_empty());
                open.into_iter().chain(retry)
            })
            .min()
    }

    async fn enqueue(&mut self, record: ProducerRecord, waiter: Waiter) {
        let partitions = match self.cluster.topic(&record.topic).await {
            Ok(t) => t.partitions.len() as u32,
            Err(e) => return fail(vec![waiter], &e),
        };
        let partition = match (record.partition, &record.key) {
            (Some(p), _) if p < partitions => p,
            (Some(p), _) => {
                let e =
                    ClientError::Invalid(format!("topic {:?} has no partition {p}", record.topic));
                return fail(vec![waiter], &e);
            }
            (None, Some(key)) => partition_for_key(key, partitions),
            (None, None) => {
                *self.sticky.entry(record.topic.clone()).or_insert(0) % partitions.max(1)
            }
        };
        let headers: Vec<(&str, Option<&[u8]>)> = record
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_deref()))
            .collect();
        let new = NewRecord {
            key: record.key.as_deref(),
            value: record.value.as_deref(),
            headers: &headers,
            timestamp_ms: record.timestamp_ms.unwrap_or_else(now_ms),
        };
        let key = (record.topic.clone(), partition);
        let delivery = Duration::from_millis(self.config.delivery_timeout_ms);
        let batch_size = self.config.batch_size_bytes;
        for _ in 0..2 {
            let queue = self.queues.entry(key.clone()).or_default();
            let open = queue.open.get_or_insert_with(|| OpenBatch {
                builder: BatchBuilder::with_capacity(
                    MAX_BATCH_BYTES_DEFAULT,
                    batch_size.min(MAX_BATCH_BYTES_DEFAULT),
                ),
                waiters: Vec::new(),
                opened_at: Instant::now(),
                deadline: Instant::now() + delivery,
            });
            match open.builder.push(&new) {
                Ok(true) => {
                    open.waiters.push(waiter);
                    if open.builder.batch_bytes() >= batch_size {
                        self.seal(&key);
                    }
                    return;
                }
                // Full: seal it and try once more in a fresh batch.
                Ok(false) => self.seal(&key),
                Err(e) => {
                    let e = ClientError::Broker {
                        code: ErrorCode::RecordTooLarge,
                        message: e.to_string(),
                    };
                    return fail(vec![waiter], &e);
                }
            }
        }
    }

    fn seal(&mut self, key: &Key) {
        let Some(queue) = self.queues.get_mut(key) else {
            return;
        };
        let Some(open) = queue.open.take() else {
            return;
        };
        if open.waiters.is_empty() {
            return;
        }
        let Ok(bytes) = open.builder.finish() else {
            return;
        };
        queue.ready.push_back(SealedBatch {
            bytes: Bytes::from(bytes),
            waiters: open.waiters,
            deadline: open.deadline,
        });
        // Keyless records move on to the next partition.
        if let Some(s) = self.sticky.get_mut(&key.0)
            && *s == key.1
        {
            *s = s.wrapping_add(1);
        }
    }

    fn seal_all(&mut self) {
        let keys: Vec<Key> = self.queues.keys().cloned().collect();
        for k in keys {
            self.seal(&k);
        }
    }

    fn seal_expired(&mut self) {
        let linger = Duration::from_millis(self.config.linger_ms);
        let now = Instant::now();
        let keys: Vec<Key> = self
            .queues
            .iter()
            .filter(|(_, q)| q.open.as_ref().is_some_and(|o| o.opened_at + linger <= now))
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            self.seal(&k);
        }
    }

    fn dispatch(&mut self) {
        let now = Instant::now();
        for (key, queue) in self.queues.iter_mut() {
            if queue.in_flight || queue.retry_at.is_some_and(|t| t > now) {
                continue;
            }
            queue.retry_at = None;
            while let Some(batch) = queue.ready.front() {
                if batch.deadline > now {
                    break;
                }
                let batch = queue.ready.pop_front().expect("front exists");
                fail(
                    batch.waiters,
                    &ClientError::Timeout {
                        ms: self.config.delivery_timeout_ms,
                    },
                );
            }
            let Some(batch) = queue.ready.pop_front() else {
                continue;
            };
            queue.in_flight = true;
            let (cluster, key, done) = (
                Arc::clone(&self.cluster),
                key.clone(),
                self.completions.clone(),
            );
            let acks = self.config.acks;
            let timeout = Duration::from_millis(self.config.request_timeout_ms);
            tokio::spawn(async move {
                let result = send_batch(&cluster, &key, &batch.bytes, acks, timeout).await;
                let _ = done.send(Completion { key, batch, result });
            });
        }
    }

    fn complete(&mut self, c: Completion) {
        let Some(queue) = self.queues.get_mut(&c.key) else {
            return;
        };
        queue.in_flight = false;
        match c.result {
            Ok(base) => {
                for (i, w) in c.batch.waiters.into_iter().enumerate() {
                    let _ = w.reply.send(Ok(RecordMetadata {
                        topic: c.key.0.clone(),
                        partition: c.key.1,
                        offset: base.map(|b| b + i as u64),
                    }));
                }
            }
            Err(e) if e.is_retriable() && Instant::now() < c.batch.deadline => {
                tracing::debug!(topic = %c.key.0, partition = c.key.1, error = %e, "retrying a batch");
                if matches!(
                    e,
                    ClientError::Broker {
                        code: ErrorCode::NotLeader | ErrorCode::UnknownTopicOrPartition,
                        ..
                    }
                ) {
                    self.cluster.invalidate(&c.key.0);
                }
                queue.ready.push_front(c.batch);
                queue.retry_at =
                    Some(Instant::now() + Duration::from_millis(self.config.retry_backoff_ms));
            }
            Err(e) => fail(c.batch.waiters, &e),
        }
    }
}

async fn send_batch(
    cluster: &Cluster,
    key: &Key,
    records: &Bytes,
    acks: Acks,
    timeout: Duration,
) -> Result<Option<u64>, ClientError> {
    let conn = cluster.leader(&key.0, key.1).await?;
    let request = Request::Produce(ProduceRequest {
        acks: acks.wire(),
        timeout_ms: timeout.as_millis() as u32,
        topics: vec![ProduceTopic {
            name: key.0.clone(),
            partitions: vec![ProducePartition {
                partition: key.1,
                records: records.clone(),
            }],
        }],
    });
    if acks == Acks::None {
        conn.send_only(request).await?;
        return Ok(None);
    }
    let Response::Produce(r) = conn
        .request(request, timeout + Duration::from_secs(5))
        .await?
    else {
        return Err(ClientError::code(ErrorCode::Unknown));
    };
    let p = r
        .topics
        .first()
        .and_then(|t| t.partitions.first())
        .ok_or_else(|| ClientError::code(ErrorCode::Unknown))?;
    if p.error.is_ok() {
        Ok(Some(p.base_offset))
    } else {
        Err(ClientError::code(p.error))
    }
}
