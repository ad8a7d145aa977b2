//! `rill cluster status` on three real brokers, one of them SIGKILLed:
//! the answer is in user terms (leaders, in-sync replicas, lag in
//! records) and the exit code says whether every broker is up and every
//! partition led, as `rpk cluster health` does.
#![allow(clippy::unwrap_used)]

mod common;

use common::cluster::TestCluster;
use common::run_rill;

#[test]
fn status_exits_1_with_a_broker_down_and_counts_what_its_replicas_lack_in_records() {
    let mut c = TestCluster::start(3);
    c.create_topic("s", 2);
    c.wait_for("a healthy cluster", 60, TestCluster::healthy);
    let status = |c: &TestCluster| run_rill(&c.bootstrap(), &["cluster", "status"], "");
    let o = status(&c);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    c.kill(3);
    // Written while broker 3 is down: its replicas lack these.
    let records: Vec<String> = (0..5).map(|i| format!("r{i}")).collect();
    c.produce_acknowledged("s", 0, &records);
    c.wait_for("partition 0 led by broker 1 or 2", 60, |c| {
        c.leader_of("s", 0).is_some_and(|l| l != 3)
    });
    let o = status(&c);
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    );
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    assert!(err.contains("broker 3 down"), "{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("broker 3 ") && l.contains("down")),
        "{out}"
    );
    let line = out
        .lines()
        .find(|l| l.starts_with("topic s  partition 0 "))
        .unwrap_or_else(|| panic!("no line for partition 0: {out}"));
    assert!(line.contains("in sync "), "{line}");
    // Broker 3 had none of the partition's records: it lacks them all
    // (at least the 5 acknowledged; a retried produce may add more).
    let hw: u64 = line
        .split("high watermark ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(hw >= 5, "{line}");
    assert!(
        line.contains(&format!("lagging 3 ({hw} records behind, down)")),
        "{line}"
    );
}
