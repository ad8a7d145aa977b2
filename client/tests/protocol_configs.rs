//! The codec of the APIs that change a live topic (`AlterTopicConfigs`,
//! `DescribeTopicConfigs`, `CreatePartitions`, `ReassignPartitions`), change
//! the brokers (`ChangeBrokers`, `JoinCluster`) and give a producer its id
//! (`InitProducerId`): golden bytes written out by hand from the
//! layout table of `messages::configs`, round trips of any message through
//! a frame, and counts that claim more than the frame holds refused before
//! allocating.
#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use common::{assert_request_round_trips, assert_response_round_trips, concat, header};
use proptest::prelude::*;
use rill_client::protocol::messages::*;
use rill_client::protocol::*;

/// The body of `req`'s frame (after the length prefix and header of
/// client "c").
fn request_body(req: &Request) -> Vec<u8> {
    concat(&encode_request(&header(req.api_key(), 7), req))[4 + 11..].to_vec()
}

/// The body of `resp`'s frame (after the length prefix and header).
fn response_body(resp: &Response) -> Vec<u8> {
    concat(&encode_response(9, resp))[4 + 6..].to_vec()
}

#[test]
fn alter_topic_configs_encodes_to_the_documented_bytes() {
    let req = Request::AlterTopicConfigs(AlterTopicConfigsRequest {
        topics: vec![TopicConfigChange {
            name: "t".into(),
            set: vec![("a".into(), "1".into())],
            delete: vec!["b".into()],
        }],
        timeout_ms: 5,
    });
    assert_eq!(req.api_key() as u16, 16);
    #[rustfmt::skip]
    assert_eq!(request_body(&req), [
        1, 0, 0, 0,             // 1 topic
        1, 0, b't',             // name "t"
        1, 0, 0, 0,             // 1 to set
        1, 0, b'a', 1, 0, b'1', // a=1
        1, 0, 0, 0,             // 1 to delete
        1, 0, b'b',             // b
        5, 0, 0, 0,             // timeout 5 ms
    ]);
    assert_request_round_trips(&req, 7);
    let resp = Response::AlterTopicConfigs(TopicResults {
        results: vec![TopicResult {
            name: "t".into(),
            error: ErrorCode::InvalidConfig,
            message: "m".into(),
        }],
    });
    #[rustfmt::skip]
    assert_eq!(response_body(&resp), [
        1, 0, 0, 0,     // 1 result
        1, 0, b't',     // name "t"
        12, 0,          // error: InvalidConfig
        1, 0, b'm',     // message "m"
    ]);
    assert_response_round_trips(&resp, 9);
}

#[test]
fn describe_topic_configs_encodes_to_the_documented_bytes() {
    let req = Request::DescribeTopicConfigs(DescribeTopicConfigsRequest {
        names: vec!["t".into()],
    });
    assert_eq!(req.api_key() as u16, 17);
    assert_eq!(request_body(&req), [1, 0, 0, 0, 1, 0, b't']);
    let resp = Response::DescribeTopicConfigs(DescribeTopicConfigsResponse {
        topics: vec![TopicConfigs {
            name: "t".into(),
            error: ErrorCode::None,
            message: String::new(),
            configs: vec![ConfigEntry {
                key: "k".into(),
                value: "v".into(),
                source: ConfigSource::Topic,
            }],
        }],
    });
    #[rustfmt::skip]
    assert_eq!(response_body(&resp), [
        1, 0, 0, 0,     // 1 topic
        1, 0, b't',     // name "t"
        0, 0,           // error: none
        0, 0,           // message ""
        1, 0, 0, 0,     // 1 config
        1, 0, b'k',     // key "k"
        1, 0, b'v',     // value "v"
        1,              // source: set on the topic
    ]);
    assert_response_round_trips(&resp, 9);
    // A source this build does not know is refused.
    let mut bad = response_body(&resp);
    *bad.last_mut().unwrap() = 2;
    let payload = [&[9, 0, 0, 0, 0, 0][..], &bad].concat();
    assert!(decode_response(Bytes::from(payload), ApiKey::DescribeTopicConfigs).is_err());
}

