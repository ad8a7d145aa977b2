//! Moving partitions' replicas between brokers of a running cluster
//! (`rill topic reassign`), under an idempotent `acks=all` producer: every
//! partition's preferred leader is replaced by the broker that held no
//! replica of it, through a learner that catches up and a joint-consensus
//! swap of the voters. Nothing acknowledged is lost or stored twice, the
//! metadata ends with the new replicas, the old replicas' files are
//! removed and the new ones hold the whole log, a broker SIGKILLed in the
//! middle of the moves included; a move to a broker that is down waits for
//! it, and requests that cannot be carried out are refused with a reason.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::cluster::TestCluster;
use common::load::{AckedProducer, assert_acknowledged_once_in_order, read_all};
use common::{run_rill, run_rill_ok, runtime};
use rill_client::{Admin, Cluster};

const TOPIC: &str = "moved";
const PARTITIONS: u32 = 6;
const BROKERS: usize = 4;

/// Each partition's replicas, as the metadata says.
fn replicas(c: &TestCluster, topic: &str) -> Option<Vec<Vec<u32>>> {
    let m = c.metadata_from_any()?;
    let t = m.topics.iter().find(|t| t.name == topic)?;
    let mut parts: Vec<_> = t.partitions.iter().collect();
    parts.sort_by_key(|p| p.partition);
    Some(parts.iter().map(|p| p.replicas.clone()).collect())
}

/// The directory name of a topic's partition replica (`<topic id>-<p>`).
fn replica_dir_name(c: &TestCluster, topic: &str, p: u32) -> String {
    let m = c.metadata_from_any().unwrap();
    let t = m.topics.iter().find(|t| t.name == topic).unwrap();
    format!("{}-{p}", uuid::Uuid::from_bytes(t.topic_id))
}

fn holds(data_dir: &Path, name: &str) -> bool {
    data_dir.join(name).exists()
}

/// A healthy cluster of [`BROKERS`] holding [`TOPIC`] with `partitions`
/// partitions of three replicas, a runtime and an admin client.
fn healthy_cluster_with_topic(partitions: u32) -> (TestCluster, tokio::runtime::Runtime, Admin) {
    let c = TestCluster::start(BROKERS);
    let rt = runtime();
    let admin = Admin::new(Cluster::new(&c.bootstrap(), "test").unwrap());
    rt.block_on(admin.create_topic(TOPIC, partitions, 3, vec![]))
        .unwrap();
    c.wait_for("a healthy cluster", 60, TestCluster::healthy);
    (c, rt, admin)
}

#[test]
fn moving_every_partition_under_an_acks_all_producer_loses_nothing_acknowledged() {
    let (mut c, rt, admin) = healthy_cluster_with_topic(PARTITIONS);
    let bootstrap = c.bootstrap();
    let before = replicas(&c, TOPIC).unwrap();
    // Each partition's preferred leader gives way to the broker that has
    // no replica of it, which becomes the preferred leader.
    let targets: Vec<Vec<u32>> = before
        .iter()
        .map(|r| {
            let outside = (1..=BROKERS as u32).find(|b| !r.contains(b)).unwrap();
            std::iter::once(outside)
                .chain(r[1..].iter().copied())
                .collect()
        })
        .collect();

    let producer = AckedProducer::start(&rt, &bootstrap, TOPIC);
    c.wait_for("records acknowledged before the moves", 60, |_| {
        producer.acked_count() > 500
    });

    // Partition 0 through the CLI, which waits for its end.
    let target0 = targets[0]
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",");
    run_rill_ok(
        &bootstrap,
        &[
            "topic",
            "reassign",
            TOPIC,
            "--partition",
            "0",
            "--replicas",
            &target0,
            "--timeout-ms",
            "90000",
        ],
    );
    // Every broker's metadata says so once it has applied the move's end.
    c.wait_for("partition 0 on its new replicas", 10, |c| {
        replicas(c, TOPIC).is_some_and(|r| r[0] == targets[0])
    });

    // The rest at once; a broker with moves under way is SIGKILLed and
    // started again in the middle of them.
    for (p, target) in targets.iter().enumerate().skip(1) {
        rt.block_on(admin.reassign_partition(TOPIC, p as u32, target))
            .unwrap();
    }
    let victim = targets[1][0] as usize;
    c.kill(victim);
    c.restart(victim);
    c.wait_for("every partition on its new replicas", 180, |c| {
        replicas(c, TOPIC).is_some_and(|r| r == targets)
    });
    let acked_during = producer.acked_count();
    c.wait_for("records acknowledged after the moves", 60, |_| {
        producer.acked_count() > acked_during + 500
    });
    let acked = producer.finish(&rt);

    // The old preferred leaders' files went; the new replicas hold
    // everything, read from wherever the consumer is sent.
    for (p, old) in before.iter().enumerate() {
        let name = replica_dir_name(&c, TOPIC, p as u32);
        let gone = old[0] as usize;
        let added = targets[p][0] as usize;
        c.wait_for("the old replica's files removed", 60, |c| {
            !holds(&c.broker_dir(gone), &name)
        });
        assert!(
            holds(&c.broker_dir(added), &name),
            "{name} on broker {added}"
        );
    }
    c.wait_for(
        "a healthy cluster after the moves",
        60,
        TestCluster::healthy,
    );
    let stored = rt.block_on(read_all(&bootstrap, TOPIC));
    assert_acknowledged_once_in_order(&acked, &stored, PARTITIONS);

    // Every broker SIGKILLed and started again: the partitions come back
    // on their new replicas, every acknowledged record with them.
    for id in 1..=BROKERS {
        c.kill(id);
    }
    for id in 1..=BROKERS {
        c.restart(id);
    }
    c.wait_for(
        "a healthy cluster after SIGKILL of every broker",
        60,
        TestCluster::healthy,
    );
    let stored = rt.block_on(read_all(&bootstrap, TOPIC));
    assert_acknowledged_once_in_order(&acked, &stored, PARTITIONS);
    c.wait_for("the new replicas kept across the restarts", 10, |c| {
        replicas(c, TOPIC).is_some_and(|r| r == targets)
    });
}

