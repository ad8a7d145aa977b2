//! A rolling restart of a three-broker cluster under load, as an operator
//! runs it (`scripts/cluster.sh rolling-restart`): each broker in turn is
//! stopped with SIGTERM and started again, the next only once `rill
//! cluster health` passes, while an idempotent `acks=all` producer and a
//! consumer keep working. Nothing acknowledged is lost, nothing is stored
//! twice or out of send order, the consumer reads every offset once, in
//! order, and `/metrics` scraped throughout parses and shows the records
//! going in.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Instant;

use common::cluster::TestCluster;
use common::load::{AckedProducer, LiveReader, assert_acknowledged_once_in_order, read_all};
use common::prometheus::{parse_prometheus, sum};
use common::{http_get, runtime};
use rill_client::{Admin, Cluster};

const TOPIC: &str = "rolled";
const PARTITIONS: u32 = 6;

/// Records in, summed over every partition broker `id` leads or follows,
/// as its `/metrics` says (each line's syntax checked).
fn records_in(c: &TestCluster, id: usize) -> f64 {
    let (status, body) = http_get(c.http_addr(id).unwrap(), "/metrics");
    assert_eq!(status, 200);
    sum(
        &parse_prometheus(&body),
        &[
            "rill_partition_records_in_total{",
            &format!("topic=\"{TOPIC}\""),
        ],
    )
}

#[test]
fn a_rolling_restart_under_load_loses_nothing_acknowledged() {
    let mut c = TestCluster::start(3);
    let rt = runtime();
    let bootstrap = c.bootstrap();
    rt.block_on(async {
        let admin = Admin::new(Cluster::new(&bootstrap, "test").unwrap());
        admin
            .create_topic(TOPIC, PARTITIONS, 3, vec![])
            .await
            .unwrap();
    });
    c.wait_for("a healthy cluster", 60, TestCluster::healthy);

    // The consumer: reads everything from the start, as it comes.
    let reader = LiveReader::start(&rt, &bootstrap, TOPIC);
    let producer = AckedProducer::start(&rt, &bootstrap, TOPIC);
    c.wait_for("the producer to get going", 60, |_| {
        producer.acked_count() > 500
    });

    for id in 1..=3 {
        let survivor = id % 3 + 1;
        let (acked_before, metered_before) = (producer.acked_count(), records_in(&c, survivor));
        let rolled = Instant::now();
        c.terminate(id);
        c.restart(id);
        c.wait_for(
            "the cluster healthy again after the restart",
            120,
            TestCluster::healthy,
        );
        eprintln!(
            "broker {id} restarted; cluster healthy after {} ms",
            rolled.elapsed().as_millis()
        );
        c.wait_for(
            "the producer to make progress across the restart",
            60,
            |_| producer.acked_count() > acked_before,
        );
        // A broker that stayed up counts the records going in all along.
        c.wait_for("the survivor's records-in counter to move", 30, |c| {
            records_in(c, survivor) > metered_before
        });
    }

    let acked = producer.finish(&rt);
    assert!(acked.len() > 1_000, "only {} acknowledged", acked.len());
    c.wait_for("the cluster to settle", 60, |c| {
        c.settled(TOPIC, PARTITIONS)
    });
    let stored = rt.block_on(read_all(&bootstrap, TOPIC));
    assert_acknowledged_once_in_order(&acked, &stored, PARTITIONS);

    // The live consumer caught up with everything stored, having read each
    // offset once, in order, across every restart.
    c.wait_for("the consumer to catch up", 60, |_| {
        (0..PARTITIONS).all(|p| reader.count_of(p) >= stored.range((p, 0)..(p + 1, 0)).count())
    });
    let read = reader.finish(&rt);
    for p in 0..PARTITIONS {
        let offsets: Vec<u64> = read
            .iter()
            .filter(|(rp, _, _)| *rp == p)
            .map(|(_, o, _)| *o)
            .collect();
        let stored_offsets: Vec<u64> = stored
            .range((p, 0)..(p + 1, 0))
            .map(|((_, o), _)| *o)
            .collect();
        assert_eq!(
            offsets[..stored_offsets.len()],
            stored_offsets[..],
            "partition {p}: the consumer read every stored offset once, in order"
        );
    }
    eprintln!("{} acknowledged records kept through the roll", acked.len());
}
