//! The wire protocol: golden bytes, round trips of every message, framing
//! limits checked before allocating, and decoders that never panic.
#![allow(clippy::unwrap_used)]

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use rill_client::protocol::messages::*;
use rill_client::protocol::wire::Reader;
use rill_client::protocol::*;

fn concat(parts: &[Bytes]) -> Vec<u8> {
    parts.iter().flat_map(|p| p.to_vec()).collect()
}

/// Records as a decoder returns them: one chunk, or none when empty.
fn as_decoded(records: Bytes) -> Vec<Bytes> {
    if records.is_empty() {
        Vec::new()
    } else {
        vec![records]
    }
}

fn header(api: ApiKey, correlation_id: u32) -> RequestHeader {
    RequestHeader {
        api_key: api as u16,
        api_version: 0,
        correlation_id,
        client_id: "c".into(),
    }
}

#[test]
fn a_produce_request_encodes_to_the_documented_bytes() {
    let req = Request::Produce(ProduceRequest {
        acks: -1,
        timeout_ms: 1000,
        topics: vec![ProduceTopic {
            name: "t".into(),
            partitions: vec![ProducePartition {
                partition: 2,
                records: vec![Bytes::from_static(b"abc")],
            }],
        }],
    });
    #[rustfmt::skip]
    let expected: &[u8] = &[
        38, 0, 0, 0,            // frame length: 38 bytes follow
        4, 0,                   // api key: Produce
        0, 0,                   // api version 0
        7, 0, 0, 0,             // correlation id
        1, 0, b'c',             // client id "c"
        0xff,                   // acks: -1 (all)
        0xe8, 0x03, 0, 0,       // timeout: 1000 ms
        1, 0, 0, 0,             // 1 topic
        1, 0, b't',             // name "t"
        1, 0, 0, 0,             // 1 partition
        2, 0, 0, 0,             // partition 2
        3, 0, 0, 0, b'a', b'b', b'c', // records: 3 bytes
    ];
    assert_eq!(
        concat(&encode_request(&header(ApiKey::Produce, 7), &req)),
        expected
    );
}

#[test]
fn produce_records_in_several_chunks_are_sent_without_copying_and_decode_as_one() {
    let chunks = vec![Bytes::from_static(b"ab"), Bytes::from_static(b"cde")];
    let req = Request::Produce(ProduceRequest {
        acks: 1,
        timeout_ms: 1000,
        topics: vec![ProduceTopic {
            name: "t".into(),
            partitions: vec![ProducePartition {
                partition: 0,
                records: chunks.clone(),
            }],
        }],
    });
    let parts = encode_request(&header(ApiKey::Produce, 1), &req);
    for chunk in &chunks {
        assert!(
            parts.iter().any(|p| p.as_ptr() == chunk.as_ptr()),
            "each chunk is a shared part, not a copy"
        );
    }
    let mut buf = BytesMut::from(&concat(&parts)[..]);
    let payload = take_frame(&mut buf, MAX_REQUEST_FRAME_BYTES)
        .unwrap()
        .unwrap();
    let (_, Request::Produce(decoded)) = decode_request(payload).unwrap() else {
        panic!("not a produce request");
    };
    assert_eq!(
        decoded.topics[0].partitions[0].records,
        vec![Bytes::from_static(b"abcde")],
        "the length prefix covers every chunk"
    );
}

