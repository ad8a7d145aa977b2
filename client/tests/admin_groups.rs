//! The admin client's group operations against scripted brokers on
//! 127.0.0.1: a coordinator that moves is found again and the request
//! retried; lag is worked out from commits and high watermarks; offsets
//! are reset only while a group has no members, within each partition's
//! log, from outside the group; deletion and description name the group
//! when it is missing or busy; listing merges every broker's groups.
//!
//! Each scripted broker answers every request with its script (a
//! closure), names itself as every group's coordinator and every
//! partition's leader, and records what it was asked.

#[path = "common/answers.rs"]
mod answers;

use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use rill_client::admin::{PartitionOffset, ResetTo};
use rill_client::protocol::messages::*;
use rill_client::protocol::{
    ErrorCode, Request, Response, decode_request, encode_response, take_frame,
};
use rill_client::{Admin, ClientError, Cluster};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What a scripted broker answers to everything but metadata and
/// `FindCoordinator`, which it answers itself.
type Script = Box<dyn FnMut(&Request) -> Response + Send>;

/// A scripted broker: its id and port, and every request it got.
struct Scripted {
    id: u32,
    port: u16,
    asked: Arc<Mutex<Vec<Request>>>,
}

impl Scripted {
    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn asked(&self) -> Vec<Request> {
        self.asked.lock().expect("lock").clone()
    }

    fn count(&self, f: impl Fn(&Request) -> bool) -> usize {
        self.asked().iter().filter(|r| f(r)).count()
    }
}

/// Topic "t": `partitions` partitions, all led by the broker answering.
fn metadata(
    id: u32,
    port: u16,
    others: &[(u32, u16)],
    topics: &Option<Vec<String>>,
    partitions: u32,
) -> Response {
    let mut brokers = vec![BrokerMetadata {
        broker_id: id,
        host: "127.0.0.1".into(),
        port,
    }];
    brokers.extend(others.iter().map(|&(broker_id, port)| BrokerMetadata {
        broker_id,
        host: "127.0.0.1".into(),
        port,
    }));
    let known = |name: &str| name == "t";
    let names = topics.clone().unwrap_or_else(|| vec!["t".into()]);
    Response::Metadata(MetadataResponse {
        brokers,
        controller_id: id as i32,
        topics: names
            .into_iter()
            .map(|name| TopicMetadata {
                error: if known(&name) {
                    ErrorCode::None
                } else {
                    ErrorCode::UnknownTopicOrPartition
                },
                partitions: if known(&name) {
                    (0..partitions)
                        .map(|partition| PartitionMetadata {
                            partition,
                            error: ErrorCode::None,
                            leader: id as i32,
                            leader_epoch: 1,
                            replicas: vec![id],
                            log_start_offset: 0,
                            high_watermark: 0,
                        })
                        .collect()
                } else {
                    Vec::new()
                },
                name,
                topic_id: [7; 16],
            })
            .collect(),
    })
}