#[test]
fn create_partitions_encodes_to_the_documented_bytes() {
    let req = Request::CreatePartitions(CreatePartitionsRequest {
        topics: vec![("t".into(), 6)],
        timeout_ms: 5,
    });
    assert_eq!(req.api_key() as u16, 18);
    #[rustfmt::skip]
    assert_eq!(request_body(&req), [
        1, 0, 0, 0,     // 1 topic
        1, 0, b't',     // name "t"
        6, 0, 0, 0,     // 6 partitions from then on
        5, 0, 0, 0,     // timeout 5 ms
    ]);
    assert_request_round_trips(&req, 7);
    let resp = Response::CreatePartitions(TopicResults {
        results: vec![TopicResult {
            name: "t".into(),
            error: ErrorCode::InvalidPartitions,
            message: String::new(),
        }],
    });
    assert_eq!(response_body(&resp), [1, 0, 0, 0, 1, 0, b't', 10, 0, 0, 0]);
    assert_response_round_trips(&resp, 9);
}

#[test]
fn reassign_partitions_encodes_to_the_documented_bytes() {
    let req = Request::ReassignPartitions(ReassignPartitionsRequest {
        moves: vec![PartitionMove {
            topic: "t".into(),
            partition: 2,
            replicas: vec![4, 2, 3],
        }],
        timeout_ms: 5,
    });
    assert_eq!(req.api_key() as u16, 20);
    #[rustfmt::skip]
    assert_eq!(request_body(&req), [
        1, 0, 0, 0,     // 1 move
        1, 0, b't',     // topic "t"
        2, 0, 0, 0,     // partition 2
        3, 0, 0, 0,     // 3 replicas
        4, 0, 0, 0,     // broker 4, the preferred leader
        2, 0, 0, 0,     // broker 2
        3, 0, 0, 0,     // broker 3
        5, 0, 0, 0,     // timeout 5 ms
    ]);
    assert_request_round_trips(&req, 7);
    let resp = Response::ReassignPartitions(TopicResults {
        results: vec![TopicResult {
            name: "t".into(),
            error: ErrorCode::InvalidRequest,
            message: "m".into(),
        }],
    });
    assert_eq!(
        response_body(&resp),
        [1, 0, 0, 0, 1, 0, b't', 14, 0, 1, 0, b'm']
    );
    assert_response_round_trips(&resp, 9);
}

#[test]
fn change_brokers_encodes_to_the_documented_bytes() {
    let req = Request::ChangeBrokers(ChangeBrokersRequest {
        action: BrokerAction::Remove,
        broker_id: 4,
        timeout_ms: 5,
        peer_addr: String::new(),
    });
    assert_eq!(req.api_key() as u16, 21);
    #[rustfmt::skip]
    assert_eq!(request_body(&req), [
        2,              // remove
        4, 0, 0, 0,     // broker 4
        5, 0, 0, 0,     // timeout 5 ms
        0, 0,           // no peer address
    ]);
    let add = Request::ChangeBrokers(ChangeBrokersRequest {
        action: BrokerAction::Add,
        broker_id: 5,
        timeout_ms: 5,
        peer_addr: "h:1".into(),
    });
    #[rustfmt::skip]
    assert_eq!(request_body(&add), [
        3,              // add
        5, 0, 0, 0,     // broker 5
        5, 0, 0, 0,     // timeout 5 ms
        3, 0, b'h', b':', b'1', // its peer address
    ]);
    assert_request_round_trips(&add, 8);
    assert_request_round_trips(&req, 7);
    let mut unknown_action = request_body(&req);
    unknown_action[0] = 9;
    let payload = [
        &concat(&encode_request(&header(req.api_key(), 7), &req))[4..4 + 11],
        &unknown_action[..],
    ]
    .concat();
    assert!(decode_request(Bytes::from(payload)).is_err());
    // A count of moves past the frame fails before allocating.
    let payload = [&[9, 0, 0, 0, 0, 0][..], &[0, 0, 0, 0], &[0xff; 4]].concat();
    assert!(matches!(
        decode_response(Bytes::from(payload), ApiKey::ChangeBrokers),
        Err(DecodeError::Truncated { .. })
    ));
    let resp = Response::ChangeBrokers(ChangeBrokersResponse {
        error: ErrorCode::None,
        message: String::new(),
        moves: vec![PartitionMove {
            topic: "t".into(),
            partition: 1,
            replicas: vec![2, 3],
        }],
        stuck: vec!["u/0".into()],
    });
    #[rustfmt::skip]
    assert_eq!(response_body(&resp), [
        0, 0,           // error: none
        0, 0,           // message ""
        1, 0, 0, 0,     // 1 move
        1, 0, b't',     // topic "t"
        1, 0, 0, 0,     // partition 1
        2, 0, 0, 0,     // 2 replicas
        2, 0, 0, 0,
        3, 0, 0, 0,
        1, 0, 0, 0,     // 1 stuck
        3, 0, b'u', b'/', b'0',
    ]);
    assert_response_round_trips(&resp, 9);
}