#[test]
fn a_move_to_a_broker_that_is_down_waits_for_it_and_bad_moves_are_refused() {
    let (mut c, rt, admin) = healthy_cluster_with_topic(1);
    let bootstrap = c.bootstrap();
    let before = replicas(&c, TOPIC).unwrap()[0].clone();
    let outside = (1..=BROKERS as u32).find(|b| !before.contains(b)).unwrap();
    let records: Vec<String> = (0..50).map(|i| format!("before-{i}")).collect();
    c.produce_acknowledged(TOPIC, 0, &records);

    let refused = |args: &[&str], says: &str| {
        let out = run_rill(&bootstrap, args, "");
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    };
    let base = ["topic", "reassign", TOPIC, "--partition"];
    refused(
        &[&base[..], &["0", "--replicas", "1,2,9"]].concat(),
        "broker 9 is not a broker of this cluster",
    );
    refused(
        &[&base[..], &["0", "--replicas", "1,1,2"]].concat(),
        "name a broker twice",
    );
    refused(
        &[&base[..], &["7", "--replicas", "1,2,3"]].concat(),
        "no partition 7",
    );
    refused(
        &[
            "topic",
            "reassign",
            "nothing-here",
            "--partition",
            "0",
            "--replicas",
            "1",
        ],
        "no topic",
    );

    // The new replica's broker is down: the move is recorded and waits.
    c.kill(outside as usize);
    let target: Vec<u32> = std::iter::once(outside)
        .chain(before[1..].iter().copied())
        .collect();
    rt.block_on(admin.reassign_partition(TOPIC, 0, &target))
        .unwrap();
    // The same move again is accepted; another is refused while it runs.
    rt.block_on(admin.reassign_partition(TOPIC, 0, &target))
        .unwrap();
    let other: Vec<u32> = before.iter().rev().copied().collect();
    let e = rt
        .block_on(admin.reassign_partition(TOPIC, 0, &other))
        .unwrap_err();
    assert!(e.to_string().contains("is moving to"), "{e}");
    // The partition keeps serving meanwhile.
    let more: Vec<String> = (0..50).map(|i| format!("during-{i}")).collect();
    c.produce_acknowledged(TOPIC, 0, &more);
    assert_eq!(replicas(&c, TOPIC).unwrap()[0], before);

    c.restart(outside as usize);
    c.wait_for("the move to end once its broker is back", 120, |c| {
        replicas(c, TOPIC).is_some_and(|r| r[0] == target)
    });
    let stored = rt.block_on(read_all(&bootstrap, TOPIC));
    let values: Vec<&String> = stored.values().collect();
    let expected: Vec<&String> = records.iter().chain(more.iter()).collect();
    assert_eq!(values, expected);
}

