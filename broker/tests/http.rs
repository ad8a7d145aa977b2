//! The metrics and health listener of a real broker: `/metrics` parses as
//! Prometheus text and its counters move with a produce and a fetch;
//! `/health/live` answers at once, `/health/ready` once the broker can
//! serve, and `503` with the reason when it knows no controller; hostile
//! requests (an oversized head, another method, garbage, a client that
//! sends nothing) get a clear answer or a close, and the broker serves on.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::cluster::TestCluster;
use common::prometheus::{parse_prometheus, sample};
use common::*;

fn wait_ready(addr: std::net::SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = http_get(addr, "/health/ready");
        if status == 200 {
            assert_eq!(body, "ready\n");
            return;
        }
        assert_eq!(status, 503, "{body}");
        assert!(Instant::now() < deadline, "not ready within 60 s: {body}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn metrics_parse_as_prometheus_text_and_move_with_produce_and_fetch() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path());
    let http = broker.http_addr();
    assert_eq!(http_get(http, "/health/live"), (200, "live\n".to_string()));
    wait_ready(http);

    let mut client = broker.connect();
    let r = client.create_topic("metered", 1, &[]);
    assert!(r.error.is_ok(), "{:?}", r.error);
    wait_ready(http);
    let before = parse_prometheus(&http_get(http, "/metrics").1);
    let records_in = [
        "rill_partition_records_in_total",
        "topic=\"metered\"",
        "partition=\"0\"",
    ];
    assert_eq!(sample(&before, &records_in).unwrap_or(0.0), 0.0);

    for round in 0..5 {
        let p = client.produce(
            "metered",
            0,
            -1,
            batch(&values(round * 20..round * 20 + 20), now_ms()),
        );
        assert!(p.error.is_ok(), "{:?}", p.error);
    }
    assert_eq!(read_all(&mut client, "metered", 0).len(), 100);
    // A partition the topic does not have: an error counted for produce.
    let refused = client.produce("metered", 7, -1, batch(&values(0..1), now_ms()));
    assert!(!refused.error.is_ok());
    let refused_as = format!("error=\"{:?}\"", refused.error);

    // A rendering answers scrapes for a second: wait for a fresh one.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (body, after) = loop {
        let (status, body) = http_get(http, "/metrics");
        assert_eq!(status, 200);
        let after = parse_prometheus(&body);
        if sample(&after, &records_in) == Some(100.0) {
            break (body, after);
        }
        assert!(
            Instant::now() < deadline,
            "{:?}",
            sample(&after, &records_in)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let bytes_in = sample(
        &after,
        &["rill_partition_bytes_in_total", "topic=\"metered\""],
    )
    .unwrap();
    assert!(bytes_in > 100.0 * 7.0, "{bytes_in}");
    let bytes_out = sample(
        &after,
        &["rill_partition_bytes_out_total", "topic=\"metered\""],
    )
    .unwrap();
    assert!(
        bytes_out >= bytes_in,
        "every byte produced was fetched: {bytes_out} < {bytes_in}"
    );
    assert!(sample(&after, &["rill_requests_total", "api=\"produce\""]).unwrap() >= 6.0);
    assert_eq!(
        sample(
            &after,
            &["rill_request_errors_total", "api=\"produce\"", &refused_as]
        ),
        Some(1.0)
    );
    assert!(
        sample(
            &after,
            &["rill_request_duration_seconds_count", "api=\"fetch\""]
        )
        .unwrap()
            >= 1.0
    );
    assert!(
        sample(
            &after,
            &[
                "rill_request_duration_seconds_bucket",
                "api=\"produce\"",
                "le=\"+Inf\""
            ]
        )
        .unwrap()
            >= 5.0
    );
    assert!(sample(&after, &["rill_connections_open"]).unwrap() >= 1.0);
    // The Raft thread's rounds and syncs, and the roles of the replicas.
    assert!(sample(&after, &["rill_raft_round_duration_seconds_count"]).unwrap() > 0.0);
    assert!(sample(&after, &["rill_sync_duration_seconds_count"]).unwrap() > 0.0);
    assert!(sample(&after, &["rill_sync_round_bytes_sum"]).unwrap() >= bytes_in);
    assert!(sample(&after, &["rill_partition_leaders"]).unwrap() >= 1.0);
    assert_eq!(sample(&after, &["rill_partition_followers"]), Some(0.0));
    // One broker: it won every election, the controller's and the
    // partition's, and its first leaders are no change.
    for group in ["group=\"controller\"", "group=\"partition\""] {
        assert!(
            sample(&after, &["rill_elections_won_total", group]).unwrap() >= 1.0,
            "{group}"
        );
    }
    for changes in [
        "rill_controller_leader_changes_total",
        "rill_leader_changes_total",
    ] {
        assert_eq!(sample(&after, &[changes]).unwrap_or(0.0), 0.0, "{changes}");
    }
    for process in [
        "rill_process_resident_memory_bytes",
        "rill_process_anonymous_memory_bytes",
        "rill_process_open_fds",
    ] {
        assert!(sample(&after, &[process]).unwrap() > 0.0, "{process}");
    }
    // The produce's stages, and each replica sync a produce waited for.
    for series in [
        &["rill_produce_stage_seconds_count", "stage=\"queue\""][..],
        &["rill_produce_stage_seconds_count", "stage=\"commit\""],
        &["rill_fsync_duration_seconds_count", "file=\"log\""],
    ] {
        assert!(sample(&after, series).unwrap() >= 5.0, "{series:?}");
    }
    assert!(sample(&after, &["rill_fsync_bytes_sum"]).unwrap() >= bytes_in);
    assert!(
        body.contains("# TYPE rill_requests_total counter"),
        "{body}"
    );
}

#[test]
fn consumer_group_lag_is_the_records_between_a_commit_and_the_high_watermark() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start_with(
        dir.path(),
        &[
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--group-lag-refresh-ms".into(),
            "200".into(),
        ],
    );
    let http = broker.http_addr();
    let mut client = broker.connect();
    let r = client.create_topic("lagged", 2, &[]);
    assert!(r.error.is_ok(), "{:?}", r.error);
    for partition in 0..2 {
        let p = client.produce("lagged", partition, -1, batch(&values(0..30), now_ms()));
        assert!(p.error.is_ok(), "{:?}", p.error);
    }
    // A group id that must be escaped in a label value.
    let group = "billing \"eu\"";
    let commit = common::groups::commit_request(
        group,
        ("", rill_client::protocol::messages::NO_MEMBER_EPOCH),
        "lagged",
        &[(0, 12), (1, 30)],
        None,
    );
    // The offsets topic is created on first use: its coordinator may
    // still be loading.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut coordinator = common::groups::coordinator(&[broker.addr], group);
        let errors =
            common::groups::commit_errors(common::groups::try_call(&mut coordinator, &commit))
                .unwrap_or_default();
        if errors == [rill_client::protocol::ErrorCode::None; 2] {
            break;
        }
        assert!(
            errors.iter().copied().all(common::groups::moved) && Instant::now() < deadline,
            "{errors:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let label = "group=\"billing \\\"eu\\\"\"";
    let lag_of = |partition: &str| {
        [
            "rill_consumer_group_lag{".to_string(),
            label.to_string(),
            format!("partition=\"{partition}\""),
        ]
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let samples = loop {
        let samples = parse_prometheus(&http_get(http, "/metrics").1);
        let found = |p: &str| {
            let parts = lag_of(p);
            sample(
                &samples,
                &parts.iter().map(String::as_str).collect::<Vec<_>>(),
            )
        };
        if found("0") == Some(18.0) && found("1") == Some(0.0) {
            break samples;
        }
        assert!(
            Instant::now() < deadline,
            "lag not reported: {:?}",
            samples
                .iter()
                .filter(|(k, _)| k.starts_with("rill_consumer_group"))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        sample(
            &samples,
            &[
                "rill_consumer_group_committed_offset{",
                label,
                "partition=\"0\""
            ]
        ),
        Some(12.0)
    );

    // More records: the lag grows with the high watermark.
    let p = client.produce("lagged", 1, -1, batch(&values(0..5), now_ms()));
    assert!(p.error.is_ok(), "{:?}", p.error);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let samples = parse_prometheus(&http_get(http, "/metrics").1);
        let parts = lag_of("1");
        let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
        if sample(&samples, &parts) == Some(5.0) {
            break;
        }
        assert!(Instant::now() < deadline, "{:?}", sample(&samples, &parts));
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn hostile_http_requests_are_answered_or_closed_and_the_broker_serves_on() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path());
    let http = broker.http_addr();
    let status = |response: &str| response.split(' ').nth(1).unwrap_or_default().to_string();

    let huge = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(20_000));
    assert_eq!(status(&http_raw(http, huge.as_bytes())), "431");
    assert_eq!(
        status(&http_raw(http, b"POST /metrics HTTP/1.1\r\n\r\n")),
        "405"
    );
    assert_eq!(status(&http_raw(http, b"\x00\x01\x02\x03\r\n\r\n")), "400");
    assert_eq!(http_get(http, "/nope").0, 404);

    // A client that sends nothing is closed once its time is up.
    let mut idle = TcpStream::connect(http).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 16];
    assert_eq!(idle.read(&mut buf).unwrap_or(0), 0, "closed, nothing sent");
    assert!(started.elapsed() < Duration::from_secs(30));

    // Past the limit of connections, one is closed unanswered (within the
    // 2 s the held ones have to send their heads), and the listener serves
    // on once they go.
    let held: Vec<TcpStream> = (0..64).map(|_| TcpStream::connect(http).unwrap()).collect();
    assert_eq!(http_get_status_or_none(http), None, "the 65th is closed");
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(30);
    while http_get_status_or_none(http).is_none_or(|s| s != 200) {
        assert!(Instant::now() < deadline, "the listener serves again");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut client = broker.connect();
    assert!(client.create_topic("after", 1, &[]).error.is_ok());
}

/// `GET /health/live`'s status, or `None` when the connection is closed
/// before an answer (the listener full).
fn http_get_status_or_none(addr: std::net::SocketAddr) -> Option<u16> {
    let response = http_raw(addr, b"GET /health/live HTTP/1.1\r\n\r\n");
    response.split(' ').nth(1).and_then(|s| s.parse().ok())
}

#[test]
fn ready_says_why_not_when_no_controller_is_known() {
    let mut cluster = TestCluster::start(3);
    let http = cluster.http_addr(1).unwrap();
    wait_ready(http);
    cluster.kill(2);
    cluster.kill(3);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = http_get(http, "/health/ready");
        if status == 503 {
            assert_eq!(body, "not ready: no controller known\n");
            break;
        }
        assert!(Instant::now() < deadline, "still ready alone: {body}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(http_get(http, "/health/live").0, 200);
}

#[test]
fn rill_cluster_health_exits_0_when_healthy_and_1_with_a_broker_down() {
    let mut cluster = TestCluster::start(3);
    cluster.create_topic("watched", 2);
    let health = |c: &TestCluster| run_rill(&c.bootstrap(), &["cluster", "health"], "");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = health(&cluster);
        if out.status.code() == Some(0) {
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(text.starts_with("healthy: yes\n"), "{text}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never healthy: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    cluster.kill(3);
    let out = health(&cluster);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.starts_with("healthy: no\n"), "{text}");
    assert!(text.contains("brokers down: 3 ("), "{text}");
    let under = text
        .lines()
        .find_map(|l| l.strip_prefix("under-replicated partitions: "))
        .unwrap();
    assert!(under.contains("watched/") && under.contains('3'), "{text}");
    let json = run_rill(
        &cluster.bootstrap(),
        &["cluster", "health", "--format", "json"],
        "",
    );
    assert_eq!(json.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["healthy"], false);
    assert_eq!(v["brokers_down"], serde_json::json!([3]));
}

#[test]
fn a_new_controller_leader_counts_as_a_leader_change_on_the_survivors() {
    let mut cluster = TestCluster::start(3);
    let controller = cluster.metadata_from_any().unwrap().controller_id as usize;
    let survivor = (1..=3).find(|&i| i != controller).unwrap();
    let http = cluster.http_addr(survivor).unwrap();
    cluster.kill(controller);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let samples = parse_prometheus(&http_get(http, "/metrics").1);
        if sample(&samples, &["rill_controller_leader_changes_total"]).unwrap_or(0.0) >= 1.0 {
            break;
        }
        assert!(Instant::now() < deadline, "no controller change counted");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_follower_that_stops_answering_makes_its_partitions_under_replicated_until_it_catches_up() {
    let mut cluster = TestCluster::start(3);
    cluster.create_topic("lagging", 1);
    cluster.wait_for("a leader", 60, |c| c.leader_of("lagging", 0).is_some());
    let leader = cluster.leader_of("lagging", 0).unwrap();
    let follower = (1..=3).find(|&i| i != leader).unwrap();
    let http = cluster.http_addr(leader).unwrap();
    let under = |http| {
        let samples = parse_prometheus(&http_get(http, "/metrics").1);
        sample(&samples, &["rill_partitions_under_replicated"]).unwrap_or(0.0)
    };
    cluster.pause(follower);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut round = 0;
    // Records keep coming, so the stopped follower falls behind the commit
    // for longer than the threshold; scrapes are what the tracking sees.
    while under(http) < 1.0 {
        cluster.produce_acknowledged("lagging", 0, &values(round * 10..round * 10 + 10));
        round += 1;
        assert!(Instant::now() < deadline, "never under-replicated");
        std::thread::sleep(Duration::from_millis(500));
    }
    cluster.resume(follower);
    let deadline = Instant::now() + Duration::from_secs(60);
    while under(http) > 0.0 {
        assert!(
            Instant::now() < deadline,
            "still under-replicated after resuming"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn group_lag_counts_partitions_led_by_other_brokers() {
    let cluster = TestCluster::start_with(3, &["--group-lag-refresh-ms", "200"]);
    // Three partitions of one replica each, spread over the brokers: the
    // group's coordinator leads at most one of them.
    let mut client = Client::connect(cluster.addr(1));
    let r = client.create_topic("spread", 3, &[]);
    assert!(r.error.is_ok(), "{:?}", r.error);
    for partition in 0..3 {
        cluster.produce_acknowledged("spread", partition, &values(0..10));
    }
    let group = "spread-readers";
    let addrs: Vec<_> = (1..=3).map(|id| cluster.addr(id)).collect();
    let commit = common::groups::commit_request(
        group,
        ("", rill_client::protocol::messages::NO_MEMBER_EPOCH),
        "spread",
        &[(0, 1), (1, 2), (2, 3)],
        None,
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut coordinator = common::groups::coordinator(&addrs, group);
        let errors =
            common::groups::commit_errors(common::groups::try_call(&mut coordinator, &commit))
                .unwrap_or_default();
        if errors == [rill_client::protocol::ErrorCode::None; 3] {
            break;
        }
        assert!(Instant::now() < deadline, "{errors:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // The coordinator reports every partition; the others none.
        let reported: Vec<Vec<Option<f64>>> = (1..=3)
            .map(|id| {
                let samples =
                    parse_prometheus(&http_get(cluster.http_addr(id).unwrap(), "/metrics").1);
                (0..3)
                    .map(|p| {
                        let partition = format!("partition=\"{p}\"");
                        sample(
                            &samples,
                            &[
                                "rill_consumer_group_lag{",
                                "group=\"spread-readers\"",
                                &partition,
                            ],
                        )
                    })
                    .collect()
            })
            .collect();
        let wanted = vec![Some(9.0), Some(8.0), Some(7.0)];
        if reported.iter().filter(|r| **r == wanted).count() == 1
            && reported
                .iter()
                .filter(|r| r.iter().all(Option::is_none))
                .count()
                == 2
        {
            break;
        }
        assert!(Instant::now() < deadline, "{reported:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