#[test]
fn join_cluster_encodes_to_the_documented_bytes() {
    let req = Request::JoinCluster(JoinClusterRequest {
        broker_id: 4,
        peer_addr: "h:1".into(),
        timeout_ms: 5,
    });
    assert_eq!(req.api_key() as u16, 22);
    #[rustfmt::skip]
    assert_eq!(request_body(&req), [
        4, 0, 0, 0,                 // broker 4
        3, 0, b'h', b':', b'1',     // peer address "h:1"
        5, 0, 0, 0,                 // timeout 5 ms
    ]);
    assert_request_round_trips(&req, 7);
    let resp = Response::JoinCluster(JoinClusterResponse {
        error: ErrorCode::None,
        message: String::new(),
        first_voters: vec![1, 2],
        peers: vec![(1, "a:1".into())],
    });
    #[rustfmt::skip]
    assert_eq!(response_body(&resp), [
        0, 0,                       // error: none
        0, 0,                       // message ""
        2, 0, 0, 0,                 // 2 first voters
        1, 0, 0, 0,
        2, 0, 0, 0,
        1, 0, 0, 0,                 // 1 peer
        1, 0, 0, 0,                 // broker 1
        3, 0, b'a', b':', b'1',     // at "a:1"
    ]);
    assert_response_round_trips(&resp, 9);
    // A count of peers past the frame fails before allocating.
    let payload = [
        &[9, 0, 0, 0, 0, 0][..],
        &[0, 0, 0, 0],
        &[0, 0, 0, 0],
        &[0xff; 4],
    ]
    .concat();
    assert!(matches!(
        decode_response(Bytes::from(payload), ApiKey::JoinCluster),
        Err(DecodeError::Truncated { .. })
    ));
    // More peers than a cluster may have, though the frame holds them.
    let many = Response::JoinCluster(JoinClusterResponse {
        error: ErrorCode::None,
        message: String::new(),
        first_voters: vec![1],
        peers: (0..=JOIN_PEERS_MAX as u32)
            .map(|b| (b, String::new()))
            .collect(),
    });
    let frame = concat(&encode_response(9, &many));
    assert!(matches!(
        decode_response(Bytes::copy_from_slice(&frame[4..]), ApiKey::JoinCluster),
        Err(DecodeError::Invalid { .. })
    ));
}

#[test]
fn a_move_naming_more_brokers_than_allowed_is_refused() {
    let too_many = Request::ReassignPartitions(ReassignPartitionsRequest {
        moves: vec![PartitionMove {
            topic: "t".into(),
            partition: 0,
            replicas: (1..=MOVE_REPLICAS_MAX as u32 + 1).collect(),
        }],
        timeout_ms: 5,
    });
    let frame = concat(&encode_request(&header(too_many.api_key(), 1), &too_many));
    assert!(matches!(
        decode_request(Bytes::copy_from_slice(&frame[4..])),
        Err(RequestFrameError::Malformed(DecodeError::Invalid { .. }))
    ));
}

#[test]
fn init_producer_id_encodes_to_the_documented_bytes() {
    let req = Request::InitProducerId(InitProducerIdRequest { timeout_ms: 5 });
    assert_eq!(req.api_key() as u16, 19);
    assert_eq!(request_body(&req), [5, 0, 0, 0]);
    assert_request_round_trips(&req, 7);
    let resp = Response::InitProducerId(InitProducerIdResponse {
        error: ErrorCode::None,
        producer_id: 258,
        producer_epoch: 1,
    });
    #[rustfmt::skip]
    assert_eq!(response_body(&resp), [
        0, 0,                       // error: none
        2, 1, 0, 0, 0, 0, 0, 0,     // producer id 258
        1, 0,                       // epoch 1
    ]);
    assert_response_round_trips(&resp, 9);
}

