//! Producer ids for idempotent producers, from real brokers: every id is
//! given once across a cluster's brokers, past the end of a broker's block
//! of ids, and after a SIGKILL and restart.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::BrokerProcess;
use common::cluster::TestCluster;
use rill_client::{Cluster, init_producer_id};

fn ids(addr: &str, n: usize) -> Vec<i64> {
    let rt = common::runtime();
    rt.block_on(async {
        let cluster = Cluster::new(addr, "producer-ids-test").unwrap();
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let id = init_producer_id(&cluster, Duration::from_secs(30))
                .await
                .unwrap();
            assert_eq!(id.producer_epoch, 0);
            out.push(id.producer_id);
        }
        out
    })
}

#[test]
fn ids_are_never_given_twice_past_a_block_and_across_a_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path());
    let first = ids(&broker.addr.to_string(), 1_500);
    let seen: BTreeSet<i64> = first.iter().copied().collect();
    assert_eq!(seen.len(), first.len(), "an id was given twice");
    assert!(first.iter().all(|id| *id >= 0));
    broker.kill();
    let broker = BrokerProcess::start(dir.path());
    for id in ids(&broker.addr.to_string(), 10) {
        assert!(!seen.contains(&id), "{id} was given before the restart");
    }
}

#[test]
fn every_broker_of_a_cluster_gives_ids_no_other_gives() {
    let cluster = TestCluster::start(3);
    let mut all = BTreeSet::new();
    let mut count = 0;
    for b in 1..=3 {
        for id in ids(&cluster.addr(b).to_string(), 300) {
            all.insert(id);
            count += 1;
        }
    }
    assert_eq!(all.len(), count, "an id was given twice");
}
