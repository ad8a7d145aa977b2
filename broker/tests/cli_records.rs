//! `rill produce` and `rill consume` as a kcat user drives them, against a
//! real broker: keys, headers, timestamps and partitions set per record;
//! binary values through base64 and hex; NUL-delimited input; where each
//! record landed; a record that cannot be decoded stopping the command
//! before it is sent; reading from N records before the end or from a
//! time; kcat templates and JSON with headers; a topic that does not exist
//! failing at once.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Output;
use std::time::{Duration, Instant};

use common::{BrokerProcess, run_rill};

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs `rill` against `broker`, asserting it succeeded.
fn ok(broker: &BrokerProcess, args: &[&str], stdin: impl AsRef<[u8]>) -> Output {
    let o = run_rill(&broker.addr.to_string(), args, stdin);
    assert!(o.status.success(), "rill {args:?}: {}", stderr(&o));
    o
}

/// A broker with topic `t` of two partitions.
fn broker_with_topic(dir: &std::path::Path) -> BrokerProcess {
    let broker = BrokerProcess::start(dir);
    ok(&broker, &["topic", "create", "t", "--partitions", "2"], "");
    broker
}

#[test]
fn keys_headers_timestamps_and_partitions_round_trip_and_offsets_are_printed() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker_with_topic(dir.path());
    let o = ok(
        &broker,
        &[
            "produce",
            "t",
            "-p",
            "1",
            "-k",
            ":",
            "-H",
            "trace=abc",
            "-H",
            "empty=",
            "--timestamp-ms",
            "1600000000000",
            "--print-offsets",
        ],
        "k1:v1\nk2:v2\nno key\n",
    );
    assert_eq!(
        stdout(&o),
        "partition 1 offset 0\npartition 1 offset 1\npartition 1 offset 2\n"
    );
    assert!(
        stderr(&o).starts_with("3 records acknowledged"),
        "{}",
        stderr(&o)
    );

    let o = ok(
        &broker,
        &["consume", "t", "-p", "1", "-f", "json", "-n", "3"],
        "",
    );
    let records: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 3);
    assert_eq!(records[0]["key"], "k1");
    assert_eq!(records[0]["value"], "v1");
    assert_eq!(records[2]["key"], serde_json::Value::Null);
    assert_eq!(records[2]["value"], "no key");
    for r in &records {
        assert_eq!(r["partition"], 1);
        assert_eq!(r["timestamp"], 1_600_000_000_000i64);
        assert_eq!(
            r["headers"],
            serde_json::json!([{"key": "trace", "value": "abc"}, {"key": "empty", "value": ""}])
        );
    }
    let o = ok(
        &broker,
        &[
            "consume",
            "t",
            "-p",
            "1",
            "-n",
            "2",
            "-f",
            "%t/%p@%o %k=%v %T [%h]\\n",
        ],
        "",
    );
    assert_eq!(
        stdout(&o),
        "t/1@0 k1=v1 1600000000000 [trace=abc,empty=]\nt/1@1 k2=v2 1600000000000 [trace=abc,empty=]\n"
    );
    // A single record is one record.
    let o = ok(&broker, &["produce", "t"], "x\n");
    assert!(
        stderr(&o).starts_with("1 record acknowledged"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn binary_values_round_trip_through_base64_and_hex_and_nul_delimited_input() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker_with_topic(dir.path());
    // Every byte value, newlines and NULs among them.
    let all: Vec<u8> = (0..=255).collect();
    let b64 = {
        use std::fmt::Write;
        // Encoded by the CLI itself from hex, then compared byte for byte.
        let hex: String = all.iter().fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        });
        ok(
            &broker,
            &["produce", "t", "-p", "0", "--value-format", "hex"],
            format!("{hex}\n"),
        );
        let o = ok(
            &broker,
            &[
                "consume",
                "t",
                "-p",
                "0",
                "-n",
                "1",
                "--value-format",
                "hex",
            ],
            "",
        );
        assert_eq!(stdout(&o), format!("{hex}\n"));
        let o = ok(
            &broker,
            &[
                "consume",
                "t",
                "-p",
                "0",
                "-n",
                "1",
                "--value-format",
                "base64",
            ],
            "",
        );
        stdout(&o)
    };
    ok(
        &broker,
        &["produce", "t", "-p", "0", "--value-format", "base64"],
        &b64,
    );
    let o = ok(
        &broker,
        &["consume", "t", "-p", "0", "-n", "2", "-f", "%v"],
        "",
    );
    assert_eq!(o.stdout, [all.clone(), all].concat(), "raw bytes, twice");

    // With -Z, records end at NUL and may hold newlines; as text, any
    // bytes are a value.
    ok(
        &broker,
        &["produce", "t", "-p", "1", "-Z"],
        b"two\nlines\0\xff\xfe\0".as_slice(),
    );
    let o = ok(
        &broker,
        &["consume", "t", "-p", "1", "-n", "2", "-f", "%v|"],
        "",
    );
    assert_eq!(o.stdout, b"two\nlines|\xff\xfe|");
}

