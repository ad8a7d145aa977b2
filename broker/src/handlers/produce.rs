//! Produce, in two stages. [`stage_produce`] checks every partition and
//! queues its proposal, in request order, and is awaited by the router
//! before the connection reads its next request: that is what keeps
//! produces on one connection proposed in the order they arrived.
//! [`finish_produce`] then waits for each partition's `acks` under one
//! deadline for the whole request, overlapping with later requests' waits.
//! Nothing is proposed before every batch of its partition has passed
//! [`crate::partition::Partition::check`], the one validation gate.

use std::sync::Arc;
use std::time::Duration;

use rill_client::protocol::messages::{
    INTERNAL_TOPIC_PREFIX, ProducePartitionResponse, ProduceRequest, ProduceResponse,
    ProduceTopicResponse,
};
use rill_client::protocol::{ErrorCode, Response};
use rill_replication::{Proposed, ReplicationError};

use super::{hint, leader_here};
use crate::error::BrokerError;
use crate::partition::{LeaderHint, Partition};
use crate::raft::ProposalOutcome;
use crate::state::Broker;

/// Longest a produce waits for durability, ms, whatever the client asks.
pub const PRODUCE_TIMEOUT_MS_LIMIT: u32 = 300_000;

/// A produce request after its first stage: every partition checked and
/// its proposal queued for the Raft thread (or refused).
pub struct StagedProduce {
    acks: i8,
    deadline: tokio::time::Instant,
    topics: Vec<(String, Vec<Staged>)>,
}

/// The first stage of a produce: every partition is checked and its
/// proposal queued, in request order, before any is waited for (the
/// partitions replicate together instead of one commit round trip after
/// another). Produce requests staged one after another are proposed in
/// that order.
pub(super) async fn stage_produce(broker: &Arc<Broker>, p: ProduceRequest) -> StagedProduce {
    let acks_valid = (-1..=1).contains(&p.acks);
    let timeout = Duration::from_millis(u64::from(p.timeout_ms.min(PRODUCE_TIMEOUT_MS_LIMIT)));
    let deadline = tokio::time::Instant::now() + timeout;
    let mut staged = Vec::with_capacity(p.topics.len());
    for t in p.topics {
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for part in t.partitions {
            partitions.push(if acks_valid {
                propose_partition(broker, &t.name, part.partition, &part.records).await
            } else {
                Staged::Answered(produce_error(
                    part.partition,
                    ErrorCode::InvalidRequiredAcks,
                    LeaderHint::default(),
                ))
            });
        }
        staged.push((t.name, partitions));
    }
    StagedProduce {
        acks: p.acks,
        deadline,
        topics: staged,
    }
}

/// The second stage of a produce: each partition waited for at its `acks`
/// level, until one deadline for the whole request. No response for
/// `acks=0`.
pub(super) async fn finish_produce(staged: StagedProduce) -> Option<Response> {
    let StagedProduce {
        acks,
        deadline,
        topics: staged,
    } = staged;
    let mut topics = Vec::with_capacity(staged.len());
    for (name, partitions) in staged {
        let mut answers = Vec::with_capacity(partitions.len());
        for s in partitions {
            answers.push(match s {
                Staged::Answered(r) => r,
                Staged::Proposed(q) => answer_partition(&name, q, acks, deadline).await,
            });
        }
        topics.push(ProduceTopicResponse {
            name,
            partitions: answers,
        });
    }
    (acks != 0).then_some(Response::Produce(ProduceResponse { topics }))
}

/// A partition of a produce after its first stage.
enum Staged {
    /// Refused before anything was proposed.
    Answered(ProducePartitionResponse),
    /// Proposed: the outcome is on its way from the Raft thread.
    Proposed(Queued),
}

/// A proposal queued for the Raft thread.
struct Queued {
    partition: Arc<Partition>,
    index: u32,
    outcome: ProposalOutcome,
    /// Bytes and records proposed, counted once stored.
    bytes: u64,
    records: u64,
}

/// The first stage of one partition of a produce: looked up, checked in
/// full, and queued for its Raft group (waiting only for room in the
/// queue).
async fn propose_partition(
    broker: &Arc<Broker>,
    topic: &str,
    index: u32,
    records: &[bytes::Bytes],
) -> Staged {
    if topic.starts_with(INTERNAL_TOPIC_PREFIX) {
        // The broker's own records (committed offsets): only it writes them.
        return Staged::Answered(produce_error(
            index,
            ErrorCode::InvalidTopic,
            LeaderHint::default(),
        ));
    }
    let partition = match leader_here(broker, topic, index) {
        Ok(p) => p,
        Err((error, leader)) => return Staged::Answered(produce_error(index, error, leader)),
    };
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let batches = match partition.check(records, now_ms) {
        Ok(b) => b,
        Err(e) => return Staged::Answered(produce_error(index, e, LeaderHint::default())),
    };
    let (bytes, records) = batches.iter().fold((0u64, 0u64), |(b, r), batch| {
        (
            b + batch.bytes().len() as u64,
            r + u64::from(batch.header().record_count),
        )
    });
    match broker.raft.propose_queued(partition.group, batches).await {
        Ok(outcome) => Staged::Proposed(Queued {
            partition,
            index,
            outcome,
            bytes,
            records,
        }),
        Err(_stopped) => Staged::Answered(produce_error(
            index,
            ErrorCode::NotLeader,
            partition.retry_hint(),
        )),
    }
}

