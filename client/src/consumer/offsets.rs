//! Finding where to start reading a partition: `ListOffsets` for the log
//! start, the high watermark or a timestamp, retried while leaders move.

use std::time::Duration;

use super::{ConsumerConfig, SeekTo};
use crate::cluster::Cluster;
use crate::error::ClientError;
use crate::protocol::messages::{
    EARLIEST_TIMESTAMP, LATEST_TIMESTAMP, ListOffsetsPartition, ListOffsetsRequest,
    ListOffsetsTopic,
};
use crate::protocol::{ErrorCode, Request, Response};

/// How long finding a starting offset retries while leaders move, ms, by
/// default ([`ConsumerConfig::leader_wait_ms`]).
pub const LIST_OFFSETS_RETRY_MS: u64 = 30_000;

/// The offset `to` names in `topic`/`partition`, waiting at most
/// `config.leader_wait_ms` for the partition to have a leader.
pub(super) async fn resolve(
    cluster: &Cluster,
    config: &ConsumerConfig,
    topic: &str,
    partition: u32,
    to: SeekTo,
) -> Result<u64, ClientError> {
    let deadline = crate::cluster::deadline_after(Duration::from_millis(config.leader_wait_ms));
    let list = |timestamp_ms| {
        list_offset(
            cluster,
            config.request_timeout_ms,
            deadline,
            topic,
            partition,
            timestamp_ms,
        )
    };
    Ok(match to {
        SeekTo::Offset(o) => o,
        SeekTo::Earliest => list(EARLIEST_TIMESTAMP).await?,
        SeekTo::Latest => list(LATEST_TIMESTAMP).await?,
        SeekTo::BeforeEnd(n) => {
            let end = list(LATEST_TIMESTAMP).await?;
            let start = list(EARLIEST_TIMESTAMP).await?;
            end.saturating_sub(n).max(start)
        }
        SeekTo::Timestamp(t) => {
            let o = list(t.max(0)).await?;
            if o == u64::MAX {
                list(LATEST_TIMESTAMP).await?
            } else {
                o
            }
        }
    })
}

/// The offset for a `ListOffsets` timestamp; `u64::MAX` for "none".
/// Retriable errors (a leader moving, a broker down) are retried with
/// fresh metadata until `deadline`; a partition still without a reachable
/// leader then is [`ClientError::NoLeader`].
async fn list_offset(
    cluster: &Cluster,
    request_timeout_ms: u64,
    deadline: tokio::time::Instant,
    topic: &str,
    partition: u32,
    timestamp_ms: i64,
) -> Result<u64, ClientError> {
    let started = tokio::time::Instant::now();
    let mut pause_ms = 50;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        // No attempt outlives the deadline.
        let attempt_ms = request_timeout_ms.min(left.as_millis() as u64).max(1);
        let attempt = tokio::time::timeout(
            left.max(Duration::from_millis(1)),
            list_offset_once(cluster, attempt_ms, topic, partition, timestamp_ms),
        )
        .await
        .unwrap_or(Err(ClientError::Timeout { ms: attempt_ms }));
        let now = tokio::time::Instant::now();
        match attempt {
            Err(ClientError::LeaderMoved { .. }) if now < deadline => {}
            Err(e) if e.is_retriable() && now < deadline => {
                tracing::debug!(topic, partition, error = %e, "list offsets will be retried");
                cluster.invalidate_partition(topic, partition);
                let pause = Duration::from_millis(pause_ms).min(deadline - now);
                tokio::time::sleep(pause).await;
                pause_ms = (pause_ms * 2).min(1_000);
            }
            Err(e) if e.is_retriable() || matches!(e, ClientError::LeaderMoved { .. }) => {
                tracing::debug!(topic, partition, error = %e, "no leader within the wait");
                return Err(ClientError::NoLeader {
                    topic: topic.to_string(),
                    partition,
                    waited_ms: now.duration_since(started).as_millis() as u64,
                });
            }
            other => return other,
        }
    }
}

async fn list_offset_once(
    cluster: &Cluster,
    request_timeout_ms: u64,
    topic: &str,
    partition: u32,
    timestamp_ms: i64,
) -> Result<u64, ClientError> {
    let conn = cluster.leader(topic, partition).await?;
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
            Duration::from_millis(request_timeout_ms),
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
        return Err(cluster.partition_error(
            topic,
            partition,
            p.error,
            p.leader_hint,
            p.leader_epoch,
        ));
    }
    Ok(u64::try_from(p.offset).unwrap_or(u64::MAX))
}
