//! Offsets looked up at partition leaders for the group operations: the
//! high watermarks a group's lag is measured against, and where a reset
//! puts a group's offsets ([`ResetTo`], with its command-line spelling).
//!
//! One `ListOffsets` goes to each leader for all of its partitions of a
//! topic; partitions whose leader moved or could not answer are asked
//! again, with fresh metadata, until the operation's deadline.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{ADMIN_RETRY_MS_MAX, left, unexpected};
use crate::cluster::Cluster;
use crate::connection::Connection;
use crate::error::ClientError;
use crate::protocol::messages::{
    EARLIEST_TIMESTAMP, LATEST_TIMESTAMP, ListOffsetsPartition, ListOffsetsRequest,
    ListOffsetsTopic,
};
use crate::protocol::{Request, Response};

/// Where [`Admin::reset_offsets`](super::Admin::reset_offsets) sets a
/// group's offsets in each partition of a topic. Parsed from `earliest`,
/// `latest`, an offset (`42`) or a time in ms since the epoch after `@`
/// (`@1700000000000`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetTo {
    /// The log start offset: everything still stored is read again.
    Earliest,
    /// The high watermark: only records produced from now on are read.
    Latest,
    /// This offset, brought within the log start offset and the high
    /// watermark of each partition.
    Offset(u64),
    /// The first record at or after this time, ms since the epoch (the
    /// high watermark when there is none). Never negative.
    Timestamp(i64),
}

impl FromStr for ResetTo {
    type Err = ClientError;

    fn from_str(s: &str) -> Result<ResetTo, ClientError> {
        let refused = || {
            ClientError::Invalid(format!(
                "an offset to reset to is earliest, latest, an offset or @TIMESTAMP_MS, not {s:?}"
            ))
        };
        // Digits only: `str::parse` would take a sign too, and a negative
        // time would be read as the wire's earliest or latest.
        let number = |digits: &str| {
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(refused());
            }
            digits.parse::<u64>().map_err(|_| refused())
        };
        match s {
            "earliest" => Ok(ResetTo::Earliest),
            "latest" => Ok(ResetTo::Latest),
            _ => match s.strip_prefix('@') {
                Some(ms) => i64::try_from(number(ms)?)
                    .map(ResetTo::Timestamp)
                    .map_err(|_| refused()),
                None => number(s).map(ResetTo::Offset),
            },
        }
    }
}

impl std::fmt::Display for ResetTo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ResetTo::Earliest => write!(f, "earliest"),
            ResetTo::Latest => write!(f, "latest"),
            ResetTo::Offset(o) => write!(f, "{o}"),
            ResetTo::Timestamp(ms) => write!(f, "@{ms}"),
        }
    }
}

/// The high watermark of each of `partitions` of `topic`; `None` for a
/// partition that no longer exists.
pub(super) async fn high_watermarks(
    cluster: &Cluster,
    topic: &str,
    partitions: &[u32],
    deadline: Instant,
) -> Result<BTreeMap<u32, Option<u64>>, ClientError> {
    cluster.invalidate(topic);
    let existing: BTreeSet<u32> = match cluster.topic(topic).await {
        Ok(info) => info.partitions.iter().map(|p| p.partition).collect(),
        Err(ClientError::UnknownTopic(_)) => BTreeSet::new(),
        Err(e) => return Err(e),
    };
    let (there, gone): (Vec<u32>, Vec<u32>) = partitions.iter().partition(|p| existing.contains(p));
    let mut found = offsets_at(cluster, topic, &there, LATEST_TIMESTAMP, deadline).await?;
    found.extend(gone.into_iter().map(|p| (p, None)));
    Ok(found)
}

/// The offset `to` means in each of `partitions` of `topic`.
pub(super) async fn reset_targets(
    cluster: &Cluster,
    topic: &str,
    partitions: &[u32],
    to: ResetTo,
    deadline: Instant,
) -> Result<BTreeMap<u32, u64>, ClientError> {
    let at = |timestamp_ms| offsets_at(cluster, topic, partitions, timestamp_ms, deadline);
    let some = |found: BTreeMap<u32, Option<u64>>| {
        found
            .into_iter()
            .map(|(p, o)| {
                o.map(|o| (p, o)).ok_or_else(|| {
                    ClientError::Invalid(format!(
                        "the broker gave no offset for topic {topic} partition {p}"
                    ))
                })
            })
            .collect::<Result<BTreeMap<u32, u64>, ClientError>>()
    };
    match to {
        ResetTo::Earliest => some(at(EARLIEST_TIMESTAMP).await?),
        ResetTo::Latest => some(at(LATEST_TIMESTAMP).await?),
        ResetTo::Offset(offset) => {
            let earliest = some(at(EARLIEST_TIMESTAMP).await?)?;
            let latest = some(at(LATEST_TIMESTAMP).await?)?;
            Ok(earliest
                .into_iter()
                .map(|(p, start)| {
                    let end = latest.get(&p).copied().unwrap_or(start).max(start);
                    (p, offset.clamp(start, end))
                })
                .collect())
        }
        ResetTo::Timestamp(ms) => {
            let found = at(ms).await?;
            let latest = some(at(LATEST_TIMESTAMP).await?)?;
            Ok(found
                .into_iter()
                .filter_map(|(p, o)| o.or_else(|| latest.get(&p).copied()).map(|o| (p, o)))
                .collect())
        }
    }
}