#[test]
fn huge_counts_in_settings_messages_fail_without_allocating() {
    let huge = [0xff, 0xff, 0xff, 0xff];
    for api in [
        ApiKey::AlterTopicConfigs,
        ApiKey::DescribeTopicConfigs,
        ApiKey::CreatePartitions,
        ApiKey::ReassignPartitions,
    ] {
        let mut payload =
            concat(&encode_request(&header(api, 1), &Request::ApiVersions))[4..].to_vec();
        payload.extend_from_slice(&huge);
        assert!(
            matches!(
                decode_request(Bytes::from(payload)),
                Err(RequestFrameError::Malformed(DecodeError::Truncated { .. }))
            ),
            "{api:?}"
        );
        let payload = [&[9, 0, 0, 0, 0, 0][..], &huge].concat();
        assert!(
            matches!(
                decode_response(Bytes::from(payload), api),
                Err(DecodeError::Truncated { .. })
            ),
            "{api:?}"
        );
    }
}

fn name() -> impl Strategy<Value = String> {
    "[a-z.]{0,12}"
}

proptest! {
    #[test]
    fn any_settings_message_round_trips_through_a_frame(
        names in prop::collection::vec(name(), 0..4),
        set in prop::collection::vec((name(), name()), 0..4),
        delete in prop::collection::vec(name(), 0..4),
        timeout_ms: u32,
        sources in prop::collection::vec(any::<bool>(), 0..4),
    ) {
        let alter = Request::AlterTopicConfigs(AlterTopicConfigsRequest {
            topics: names
                .iter()
                .map(|n| TopicConfigChange { name: n.clone(), set: set.clone(), delete: delete.clone() })
                .collect(),
            timeout_ms,
        });
        assert_request_round_trips(&alter, 1);
        assert_request_round_trips(
            &Request::DescribeTopicConfigs(DescribeTopicConfigsRequest { names: names.clone() }),
            2,
        );
        let described = Response::DescribeTopicConfigs(DescribeTopicConfigsResponse {
            topics: names
                .iter()
                .map(|n| TopicConfigs {
                    name: n.clone(),
                    error: ErrorCode::None,
                    message: String::new(),
                    configs: sources
                        .iter()
                        .zip(set.iter())
                        .map(|(s, (k, v))| ConfigEntry {
                            key: k.clone(),
                            value: v.clone(),
                            source: if *s { ConfigSource::Topic } else { ConfigSource::Default },
                        })
                        .collect(),
                })
                .collect(),
        });
        assert_response_round_trips(&described, 3);
        let moves = Request::ReassignPartitions(ReassignPartitionsRequest {
            moves: names
                .iter()
                .enumerate()
                .map(|(i, n)| PartitionMove {
                    topic: n.clone(),
                    partition: i as u32,
                    replicas: (0..i as u32).collect(),
                })
                .collect(),
            timeout_ms,
        });
        assert_request_round_trips(&moves, 4);
        let Request::ReassignPartitions(ReassignPartitionsRequest { moves, .. }) = moves else {
            unreachable!()
        };
        let changed = Response::ChangeBrokers(ChangeBrokersResponse {
            error: ErrorCode::None,
            message: names.concat(),
            moves,
            stuck: names.clone(),
        });
        assert_response_round_trips(&changed, 5);
        for action in [BrokerAction::Balance, BrokerAction::Remove, BrokerAction::Add] {
            let change = Request::ChangeBrokers(ChangeBrokersRequest {
                action,
                broker_id: timeout_ms,
                timeout_ms,
                peer_addr: names.concat(),
            });
            assert_request_round_trips(&change, 6);
        }
        let join = Request::JoinCluster(JoinClusterRequest {
            broker_id: timeout_ms,
            peer_addr: names.concat(),
            timeout_ms,
        });
        assert_request_round_trips(&join, 7);
        let joined = Response::JoinCluster(JoinClusterResponse {
            error: ErrorCode::None,
            message: names.concat(),
            first_voters: (0..names.len() as u32).collect(),
            peers: names.iter().enumerate().map(|(i, n)| (i as u32, n.clone())).collect(),
        });
        assert_response_round_trips(&joined, 8);
    }
}
