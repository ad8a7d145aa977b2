//! The `rill` command-line tool against a real broker: the interface
//! scripts rely on (flags, output formats, exit codes).
#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Output, Stdio};

use common::{BrokerProcess, rill_cli, run_rill};

fn rill(broker: &BrokerProcess, args: &[&str], stdin: &str) -> Output {
    run_rill(&broker.addr.to_string(), args, stdin)
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}
fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

/// A broker with a topic `events` of two partitions, created with the CLI.
fn broker_with_events_topic(dir: &std::path::Path) -> BrokerProcess {
    let broker = BrokerProcess::start(dir);
    let o = rill(
        &broker,
        &["topic", "create", "events", "--partitions", "2"],
        "",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    broker
}

#[test]
fn topics_produce_and_consume_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker_with_events_topic(dir.path());
    assert_eq!(stdout(&rill(&broker, &["topic", "list"], "")), "events\n");

    let input: String = (0..500).map(|i| format!("k{}:line {i}\n", i % 7)).collect();
    let o = rill(
        &broker,
        &["produce", "events", "--key-separator", ":"],
        &input,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("500 records"),
        "summary: {}",
        stderr(&o)
    );

    let o = rill(
        &broker,
        &["topic", "describe", "events", "--format", "json"],
        "",
    );
    let d: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(d["topic"], "events");
    let hw: u64 = d["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["high_watermark"].as_u64().unwrap())
        .sum();
    assert_eq!(hw, 500);
    assert_eq!(d["partitions"][0]["leader"], 1);
    assert_eq!(d["partitions"][0]["replicas"], serde_json::json!([1]));

    let o = rill(
        &broker,
        &[
            "consume",
            "events",
            "--format",
            "json",
            "--timeout-ms",
            "1000",
        ],
        "",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 500);
    for l in &lines {
        let value = l["value"].as_str().unwrap();
        let i: u64 = value.strip_prefix("line ").unwrap().parse().unwrap();
        assert_eq!(l["key"], format!("k{}", i % 7));
        assert_eq!(l["topic"], "events");
        assert!(l["timestamp"].as_i64().unwrap() > 1_600_000_000_000);
    }

    let o = rill(
        &broker,
        &[
            "consume",
            "events",
            "--partition",
            "0",
            "--max-messages",
            "3",
        ],
        "",
    );
    assert!(o.status.success());
    assert_eq!(stdout(&o).lines().count(), 3);

    // Without a key, `--key` applies one to every line; a value-only line keeps its text.
    let o = rill(
        &broker,
        &["produce", "events", "--key", "same", "--acks", "1"],
        "a\nb\n",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = rill(&broker, &["topic", "delete", "events"], "");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&rill(&broker, &["topic", "list"], "")), "");
}

#[test]
fn failures_are_one_clear_line_and_a_nonzero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path());
    let missing = rill(&broker, &["consume", "missing", "--timeout-ms", "100"], "");
    assert_eq!(missing.status.code(), Some(1));
    assert!(stderr(&missing).contains("missing"), "{}", stderr(&missing));
    let produce = rill(
        &broker,
        &["produce", "missing", "--delivery-timeout-ms", "1000"],
        "x\ny\nz\n",
    );
    assert_eq!(produce.status.code(), Some(1));
    assert!(
        stderr(&produce).contains("topic \"missing\" does not exist"),
        "{}",
        stderr(&produce)
    );
    let invalid = rill(&broker, &["topic", "create", "../x"], "");
    assert!(!invalid.status.success());
    assert!(
        stderr(&invalid).contains("InvalidTopic"),
        "{}",
        stderr(&invalid)
    );
    for o in [&missing, &produce, &invalid] {
        assert!(
            !stderr(o).contains("panicked") && !stderr(o).contains("backtrace"),
            "{}",
            stderr(o)
        );
    }
    for o in [&missing, &produce, &invalid] {
        assert_eq!(stderr(o).lines().count(), 1, "{}", stderr(o));
    }
}

