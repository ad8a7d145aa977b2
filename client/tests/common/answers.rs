//! Answers a scripted broker in the client's tests gives, built from the
//! request they answer: one place for the shape of each, so scripts say
//! only what differs (an offset, an error).
#![allow(dead_code)]

use rill_client::protocol::ErrorCode;
use rill_client::protocol::Response;
use rill_client::protocol::messages::*;

/// A `ListOffsets` answer: every partition asked for at the offset
/// `offset_of` gives for it, no error, no leader hint.
pub fn list_offsets(
    l: &ListOffsetsRequest,
    offset_of: impl Fn(&ListOffsetsPartition) -> i64,
) -> Response {
    Response::ListOffsets(ListOffsetsResponse {
        topics: l
            .topics
            .iter()
            .map(|t| ListOffsetsTopicResponse {
                name: t.name.clone(),
                partitions: t
                    .partitions
                    .iter()
                    .map(|p| ListOffsetsPartitionResponse {
                        partition: p.partition,
                        error: ErrorCode::None,
                        leader_hint: NO_BROKER,
                        leader_epoch: 0,
                        offset: offset_of(p),
                    })
                    .collect(),
            })
            .collect(),
    })
}
