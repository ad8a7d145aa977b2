//! The accumulator: every partition's open batch, its sealed batches
//! waiting to go, and the bookkeeping of its requests that the sender keeps
//! beside them under the same lock.
//!
//! A record is copied once, by the caller's task, straight into its
//! partition's one open batch; the batch is sealed when it reaches
//! [`ProducerConfig::batch_size_bytes`], when the next record does not fit,
//! when it has lingered [`ProducerConfig::linger_ms`], on `flush` and when
//! closing. Sealed bytes never change: a retry sends the very same batch
//! again. A partition's sealed batches wait in the order they were sealed
//! and leave only from the front, so they go out in that order, as one
//! partition's records must. A batch's delivery deadline starts when it
//! opens; one still waiting at the front of its queue past it fails with a
//! timeout and gives its room back instead of going out late. Nothing here
//! awaits or does I/O: `send`, `flush` and the sender task all hold this
//! state's one lock, briefly.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rill_storage::producers::{PRODUCER_WINDOW_BATCHES, sequence_after};
use rill_storage::{BatchBuilder, MAX_BATCH_BYTES_DEFAULT, NewRecord, ProducerStamp};
use tokio::time::Instant;

use super::delivery::{BatchOutcome, DeliveryFuture};
use super::sender::{InFlight, PartitionSend};
use super::{ProducerConfig, ProducerRecord, too_large};
use crate::error::ClientError;
use crate::partitioner::partition_for_key;
use crate::protocol::ErrorCode;

#[derive(Default)]
pub(super) struct Accumulator {
    pub(super) topics: HashMap<String, TopicQueues>,
    pub(super) closing: bool,
}

pub(super) struct TopicQueues {
    name: Arc<str>,
    /// The idempotent producer's id, stamped on every batch sealed; `None`
    /// without idempotence.
    pub(super) producer_id: Option<i64>,
    pub(super) partitions: Vec<PartitionQueue>,
    /// Where keyless records go until that partition's batch is sealed.
    sticky: u32,
    /// When the partition count was last looked at.
    checked_at: Instant,
}

/// How often a producer looks at a topic's partition count again, ms: the
/// look is a cache read unless the cluster's metadata for the topic has
/// aged (see [`crate::cluster::METADATA_MAX_AGE_MS_DEFAULT`]).
pub const PARTITIONS_CHECK_MS: u64 = 1_000;

#[derive(Default)]
pub(super) struct PartitionQueue {
    open: Option<OpenBatch>,
    pub(super) ready: VecDeque<SealedBatch>,
    /// This partition's requests in flight, oldest first.
    pub(super) in_flight: VecDeque<InFlight>,
    /// Requests that failed with a retriable error (or were not sent, so as
    /// not to overtake an earlier one) while others were still in flight,
    /// ordered by `seq`. Once nothing is in flight they go back to the
    /// front of `ready`; until then the partition sends nothing new.
    pub(super) held: Vec<(u64, Vec<SealedBatch>)>,
    /// Whether a held request's failure calls for the retry backoff (a
    /// broker down or a leader unknown, rather than a leader that moved).
    pub(super) held_backoff: bool,
    /// The sequence number of this partition's next request.
    next_seq: u64,
    pub(super) retry_at: Option<Instant>,
    /// The idempotent producer's epoch on this partition: it starts at 0
    /// and moves on whenever a batch fails for good, since that batch may
    /// or may not be stored and the ones after it cannot follow it (see
    /// [`PartitionQueue::start_new_epoch`]).
    epoch: i16,
    /// The idempotent producer's sequence of the next record sealed here.
    next_sequence: i32,
    /// Set once `epoch` reached `i16::MAX` and another batch failed for
    /// good: no sequence could follow safely, so nothing more is sent.
    epochs_used_up: bool,
}

struct OpenBatch {
    builder: BatchBuilder,
    outcome: Arc<BatchOutcome>,
    records: u32,
    reserved_bytes: usize,
    opened_at: Instant,
    deadline: Instant,
}

