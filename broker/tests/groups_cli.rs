//! `rill group` against a real broker: a group shows in `list` once it
//! has committed offsets; `describe` gives its members, offsets, high
//! watermarks and lag (the JSON shape scripts rely on); `reset-offsets`
//! sets offsets to earliest, latest, an offset or a time, and refuses
//! while the group has a member; `delete` removes a group's commits.
//!
//! Commits and members are made with the client protocol directly, as a
//! consumer would, so the CLI is checked against what the coordinator
//! holds rather than against itself. In a cluster, groups coordinated by
//! different brokers are all listed, and described through any broker.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Output;
use std::time::{Duration, Instant};

use common::cluster::TestCluster;
use common::groups::{commit_errors, commit_request, coordinator, heartbeat, moved, try_call};
use common::{BrokerProcess, Client, batch, run_rill, values};
use rill_client::protocol::messages::*;
use rill_client::protocol::*;
use serde_json::json;

/// How long a condition in these tests may take to hold.
const WAIT: Duration = Duration::from_secs(30);

fn rill(broker: &BrokerProcess, args: &[&str]) -> Output {
    rill_at(&broker.addr.to_string(), args)
}

/// `rill` with `bootstrap` as its brokers.
fn rill_at(bootstrap: &str, args: &[&str]) -> Output {
    run_rill(bootstrap, args, "")
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

/// Runs `rill` and returns its stdout, failing the test if it failed.
fn rill_ok(broker: &BrokerProcess, args: &[&str]) -> String {
    let o = rill(broker, args);
    assert!(o.status.success(), "rill {args:?}: {}", stderr(&o));
    stdout(&o)
}

/// `rill group describe G --format json`, parsed.
fn describe(broker: &BrokerProcess, group: &str) -> serde_json::Value {
    serde_json::from_str(&rill_ok(
        broker,
        &["group", "describe", group, "--format", "json"],
    ))
    .unwrap()
}

/// Sends `request` to the coordinator `c` is connected to, again while
/// it answers that it is not ready (the offsets topic being created or
/// loaded), for at most [`WAIT`].
fn at_coordinator(
    c: &mut Client,
    request: Request,
    not_ready: impl Fn(&Response) -> bool,
) -> Response {
    let deadline = Instant::now() + WAIT;
    loop {
        let (h, r) = c.call(request.clone());
        assert_eq!(h.error, ErrorCode::None, "{:?}", request.api_key());
        let r = r.unwrap();
        if !not_ready(&r) {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "the coordinator never got ready: {r:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Commits `offsets` (partition, offset) of `topic` for `group` from
/// outside the group; returns each partition's error.
fn commit(c: &mut Client, group: &str, topic: &str, offsets: &[(u32, u64)]) -> Vec<ErrorCode> {
    let request = commit_request(group, ("", NO_MEMBER_EPOCH), topic, offsets, None);
    let r = at_coordinator(c, request, |r| {
        commit_errors(Some(r.clone())).is_some_and(|e| e.into_iter().any(moved))
    });
    commit_errors(Some(r)).unwrap()
}

/// `group`'s committed offsets of `topic`, by partition (-1: none).
fn committed(c: &mut Client, group: &str, topic: &str, partitions: &[u32]) -> Vec<i64> {
    let request = Request::OffsetFetch(OffsetFetchRequest {
        group: group.into(),
        topics: Some(vec![TopicPartitions {
            topic: topic.into(),
            partitions: partitions.to_vec(),
        }]),
    });
    let r = at_coordinator(
        c,
        request,
        |r| matches!(r, Response::OffsetFetch(f) if moved(f.error)),
    );
    let Response::OffsetFetch(f) = r else {
        panic!("an OffsetFetch answer")
    };
    partitions
        .iter()
        .map(|&p| {
            f.topics
                .iter()
                .filter(|t| t.name == topic)
                .flat_map(|t| &t.partitions)
                .find(|q| q.partition == p)
                .map_or(NO_COMMITTED_OFFSET, |q| q.offset)
        })
        .collect()
}

/// A heartbeat's answer, sent again while the coordinator is not ready.
fn beat_when_ready(c: &mut Client, request: Request) -> ConsumerGroupHeartbeatResponse {
    let r = at_coordinator(
        c,
        request,
        |r| matches!(r, Response::ConsumerGroupHeartbeat(h) if moved(h.error)),
    );
    let Response::ConsumerGroupHeartbeat(h) = r else {
        panic!("a heartbeat answer")
    };
    assert_eq!(h.error, ErrorCode::None, "{h:?}");
    h
}

/// A member joins `group`, subscribed to `topic`: its id.
fn join(c: &mut Client, group: &str, topic: &str) -> String {
    let request = heartbeat(group, "", JOIN_GROUP_MEMBER_EPOCH, Some(&[topic]), &[]);
    beat_when_ready(c, request).member_id.unwrap()
}

/// The member leaves `group` for good.
fn leave(c: &mut Client, group: &str, member_id: &str) {
    beat_when_ready(
        c,
        heartbeat(group, member_id, LEAVE_GROUP_MEMBER_EPOCH, None, &[]),
    );
}

/// Waits (at most [`WAIT`]) for `check` to hold.
fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A broker with topic `orders`: partition 0 holds 10 records (0..5
/// stamped 1,000 ms, 5..10 stamped 2,000 ms), partition 1 holds 4 stamped
/// 1,000 ms. With it, a connection to `group`'s coordinator.
fn broker_with_orders(dir: &std::path::Path, group: &str) -> (BrokerProcess, Client) {
    let broker = BrokerProcess::start(dir);
    let mut c = broker.connect();
    assert_eq!(c.create_topic("orders", 2, &[]).error, ErrorCode::None);
    for (partition, range, timestamp_ms) in [(0, 0..5, 1_000), (0, 5..10, 2_000), (1, 0..4, 1_000)]
    {
        let r = c.produce("orders", partition, -1, batch(&values(range), timestamp_ms));
        assert_eq!(r.error, ErrorCode::None);
    }
    let coordinator = coordinator(&[broker.addr], group);
    (broker, coordinator)
}

#[test]
fn a_group_is_listed_once_it_has_commits_and_described_with_its_lag() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, mut c) = broker_with_orders(dir.path(), "billing");
    assert_eq!(
        rill_ok(&broker, &["group", "list", "--format", "json"]),
        "[]\n"
    );

    assert_eq!(
        commit(&mut c, "billing", "orders", &[(0, 3), (1, 4)]),
        [ErrorCode::None; 2]
    );
    let listed: serde_json::Value =
        serde_json::from_str(&rill_ok(&broker, &["group", "list", "--format", "json"])).unwrap();
    assert_eq!(listed, json!([{"group": "billing", "state": "Empty"}]));
    let text = rill_ok(&broker, &["group", "list"]);
    assert_eq!(
        text.split_whitespace().collect::<Vec<_>>(),
        ["billing", "Empty"]
    );

    assert_eq!(
        describe(&broker, "billing"),
        json!({
            "group": "billing",
            "state": "Empty",
            "members": [],
            "partitions": [
                {"topic": "orders", "partition": 0, "committed_offset": 3, "high_watermark": 10, "lag": 7},
                {"topic": "orders", "partition": 1, "committed_offset": 4, "high_watermark": 4, "lag": 0},
            ],
        })
    );
    let text = rill_ok(&broker, &["group", "describe", "billing"]);
    assert!(
        text.contains("topic orders  partition 0  committed 3  high watermark 10  lag 7"),
        "{text}"
    );

    // A member: it shows with its client id and, once assigned, both
    // partitions; the lag is unchanged.
    let member_id = join(&mut c, "billing", "orders");
    wait_for("the member's assignment to show", || {
        describe(&broker, "billing")["members"][0]["assigned"]
            == json!([{"topic": "orders", "partitions": [0, 1]}])
    });
    let d = describe(&broker, "billing");
    assert_eq!(d["members"].as_array().unwrap().len(), 1);
    let m = &d["members"][0];
    assert_eq!(m["member_id"], member_id.as_str());
    assert_eq!(m["client_id"], "test");
    assert!(m["host"].is_string());
    assert_eq!(d["partitions"][0]["lag"], 7);
    assert_ne!(d["state"], "Empty");
    leave(&mut c, "billing", &member_id);

    let o = rill(&broker, &["group", "describe", "nobody"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stderr(&o), "rill: group \"nobody\" does not exist\n");
}

#[test]
fn offsets_are_reset_to_earliest_latest_an_offset_or_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, mut c) = broker_with_orders(dir.path(), "audit");
    let reset = |to: &str| {
        rill_ok(
            &broker,
            &[
                "group",
                "reset-offsets",
                "audit",
                "--topic",
                "orders",
                "--to",
                to,
            ],
        )
    };
    // A group with no commits yet is made by its first reset.
    assert_eq!(
        reset("latest"),
        "topic orders  partition 0  offset 10\ntopic orders  partition 1  offset 4\n"
    );
    assert_eq!(committed(&mut c, "audit", "orders", &[0, 1]), [10, 4]);
    reset("earliest");
    assert_eq!(committed(&mut c, "audit", "orders", &[0, 1]), [0, 0]);
    // An offset is kept within each partition's log.
    reset("6");
    assert_eq!(committed(&mut c, "audit", "orders", &[0, 1]), [6, 4]);
    // The first record at or after the time; none in partition 1, so its end.
    reset("@1500");
    assert_eq!(committed(&mut c, "audit", "orders", &[0, 1]), [5, 4]);
    let d = describe(&broker, "audit");
    assert_eq!(d["partitions"][0]["lag"], 5);

    for bad in ["first", "-1", "@-5", "1.5"] {
        let o = rill(
            &broker,
            &[
                "group",
                "reset-offsets",
                "audit",
                "--topic",
                "orders",
                "--to",
                bad,
            ],
        );
        assert_eq!(o.status.code(), Some(1), "{bad}");
        assert_eq!(stderr(&o).lines().count(), 1, "{bad}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("@TIMESTAMP_MS"),
            "{bad}: {}",
            stderr(&o)
        );
    }
    let o = rill(
        &broker,
        &[
            "group",
            "reset-offsets",
            "audit",
            "--topic",
            "missing",
            "--to",
            "earliest",
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("\"missing\" does not exist"),
        "{}",
        stderr(&o)
    );
    // Nothing was changed by the refusals.
    assert_eq!(committed(&mut c, "audit", "orders", &[0, 1]), [5, 4]);
}

#[test]
fn a_group_with_a_member_is_neither_reset_nor_deleted_and_a_deleted_group_loses_its_commits() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, mut c) = broker_with_orders(dir.path(), "search");
    assert_eq!(
        commit(&mut c, "search", "orders", &[(0, 2), (1, 1)]),
        [ErrorCode::None; 2]
    );
    let member_id = join(&mut c, "search", "orders");

    let o = rill(
        &broker,
        &[
            "group",
            "reset-offsets",
            "search",
            "--topic",
            "orders",
            "--to",
            "earliest",
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).starts_with("rill: group \"search\" has active members"),
        "{}",
        stderr(&o)
    );
    assert_eq!(stderr(&o).lines().count(), 1);
    assert_eq!(stdout(&o), "");
    let o = rill(&broker, &["group", "delete", "search"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).starts_with("rill: group \"search\" has active members"),
        "{}",
        stderr(&o)
    );
    // The broker refuses a member-less commit while the member is there.
    assert_eq!(
        commit(&mut c, "search", "orders", &[(0, 0)]),
        [ErrorCode::NonEmptyGroup]
    );
    assert_eq!(committed(&mut c, "search", "orders", &[0, 1]), [2, 1]);

    leave(&mut c, "search", &member_id);
    wait_for("the member to be gone", || {
        describe(&broker, "search")["members"] == json!([])
    });
    rill_ok(
        &broker,
        &[
            "group",
            "reset-offsets",
            "search",
            "--topic",
            "orders",
            "--to",
            "latest",
        ],
    );
    assert_eq!(committed(&mut c, "search", "orders", &[0, 1]), [10, 4]);

    let o = rill(&broker, &["group", "delete", "search"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stderr(&o), "deleted group search\n");
    assert_eq!(
        committed(&mut c, "search", "orders", &[0, 1]),
        [NO_COMMITTED_OFFSET, NO_COMMITTED_OFFSET]
    );
    assert_eq!(
        rill_ok(&broker, &["group", "list", "--format", "json"]),
        "[]\n"
    );
    let o = rill(&broker, &["group", "delete", "search"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stderr(&o), "rill: group \"search\" does not exist\n");
}

#[test]
fn groups_coordinated_by_different_brokers_are_all_listed_and_described_through_any_broker() {
    const OFFSETS_TOPIC: &str = "__consumer_offsets";
    let c = TestCluster::start(3);
    c.create_topic("orders", 1);
    c.produce_acknowledged("orders", 0, &values(0..6));
    let brokers: Vec<SocketAddr> = (1..=3).map(|b| c.addr(b)).collect();
    // The offsets topic is made on first use; its leaders settle.
    coordinator(&brokers, "first");
    c.wait_for("the offsets topic to settle", 60, |c| {
        c.settled(OFFSETS_TOPIC, 16)
    });
    // One group coordinated by each broker, as leadership stands now.
    let mut by_coordinator: BTreeMap<usize, String> = BTreeMap::new();
    for i in 0..1_000 {
        let group = format!("group-{i}");
        let p = rill_client::partitioner::partition_for_key(group.as_bytes(), 16);
        if let Some(leader) = c.leader_of(OFFSETS_TOPIC, p) {
            by_coordinator.entry(leader).or_insert(group);
        }
        if by_coordinator.len() == 3 {
            break;
        }
    }
    assert_eq!(by_coordinator.len(), 3, "{by_coordinator:?}");
    for group in by_coordinator.values() {
        wait_for("a commit at the group's coordinator", || {
            let mut coord = coordinator(&brokers, group);
            let request = commit_request(group, ("", NO_MEMBER_EPOCH), "orders", &[(0, 2)], None);
            match commit_errors(try_call(&mut coord, &request)) {
                Some(errors) if errors == [ErrorCode::None] => true,
                Some(errors) if errors.iter().copied().all(moved) => false,
                None => false,
                Some(errors) => panic!("commit refused: {errors:?}"),
            }
        });
    }

    // Through broker 1 alone: the CLI finds the other brokers and each
    // group's coordinator itself.
    let first = c.addr(1).to_string();
    let o = rill_at(&first, &["group", "list", "--format", "json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let listed: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let mut expected: Vec<_> = by_coordinator
        .values()
        .map(|g| json!({"group": g, "state": "Empty"}))
        .collect();
    expected.sort_by_key(|g| g["group"].as_str().unwrap().to_string());
    assert_eq!(listed, json!(expected));
    for group in by_coordinator.values() {
        let o = rill_at(&first, &["group", "describe", group, "--format", "json"]);
        assert!(o.status.success(), "{}", stderr(&o));
        let d: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
        assert_eq!(
            d["partitions"],
            json!([{"topic": "orders", "partition": 0, "committed_offset": 2, "high_watermark": 6, "lag": 4}]),
            "{group}"
        );
    }
}
