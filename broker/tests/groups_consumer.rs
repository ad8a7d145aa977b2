//! The group consumer (`Consumer::subscribe`) and `rill consume --group`
//! against a real broker: members split a topic with no partition read by
//! two; a newcomer takes its share while the partitions that stay keep
//! being read; a member that closes hands its partitions over at once,
//! from its commits; a member that does not poll stays in the group on
//! its background heartbeats; CLI runs read on from what the last one
//! printed.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::groups::Writer;
use common::{BrokerProcess, batch, rill_cli, runtime, values};
use rill_client::protocol::ErrorCode;
use rill_client::{
    Admin, Cluster, Consumer, ConsumerConfig, ConsumerRecord, GroupConfig, OffsetReset,
    RebalanceListener,
};
use tokio::time::Instant;

const TOPIC: &str = "events";
const PARTITIONS: u32 = 6;
const GROUP: &str = "readers";

/// A broker with group settings `session_ms` and `interval_ms`, and the
/// topic of [`PARTITIONS`] partitions.
fn broker(dir: &std::path::Path, session_ms: u64, interval_ms: u32) -> BrokerProcess {
    let args: Vec<String> = [
        "--listen",
        "127.0.0.1:0",
        "--group-session-timeout-ms",
        &session_ms.to_string(),
        "--group-heartbeat-interval-ms",
        &interval_ms.to_string(),
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    let broker = BrokerProcess::start_with(dir, &args);
    assert_eq!(
        broker.connect().create_topic(TOPIC, PARTITIONS, &[]).error,
        ErrorCode::None
    );
    broker
}

/// A writer of the topic on `broker`.
fn new_writer(broker: &BrokerProcess) -> Writer {
    Writer::new(&broker.addr.to_string(), TOPIC, PARTITIONS)
}

fn member(broker: &BrokerProcess, listener: Option<Box<dyn RebalanceListener>>) -> Consumer {
    let cluster = Cluster::new(&broker.addr.to_string(), "groups-consumer-test").unwrap();
    let mut c = Consumer::new(
        cluster,
        ConsumerConfig {
            max_wait_ms: 100,
            ..ConsumerConfig::default()
        },
    );
    c.subscribe(
        GroupConfig {
            auto_offset_reset: OffsetReset::Earliest,
            auto_commit_interval_ms: 500,
            close_timeout_ms: 10_000,
            listener,
            ..GroupConfig::new(GROUP)
        },
        vec![TOPIC.into()],
    )
    .unwrap();
    c
}

fn value(r: &ConsumerRecord) -> String {
    String::from_utf8(r.value.as_ref().unwrap().to_vec()).unwrap()
}

fn partitions_of(c: &Consumer) -> BTreeSet<u32> {
    c.positions().keys().map(|(_, p)| *p).collect()
}

/// Every record read, once each: panics on a record read twice.
fn read_once(read: &[Vec<ConsumerRecord>]) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for r in read.iter().flatten() {
        assert!(seen.insert(value(r)), "{} read twice", value(r));
    }
    seen
}

/// Polls each consumer in turn (20 ms each) until `done` holds, for at
/// most 60 s.
async fn poll_until(
    consumers: &mut [&mut Consumer],
    read: &mut [Vec<ConsumerRecord>],
    what: &str,
    mut done: impl FnMut(&[&mut Consumer], &[Vec<ConsumerRecord>]) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done(consumers, read) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        for (c, r) in consumers.iter_mut().zip(read.iter_mut()) {
            r.extend(c.poll(Duration::from_millis(20)).await.unwrap());
        }
    }
}

fn disjoint(consumers: &[&mut Consumer]) -> bool {
    let mut all = BTreeSet::new();
    consumers
        .iter()
        .all(|c| partitions_of(c).into_iter().all(|p| all.insert(p)))
}

/// Partitions revoked from a consumer, as its listener heard.
#[derive(Default)]
struct Revoked(Arc<Mutex<Vec<u32>>>);

impl RebalanceListener for Revoked {
    fn on_partitions_revoked(&mut self, partitions: &[(String, u32)]) {
        self.0
            .lock()
            .unwrap()
            .extend(partitions.iter().map(|(_, p)| *p));
    }

    fn on_partitions_lost(&mut self, partitions: &[(String, u32)]) {
        panic!("no partition is lost here: {partitions:?}");
    }
}

