//! Committed offsets against real brokers: a commit is acknowledged once
//! committed in Raft, read back by OffsetFetch, kept across a SIGKILL of
//! its broker and across the coordinator's failover; bad commits and
//! writes to the internal topic are refused.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::cluster::TestCluster;
use common::groups::*;
use common::{BrokerProcess, batch, values};
use rill_client::protocol::messages::*;
use rill_client::protocol::*;

#[test]
fn a_commit_is_read_back_with_its_metadata_and_kept_across_a_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path());
    let mut c = broker.connect();
    assert_eq!(c.create_topic("orders", 3, &[]).error, ErrorCode::None);
    let mut coord = coordinator(&[broker.addr], "billing");
    // Nothing committed yet: every offset asked for is -1.
    let (_, r) = coord.call(Request::OffsetFetch(OffsetFetchRequest {
        group: "billing".into(),
        topics: Some(vec![TopicPartitions {
            topic: "orders".into(),
            partitions: vec![0, 1],
        }]),
    }));
    let Some(Response::OffsetFetch(f)) = r else {
        panic!("an OffsetFetch answer")
    };
    assert_eq!(f.error, ErrorCode::None);
    assert!(
        f.topics[0]
            .partitions
            .iter()
            .all(|p| p.offset == NO_COMMITTED_OFFSET)
    );

    let commit = commit_request(
        "billing",
        ("", NO_MEMBER_EPOCH),
        "orders",
        &[(0, 10), (2, 7)],
        Some("host-a"),
    );
    assert_eq!(
        commit_errors(coord.call(commit).1).unwrap(),
        vec![ErrorCode::None; 2]
    );
    // A later commit of one partition replaces only that one.
    let again = commit_request("billing", ("", NO_MEMBER_EPOCH), "orders", &[(0, 12)], None);
    assert_eq!(
        commit_errors(coord.call(again).1).unwrap(),
        vec![ErrorCode::None]
    );
    let expected = BTreeMap::from([
        (("orders".to_string(), 0), (12, None)),
        (("orders".to_string(), 2), (7, Some("host-a".to_string()))),
    ]);
    assert_eq!(committed(&mut coord, "billing").unwrap(), expected);
    // Another group sees nothing of billing's.
    assert_eq!(committed(&mut coord, "audit").unwrap(), BTreeMap::new());

    broker.kill();
    let broker = BrokerProcess::start(dir.path());
    let deadline = Instant::now() + Duration::from_secs(60);
    let after = loop {
        let mut coord = coordinator(&[broker.addr], "billing");
        if let Some(c) = committed(&mut coord, "billing") {
            break c;
        }
        assert!(Instant::now() < deadline, "the coordinator never loaded");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(after, expected);
}

#[test]
fn bad_commits_are_refused_per_partition_and_nothing_else_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path());
    let mut c = broker.connect();
    assert_eq!(c.create_topic("orders", 2, &[]).error, ErrorCode::None);
    let mut coord = coordinator(&[broker.addr], "g");
    let long = "m".repeat(4_097);
    let r = coord.call(commit_request(
        "g",
        ("", NO_MEMBER_EPOCH),
        "orders",
        &[(0, 1)],
        Some(&long),
    ));
    assert_eq!(
        commit_errors(r.1).unwrap(),
        vec![ErrorCode::OffsetMetadataTooLarge]
    );
    let r = coord.call(commit_request(
        "g",
        ("", NO_MEMBER_EPOCH),
        "orders",
        &[(5, 1), (1, 3)],
        None,
    ));
    assert_eq!(
        commit_errors(r.1).unwrap(),
        vec![ErrorCode::UnknownTopicOrPartition, ErrorCode::None]
    );
    let r = coord.call(commit_request(
        "g",
        ("", NO_MEMBER_EPOCH),
        "missing",
        &[(0, 1)],
        None,
    ));
    assert_eq!(
        commit_errors(r.1).unwrap(),
        vec![ErrorCode::UnknownTopicOrPartition]
    );
    // A member that does not exist may not commit.
    let r = coord.call(commit_request("g", ("ghost", 3), "orders", &[(0, 1)], None));
    assert_eq!(
        commit_errors(r.1).unwrap(),
        vec![ErrorCode::UnknownMemberId]
    );
    assert_eq!(
        committed(&mut coord, "g").unwrap(),
        BTreeMap::from([(("orders".to_string(), 1), (3, None))])
    );
    // Empty and overlong group ids.
    for group in [String::new(), "g".repeat(256)] {
        let r = coord.call(commit_request(
            &group,
            ("", NO_MEMBER_EPOCH),
            "orders",
            &[(0, 1)],
            None,
        ));
        assert_eq!(commit_errors(r.1).unwrap(), vec![ErrorCode::InvalidGroupId]);
    }
}

