//! The sender: the task that takes sealed batches out of the accumulator,
//! sends them to partition leaders and records what the brokers said, and
//! the bookkeeping that keeps each partition's requests in order while up
//! to [`ProducerConfig::max_in_flight_per_partition`] of them are in flight.
//!
//! Why it is shaped so: a broker appends the requests of one connection in
//! the order they arrive, and nothing else orders them. So requests are
//! written to their connections by this one task, a round at a time, and
//! every request of a partition that is in flight rides the same
//! connection; one whose predecessor went out on another connection (its
//! leader changed) or not at all is held instead of sent. A retriable
//! failure is held too, until every other request of its partition has
//! answered; then everything held goes back to the front of the partition's
//! queue in its first order, so a retry never overtakes a batch still to be
//! retried. A leader that moved is already in the metadata and is retried
//! at once; a broker down or a leader unknown drops the partition's
//! metadata and waits the retry backoff. Every batch is resolved once, by
//! the answer to its last try or by its delivery deadline, and only then
//! gives its room back to `send`.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::accumulator::{Accumulator, PartitionQueue, SealedBatch};
use super::delivery::{BatchOutcome, BatchResult};
use super::{Acks, ProducerConfig, Shared, lock};
use crate::cluster::Cluster;
use crate::connection::Connection;
use crate::error::ClientError;
use crate::protocol::messages::{ProducePartition, ProduceRequest, ProduceTopic};
use crate::protocol::{ErrorCode, Request, Response};

/// How long an idempotent producer's request waits for its answer before
/// the producer asks the other brokers whether its partitions moved, ms:
/// an `acks=all` answer takes milliseconds, an election after a leader
/// stops answering one to two seconds.
pub const LEADER_PATIENCE_MS: u64 = 1_000;

/// A request of one partition on its way to the broker or back.
pub(super) struct InFlight {
    /// The request's place in its partition's order.
    pub(super) seq: u64,
    /// Its batches' outcomes, for `flush` to wait on.
    pub(super) outcomes: Vec<Arc<BatchOutcome>>,
    /// The connection it went out on; `None` until it did.
    pub(super) conn: Option<Arc<Connection>>,
}

/// A partition's batches, taken out to be sent in one request.
pub(super) struct PartitionSend {
    pub(super) topic: Arc<str>,
    pub(super) partition: u32,
    /// The request's place in its partition's order ([`InFlight::seq`]).
    pub(super) seq: u64,
    pub(super) batches: Vec<SealedBatch>,
}

/// What the broker said about a [`PartitionSend`]: `None` when it was not
/// sent because an earlier request of its partition is in flight on
/// another connection, so it waits and goes again after that one.
struct Completion {
    send: PartitionSend,
    result: Option<BatchResult>,
}

