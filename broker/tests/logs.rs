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
