//! A broker that lost its disk comes back safely: SIGKILLed, its data
//! directory emptied, restarted. Its peers remember its earlier
//! incarnation and tell it so; it rejoins, is sent every partition's data
//! again (its leaders stop believing it holds what it lost), votes again
//! only once caught up, and nothing acknowledged is lost.
#![allow(clippy::unwrap_used)]

mod common;

use common::cluster::TestCluster;
use common::{Client, try_read_from, values};

const TOPIC: &str = "rejoin";
const PARTITIONS: u32 = 3;

/// The identity file of broker `id`, as JSON.
fn identity(c: &TestCluster, id: usize) -> serde_json::Value {
    let text = std::fs::read_to_string(c.broker_dir(id).join("identity.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Whether broker `id` holds every partition of the topic as far as its
/// leader does (the same last index, the same high watermark).
fn holds_everything(c: &TestCluster, id: usize) -> bool {
    (0..PARTITIONS).all(|p| {
        let Some(leader) = c.leader_of(TOPIC, p) else {
            return false;
        };
        let find = |b: usize| {
            c.status(b).and_then(|s| {
                s.replicas
                    .into_iter()
                    .find(|r| r.topic == TOPIC && r.partition == p)
            })
        };
        match (find(leader), find(id)) {
            (Some(l), Some(r)) => {
                r.last_index == l.last_index && r.high_watermark == l.high_watermark
            }
            _ => false,
        }
    })
}

#[test]
fn a_broker_back_with_an_empty_data_directory_is_caught_up_before_it_votes_and_nothing_is_lost() {
    let mut c = TestCluster::start(3);
    c.create_topic(TOPIC, PARTITIONS);
    // 300 records per partition, each acknowledged by a majority.
    let mut acknowledged = Vec::new();
    for p in 0..PARTITIONS {
        let records = values(u64::from(p) * 1000..u64::from(p) * 1000 + 300);
        for chunk in records.chunks(100) {
            c.produce_acknowledged(TOPIC, p, chunk);
        }
        acknowledged.push(records);
    }
    c.wait_for("broker 3 to hold every partition", 30, |c| {
        holds_everything(c, 3)
    });
    let before = identity(&c, 3);
    assert_eq!(before["rejoining"], false);
    c.wait_for("the cluster to be named", 30, |c| {
        identity(c, 1)["cluster_id"].is_string()
    });
    let cluster_id = identity(&c, 1)["cluster_id"].clone();
    c.wait_for("every broker to record the cluster id", 30, |c| {
        (1..=3).all(|b| identity(c, b)["cluster_id"] == cluster_id)
    });

    // The disk goes: broker 3 comes back with nothing.
    c.kill(3);
    std::fs::remove_dir_all(c.broker_dir(3)).unwrap();
    std::fs::create_dir_all(c.broker_dir(3)).unwrap();
    c.restart(3);
    c.wait_for("broker 3 to learn it lost its data", 30, |c| {
        identity(c, 3)["rejoining"] == true
    });
    assert_ne!(identity(&c, 3)["incarnation"], before["incarnation"]);

    // Its leaders send it everything again, and only then does it vote.
    c.wait_for("broker 3 to hold every partition again", 60, |c| {
        holds_everything(c, 3)
    });
    c.wait_for("broker 3 to vote again", 30, |c| {
        identity(c, 3)["rejoining"] == false
    });
    assert_eq!(
        identity(&c, 3)["cluster_id"],
        cluster_id,
        "the new incarnation learnt the same cluster"
    );

    // Every acknowledged record is there, in order, on whichever broker
    // leads each partition.
    assert_every_record(&c, &acknowledged, "all three up");

    // Broker 3 now holds the data on its own disk: with broker 1 gone, it
    // and broker 2 still elect leaders and serve every record.
    c.kill(1);
    assert_every_record(&c, &acknowledged, "without broker 1");
}

/// Waits (at most 30 s per partition) until each partition's leader
/// serves exactly the acknowledged records, in order.
fn assert_every_record(c: &TestCluster, acknowledged: &[Vec<String>], when: &str) {
    for p in 0..PARTITIONS {
        let mut last = None;
        let served = |c: &TestCluster| {
            let leader = c.leader_of(TOPIC, p)?;
            let mut client = Client::connect(c.addr(leader));
            try_read_from(&mut client, TOPIC, p, 0)
                .ok()
                .map(|records| records.into_iter().map(|(_, v)| v).collect::<Vec<_>>())
        };
        c.wait_for("a leader serving the partition", 30, |c| {
            last = served(c);
            // A new leader may not know its high watermark yet; once it
            // serves everything, nothing may differ.
            last.as_ref()
                .is_some_and(|got| got.len() >= acknowledged[p as usize].len())
        });
        assert_eq!(
            last.as_ref(),
            Some(&acknowledged[p as usize]),
            "partition {p}, {when}"
        );
    }
}
