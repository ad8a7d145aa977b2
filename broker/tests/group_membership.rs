//! Group membership against a real broker: members join and split a
//! topic, a partition moves only once its owner released it, a member that
//! leaves hands over at once and a silent one after the session timeout,
//! commits from members that no longer own a partition are fenced, and
//! ListGroups / DescribeGroups show it all.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::BrokerProcess;
use common::groups::*;
use rill_client::protocol::messages::*;
use rill_client::protocol::*;

const TOPIC: &str = "events";

fn owned(partitions: &[u32]) -> Vec<TopicPartitions> {
    vec![TopicPartitions {
        topic: TOPIC.into(),
        partitions: partitions.to_vec(),
    }]
}

fn broker_with(args: &[&str]) -> (tempfile::TempDir, BrokerProcess) {
    let dir = tempfile::tempdir().unwrap();
    let mut all = vec!["--listen".to_string(), "127.0.0.1:0".into()];
    all.extend(args.iter().map(|a| a.to_string()));
    let broker = BrokerProcess::start_with(dir.path(), &all);
    assert_eq!(
        broker.connect().create_topic(TOPIC, 6, &[]).error,
        ErrorCode::None
    );
    (dir, broker)
}

#[test]
fn members_split_a_topic_and_a_partition_moves_only_once_released() {
    let (_dir, broker) = broker_with(&[]);
    let mut c = coordinator(&[broker.addr], "g");
    let a = beat(&mut c, heartbeat("g", "", 0, Some(&[TOPIC]), &[]));
    assert_eq!(a.error, ErrorCode::None);
    let a_id = a.member_id.clone().unwrap();
    let a_all = partitions_of(a.assignment.as_ref().unwrap(), TOPIC);
    assert_eq!(a_all, vec![0, 1, 2, 3, 4, 5]);
    assert_eq!(a.heartbeat_interval_ms, 5_000);

    let b = beat(&mut c, heartbeat("g", "", 0, Some(&[TOPIC]), &[]));
    let b_id = b.member_id.clone().unwrap();
    assert_ne!(a_id, b_id);
    assert!(partitions_of(b.assignment.as_ref().unwrap(), TOPIC).is_empty());
    // While partitions move, members are told to heartbeat often.
    assert_eq!(b.heartbeat_interval_ms, 200);

    // a is told to keep three; it still owns six until it says otherwise.
    let a2 = beat(
        &mut c,
        heartbeat("g", &a_id, a.member_epoch, None, &owned(&a_all)),
    );
    let kept = partitions_of(a2.assignment.as_ref().unwrap(), TOPIC);
    assert_eq!(kept.len(), 3);
    let b2 = beat(&mut c, heartbeat("g", &b_id, b.member_epoch, None, &[]));
    assert!(partitions_of(b2.assignment.as_ref().unwrap(), TOPIC).is_empty());
    // While releasing, a may still commit what it gives up; afterwards not.
    let moving: Vec<u32> = a_all
        .iter()
        .copied()
        .filter(|p| !kept.contains(p))
        .collect();
    let commit = commit_request(
        "g",
        (&a_id, a2.member_epoch),
        TOPIC,
        &[(moving[0], 5)],
        None,
    );
    assert_eq!(
        commit_errors(c.call(commit.clone()).1).unwrap(),
        vec![ErrorCode::None]
    );
    beat(
        &mut c,
        heartbeat("g", &a_id, a2.member_epoch, None, &owned(&kept)),
    );
    assert_eq!(
        commit_errors(c.call(commit).1).unwrap(),
        vec![ErrorCode::FencedMemberEpoch]
    );
    let b3 = beat(&mut c, heartbeat("g", &b_id, b2.member_epoch, None, &[]));
    let b_has = partitions_of(b3.assignment.as_ref().unwrap(), TOPIC);
    assert_eq!(b_has, moving);
    // b's commit of its new partition is accepted at its epoch.
    let commit = commit_request(
        "g",
        (&b_id, b3.member_epoch),
        TOPIC,
        &[(moving[0], 9)],
        None,
    );
    assert_eq!(
        commit_errors(c.call(commit).1).unwrap(),
        vec![ErrorCode::None]
    );

    // Described: two members, stable, each with its three partitions.
    let (_, r) = c.call(Request::DescribeGroups(DescribeGroupsRequest {
        groups: vec!["g".into(), "nobody".into()],
    }));
    let Some(Response::DescribeGroups(d)) = r else {
        panic!("a DescribeGroups answer")
    };
    assert_eq!(d.groups[0].error, ErrorCode::None);
    assert_eq!(d.groups[0].state, "Stable");
    assert_eq!(d.groups[0].members.len(), 2);
    assert!(
        d.groups[0]
            .members
            .iter()
            .all(|m| partitions_of(&m.assigned, TOPIC).len() == 3)
    );
    assert!(d.groups[0].members.iter().all(|m| m.host == "127.0.0.1"));
    assert_eq!(d.groups[1].error, ErrorCode::GroupIdNotFound);
    let (_, r) = c.call(Request::ListGroups);
    let Some(Response::ListGroups(l)) = r else {
        panic!("a ListGroups answer")
    };
    assert_eq!(
        l.groups,
        vec![ListedGroup {
            group: "g".into(),
            state: "Stable".into()
        }]
    );

    // b leaves: a gets everything back at its next heartbeat.
    let left = beat(
        &mut c,
        heartbeat("g", &b_id, LEAVE_GROUP_MEMBER_EPOCH, None, &[]),
    );
    assert_eq!(left.error, ErrorCode::None);
    let a3 = beat(
        &mut c,
        heartbeat("g", &a_id, a2.member_epoch, None, &owned(&kept)),
    );
    assert_eq!(
        partitions_of(a3.assignment.as_ref().unwrap(), TOPIC).len(),
        6
    );
    // A member that left is unknown.
    let gone = beat(&mut c, heartbeat("g", &b_id, b3.member_epoch, None, &[]));
    assert_eq!(gone.error, ErrorCode::UnknownMemberId);
}

