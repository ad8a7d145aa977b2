//! Properties of the client protocol: every request and response round
//! trips through a frame, and decoders never panic on arbitrary or damaged
//! bytes.
#![allow(clippy::unwrap_used)]

mod common;

use bytes::{Bytes, BytesMut};
use common::{assert_request_round_trips, assert_response_round_trips, concat, header};
use proptest::prelude::*;
use rill_client::protocol::messages::*;
use rill_client::protocol::wire::Reader;
use rill_client::protocol::*;

/// Records as a decoder returns them: one chunk, or none when empty.
fn as_decoded(records: Bytes) -> Vec<Bytes> {
    if records.is_empty() {
        Vec::new()
    } else {
        vec![records]
    }
}

fn name() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9._-]{0,20}"
}

fn error() -> impl Strategy<Value = ErrorCode> {
    prop::sample::select(ErrorCode::ALL.to_vec())
}

fn payload() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..64).prop_map(Bytes::from)
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        Just(Request::ApiVersions),
        prop::option::of(prop::collection::vec(name(), 0..4))
            .prop_map(|topics| Request::Metadata(MetadataRequest { topics })),
        (
            prop::collection::vec(
                (
                    name(),
                    any::<u32>(),
                    any::<u16>(),
                    prop::collection::vec((name(), name()), 0..3)
                ),
                0..3
            ),
            any::<u32>()
        )
            .prop_map(
                |(t, timeout_ms)| Request::CreateTopics(CreateTopicsRequest {
                    topics: t
                        .into_iter()
                        .map(|(name, partitions, replication_factor, configs)| NewTopic {
                            name,
                            partitions,
                            replication_factor,
                            configs
                        })
                        .collect(),
                    timeout_ms
                })
            ),
        (prop::collection::vec(name(), 0..4), any::<u32>()).prop_map(|(names, timeout_ms)| {
            Request::DeleteTopics(DeleteTopicsRequest { names, timeout_ms })
        }),
        (
            any::<i8>(),
            any::<u32>(),
            prop::collection::vec(
                (
                    name(),
                    prop::collection::vec((any::<u32>(), payload()), 0..3)
                ),
                0..3
            )
        )
            .prop_map(|(acks, timeout_ms, t)| Request::Produce(ProduceRequest {
                acks,
                timeout_ms,
                topics: t
                    .into_iter()
                    .map(|(name, p)| ProduceTopic {
                        name,
                        partitions: p
                            .into_iter()
                            .map(|(partition, records)| ProducePartition {
                                partition,
                                records: as_decoded(records),
                            })
                            .collect()
                    })
                    .collect()
            })),
        (
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            prop::collection::vec(
                (
                    name(),
                    prop::collection::vec((any::<u32>(), any::<u64>(), any::<u32>()), 0..3)
                ),
                0..3
            )
        )
            .prop_map(|(max_wait_ms, min_bytes, max_bytes, t)| Request::Fetch(
                FetchRequest {
                    max_wait_ms,
                    min_bytes,
                    max_bytes,
                    topics: t
                        .into_iter()
                        .map(|(name, p)| FetchTopic {
                            name,
                            partitions: p
                                .into_iter()
                                .map(|(partition, fetch_offset, partition_max_bytes)| {
                                    FetchPartition {
                                        partition,
                                        fetch_offset,
                                        partition_max_bytes,
                                    }
                                })
                                .collect()
                        })
                        .collect()
                }
            )),
        prop::collection::vec(
            (
                name(),
                prop::collection::vec((any::<u32>(), any::<i64>()), 0..3)
            ),
            0..3
        )
        .prop_map(|t| Request::ListOffsets(ListOffsetsRequest {
            topics: t
                .into_iter()
                .map(|(name, p)| ListOffsetsTopic {
                    name,
                    partitions: p
                        .into_iter()
                        .map(|(partition, timestamp_ms)| ListOffsetsPartition {
                            partition,
                            timestamp_ms
                        })
                        .collect()
                })
                .collect()
        })),
        (any::<u32>(), name(), any::<u16>()).prop_map(|(broker_id, host, port)| {
            Request::RegisterBroker(BrokerMetadata {
                broker_id,
                host,
                port,
            })
        }),
        Just(Request::ClusterStatus),
    ]
}