/// Starts a broker with id `id` answering with `script`; `others` are
/// the other brokers its metadata names.
async fn scripted(id: u32, others: Vec<(u32, u16)>, partitions: u32, script: Script) -> Scripted {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let asked: Arc<Mutex<Vec<Request>>> = Arc::default();
    let script = Arc::new(Mutex::new(script));
    {
        let asked = Arc::clone(&asked);
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let (asked, script, others) =
                    (Arc::clone(&asked), Arc::clone(&script), others.clone());
                tokio::spawn(async move {
                    let mut buf = BytesMut::new();
                    loop {
                        let payload = loop {
                            if let Some(p) = take_frame(&mut buf, 1 << 20).expect("frame") {
                                break p;
                            }
                            match socket.read_buf(&mut buf).await {
                                Ok(n) if n > 0 => {}
                                _ => return,
                            }
                        };
                        let (header, request) = decode_request(payload).expect("request");
                        asked.lock().expect("lock").push(request.clone());
                        let response = match &request {
                            Request::Metadata(m) => {
                                metadata(id, port, &others, &m.topics, partitions)
                            }
                            Request::FindCoordinator(_) => {
                                Response::FindCoordinator(FindCoordinatorResponse {
                                    error: ErrorCode::None,
                                    coordinator: id as i32,
                                    host: "127.0.0.1".into(),
                                    port,
                                })
                            }
                            other => (script.lock().expect("lock"))(other),
                        };
                        for part in encode_response(header.correlation_id, &response) {
                            if socket.write_all(&part).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
    }
    Scripted { id, port, asked }
}

fn admin(broker: &Scripted) -> Admin {
    Admin::new(Cluster::new(&broker.addr(), "admin-groups-test").expect("cluster"))
}

fn described(error: ErrorCode, members: Vec<DescribedMember>) -> Response {
    Response::DescribeGroups(DescribeGroupsResponse {
        groups: vec![DescribedGroup {
            group: "g".into(),
            error,
            state: if members.is_empty() {
                "Empty"
            } else {
                "Stable"
            }
            .into(),
            group_epoch: 3,
            assignment_epoch: 3,
            members,
        }],
    })
}

fn member(id: &str, assigned: Vec<TopicPartitions>) -> DescribedMember {
    DescribedMember {
        member_id: id.into(),
        client_id: format!("client-{id}"),
        host: "/127.0.0.1".into(),
        member_epoch: 3,
        assigned,
    }
}

fn committed(offsets: &[(u32, i64)]) -> Response {
    Response::OffsetFetch(OffsetFetchResponse {
        error: ErrorCode::None,
        topics: vec![OffsetFetchTopicResponse {
            name: "t".into(),
            partitions: offsets
                .iter()
                .map(|&(partition, offset)| OffsetFetchPartitionResponse {
                    partition,
                    offset,
                    leader_epoch: 0,
                    metadata: None,
                    error: ErrorCode::None,
                })
                .collect(),
        }],
    })
}

/// Answers a `ListOffsets` from `earliest` and `latest` per partition (by
/// index); a time finds offset `at_time`, or none when it is -1.
fn offsets(l: &ListOffsetsRequest, earliest: &[i64], latest: &[i64], at_time: i64) -> Response {
    answers::list_offsets(l, |p| match p.timestamp_ms {
        EARLIEST_TIMESTAMP => earliest[p.partition as usize],
        LATEST_TIMESTAMP => latest[p.partition as usize],
        _ => at_time,
    })
}

fn commit_ok(c: &OffsetCommitRequest, error: ErrorCode) -> Response {
    Response::OffsetCommit(OffsetCommitResponse {
        topics: c
            .topics
            .iter()
            .map(|t| OffsetCommitTopicResponse {
                name: t.name.clone(),
                partitions: t
                    .partitions
                    .iter()
                    .map(|p| OffsetCommitPartitionResponse {
                        partition: p.partition,
                        error,
                    })
                    .collect(),
            })
            .collect(),
    })
}

fn unscripted(r: &Request) -> Response {
    panic!("not scripted: {r:?}")
}

#[tokio::test]
async fn a_moved_coordinator_is_found_again_and_lag_is_worked_out() {
    let mut moved_once = false;
    let broker = scripted(
        1,
        Vec::new(),
        3,
        Box::new(move |r| match r {
            Request::DescribeGroups(_) if !moved_once => {
                moved_once = true;
                described(ErrorCode::NotCoordinator, Vec::new())
            }
            Request::DescribeGroups(_) => described(
                ErrorCode::None,
                vec![
                    member(
                        "m2",
                        vec![TopicPartitions {
                            topic: "t".into(),
                            partitions: vec![2, 1],
                        }],
                    ),
                    member(
                        "m1",
                        vec![TopicPartitions {
                            topic: "t".into(),
                            partitions: vec![0],
                        }],
                    ),
                ],
            ),
            // Partition 2 committed past its end (the topic was
            // recreated): no negative lag.
            Request::OffsetFetch(f) if f.group == "g" && f.topics.is_none() => {
                committed(&[(0, 3), (2, 12)])
            }
            Request::ListOffsets(l) => offsets(l, &[0, 0, 0], &[10, 4, 9], -1),
            other => unscripted(other),
        }),
    )
    .await;
    let d = admin(&broker).describe_group("g").await.expect("described");
    assert_eq!((d.group.as_str(), d.state.as_str()), ("g", "Stable"));
    let members: Vec<_> = d
        .members
        .iter()
        .map(|m| {
            (
                m.member_id.as_str(),
                m.client_id.as_str(),
                m.host.as_str(),
                m.assigned[0].partitions.clone(),
            )
        })
        .collect();
    assert_eq!(
        members,
        [
            ("m1", "client-m1", "/127.0.0.1", vec![0]),
            ("m2", "client-m2", "/127.0.0.1", vec![1, 2]),
        ]
    );
    let lags: Vec<_> = d
        .partitions
        .iter()
        .map(|p| {
            (
                p.topic.as_str(),
                p.partition,
                p.committed_offset,
                p.high_watermark,
                p.lag,
            )
        })
        .collect();
    assert_eq!(
        lags,
        [
            ("t", 0, 3, Some(10), Some(7)),
            ("t", 2, 12, Some(9), Some(0))
        ]
    );
    // Found once, then again after NotCoordinator; cached afterwards.
    assert_eq!(
        broker.count(|r| matches!(r, Request::FindCoordinator(_))),
        2
    );
    assert_eq!(broker.count(|r| matches!(r, Request::DescribeGroups(_))), 2);
}

#[tokio::test]
async fn a_group_that_does_not_exist_is_named_in_the_error() {
    let broker = scripted(
        1,
        Vec::new(),
        1,
        Box::new(|r| match r {
            Request::DescribeGroups(_) => described(ErrorCode::GroupIdNotFound, Vec::new()),
            Request::DeleteGroups(_) => Response::DeleteGroups(DeleteGroupsResponse {
                groups: vec![DeletedGroup {
                    group: "g".into(),
                    error: ErrorCode::GroupIdNotFound,
                }],
            }),
            other => unscripted(other),
        }),
    )
    .await;
    let admin = admin(&broker);
    let e = admin.describe_group("g").await.expect_err("no such group");
    assert!(
        matches!(e, ClientError::UnknownGroup(ref g) if g == "g"),
        "{e:?}"
    );
    assert_eq!(e.to_string(), r#"group "g" does not exist"#);
    let e = admin.delete_group("g").await.expect_err("no such group");
    assert_eq!(e.to_string(), r#"group "g" does not exist"#);
}

#[tokio::test]
async fn a_group_with_members_is_neither_deleted_nor_reset() {
    let broker = scripted(
        1,
        Vec::new(),
        1,
        Box::new(|r| match r {
            Request::DescribeGroups(_) => {
                described(ErrorCode::None, vec![member("m1", Vec::new())])
            }
            Request::DeleteGroups(_) => Response::DeleteGroups(DeleteGroupsResponse {
                groups: vec![DeletedGroup {
                    group: "g".into(),
                    error: ErrorCode::NonEmptyGroup,
                }],
            }),
            other => unscripted(other),
        }),
    )
    .await;
    let admin = admin(&broker);
    let e = admin.delete_group("g").await.expect_err("has members");
    assert!(
        matches!(e, ClientError::GroupHasMembers(ref g) if g == "g"),
        "{e:?}"
    );
    assert!(
        e.to_string().starts_with(r#"group "g" has active members"#),
        "{e}"
    );
    let e = admin
        .reset_offsets("g", "t", ResetTo::Earliest)
        .await
        .expect_err("has members");
    assert!(matches!(e, ClientError::GroupHasMembers(_)), "{e:?}");
    // Refused on the description alone: nothing was looked up or committed.
    assert_eq!(
        broker.count(|r| matches!(r, Request::ListOffsets(_) | Request::OffsetCommit(_))),
        0
    );
}

#[tokio::test]
async fn a_member_joining_before_the_commit_is_the_same_refusal() {
    let broker = scripted(
        1,
        Vec::new(),
        1,
        Box::new(|r| match r {
            Request::DescribeGroups(_) => described(ErrorCode::None, Vec::new()),
            Request::ListOffsets(l) => offsets(l, &[0], &[5], -1),
            Request::OffsetCommit(c) => commit_ok(c, ErrorCode::NonEmptyGroup),
            other => unscripted(other),
        }),
    )
    .await;
    let e = admin(&broker)
        .reset_offsets("g", "t", ResetTo::Latest)
        .await
        .expect_err("a member joined");
    assert!(
        matches!(e, ClientError::GroupHasMembers(ref g) if g == "g"),
        "{e:?}"
    );
}

#[tokio::test]
async fn offsets_are_reset_within_each_log_from_outside_the_group() {
    // Partition 0 holds 2..10, partition 1 holds 0..4; a time finds
    // nothing (the latest is used).
    let broker = scripted(
        1,
        Vec::new(),
        2,
        Box::new(|r| match r {
            Request::DescribeGroups(_) => described(ErrorCode::GroupIdNotFound, Vec::new()),
            Request::ListOffsets(l) => offsets(l, &[2, 0], &[10, 4], -1),
            Request::OffsetCommit(c) => commit_ok(c, ErrorCode::None),
            other => unscripted(other),
        }),
    )
    .await;
    let admin = admin(&broker);
    let set = |offsets: &[u64]| -> Vec<PartitionOffset> {
        offsets
            .iter()
            .enumerate()
            .map(|(p, &offset)| PartitionOffset {
                topic: "t".into(),
                partition: p as u32,
                offset,
            })
            .collect()
    };
    for (to, expected) in [
        (ResetTo::Earliest, [2, 0]),
        (ResetTo::Latest, [10, 4]),
        (ResetTo::Offset(3), [3, 3]),
        (ResetTo::Offset(0), [2, 0]),
        (ResetTo::Offset(50), [10, 4]),
        (ResetTo::Timestamp(1_700_000_000_000), [10, 4]),
    ] {
        let reset = admin.reset_offsets("g", "t", to).await.expect("reset");
        assert_eq!(reset, set(&expected), "{to}");
        let Some(Request::OffsetCommit(c)) = broker
            .asked()
            .into_iter()
            .rfind(|r| matches!(r, Request::OffsetCommit(_)))
        else {
            panic!("no commit")
        };
        assert_eq!((c.group.as_str(), c.member_id.as_str()), ("g", ""));
        assert_eq!(c.member_epoch, NO_MEMBER_EPOCH);
        let committed: Vec<_> = c.topics[0]
            .partitions
            .iter()
            .map(|p| (p.partition, p.offset))
            .collect();
        assert_eq!(committed, [(0, expected[0]), (1, expected[1])], "{to}");
    }
    let e = admin
        .reset_offsets("g", "missing", ResetTo::Earliest)
        .await
        .expect_err("no such topic");
    assert!(matches!(e, ClientError::UnknownTopic(_)), "{e:?}");
    let e = admin
        .reset_offsets("g", "t", ResetTo::Timestamp(-1))
        .await
        .expect_err("a negative time");
    assert!(matches!(e, ClientError::Invalid(_)), "{e:?}");
    let e = admin
        .reset_offsets("", "t", ResetTo::Earliest)
        .await
        .expect_err("an empty group id");
    assert!(matches!(e, ClientError::Invalid(_)), "{e:?}");
}

#[tokio::test]
async fn every_brokers_groups_are_listed_once_by_name() {
    let listing = |groups: &[(&str, &str)]| {
        let groups: Vec<ListedGroup> = groups
            .iter()
            .map(|&(group, state)| ListedGroup {
                group: group.into(),
                state: state.into(),
            })
            .collect();
        Box::new(move |r: &Request| match r {
            Request::ListGroups => Response::ListGroups(ListGroupsResponse {
                error: ErrorCode::None,
                groups: groups.clone(),
            }),
            other => unscripted(other),
        }) as Script
    };
    let second = scripted(
        2,
        Vec::new(),
        1,
        listing(&[("b", "Stable"), ("a", "Empty")]),
    )
    .await;
    let first = scripted(
        1,
        vec![(second.id, second.port)],
        1,
        listing(&[("c", "Reconciling"), ("a", "Empty")]),
    )
    .await;
    let groups = admin(&first).list_groups().await.expect("listed");
    let groups: Vec<_> = groups
        .iter()
        .map(|g| (g.group.as_str(), g.state.as_str()))
        .collect();
    assert_eq!(
        groups,
        [("a", "Empty"), ("b", "Stable"), ("c", "Reconciling")]
    );
    assert_eq!(second.count(|r| matches!(r, Request::ListGroups)), 1);
}
