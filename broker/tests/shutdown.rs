//! A broker stopped with SIGTERM drains its connections before it stops:
//! every request it had routed is answered, nothing else takes effect,
//! each connection closes cleanly, the process exits 0 having joined
//! every thread, and what it acknowledged is there after a restart.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{BrokerProcess, batch, fetch_request, read_all};
use rill_client::protocol::messages::*;
use rill_client::protocol::*;

/// The SIGTERMed broker's exit status is 0 and its log says every thread
/// was joined.
fn assert_clean_stop(broker: &mut BrokerProcess) {
    let status = broker
        .wait_exit(Duration::from_secs(60))
        .expect("the broker exits after SIGTERM");
    assert!(status.success(), "exit status after SIGTERM: {status}");
    let lines = broker.final_log_lines(Duration::from_secs(10));
    assert!(
        lines
            .iter()
            .any(|l| l.contains(rill_broker::threads::ALL_JOINED)),
        "every thread joined: {:?}",
        &lines[lines.len().saturating_sub(20)..]
    );
}

/// A produce response's correlation id and base offset; it must be a
/// success.
fn produced(payload: bytes::Bytes) -> (u32, u64) {
    let (h, r) = decode_response(payload, ApiKey::Produce).unwrap();
    let Some(Response::Produce(mut r)) = r else {
        panic!("a produce response")
    };
    let p = r.topics.remove(0).partitions.remove(0);
    assert_eq!(p.error, ErrorCode::None, "a produce answered with an error");
    (h.correlation_id, p.base_offset)
}

#[test]
fn produces_in_flight_at_sigterm_are_answered_and_nothing_unanswered_is_written() {
    const PRODUCES: u64 = 300;
    let dir = tempfile::tempdir().unwrap();
    let mut broker = BrokerProcess::start(dir.path());
    let mut c = broker.connect();
    assert_eq!(c.create_topic("t", 1, &[]).error, ErrorCode::None);
    // Pipelined: every request is in the socket before the first answer
    // is read, one record each, in order.
    let mut ids = Vec::new();
    for i in 0..PRODUCES {
        let request = Request::Produce(ProduceRequest {
            acks: -1,
            timeout_ms: 30_000,
            topics: vec![ProduceTopic {
                name: "t".into(),
                partitions: vec![ProducePartition {
                    partition: 0,
                    records: vec![batch(&[format!("value-{i}")], 1000)],
                }],
            }],
        });
        ids.push(c.send(&request));
    }
    // Once the first is answered the connection is at work on the rest.
    let mut answered: Vec<(u32, u64)> = Vec::new();
    let first = c.next_frame().unwrap().expect("the first answer");
    answered.push(produced(first));
    broker.sigterm();
    loop {
        match c.next_frame() {
            Ok(Some(payload)) => answered.push(produced(payload)),
            Ok(None) => break,
            Err(e) => panic!("the connection closes cleanly after its answers: {e}"),
        }
    }
    drop(c);
    assert_clean_stop(&mut broker);
    // Requests are routed in order and every routed one is answered: the
    // answers are for the first requests, each at its own offset.
    let k = answered.len();
    answered.sort();
    let expected: Vec<(u32, u64)> = ids[..k].iter().copied().zip(0..k as u64).collect();
    assert_eq!(
        answered, expected,
        "the first {k} requests answered, in order"
    );
    // Exactly what was acknowledged is in the log: no request the broker
    // did not answer took effect.
    drop(broker);
    let broker = BrokerProcess::start(dir.path());
    let mut c = broker.connect();
    let stored = read_all(&mut c, "t", 0);
    let acknowledged: Vec<(u64, String)> =
        (0..k as u64).map(|i| (i, format!("value-{i}"))).collect();
    assert_eq!(stored, acknowledged);
    broker.terminate();
}

#[test]
fn a_fetch_parked_at_sigterm_is_answered_at_once_and_the_connection_closes() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = BrokerProcess::start(dir.path());
    let mut c = broker.connect();
    assert_eq!(c.create_topic("t", 1, &[]).error, ErrorCode::None);
    let r = c.produce("t", 0, -1, batch(&common::values(0..3), 1000));
    assert_eq!((r.error, r.base_offset), (ErrorCode::None, 0));
    // A fetch past the end parks for up to its wait (longer than the
    // broker's drain deadline); a request after it is answered first, which
    // shows the fetch was routed before the signal.
    let fetch = c.send(&fetch_request("t", 0, 3, 30_000));
    let versions = c.send(&Request::ApiVersions);
    let (h, _) = decode_response(c.next_frame().unwrap().unwrap(), ApiKey::ApiVersions).unwrap();
    assert_eq!(
        h.correlation_id, versions,
        "the parked fetch is not answered yet"
    );
    broker.sigterm();
    let payload = c
        .next_frame()
        .unwrap()
        .expect("the parked fetch is answered before the connection closes");
    let (h, r) = decode_response(payload, ApiKey::Fetch).unwrap();
    assert_eq!(h.correlation_id, fetch);
    let Some(Response::Fetch(mut r)) = r else {
        panic!("a fetch response")
    };
    let p = r.topics.remove(0).partitions.remove(0);
    assert_eq!(p.error, ErrorCode::None);
    assert_eq!(p.high_watermark, 3);
    assert!(p.records.is_empty(), "nothing past the end");
    assert!(
        c.next_frame().unwrap().is_none(),
        "then the connection closes cleanly"
    );
    drop(c);
    assert_clean_stop(&mut broker);
    drop(broker);
    let broker = BrokerProcess::start(dir.path());
    let mut c = broker.connect();
    assert_eq!(read_all(&mut c, "t", 0).len(), 3, "acknowledged, then kept");
    broker.terminate();
}

#[test]
fn an_idle_connection_is_closed_cleanly_at_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = BrokerProcess::start(dir.path());
    let mut c = broker.connect();
    let (_, r) = c.call(Request::ApiVersions);
    assert!(r.is_some());
    broker.sigterm();
    assert!(
        c.next_frame().unwrap().is_none(),
        "closed without a stray frame or a reset"
    );
    drop(c);
    assert_clean_stop(&mut broker);
}
