//! The consumer group APIs' golden bytes: each request and response written
//! out by hand from the layout tables of `messages::offsets` and
//! `messages::groups`, checked both ways (encodes to them, decodes from
//! them), and counts that claim more than the frame holds refused before
//! allocating.
#![allow(clippy::unwrap_used)]

mod common;

use bytes::{Bytes, BytesMut};
use common::{concat, header};
use rill_client::protocol::messages::*;
use rill_client::protocol::*;

/// Checks `req` against the frame of a request from client "c" with
/// correlation id 7 whose body is `body`.
fn request_is(req: Request, api_key: u8, body: &[u8]) {
    let mut expected = ((11 + body.len()) as u32).to_le_bytes().to_vec();
    #[rustfmt::skip]
    expected.extend_from_slice(&[
        api_key, 0,     // api key
        0, 0,           // api version 0
        7, 0, 0, 0,     // correlation id
        1, 0, b'c',     // client id "c"
    ]);
    expected.extend_from_slice(body);
    let api = req.api_key();
    assert_eq!(api as u16, u16::from(api_key));
    assert_eq!(
        concat(&encode_request(&header(api, 7), &req)),
        expected,
        "{api:?} encodes to the documented bytes"
    );
    let mut buf = BytesMut::from(&expected[..]);
    let payload = take_frame(&mut buf, MAX_REQUEST_FRAME_BYTES)
        .unwrap()
        .unwrap();
    let (h, decoded) = decode_request(payload).unwrap();
    assert_eq!((h.correlation_id, decoded), (7, req));
}

/// Checks `resp` against the frame of a successful response with
/// correlation id 9 whose body is `body`.
fn response_is(resp: Response, body: &[u8]) {
    let mut expected = ((6 + body.len()) as u32).to_le_bytes().to_vec();
    #[rustfmt::skip]
    expected.extend_from_slice(&[
        9, 0, 0, 0,     // correlation id
        0, 0,           // header error: none
    ]);
    expected.extend_from_slice(body);
    let api = resp.api_key();
    assert_eq!(
        concat(&encode_response(9, &resp)),
        expected,
        "{api:?} encodes to the documented bytes"
    );
    let (h, decoded) = decode_response(Bytes::copy_from_slice(&expected[4..]), api).unwrap();
    assert_eq!((h.correlation_id, decoded), (9, Some(resp)));
}

fn topic_partitions(topic: &str, partitions: &[u32]) -> TopicPartitions {
    TopicPartitions {
        topic: topic.into(),
        partitions: partitions.to_vec(),
    }
}

#[test]
fn find_coordinator_encodes_to_the_documented_bytes() {
    request_is(
        Request::FindCoordinator(FindCoordinatorRequest { group: "g".into() }),
        9,
        &[1, 0, b'g'], // group "g"
    );
    #[rustfmt::skip]
    response_is(
        Response::FindCoordinator(FindCoordinatorResponse {
            error: ErrorCode::None,
            coordinator: 2,
            host: "h".into(),
            port: 9092,
        }),
        &[
            0, 0,           // error: none
            2, 0, 0, 0,     // coordinator: broker 2
            1, 0, b'h',     // host "h"
            0x84, 0x23,     // port 9092
        ],
    );
    #[rustfmt::skip]
    response_is(
        Response::FindCoordinator(FindCoordinatorResponse {
            error: ErrorCode::CoordinatorNotAvailable,
            coordinator: NO_BROKER,
            host: String::new(),
            port: 0,
        }),
        &[
            24, 0,                  // error: CoordinatorNotAvailable
            0xff, 0xff, 0xff, 0xff, // coordinator: none
            0, 0,                   // host ""
            0, 0,                   // port 0
        ],
    );
}