fn response() -> impl Strategy<Value = Response> {
    let results = || {
        prop::collection::vec((name(), error(), name()), 0..3).prop_map(|r| TopicResults {
            results: r
                .into_iter()
                .map(|(name, error, message)| TopicResult {
                    name,
                    error,
                    message,
                })
                .collect(),
        })
    };
    prop_oneof![
        prop::collection::vec((any::<u16>(), any::<u16>(), any::<u16>()), 0..4).prop_map(|a| {
            Response::ApiVersions(ApiVersionsResponse {
                apis: a
                    .into_iter()
                    .map(|(api_key, min_version, max_version)| ApiVersionRange {
                        api_key,
                        min_version,
                        max_version,
                    })
                    .collect(),
            })
        }),
        (
            prop::collection::vec((any::<u32>(), name(), any::<u16>()), 0..3),
            any::<i32>(),
            prop::collection::vec(
                (
                    error(),
                    name(),
                    any::<[u8; 16]>(),
                    prop::collection::vec(
                        (
                            any::<u32>(),
                            error(),
                            any::<i32>(),
                            any::<u64>(),
                            prop::collection::vec(any::<u32>(), 0..3),
                            any::<u64>(),
                            any::<u64>()
                        ),
                        0..3
                    )
                ),
                0..3
            )
        )
            .prop_map(
                |(b, controller_id, t)| Response::Metadata(MetadataResponse {
                    brokers: b
                        .into_iter()
                        .map(|(broker_id, host, port)| BrokerMetadata {
                            broker_id,
                            host,
                            port
                        })
                        .collect(),
                    controller_id,
                    topics: t
                        .into_iter()
                        .map(|(error, name, topic_id, p)| TopicMetadata {
                            error,
                            name,
                            topic_id,
                            partitions: p
                                .into_iter()
                                .map(
                                    |(
                                        partition,
                                        error,
                                        leader,
                                        leader_epoch,
                                        replicas,
                                        log_start_offset,
                                        high_watermark,
                                    )| {
                                        PartitionMetadata {
                                            partition,
                                            error,
                                            leader,
                                            leader_epoch,
                                            replicas,
                                            log_start_offset,
                                            high_watermark,
                                        }
                                    }
                                )
                                .collect()
                        })
                        .collect()
                })
            ),
        results().prop_map(Response::CreateTopics),
        results().prop_map(Response::DeleteTopics),
        prop::collection::vec(
            (
                name(),
                prop::collection::vec(
                    (
                        any::<u32>(),
                        error(),
                        any::<i32>(),
                        any::<u64>(),
                        any::<u64>(),
                        any::<u64>()
                    ),
                    0..3
                )
            ),
            0..3
        )
        .prop_map(|t| Response::Produce(ProduceResponse {
            topics: t
                .into_iter()
                .map(|(name, p)| ProduceTopicResponse {
                    name,
                    partitions: p
                        .into_iter()
                        .map(
                            |(
                                partition,
                                error,
                                leader_hint,
                                leader_epoch,
                                base_offset,
                                log_start_offset,
                            )| {
                                ProducePartitionResponse {
                                    partition,
                                    error,
                                    leader_hint,
                                    leader_epoch,
                                    base_offset,
                                    log_start_offset,
                                }
                            }
                        )
                        .collect()
                })
                .collect()
        })),
        prop::collection::vec(
            (
                name(),
                prop::collection::vec(
                    (
                        any::<u32>(),
                        error(),
                        any::<i32>(),
                        any::<u64>(),
                        any::<u64>(),
                        any::<u64>(),
                        payload()
                    ),
                    0..3
                )
            ),
            0..3
        )
        .prop_map(|t| Response::Fetch(FetchResponse {
            topics: t
                .into_iter()
                .map(|(name, p)| FetchTopicResponse {
                    name,
                    partitions: p
                        .into_iter()
                        .map(
                            |(
                                partition,
                                error,
                                leader_hint,
                                leader_epoch,
                                high_watermark,
                                log_start_offset,
                                records,
                            )| {
                                FetchPartitionResponse {
                                    partition,
                                    error,
                                    leader_hint,
                                    leader_epoch,
                                    high_watermark,
                                    log_start_offset,
                                    records: as_decoded(records),
                                }
                            }
                        )
                        .collect()
                })
                .collect()
        })),
        prop::collection::vec(
            (
                name(),
                prop::collection::vec(
                    (
                        any::<u32>(),
                        error(),
                        any::<i32>(),
                        any::<u64>(),
                        any::<i64>()
                    ),
                    0..3
                )
            ),
            0..3
        )
        .prop_map(|t| Response::ListOffsets(ListOffsetsResponse {
            topics: t
                .into_iter()
                .map(|(name, p)| ListOffsetsTopicResponse {
                    name,
                    partitions: p
                        .into_iter()
                        .map(|(partition, error, leader_hint, leader_epoch, offset)| {
                            ListOffsetsPartitionResponse {
                                partition,
                                error,
                                leader_hint,
                                leader_epoch,
                                offset,
                            }
                        })
                        .collect()
                })
                .collect()
        })),
        (error(), any::<i32>()).prop_map(|(error, controller_id)| {
            Response::RegisterBroker(RegisterBrokerResponse {
                error,
                controller_id,
            })
        }),
        (
            any::<u32>(),
            any::<i32>(),
            prop::collection::vec((any::<u32>(), name(), any::<u16>()), 0..3),
            prop::collection::vec(
                (
                    (name(), any::<u32>(), any::<u64>(), any::<i32>()),
                    (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>()),
                    prop::collection::vec(any::<u32>(), 0..4),
                    prop::collection::vec((any::<u32>(), any::<u64>()), 0..4),
                ),
                0..3
            )
        )
            .prop_map(|(broker_id, controller_id, brokers, replicas)| {
                Response::ClusterStatus(ClusterStatusResponse {
                    broker_id,
                    controller_id,
                    brokers: brokers
                        .into_iter()
                        .map(|(broker_id, host, port)| BrokerMetadata {
                            broker_id,
                            host,
                            port,
                        })
                        .collect(),
                    replicas: replicas
                        .into_iter()
                        .map(
                            |(
                                (topic, partition, group, leader),
                                (term, commit, last_index, high_watermark),
                                voters,
                                matched,
                            )| ReplicaStatus {
                                topic,
                                partition,
                                group,
                                leader,
                                term,
                                commit,
                                last_index,
                                high_watermark,
                                replicas: voters,
                                matched: matched.clone(),
                                log_end_offset: high_watermark.wrapping_add(commit),
                                matched_offsets: matched,
                            },
                        )
                        .collect(),
                })
            }),
    ]
}

proptest! {
    #[test]
    fn any_request_round_trips_through_a_frame(req in request(), correlation_id in any::<u32>()) {
        assert_request_round_trips(&req, correlation_id);
    }

    #[test]
    fn any_response_round_trips_through_a_frame(resp in response(), correlation_id in any::<u32>()) {
        assert_response_round_trips(&resp, correlation_id);
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let payload = Bytes::from(bytes);
        let _ = decode_request(payload.clone());
        for api in ApiKey::ALL {
            let _ = decode_response(payload.clone(), api);
            let _ = Request::decode(api, &mut Reader::new(payload.clone()));
        }
        let mut buf = BytesMut::from(&payload[..]);
        while let Ok(Some(_)) = take_frame(&mut buf, 64) {}
    }

    #[test]
    fn a_damaged_request_is_refused_or_decodes_cleanly(req in request(), at in any::<prop::sample::Index>(), xor in 1u8..) {
        let h = header(req.api_key(), 1);
        let mut frame = concat(&encode_request(&h, &req))[4..].to_vec();
        let i = at.index(frame.len());
        frame[i] ^= xor;
        let _ = decode_request(Bytes::from(frame));
    }
}
