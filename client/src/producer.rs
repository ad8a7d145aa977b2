//! The producer: batches records per partition by size and linger time,
//! sends them to partition leaders, retries what may succeed later, and
//! resolves one future per record with its partition and offset.
//!
//! Shape (as in Kafka's client): `send` appends the record straight into the
//! open batch of its partition in a shared accumulator, in the caller's task;
//! a sender task takes sealed batches, groups every partition that is ready
//! by leader into one produce request per broker, and completes them. A
//! record costs one copy into its batch and no allocation of its own: its
//! [`DeliveryFuture`] shares the batch's outcome.
//!
//! Ordering: at most one produce request is in flight per partition, so a
//! retried batch can never overtake a later one and records keep the order
//! they were sent in within each partition. A retry after a lost response
//! may store a batch twice (at-least-once) until the idempotent producer
//! exists. Keyed records go where Kafka's default partitioner would put them
//! (murmur2); keyless records stick to one partition per topic and move on
//! each time a batch for it is sealed.
//!
//! Bounds: at most [`ProducerConfig::buffer_bytes_max`] bytes of records
//! wait in the producer (accepted, not yet acknowledged); `send` waits for
//! room beyond that. A request carries at most
//! [`ProducerConfig::request_bytes_max`] bytes of batches (but always at
//! least one batch).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use rill_storage::{BatchBuilder, MAX_BATCH_BYTES_DEFAULT, NewRecord};
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio::time::Instant;

use crate::cluster::Cluster;
use crate::connection::Connection;
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

impl std::str::FromStr for Acks {
    type Err = String;