#[test]
fn offset_commit_encodes_to_the_documented_bytes() {
    #[rustfmt::skip]
    request_is(
        Request::OffsetCommit(OffsetCommitRequest {
            group: "g".into(),
            member_id: "m".into(),
            member_epoch: 3,
            topics: vec![OffsetCommitTopic {
                name: "t".into(),
                partitions: vec![
                    OffsetCommitPartition {
                        partition: 1,
                        offset: 42,
                        leader_epoch: 5,
                        metadata: Some("x".into()),
                    },
                    OffsetCommitPartition {
                        partition: 2,
                        offset: 7,
                        leader_epoch: 0,
                        metadata: None,
                    },
                ],
            }],
        }),
        10,
        &[
            1, 0, b'g',             // group "g"
            1, 0, b'm',             // member id "m"
            3, 0, 0, 0,             // member epoch 3
            1, 0, 0, 0,             // 1 topic
            1, 0, b't',             // name "t"
            2, 0, 0, 0,             // 2 partitions
            1, 0, 0, 0,             // partition 1
            42, 0, 0, 0, 0, 0, 0, 0, // offset 42
            5, 0, 0, 0, 0, 0, 0, 0, // leader epoch 5
            1, 1, 0, b'x',          // metadata: present, "x"
            2, 0, 0, 0,             // partition 2
            7, 0, 0, 0, 0, 0, 0, 0, // offset 7
            0, 0, 0, 0, 0, 0, 0, 0, // leader epoch: unknown
            0,                      // metadata: absent
        ],
    );
    // A commit from outside any group generation.
    #[rustfmt::skip]
    request_is(
        Request::OffsetCommit(OffsetCommitRequest {
            group: "g".into(),
            member_id: String::new(),
            member_epoch: NO_MEMBER_EPOCH,
            topics: Vec::new(),
        }),
        10,
        &[
            1, 0, b'g',             // group "g"
            0, 0,                   // member id ""
            0xff, 0xff, 0xff, 0xff, // member epoch -1
            0, 0, 0, 0,             // no topics
        ],
    );
    #[rustfmt::skip]
    response_is(
        Response::OffsetCommit(OffsetCommitResponse {
            topics: vec![OffsetCommitTopicResponse {
                name: "t".into(),
                partitions: vec![
                    OffsetCommitPartitionResponse {
                        partition: 1,
                        error: ErrorCode::None,
                    },
                    OffsetCommitPartitionResponse {
                        partition: 2,
                        error: ErrorCode::FencedMemberEpoch,
                    },
                ],
            }],
        }),
        &[
            1, 0, 0, 0,     // 1 topic
            1, 0, b't',     // name "t"
            2, 0, 0, 0,     // 2 partitions
            1, 0, 0, 0,     // partition 1
            0, 0,           // error: none
            2, 0, 0, 0,     // partition 2
            27, 0,          // error: FencedMemberEpoch
        ],
    );
}

#[test]
fn offset_fetch_encodes_to_the_documented_bytes() {
    #[rustfmt::skip]
    request_is(
        Request::OffsetFetch(OffsetFetchRequest {
            group: "g".into(),
            topics: None,
        }),
        11,
        &[
            1, 0, b'g',     // group "g"
            0,              // topics: absent (every committed partition)
        ],
    );
    #[rustfmt::skip]
    request_is(
        Request::OffsetFetch(OffsetFetchRequest {
            group: "g".into(),
            topics: Some(vec![topic_partitions("t", &[0, 3])]),
        }),
        11,
        &[
            1, 0, b'g',     // group "g"
            1,              // topics: present
            1, 0, 0, 0,     // 1 topic
            1, 0, b't',     // topic "t"
            2, 0, 0, 0,     // 2 partitions
            0, 0, 0, 0,     // partition 0
            3, 0, 0, 0,     // partition 3
        ],
    );
    #[rustfmt::skip]
    response_is(
        Response::OffsetFetch(OffsetFetchResponse {
            error: ErrorCode::None,
            topics: vec![OffsetFetchTopicResponse {
                name: "t".into(),
                partitions: vec![
                    OffsetFetchPartitionResponse {
                        partition: 0,
                        offset: 42,
                        leader_epoch: 5,
                        metadata: Some("x".into()),
                        error: ErrorCode::None,
                    },
                    OffsetFetchPartitionResponse {
                        partition: 3,
                        offset: NO_COMMITTED_OFFSET,
                        leader_epoch: 0,
                        metadata: None,
                        error: ErrorCode::None,
                    },
                ],
            }],
        }),
        &[
            0, 0,                   // error: none
            1, 0, 0, 0,             // 1 topic
            1, 0, b't',             // name "t"
            2, 0, 0, 0,             // 2 partitions
            0, 0, 0, 0,             // partition 0
            42, 0, 0, 0, 0, 0, 0, 0, // offset 42
            5, 0, 0, 0, 0, 0, 0, 0, // leader epoch 5
            1, 1, 0, b'x',          // metadata: present, "x"
            0, 0,                   // error: none
            3, 0, 0, 0,             // partition 3
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // offset: no commit
            0, 0, 0, 0, 0, 0, 0, 0, // leader epoch: unknown
            0,                      // metadata: absent
            0, 0,                   // error: none
        ],
    );
}

