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
//! Ordering: up to [`ProducerConfig::max_in_flight_per_partition`] produce
//! requests of one partition are in flight at once (Kafka's
//! `max.in.flight.requests.per.connection`), all on the same connection, in
//! the order their batches were sealed; the broker appends the requests of
//! one connection in the order they arrive. A request that fails with a
//! retriable error is held back until every earlier and later request of
//! its partition has answered, then everything that failed is sent again in
//! its original order, so a retry never overtakes a batch that is still to
//! be retried. What this cannot rule out without the idempotent producer
//! (producer ids and sequence numbers, checked by the broker): a retry after
//! a lost response may store a batch twice, and in a leadership race where
//! the broker refuses one request but accepts the next, that next one is
//! stored ahead of the retried one. With `max_in_flight_per_partition = 1`
//! the second case cannot happen. Keyed records go where Kafka's default partitioner would put them
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
    /// Produce requests of one partition in flight at once, at most
    /// (Kafka's `max.in.flight.requests.per.connection`). More than one
    /// lets a partition's next batches travel while the broker replicates
    /// and syncs the previous ones. Default 5; 0 counts as 1.
    pub max_in_flight_per_partition: usize,
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
            max_in_flight_per_partition: 5,
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
    /// This partition's requests in flight, oldest first.
    in_flight: VecDeque<InFlight>,
    /// Requests that failed with a retriable error (or were not sent, so as
    /// not to overtake an earlier one) while others were still in flight,
    /// ordered by `seq`. Once nothing is in flight they go back to the
    /// front of `ready`; until then the partition sends nothing new.
    held: Vec<(u64, Vec<SealedBatch>)>,
    /// Whether a held request's failure calls for the retry backoff (a
    /// broker down or a leader unknown, rather than a leader that moved).
    held_backoff: bool,
    /// The sequence number of this partition's next request.
    next_seq: u64,
    retry_at: Option<Instant>,
}

/// A request of one partition on its way to the broker or back.
struct InFlight {
    /// The request's place in its partition's order.
    seq: u64,
    /// Its batches' outcomes, for `flush` to wait on.
    outcomes: Vec<Arc<BatchOutcome>>,
    /// The connection it went out on; `None` until it did.
    conn: Option<Arc<Connection>>,
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
    /// The request's place in its partition's order ([`InFlight::seq`]).
    seq: u64,
    batches: Vec<SealedBatch>,
}

/// What the broker said about a [`PartitionSend`]: `None` when it was not
/// sent because an earlier request of its partition is in flight on
/// another connection, so it waits and goes again after that one.
struct Completion {
    send: PartitionSend,
    result: Option<BatchResult>,
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
        let waits: Vec<Arc<BatchOutcome>> =
            {
                let mut acc = lock(&self.shared.accumulator);
                let mut waits = Vec::new();
                for topic in acc.topics.values_mut() {
                    for p in 0..topic.partitions.len() {
                        topic.seal(p as u32);
                        let q = &topic.partitions[p];
                        waits.extend(q.ready.iter().map(|b| Arc::clone(&b.outcome)));
                        waits.extend(q.in_flight.iter().flat_map(|f| f.outcomes.iter().cloned()));
                        waits.extend(q.held.iter().flat_map(|(_, batches)| {
                            batches.iter().map(|b| Arc::clone(&b.outcome))
                        }));
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
    /// A partition has more ready batches and room for another request in
    /// flight: look again at once.
    more: bool,
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
            more: false,
        };
        let in_flight_max = config.max_in_flight_per_partition.max(1);
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
                if !q.in_flight.is_empty() || !q.held.is_empty() {
                    out.finished = false;
                }
                // A held failure waits for the rest of its partition's
                // requests, so that retries go out in their first order.
                if !q.held.is_empty() || q.in_flight.len() >= in_flight_max {
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
                let seq = q.next_seq;
                q.next_seq += 1;
                q.in_flight.push_back(InFlight {
                    seq,
                    outcomes: batches.iter().map(|b| Arc::clone(&b.outcome)).collect(),
                    conn: None,
                });
                if q.in_flight.len() < in_flight_max && !q.ready.is_empty() {
                    out.more = true;
                }
                out.sends.push(PartitionSend {
                    topic: Arc::clone(&topic.name),
                    partition: p as u32,
                    seq,
                    batches,
                });
            }
        }
        out
    }