/// Replicas per broker over every topic's partitions.
fn replica_counts(c: &TestCluster) -> std::collections::BTreeMap<u32, usize> {
    let m = c.metadata_from_any().unwrap();
    let mut counts = std::collections::BTreeMap::new();
    for t in &m.topics {
        for p in &t.partitions {
            for b in &p.replicas {
                *counts.entry(*b).or_insert(0) += 1;
            }
        }
    }
    counts
}

#[test]
fn a_broker_removed_and_added_back_under_an_acks_all_producer_loses_nothing() {
    let (mut c, rt, admin) = healthy_cluster_with_topic(PARTITIONS);
    let bootstrap = c.bootstrap();
    let producer = AckedProducer::start(&rt, &bootstrap, TOPIC);
    c.wait_for("records acknowledged", 60, |_| producer.acked_count() > 500);

    // Removed: every replica leaves broker 4, which leaves the metadata
    // and may then stop without the cluster missing it.
    run_rill_ok(&bootstrap, &["cluster", "remove-broker", "4"]);
    // Every broker's metadata says so once it has applied the moves.
    c.wait_for(
        "no replica on broker 4, and broker 4 out of the metadata",
        10,
        |c| {
            !replica_counts(c).contains_key(&4)
                && c.metadata_from_any()
                    .is_some_and(|m| m.brokers.iter().all(|b| b.broker_id != 4))
        },
    );
    c.kill(4);
    c.wait_for(
        "a healthy cluster without broker 4",
        60,
        TestCluster::healthy,
    );
    // No new replica goes to it.
    rt.block_on(admin.create_topic("after-removal", 3, 3, vec![]))
        .unwrap();
    assert_eq!(replica_counts(&c).get(&4), None);
    let refused = run_rill(
        &bootstrap,
        &[
            "topic",
            "reassign",
            TOPIC,
            "--partition",
            "0",
            "--replicas",
            "4,1,2",
        ],
        "",
    );
    assert!(String::from_utf8_lossy(&refused.stderr).contains("removed from hosting"));

    // Added back: replicas spread onto it again, evenly.
    c.restart(4);
    run_rill_ok(&bootstrap, &["cluster", "add-broker", "4"]);
    c.wait_for("replicas spread evenly over the four brokers", 10, |c| {
        let counts = replica_counts(c);
        let (min, max) = (
            counts.values().min().copied().unwrap_or(0),
            counts.values().max().copied().unwrap_or(0),
        );
        counts.len() == BROKERS && max - min <= 1
    });
    // Balanced already: nothing more to move.
    let out = run_rill(&bootstrap, &["cluster", "balance"], "");
    assert!(String::from_utf8_lossy(&out.stderr).contains("0 partition(s) moved"));

    let acked_before = producer.acked_count();
    c.wait_for("records acknowledged after the changes", 60, |_| {
        producer.acked_count() > acked_before + 500
    });
    let acked = producer.finish(&rt);
    c.wait_for(
        "a healthy cluster after the changes",
        60,
        TestCluster::healthy,
    );
    let stored = rt.block_on(read_all(&bootstrap, TOPIC));
    assert_acknowledged_once_in_order(&acked, &stored, PARTITIONS);
}

#[test]
fn removing_the_controllers_leader_hands_the_controller_over_and_the_cluster_carries_on() {
    let (mut c, rt, admin) = healthy_cluster_with_topic(3);
    let controller = c.metadata_from_any().unwrap().controller_id;
    assert!(controller > 0);
    run_rill_ok(
        &c.bootstrap(),
        &["cluster", "remove-broker", &controller.to_string()],
    );
    // Another broker leads the controller, the removed one is out of the
    // metadata of every other broker (a broker always lists itself, so the
    // removed one is not asked), and once it is stopped the cluster is
    // healthy.
    c.wait_for(
        "the controller led elsewhere, the broker out of the metadata",
        30,
        |c| {
            (1..=BROKERS).filter(|&i| i as i32 != controller).all(|i| {
                c.metadata_from(i).is_some_and(|m| {
                    m.controller_id > 0
                        && m.controller_id != controller
                        && m.brokers.iter().all(|b| b.broker_id as i32 != controller)
                })
            })
        },
    );
    c.kill(controller as usize);
    c.wait_for(
        "a healthy cluster without the old controller",
        60,
        TestCluster::healthy,
    );
    // Metadata still changes: a topic is created and written.
    rt.block_on(admin.create_topic("after", 2, 3, vec![]))
        .unwrap();
    c.wait_for("the new topic led", 30, |c| c.settled("after", 2));
    c.produce_acknowledged("after", 0, &["one".to_string()]);
}