#[test]
fn consumer_group_heartbeat_encodes_to_the_documented_bytes() {
    // A join: no member id yet, epoch 0, the subscription.
    #[rustfmt::skip]
    request_is(
        Request::ConsumerGroupHeartbeat(ConsumerGroupHeartbeatRequest {
            group: "g".into(),
            member_id: String::new(),
            member_epoch: JOIN_GROUP_MEMBER_EPOCH,
            subscribed_topics: Some(vec!["t".into()]),
            owned: None,
        }),
        12,
        &[
            1, 0, b'g',     // group "g"
            0, 0,           // member id ""
            0, 0, 0, 0,     // member epoch 0: join
            1,              // subscribed topics: present
            1, 0, 0, 0,     // 1 topic
            1, 0, b't',     // "t"
            0,              // owned: absent
        ],
    );
    // A steady heartbeat saying what the member owns now.
    #[rustfmt::skip]
    request_is(
        Request::ConsumerGroupHeartbeat(ConsumerGroupHeartbeatRequest {
            group: "g".into(),
            member_id: "m".into(),
            member_epoch: 4,
            subscribed_topics: None,
            owned: Some(vec![topic_partitions("t", &[1])]),
        }),
        12,
        &[
            1, 0, b'g',     // group "g"
            1, 0, b'm',     // member id "m"
            4, 0, 0, 0,     // member epoch 4
            0,              // subscribed topics: unchanged
            1,              // owned: present
            1, 0, 0, 0,     // 1 topic
            1, 0, b't',     // topic "t"
            1, 0, 0, 0,     // 1 partition
            1, 0, 0, 0,     // partition 1
        ],
    );
    // Leaving, for good and for a while.
    for (epoch, bytes) in [
        (LEAVE_GROUP_MEMBER_EPOCH, [0xff, 0xff, 0xff, 0xff]),
        (LEAVE_GROUP_STATIC_MEMBER_EPOCH, [0xfe, 0xff, 0xff, 0xff]),
    ] {
        let mut body = vec![1, 0, b'g', 1, 0, b'm'];
        body.extend_from_slice(&bytes);
        body.extend_from_slice(&[0, 0]); // subscription and owned: unchanged
        request_is(
            Request::ConsumerGroupHeartbeat(ConsumerGroupHeartbeatRequest {
                group: "g".into(),
                member_id: "m".into(),
                member_epoch: epoch,
                subscribed_topics: None,
                owned: None,
            }),
            12,
            &body,
        );
    }
    #[rustfmt::skip]
    response_is(
        Response::ConsumerGroupHeartbeat(ConsumerGroupHeartbeatResponse {
            error: ErrorCode::None,
            member_id: Some("m".into()),
            member_epoch: 1,
            heartbeat_interval_ms: 5000,
            assignment: Some(vec![topic_partitions("t", &[0, 2])]),
        }),
        &[
            0, 0,               // error: none
            1, 1, 0, b'm',      // member id: present, "m"
            1, 0, 0, 0,         // member epoch 1
            0x88, 0x13, 0, 0,   // heartbeat interval 5000 ms
            1,                  // assignment: present
            1, 0, 0, 0,         // 1 topic
            1, 0, b't',         // topic "t"
            2, 0, 0, 0,         // 2 partitions
            0, 0, 0, 0,         // partition 0
            2, 0, 0, 0,         // partition 2
        ],
    );
    #[rustfmt::skip]
    response_is(
        Response::ConsumerGroupHeartbeat(ConsumerGroupHeartbeatResponse {
            error: ErrorCode::FencedMemberEpoch,
            member_id: None,
            member_epoch: 1,
            heartbeat_interval_ms: 5000,
            assignment: None,
        }),
        &[
            27, 0,              // error: FencedMemberEpoch
            0,                  // member id: unchanged
            1, 0, 0, 0,         // member epoch 1
            0x88, 0x13, 0, 0,   // heartbeat interval 5000 ms
            0,                  // assignment: unchanged
        ],
    );
}