    /// Records that `send` goes out on `conn`. False when an earlier
    /// request of its partition is in flight on another connection or has
    /// not gone out: this one could then overtake it, so it waits.
    fn pin(&mut self, send: &PartitionSend, conn: &Arc<Connection>) -> bool {
        let Some(q) = self
            .topics
            .get_mut(&*send.topic)
            .and_then(|t| t.partitions.get_mut(send.partition as usize))
        else {
            return true;
        };
        let mut in_order = true;
        for f in q.in_flight.iter_mut() {
            if f.seq < send.seq {
                in_order &= f.conn.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn));
            } else if f.seq == send.seq && in_order {
                f.conn = Some(Arc::clone(conn));
            }
        }
        in_order
    }

    /// Records what the broker said: resolves the batches, or holds them to
    /// be retried first in line once the partition's other requests have
    /// answered. Returns the room given back.
    fn complete(&mut self, c: Completion, config: &ProducerConfig, cluster: &Cluster) -> usize {
        let Completion { send, result } = c;
        let queue = self
            .topics
            .get_mut(&*send.topic)
            .and_then(|t| t.partitions.get_mut(send.partition as usize));
        let now = Instant::now();
        let in_time = send.batches.first().is_some_and(|b| now < b.deadline);
        let Some(q) = queue else {
            let result = result.unwrap_or_else(|| Err(ClientError::code(ErrorCode::Unknown)));
            return resolve(send.batches, result);
        };
        let position = q.in_flight.iter().position(|f| f.seq == send.seq);
        debug_assert!(position.is_some(), "a completion without a request");
        if let Some(i) = position {
            q.in_flight.remove(i);
        }
        let released = match result {
            None if in_time => {
                q.hold(send.seq, send.batches);
                0
            }
            Some(Err(e)) if e.is_retriable() && in_time => {
                tracing::debug!(topic = %send.topic, partition = send.partition, error = %e, "retrying");
                if !matches!(e, ClientError::LeaderMoved { .. }) {
                    // A leader that moved elsewhere or a broker that is
                    // down: the next try asks for fresh metadata. A moved
                    // leader is already in the metadata.
                    cluster.invalidate_partition(&send.topic, send.partition);
                    q.held_backoff = true;
                }
                q.hold(send.seq, send.batches);
                0
            }
            None => resolve(
                send.batches,
                Err(ClientError::Timeout {
                    ms: config.delivery_timeout_ms,
                }),
            ),
            Some(result) => resolve(send.batches, result),
        };
        if q.in_flight.is_empty() && !q.held.is_empty() {
            for (_, batches) in q.held.drain(..).rev() {
                for b in batches.into_iter().rev() {
                    q.ready.push_front(b);
                }
            }
            q.retry_at = std::mem::take(&mut q.held_backoff)
                .then(|| now + Duration::from_millis(config.retry_backoff_ms));
        }
        released
    }
}

impl PartitionQueue {
    /// Keeps a failed request's batches, in request order, until the
    /// partition's other requests have answered.
    fn hold(&mut self, seq: u64, batches: Vec<SealedBatch>) {
        let at = self.held.partition_point(|(s, _)| *s < seq);
        self.held.insert(at, (seq, batches));
    }
}

/// Resolves every batch of one request with `result` (each batch's base
/// offset follows the previous batch's records). Returns the room given
/// back.
fn resolve(batches: Vec<SealedBatch>, result: BatchResult) -> usize {
    let mut released = 0;
    let mut base = result;
    for b in batches {
        b.outcome.set(base.clone());
        if let Ok(Some(next)) = &mut base {
            *next += u64::from(b.records);
        }
        released += b.reserved_bytes;
    }
    released
}

async fn run_sender(shared: Arc<Shared>) {
    // Completions come from request tasks this loop spawned, at most
    // `max_in_flight_per_partition` per partition at a time: the channel is
    // bounded by that times the partition count.
    let (completions, mut done) = mpsc::unbounded_channel::<Completion>();
    loop {
        let collected = lock(&shared.accumulator).collect(Instant::now(), &shared.config);
        if collected.released_bytes > 0 {
            shared.room.add_permits(collected.released_bytes);
        }
        if !collected.sends.is_empty() {
            // Sent from this task, one round after another, so that each
            // partition's requests reach their connection in order.
            dispatch(&shared, collected.sends, &completions).await;
        }
        if collected.finished {
            return;
        }
        if collected.more {
            while let Ok(c) = done.try_recv() {
                shared.complete(c);
            }
            continue;
        }
        let far = Instant::now() + Duration::from_secs(3600);
        tokio::select! {
            _ = shared.wake.notified() => {}
            Some(c) = done.recv() => shared.complete(c),
            _ = tokio::time::sleep_until(collected.wake_at.unwrap_or(far)), if collected.wake_at.is_some() => {}
        }
    }
}