#[test]
fn a_silent_member_loses_its_partitions_after_the_session_timeout() {
    let (_dir, broker) = broker_with(&[
        "--group-session-timeout-ms",
        "1500",
        "--group-heartbeat-interval-ms",
        "300",
    ]);
    let mut c = coordinator(&[broker.addr], "g");
    let a = beat(&mut c, heartbeat("g", "", 0, Some(&[TOPIC]), &[]));
    assert_eq!(a.heartbeat_interval_ms, 300);
    let a_id = a.member_id.clone().unwrap();
    let mut a_owned = partitions_of(a.assignment.as_ref().unwrap(), TOPIC);
    let mut a_epoch = a.member_epoch;
    let b = beat(&mut c, heartbeat("g", "", 0, Some(&[TOPIC]), &[]));
    let b_id = b.member_id.clone().unwrap();
    // a heartbeats and releases what it is told; b goes silent once it
    // has its share.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut b_got = false;
    loop {
        let r = beat(
            &mut c,
            heartbeat("g", &a_id, a_epoch, None, &owned(&a_owned)),
        );
        assert_eq!(r.error, ErrorCode::None);
        a_epoch = r.member_epoch;
        a_owned = partitions_of(r.assignment.as_ref().unwrap(), TOPIC);
        if !b_got {
            let rb = beat(&mut c, heartbeat("g", &b_id, b.member_epoch, None, &[]));
            b_got = partitions_of(rb.assignment.as_ref().unwrap(), TOPIC).len() == 3;
        }
        if b_got && a_owned.len() == 6 {
            break;
        }
        assert!(Instant::now() < deadline, "a never got b's partitions back");
        std::thread::sleep(Duration::from_millis(200));
    }
    let gone = beat(&mut c, heartbeat("g", &b_id, b.member_epoch, None, &[]));
    assert_eq!(gone.error, ErrorCode::UnknownMemberId);
}