    /// `0`, `1` or `all` (also `-1`), as Kafka's `acks` setting reads.
    fn from_str(s: &str) -> Result<Acks, String> {
        match s {
            "0" => Ok(Acks::None),
            "1" => Ok(Acks::Leader),
            "all" | "-1" => Ok(Acks::All),
            other => Err(format!("acks must be 0, 1 or all, not {other:?}")),
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
    /// Bytes of records accepted but not yet acknowledged, at most.
    /// Default 64 MiB.
    pub buffer_bytes_max: usize,
    /// Bytes of batches in one produce request, at most (one batch is
    /// always sent whole). Default 8 MiB.
    pub request_bytes_max: usize,
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
            buffer_bytes_max: 64 << 20,
            request_bytes_max: 8 << 20,
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
    pub topic: Arc<str>,
    /// The partition.
    pub partition: u32,
    /// The offset; `None` with `acks=0`, where the broker does not answer.
    pub offset: Option<u64>,
}

type Outcome = Result<RecordMetadata, ClientError>;

/// A batch's base offset (`None` with `acks=0`) or why it failed.
type BatchResult = Result<Option<u64>, ClientError>;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// What became of one batch, shared by the futures of all its records.
#[derive(Debug)]
struct BatchOutcome {
    topic: Arc<str>,
    partition: u32,
    /// Set once, when the batch is acknowledged or has failed.
    result: OnceLock<BatchResult>,
    /// Wakers of the futures waiting for `result`. Guards a push per
    /// waiting future and the one drain after `result` is set; nothing else
    /// runs under it.
    wakers: Mutex<Vec<Waker>>,
}

impl BatchOutcome {
    fn new(topic: Arc<str>, partition: u32) -> Arc<BatchOutcome> {
        Arc::new(BatchOutcome {
            topic,
            partition,
            result: OnceLock::new(),
            wakers: Mutex::new(Vec::new()),
        })
    }

    fn set(&self, result: BatchResult) {
        // The result is stored before the wakers are taken, and a poller
        // checks it again under the wakers' lock: no wake-up is lost.
        if self.result.set(result).is_ok() {
            let wakers = std::mem::take(&mut *lock(&self.wakers));
            for w in wakers {
                w.wake();
            }
        }
    }
}

/// Resolves when the record is acknowledged or has failed.
#[derive(Debug)]
pub struct DeliveryFuture {
    batch: Arc<BatchOutcome>,
    /// The record's position in its batch: its offset is the batch's base
    /// offset plus this.
    index: u32,
    /// Where this future's waker sits in `batch.wakers`, once registered.
    slot: Option<usize>,
}

impl DeliveryFuture {
    fn failed(topic: &str, partition: u32, error: ClientError) -> DeliveryFuture {
        let batch = BatchOutcome::new(topic.into(), partition);
        batch.set(Err(error));
        DeliveryFuture {
            batch,
            index: 0,
            slot: None,
        }
    }

    fn outcome(batch: &BatchOutcome, index: u32, result: &BatchResult) -> Outcome {
        match result {
            Ok(base) => Ok(RecordMetadata {
                topic: Arc::clone(&batch.topic),
                partition: batch.partition,
                offset: base.map(|b| b + u64::from(index)),
            }),
            Err(e) => Err(e.clone()),
        }
    }
}

impl Future for DeliveryFuture {
    type Output = Outcome;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        let DeliveryFuture { batch, index, slot } = &mut *self;
        if let Some(r) = batch.result.get() {
            return Poll::Ready(DeliveryFuture::outcome(batch, *index, r));
        }
        let mut wakers = lock(&batch.wakers);
        if let Some(r) = batch.result.get() {
            drop(wakers);
            return Poll::Ready(DeliveryFuture::outcome(batch, *index, r));
        }
        match *slot {
            Some(i) if i < wakers.len() => {
                if !wakers[i].will_wake(cx.waker()) {
                    wakers[i] = cx.waker().clone();
                }
            }
            _ => {
                *slot = Some(wakers.len());
                wakers.push(cx.waker().clone());
            }
        }
        Poll::Pending
    }
}

/// The producer. Cheap to share behind an `Arc`; `send` may be called from
/// many tasks.
pub struct Producer {
    shared: Arc<Shared>,
    sender: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

struct Shared {
    cluster: Arc<Cluster>,
    config: ProducerConfig,
    /// The open and sealed batches of every partition. `send` holds it to
    /// copy one record into a batch, the sender task to take batches out
    /// and put failed ones back; nothing awaits or does I/O under it.
    accumulator: Mutex<Accumulator>,
    /// Wakes the sender task: a batch was opened (its linger clock runs) or
    /// sealed, a flush sealed everything, or the producer is closing.
    wake: Notify,
    /// Room for record bytes: `send` takes a record's size, the end of its
    /// batch gives it back.
    room: Semaphore,
}

#[derive(Default)]
struct Accumulator {
    topics: HashMap<String, TopicQueues>,
    closing: bool,
}

struct TopicQueues {
    name: Arc<str>,
    partitions: Vec<PartitionQueue>,
    /// Where keyless records go until that partition's batch is sealed.
    sticky: u32,
}

#[derive(Default)]
struct PartitionQueue {
    open: Option<OpenBatch>,
    ready: VecDeque<SealedBatch>,
    /// The batches of this partition's request in flight (at most one
    /// request per partition), for `flush` to wait on.
    in_flight: Option<Vec<Arc<BatchOutcome>>>,
    retry_at: Option<Instant>,
}

struct OpenBatch {
    builder: BatchBuilder,
    outcome: Arc<BatchOutcome>,
    records: u32,
    reserved_bytes: usize,
    opened_at: Instant,
    deadline: Instant,
}

struct SealedBatch {
    bytes: Bytes,
    outcome: Arc<BatchOutcome>,
    records: u32,
    reserved_bytes: usize,
    deadline: Instant,
}

/// A partition's batches, taken out to be sent in one request.
struct PartitionSend {
    topic: Arc<str>,
    partition: u32,
    batches: Vec<SealedBatch>,
}

/// What the broker said about a [`PartitionSend`].
struct Completion {
    send: PartitionSend,
    result: BatchResult,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The room a record takes in the producer's buffer: its bytes plus the
/// most its framing inside a batch can add.
fn record_bytes(record: &ProducerRecord) -> usize {
    let len = |b: &Option<Bytes>| b.as_ref().map_or(0, Bytes::len);
    let headers: usize = record
        .headers
        .iter()
        .map(|(k, v)| k.len() + len(v) + 10)
        .sum();
    len(&record.key) + len(&record.value) + headers + 32
}

fn too_large(bytes: usize) -> ClientError {
    ClientError::Broker {
        code: ErrorCode::RecordTooLarge,
        message: format!("a record of about {bytes} bytes does not fit a batch"),
    }
}

impl Producer {
    /// A producer sending through `cluster`.
    pub fn new(cluster: Arc<Cluster>, config: ProducerConfig) -> Producer {
        // The buffer holds at least one batch of the largest size, so a
        // record that fits a batch always fits the buffer.
        let room = config.buffer_bytes_max.max(MAX_BATCH_BYTES_DEFAULT);
        let shared = Arc::new(Shared {
            cluster,
            config,
            accumulator: Mutex::new(Accumulator::default()),
            wake: Notify::new(),
            room: Semaphore::new(room),
        });
        let sender = tokio::spawn(run_sender(Arc::clone(&shared)));
        Producer {
            shared,
            sender: Some(sender),
        }
    }