impl Shared {
    fn complete(&self, c: Completion) {
        let released = lock(&self.accumulator).complete(c, &self.config, &self.cluster);
        if released > 0 {
            self.room.add_permits(released);
        }
    }
}

/// Sends one round of partitions: one produce request per leader, queued on
/// its connection before this returns; the answers are awaited in tasks of
/// their own.
async fn dispatch(
    shared: &Arc<Shared>,
    sends: Vec<PartitionSend>,
    done: &mpsc::UnboundedSender<Completion>,
) {
    let mut by_leader: Vec<(Arc<Connection>, Vec<PartitionSend>)> = Vec::new();
    for send in sends {
        match shared.cluster.leader(&send.topic, send.partition).await {
            Ok(conn) => {
                if !lock(&shared.accumulator).pin(&send, &conn) {
                    let _ = done.send(Completion { send, result: None });
                    continue;
                }
                match by_leader.iter_mut().find(|(c, _)| Arc::ptr_eq(c, &conn)) {
                    Some((_, group)) => group.push(send),
                    None => by_leader.push((conn, vec![send])),
                }
            }
            Err(e) => {
                let _ = done.send(Completion {
                    send,
                    result: Some(Err(e)),
                });
            }
        }
    }
    let acks = shared.config.acks;
    let timeout = Duration::from_millis(shared.config.request_timeout_ms);
    for (conn, group) in by_leader {
        let request = produce_request(&group, acks, timeout);
        let finish = |group: Vec<PartitionSend>, result: BatchResult| {
            for send in group {
                let _ = done.send(Completion {
                    send,
                    result: Some(result.clone()),
                });
            }
        };
        if acks == Acks::None {
            finish(group, conn.send_only(request).await.map(|()| None));
            continue;
        }
        let pending = match conn.enqueue(request).await {
            Ok(pending) => pending,
            Err(e) => {
                finish(group, Err(e));
                continue;
            }
        };
        let (shared, done) = (Arc::clone(shared), done.clone());
        tokio::spawn(async move {
            let response = pending.wait(timeout + Duration::from_secs(5)).await;
            let results = read_response(&shared.cluster, &group, response);
            for (send, result) in group.into_iter().zip(results) {
                let _ = done.send(Completion {
                    send,
                    result: Some(result),
                });
            }
        });
    }
}

/// One produce request for `group`.
fn produce_request(group: &[PartitionSend], acks: Acks, timeout: Duration) -> Request {
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
    Request::Produce(ProduceRequest {
        acks: acks.wire(),
        timeout_ms: timeout.as_millis() as u32,
        topics,
    })
}