#[test]
fn members_split_a_topic_and_a_newcomer_takes_its_share_while_kept_partitions_are_read_on() {
    let dir = tempfile::tempdir().unwrap();
    // A long heartbeat interval makes the hand-over window long: the
    // members learn of the newcomer only at their next heartbeat.
    let broker = broker(dir.path(), 30_000, 1_000);
    runtime().block_on(async {
        let mut writer = new_writer(&broker);
        for _ in 0..20 {
            writer.round().await;
        }
        let revoked_a = Arc::new(Mutex::new(Vec::new()));
        let mut a = member(&broker, Some(Box::new(Revoked(Arc::clone(&revoked_a)))));
        let mut b = member(&broker, None);
        let mut read = vec![Vec::new(), Vec::new()];
        let total = writer.written.len();
        poll_until(
            &mut [&mut a, &mut b],
            &mut read,
            "a split of every record",
            |c, r| {
                c.iter().all(|c| partitions_of(c).len() == 3)
                    && disjoint(c)
                    && read_once(r).len() == total
            },
        )
        .await;

        // A third member joins; records keep coming while partitions move.
        let before_a = partitions_of(&a);
        let revoked_before = revoked_a.lock().unwrap().len();
        let mut c = member(&broker, None);
        read.push(Vec::new());
        let mut during: Vec<Vec<ConsumerRecord>> = vec![Vec::new(), Vec::new(), Vec::new()];
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let settled = [&a, &b, &c].iter().all(|m| partitions_of(m).len() == 2);
            if settled && disjoint(&[&mut a, &mut b, &mut c]) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "three members of two partitions each"
            );
            writer.round().await;
            for (i, m) in [&mut a, &mut b, &mut c].into_iter().enumerate() {
                let got = m.poll(Duration::from_millis(20)).await.unwrap();
                during[i].extend(got.iter().cloned());
                read[i].extend(got);
            }
        }
        // Everything written, before, during and after, is read once.
        writer.round().await;
        let total = writer.written.len();
        poll_until(
            &mut [&mut a, &mut b, &mut c],
            &mut read,
            "every record",
            |_, r| read_once(r).len() == total,
        )
        .await;
        assert_eq!(read_once(&read), writer.written);

        // A gave up only what moved away from it, and read the partitions
        // it kept while they moved around it.
        let after_a = partitions_of(&a);
        let kept: BTreeSet<u32> = after_a.intersection(&before_a).copied().collect();
        assert!(!kept.is_empty(), "before {before_a:?}, after {after_a:?}");
        let revoked: BTreeSet<u32> = revoked_a.lock().unwrap()[revoked_before..]
            .iter()
            .copied()
            .collect();
        assert_eq!(revoked, before_a.difference(&after_a).copied().collect());
        assert!(
            during[0].iter().any(|r| kept.contains(&r.partition)),
            "a kept partition was read while the others moved"
        );
        // No partition was read by two members after it settled.
        for p in 0..PARTITIONS {
            let readers = [&a, &b, &c]
                .iter()
                .filter(|m| partitions_of(m).contains(&p))
                .count();
            assert_eq!(readers, 1, "partition {p}");
        }
        for m in [a, b, c] {
            m.close().await.unwrap();
        }
    });
}

#[test]
fn a_member_that_closes_hands_its_partitions_over_at_once_from_its_commits() {
    let dir = tempfile::tempdir().unwrap();
    let session_ms = 30_000;
    let broker = broker(dir.path(), session_ms, 500);
    runtime().block_on(async {
        let mut writer = new_writer(&broker);
        for _ in 0..10 {
            writer.round().await;
        }
        let mut a = member(&broker, None);
        let mut b = member(&broker, None);
        let mut read = vec![Vec::new(), Vec::new()];
        let total = writer.written.len();
        poll_until(
            &mut [&mut a, &mut b],
            &mut read,
            "a split of every record",
            |c, r| c.iter().all(|c| partitions_of(c).len() == 3) && read_once(r).len() == total,
        )
        .await;
        let closed_at = Instant::now();
        a.close().await.unwrap();
        writer.round().await;
        let total = writer.written.len();
        let mut read_b = vec![std::mem::take(&mut read[1])];
        poll_until(
            &mut [&mut b],
            &mut read_b,
            "b to take everything",
            |c, _| partitions_of(c[0]).len() == PARTITIONS as usize,
        )
        .await;
        assert!(
            closed_at.elapsed() < Duration::from_millis(session_ms / 2),
            "handed over at the leave, not at the session timeout"
        );
        let read_a = std::mem::take(&mut read[0]);
        poll_until(&mut [&mut b], &mut read_b, "every record", |_, r| {
            read_once(&[read_a.clone(), r[0].clone()]).len() == total
        })
        .await;
        // What a read was committed at its close: b read none of it again.
        assert_eq!(read_once(&[read_a, read_b.remove(0)]), writer.written);
        b.close().await.unwrap();
    });
}