#[test]
fn a_fetch_response_encodes_to_the_documented_bytes_without_copying_records() {
    let records = Bytes::from_static(b"xyz");
    let resp = Response::Fetch(FetchResponse {
        topics: vec![FetchTopicResponse {
            name: "t".into(),
            partitions: vec![FetchPartitionResponse {
                partition: 0,
                error: ErrorCode::None,
                leader_hint: NO_BROKER,
                leader_epoch: 0,
                high_watermark: 5,
                log_start_offset: 1,
                records: vec![records.clone()],
            }],
        }],
    });
    let parts = encode_response(9, &resp);
    #[rustfmt::skip]
    let expected: &[u8] = &[
        58, 0, 0, 0,            // frame length: 58 bytes follow
        9, 0, 0, 0,             // correlation id
        0, 0,                   // error: none
        1, 0, 0, 0,             // 1 topic
        1, 0, b't',             // name
        1, 0, 0, 0,             // 1 partition
        0, 0, 0, 0,             // partition 0
        0, 0,                   // error: none
        0xff, 0xff, 0xff, 0xff, // leader hint: none
        0, 0, 0, 0, 0, 0, 0, 0, // leader epoch: none
        5, 0, 0, 0, 0, 0, 0, 0, // high watermark
        1, 0, 0, 0, 0, 0, 0, 0, // log start offset
        3, 0, 0, 0, b'x', b'y', b'z', // records
    ];
    assert_eq!(concat(&parts), expected);
    assert!(
        parts.iter().any(|p| p.as_ptr() == records.as_ptr()),
        "the records are a shared part, not a copy"
    );
}

#[test]
fn error_codes_keep_their_numbers_and_retriability() {
    let table: &[(ErrorCode, i16, bool)] = &[
        (ErrorCode::None, 0, false),
        (ErrorCode::Unknown, 1, false),
        (ErrorCode::CorruptMessage, 2, true),
        (ErrorCode::UnknownTopicOrPartition, 3, true),
        (ErrorCode::OffsetOutOfRange, 4, false),
        (ErrorCode::RecordTooLarge, 5, false),
        (ErrorCode::NotLeader, 6, true),
        (ErrorCode::RequestTimedOut, 7, true),
        (ErrorCode::InvalidTopic, 8, false),
        (ErrorCode::TopicAlreadyExists, 9, false),
        (ErrorCode::InvalidPartitions, 10, false),
        (ErrorCode::InvalidReplicationFactor, 11, false),
        (ErrorCode::InvalidConfig, 12, false),
        (ErrorCode::UnsupportedVersion, 13, false),
        (ErrorCode::InvalidRequest, 14, false),
        (ErrorCode::NotEnoughReplicas, 15, true),
        (ErrorCode::OffsetNotAvailable, 16, true),
        (ErrorCode::StorageError, 17, true),
        (ErrorCode::InvalidRequiredAcks, 18, false),
        (ErrorCode::UnsupportedApi, 19, false),
        (ErrorCode::NotController, 20, true),
        (ErrorCode::InvalidRecord, 21, false),
        (ErrorCode::InvalidTimestamp, 22, false),
    ];
    assert_eq!(table.len(), ErrorCode::ALL.len());
    for &(e, code, retriable) in table {
        assert_eq!(e.code(), code, "{e:?}");
        assert_eq!(ErrorCode::from_code(code), e);
        assert_eq!(e.is_retriable(), retriable, "{e:?}");
    }
    assert_eq!(ErrorCode::from_code(999), ErrorCode::Unknown);
    assert_eq!(ErrorCode::from_code(-5), ErrorCode::Unknown);
}

#[test]
fn a_frame_is_taken_only_once_whole() {
    let frame = concat(&encode_request(
        &header(ApiKey::ApiVersions, 1),
        &Request::ApiVersions,
    ));
    let mut buf = BytesMut::new();
    for (i, b) in frame.iter().enumerate() {
        assert_eq!(
            take_frame(&mut buf, MAX_REQUEST_FRAME_BYTES).unwrap(),
            None,
            "byte {i}"
        );
        buf.extend_from_slice(&[*b]);
    }
    let payload = take_frame(&mut buf, MAX_REQUEST_FRAME_BYTES)
        .unwrap()
        .unwrap();
    assert!(buf.is_empty());
    let (h, r) = decode_request(payload).unwrap();
    assert_eq!((h.correlation_id, r), (1, Request::ApiVersions));
}

#[test]
fn a_frame_announcing_more_than_the_maximum_is_refused_before_allocating() {
    let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3][..]);
    let cap = buf.capacity();
    assert_eq!(
        take_frame(&mut buf, MAX_REQUEST_FRAME_BYTES),
        Err(FrameError::TooLarge {
            announced_bytes: u32::MAX as u64,
            max_bytes: MAX_REQUEST_FRAME_BYTES
        })
    );
    assert_eq!(buf.capacity(), cap, "nothing reserved for the claimed size");
}

