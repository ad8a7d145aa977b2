//! `/health/ready` turns ready only once recovery is done: a broker
//! SIGKILLed with hundreds of partitions holding acknowledged records
//! answers `/health/live` while its logs recover and `/health/ready` with
//! 503 and the reason, and the first moment it answers 200 every
//! partition is served with every record it had acknowledged.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::cluster::free_port;
use common::*;
use rill_client::protocol::messages::*;
use rill_client::protocol::*;

const TOPIC: &str = "recovered";
const PARTITIONS: u32 = 400;

/// Every partition's end offset, as the broker at `addr` answers it.
fn end_offsets(addr: std::net::SocketAddr) -> Vec<(u32, ErrorCode, i64)> {
    let mut c = Client::connect(addr);
    let (_, r) = c.call(Request::ListOffsets(ListOffsetsRequest {
        topics: vec![ListOffsetsTopic {
            name: TOPIC.into(),
            partitions: (0..PARTITIONS)
                .map(|partition| ListOffsetsPartition {
                    partition,
                    timestamp_ms: LATEST_TIMESTAMP,
                })
                .collect(),
        }],
    }));
    let Some(Response::ListOffsets(r)) = r else {
        panic!("list offsets response")
    };
    r.topics[0]
        .partitions
        .iter()
        .map(|p| (p.partition, p.error, p.offset))
        .collect()
}

#[test]
fn ready_comes_only_once_every_partition_has_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let (client_port, http_port) = (free_port(), free_port());
    let args: Vec<String> = [
        "--listen",
        &format!("127.0.0.1:{client_port}"),
        "--http-listen",
        &format!("127.0.0.1:{http_port}"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let broker = BrokerProcess::start_with(dir.path(), &args);
    let mut c = Client::connect(broker.addr);
    let created = c.create_topic(TOPIC, PARTITIONS, &[]);
    assert!(created.error.is_ok(), "{created:?}");
    for p in 0..PARTITIONS {
        let r = c.produce(TOPIC, p, -1, batch(&[format!("record-{p}")], 1));
        assert!(r.error.is_ok(), "partition {p}: {:?}", r.error);
    }
    let before = end_offsets(broker.addr);
    assert!(
        before.iter().all(|(_, e, o)| e.is_ok() && *o == 1),
        "{before:?}"
    );
    broker.kill();

    // Started again, asked from the first moment until it is ready.
    let http: std::net::SocketAddr = ([127, 0, 0, 1], http_port).into();
    let starting = {
        let (dir, args) = (dir.path().to_path_buf(), args.clone());
        std::thread::spawn(move || BrokerProcess::start_with(&dir, &args))
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut not_ready = Vec::new();
    loop {
        assert!(
            Instant::now() < deadline,
            "not ready within 120 s: {not_ready:?}"
        );
        let Ok(stream) = std::net::TcpStream::connect_timeout(&http, Duration::from_secs(1)) else {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        };
        drop(stream);
        let (status, body) = http_get(http, "/health/ready");
        if status == 200 {
            break;
        }
        assert_eq!(status, 503, "{body}");
        assert!(body.starts_with("not ready: "), "{body}");
        assert_eq!(
            http_get(http, "/health/live").0,
            200,
            "live while recovering"
        );
        not_ready.push(body);
        std::thread::sleep(Duration::from_millis(5));
    }
    // Ready: the client port serves, and every partition has every
    // record it had acknowledged.
    let client: std::net::SocketAddr = ([127, 0, 0, 1], client_port).into();
    assert_eq!(end_offsets(client), before);
    eprintln!(
        "not ready {} times before ready, first: {:?}",
        not_ready.len(),
        not_ready.first()
    );
    assert!(
        !not_ready.is_empty(),
        "recovering {PARTITIONS} replicas, the broker was never seen not ready"
    );
    let broker = starting.join().unwrap();
    broker.terminate();
}
