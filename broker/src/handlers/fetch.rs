//! Fetch: bounded first ([`bound_fetch`]: each partition once, at most
//! `fetch_max_partitions` of them, at most `fetch_max_bytes` in all), then
//! read, and parked while there is too little data. A parked fetch waits on
//! the partitions it asked for only ([`PartitionWatch`]: their high
//! watermarks and leadership), so a commit elsewhere in the broker never
//! wakes it. A read hands out the log's mapped bytes as they are
//! (zero-copy); the first partition with data always gets a whole batch, so
//! a consumer makes progress whatever its budget.

use std::sync::Arc;
use std::time::Duration;

use rill_client::protocol::ErrorCode;
use rill_client::protocol::messages::{
    FetchPartition, FetchPartitionResponse, FetchRequest, FetchResponse, FetchTopic,
    FetchTopicResponse, NO_BROKER,
};

use super::{hint, replica_here};
use crate::partition::{LeaderHint, PartitionWatch, any_changed};
use crate::state::Broker;

/// Longest a fetch may park, ms, whatever the client asks.
pub const FETCH_MAX_WAIT_MS_LIMIT: u32 = 30_000;

/// A fetch request made safe to answer: each topic named once with each
/// of its partitions once (the first mention wins), and its response
/// budget clamped to `fetch_max_bytes`. `None` when it names more than
/// `fetch_max_partitions` partitions, with the answer to give instead.
fn bound_fetch(broker: &Broker, mut f: FetchRequest) -> Result<FetchRequest, FetchResponse> {
    let mut topics: Vec<FetchTopic> = Vec::new();
    let mut seen: std::collections::HashSet<(String, u32)> = std::collections::HashSet::new();
    for t in f.topics {
        let partitions: Vec<FetchPartition> = t
            .partitions
            .into_iter()
            .filter(|p| seen.insert((t.name.clone(), p.partition)))
            .collect();
        match topics.iter_mut().find(|k| k.name == t.name) {
            Some(known) => known.partitions.extend(partitions),
            None => topics.push(FetchTopic {
                name: t.name,
                partitions,
            }),
        }
    }
    f.max_bytes = f.max_bytes.min(broker.limits.fetch_max_bytes);
    if seen.len() > broker.limits.fetch_max_partitions {
        // Each refusal is smaller than the request's own mention of it.
        return Err(FetchResponse {
            topics: topics
                .into_iter()
                .map(|t| FetchTopicResponse {
                    name: t.name,
                    partitions: t
                        .partitions
                        .iter()
                        .map(|p| FetchPartitionResponse {
                            partition: p.partition,
                            error: ErrorCode::InvalidRequest,
                            leader_hint: NO_BROKER,
                            leader_epoch: 0,
                            high_watermark: 0,
                            log_start_offset: 0,
                            records: Vec::new(),
                        })
                        .collect(),
                })
                .collect(),
        });
    }
    f.topics = topics;
    Ok(f)
}

/// Answers a fetch once it has `min_bytes` of data, an error, or its wait
/// is over.
pub(super) async fn fetch(broker: &Arc<Broker>, f: FetchRequest) -> FetchResponse {
    let f = match bound_fetch(broker, f) {
        Ok(f) => f,
        Err(refused) => return refused,
    };
    let deadline = tokio::time::Instant::now()
        + Duration::from_millis(u64::from(f.max_wait_ms.min(FETCH_MAX_WAIT_MS_LIMIT)));
    // At most `fetch_max_partitions` (`bound_fetch`): one per partition read.
    let mut watches = Vec::new();
    loop {
        // Each partition's watch is taken just before it is read, so data
        // that lands between the read and the wait is not missed.
        watches.clear();
        let (response, bytes) = fetch_once(broker, &f, &mut watches);
        let any_error = response
            .topics
            .iter()
            .flat_map(|t| &t.partitions)
            .any(|p| !p.error.is_ok());
        if bytes >= u64::from(f.min_bytes.max(1))
            || any_error
            || tokio::time::Instant::now() >= deadline
        {
            return response;
        }
        if tokio::time::timeout_at(deadline, any_changed(&mut watches))
            .await
            .is_err()
        {
            return fetch_once(broker, &f, &mut Vec::new()).0;
        }
    }
}

/// Reads every partition of `f` once, within its budget, and adds a watch
/// of each partition it read to `watches`. Returns the response and the
/// bytes of records in it.
fn fetch_once(
    broker: &Arc<Broker>,
    f: &FetchRequest,
    watches: &mut Vec<PartitionWatch>,
) -> (FetchResponse, u64) {
    let mut budget = u64::from(f.max_bytes);
    let mut total = 0u64;
    let topics = f
        .topics
        .iter()
        .map(|t| FetchTopicResponse {
            name: t.name.clone(),
            partitions: t
                .partitions
                .iter()
                .map(|p| {
                    let refused = |error, leader: LeaderHint| FetchPartitionResponse {
                        partition: p.partition,
                        error,
                        leader_hint: hint(leader.leader),
                        leader_epoch: leader.epoch.get(),
                        high_watermark: 0,
                        log_start_offset: 0,
                        records: Vec::new(),
                    };
                    let partition = match replica_here(broker, &t.name, p.partition) {
                        Ok(p) => p,
                        Err((error, leader)) => return refused(error, leader),
                    };
                    // What the response budget still allows; the first
                    // partition with data gets at least one whole batch
                    // whatever the budget (the read always returns one).
                    let max = u64::from(p.partition_max_bytes).min(budget);
                    // Watched before leadership is checked: a leadership
                    // lost after the check wakes a parked fetch, which
                    // would otherwise wait out its time for a partition it
                    // can no longer be answered from.
                    watches.push(partition.watch());
                    if let Some((error, leader)) = partition.not_leader() {
                        return refused(error, leader);
                    }
                    match partition.read(p.fetch_offset, max.max(1)) {
                        Ok((records, high_watermark, log_start_offset)) => {
                            let n: u64 = records.iter().map(|b| b.len() as u64).sum();
                            let records = if total > 0 && n > budget {
                                Vec::new()
                            } else {
                                records
                            };
                            let n: u64 = records.iter().map(|b| b.len() as u64).sum();
                            total += n;
                            budget = budget.saturating_sub(n);
                            FetchPartitionResponse {
                                partition: p.partition,
                                error: ErrorCode::None,
                                leader_hint: NO_BROKER,
                                leader_epoch: 0,
                                high_watermark,
                                log_start_offset,
                                records,
                            }
                        }
                        Err(error) => FetchPartitionResponse {
                            partition: p.partition,
                            error,
                            leader_hint: NO_BROKER,
                            leader_epoch: 0,
                            high_watermark: partition.high_watermark(),
                            log_start_offset: partition.log_start_offset(),
                            records: Vec::new(),
                        },
                    }
                })
                .collect(),
        })
        .collect();
    (FetchResponse { topics }, total)
}