    /// Queues `record`; the returned future resolves once it is
    /// acknowledged (or has failed). Waits while the producer's buffer is
    /// full. Errors only when the producer is closed; everything else
    /// (unknown topic, a record too large) is the future's outcome.
    pub async fn send(&self, record: ProducerRecord) -> Result<DeliveryFuture, ClientError> {
        let shared = &self.shared;
        let size = record_bytes(&record);
        let partition_hint = record.partition.unwrap_or(0);
        if size > MAX_BATCH_BYTES_DEFAULT {
            return Ok(DeliveryFuture::failed(
                &record.topic,
                partition_hint,
                too_large(size),
            ));
        }
        let closed = || ClientError::Closed {
            addr: "producer".into(),
        };
        shared
            .room
            .acquire_many(size as u32)
            .await
            .map_err(|_| closed())?
            .forget();
        loop {
            {
                let mut acc = lock(&shared.accumulator);
                if acc.closing {
                    drop(acc);
                    shared.room.add_permits(size);
                    return Err(closed());
                }
                if let Some(topic) = acc.topics.get_mut(record.topic.as_str()) {
                    let appended = topic.append(&record, size, &shared.config);
                    drop(acc);
                    return Ok(match appended {
                        Ok((future, wake)) => {
                            if wake {
                                shared.wake.notify_one();
                            }
                            future
                        }
                        Err(e) => {
                            shared.room.add_permits(size);
                            DeliveryFuture::failed(&record.topic, partition_hint, e)
                        }
                    });
                }
            }
            // First record for this topic: learn its partition count
            // outside the lock, then append on the next turn.
            let wait = Duration::from_millis(crate::cluster::UNKNOWN_TOPIC_WAIT_MS);
            match shared.cluster.topic_within(&record.topic, wait).await {
                Ok(info) => {
                    lock(&shared.accumulator)
                        .topics
                        .entry(record.topic.clone())
                        .or_insert_with(|| TopicQueues::new(&record.topic, info.partitions.len()));
                }
                Err(e) => {
                    shared.room.add_permits(size);
                    return Ok(DeliveryFuture::failed(&record.topic, partition_hint, e));
                }
            }
        }
    }

    /// Sends every record queued so far at once and waits until all of
    /// them are acknowledged or have failed.
    pub async fn flush(&self) {
        let waits: Vec<Arc<BatchOutcome>> = {
            let mut acc = lock(&self.shared.accumulator);
            let mut waits = Vec::new();
            for topic in acc.topics.values_mut() {
                for p in 0..topic.partitions.len() {
                    topic.seal(p as u32);
                    let q = &topic.partitions[p];
                    waits.extend(q.ready.iter().map(|b| Arc::clone(&b.outcome)));
                    waits.extend(q.in_flight.iter().flatten().cloned());
                }
            }
            waits
        };
        self.shared.wake.notify_one();
        for batch in waits {
            let _ = DeliveryFuture {
                batch,
                index: 0,
                slot: None,
            }
            .await;
        }
    }

    /// Flushes, then stops the producer.
    pub async fn close(mut self) {
        self.flush().await;
        self.begin_close();
        if let Some(sender) = self.sender.take() {
            let _ = sender.await;
        }
    }

