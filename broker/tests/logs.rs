//! `--log-format json`: every log line a broker writes is one JSON object
//! with its level and message, from start-up to a clean stop.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;

#[test]
fn json_logs_are_one_object_per_line_with_level_and_message() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start_with(
        dir.path(),
        &["--listen", "127.0.0.1:0", "--log-format", "json"].map(String::from),
    );
    let mut client = broker.connect();
    assert!(client.create_topic("logged", 1, &[]).error.is_ok());
    broker.sigterm();
    let lines = broker.final_log_lines(Duration::from_secs(30));
    let mut messages = Vec::new();
    for line in &lines {
        // The two address lines scripts read are plain, by design.
        if line.starts_with("listening on ") || line.starts_with("metrics and health on ") {
            continue;
        }
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        assert!(v["level"].is_string(), "{line}");
        messages.push(
            v["fields"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
    }
    assert!(messages.iter().any(|m| m == "ready"), "{messages:?}");
    assert!(
        messages
            .iter()
            .any(|m| m == rill_broker::threads::ALL_JOINED),
        "{messages:?}"
    );
}

/// The lines of a broker started with `args` (RUST_LOG unset), which
/// creates a topic and stops.
fn lines_of_a_broker_creating_a_topic(args: &[&str]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let mut all = vec!["--listen", "127.0.0.1:0"];
    all.extend_from_slice(args);
    let broker = BrokerProcess::start_with_env(
        dir.path(),
        &all.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        &[("RUST_LOG", "")],
    );
    let mut client = broker.connect();
    assert!(client.create_topic("quiet", 2, &[]).error.is_ok());
    broker.sigterm();
    broker.final_log_lines(Duration::from_secs(30))
}

#[test]
fn raft_rs_lines_are_debug_and_leader_changes_one_info_line_each() {
    let lines = lines_of_a_broker_creating_a_topic(&[]);
    assert!(
        !lines.iter().any(|l| l.contains(" raft: ")),
        "raft-rs's own lines at the default level: {lines:#?}"
    );
    for p in 0..2 {
        let led: Vec<_> = lines
            .iter()
            .filter(|l| {
                l.contains("leading the partition") && l.contains(&format!("partition={p} "))
            })
            .collect();
        assert_eq!(led.len(), 1, "{lines:#?}");
    }
    assert!(
        lines.iter().any(|l| l.contains("created topic")),
        "{lines:#?}"
    );
    let debug = lines_of_a_broker_creating_a_topic(&["--log-level", "debug"]);
    assert!(
        debug.iter().any(|l| l.contains("DEBUG raft: ")),
        "--log-level debug brings raft-rs's lines back"
    );
}
