//! ListOffsets: for each partition, the log's start, its end (the high
//! watermark), or the first offset at or after a timestamp. Only the
//! partition's leader answers, refusing as produce and fetch do: offsets
//! are bounded by the high watermark, which only a leader knows to be
//! current (a new leader answers `OffsetNotAvailable` for the end until it
//! does).

use std::sync::Arc;

use rill_client::protocol::ErrorCode;
use rill_client::protocol::messages::{
    ListOffsetsPartitionResponse, ListOffsetsRequest, ListOffsetsResponse, ListOffsetsTopicResponse,
};

use super::{hint, leader_here};
use crate::partition::LeaderHint;
use crate::state::Broker;

/// Looks up each partition's offset for its timestamp.
pub(super) fn list_offsets(broker: &Arc<Broker>, l: ListOffsetsRequest) -> ListOffsetsResponse {
    ListOffsetsResponse {
        topics: l
            .topics
            .into_iter()
            .map(|t| ListOffsetsTopicResponse {
                partitions: t
                    .partitions
                    .iter()
                    .map(|p| {
                        let r = leader_here(broker, &t.name, p.partition).and_then(|part| {
                            part.offset_for(p.timestamp_ms)
                                .map_err(|e| (e, LeaderHint::default()))
                        });
                        let (error, leader) =
                            r.err().unwrap_or((ErrorCode::None, LeaderHint::default()));
                        ListOffsetsPartitionResponse {
                            partition: p.partition,
                            error,
                            leader_hint: hint(leader.leader),
                            leader_epoch: leader.epoch.get(),
                            offset: r.unwrap_or(-1),
                        }
                    })
                    .collect(),
                name: t.name,
            })
            .collect(),
    }
}
