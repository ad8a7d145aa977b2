//! The idempotent producer's batches at real brokers: a retried batch is
//! stored once and answered with its first offsets, on one broker, after a
//! SIGKILL and restart, and at a new leader after the one that acknowledged
//! it was SIGKILLed; a sequence gap is refused `OutOfOrderSequence` and an
//! old epoch `ProducerFenced`.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::cluster::TestCluster;
use common::{BrokerProcess, Client, producer_batch, read_all, values};
use rill_client::protocol::ErrorCode;
use rill_client::{Cluster, init_producer_id};

const TOPIC: &str = "orders";

fn new_producer_id(bootstrap: &str) -> i64 {
    common::runtime().block_on(async {
        let cluster = Cluster::new(bootstrap, "idempotence-test").unwrap();
        init_producer_id(&cluster, Duration::from_secs(30))
            .await
            .unwrap()
            .producer_id
    })
}

fn stored_values(client: &mut Client) -> Vec<String> {
    read_all(client, TOPIC, 0)
        .into_iter()
        .map(|(_, v)| v)
        .collect()
}

#[test]
fn a_retried_batch_is_stored_once_and_answered_with_its_first_offset() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path());
    let mut client = broker.connect();
    assert!(client.create_topic(TOPIC, 1, &[]).error.is_ok());
    let id = new_producer_id(&broker.addr.to_string());

    let first = producer_batch(&values(0..3), id, 0, 0);
    let r = client.produce(TOPIC, 0, -1, first.clone());
    assert_eq!((r.error, r.base_offset), (ErrorCode::None, 0));
    // A batch of no producer in between takes offsets as ever.
    let plain = client.produce(TOPIC, 0, -1, common::batch(&values(100..102), 1));
    assert_eq!((plain.error, plain.base_offset), (ErrorCode::None, 3));
    // The same batch again, as a producer sends it after a lost answer.
    let again = client.produce(TOPIC, 0, -1, first.clone());
    assert_eq!((again.error, again.base_offset), (ErrorCode::None, 0));
    let again = client.produce(TOPIC, 0, 1, first);
    assert_eq!((again.error, again.base_offset), (ErrorCode::None, 0));
    // The next batch continues the sequence and is stored after the rest.
    let next = client.produce(TOPIC, 0, -1, producer_batch(&values(3..5), id, 0, 3));
    assert_eq!((next.error, next.base_offset), (ErrorCode::None, 5));

    let mut expected = values(0..3);
    expected.extend(values(100..102));
    expected.extend(values(3..5));
    assert_eq!(stored_values(&mut client), expected);

    // SIGKILLed and started again, the broker rebuilds its producers from
    // the log: the retry is still recognised.
    broker.kill();
    let broker = BrokerProcess::start(dir.path());
    let mut client = broker.connect();
    let mut retry = None;
    for _ in 0..300 {
        let r = client.produce(TOPIC, 0, -1, producer_batch(&values(3..5), id, 0, 3));
        if r.error != ErrorCode::NotLeader {
            retry = Some(r);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let retry = retry.expect("the partition has a leader again");
    assert_eq!((retry.error, retry.base_offset), (ErrorCode::None, 5));
    assert_eq!(stored_values(&mut client), expected);
}

#[test]
fn a_gap_is_out_of_order_an_old_epoch_is_fenced_and_a_new_epoch_starts_at_zero() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path());
    let mut client = broker.connect();
    assert!(client.create_topic(TOPIC, 1, &[]).error.is_ok());
    let id = new_producer_id(&broker.addr.to_string());

    let ok = client.produce(TOPIC, 0, -1, producer_batch(&values(0..2), id, 0, 0));
    assert_eq!(ok.error, ErrorCode::None);
    let gap = client.produce(TOPIC, 0, -1, producer_batch(&values(5..6), id, 0, 5));
    assert_eq!(gap.error, ErrorCode::OutOfOrderSequence);
    let not_zero = client.produce(TOPIC, 0, -1, producer_batch(&values(5..6), id, 1, 4));
    assert_eq!(not_zero.error, ErrorCode::OutOfOrderSequence);
    let bumped = client.produce(TOPIC, 0, -1, producer_batch(&values(2..3), id, 1, 0));
    assert_eq!((bumped.error, bumped.base_offset), (ErrorCode::None, 2));
    let old = client.produce(TOPIC, 0, -1, producer_batch(&values(9..10), id, 0, 2));
    assert_eq!(old.error, ErrorCode::ProducerFenced);
    // A batch claiming a producer id but no sequence is refused outright.
    let mut half = producer_batch(&values(9..10), id, 0, 0).to_vec();
    rill_storage::batch::restamp_producer(&mut half, 0, -1);
    let refused = client.produce(TOPIC, 0, -1, half.into());
    assert_eq!(refused.error, ErrorCode::InvalidRecord);
    // Nothing refused was stored.
    assert_eq!(stored_values(&mut client), values(0..3));
}

#[test]
fn a_batch_acknowledged_by_a_leader_killed_after_is_not_stored_again_by_the_next() {
    let mut c = TestCluster::start(3);
    c.create_topic(TOPIC, 1);
    c.wait_for("a leader", 30, |c| c.leader_of(TOPIC, 0).is_some());
    let id = new_producer_id(&c.bootstrap());
    let leader = c.leader_of(TOPIC, 0).unwrap();
    let mut client = Client::connect(c.addr(leader));
    let first = producer_batch(&values(0..4), id, 0, 0);
    let r = client.produce(TOPIC, 0, -1, first.clone());
    assert_eq!((r.error, r.base_offset), (ErrorCode::None, 0));
    let second = producer_batch(&values(4..6), id, 0, 4);
    let r = client.produce(TOPIC, 0, -1, second.clone());
    assert_eq!((r.error, r.base_offset), (ErrorCode::None, 4));

    // The answers are lost with the leader: the producer sends both again
    // to whichever broker leads next.
    c.kill(leader);
    c.wait_for("a new leader", 30, |c| {
        c.leader_of(TOPIC, 0).is_some_and(|l| l != leader)
    });
    let mut answers = Vec::new();
    c.wait_for("the retries to be answered", 30, |c| {
        let Some(now) = c.leader_of(TOPIC, 0) else {
            return false;
        };
        let mut client = Client::connect(c.addr(now));
        let a = client.produce(TOPIC, 0, -1, first.clone());
        let b = client.produce(TOPIC, 0, -1, second.clone());
        answers = vec![(a.error, a.base_offset), (b.error, b.base_offset)];
        a.error.is_ok() && b.error.is_ok()
    });
    assert_eq!(answers, vec![(ErrorCode::None, 0), (ErrorCode::None, 4)]);
    let now = c.leader_of(TOPIC, 0).unwrap();
    let mut client = Client::connect(c.addr(now));
    let next = client.produce(TOPIC, 0, -1, producer_batch(&values(6..7), id, 0, 6));
    assert_eq!((next.error, next.base_offset), (ErrorCode::None, 6));
    assert_eq!(stored_values(&mut client), values(0..7));
}
