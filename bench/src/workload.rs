//! The workloads: `produce`, `consume` and `e2e` (both at once).
//!
//! Producers each have their own connection; a fixed `rate_msgs_per_s` is
//! split evenly between them and paced against an absolute schedule (a
//! late record is sent at once, never skipped), which is how latency is
//! measured without coordinated omission hiding stalls. Consumers split
//! the topic's partitions between them.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use hdrhistogram::Histogram;
use rill_client::protocol::ErrorCode;
use rill_client::{
    Acks, Admin, ClientError, Cluster, Compression, Consumer, ConsumerConfig, GroupConfig,
    OffsetReset, Producer, ProducerConfig, ProducerRecord, SeekTo,
};
use tokio::sync::mpsc;

use crate::report::{Summary, latency_histogram};

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// `host:port[,...]`.
    pub bootstrap: String,
    /// Topic, created when missing.
    pub topic: String,
    /// Partitions for a created topic.
    pub partitions: u32,
    /// Replication factor for a created topic.
    pub replication_factor: u16,
    /// Topic configs for a created topic (`KEY=VALUE`).
    pub topic_configs: Vec<(String, String)>,
    /// Total records over all producers; `None` runs for `duration`.
    pub messages: Option<u64>,
    /// How long to run when `messages` is `None`.
    pub duration: Duration,
    /// Bytes per record value (at least 8 in `e2e`).
    pub message_size_bytes: usize,
    /// Producer count.
    pub producers: usize,
    /// Consumer count.
    pub consumers: usize,
    /// Producer batch size, bytes.
    pub batch_size_bytes: usize,
    /// Producer linger, ms.
    pub linger_ms: u64,
    /// Produce requests in flight per partition, at most.
    pub max_in_flight_per_partition: usize,
    /// Acknowledgement level.
    pub acks: Acks,
    /// How producers compress their batches (consumers decompress).
    pub compression: Compression,
    /// Whether producers are idempotent (with `acks=all`).
    pub idempotence: bool,
    /// What the values hold.
    pub values: ValueKind,
    /// Records per second over all producers; 0 = as fast as possible.
    pub rate_msgs_per_s: u64,
    /// Consumers join this group and read what it assigns them, instead
    /// of splitting the partitions among themselves.
    pub group: Option<String>,
    /// `consume` reads what the topic holds when it starts (neither a
    /// count nor a duration given).
    pub consume_held: bool,
}

/// Live counters for the progress bar.
#[derive(Debug, Default)]
pub struct Progress {
    /// Records done so far.
    pub records: AtomicU64,
}

/// Creates the topic unless it exists, then waits (at most a minute)
/// until every bootstrap broker that is up has it in its metadata: on a
/// loaded cluster a broker may apply the controller's log seconds after
/// the one that answered the creation, and a producer asking it would
/// fail. A broker that cannot be reached (down, say, in a rolling
/// restart) is passed over: it learns the topic when it comes back.
pub async fn ensure_topic(o: &Options) -> Result<(), ClientError> {
    create_topic(o).await?;
    let mut unreachable = None;
    let mut found = false;
    for addr in o
        .bootstrap
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
    {
        match Cluster::new(addr, "rill-bench")?
            .topic_within(&o.topic, std::time::Duration::from_secs(60))
            .await
        {
            Ok(_) => found = true,
            Err(e @ (ClientError::Io { .. } | ClientError::Closed { .. })) => unreachable = Some(e),
            Err(e) => return Err(e),
        }
    }
    match unreachable {
        Some(e) if !found => Err(e),
        _ => Ok(()),
    }
}

async fn create_topic(o: &Options) -> Result<(), ClientError> {
    let cluster = Cluster::new(&o.bootstrap, "rill-bench")?;
    match Admin::new(cluster)
        .create_topic(
            &o.topic,
            o.partitions,
            o.replication_factor,
            o.topic_configs.clone(),
        )
        .await
    {
        Ok(()) => Ok(()),
        Err(ClientError::Broker {
            code: ErrorCode::TopicAlreadyExists,
            ..
        }) => Ok(()),
        Err(e) => Err(e),
    }
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Wall-clock time derived from monotonic readings: the wall clock is read
/// once, so a record costs one clock read rather than three.
#[derive(Debug, Clone, Copy)]
struct WallClock {
    base: Instant,
    base_epoch_us: u64,
}

impl WallClock {
    fn new() -> WallClock {
        WallClock {
            base: Instant::now(),
            base_epoch_us: now_us(),
        }
    }

    /// Microseconds since the epoch at `at`.
    fn epoch_us(&self, at: Instant) -> u64 {
        self.base_epoch_us + at.saturating_duration_since(self.base).as_micros() as u64
    }
}

/// What record values hold beyond their stamp.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ValueKind {
    /// One byte repeated: the cheapest to make, and compresses far better
    /// than real data.
    #[default]
    Repeated,
    /// Words drawn from a small vocabulary (log-line-like text): compresses
    /// about as real text does.
    Text,
}

