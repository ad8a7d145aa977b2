//! A broker new to a running cluster joins it (`rill-broker --join`) while
//! an idempotent `acks=all` producer writes: the cluster records it, every
//! broker links to it, the controller's voters take it in (a learner
//! first), and `rill cluster balance` moves replicas onto it. Nothing
//! acknowledged is lost or stored twice, though a first broker was down
//! while it joined (it has no address for the new broker: the new one
//! dials it, and it takes the controller's log from whoever leads), and
//! through SIGKILLs of the new broker (which restarts from what it kept,
//! without asking anyone) and of a first broker. Joins that cannot be are
//! refused with the reason.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use common::cluster::TestCluster;
use common::load::{AckedProducer, assert_acknowledged_once_in_order, read_all};
use common::{run_rill, run_rill_ok, runtime};
use rill_client::protocol::ErrorCode;
use rill_client::{Admin, ClientError, Cluster};

const TOPIC: &str = "grown";
const PARTITIONS: u32 = 6;

/// How many partition replicas each broker holds, as the metadata says.
fn replica_counts(c: &TestCluster, topic: &str) -> BTreeMap<u32, usize> {
    let mut counts = BTreeMap::new();
    if let Some(m) = c.metadata_from_any()
        && let Some(t) = m.topics.iter().find(|t| t.name == topic)
    {
        for b in t.partitions.iter().flat_map(|p| p.replicas.iter()) {
            *counts.entry(*b).or_default() += 1;
        }
    }
    counts
}

/// Whether the controller's leader counts broker `id` among its voters,
/// with all of its log.
fn controller_voter(c: &TestCluster, id: u32) -> bool {
    (1..=c.size()).any(|i| {
        c.status(i).is_some_and(|s| {
            s.replicas.iter().any(|r| {
                r.topic.is_empty()
                    && r.leader == i as i32
                    && r.replicas.contains(&id)
                    && r.matched
                        .iter()
                        .any(|(b, m)| *b == id && *m == r.last_index)
            })
        })
    })
}

#[test]
fn a_new_broker_joins_under_an_acks_all_producer_and_takes_replicas_once_balanced() {
    let mut c = TestCluster::start(3);
    let rt = runtime();
    let bootstrap = c.bootstrap();
    let admin = Admin::new(Cluster::new(&bootstrap, "test").unwrap());
    rt.block_on(admin.create_topic(TOPIC, PARTITIONS, 3, vec![]))
        .unwrap();
    c.wait_for("a healthy cluster", 60, TestCluster::healthy);
    let producer = AckedProducer::start(&rt, &bootstrap, TOPIC);
    c.wait_for("records acknowledged before the join", 60, |_| {
        producer.acked_count() > 300
    });

    // Broker 1 misses the join.
    c.kill(1);
    let new = c.join_new_broker();
    assert_eq!(new, 4);
    c.wait_for("the new broker a voter of the controller", 60, |c| {
        controller_voter(c, 4)
    });
    c.restart(1);
    c.wait_for("the new broker in every first broker's metadata", 60, |c| {
        (1..=3).all(|i| {
            c.metadata_from(i)
                .is_some_and(|m| m.brokers.iter().any(|b| b.broker_id == 4))
        })
    });
    // Joining moves nothing by itself.
    assert!(!replica_counts(&c, TOPIC).contains_key(&4));

    let out = run_rill_ok(&c.bootstrap(), &["cluster", "balance"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("partition(s) moved"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    c.wait_for("replicas spread evenly onto the new broker", 60, |c| {
        let counts = replica_counts(c, TOPIC);
        let (min, max) = (
            counts.values().min().copied().unwrap_or(0),
            counts.values().max().copied().unwrap_or(0),
        );
        counts.len() == 4 && max - min <= 1
    });

    // The new broker restarts from what it kept; a first broker, whose
    // --peers does not name it, is dialled by it again.
    c.kill(4);
    c.restart(4);
    c.kill(1);
    c.restart(1);
    let acked_before = producer.acked_count();
    c.wait_for("records acknowledged after the restarts", 60, |_| {
        producer.acked_count() > acked_before + 300
    });
    let acked = producer.finish(&rt);
    c.wait_for("a healthy cluster of four", 60, TestCluster::healthy);
    let stored = rt.block_on(read_all(&bootstrap, TOPIC));
    assert_acknowledged_once_in_order(&acked, &stored, PARTITIONS);

    // A topic on all four brokers is created, led and written.
    rt.block_on(admin.create_topic("wide", 2, 4, vec![]))
        .unwrap();
    c.wait_for("the four-replica topic settled", 60, |c| {
        c.settled("wide", 2)
    });
    c.produce_acknowledged("wide", 0, &["on four brokers".to_string()]);
}

#[test]
fn joins_that_cannot_be_are_refused_with_the_reason() {
    let c = TestCluster::start(3);
    let rt = runtime();
    let admin = Admin::new(Cluster::new(&c.bootstrap(), "test").unwrap());
    let refused = |id: u32, addr: &str| match rt.block_on(admin.join_cluster(id, addr)) {
        Err(ClientError::Broker { code, message }) => (code, message),
        other => panic!("join of {id} at {addr:?} not refused: {other:?}"),
    };
    let (code, message) = refused(2, "127.0.0.1:7002");
    assert_eq!(code, ErrorCode::InvalidRequest);
    assert!(message.contains("needs an id of its own"), "{message}");
    for bad in ["0.0.0.0:7009", "127.0.0.1:0", "no-port", ""] {
        let (code, message) = refused(9, bad);
        assert_eq!(code, ErrorCode::InvalidRequest, "{bad:?}");
        assert!(message.contains("peer address"), "{bad:?}: {message}");
    }
    let (code, message) = refused(0, "127.0.0.1:7009");
    assert_eq!(code, ErrorCode::InvalidRequest);
    assert!(message.contains("broker id"), "{message}");
    // A new broker added by an operator needs its address.
    let out = run_rill(&c.bootstrap(), &["cluster", "add-broker", "9"], "");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("give its peer address"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Nothing was recorded: the cluster still has three brokers.
    let m = c.metadata_from_any().unwrap();
    assert_eq!(m.brokers.len(), 3);
}