/// The offset at `timestamp_ms` (a time, or [`EARLIEST_TIMESTAMP`] /
/// [`LATEST_TIMESTAMP`]) of each of `partitions` of `topic`, asking each
/// leader once for all of its partitions; `None` where no record is at or
/// after the time. Partitions whose leader moved or could not answer are
/// asked again, with fresh metadata, until `deadline`.
async fn offsets_at(
    cluster: &Cluster,
    topic: &str,
    partitions: &[u32],
    timestamp_ms: i64,
    deadline: Instant,
) -> Result<BTreeMap<u32, Option<u64>>, ClientError> {
    let mut found = BTreeMap::new();
    let mut pending: BTreeSet<u32> = partitions.iter().copied().collect();
    let mut pause_ms = 50;
    loop {
        let mut last_error = None;
        let mut retry = |e: ClientError, partition: u32| -> Result<(), ClientError> {
            if !e.is_retriable() {
                return Err(e);
            }
            // A leader that moved is in the cache already; any other
            // failure asks for metadata again.
            if !matches!(e, ClientError::LeaderMoved { .. }) {
                cluster.invalidate_partition(topic, partition);
            }
            last_error = Some(e);
            Ok(())
        };
        let mut by_leader: BTreeMap<String, (Arc<Connection>, Vec<ListOffsetsPartition>)> =
            BTreeMap::new();
        for &partition in &pending {
            match cluster.leader(topic, partition).await {
                Ok(connection) => by_leader
                    .entry(connection.addr().to_string())
                    .or_insert_with(|| (connection, Vec::new()))
                    .1
                    .push(ListOffsetsPartition {
                        partition,
                        timestamp_ms,
                    }),
                Err(e) => retry(e, partition)?,
            }
        }
        for (connection, asked) in by_leader.into_values() {
            let request = Request::ListOffsets(ListOffsetsRequest {
                topics: vec![ListOffsetsTopic {
                    name: topic.to_string(),
                    partitions: asked.clone(),
                }],
            });
            let response = match connection.request(request, left(deadline)).await {
                Ok(Response::ListOffsets(l)) => l,
                Ok(other) => return Err(unexpected(&other)),
                Err(e) => {
                    for p in &asked {
                        retry(e.clone(), p.partition)?;
                    }
                    continue;
                }
            };
            for p in response
                .topics
                .into_iter()
                .filter(|t| t.name == topic)
                .flat_map(|t| t.partitions)
            {
                if !asked.iter().any(|a| a.partition == p.partition) {
                    continue;
                }
                if p.error.is_ok() {
                    found.insert(p.partition, u64::try_from(p.offset).ok());
                    pending.remove(&p.partition);
                } else {
                    let e = cluster.partition_error(
                        topic,
                        p.partition,
                        p.error,
                        p.leader_hint,
                        p.leader_epoch,
                    );
                    retry(e, p.partition)?;
                }
            }
        }
        if pending.is_empty() {
            return Ok(found);
        }
        let pause = Duration::from_millis(pause_ms);
        if Instant::now() + pause >= deadline {
            return Err(last_error.unwrap_or_else(|| {
                ClientError::Invalid(format!(
                    "no offsets for topic {topic} partitions {pending:?}"
                ))
            }));
        }
        tokio::time::sleep(pause).await;
        pause_ms = (pause_ms * 2).min(ADMIN_RETRY_MS_MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_targets_parse_from_their_command_line_spelling() {
        let parsed = |s: &str| s.parse::<ResetTo>().ok();
        assert_eq!(parsed("earliest"), Some(ResetTo::Earliest));
        assert_eq!(parsed("latest"), Some(ResetTo::Latest));
        assert_eq!(parsed("0"), Some(ResetTo::Offset(0)));
        assert_eq!(parsed("42"), Some(ResetTo::Offset(42)));
        assert_eq!(
            parsed("18446744073709551615"),
            Some(ResetTo::Offset(u64::MAX))
        );
        assert_eq!(
            parsed("@1700000000000"),
            Some(ResetTo::Timestamp(1_700_000_000_000))
        );
        assert_eq!(parsed("@0"), Some(ResetTo::Timestamp(0)));
        for s in [
            "",
            "@",
            "-1",
            "+1",
            "@-1",
            "@+5",
            "1.5",
            "Earliest",
            "earliest ",
            " 1",
            "@1e3",
            "18446744073709551616",
            "@9223372036854775808",
            "x",
        ] {
            let err = s.parse::<ResetTo>().expect_err(s);
            assert!(
                err.to_string()
                    .contains("earliest, latest, an offset or @TIMESTAMP_MS"),
                "{s:?}: {err}"
            );
        }
    }

    #[test]
    fn reset_targets_print_as_they_are_spelled() {
        for s in ["earliest", "latest", "7", "@1700000000000"] {
            assert_eq!(
                s.parse::<ResetTo>().map(|t| t.to_string()).ok(),
                Some(s.into())
            );
        }
    }
}
