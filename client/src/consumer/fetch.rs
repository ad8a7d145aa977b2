//! Fetching: one `Fetch` per leader for every partition read, and the
//! turning of fetched batches into records.
//!
//! A fetch runs as a task of its own (the consumer's prefetch) over a copy
//! of the positions it was started with, so its answer is tagged with the
//! offset each partition was read from: the consumer takes a partition's
//! records only while its position is still that offset.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bytes::Bytes;
use rill_storage::Batches;

use super::{ConsumerConfig, ConsumerRecord, Key};
use crate::cluster::Cluster;
use crate::error::ClientError;
use crate::protocol::messages::{FetchPartition, FetchRequest, FetchTopic};
use crate::protocol::{ErrorCode, Request, Response};

/// What one fetch brought back, per partition: the offset it read from and
/// the chunks of batches (with the high watermark), or why it failed.
pub(super) type Fetched = Vec<(Key, u64, Result<(Vec<Bytes>, u64), ClientError>)>;

/// How long past its `max_wait_ms` a fetch waits for its answer before the
/// consumer asks the other brokers whether its partitions moved, ms.
pub const FETCH_PATIENCE_MS: u64 = 1_000;

/// One fetch per leader for every partition in `positions`.
pub(super) async fn fetch(
    cluster: &Cluster,
    positions: &BTreeMap<Key, u64>,
    config: &ConsumerConfig,
) -> Fetched {
    let mut by_leader: HashMap<String, Vec<(Key, u64)>> = HashMap::new();
    let mut out: Fetched = Vec::new();
    for (key, &offset) in positions {
        match cluster.leader(&key.0, key.1).await {
            Ok(conn) => by_leader
                .entry(conn.addr().to_string())
                .or_default()
                .push((key.clone(), offset)),
            Err(e) => out.push((key.clone(), offset, Err(e))),
        }
    }
    for (addr, parts) in by_leader {
        let mut topics: BTreeMap<&str, Vec<FetchPartition>> = BTreeMap::new();
        for ((topic, partition), offset) in &parts {
            topics
                .entry(topic.as_str())
                .or_default()
                .push(FetchPartition {
                    partition: *partition,
                    fetch_offset: *offset,
                    partition_max_bytes: config.partition_max_bytes,
                });
        }
        let request = Request::Fetch(FetchRequest {
            max_wait_ms: config.max_wait_ms,
            min_bytes: 1,
            max_bytes: config.max_bytes,
            topics: topics
                .into_iter()
                .map(|(name, partitions)| FetchTopic {
                    name: name.to_string(),
                    partitions,
                })
                .collect(),
        });
        let timeout =
            Duration::from_millis(config.request_timeout_ms + u64::from(config.max_wait_ms));
        // A leader that stops answering is given up on once the others
        // name a new one (see `Cluster::until_moved_from`): the consumer
        // reads on from there, as fetching twice changes nothing.
        let keys: Vec<(String, u32)> = parts.iter().map(|(k, _)| k.clone()).collect();
        let patience = Duration::from_millis(u64::from(config.max_wait_ms) + FETCH_PATIENCE_MS);
        let response = match cluster.connection(&addr).await {
            Ok(conn) => tokio::select! {
                r = conn.request(request, timeout) => r,
                (leader, leader_epoch) = cluster.until_moved_from(&addr, &keys, patience) => {
                    Err(ClientError::LeaderMoved { leader, leader_epoch })
                }
            },
            Err(e) => Err(e),
        };
        let from: HashMap<Key, u64> = parts.iter().cloned().collect();
        match response {
            Ok(Response::Fetch(f)) => {
                for t in f.topics {
                    for p in t.partitions {
                        let key = (t.name.clone(), p.partition);
                        // A partition the broker added on its own is not
                        // one this fetch read.
                        let Some(&offset) = from.get(&key) else {
                            continue;
                        };
                        let r = if p.error.is_ok() {
                            Ok((p.records, p.high_watermark))
                        } else {
                            Err(cluster.partition_error(
                                &t.name,
                                p.partition,
                                p.error,
                                p.leader_hint,
                                p.leader_epoch,
                            ))
                        };
                        out.push((key, offset, r));
                    }
                }
            }
            Ok(_) => parts.into_iter().for_each(|(k, offset)| {
                out.push((k, offset, Err(ClientError::code(ErrorCode::Unknown))))
            }),
            Err(e) => parts
                .into_iter()
                .for_each(|(k, offset)| out.push((k, offset, Err(e.clone())))),
        }
    }
    out
}

