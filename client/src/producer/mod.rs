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
//! be retried.
//!
//! Idempotence (on by default, with `acks=all`): the producer asks the
//! cluster for a producer id before its first record and stamps each batch
//! with it, an epoch and the sequence of its first record (per partition,
//! counting records). The partition leader stores a batch it already holds
//! once only, answering with the first copy's offsets, and refuses a batch
//! that skips ahead (`OutOfOrderSequence`): so a retry after a lost answer
//! or through a leader change is never stored twice, and when a broker
//! refuses one request but accepts the next (a leadership race), the next
//! is refused too and goes again behind the first. A batch that fails for
//! good (its delivery timeout, a refusal) may or may not be stored; the
//! partition moves to a new epoch and the batches that never went out are
//! stamped again from sequence 0. Without idempotence a retry after a lost
//! response may store a batch twice, and in that leadership race the next
//! request is stored ahead of the retried one (not with
//! `max_in_flight_per_partition = 1`).
//!
//! Keyed records go where Kafka's default partitioner would put them
//! (murmur2); keyless records stick to one partition per topic and move on
//! each time a batch for it is sealed.
//!
//! Bounds: at most [`ProducerConfig::buffer_bytes_max`] bytes of records
//! wait in the producer (accepted, not yet acknowledged); `send` waits for
//! room beyond that. A request carries at most
//! [`ProducerConfig::request_bytes_max`] bytes of batches (but always at
//! least one batch).
//!
//! Layout: this file holds the API ([`Producer`], [`ProducerConfig`],
//! [`ProducerRecord`], [`RecordMetadata`], [`Acks`]) and the state that
//! `send`, `flush` and the sender task share; `delivery` holds what a caller
//! awaits for one record, `accumulator` the batches of every partition,
//! `sender` the task that sends them and keeps each partition's requests in
//! order. One lock, the accumulator's, orders everything the callers and the
//! sender task do to a partition; nothing awaits or does I/O under it, so a
//! caller copying a record never waits behind a request on the network.

mod accumulator;
mod delivery;
pub mod identity;
mod sender;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use rill_storage::MAX_BATCH_BYTES_DEFAULT;
use tokio::sync::{Notify, Semaphore};

use crate::cluster::Cluster;
use crate::error::ClientError;
use crate::protocol::ErrorCode;

use accumulator::{Accumulator, TopicQueues};
use delivery::BatchOutcome;
pub use delivery::DeliveryFuture;
pub use rill_storage::batch::Compression;
use sender::run_sender;

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
    /// How batches are compressed: [`Compression::None`] (the default),
    /// `Lz4` or `Zstd`. A batch is sent compressed only when that makes it
    /// smaller; its uncompressed size is still bounded as without
    /// compression, since that is what the broker and consumers hold.
    pub compression: Compression,
    /// Whether the producer is idempotent (Kafka's `enable.idempotence`):
    /// it asks the cluster for a producer id and stamps every batch with it
    /// and a sequence number, so a batch retried after a lost answer or a
    /// leader change is stored once, and a partition's batches are stored
    /// in the order they were sent. Default true; only in effect with
    /// [`Acks::All`] (with fewer acknowledgements an acknowledged batch may
    /// be lost anyway, and Kafka's producer turns it off the same way).
    pub idempotence: bool,
}

impl ProducerConfig {
    /// Whether batches carry a producer id and sequence numbers.
    pub fn is_idempotent(&self) -> bool {
        self.idempotence && self.acks == Acks::All
    }
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
            compression: Compression::None,
            idempotence: true,
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

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
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
    /// The idempotent producer's id, asked for before its first record.
    producer_id: tokio::sync::OnceCell<i64>,
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
            producer_id: tokio::sync::OnceCell::new(),
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
            let mut grow_from = None;
            {
                let mut acc = lock(&shared.accumulator);
                if acc.closing {
                    drop(acc);
                    shared.room.add_permits(size);
                    return Err(closed());
                }
                if let Some(topic) = acc.topics.get_mut(record.topic.as_str())
                    && topic.metadata_due()
                {
                    grow_from = Some(topic.partitions.len());
                } else if let Some(topic) = acc.topics.get_mut(record.topic.as_str()) {
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
            if grow_from.is_some() {
                // Partitions may have been added: the metadata as the
                // cluster has it now (asked for again once aged), outside
                // the lock, then the queues grown to match.
                if let Ok(info) = shared.cluster.topic(&record.topic).await
                    && let Some(topic) = lock(&shared.accumulator)
                        .topics
                        .get_mut(record.topic.as_str())
                {
                    topic.grow(info.partitions.len());
                } else if let Some(topic) = lock(&shared.accumulator)
                    .topics
                    .get_mut(record.topic.as_str())
                {
                    topic.grow(0);
                }
                continue;
            }
            // First record for this topic: learn its partition count
            // outside the lock (and, the first time, the producer id), then
            // append on the next turn.
            let producer_id = match self.producer_id().await {
                Ok(id) => id,
                Err(e) => {
                    shared.room.add_permits(size);
                    return Ok(DeliveryFuture::failed(&record.topic, partition_hint, e));
                }
            };
            let wait = Duration::from_millis(crate::cluster::UNKNOWN_TOPIC_WAIT_MS);
            match shared.cluster.topic_within(&record.topic, wait).await {
                Ok(info) => {
                    lock(&shared.accumulator)
                        .topics
                        .entry(record.topic.clone())
                        .or_insert_with(|| {
                            TopicQueues::new(&record.topic, info.partitions.len(), producer_id)
                        });
                }
                Err(e) => {
                    shared.room.add_permits(size);
                    return Ok(DeliveryFuture::failed(&record.topic, partition_hint, e));
                }
            }
        }
    }

    /// The idempotent producer's id, asked for once (`None` without
    /// idempotence). Tried for up to the delivery timeout.
    async fn producer_id(&self) -> Result<Option<i64>, ClientError> {
        let shared = &self.shared;
        if !shared.config.is_idempotent() {
            return Ok(None);
        }
        let timeout = Duration::from_millis(shared.config.delivery_timeout_ms);
        let id = shared
            .producer_id
            .get_or_try_init(|| async {
                identity::init_producer_id(&shared.cluster, timeout)
                    .await
                    .map(|i| i.producer_id)
            })
            .await?;
        Ok(Some(*id))
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