/// The second stage: the proposal's outcome, then the wait for the `acks`
/// level, until `deadline`.
async fn answer_partition(
    topic: &str,
    q: Queued,
    acks: i8,
    deadline: tokio::time::Instant,
) -> ProducePartitionResponse {
    let Queued {
        partition,
        index,
        outcome,
        bytes,
        records,
    } = q;
    let (first, last, proposed_at) = match proposal_outcome(topic, &partition, outcome).await {
        Ok(p) => p,
        Err((error, leader)) => return produce_error(index, error, leader),
    };
    // Appended (a retry the log held already is not stored again).
    if !last.duplicate {
        partition.record_produced(bytes, records);
    }
    // A retried batch the log holds already is answered once its first
    // copy is committed, whatever `acks` asked: that copy may have come
    // from an earlier leader, whose appends this one never saw.
    let error = if acks == 0 {
        ErrorCode::None
    } else if last.duplicate && last.next_offset.get() <= partition.log_start_offset() {
        // Retention took it since: only what was applied is ever taken.
        ErrorCode::None
    } else {
        let committed = acks == -1 || last.duplicate;
        let error = wait_acks(&partition, &last, committed, deadline).await;
        if error == ErrorCode::None && !last.duplicate {
            let stage = if committed {
                crate::metrics::ProduceStage::Commit
            } else {
                crate::metrics::ProduceStage::Append
            };
            crate::metrics::produce_stage(stage, proposed_at.elapsed());
        }
        error
    };
    let leader = if error == ErrorCode::NotLeader {
        partition.leadership().hint()
    } else {
        LeaderHint::default()
    };
    ProducePartitionResponse {
        partition: index,
        error,
        leader_hint: hint(leader.leader),
        leader_epoch: leader.epoch.get(),
        base_offset: first.base_offset.get(),
        log_start_offset: partition.log_start_offset(),
    }
}

/// What the Raft thread made of a proposal to `partition` of `topic`: its
/// first and last entries and when they were proposed, or the code (and
/// where to try instead) that refuses it.
pub(crate) async fn proposal_outcome(
    topic: &str,
    partition: &Partition,
    outcome: ProposalOutcome,
) -> Result<(Proposed, Proposed, std::time::Instant), (ErrorCode, LeaderHint)> {
    let (result, proposed_at) = match outcome.await {
        Ok(p) => (Ok(p.result), p.proposed_at),
        Err(stopped) => (Err(stopped), std::time::Instant::now()),
    };
    let proposed = match result {
        Ok(Ok(p)) => p,
        Ok(Err(ReplicationError::NotLeader { leader, .. })) => {
            return Err((ErrorCode::NotLeader, partition.hint_for(leader)));
        }
        Ok(Err(e)) if e.is_retriable() => {
            return Err((ErrorCode::NotLeader, partition.retry_hint()));
        }
        Ok(Err(
            e @ (ReplicationError::OutOfOrderSequence { .. }
            | ReplicationError::ProducerFenced { .. }),
        )) => {
            // The producer's own doing, answered to it; nothing failed here.
            tracing::debug!(topic, partition = partition.index, error = %e, "batch refused");
            return Err((BrokerError::Storage(e).code(), LeaderHint::default()));
        }
        Ok(Err(e)) => {
            let e = BrokerError::Storage(e);
            tracing::warn!(topic, partition = partition.index, error = %e, "proposal failed");
            return Err((e.code(), LeaderHint::default()));
        }
        Err(_stopped) => return Err((ErrorCode::NotLeader, partition.retry_hint())),
    };
    // The entry waited for is the one with the highest index: a batch
    // another client retried may be answered from an entry older than the
    // batches proposed after it.
    match (proposed.first(), proposed.iter().max_by_key(|p| p.index)) {
        (Some(first), Some(last)) => Ok((*first, *last, proposed_at)),
        _ => Err((ErrorCode::InvalidRequest, LeaderHint::default())),
    }
}

/// Waits, until `deadline`, for `last` to be committed (`committed`) or
/// appended to the leader's log: `None`, or the code the wait ended with.
pub(crate) async fn wait_acks(
    partition: &Partition,
    last: &Proposed,
    committed: bool,
    deadline: tokio::time::Instant,
) -> ErrorCode {
    match tokio::time::timeout_at(
        deadline,
        partition.wait_for(last.index, last.term, committed),
    )
    .await
    {
        Ok(Ok(())) => ErrorCode::None,
        Ok(Err(e)) => e,
        Err(_) => ErrorCode::RequestTimedOut,
    }
}

fn produce_error(partition: u32, error: ErrorCode, leader: LeaderHint) -> ProducePartitionResponse {
    ProducePartitionResponse {
        partition,
        error,
        leader_hint: hint(leader.leader),
        leader_epoch: leader.epoch.get(),
        base_offset: 0,
        log_start_offset: 0,
    }
}