/// The records of `chunks` at or past `position`, in offset order, with
/// control batches skipped, pushed onto `out`; returns the partition's next
/// position (`position` when nothing was past it): past the end of the
/// last batch read, even when compaction removed its last records, or all
/// of them, so a compacted stretch of the log is never fetched twice.
pub(super) fn decode_records(
    key: &Key,
    position: u64,
    chunks: Vec<Bytes>,
    out: &mut Vec<ConsumerRecord>,
) -> Result<u64, ClientError> {
    let mut next = position;
    for chunk in chunks {
        for batch in Batches::new(chunk, usize::MAX) {
            let batch = batch
                .map_err(|e| ClientError::Invalid(format!("corrupt batch from the broker: {e}")))?;
            batch
                .verify_crc()
                .map_err(|e| ClientError::Invalid(format!("corrupt batch from the broker: {e}")))?;
            if batch.header().is_control() {
                continue;
            }
            let leader_epoch = batch.header().raft_term.0;
            for r in batch.records() {
                let r = r.map_err(|e| {
                    ClientError::Invalid(format!("corrupt record from the broker: {e}"))
                })?;
                if r.offset.get() < next {
                    continue;
                }
                next = r.offset.get() + 1;
                out.push(ConsumerRecord {
                    topic: key.0.clone(),
                    partition: key.1,
                    offset: r.offset.get(),
                    leader_epoch,
                    timestamp_ms: r.timestamp_ms,
                    key: r.key,
                    value: r.value,
                    headers: r
                        .headers
                        .into_iter()
                        .map(|h| (String::from_utf8_lossy(&h.key).into_owned(), h.value))
                        .collect(),
                });
            }
            next = next.max(batch.header().next_offset().get());
        }
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use bytes::Bytes;
    use rill_storage::batch::Compression;
    use rill_storage::{BatchBuilder, NewRecord, Offset, RaftIndex, Term};

    use super::decode_records;

    /// A batch of `values` at `base`, compressed with `codec`.
    fn batch(values: &[&str], base: u64, codec: Compression) -> Bytes {
        let mut builder = BatchBuilder::new(1 << 20);
        builder.compression(codec);
        for v in values {
            assert!(builder.push(&NewRecord::value(v.as_bytes(), 7)).unwrap());
        }
        let mut bytes = builder.finish().unwrap();
        rill_storage::batch::stamp(&mut bytes, Offset(base), Term(1), RaftIndex(1));
        Bytes::from(bytes)
    }

    #[test]
    fn compressed_batches_decode_as_uncompressed_ones() {
        let values: Vec<String> = (0..50).map(|i| format!("value {i} value value")).collect();
        let values: Vec<&str> = values.iter().map(String::as_str).collect();
        let key = ("t".to_string(), 0);
        let mut per_codec = Vec::new();
        for codec in Compression::ALL {
            // Two batches in one chunk, the first one read from its middle.
            let chunk = [
                batch(&values[..25], 0, codec),
                batch(&values[25..], 25, codec),
            ]
            .concat();
            let mut out = Vec::new();
            let next = decode_records(&key, 10, vec![Bytes::from(chunk)], &mut out).unwrap();
            assert_eq!(next, 50, "{codec}");
            let got: Vec<(u64, Bytes)> = out
                .into_iter()
                .map(|r| (r.offset, r.value.unwrap()))
                .collect();
            per_codec.push(got);
        }
        assert_eq!(per_codec[0].len(), 40);
        assert_eq!(per_codec[0][0], (10, Bytes::from("value 10 value value")));
        assert!(per_codec.iter().all(|g| g == &per_codec[0]));
    }

    /// `batch` as compaction leaves it when every record is removed: the
    /// header alone, zero records, its offsets kept.
    fn emptied(batch: &[u8]) -> Bytes {
        use rill_storage::batch::{BatchHeader, HEADER_BYTES, LENGTH_FIELD_BYTES, compute_crc};
        let mut h = BatchHeader::decode(batch).unwrap();
        h.record_count = 0;
        h.attributes = 0;
        h.length = (HEADER_BYTES - LENGTH_FIELD_BYTES) as u32;
        let mut out = vec![0u8; HEADER_BYTES];
        h.encode_into(&mut out);
        h.crc = compute_crc(&out);
        h.encode_into(&mut out);
        Bytes::from(out)
    }

    #[test]
    fn a_batch_compaction_emptied_moves_the_position_past_its_offsets() {
        let key = ("t".to_string(), 0);
        let first = batch(&["a", "b", "c"], 0, Compression::None);
        let chunk = [emptied(&first), batch(&["d"], 3, Compression::None)].concat();
        let mut out = Vec::new();
        let next = decode_records(&key, 0, vec![Bytes::from(chunk)], &mut out).unwrap();
        assert_eq!(next, 4);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].offset, 3);
        // An emptied batch alone still moves the position on.
        let mut out = Vec::new();
        let next = decode_records(&key, 0, vec![emptied(&first)], &mut out).unwrap();
        assert_eq!((next, out.len()), (3, 0));
    }
}
