//! Peer authentication as a user meets it: a broker with peers starts only
//! with a private cluster secret (or an explicit `--insecure-peers`), and
//! a process that poses as a broker on the peer port gets nothing while
//! the cluster keeps serving; brokers register their addresses over the
//! peer connections, and a client cannot; and even a peer that holds the
//! secret cannot stop a broker with a forged append.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::Client;
use common::cluster::{TestCluster, free_port, write_secret};
use rill_client::protocol::messages::*;
use rill_client::protocol::{ErrorCode, Request, Response};
use rill_replication::BrokerId;
use rill_replication::handshake::{CHALLENGE_BYTES, Hello, PROOF_BYTES};
use rill_replication::ids::{ClusterId, Incarnation};

/// Runs `rill-broker` as broker 1 of two peers on free ports, with
/// `args`, until it exits on its own; see [`common::run_to_exit`].
fn run_to_exit(data_dir: &std::path::Path, args: &[&str]) -> (std::process::ExitStatus, String) {
    let peers = format!("1=127.0.0.1:{},2=127.0.0.1:{}", free_port(), free_port());
    let mut all = vec!["--node-id", "1", "--peers", &peers];
    all.extend_from_slice(args);
    common::run_to_exit(data_dir, &all)
}

#[test]
fn a_broker_with_peers_and_no_secret_refuses_to_start_with_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let (status, err) = run_to_exit(dir.path(), &[]);
    assert!(!status.success());
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains("--cluster-secret-file"), "{err}");
    assert!(err.contains("--insecure-peers"), "{err}");
    assert!(!err.contains("listening on"), "{err}");
}

#[test]
fn a_cluster_secret_others_can_read_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    write_secret(&secret);
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (status, err) = run_to_exit(
        &dir.path().join("data"),
        &["--cluster-secret-file", secret.to_str().unwrap()],
    );
    assert!(!status.success());
    assert!(err.contains("chmod 600"), "{err}");
    assert!(!err.contains("listening on"), "{err}");
}