    fn begin_close(&self) {
        lock(&self.shared.accumulator).closing = true;
        self.shared.wake.notify_one();
    }
}

impl Drop for Producer {
    /// A dropped producer still sends what it accepted: the sender task
    /// drains the queues, then ends.
    fn drop(&mut self) {
        self.begin_close();
    }
}

impl TopicQueues {
    fn new(name: &str, partitions: usize) -> TopicQueues {
        TopicQueues {
            name: name.into(),
            partitions: (0..partitions).map(|_| PartitionQueue::default()).collect(),
            sticky: 0,
        }
    }

    /// Copies `record` into its partition's open batch. Returns its future
    /// and whether the sender must look again (a batch opened or sealed).
    fn append(
        &mut self,
        record: &ProducerRecord,
        size: usize,
        config: &ProducerConfig,
    ) -> Result<(DeliveryFuture, bool), ClientError> {
        let count = self.partitions.len() as u32;
        if count == 0 {
            return Err(ClientError::code(ErrorCode::UnknownTopicOrPartition));
        }
        let partition = match (record.partition, &record.key) {
            (Some(p), _) if p < count => p,
            (Some(p), _) => {
                return Err(ClientError::Invalid(format!(
                    "topic {:?} has no partition {p}",
                    record.topic
                )));
            }
            (None, Some(key)) => partition_for_key(key, count),
            (None, None) => self.sticky % count,
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
        let mut wake = false;
        for _ in 0..2 {
            let q = &mut self.partitions[partition as usize];
            let open = q.open.get_or_insert_with(|| {
                wake = true;
                let now = Instant::now();
                OpenBatch {
                    builder: BatchBuilder::with_capacity(
                        MAX_BATCH_BYTES_DEFAULT,
                        config.batch_size_bytes.min(MAX_BATCH_BYTES_DEFAULT),
                    ),
                    outcome: BatchOutcome::new(Arc::clone(&self.name), partition),
                    records: 0,
                    reserved_bytes: 0,
                    opened_at: now,
                    deadline: now + Duration::from_millis(config.delivery_timeout_ms),
                }
            });
            match open.builder.push(&new) {
                Ok(true) => {
                    let future = DeliveryFuture {
                        batch: Arc::clone(&open.outcome),
                        index: open.records,
                        slot: None,
                    };
                    open.records += 1;
                    open.reserved_bytes += size;
                    if open.builder.batch_bytes() >= config.batch_size_bytes {
                        self.seal(partition);
                        wake = true;
                    }
                    return Ok((future, wake));
                }
                // Full: seal it and try once more in a fresh batch.
                Ok(false) => {
                    self.seal(partition);
                    wake = true;
                }
                Err(e) => {
                    return Err(ClientError::Broker {
                        code: ErrorCode::RecordTooLarge,
                        message: e.to_string(),
                    });
                }
            }
        }
        Err(too_large(size))
    }

    /// Moves `partition`'s open batch, if it has records, to its ready queue.
    fn seal(&mut self, partition: u32) {
        let Some(q) = self.partitions.get_mut(partition as usize) else {
            return;
        };
        let Some(open) = q.open.take() else {
            return;
        };
        if open.records == 0 {
            return;
        }
        let bytes = open
            .builder
            .finish()
            .expect("a batch with at least one record always finishes");
        q.ready.push_back(SealedBatch {
            bytes: Bytes::from(bytes),
            outcome: open.outcome,
            records: open.records,
            reserved_bytes: open.reserved_bytes,
            deadline: open.deadline,
        });
        // Keyless records move on to the next partition.
        if self.sticky % self.partitions.len() as u32 == partition {
            self.sticky = (partition + 1) % self.partitions.len() as u32;
        }
    }
}

/// What one look at the accumulator found.
struct Collected {
    sends: Vec<PartitionSend>,
    /// The next linger or retry deadline.
    wake_at: Option<Instant>,
    /// Room given back by batches that expired unsent.
    released_bytes: usize,
    /// Closing and nothing left to send or wait for.
    finished: bool,
}

impl Accumulator {
    /// Seals batches whose linger has passed (all of them when closing),
    /// fails batches past their delivery deadline, and takes the ready
    /// batches of every partition without a request in flight.
    fn collect(&mut self, now: Instant, config: &ProducerConfig) -> Collected {
        let linger = Duration::from_millis(config.linger_ms);
        let mut out = Collected {
            sends: Vec::new(),
            wake_at: None,
            released_bytes: 0,
            finished: self.closing,
        };
        let closing = self.closing;
        let wake = |at: Instant, out: &mut Collected| {
            out.wake_at = Some(out.wake_at.map_or(at, |w| w.min(at)));
        };
        for topic in self.topics.values_mut() {
            for p in 0..topic.partitions.len() {
                let lingered = topic.partitions[p]
                    .open
                    .as_ref()
                    .map(|o| o.opened_at + linger);
                match lingered {
                    Some(at) if closing || at <= now => topic.seal(p as u32),
                    Some(at) => wake(at, &mut out),
                    None => {}
                }
                let q = &mut topic.partitions[p];
                if q.in_flight.is_some() {
                    out.finished = false;
                    continue;
                }
                while q.ready.front().is_some_and(|b| b.deadline <= now) {
                    let b = q.ready.pop_front().expect("front exists");
                    b.outcome.set(Err(ClientError::Timeout {
                        ms: config.delivery_timeout_ms,
                    }));
                    out.released_bytes += b.reserved_bytes;
                }
                if q.ready.is_empty() {
                    continue;
                }
                out.finished = false;
                if let Some(at) = q.retry_at.filter(|&at| at > now) {
                    wake(at, &mut out);
                    continue;
                }
                q.retry_at = None;
                let mut batches = Vec::new();
                let mut bytes = 0;
                while let Some(b) = q.ready.front() {
                    if !batches.is_empty() && bytes + b.bytes.len() > config.request_bytes_max {
                        break;
                    }
                    bytes += b.bytes.len();
                    batches.push(q.ready.pop_front().expect("front exists"));
                }
                q.in_flight = Some(batches.iter().map(|b| Arc::clone(&b.outcome)).collect());
                out.sends.push(PartitionSend {
                    topic: Arc::clone(&topic.name),
                    partition: p as u32,
                    batches,
                });
            }
        }
        out
    }