#[test]
fn unknown_apis_and_versions_get_an_error_not_a_closed_connection() {
    let mut h = header(ApiKey::Metadata, 3);
    h.api_key = 77;
    let frame = concat(&encode_request(&h, &Request::ApiVersions));
    let err = decode_request(Bytes::copy_from_slice(&frame[4..])).unwrap_err();
    assert!(
        matches!(err, RequestFrameError::Unsupported { error: ErrorCode::UnsupportedApi, ref header } if header.correlation_id == 3)
    );
    let mut h = header(ApiKey::Metadata, 4);
    h.api_version = 9;
    let frame = concat(&encode_request(&h, &Request::ApiVersions));
    let err = decode_request(Bytes::copy_from_slice(&frame[4..])).unwrap_err();
    assert!(matches!(
        err,
        RequestFrameError::Unsupported {
            error: ErrorCode::UnsupportedVersion,
            ..
        }
    ));
    // The error response carries the correlation id and no body.
    let resp = concat(&encode_error_response(4, ErrorCode::UnsupportedVersion));
    let (h, body) = decode_response(Bytes::copy_from_slice(&resp[4..]), ApiKey::Metadata).unwrap();
    assert_eq!(
        (h.correlation_id, h.error, body),
        (4, ErrorCode::UnsupportedVersion, None)
    );
}

#[test]
fn truncated_and_padded_requests_are_malformed() {
    let req = Request::DeleteTopics(DeleteTopicsRequest {
        names: vec!["a".into(), "b".into()],
        timeout_ms: 5,
    });
    let frame = concat(&encode_request(&header(ApiKey::DeleteTopics, 1), &req));
    let payload = &frame[4..];
    for cut in 0..payload.len() {
        let r = decode_request(Bytes::copy_from_slice(&payload[..cut]));
        assert!(
            matches!(r, Err(RequestFrameError::Malformed(_))),
            "cut at {cut}"
        );
    }
    let mut padded = payload.to_vec();
    padded.push(0);
    assert!(matches!(
        decode_request(Bytes::from(padded)),
        Err(RequestFrameError::Malformed(DecodeError::TrailingBytes {
            bytes: 1
        }))
    ));
}

#[test]
fn a_huge_array_count_fails_without_allocating() {
    // A metadata request claiming 2^32-1 topic names in 4 bytes.
    let mut payload = concat(&encode_request(
        &header(ApiKey::Metadata, 1),
        &Request::ApiVersions,
    ))[4..]
        .to_vec();
    payload.extend_from_slice(&[1, 0xff, 0xff, 0xff, 0xff]);
    assert!(matches!(
        decode_request(Bytes::from(payload)),
        Err(RequestFrameError::Malformed(DecodeError::Truncated { .. }))
    ));
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
                                matched,
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
        let h = header(req.api_key(), correlation_id);
        let mut buf = BytesMut::from(&concat(&encode_request(&h, &req))[..]);
        let payload = take_frame(&mut buf, MAX_REQUEST_FRAME_BYTES).unwrap().unwrap();
        prop_assert!(buf.is_empty());
        let (h2, req2) = decode_request(payload).unwrap();
        prop_assert_eq!(h2, h);
        prop_assert_eq!(req2, req);
    }

    #[test]
    fn any_response_round_trips_through_a_frame(resp in response(), correlation_id in any::<u32>()) {
        let mut buf = BytesMut::from(&concat(&encode_response(correlation_id, &resp))[..]);
        let payload = take_frame(&mut buf, MAX_RESPONSE_FRAME_BYTES).unwrap().unwrap();
        prop_assert_eq!(decode_response_header(&payload).unwrap().correlation_id, correlation_id);
        let (h, resp2) = decode_response(payload, resp.api_key()).unwrap();
        prop_assert_eq!(h.error, ErrorCode::None);
        prop_assert_eq!(resp2, Some(resp));
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