/// One result per entry of `group` from the broker's answer.
fn read_response(
    cluster: &Cluster,
    group: &[PartitionSend],
    response: Result<Response, ClientError>,
) -> Vec<BatchResult> {
    let all = |r: BatchResult| group.iter().map(|_| r.clone()).collect();
    let response = match response {
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

    /// An accumulator with one single-partition topic `t` whose batches
    /// hold one record each.
    fn pipelined(in_flight_max: usize) -> (Accumulator, ProducerConfig) {
        let config = ProducerConfig {
            batch_size_bytes: 1,
            max_in_flight_per_partition: in_flight_max,
            request_bytes_max: 1,
            retry_backoff_ms: 100,
            ..ProducerConfig::default()
        };
        let mut acc = Accumulator::default();
        acc.topics.insert("t".into(), TopicQueues::new("t", 1));
        (acc, config)
    }

    fn append(acc: &mut Accumulator, config: &ProducerConfig, n: u32) -> Vec<DeliveryFuture> {
        (0..n)
            .map(|i| {
                let record = ProducerRecord {
                    topic: "t".into(),
                    value: Some(Bytes::from(format!("v{i}"))),
                    ..ProducerRecord::default()
                };
                let topics = &mut acc.topics;
                let topic = topics.get_mut("t").expect("the topic was added");
                topic.append(&record, 40, config).expect("fits").0
            })
            .collect()
    }

    /// Takes every request the accumulator would send now, one look after
    /// another as the sender does.
    fn collect_all(
        acc: &mut Accumulator,
        config: &ProducerConfig,
        now: Instant,
    ) -> Vec<PartitionSend> {
        let mut sends = Vec::new();
        loop {
            let c = acc.collect(now, config);
            sends.extend(c.sends);
            if !c.more {
                return sends;
            }
        }
    }

    fn not_leader() -> Option<BatchResult> {
        Some(Err(ClientError::code(ErrorCode::NotLeader)))
    }

    fn offset_of(d: &DeliveryFuture) -> Option<Option<u64>> {
        d.batch.result.get().map(|r| r.clone().ok().flatten())
    }

    #[test]
    fn a_partition_keeps_at_most_the_configured_requests_in_flight() {
        let (mut acc, config) = pipelined(3);
        let _futures = append(&mut acc, &config, 5);
        let sends = collect_all(&mut acc, &config, Instant::now());
        assert_eq!(sends.iter().map(|s| s.seq).collect::<Vec<_>>(), [0, 1, 2]);
        let cluster = Cluster::new("127.0.0.1:9", "test").expect("an address");
        let mut sends = sends.into_iter();
        let first = sends.next().expect("three sends");
        acc.complete(
            Completion {
                send: first,
                result: Some(Ok(Some(0))),
            },
            &config,
            &cluster,
        );
        let next = collect_all(&mut acc, &config, Instant::now());
        assert_eq!(
            next.iter().map(|s| s.seq).collect::<Vec<_>>(),
            [3],
            "one slot freed"
        );
    }

    #[test]
    fn failed_requests_wait_for_the_rest_and_are_retried_in_their_first_order() {
        let (mut acc, config) = pipelined(3);
        let futures = append(&mut acc, &config, 4);
        let cluster = Cluster::new("127.0.0.1:9", "test").expect("an address");
        let mut sends: VecDeque<PartitionSend> =
            collect_all(&mut acc, &config, Instant::now()).into();
        assert_eq!(sends.len(), 3);
        let (s0, s1, s2) = (sends.pop_front(), sends.pop_front(), sends.pop_front());
        let [s0, s1, s2] = [s0, s1, s2].map(|s| s.expect("three sends"));

        // The first fails while the others are in flight: it is held, and
        // the partition sends nothing new (the fourth batch waits).
        acc.complete(
            Completion {
                send: s0,
                result: not_leader(),
            },
            &config,
            &cluster,
        );
        assert!(collect_all(&mut acc, &config, Instant::now()).is_empty());
        // The second succeeds, the third fails too.
        acc.complete(
            Completion {
                send: s1,
                result: Some(Ok(Some(7))),
            },
            &config,
            &cluster,
        );
        assert_eq!(offset_of(&futures[1]), Some(Some(7)));
        acc.complete(
            Completion {
                send: s2,
                result: not_leader(),
            },
            &config,
            &cluster,
        );
        assert_eq!(offset_of(&futures[0]), None, "still to be retried");

        // After the backoff the failed batches go again, oldest first,
        // ahead of the batch that never went.
        let later = Instant::now() + Duration::from_millis(config.retry_backoff_ms + 1);
        let retried = collect_all(&mut acc, &config, later);
        let order: Vec<&Arc<BatchOutcome>> = retried
            .iter()
            .flat_map(|s| s.batches.iter().map(|b| &b.outcome))
            .collect();
        assert_eq!(order.len(), 3);
        for (sent, expected) in order.iter().zip([&futures[0], &futures[2], &futures[3]]) {
            assert!(
                Arc::ptr_eq(sent, &expected.batch),
                "retried in the order first sent"
            );
        }
    }

    #[test]
    fn a_request_held_back_for_an_earlier_one_goes_again_without_backoff() {
        let (mut acc, config) = pipelined(2);
        let _futures = append(&mut acc, &config, 2);
        let cluster = Cluster::new("127.0.0.1:9", "test").expect("an address");
        let mut sends = collect_all(&mut acc, &config, Instant::now()).into_iter();
        let (s0, s1) = (sends.next().expect("two"), sends.next().expect("two"));
        acc.complete(
            Completion {
                send: s1,
                result: None,
            },
            &config,
            &cluster,
        );
        acc.complete(
            Completion {
                send: s0,
                result: Some(Ok(Some(0))),
            },
            &config,
            &cluster,
        );
        let again = collect_all(&mut acc, &config, Instant::now());
        assert_eq!(again.len(), 1, "sent again at once");
    }
}