#[test]
fn cluster_status_reports_brokers_controller_and_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker_with_events_topic(dir.path());
    for (partition, input) in [("0", "a\nb\nc\n"), ("1", "d\ne\n")] {
        let o = rill(
            &broker,
            &["produce", "events", "--partition", partition],
            input,
        );
        assert!(o.status.success(), "{}", stderr(&o));
    }

    let o = rill(
        &broker,
        &["cluster", "status", "--format", "json", "--raft"],
        "",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).lines().count(), 1, "{}", stdout(&o));
    let s: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(s["controller"], 1);
    assert_eq!(
        s["brokers"],
        serde_json::json!([{"id": 1, "address": broker.addr.to_string(), "up": true}])
    );
    // The controller's own group apart, then the topic's partitions in order.
    assert_eq!(s["controller_group"]["leader"], 1);
    assert_eq!(s["controller_group"]["group"], 0);
    let partitions = s["partitions"].as_array().unwrap();
    let names: Vec<(&str, u64)> = partitions
        .iter()
        .map(|p| {
            (
                p["topic"].as_str().unwrap(),
                p["partition"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(names, [("events", 0), ("events", 1)]);
    for (p, records) in partitions.iter().zip([3, 2]) {
        assert_eq!(p["leader"], 1, "{p}");
        assert!(p["term"].as_u64().unwrap() >= 1, "{p}");
        assert_eq!(p["high_watermark"], records, "{p}");
        let commit = p["commit"].as_u64().unwrap();
        assert_eq!(
            p["replicas"],
            serde_json::json!([{"id": 1, "up": true, "in_sync": true, "lag_records": 0, "match": commit, "lag": 0}]),
            "{p}"
        );
    }

    let o = rill(&broker, &["cluster", "status"], "");
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(
        text.contains(&format!("broker 1  {}  up", broker.addr)),
        "{text}"
    );
    assert!(
        text.contains("controller  leader 1  replicas 1  in sync 1\n"),
        "{text}"
    );
    assert!(
        !text.contains(" term ") && !text.contains(" commit "),
        "{text}"
    );
    for (partition, records) in [(0, 3), (1, 2)] {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("topic events  partition {partition} ")))
            .unwrap_or_else(|| panic!("no line for partition {partition}: {text}"));
        assert_eq!(
            line,
            format!(
                "topic events  partition {partition}  high watermark {records}  leader 1  replicas 1  in sync 1"
            )
        );
    }
    let o = rill(&broker, &["cluster", "status", "--raft"], "");
    assert!(
        stdout(&o).contains("[raft group 1  term "),
        "{}",
        stdout(&o)
    );
}

#[test]
fn cluster_status_without_a_reachable_broker_fails_with_one_line() {
    let o = Command::new(rill_cli())
        .args(["--bootstrap", "127.0.0.1:1", "cluster", "status"])
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(o.stdout.is_empty());
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("127.0.0.1:1"), "{}", stderr(&o));
}

#[test]
fn topics_are_listed_with_their_shape_and_described_or_deleted_several_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker_with_events_topic(dir.path());
    let o = rill(
        &broker,
        &["topic", "create", "logs", "--config", "retention.ms=60000"],
        "",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stderr(&o), "created topic logs with 1 partition\n");

    let o = rill(&broker, &["topic", "list", "--format", "json"], "");
    assert!(o.status.success(), "{}", stderr(&o));
    let list: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(
        list,
        serde_json::json!([
            {"name": "events", "partitions": 2, "replication_factor": 1, "configs": {}},
            {"name": "logs", "partitions": 1, "replication_factor": 1, "configs": {"retention.ms": "60000"}},
        ])
    );

    let o = rill(
        &broker,
        &["topic", "describe", "events", "logs", "--format", "json"],
        "",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let described: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(described.len(), 2);
    assert_eq!(described[0]["topic"], "events");
    assert_eq!(described[1]["topic"], "logs");
    let p = &described[1]["partitions"][0];
    assert_eq!(p["leader"], 1);
    assert_eq!(p["in_sync"], serde_json::json!([1]));
    assert_eq!(p["offline"], serde_json::json!([]));
    assert!(p["leader_epoch"].as_u64().unwrap() >= 1, "{p}");
    let text = stdout(&rill(&broker, &["topic", "describe", "logs"], ""));
    assert!(
        text.contains("replicas 1  in sync 1  log start 0"),
        "{text}"
    );
    assert!(text.contains("retention.ms = 60000  (set)"), "{text}");

    // A missing name among them: the others are described, and it named.
    let o = rill(&broker, &["topic", "describe", "events", "nope"], "");
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).starts_with("topic events\n"), "{}", stdout(&o));
    assert_eq!(stderr(&o), "rill: topic \"nope\" does not exist\n");
    // Settings refused in their own names.
    let o = rill(
        &broker,
        &[
            "topic",
            "create",
            "bad",
            "--config",
            "segment.bytes=8192",
            "--config",
            "max.message.bytes=65536",
        ],
        "",
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("segment.bytes (8192) must be at least max.message.bytes (65536)"),
        "{}",
        stderr(&o)
    );

    let o = rill(&broker, &["topic", "delete", "events", "nope", "logs"], "");
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("deleted topic events"),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("deleted topic logs"), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("1 of 3 topics not deleted: nope"),
        "{}",
        stderr(&o)
    );
    assert_eq!(stdout(&rill(&broker, &["topic", "list"], "")), "");
}