pub(super) struct SealedBatch {
    pub(super) bytes: Bytes,
    /// Whether it went out at least once: a batch that did may be stored
    /// and keeps its producer stamp; one that never did may be given
    /// another.
    pub(super) sent: bool,
    pub(super) outcome: Arc<BatchOutcome>,
    pub(super) records: u32,
    pub(super) reserved_bytes: usize,
    pub(super) deadline: Instant,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl TopicQueues {
    pub(super) fn new(name: &str, partitions: usize, producer_id: Option<i64>) -> TopicQueues {
        TopicQueues {
            name: name.into(),
            producer_id,
            partitions: (0..partitions).map(|_| PartitionQueue::default()).collect(),
            sticky: 0,
            checked_at: Instant::now(),
        }
    }

    /// Whether the topic's partition count is to be looked at again (every
    /// [`PARTITIONS_CHECK_MS`]): partitions may have been added.
    pub(super) fn metadata_due(&self) -> bool {
        self.checked_at.elapsed() >= Duration::from_millis(PARTITIONS_CHECK_MS)
    }

    /// Grows the queues to `partitions` (never shrinks: a topic never
    /// loses partitions) and notes the check.
    pub(super) fn grow(&mut self, partitions: usize) {
        while self.partitions.len() < partitions {
            self.partitions.push(PartitionQueue::default());
        }
        self.checked_at = Instant::now();
    }

    /// Copies `record` into its partition's open batch. Returns its future
    /// and whether the sender must look again (a batch opened or sealed).
    pub(super) fn append(
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
                let mut builder = BatchBuilder::with_capacity(
                    MAX_BATCH_BYTES_DEFAULT,
                    config.batch_size_bytes.min(MAX_BATCH_BYTES_DEFAULT),
                );
                builder.compression(config.compression);
                OpenBatch {
                    builder,
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
    pub(super) fn seal(&mut self, partition: u32) {
        let Some(q) = self.partitions.get_mut(partition as usize) else {
            return;
        };
        let Some(open) = q.open.take() else {
            return;
        };
        if open.records == 0 {
            return;
        }
        let mut builder = open.builder;
        if let Some(producer_id) = self.producer_id {
            builder.producer(ProducerStamp {
                producer_id,
                producer_epoch: q.epoch,
                base_sequence: q.next_sequence,
            });
            q.next_sequence = sequence_after(q.next_sequence, open.records);
        }
        let bytes = builder
            .finish()
            .expect("a batch with at least one record always finishes");
        q.ready.push_back(SealedBatch {
            bytes: Bytes::from(bytes),
            sent: false,
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

impl PartitionQueue {
    /// Moves the idempotent producer on to a new epoch on this partition,
    /// after one of its batches failed for good: that batch may or may not
    /// be stored, so the batches after it cannot continue its sequence.
    /// Every batch that never went out is stamped again, in order, from
    /// sequence 0 of the new epoch (the broker takes sequence 0 of a newer
    /// epoch from any producer it knows). A batch that did go out keeps
    /// its stamp: it may be stored, and a retry must be recognised; if it
    /// is not, the broker answers it `OutOfOrderSequence` and it fails too.
    ///
    /// Epochs are the producer's own here: each instance has a producer id
    /// of its own, so no other producer is fenced. After `i16::MAX` such
    /// failures on one partition its epochs are used up: every later batch
    /// of it fails at once (a producer made anew gets a new id).
    pub(super) fn start_new_epoch(&mut self) {
        let Some(epoch) = self.epoch.checked_add(1) else {
            self.epochs_used_up = true;
            return;
        };
        self.epoch = epoch;
        self.next_sequence = 0;
        for b in self.ready.iter_mut().filter(|b| !b.sent) {
            let mut bytes = b.bytes.to_vec();
            rill_storage::batch::restamp_producer(&mut bytes, self.epoch, self.next_sequence);
            self.next_sequence = sequence_after(self.next_sequence, b.records);
            b.bytes = Bytes::from(bytes);
        }
    }
}

/// What one look at the accumulator found.
pub(super) struct Collected {
    pub(super) sends: Vec<PartitionSend>,
    /// The next linger or retry deadline.
    pub(super) wake_at: Option<Instant>,
    /// Room given back by batches that expired unsent.
    pub(super) released_bytes: usize,
    /// Closing and nothing left to send or wait for.
    pub(super) finished: bool,
    /// A partition has more ready batches and room for another request in
    /// flight: look again at once.
    pub(super) more: bool,
}

impl Accumulator {
    /// Seals batches whose linger has passed (all of them when closing),
    /// fails batches past their delivery deadline, and takes the ready
    /// batches of every partition without a request in flight.
    pub(super) fn collect(&mut self, now: Instant, config: &ProducerConfig) -> Collected {
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
                let mut expired = false;
                while q.epochs_used_up && !q.ready.is_empty() {
                    let b = q.ready.pop_front().expect("not empty");
                    b.outcome.set(Err(ClientError::Invalid(
                        "the idempotent producer's epochs on this partition are used up \
                         (32,767 batches failed): make a new producer"
                            .into(),
                    )));
                    out.released_bytes += b.reserved_bytes;
                }
                while q.ready.front().is_some_and(|b| b.deadline <= now) {
                    let b = q.ready.pop_front().expect("front exists");
                    b.outcome.set(Err(ClientError::Timeout {
                        ms: config.delivery_timeout_ms,
                    }));
                    out.released_bytes += b.reserved_bytes;
                    expired = true;
                }
                if expired && topic.producer_id.is_some() {
                    q.start_new_epoch();
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
                // An idempotent producer's batch that went out before goes
                // again alone: the broker answers a batch it holds already
                // with that batch's own offsets, which the next batch's
                // need not follow, and a request is answered with its
                // first offset only. Batches going out for the first time
                // are all stored anew, one after another, so they share
                // requests as without idempotence.
                // And its batches sent but not answered stay within the
                // window of batches a broker remembers per producer, so a
                // retry of any of them is recognised.
                let idempotent = topic.producer_id.is_some();
                let alone = idempotent && q.ready.front().is_some_and(|b| b.sent);
                let unanswered: usize = q.in_flight.iter().map(|f| f.outcomes.len()).sum();
                let batches_max = if idempotent {
                    PRODUCER_WINDOW_BATCHES.saturating_sub(unanswered)
                } else {
                    usize::MAX
                };
                if batches_max == 0 {
                    continue;
                }
                while let Some(b) = q.ready.front() {
                    if !batches.is_empty()
                        && (bytes + b.bytes.len() > config.request_bytes_max
                            || alone
                            || (idempotent && b.sent)
                            || batches.len() >= batches_max)
                    {
                        break;
                    }
                    bytes += b.bytes.len();
                    let mut b = q.ready.pop_front().expect("front exists");
                    b.sent = true;
                    batches.push(b);
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_whose_epochs_are_used_up_fails_its_batches_instead_of_reusing_sequences() {
        let config = ProducerConfig {
            batch_size_bytes: 1,
            ..ProducerConfig::default()
        };
        let mut acc = Accumulator::default();
        let mut topic = TopicQueues::new("t", 1, Some(7));
        topic.partitions[0].epoch = i16::MAX;
        let record = ProducerRecord {
            topic: "t".into(),
            value: Some(Bytes::from_static(b"v")),
            ..ProducerRecord::default()
        };
        let (future, _) = topic.append(&record, 40, &config).expect("fits");
        topic.partitions[0].start_new_epoch();
        assert_eq!(
            topic.partitions[0].epoch,
            i16::MAX,
            "no epoch after the last"
        );
        acc.topics.insert("t".into(), topic);
        let collected = acc.collect(Instant::now(), &config);
        assert!(collected.sends.is_empty(), "nothing sent");
        assert!(matches!(
            future.batch.result.get(),
            Some(Err(ClientError::Invalid(_)))
        ));
    }
}