#[test]
fn a_member_that_does_not_poll_stays_in_the_group_on_its_heartbeats() {
    let dir = tempfile::tempdir().unwrap();
    let session_ms = 1_500;
    let broker = broker(dir.path(), session_ms, 200);
    runtime().block_on(async {
        let mut writer = new_writer(&broker);
        writer.round().await;
        let mut a = member(&broker, None);
        let mut read = vec![Vec::new()];
        poll_until(&mut [&mut a], &mut read, "every partition", |c, r| {
            partitions_of(c[0]).len() == PARTITIONS as usize && r[0].len() == 6
        })
        .await;
        let admin = Admin::new(Cluster::new(&broker.addr.to_string(), "groups-admin").unwrap());
        let members = |d: rill_client::admin::GroupDescription| {
            d.members
                .into_iter()
                .map(|m| m.member_id)
                .collect::<Vec<_>>()
        };
        let first = members(admin.describe_group(GROUP).await.unwrap());
        assert_eq!(first.len(), 1);
        // Three session timeouts without a poll: the same member all along.
        let until = Instant::now() + Duration::from_millis(3 * session_ms);
        while Instant::now() < until {
            assert_eq!(members(admin.describe_group(GROUP).await.unwrap()), first);
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        // And it reads on, its partitions still its own.
        writer.round().await;
        poll_until(&mut [&mut a], &mut read, "the new records", |_, r| {
            r[0].len() == 12
        })
        .await;
        a.close().await.unwrap();
    });
}

#[test]
fn consume_with_a_group_reads_on_from_what_the_last_run_printed() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path(), 10_000, 500);
    let mut c = broker.connect();
    // 20 records over the partitions, unevenly.
    let mut n = 0;
    for p in 0..PARTITIONS {
        let count = [6, 1, 0, 5, 3, 5][p as usize];
        let vs: Vec<String> = values(n..n + count);
        n += count;
        if !vs.is_empty() {
            assert_eq!(
                c.produce(TOPIC, p, -1, batch(&vs, 1)).error,
                ErrorCode::None
            );
        }
    }
    assert_eq!(n, 20);
    let consume = |extra: &[&str]| {
        let o = Command::new(rill_cli())
            .args(["consume", TOPIC, "--group", GROUP])
            .args(extra)
            .env("RILL_BOOTSTRAP", broker.addr.to_string())
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let first = consume(&["--max-messages", "10"]);
    let second = consume(&["--max-messages", "10"]);
    assert_eq!(first.len(), 10);
    assert_eq!(second.len(), 10);
    let all: BTreeSet<&String> = first.iter().chain(&second).collect();
    assert_eq!(all.len(), 20, "{first:?} {second:?}");
    assert_eq!(
        all.into_iter().cloned().collect::<BTreeSet<_>>(),
        values(0..20).into_iter().collect()
    );
    // Everything read: a third run prints nothing and ends well.
    assert!(consume(&["--timeout-ms", "1000"]).is_empty());

    // The group holds each partition's end, and has no member left.
    let admin = Admin::new(Cluster::new(&broker.addr.to_string(), "groups-admin").unwrap());
    let d = runtime().block_on(admin.describe_group(GROUP)).unwrap();
    assert!(d.members.is_empty());
    let committed: BTreeMap<u32, u64> = d
        .partitions
        .iter()
        .map(|p| (p.partition, p.committed_offset))
        .collect();
    for (p, end) in [6u64, 1, 0, 5, 3, 5].into_iter().enumerate() {
        if end > 0 {
            assert_eq!(committed.get(&(p as u32)), Some(&end), "partition {p}");
        }
    }
    // As `rill group describe --format json` shows it: lag 0 everywhere.
    let o = Command::new(rill_cli())
        .args(["group", "describe", GROUP, "--format", "json"])
        .env("RILL_BOOTSTRAP", broker.addr.to_string())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let d: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let partitions = d["partitions"].as_array().unwrap();
    assert!(!partitions.is_empty());
    assert!(partitions.iter().all(|p| p["lag"] == 0), "{d}");
}