/// Text of at least `len` bytes: words from a fixed vocabulary, drawn by a
/// fixed-seed generator, so every run writes the same values.
pub fn text_corpus(len: usize) -> Bytes {
    const WORDS: [&str; 32] = [
        "request",
        "user",
        "order",
        "id",
        "status",
        "ok",
        "error",
        "timeout",
        "GET",
        "POST",
        "/api/v1/orders",
        "/api/v1/users",
        "200",
        "404",
        "500",
        "latency_ms",
        "region",
        "eu-west-1",
        "us-east-1",
        "payment",
        "accepted",
        "declined",
        "retry",
        "session",
        "cart",
        "item",
        "price",
        "currency",
        "EUR",
        "USD",
        "true",
        "false",
    ];
    let mut out = Vec::with_capacity(len + 32);
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    while out.len() < len {
        // xorshift64: deterministic, no dependency.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let w = WORDS[(state % WORDS.len() as u64) as usize];
        out.extend_from_slice(w.as_bytes());
        out.push(if state % 7 == 0 { b'\n' } else { b' ' });
        if state % 5 == 0 {
            // A number, as log lines carry.
            out.extend_from_slice((state % 100_000).to_string().as_bytes());
            out.push(b' ');
        }
    }
    Bytes::from(out)
}

/// Bytes of text each producer slices its values from (text values).
const TEXT_CORPUS_BYTES: usize = 1 << 20;

/// The values one producer sends: cheap slices of a template or a corpus.
struct Values {
    corpus: Bytes,
    size: usize,
    next: usize,
}

impl Values {
    fn new(kind: ValueKind, size: usize) -> Values {
        let corpus = match kind {
            ValueKind::Repeated => Bytes::from(vec![b'r'; size]),
            ValueKind::Text => text_corpus(TEXT_CORPUS_BYTES.max(2 * size)),
        };
        Values {
            corpus,
            size,
            next: 0,
        }
    }

    /// The next value (a slice, not a copy).
    fn next(&mut self) -> Bytes {
        let room = self.corpus.len() - self.size;
        let at = if room == 0 { 0 } else { self.next % room };
        // A step no value size divides: successive values differ.
        self.next = self.next.wrapping_add(7_919);
        self.corpus.slice(at..at + self.size)
    }

    /// The next value with its first 8 bytes carrying `sent_us` (µs since
    /// the epoch, little-endian): what `e2e` consumers measure latency
    /// against.
    fn stamped(&mut self, sent_us: u64) -> Bytes {
        let rest = self.next();
        let mut v = BytesMut::with_capacity(self.size);
        v.put_u64_le(sent_us);
        v.extend_from_slice(&rest[8..]);
        v.freeze()
    }
}

/// Deliveries are handed to the collector in chunks of this many records
/// when sending flat out (one at a time at a fixed rate, so none waits).
const CHUNK_RECORDS: usize = 256;

pub(crate) struct Produced {
    messages: u64,
    bytes: u64,
    failed: u64,
    /// The first failure, to say why records were not acknowledged.
    first_error: Option<String>,
    latency: Histogram<u64>,
}