#[test]
fn clients_may_not_produce_to_the_offsets_topic() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path());
    let mut coord = coordinator(&[broker.addr], "g");
    let mut c = broker.connect();
    let r = c.produce("__consumer_offsets", 0, -1, batch(&values(0..1), 0));
    assert_eq!(r.error, ErrorCode::InvalidTopic);
    // The coordinator still reads its log fine.
    assert_eq!(committed(&mut coord, "g").unwrap(), BTreeMap::new());
}

/// Commits rising offsets while the coordinator's broker is SIGKILLed:
/// every acknowledged commit is there afterwards, on the new coordinator.
#[test]
fn acknowledged_commits_survive_the_coordinators_sigkill() {
    let mut cluster = TestCluster::start(3);
    cluster.create_topic("orders", 1);
    let addrs: Vec<_> = (1..=3).map(|b| cluster.addr(b)).collect();
    let group = "ledger";
    let mut coord = coordinator(&addrs, group);
    cluster.wait_for("the offsets topic to settle", 60, |c| {
        c.settled("__consumer_offsets", 16)
    });
    let p = rill_client::partitioner::partition_for_key(group.as_bytes(), 16);
    let mut acknowledged = 0u64;
    let mut killed = false;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut offset = 0u64;
    while offset < 60 {
        assert!(Instant::now() < deadline, "commits stalled at {offset}");
        if offset == 20 && !killed {
            let leader = cluster.leader_of("__consumer_offsets", p).unwrap();
            cluster.kill(leader);
            killed = true;
        }
        offset += 1;
        let r = try_call(
            &mut coord,
            &commit_request(group, ("", NO_MEMBER_EPOCH), "orders", &[(0, offset)], None),
        );
        match commit_errors(r).as_deref() {
            Some([ErrorCode::None]) => acknowledged = offset,
            Some([e]) if moved(*e) || *e == ErrorCode::RequestTimedOut => {
                std::thread::sleep(Duration::from_millis(50));
                coord = coordinator(&addrs, group);
            }
            Some(other) => panic!("commit {offset} refused: {other:?}"),
            None => coord = coordinator(&addrs, group),
        }
    }
    assert!(killed && acknowledged >= 20);
    let up: Vec<_> = (1..=3)
        .filter(|b| cluster.is_up(*b))
        .map(|b| cluster.addr(b))
        .collect();
    let read = loop {
        let mut coord = coordinator(&up, group);
        if let Some(c) = committed(&mut coord, group) {
            break c;
        }
        assert!(Instant::now() < deadline, "no coordinator answered");
        std::thread::sleep(Duration::from_millis(100));
    };
    let (got, _) = read[&("orders".to_string(), 0)];
    // The last acknowledged commit, or one sent after it whose answer was
    // lost with the broker: never anything older.
    assert!(
        got as u64 >= acknowledged && got as u64 <= offset,
        "{got} vs {acknowledged}"
    );
}

#[test]
fn the_commits_of_a_group_without_members_expire_after_the_offsets_retention() {
    let dir = tempfile::tempdir().unwrap();
    // Zero minutes: an empty group's commits go at the next sweep.
    let broker = BrokerProcess::start_with(
        dir.path(),
        &[
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--offsets-retention-minutes".into(),
            "0".into(),
        ],
    );
    assert_eq!(
        broker.connect().create_topic("orders", 1, &[]).error,
        ErrorCode::None
    );
    let mut coord = coordinator(&[broker.addr], "kept");
    // "kept" has a member, so its commit stays; "idle" has none.
    let join = heartbeat("kept", "", 0, Some(&["orders"]), &[]);
    let member = beat(&mut coord, join);
    let id = member.member_id.clone().unwrap();
    let commit = commit_request(
        "kept",
        (&id, member.member_epoch),
        "orders",
        &[(0, 4)],
        None,
    );
    assert_eq!(
        commit_errors(coord.call(commit).1).unwrap(),
        vec![ErrorCode::None]
    );
    let mut idle = coordinator(&[broker.addr], "idle");
    let commit = commit_request("idle", ("", NO_MEMBER_EPOCH), "orders", &[(0, 2)], None);
    assert_eq!(
        commit_errors(idle.call(commit).1).unwrap(),
        vec![ErrorCode::None]
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !committed(&mut idle, "idle").unwrap().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the idle group's commit never expired"
        );
        // Keep the other group's member alive meanwhile.
        let r = beat(
            &mut coord,
            heartbeat("kept", &id, member.member_epoch, None, &[]),
        );
        assert_eq!(r.error, ErrorCode::None);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(committed(&mut coord, "kept").unwrap().len(), 1);
    // Gone from the log too: a restart does not bring it back.
    broker.kill();
    let broker = BrokerProcess::start(dir.path());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut c = coordinator(&[broker.addr], "idle");
        if let Some(c) = committed(&mut c, "idle") {
            assert!(c.is_empty());
            break;
        }
        assert!(Instant::now() < deadline, "the coordinator never loaded");
        std::thread::sleep(Duration::from_millis(100));
    }
}
