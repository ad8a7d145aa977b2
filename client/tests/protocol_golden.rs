//! The client protocol's golden bytes: a produce request, a fetch
//! response and a cluster status response written out field by field,
//! records sent without copying, and error codes that keep their numbers.
#![allow(clippy::unwrap_used)]

mod common;

use bytes::{Bytes, BytesMut};
use common::{concat, header};
use rill_client::protocol::messages::*;
use rill_client::protocol::*;

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
fn a_cluster_status_response_encodes_to_the_documented_bytes() {
    let resp = Response::ClusterStatus(ClusterStatusResponse {
        broker_id: 1,
        controller_id: 1,
        brokers: vec![],
        replicas: vec![ReplicaStatus {
            topic: "t".into(),
            partition: 0,
            group: 2,
            leader: 1,
            term: 3,
            commit: 4,
            last_index: 5,
            high_watermark: 6,
            replicas: vec![1],
            matched: vec![(1, 5)],
            log_end_offset: 7,
            matched_offsets: vec![(1, 7)],
        }],
    });
    #[rustfmt::skip]
    let expected: &[u8] = &[
        121, 0, 0, 0,           // frame length: 121 bytes follow
        9, 0, 0, 0,             // correlation id
        0, 0,                   // error: none
        1, 0, 0, 0,             // broker 1
        1, 0, 0, 0,             // controller 1
        0, 0, 0, 0,             // no brokers
        1, 0, 0, 0,             // 1 replica
        1, 0, b't',             // topic
        0, 0, 0, 0,             // partition 0
        2, 0, 0, 0, 0, 0, 0, 0, // group
        1, 0, 0, 0,             // leader
        3, 0, 0, 0, 0, 0, 0, 0, // term
        4, 0, 0, 0, 0, 0, 0, 0, // commit
        5, 0, 0, 0, 0, 0, 0, 0, // last index
        6, 0, 0, 0, 0, 0, 0, 0, // high watermark
        1, 0, 0, 0, 1, 0, 0, 0, // replicas [1]
        1, 0, 0, 0,             // 1 match index
        1, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0,
        7, 0, 0, 0, 0, 0, 0, 0, // log end offset
        1, 0, 0, 0,             // 1 matched offset
        1, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0,
    ];
    assert_eq!(concat(&encode_response(9, &resp)), expected);
    let (_, decoded) = decode_response(
        Bytes::copy_from_slice(&expected[4..]),
        ApiKey::ClusterStatus,
    )
    .unwrap();
    assert_eq!(decoded, Some(resp));
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
        (ErrorCode::NotCoordinator, 23, true),
        (ErrorCode::CoordinatorNotAvailable, 24, true),
        (ErrorCode::CoordinatorLoadInProgress, 25, true),
        (ErrorCode::UnknownMemberId, 26, false),
        (ErrorCode::FencedMemberEpoch, 27, false),
        (ErrorCode::GroupIdNotFound, 28, false),
        (ErrorCode::InvalidGroupId, 29, false),
        (ErrorCode::GroupMaxSizeReached, 30, false),
        (ErrorCode::OffsetMetadataTooLarge, 31, false),
        (ErrorCode::NonEmptyGroup, 32, false),
        (ErrorCode::OutOfOrderSequence, 33, false),
        (ErrorCode::ProducerFenced, 34, false),
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