#[test]
fn a_process_posing_as_a_broker_gets_no_frame_and_the_cluster_keeps_serving() {
    let c = TestCluster::start(3);
    c.create_topic("posed", 1);
    // Brokers 2 and 3 accept broker 1's dial: pose as broker 1 to each,
    // straight on its peer port, with a proof made without the secret.
    let mut posers = Vec::new();
    for to in 2..=3 {
        let mut s = TcpStream::connect(c.peer_addr(to)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let hello = Hello {
            from: BrokerId(1),
            to: BrokerId(to as u64),
            incarnation: Incarnation(3),
            known: Incarnation::UNKNOWN,
            cluster: ClusterId::UNKNOWN,
            nonce: [3; 32],
        };
        s.write_all(&hello.encode()).unwrap();
        let mut challenge = [0u8; CHALLENGE_BYTES];
        s.read_exact(&mut challenge).unwrap();
        s.write_all(&[0x55; PROOF_BYTES]).unwrap();
        posers.push(s);
    }
    // Records still replicate over broker 1's real connections.
    c.produce_acknowledged("posed", 0, &common::values(0..20));
    for mut s in posers {
        let mut got = Vec::new();
        // Closed (EOF or reset) without one byte past the challenge.
        let _ = s.read_to_end(&mut got);
        assert!(got.is_empty(), "the poser was sent {} bytes", got.len());
    }
    c.wait_for("every replica to hold the records", 30, |c| {
        (1..=3).all(|id| {
            c.status(id).is_some_and(|s| {
                s.replicas
                    .iter()
                    .any(|r| r.topic == "posed" && r.high_watermark >= 20)
            })
        })
    });
}

#[test]
fn register_broker_on_the_client_port_is_refused_and_the_address_stays() {
    let dir = tempfile::tempdir().unwrap();
    let broker = common::BrokerProcess::start(dir.path());
    let mut client = broker.connect();
    let metadata = |client: &mut Client| {
        let (_, r) = client.call(Request::Metadata(MetadataRequest { topics: None }));
        let Some(Response::Metadata(m)) = r else {
            panic!("a metadata response")
        };
        m.brokers
    };
    let before = metadata(&mut client);
    assert_eq!(before.len(), 1, "{before:?}");
    // A client tries to point everyone at its own host.
    let (_, r) = client.call(Request::RegisterBroker(BrokerMetadata {
        broker_id: before[0].broker_id,
        host: "203.0.113.9".into(),
        port: 1,
    }));
    let Some(Response::RegisterBroker(r)) = r else {
        panic!("a register response")
    };
    assert_eq!(r.error, ErrorCode::InvalidRequest);
    assert_eq!(metadata(&mut client), before);
}

#[test]
fn a_forged_append_conflicting_with_a_committed_entry_is_refused_and_the_broker_keeps_serving() {
    use raft::eraftpb::{Entry, Message, MessageType};
    use rill_replication::handshake::{ClusterSecret, End, dial};
    use rill_replication::ids::{ClusterId, Incarnation};
    use rill_replication::wire::encode_frame;

    let c = TestCluster::start(3);
    c.create_topic("forged", 1);
    let records = common::values(0..20);
    c.produce_acknowledged("forged", 0, &records);
    // Broker 2's replica as it stands: its group, term and commit.
    let replica = |c: &TestCluster| {
        c.status(2).and_then(|s| {
            s.replicas
                .into_iter()
                .find(|r| r.topic == "forged" && r.commit == r.last_index && r.commit > 1)
        })
    };
    c.wait_for("broker 2 to hold the records", 30, |c| replica(c).is_some());
    let before = replica(&c).unwrap();

    // Someone holding the secret connects to broker 2 as broker 1 and
    // rewrites its committed entry in a later term. raft-rs would abort on
    // it ("conflict with committed entry"), at every restart again.
    let secret = ClusterSecret::load(&c.secret_file()).unwrap();
    common::runtime().block_on(async {
        let mut s = tokio::net::TcpStream::connect(c.peer_addr(2))
            .await
            .unwrap();
        let me = End {
            id: BrokerId(1),
            incarnation: Incarnation(1),
            cluster: ClusterId::UNKNOWN,
        };
        dial(&mut s, &secret, me, BrokerId(2), Incarnation::UNKNOWN)
            .await
            .unwrap();
        let mut m = Message {
            from: 1,
            to: 2,
            term: before.term + 1,
            index: before.commit - 1,
            log_term: before.term,
            commit: before.commit,
            ..Message::default()
        };
        m.set_msg_type(MessageType::MsgAppend);
        m.set_entries(
            vec![Entry {
                term: before.term + 1,
                index: before.commit,
                data: common::batch(&common::values(100..101), 1),
                ..Entry::default()
            }]
            .into(),
        );
        let mut payload = bytes::BytesMut::new();
        encode_frame(
            BrokerId(1),
            &[(rill_replication::GroupId(before.group), m)],
            &mut payload,
        );
        let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&payload);
        tokio::io::AsyncWriteExt::write_all(&mut s, &frame)
            .await
            .unwrap();
        tokio::io::AsyncWriteExt::flush(&mut s).await.unwrap();
        // Held open a moment so the frame is read before the close.
        let mut buf = [0u8; 1];
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            tokio::io::AsyncReadExt::read(&mut s, &mut buf),
        )
        .await;
    });

    // Broker 2 is still up, its committed entries unchanged, and the
    // partition keeps taking and serving records.
    let more = common::values(20..40);
    c.produce_acknowledged("forged", 0, &more);
    c.wait_for("broker 2 to take the new records", 30, |c| {
        c.status(2).is_some_and(|s| {
            s.replicas
                .iter()
                .any(|r| r.topic == "forged" && r.high_watermark >= 40)
        })
    });
    let mut client = Client::connect(c.addr(2));
    let (_, r) = client.call(Request::ApiVersions);
    assert!(r.is_some(), "broker 2 answers");
    // Nothing committed changed: the leader serves both batches in order.
    let leader = c.leader_of("forged", 0).unwrap();
    let mut client = Client::connect(c.addr(leader));
    let got: Vec<String> = common::read_all(&mut client, "forged", 0)
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    assert_eq!(got, [records, more].concat());
}