    /// Records what the broker said: resolves the batches, or puts them
    /// back first in line to be retried. Returns the room given back.
    fn complete(&mut self, c: Completion, config: &ProducerConfig, cluster: &Cluster) -> usize {
        let Completion { send, result } = c;
        let queue = self
            .topics
            .get_mut(&*send.topic)
            .and_then(|t| t.partitions.get_mut(send.partition as usize));
        if let Some(q) = queue.as_deref() {
            debug_assert!(q.in_flight.is_some(), "a completion without a request");
        }
        let now = Instant::now();
        let deadline = send.batches.first().map(|b| b.deadline);
        match (result, queue) {
            (Err(e), Some(q)) if e.is_retriable() && deadline.is_some_and(|d| now < d) => {
                tracing::debug!(topic = %send.topic, partition = send.partition, error = %e, "retrying");
                q.in_flight = None;
                for b in send.batches.into_iter().rev() {
                    q.ready.push_front(b);
                }
                if matches!(e, ClientError::LeaderMoved { .. }) {
                    // The metadata already points at the new leader.
                    q.retry_at = None;
                } else {
                    // A leader that moved elsewhere or a broker that is
                    // down: the next try asks for fresh metadata.
                    cluster.invalidate_partition(&send.topic, send.partition);
                    q.retry_at = Some(now + Duration::from_millis(config.retry_backoff_ms));
                }
                0
            }
            (result, queue) => {
                if let Some(q) = queue {
                    q.in_flight = None;
                }
                let mut released = 0;
                let mut base = result;
                for b in send.batches {
                    b.outcome.set(base.clone());
                    if let Ok(Some(next)) = &mut base {
                        *next += u64::from(b.records);
                    }
                    released += b.reserved_bytes;
                }
                released
            }
        }
    }
}

async fn run_sender(shared: Arc<Shared>) {
    // Completions come from request tasks this loop spawned, at most one
    // per partition at a time: the channel is bounded by the partition
    // count.
    let (completions, mut done) = mpsc::unbounded_channel::<Completion>();
    loop {
        let collected = lock(&shared.accumulator).collect(Instant::now(), &shared.config);
        if collected.released_bytes > 0 {
            shared.room.add_permits(collected.released_bytes);
        }
        if !collected.sends.is_empty() {
            tokio::spawn(send_round(
                Arc::clone(&shared),
                collected.sends,
                completions.clone(),
            ));
        }
        if collected.finished {
            return;
        }
        let far = Instant::now() + Duration::from_secs(3600);
        tokio::select! {
            _ = shared.wake.notified() => {}
            Some(c) = done.recv() => {
                let released = lock(&shared.accumulator).complete(c, &shared.config, &shared.cluster);
                if released > 0 {
                    shared.room.add_permits(released);
                }
            }
            _ = tokio::time::sleep_until(collected.wake_at.unwrap_or(far)), if collected.wake_at.is_some() => {}
        }
    }
}

/// Sends one round of partitions: one produce request per leader.
async fn send_round(
    shared: Arc<Shared>,
    sends: Vec<PartitionSend>,
    done: mpsc::UnboundedSender<Completion>,
) {
    let mut by_leader: Vec<(Arc<Connection>, Vec<PartitionSend>)> = Vec::new();
    for send in sends {
        match shared.cluster.leader(&send.topic, send.partition).await {
            Ok(conn) => match by_leader.iter_mut().find(|(c, _)| Arc::ptr_eq(c, &conn)) {
                Some((_, group)) => group.push(send),
                None => by_leader.push((conn, vec![send])),
            },
            Err(e) => {
                let _ = done.send(Completion {
                    send,
                    result: Err(e),
                });
            }
        }
    }
    for (conn, group) in by_leader {
        let (acks, timeout, done) = (
            shared.config.acks,
            Duration::from_millis(shared.config.request_timeout_ms),
            done.clone(),
        );
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let results = send_request(&shared.cluster, &conn, &group, acks, timeout).await;
            for (send, result) in group.into_iter().zip(results) {
                let _ = done.send(Completion { send, result });
            }
        });
    }
}

/// One produce request for `group`; one result per entry of `group`.
async fn send_request(
    cluster: &Cluster,
    conn: &Connection,
    group: &[PartitionSend],
    acks: Acks,
    timeout: Duration,
) -> Vec<BatchResult> {
    let mut topics: Vec<ProduceTopic> = Vec::new();
    for send in group {
        // Each batch is a chunk of its own: nothing is copied.
        let partition = ProducePartition {
            partition: send.partition,
            records: send.batches.iter().map(|b| b.bytes.clone()).collect(),
        };
        match topics.iter_mut().find(|t| *t.name == *send.topic) {
            Some(t) => t.partitions.push(partition),
            None => topics.push(ProduceTopic {
                name: send.topic.to_string(),
                partitions: vec![partition],
            }),
        }
    }
    let request = Request::Produce(ProduceRequest {
        acks: acks.wire(),
        timeout_ms: timeout.as_millis() as u32,
        topics,
    });
    let all = |r: BatchResult| group.iter().map(|_| r.clone()).collect();
    if acks == Acks::None {
        return all(conn.send_only(request).await.map(|()| None));
    }
    let response = match conn
        .request(request, timeout + Duration::from_secs(5))
        .await
    {
        Ok(Response::Produce(r)) => r,
        Ok(_) => return all(Err(ClientError::code(ErrorCode::Unknown))),
        Err(e) => return all(Err(e)),
    };
    group
        .iter()
        .map(|send| {
            let p = response
                .topics
                .iter()
                .filter(|t| *t.name == *send.topic)
                .flat_map(|t| t.partitions.iter())
                .find(|p| p.partition == send.partition)
                .ok_or_else(|| ClientError::code(ErrorCode::Unknown))?;
            if p.error.is_ok() {
                Ok(Some(p.base_offset))
            } else {
                Err(cluster.partition_error(
                    &send.topic,
                    send.partition,
                    p.error,
                    p.leader_hint,
                    p.leader_epoch,
                ))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_parse_as_kafka_writes_them() {
        assert_eq!("0".parse(), Ok(Acks::None));
        assert_eq!("1".parse(), Ok(Acks::Leader));
        assert_eq!("all".parse(), Ok(Acks::All));
        assert_eq!("-1".parse(), Ok(Acks::All));
        assert!("2".parse::<Acks>().is_err());
        assert_eq!(Acks::All.wire(), -1);
    }
}