#[test]
fn list_and_describe_groups_encode_to_the_documented_bytes() {
    request_is(Request::ListGroups, 13, &[]);
    #[rustfmt::skip]
    response_is(
        Response::ListGroups(ListGroupsResponse {
            error: ErrorCode::None,
            groups: vec![ListedGroup {
                group: "g".into(),
                state: "Stable".into(),
            }],
        }),
        &[
            0, 0,           // error: none
            1, 0, 0, 0,     // 1 group
            1, 0, b'g',     // group "g"
            6, 0, b'S', b't', b'a', b'b', b'l', b'e', // state "Stable"
        ],
    );
    #[rustfmt::skip]
    request_is(
        Request::DescribeGroups(DescribeGroupsRequest {
            groups: vec!["g".into(), "h".into()],
        }),
        14,
        &[
            2, 0, 0, 0,     // 2 groups
            1, 0, b'g',     // "g"
            1, 0, b'h',     // "h"
        ],
    );
    #[rustfmt::skip]
    response_is(
        Response::DescribeGroups(DescribeGroupsResponse {
            groups: vec![
                DescribedGroup {
                    group: "g".into(),
                    error: ErrorCode::None,
                    state: "Stable".into(),
                    group_epoch: 3,
                    assignment_epoch: 2,
                    members: vec![DescribedMember {
                        member_id: "m".into(),
                        client_id: "c".into(),
                        host: "h".into(),
                        member_epoch: 2,
                        assigned: vec![topic_partitions("t", &[0])],
                    }],
                },
                DescribedGroup {
                    group: "h".into(),
                    error: ErrorCode::GroupIdNotFound,
                    state: "Dead".into(),
                    group_epoch: 0,
                    assignment_epoch: 0,
                    members: Vec::new(),
                },
            ],
        }),
        &[
            2, 0, 0, 0,     // 2 groups
            1, 0, b'g',     // group "g"
            0, 0,           // error: none
            6, 0, b'S', b't', b'a', b'b', b'l', b'e', // state "Stable"
            3, 0, 0, 0,     // group epoch 3
            2, 0, 0, 0,     // assignment epoch 2
            1, 0, 0, 0,     // 1 member
            1, 0, b'm',     // member id "m"
            1, 0, b'c',     // client id "c"
            1, 0, b'h',     // host "h"
            2, 0, 0, 0,     // member epoch 2
            1, 0, 0, 0,     // 1 assigned topic
            1, 0, b't',     // topic "t"
            1, 0, 0, 0,     // 1 partition
            0, 0, 0, 0,     // partition 0
            1, 0, b'h',     // group "h"
            28, 0,          // error: GroupIdNotFound
            4, 0, b'D', b'e', b'a', b'd', // state "Dead"
            0, 0, 0, 0,     // group epoch 0
            0, 0, 0, 0,     // assignment epoch 0
            0, 0, 0, 0,     // no members
        ],
    );
}

#[test]
fn delete_groups_encodes_to_the_documented_bytes() {
    #[rustfmt::skip]
    request_is(
        Request::DeleteGroups(DeleteGroupsRequest {
            groups: vec!["g".into(), "h".into()],
        }),
        15,
        &[
            2, 0, 0, 0,     // 2 groups
            1, 0, b'g',     // "g"
            1, 0, b'h',     // "h"
        ],
    );
    #[rustfmt::skip]
    response_is(
        Response::DeleteGroups(DeleteGroupsResponse {
            groups: vec![
                DeletedGroup {
                    group: "g".into(),
                    error: ErrorCode::None,
                },
                DeletedGroup {
                    group: "h".into(),
                    error: ErrorCode::NonEmptyGroup,
                },
            ],
        }),
        &[
            2, 0, 0, 0,     // 2 groups
            1, 0, b'g',     // group "g"
            0, 0,           // error: none
            1, 0, b'h',     // group "h"
            32, 0,          // error: NonEmptyGroup
        ],
    );
}

#[test]
fn huge_counts_in_group_messages_fail_without_allocating() {
    let huge = [0xff, 0xff, 0xff, 0xff];
    // Each body ends in a count of 2^32-1 elements with nothing after it.
    let requests: [(ApiKey, Vec<u8>); 5] = [
        (
            ApiKey::OffsetCommit,
            [&[1, 0, b'g', 0, 0, 0, 0, 0, 0][..], &huge].concat(),
        ),
        (ApiKey::OffsetFetch, [&[1, 0, b'g', 1][..], &huge].concat()),
        (
            ApiKey::ConsumerGroupHeartbeat,
            [&[1, 0, b'g', 0, 0, 0, 0, 0, 0, 1][..], &huge].concat(),
        ),
        (ApiKey::DescribeGroups, huge.to_vec()),
        (ApiKey::DeleteGroups, huge.to_vec()),
    ];
    for (api, body) in requests {
        let mut payload =
            concat(&encode_request(&header(api, 1), &Request::ApiVersions))[4..].to_vec();
        payload.extend_from_slice(&body);
        assert!(
            matches!(
                decode_request(Bytes::from(payload)),
                Err(RequestFrameError::Malformed(DecodeError::Truncated { .. }))
            ),
            "{api:?}"
        );
    }
    let responses: [(ApiKey, Vec<u8>); 6] = [
        (ApiKey::OffsetCommit, huge.to_vec()),
        (ApiKey::OffsetFetch, [&[0, 0][..], &huge].concat()),
        (
            ApiKey::ConsumerGroupHeartbeat,
            [&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1][..], &huge].concat(),
        ),
        (ApiKey::ListGroups, [&[0, 0][..], &huge].concat()),
        (ApiKey::DescribeGroups, huge.to_vec()),
        (ApiKey::DeleteGroups, huge.to_vec()),
    ];
    for (api, body) in responses {
        let payload = [&[9, 0, 0, 0, 0, 0][..], &body].concat();
        assert!(
            matches!(
                decode_response(Bytes::from(payload), api),
                Err(DecodeError::Truncated { .. })
            ),
            "{api:?}"
        );
    }
}