/// Runs the producers; returns what was acknowledged and send-to-ack
/// latency. With `stamp_values`, each value starts with its send time.
///
/// The collector reads the clock once per chunk of deliveries and again
/// after each wait, not once per record: an acknowledgement that arrived
/// while the collector was busy with the chunk is timed a few microseconds
/// early at most.
pub(crate) async fn run_producers(
    o: &Options,
    progress: Arc<Progress>,
    stamp_values: bool,
) -> Result<(Produced, f64), ClientError> {
    let started = Instant::now();
    let deadline = o.messages.is_none().then(|| started + o.duration);
    let clock = WallClock::new();
    let mut tasks = Vec::new();
    for i in 0..o.producers.max(1) {
        let share = o.messages.map(|n| {
            let p = o.producers.max(1) as u64;
            n / p + u64::from((i as u64) < n % p)
        });
        let o = o.clone();
        let progress = Arc::clone(&progress);
        tasks.push(tokio::spawn(async move {
            let cluster = Cluster::new(&o.bootstrap, &format!("rill-bench-producer-{i}"))?;
            let producer = Producer::new(
                cluster,
                ProducerConfig {
                    acks: o.acks,
                    linger_ms: o.linger_ms,
                    batch_size_bytes: o.batch_size_bytes,
                    max_in_flight_per_partition: o.max_in_flight_per_partition,
                    delivery_timeout_ms: 120_000,
                    compression: o.compression,
                    idempotence: o.idempotence,
                    ..ProducerConfig::default()
                },
            );
            // Outcomes are awaited in order by a collector, so sending never
            // waits for acknowledgements (beyond the producer's own bound).
            type Chunk = Vec<(Instant, rill_client::DeliveryFuture)>;
            let (tx, mut rx) = mpsc::channel::<Chunk>(256);
            let size = o.message_size_bytes;
            let collector = tokio::spawn(async move {
                let mut out = Produced {
                    messages: 0,
                    bytes: 0,
                    failed: 0,
                    first_error: None,
                    latency: latency_histogram(),
                };
                while let Some(chunk) = rx.recv().await {
                    let before = out.messages;
                    let mut now = Instant::now();
                    for (sent, mut delivery) in chunk {
                        let ready = std::future::poll_fn(|cx| {
                            Poll::Ready(Pin::new(&mut delivery).poll(cx))
                        })
                        .await;
                        let outcome = match ready {
                            Poll::Ready(outcome) => outcome,
                            Poll::Pending => {
                                let outcome = delivery.await;
                                now = Instant::now();
                                outcome
                            }
                        };
                        match outcome {
                            Ok(_) => {
                                let us = now.saturating_duration_since(sent).as_micros() as u64;
                                let _ = out.latency.record(us.max(1));
                                out.messages += 1;
                                out.bytes += size as u64;
                            }
                            Err(e) => {
                                out.failed += 1;
                                out.first_error.get_or_insert_with(|| e.to_string());
                            }
                        }
                    }
                    progress
                        .records
                        .fetch_add(out.messages - before, Ordering::Relaxed);
                }
                out
            });
            let interval = (o.rate_msgs_per_s > 0).then(|| {
                Duration::from_secs_f64(o.producers.max(1) as f64 / o.rate_msgs_per_s as f64)
            });
            let chunk_records = if interval.is_some() { 1 } else { CHUNK_RECORDS };
            let mut values = Values::new(o.values, size);
            let topic = o.topic.clone();
            let begin = tokio::time::Instant::now();
            let mut chunk: Chunk = Vec::with_capacity(chunk_records);
            let mut n = 0u64;
            loop {
                if share.is_some_and(|s| n >= s) || deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                if let Some(every) = interval {
                    tokio::time::sleep_until(begin + every.mul_f64(n as f64)).await;
                }
                let sent = Instant::now();
                let sent_us = clock.epoch_us(sent);
                let value = if stamp_values && size >= 8 {
                    values.stamped(sent_us)
                } else {
                    values.next()
                };
                let record = ProducerRecord {
                    topic: topic.clone(),
                    value: Some(value),
                    timestamp_ms: Some((sent_us / 1000) as i64),
                    ..ProducerRecord::default()
                };
                chunk.push((sent, producer.send(record).await?));
                n += 1;
                if chunk.len() >= chunk_records {
                    let full = std::mem::replace(&mut chunk, Vec::with_capacity(chunk_records));
                    if tx.send(full).await.is_err() {
                        break;
                    }
                }
            }
            if !chunk.is_empty() {
                let _ = tx.send(chunk).await;
            }
            producer.close().await;
            drop(tx);
            collector
                .await
                .map_err(|e| ClientError::Invalid(format!("collector failed: {e}")))
        }));
    }
    let mut total = Produced {
        messages: 0,
        bytes: 0,
        failed: 0,
        first_error: None,
        latency: latency_histogram(),
    };
    for t in tasks {
        let p = t
            .await
            .map_err(|e| ClientError::Invalid(format!("producer task failed: {e}")))??;
        total.messages += p.messages;
        total.bytes += p.bytes;
        total.failed += p.failed;
        if total.first_error.is_none() {
            total.first_error = p.first_error;
        }
        let _ = total.latency.add(&p.latency);
    }
    Ok((total, started.elapsed().as_secs_f64()))
}