impl Accumulator {
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
        let topic = self.topics.get_mut(&*send.topic);
        let idempotent = topic.as_ref().is_some_and(|t| t.producer_id.is_some());
        let queue = topic.and_then(|t| t.partitions.get_mut(send.partition as usize));
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
        // `OutOfOrderSequence` while an earlier request of the partition
        // is still to be answered or retried: the broker is missing that
        // one, which goes again first; this one follows it as it is.
        let earlier_pending = q.in_flight.iter().any(|f| f.seq < send.seq)
            || q.held.iter().any(|(s, _)| *s < send.seq);
        let failed_for_good = match &result {
            None => !in_time,
            Some(Err(e)) => {
                !(in_time && (e.is_retriable() || (earlier_pending && is_out_of_order(e))))
            }
            Some(Ok(_)) => false,
        };
        let released = match result {
            Some(Err(e)) if is_out_of_order(&e) && earlier_pending && in_time => {
                tracing::debug!(topic = %send.topic, partition = send.partition, "retrying after the batch before it");
                q.hold(send.seq, send.batches);
                0
            }
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
        if failed_for_good && idempotent {
            q.start_new_epoch();
        }
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

fn is_out_of_order(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Broker {
            code: ErrorCode::OutOfOrderSequence,
            ..
        }
    )
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

pub(super) async fn run_sender(shared: Arc<Shared>) {
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
        let addr = conn.addr().to_string();
        tokio::spawn(async move {
            let answer = pending.wait(timeout + Duration::from_secs(5));
            let response = if shared.config.is_idempotent() {
                // A leader that stops answering is given up on once the
                // others name a new one: the request goes again there,
                // where a batch already stored is answered with its first
                // offsets. Without idempotence that could store it twice,
                // so the request waits out its timeout.
                let partitions: Vec<(String, u32)> = group
                    .iter()
                    .map(|s| (s.topic.to_string(), s.partition))
                    .collect();
                let patience = Duration::from_millis(LEADER_PATIENCE_MS);
                tokio::select! {
                    r = answer => r,
                    (leader, leader_epoch) = shared.cluster.until_moved_from(&addr, &partitions, patience) => {
                        Err(ClientError::LeaderMoved { leader, leader_epoch })
                    }
                }
            } else {
                answer.await
            };
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
    use std::collections::VecDeque;

    use bytes::Bytes;

    use super::super::accumulator::TopicQueues;
    use super::super::{DeliveryFuture, ProducerRecord};
    use super::*;

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
        acc.topics
            .insert("t".into(), TopicQueues::new("t", 1, None));
        (acc, config)
    }

    /// As [`pipelined`], for an idempotent producer with id 42.
    fn idempotent(in_flight_max: usize) -> (Accumulator, ProducerConfig) {
        let (mut acc, config) = pipelined(in_flight_max);
        acc.topics
            .insert("t".into(), TopicQueues::new("t", 1, Some(42)));
        (acc, config)
    }

    /// Producer id, epoch and first sequence of each batch of `sends`.
    fn stamps(sends: &[PartitionSend]) -> Vec<(i64, i16, i32)> {
        sends
            .iter()
            .flat_map(|s| s.batches.iter())
            .map(|b| {
                let h = rill_storage::batch::validate(&b.bytes, usize::MAX).expect("a valid batch");
                (h.producer_id, h.producer_epoch, h.base_sequence)
            })
            .collect()
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

    /// Completes `send` with `result` as the sender would.
    fn answer(
        acc: &mut Accumulator,
        config: &ProducerConfig,
        send: PartitionSend,
        result: Option<BatchResult>,
    ) -> usize {
        let cluster = Cluster::new("127.0.0.1:9", "test").expect("an address");
        acc.complete(Completion { send, result }, config, &cluster)
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
        let mut sends = sends.into_iter();
        let first = sends.next().expect("three sends");
        answer(&mut acc, &config, first, Some(Ok(Some(0))));
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
        let mut sends: VecDeque<PartitionSend> =
            collect_all(&mut acc, &config, Instant::now()).into();
        assert_eq!(sends.len(), 3);
        let (s0, s1, s2) = (sends.pop_front(), sends.pop_front(), sends.pop_front());
        let [s0, s1, s2] = [s0, s1, s2].map(|s| s.expect("three sends"));

        // The first fails while the others are in flight: it is held, and
        // the partition sends nothing new (the fourth batch waits).
        answer(&mut acc, &config, s0, not_leader());
        assert!(collect_all(&mut acc, &config, Instant::now()).is_empty());
        // The second succeeds, the third fails too.
        answer(&mut acc, &config, s1, Some(Ok(Some(7))));
        assert_eq!(offset_of(&futures[1]), Some(Some(7)));
        answer(&mut acc, &config, s2, not_leader());
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
        let mut sends = collect_all(&mut acc, &config, Instant::now()).into_iter();
        let (s0, s1) = (sends.next().expect("two"), sends.next().expect("two"));
        answer(&mut acc, &config, s1, None);
        answer(&mut acc, &config, s0, Some(Ok(Some(0))));
        let again = collect_all(&mut acc, &config, Instant::now());
        assert_eq!(again.len(), 1, "sent again at once");
    }

    #[test]
    fn an_idempotent_producer_stamps_consecutive_sequences_and_retries_each_batch_alone() {
        let (mut acc, mut config) = idempotent(5);
        config.request_bytes_max = 1 << 20;
        let _futures = append(&mut acc, &config, 3);
        let sends = collect_all(&mut acc, &config, Instant::now());
        assert_eq!(sends.len(), 1, "first sends share a request");
        assert_eq!(stamps(&sends), [(42, 0, 0), (42, 0, 1), (42, 0, 2)]);
        let send = sends.into_iter().next().expect("one send");
        answer(&mut acc, &config, send, not_leader());
        let later = Instant::now() + Duration::from_millis(config.retry_backoff_ms + 1);
        let retried = collect_all(&mut acc, &config, later);
        assert_eq!(retried.len(), 3, "a retried batch goes alone");
        assert_eq!(stamps(&retried), [(42, 0, 0), (42, 0, 1), (42, 0, 2)]);
    }

    #[test]
    fn out_of_order_behind_a_failed_request_is_retried_after_it_in_order() {
        let (mut acc, config) = idempotent(3);
        let futures = append(&mut acc, &config, 2);
        let mut sends = collect_all(&mut acc, &config, Instant::now()).into_iter();
        let (s0, s1) = (sends.next().expect("two"), sends.next().expect("two"));
        // The broker missed the first (its leader changed) and so refused
        // the second as out of order: both go again, first one first.
        answer(
            &mut acc,
            &config,
            s1,
            Some(Err(ClientError::code(ErrorCode::OutOfOrderSequence))),
        );
        answer(&mut acc, &config, s0, not_leader());
        assert_eq!(offset_of(&futures[1]), None, "not failed");
        let later = Instant::now() + Duration::from_millis(config.retry_backoff_ms + 1);
        let retried = collect_all(&mut acc, &config, later);
        assert_eq!(
            stamps(&retried),
            [(42, 0, 0), (42, 0, 1)],
            "same stamps, same order"
        );
    }

    #[test]
    fn a_batch_failed_for_good_moves_the_partition_to_a_new_epoch_restamping_what_never_went() {
        let (mut acc, config) = idempotent(1);
        let futures = append(&mut acc, &config, 3);
        let first = collect_all(&mut acc, &config, Instant::now());
        assert_eq!(stamps(&first), [(42, 0, 0)]);
        let first = first.into_iter().next().expect("one send");
        answer(
            &mut acc,
            &config,
            first,
            Some(Err(ClientError::code(ErrorCode::RecordTooLarge))),
        );
        assert!(matches!(
            futures[0].batch.result.get(),
            Some(Err(ClientError::Broker {
                code: ErrorCode::RecordTooLarge,
                ..
            }))
        ));
        // The two that never went follow from sequence 0 of epoch 1.
        let rest = collect_all(&mut acc, &config, Instant::now());
        assert_eq!(stamps(&rest), [(42, 1, 0)]);
        let second = rest.into_iter().next().expect("one send");
        answer(&mut acc, &config, second, Some(Ok(Some(0))));
        let third = collect_all(&mut acc, &config, Instant::now());
        assert_eq!(stamps(&third), [(42, 1, 1)]);
    }

    #[test]
    fn out_of_order_with_nothing_before_it_fails_the_batch() {
        let (mut acc, config) = idempotent(1);
        let futures = append(&mut acc, &config, 1);
        let send = collect_all(&mut acc, &config, Instant::now())
            .into_iter()
            .next()
            .expect("one send");
        answer(
            &mut acc,
            &config,
            send,
            Some(Err(ClientError::code(ErrorCode::OutOfOrderSequence))),
        );
        assert!(matches!(
            futures[0].batch.result.get(),
            Some(Err(ClientError::Broker {
                code: ErrorCode::OutOfOrderSequence,
                ..
            }))
        ));
    }

    #[test]
    fn an_idempotent_partition_has_at_most_a_window_of_batches_unanswered() {
        let (mut acc, mut config) = idempotent(5);
        config.request_bytes_max = 1 << 20;
        let window = rill_storage::producers::PRODUCER_WINDOW_BATCHES;
        let _futures = append(&mut acc, &config, window as u32 + 10);
        let sends = collect_all(&mut acc, &config, Instant::now());
        let unanswered: usize = sends.iter().map(|s| s.batches.len()).sum();
        assert_eq!(unanswered, window, "the rest waits for answers");
        let first = sends.into_iter().next().expect("a send");
        let answered = first.batches.len();
        answer(&mut acc, &config, first, Some(Ok(Some(0))));
        let more = collect_all(&mut acc, &config, Instant::now());
        let sent: usize = more.iter().map(|s| s.batches.len()).sum();
        assert_eq!(sent, answered.min(10), "as many as were answered");
    }
}
