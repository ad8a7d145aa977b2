//! A data directory knows which cluster it belongs to: a broker learns its
//! cluster's id from the controller and writes it into `identity.json`,
//! keeps it across restarts, and refuses to run on a data directory of
//! another cluster, or on one another broker is using.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{BrokerProcess, run_to_exit};

/// The identity file of the data directory, as JSON.
fn identity(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("identity.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Waits (at most 30 s) for the data directory's identity to name its
/// cluster; returns the id.
fn learnt_cluster_id(dir: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(id) = identity(dir)["cluster_id"].as_str() {
            return id.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "the broker never learnt its cluster id"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_broker_keeps_its_cluster_id_across_restarts_and_refuses_another_clusters_data() {
    let data = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(data.path());
    let id = learnt_cluster_id(data.path());
    assert_eq!(id.len(), 36, "a canonical UUID: {id}");
    broker.terminate();

    let broker = BrokerProcess::start(data.path());
    let mut client = broker.connect();
    assert!(client.create_topic("after-restart", 1, &[]).error.is_ok());
    assert_eq!(learnt_cluster_id(data.path()), id, "named once, for good");
    broker.terminate();

    // The data directory now claims another cluster than its controller's
    // log names (a directory moved between clusters, say).
    let path = data.path().join("identity.json");
    let other = "00000000-0000-4000-8000-000000000001";
    let text = std::fs::read_to_string(&path).unwrap().replace(&id, other);
    std::fs::write(&path, text).unwrap();
    let (status, err) = run_to_exit(data.path(), &[]);
    assert_eq!(
        status.code(),
        Some(rill_broker::raft::cluster_id::OTHER_CLUSTER_EXIT_CODE),
        "{err}"
    );
    assert!(
        err.contains(&format!("belongs to cluster {other}")) && err.contains(&id),
        "the refusal names both clusters: {err}"
    );
    assert!(!err.contains("listening on"), "{err}");
}

#[test]
fn a_second_broker_on_a_data_directory_in_use_refuses_to_start_and_the_first_serves_on() {
    let dir = tempfile::tempdir().unwrap();
    let first = BrokerProcess::start(dir.path());
    let (status, stderr) = run_to_exit(dir.path(), &[]);
    assert!(!status.success());
    assert!(
        stderr.contains("locking the data directory") && stderr.contains("another broker"),
        "{stderr}"
    );
    let mut client = first.connect();
    let r = client.create_topic("still-served", 1, &[]);
    assert!(r.error.is_ok(), "{:?}", r.error);
    first.terminate();
}
