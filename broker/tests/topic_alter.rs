//! Topic settings changed on a live topic through the CLI against real
//! brokers: `rill topic alter` sets and deletes settings through the
//! controller, they take effect on the serving replicas at once (a
//! produce checked against a timestamp bound set live), `rill topic
//! describe` shows every setting with where it comes from, the change
//! survives a SIGKILL, and settings fixed at creation are refused in the
//! user's terms.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::process::Output;
use std::time::{Duration, Instant};

use common::cluster::TestCluster;
use common::{BrokerProcess, Client, batch, now_ms, run_rill, values};
use rill_client::protocol::ErrorCode;

fn rill(addr: SocketAddr, args: &[&str]) -> Output {
    run_rill(&addr.to_string(), args, "")
}

/// `topic`'s settings as `rill topic describe --format json` shows them:
/// key → (value, source).
fn settings(addr: SocketAddr, topic: &str) -> Vec<(String, String, String)> {
    let o = rill(addr, &["topic", "describe", topic, "--format", "json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let d: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    d["configs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["key"].as_str().unwrap().to_string(),
                c["value"].as_str().unwrap().to_string(),
                c["source"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn setting(all: &[(String, String, String)], key: &str) -> (String, String) {
    let (_, v, s) = all.iter().find(|(k, _, _)| k == key).unwrap();
    (v.clone(), s.clone())
}

/// A batch stamped at the epoch: far behind any clock.
fn ancient() -> bytes::Bytes {
    batch(&values(0..1), 1)
}

#[test]
fn settings_change_live_take_effect_at_once_and_survive_a_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path());
    let mut c = broker.connect();
    assert_eq!(c.create_topic("t", 1, &[]).error, ErrorCode::None);
    // Every setting shown, each a default.
    let before = settings(broker.addr, "t");
    assert!(before.len() >= 9, "{before:?}");
    assert!(before.iter().all(|(_, _, s)| s == "default"), "{before:?}");
    assert_eq!(setting(&before, "fsync"), ("true".into(), "default".into()));
    // No bound behind the clock yet: an ancient batch is taken.
    assert_eq!(c.produce("t", 0, -1, ancient()).error, ErrorCode::None);

    let o = rill(
        broker.addr,
        &[
            "topic",
            "alter",
            "t",
            "--config",
            "retention.ms=60000",
            "--config",
            "message.timestamp.before.max.ms=60000",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let now = settings(broker.addr, "t");
    assert_eq!(
        setting(&now, "retention.ms"),
        ("60000".into(), "set".into())
    );
    assert_eq!(
        setting(&now, "message.timestamp.before.max.ms"),
        ("60000".into(), "set".into())
    );
    // The serving replica checks against the new bound at once.
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.produce("t", 0, -1, ancient()).error != ErrorCode::InvalidTimestamp {
        assert!(Instant::now() < deadline, "the new bound never took effect");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        c.produce("t", 0, -1, batch(&values(0..1), now_ms())).error,
        ErrorCode::None
    );

    // Back to the default: ancient batches are taken again.
    let o = rill(
        broker.addr,
        &[
            "topic",
            "alter",
            "t",
            "--delete-config",
            "message.timestamp.before.max.ms",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.produce("t", 0, -1, ancient()).error != ErrorCode::None {
        assert!(Instant::now() < deadline, "the default never came back");
        std::thread::sleep(Duration::from_millis(50));
    }

    broker.kill();
    let broker = BrokerProcess::start(dir.path());
    let after = settings(broker.addr, "t");
    assert_eq!(
        setting(&after, "retention.ms"),
        ("60000".into(), "set".into())
    );
    assert_eq!(
        setting(&after, "message.timestamp.before.max.ms").1,
        "default"
    );
}

#[test]
fn settings_fixed_at_creation_bad_values_unknown_and_internal_topics_are_refused_in_the_user_s_terms()
 {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path());
    assert_eq!(
        broker.connect().create_topic("t", 1, &[]).error,
        ErrorCode::None
    );
    for (args, says) in [
        (vec!["--config", "fsync=false"], "fsync"),
        (
            vec!["--config", "max.message.bytes=2000000"],
            "max.message.bytes",
        ),
        (vec!["--config", "retention.ms=-7"], "retention.ms"),
        (
            vec!["--config", "segment.bytes=10"],
            "segment.bytes must be",
        ),
        (vec!["--config", "no-equals"], "KEY=VALUE"),
        (vec![], "nothing to change"),
    ] {
        let mut all = vec!["topic", "alter", "t"];
        all.extend(args.iter());
        let o = rill(broker.addr, &all);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    let o = rill(
        broker.addr,
        &["topic", "alter", "missing", "--config", "retention.ms=1"],
    );
    assert_eq!(o.status.code(), Some(1));
    let o = rill(
        broker.addr,
        &[
            "topic",
            "alter",
            "__consumer_offsets",
            "--config",
            "retention.ms=1",
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    // Nothing changed.
    assert!(
        settings(broker.addr, "t")
            .iter()
            .all(|(_, _, s)| s == "default")
    );
}

#[test]
fn a_change_made_through_any_broker_reaches_every_replica() {
    let cluster = TestCluster::start(3);
    cluster.create_topic("t", 1);
    cluster.wait_for("the topic to settle", 60, |c| c.settled("t", 1));
    // Through each broker in turn (only one leads the controller: the
    // others forward).
    for (b, ms) in [(1, "1000"), (2, "2000"), (3, "3000")] {
        let o = rill(
            cluster.addr(b),
            &[
                "topic",
                "alter",
                "t",
                "--config",
                &format!("message.timestamp.before.max.ms={ms}"),
            ],
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        cluster.wait_for("every broker to show the change", 30, |c| {
            (1..=3).all(|x| {
                setting(&settings(c.addr(x), "t"), "message.timestamp.before.max.ms").0 == ms
            })
        });
    }
    // The leader checks against it.
    let leader = cluster.leader_of("t", 0).unwrap();
    let mut c = Client::connect(cluster.addr(leader));
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.produce("t", 0, -1, ancient()).error != ErrorCode::InvalidTimestamp {
        assert!(
            Instant::now() < deadline,
            "the leader never took the new bound"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_topic_grows_and_a_running_producer_writes_to_its_new_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path());
    let mut c = broker.connect();
    assert_eq!(c.create_topic("t", 1, &[]).error, ErrorCode::None);
    let rt = common::runtime();
    let cluster = rill_client::Cluster::new(&broker.addr.to_string(), "grow-test").unwrap();
    // The producer's metadata ages quickly, so the test need not wait
    // out the default.
    cluster.set_metadata_max_age_ms(200);
    let producer = {
        let _in_runtime = rt.enter();
        rill_client::Producer::new(cluster, rill_client::ProducerConfig::default())
    };
    let send = |n: u64| {
        rt.block_on(async {
            let mut futures = Vec::new();
            for i in 0..n {
                let record = rill_client::ProducerRecord {
                    topic: "t".into(),
                    partition: None,
                    key: None,
                    value: Some(bytes::Bytes::from(format!("v{i}"))),
                    timestamp_ms: None,
                    headers: Vec::new(),
                };
                futures.push(producer.send(record).await.unwrap());
            }
            for f in futures {
                assert!(f.await.is_ok());
            }
        })
    };
    send(10);

    // Never fewer; then three.
    let o = rill(broker.addr, &["topic", "alter", "t", "--partitions", "1"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("never shrink"));
    let o = rill(broker.addr, &["topic", "alter", "t", "--partitions", "3"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = rill(broker.addr, &["topic", "describe", "t", "--format", "json"]);
    let d: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(d["partitions"].as_array().unwrap().len(), 3);

    // The same producer, never restarted, reaches the new partitions.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        send(50);
        let written: Vec<usize> = (0..3)
            .map(|p| common::read_all(&mut c, "t", p).len())
            .collect();
        if written[1] > 0 && written[2] > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new partitions got nothing: {written:?}"
        );
    }
    rt.block_on(producer.close());
    // Added partitions are kept across a restart.
    broker.kill();
    let broker = BrokerProcess::start(dir.path());
    let mut c = broker.connect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while common::read_all(&mut c, "t", 2).is_empty() {
        assert!(Instant::now() < deadline, "partition 2 lost its records");
        std::thread::sleep(Duration::from_millis(100));
    }
}
