//! Consumer groups against a real broker: finding a group's coordinator,
//! the internal offsets topic it lives on, and what clients may not do to
//! that topic.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::cluster::TestCluster;
use common::{BrokerProcess, Client, rill_cli};
use rill_client::partitioner::partition_for_key;
use rill_client::protocol::messages::*;
use rill_client::protocol::*;

const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Asks for `group`'s coordinator until one is named (the offsets topic's
/// partition may still be electing), for at most 30 s.
fn coordinator(c: &mut Client, group: &str) -> FindCoordinatorResponse {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (h, r) = c.call(Request::FindCoordinator(FindCoordinatorRequest {
            group: group.into(),
        }));
        assert_eq!(h.error, ErrorCode::None);
        let Some(Response::FindCoordinator(f)) = r else {
            panic!("a FindCoordinator answer")
        };
        if f.error != ErrorCode::CoordinatorNotAvailable || Instant::now() >= deadline {
            return f;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_groups_coordinator_leads_the_offsets_partition_its_id_hashes_to_created_on_first_use() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path());
    let mut c = broker.connect();
    let (_, r) = c.call(Request::Metadata(MetadataRequest { topics: None }));
    let Some(Response::Metadata(m)) = r else {
        panic!("metadata")
    };
    assert!(m.topics.is_empty(), "no offsets topic before any group");

    let f = coordinator(&mut c, "payments");
    assert_eq!(f.error, ErrorCode::None, "{f:?}");
    assert_eq!(f.coordinator, 1);
    assert_eq!(f.port, broker.addr.port());

    let (_, r) = c.call(Request::Metadata(MetadataRequest {
        topics: Some(vec![OFFSETS_TOPIC.into()]),
    }));
    let Some(Response::Metadata(m)) = r else {
        panic!("metadata")
    };
    let t = &m.topics[0];
    assert_eq!(t.error, ErrorCode::None);
    assert_eq!(t.partitions.len(), 16);
    // The partition the group hashes to is led by the coordinator named.
    let p = partition_for_key(b"payments", 16) as usize;
    assert_eq!(t.partitions[p].leader, f.coordinator);

    // Asked again, and for another group, the topic is not made twice.
    assert_eq!(coordinator(&mut c, "payments"), f);
    assert_eq!(coordinator(&mut c, "audit").error, ErrorCode::None);
    let (_, r) = c.call(Request::Metadata(MetadataRequest { topics: None }));
    let Some(Response::Metadata(m)) = r else {
        panic!("metadata")
    };
    assert_eq!(m.topics.len(), 1);
}

#[test]
fn an_empty_or_overlong_group_id_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path());
    let mut c = broker.connect();
    for group in [String::new(), "g".repeat(256)] {
        let f = coordinator(&mut c, &group);
        assert_eq!(f.error, ErrorCode::InvalidGroupId);
        assert_eq!(f.coordinator, NO_BROKER);
    }
    // Nothing was created for them.
    let (_, r) = c.call(Request::Metadata(MetadataRequest { topics: None }));
    let Some(Response::Metadata(m)) = r else {
        panic!("metadata")
    };
    assert!(m.topics.is_empty());
}

#[test]
fn clients_may_neither_create_topics_in_the_internal_namespace_nor_delete_them() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path());
    let mut c = broker.connect();
    for name in [OFFSETS_TOPIC, "__mine"] {
        let r = c.create_topic(name, 1, &[]);
        assert_eq!(r.error, ErrorCode::InvalidTopic, "{name}");
        assert!(r.message.contains("internal"), "{}", r.message);
    }
    // One underscore is an ordinary name.
    assert_eq!(c.create_topic("_mine", 1, &[]).error, ErrorCode::None);
    // Nor may they delete the offsets topic once it exists.
    assert_eq!(coordinator(&mut c, "g").error, ErrorCode::None);
    let (_, r) = c.call(Request::DeleteTopics(DeleteTopicsRequest {
        names: vec![OFFSETS_TOPIC.into()],
        timeout_ms: 10_000,
    }));
    let Some(Response::DeleteTopics(d)) = r else {
        panic!("a DeleteTopics answer")
    };
    assert_eq!(d.results[0].error, ErrorCode::InvalidTopic);
    assert!(d.results[0].message.contains("internal"));
}

#[test]
fn topic_list_shows_internal_topics_only_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path());
    let mut c = broker.connect();
    assert_eq!(c.create_topic("orders", 1, &[]).error, ErrorCode::None);
    assert_eq!(coordinator(&mut c, "g").error, ErrorCode::None);
    let list = |extra: &[&str]| {
        let o = Command::new(rill_cli())
            .args(["topic", "list"])
            .args(extra)
            .env("RILL_BOOTSTRAP", broker.addr.to_string())
            .output()
            .unwrap();
        assert!(o.status.success());
        String::from_utf8(o.stdout).unwrap()
    };
    assert_eq!(list(&[]), "orders\n");
    assert_eq!(list(&["--internal"]), format!("{OFFSETS_TOPIC}\norders\n"));
}

#[test]
fn every_broker_of_a_cluster_names_the_same_coordinator_the_leader_of_the_groups_partition() {
    let c = TestCluster::start(3);
    let group = "billing";
    let p = partition_for_key(group.as_bytes(), 16);
    // Asked of broker 2 first: it creates the offsets topic through the
    // controller, wherever that is.
    let mut first = Client::connect(c.addr(2));
    assert_eq!(coordinator(&mut first, group).error, ErrorCode::None);
    c.wait_for("the offsets topic to settle", 60, |c| {
        c.settled(OFFSETS_TOPIC, 16)
    });
    let leader = c.leader_of(OFFSETS_TOPIC, p).unwrap();
    // Leadership may still move (preferred leaders take theirs back):
    // every broker names the leader of the moment, and all agree on it.
    c.wait_for("every broker to name the partition's leader", 60, |c| {
        let Some(leader) = c.leader_of(OFFSETS_TOPIC, p) else {
            return false;
        };
        (1..=3).all(|b| {
            let f = coordinator(&mut Client::connect(c.addr(b)), group);
            f.error == ErrorCode::None
                && f.coordinator == leader as i32
                && f.port == c.addr(leader).port()
        })
    });
    assert!((1..=3).contains(&leader));
}