#[test]
fn heartbeats_that_make_no_sense_are_refused() {
    let (_dir, broker) = broker_with(&["--group-max-size", "1"]);
    let mut c = coordinator(&[broker.addr], "g");
    // A join must say what it subscribes to.
    let r = beat(
        &mut c,
        Request::ConsumerGroupHeartbeat(ConsumerGroupHeartbeatRequest {
            group: "g".into(),
            member_id: String::new(),
            member_epoch: 0,
            subscribed_topics: None,
            owned: None,
        }),
    );
    assert_eq!(r.error, ErrorCode::InvalidRequest);
    // Overlong member ids, too many or invalid topics.
    let long_id = "m".repeat(256);
    let r = beat(&mut c, heartbeat("g", &long_id, 0, Some(&[TOPIC]), &[]));
    assert_eq!(r.error, ErrorCode::InvalidRequest);
    let many: Vec<String> = (0..1_001).map(|i| format!("t{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let r = beat(&mut c, heartbeat("g", "", 0, Some(&many), &[]));
    assert_eq!(r.error, ErrorCode::InvalidRequest);
    let r = beat(&mut c, heartbeat("g", "", 0, Some(&["bad/name"]), &[]));
    assert_eq!(r.error, ErrorCode::InvalidRequest);
    // An unknown member, a made-up epoch.
    assert_eq!(
        beat(&mut c, heartbeat("g", "nobody", 4, None, &[])).error,
        ErrorCode::UnknownMemberId
    );
    let a = beat(&mut c, heartbeat("g", "", 0, Some(&[TOPIC]), &[]));
    let a_id = a.member_id.unwrap();
    assert_eq!(
        beat(&mut c, heartbeat("g", &a_id, a.member_epoch + 5, None, &[])).error,
        ErrorCode::FencedMemberEpoch
    );
    // The group is full at one member.
    assert_eq!(
        beat(&mut c, heartbeat("g", "", 0, Some(&[TOPIC]), &[])).error,
        ErrorCode::GroupMaxSizeReached
    );
    // A group-less commit while the group has a member is refused.
    let r = c.call(commit_request(
        "g",
        ("", NO_MEMBER_EPOCH),
        TOPIC,
        &[(0, 1)],
        None,
    ));
    assert_eq!(commit_errors(r.1).unwrap(), vec![ErrorCode::NonEmptyGroup]);
    // A topic that does not exist assigns nothing, and is no error.
    let r = beat(&mut c, heartbeat("h", "", 0, Some(&["missing"]), &[]));
    assert_eq!(r.error, ErrorCode::None);
    assert!(r.assignment.unwrap().is_empty());
}

#[test]
fn a_group_is_deleted_only_without_members() {
    let (_dir, broker) = broker_with(&[]);
    let mut c = coordinator(&[broker.addr], "g");
    let a = beat(&mut c, heartbeat("g", "", 0, Some(&[TOPIC]), &[]));
    let a_id = a.member_id.clone().unwrap();
    let commit = commit_request("g", (&a_id, a.member_epoch), TOPIC, &[(0, 3), (1, 4)], None);
    assert_eq!(
        commit_errors(c.call(commit).1).unwrap(),
        vec![ErrorCode::None; 2]
    );
    let delete = |c: &mut common::Client, group: &str| match c.call(Request::DeleteGroups(
        DeleteGroupsRequest {
            groups: vec![group.into()],
        },
    )) {
        (_, Some(Response::DeleteGroups(d))) => d.groups[0].error,
        other => panic!("a DeleteGroups answer, not {other:?}"),
    };
    assert_eq!(delete(&mut c, "g"), ErrorCode::NonEmptyGroup);
    assert_eq!(delete(&mut c, "never-seen"), ErrorCode::GroupIdNotFound);
    beat(
        &mut c,
        heartbeat("g", &a_id, LEAVE_GROUP_MEMBER_EPOCH, None, &[]),
    );
    assert_eq!(delete(&mut c, "g"), ErrorCode::None);
    let (_, r) = c.call(fetch_all("g"));
    let Some(Response::OffsetFetch(f)) = r else {
        panic!("an OffsetFetch answer")
    };
    assert!(f.topics.is_empty(), "{f:?}");
    assert_eq!(delete(&mut c, "g"), ErrorCode::GroupIdNotFound);
}

/// The coordinator's broker is SIGKILLed: the new coordinator carries on
/// with the members as they were (same ids, epochs and partitions), so the
/// group does not stop.
#[test]
fn members_keep_their_ids_epochs_and_partitions_across_the_coordinators_sigkill() {
    let mut cluster = common::cluster::TestCluster::start(3);
    cluster.create_topic(TOPIC, 6);
    let addrs: Vec<_> = (1..=3).map(|b| cluster.addr(b)).collect();
    let mut c = coordinator(&addrs, "g");
    cluster.wait_for("the offsets topic to settle", 60, |c| {
        c.settled("__consumer_offsets", 16)
    });
    // Two members, settled: each owns three partitions.
    let mut members: Vec<(String, i32, Vec<u32>)> = Vec::new();
    for _ in 0..2 {
        let j = beat(&mut c, heartbeat("g", "", 0, Some(&[TOPIC]), &[]));
        assert_eq!(j.error, ErrorCode::None, "{j:?}");
        let owned = partitions_of(j.assignment.as_ref().unwrap(), TOPIC);
        members.push((j.member_id.unwrap(), j.member_epoch, owned));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while members.iter().any(|m| m.2.len() != 3) {
        assert!(Instant::now() < deadline, "the group never settled");
        for m in &mut members {
            let r = beat(&mut c, heartbeat("g", &m.0, m.1, None, &owned(&m.2)));
            assert_eq!(r.error, ErrorCode::None);
            m.1 = r.member_epoch;
            m.2 = partitions_of(r.assignment.as_ref().unwrap(), TOPIC);
        }
    }
    let p = rill_client::partitioner::partition_for_key(b"g", 16);
    let leader = cluster.leader_of("__consumer_offsets", p).unwrap();
    cluster.kill(leader);
    let up: Vec<_> = (1..=3)
        .filter(|b| cluster.is_up(*b))
        .map(|b| cluster.addr(b))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    for m in &members {
        let r = loop {
            let mut c = coordinator(&up, "g");
            match try_call(&mut c, &heartbeat("g", &m.0, m.1, None, &owned(&m.2))) {
                Some(Response::ConsumerGroupHeartbeat(r)) if !moved(r.error) => break r,
                _ => {}
            }
            assert!(Instant::now() < deadline, "no new coordinator answered");
            std::thread::sleep(Duration::from_millis(100));
        };
        assert_eq!(r.error, ErrorCode::None, "{r:?}");
        assert_eq!(r.member_epoch, m.1);
        assert_eq!(partitions_of(r.assignment.as_ref().unwrap(), TOPIC), m.2);
    }
}