/// `produce`: throughput and send-to-acknowledgement latency.
pub async fn produce(o: &Options, progress: Arc<Progress>) -> Result<Summary, ClientError> {
    ensure_topic(o).await?;
    let (p, seconds) = run_producers(o, progress, false).await?;
    if p.failed > 0 {
        return Err(ClientError::Invalid(format!(
            "{} records were not acknowledged (first error: {})",
            p.failed,
            p.first_error.as_deref().unwrap_or("none recorded")
        )));
    }
    Ok(Summary {
        workload: "produce".into(),
        messages: p.messages,
        bytes: p.bytes,
        seconds,
        latency_us: Some(p.latency),
    })
}

struct Consumed {
    messages: u64,
    bytes: u64,
    latency: Histogram<u64>,
}

/// Runs `o.consumers` consumers over the topic's partitions from `from`
/// until `target` records arrived in total, `stop` is set and they fall
/// idle, or nothing arrives for `idle`.
async fn run_consumers(
    o: &Options,
    from: SeekTo,
    target: Option<u64>,
    stop: Arc<AtomicBool>,
    idle: Duration,
    progress: Arc<Progress>,
    ready: mpsc::Sender<()>,
) -> Result<Consumed, ClientError> {
    let cluster = Cluster::new(&o.bootstrap, "rill-bench")?;
    let partitions: Vec<u32> = cluster
        .topic(&o.topic)
        .await?
        .partitions
        .iter()
        .map(|p| p.partition)
        .collect();
    let count = o.consumers.clamp(1, partitions.len().max(1));
    let total = Arc::new(AtomicU64::new(0));
    // Partitions each group member reads now.
    let assigned: Arc<Vec<AtomicUsize>> =
        Arc::new((0..count).map(|_| AtomicUsize::new(0)).collect());
    let partitions = Arc::new(partitions);
    let mut tasks = Vec::new();
    for i in 0..count {
        let partitions = Arc::clone(&partitions);
        let mine: Vec<u32> = partitions
            .iter()
            .copied()
            .filter(|p| *p as usize % count == i)
            .collect();
        let (o, total, stop, progress, ready) = (
            o.clone(),
            Arc::clone(&total),
            Arc::clone(&stop),
            Arc::clone(&progress),
            ready.clone(),
        );
        let assigned = Arc::clone(&assigned);
        tasks.push(tokio::spawn(async move {
            let cluster = Cluster::new(&o.bootstrap, &format!("rill-bench-consumer-{i}"))?;
            let mut consumer = Consumer::new(cluster, ConsumerConfig::default());
            // Ready once reading: at once for assigned partitions; for a
            // group, once the group has handed out every partition.
            let mut ready = Some(ready);
            match &o.group {
                None => {
                    consumer.assign(&o.topic, Some(mine), from).await?;
                    ready = None;
                }
                Some(group) => {
                    let mut config = GroupConfig::new(group.clone());
                    config.auto_offset_reset = match from {
                        SeekTo::Earliest => OffsetReset::Earliest,
                        _ => OffsetReset::Latest,
                    };
                    consumer.subscribe(config, vec![o.topic.clone()])?;
                }
            }
            let mut out = Consumed {
                messages: 0,
                bytes: 0,
                latency: latency_histogram(),
            };
            let mut last = Instant::now();
            loop {
                if target.is_some_and(|t| total.load(Ordering::Relaxed) >= t) {
                    break;
                }
                let records = consumer.poll(Duration::from_millis(200)).await?;
                if ready.is_some() {
                    assigned[i].store(consumer.positions().len(), Ordering::Relaxed);
                    let total: usize = assigned.iter().map(|a| a.load(Ordering::Relaxed)).sum();
                    if total >= partitions.len() {
                        ready = None;
                    } else {
                        // Not reading everything yet: not idle either.
                        last = Instant::now();
                    }
                }
                if records.is_empty() {
                    if last.elapsed() >= idle || (stop.load(Ordering::Relaxed) && target.is_none())
                    {
                        break;
                    }
                    continue;
                }
                last = Instant::now();
                let now = now_us();
                for r in &records {
                    let v = r.value.as_deref().unwrap_or_default();
                    out.bytes += v.len() as u64;
                    if v.len() >= 8 {
                        let sent = u64::from_le_bytes(v[..8].try_into().expect("8 bytes"));
                        let _ = out.latency.record(now.saturating_sub(sent).max(1));
                    }
                }
                out.messages += records.len() as u64;
                total.fetch_add(records.len() as u64, Ordering::Relaxed);
                progress
                    .records
                    .fetch_add(records.len() as u64, Ordering::Relaxed);
            }
            drop(ready);
            if o.group.is_some() {
                // Commits what was read and leaves, so the others need not
                // wait out a session.
                consumer.close().await?;
            }
            Ok::<_, ClientError>(out)
        }));
    }
    drop(ready);
    let mut all = Consumed {
        messages: 0,
        bytes: 0,
        latency: latency_histogram(),
    };
    for t in tasks {
        let c = t
            .await
            .map_err(|e| ClientError::Invalid(format!("consumer task failed: {e}")))??;
        all.messages += c.messages;
        all.bytes += c.bytes;
        let _ = all.latency.add(&c.latency);
    }
    Ok(all)
}