#[test]
fn a_record_that_cannot_be_decoded_stops_the_command_before_it_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker_with_topic(dir.path());
    let o = run_rill(
        &broker.addr.to_string(),
        &["produce", "t", "-p", "0", "--value-format", "hex"],
        "00ff\nzz\n11\n",
    );
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.starts_with("1 record acknowledged"), "{err}");
    assert!(err.contains("line 2"), "{err}");
    assert!(err.contains("not sent"), "{err}");
    // Only the first record is there.
    let o = ok(
        &broker,
        &[
            "consume",
            "t",
            "-p",
            "0",
            "--timeout-ms",
            "500",
            "--value-format",
            "hex",
        ],
        "",
    );
    assert_eq!(stdout(&o), "00ff\n");
    let bad_header = run_rill(
        &broker.addr.to_string(),
        &["produce", "t", "-H", "nokv"],
        "",
    );
    assert_eq!(bad_header.status.code(), Some(1));
    assert!(
        stderr(&bad_header).contains("KEY=VALUE"),
        "{}",
        stderr(&bad_header)
    );
    let no_partition = run_rill(
        &broker.addr.to_string(),
        &["produce", "t", "-p", "9"],
        "x\n",
    );
    assert_eq!(no_partition.status.code(), Some(1));
    assert!(
        stderr(&no_partition).contains("no partition 9"),
        "{}",
        stderr(&no_partition)
    );
}

#[test]
fn consume_starts_n_records_before_the_end_or_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker_with_topic(dir.path());
    let early: String = (0..5).map(|i| format!("early {i}\n")).collect();
    let late: String = (0..5).map(|i| format!("late {i}\n")).collect();
    ok(
        &broker,
        &["produce", "t", "-p", "0", "--timestamp-ms", "1600000000000"],
        early,
    );
    ok(
        &broker,
        &["produce", "t", "-p", "0", "--timestamp-ms", "1700000000000"],
        late,
    );
    let values = |args: &[&str]| {
        let mut all = vec!["consume", "t", "-p", "0", "--timeout-ms", "500"];
        all.extend_from_slice(args);
        stdout(&ok(&broker, &all, ""))
    };
    assert_eq!(values(&["-o", "-2"]), "late 3\nlate 4\n");
    assert_eq!(
        values(&["-o", "-100"]).lines().count(),
        10,
        "fewer than asked: all"
    );
    assert_eq!(
        values(&["-o", "@1650000000000"]),
        "late 0\nlate 1\nlate 2\nlate 3\nlate 4\n"
    );
    assert_eq!(
        values(&["-o", "@1800000000000"]),
        "",
        "after every record: the end"
    );
    assert_eq!(values(&["-o", "8"]), "late 3\nlate 4\n");
    for bad in ["-x", "@soon", "first"] {
        let o = run_rill(
            &broker.addr.to_string(),
            &["consume", "t", "-o", bad, "--timeout-ms", "100"],
            "",
        );
        assert_eq!(o.status.code(), Some(1), "{bad}");
        assert!(stderr(&o).contains("--offset"), "{bad}: {}", stderr(&o));
    }
    let o = run_rill(
        &broker.addr.to_string(),
        &["consume", "t", "-f", "%x", "--timeout-ms", "100"],
        "",
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("%x is no token"), "{}", stderr(&o));
}

#[test]
fn a_topic_that_does_not_exist_fails_at_once_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker_with_topic(dir.path());
    // Before, each line waited 5 s for the topic to appear (15 s here);
    // now a few ms. The bound is generous for a busy machine, not a
    // benchmark: well under that old wait, and it holds with no retry.
    let timed = |args: &[&str], input: &str| {
        let started = Instant::now();
        let o = run_rill(&broker.addr.to_string(), args, input);
        (o, started.elapsed())
    };
    let produce = timed(&["produce", "tt"], "a\nb\nc\n");
    let consume = timed(&["consume", "tt", "--timeout-ms", "100"], "");
    for (o, took) in [&produce, &consume] {
        assert_eq!(o.status.code(), Some(1));
        assert_eq!(stderr(o), "rill: topic \"tt\" does not exist\n");
        assert!(*took < Duration::from_secs(2), "took {took:?}");
    }
}

#[test]
fn errors_give_the_limit_or_the_range_that_was_passed() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path());
    ok(
        &broker,
        &[
            "topic",
            "create",
            "small",
            "--config",
            "max.message.bytes=2000",
        ],
        "",
    );
    ok(&broker, &["produce", "small"], "ok\n");
    // Batched with a small one, the large record is the one named.
    let o = run_rill(
        &broker.addr.to_string(),
        &["produce", "small"],
        format!("ok\n{}\n", "a".repeat(5000)),
    );
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("topic \"small\" partition 0: the record on line 2 (5000 bytes of value"),
        "{err}"
    );
    assert!(err.contains("max.message.bytes = 2000"), "{err}");
    assert!(err.contains("not acknowledged"), "{err}");

    let o = run_rill(
        &broker.addr.to_string(),
        &["consume", "small", "-o", "99", "--timeout-ms", "500"],
        "",
    );
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o),
        "rill: offset 99 is out of range for topic \"small\" partition 0: its log starts at offset 0 and the next record will be offset 1; use -o earliest, -o latest or -o -N\n"
    );
}
