//! Idle partitions hibernate on real brokers, and a failure still moves
//! their leaderships: a settled cluster's partition groups stop ticking
//! (`rill_raft_groups_awake` falls to the controller's group alone on
//! every broker), a write wakes its partition, and a SIGKILLed or
//! SIGSTOPped leader of hibernating partitions is replaced, every
//! partition taking acknowledged writes again and keeping those before.
#![allow(clippy::unwrap_used)]

mod common;

use common::cluster::TestCluster;
use common::http_get;
use common::load::read_all;
use common::prometheus::{parse_prometheus, sample};
use common::runtime;

const TOPIC: &str = "sleepy";
const PARTITIONS: u32 = 6;

/// Broker `id`'s `rill_raft_groups_awake`, if it answers.
fn groups_awake(c: &TestCluster, id: usize) -> Option<f64> {
    let (status, body) = http_get(c.http_addr(id)?, "/metrics");
    (status == 200).then_some(())?;
    sample(&parse_prometheus(&body), &["rill_raft_groups_awake"])
}

/// Every live broker's partition groups asleep: only the controller's
/// group ticks.
fn all_asleep(c: &TestCluster) -> bool {
    (1..=c.size())
        .filter(|id| c.is_up(*id))
        .all(|id| groups_awake(c, id).is_some_and(|n| n <= 1.0))
}

/// A cluster whose topic holds `written` records per partition and has
/// gone to sleep.
fn sleeping_cluster(written: &mut Vec<(u32, String)>) -> TestCluster {
    let c = TestCluster::start_with(3, &["--hibernate-after-ms", "500"]);
    c.create_topic(TOPIC, PARTITIONS);
    c.wait_for("every partition led", 60, |c| c.settled(TOPIC, PARTITIONS));
    for p in 0..PARTITIONS {
        let records = vec![format!("before-{p}")];
        c.produce_acknowledged(TOPIC, p, &records);
        written.push((p, records[0].clone()));
    }
    c.wait_for("every partition group asleep", 60, all_asleep);
    c
}

/// Every partition takes an acknowledged write, and every write so far is
/// read back.
fn every_partition_serves(c: &TestCluster, written: &mut Vec<(u32, String)>, tag: &str) {
    for p in 0..PARTITIONS {
        let records = vec![format!("{tag}-{p}")];
        c.produce_acknowledged(TOPIC, p, &records);
        written.push((p, records[0].clone()));
    }
    let stored = runtime().block_on(read_all(&c.bootstrap(), TOPIC));
    for (p, value) in written.iter() {
        assert!(
            stored.iter().any(|((sp, _), v)| sp == p && v == value),
            "{value} in partition {p}"
        );
    }
}

#[test]
fn idle_partitions_sleep_and_a_write_wakes_one() {
    let mut written = Vec::new();
    let c = sleeping_cluster(&mut written);
    let leader = c.leader_of(TOPIC, 0).unwrap();
    c.produce_acknowledged(TOPIC, 0, &["woken".to_string()]);
    assert_eq!(c.leader_of(TOPIC, 0), Some(leader), "no election");
    c.wait_for("asleep again", 60, all_asleep);
}

/// The leader of partition 0, its partitions asleep, fails by `fail`:
/// every partition is led elsewhere and writable; `recover` brings it
/// back and the cluster settles, every partition writable again.
fn leader_of_sleeping_partitions_replaced(
    fail: impl FnOnce(&mut TestCluster, usize),
    recover: impl FnOnce(&mut TestCluster, usize),
) {
    let mut written = Vec::new();
    let mut c = sleeping_cluster(&mut written);
    let victim = c.leader_of(TOPIC, 0).unwrap();
    fail(&mut c, victim);
    c.wait_for("every partition led without the failed broker", 60, |c| {
        (0..PARTITIONS).all(|p| c.leader_of(TOPIC, p).is_some_and(|l| l != victim))
    });
    every_partition_serves(&c, &mut written, "after-failure");
    recover(&mut c, victim);
    c.wait_for("the cluster settled again", 60, |c| {
        c.settled(TOPIC, PARTITIONS)
    });
    every_partition_serves(&c, &mut written, "after-recovery");
}

#[test]
fn a_sigkilled_leader_of_sleeping_partitions_is_replaced() {
    leader_of_sleeping_partitions_replaced(|c, id| c.kill(id), |c, id| c.restart(id));
}

#[test]
fn a_sigstopped_leader_of_sleeping_partitions_is_replaced() {
    // Hung, not dead: its connections stay open and nothing answers.
    leader_of_sleeping_partitions_replaced(|c, id| c.pause(id), |c, id| c.resume(id));
}