/// The records `topic` holds: its partitions' high watermarks less their
/// log start offsets.
async fn held_records(o: &Options) -> Result<u64, ClientError> {
    let cluster = Cluster::new(&o.bootstrap, "rill-bench")?;
    let mut consumer = Consumer::new(cluster, ConsumerConfig::default());
    consumer.assign(&o.topic, None, SeekTo::Earliest).await?;
    let start: u64 = consumer.positions().values().sum();
    consumer.assign(&o.topic, None, SeekTo::Latest).await?;
    let end: u64 = consumer.positions().values().sum();
    Ok(end.saturating_sub(start))
}

/// `consume`: read the topic from the start; throughput only.
pub async fn consume(o: &Options, progress: Arc<Progress>) -> Result<Summary, ClientError> {
    let target = if o.consume_held {
        Some(held_records(o).await?)
    } else {
        o.messages
    };
    let started = Instant::now();
    let (ready, _) = mpsc::channel(o.consumers.max(1));
    let idle = if target.is_some() {
        Duration::from_secs(10)
    } else {
        o.duration
    };
    let c = run_consumers(
        o,
        SeekTo::Earliest,
        target,
        Arc::new(AtomicBool::new(false)),
        idle,
        progress,
        ready,
    )
    .await?;
    Ok(Summary {
        workload: "consume".into(),
        messages: c.messages,
        bytes: c.bytes,
        seconds: started.elapsed().as_secs_f64(),
        latency_us: None,
    })
}

/// `e2e`: consumers from the end of the topic, then producers; latency from
/// each record's send time to its arrival.
pub async fn e2e(o: &Options, progress: Arc<Progress>) -> Result<Summary, ClientError> {
    if o.message_size_bytes < 8 {
        return Err(ClientError::Invalid(
            "e2e needs --message-size of at least 8 bytes".into(),
        ));
    }
    ensure_topic(o).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, mut ready_rx) = mpsc::channel(o.consumers.max(1));
    let consumers = {
        let (o, stop) = (o.clone(), Arc::clone(&stop));
        let progress = Arc::new(Progress::default());
        tokio::spawn(async move {
            run_consumers(
                &o,
                SeekTo::Latest,
                o.messages,
                stop,
                Duration::from_secs(10),
                progress,
                ready_tx,
            )
            .await
        })
    };
    // Producers start once every consumer sits at the end of the topic.
    while ready_rx.recv().await.is_some() {}
    let started = Instant::now();
    let (p, _) = run_producers(o, progress, true).await?;
    stop.store(true, Ordering::Relaxed);
    let c = consumers
        .await
        .map_err(|e| ClientError::Invalid(format!("consumers failed: {e}")))??;
    if p.failed > 0 || c.messages < p.messages {
        return Err(ClientError::Invalid(format!(
            "{} records produced, {} failed, {} consumed",
            p.messages, p.failed, c.messages
        )));
    }
    Ok(Summary {
        workload: "e2e".into(),
        messages: c.messages,
        bytes: c.bytes,
        seconds: started.elapsed().as_secs_f64(),
        latency_us: Some(c.latency),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_values_are_the_same_every_run_and_differ_from_one_another() {
        assert_eq!(text_corpus(4096), text_corpus(4096));
        assert!(text_corpus(4096).len() >= 4096);
        let mut v = Values::new(ValueKind::Text, 100);
        let (a, b) = (v.next(), v.next());
        assert_eq!((a.len(), b.len()), (100, 100));
        assert_ne!(a, b);
        let stamped = v.stamped(42);
        assert_eq!(&stamped[..8], &42u64.to_le_bytes());
        assert_eq!(stamped.len(), 100);
        let mut r = Values::new(ValueKind::Repeated, 10);
        assert_eq!(r.next(), Bytes::from(vec![b'r'; 10]));
    }
}
