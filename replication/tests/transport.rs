//! The peer transport between two real sockets on 127.0.0.1: messages
//! arrive whole and in order, however much one round sends; a slow
//! receiver holds a backlog bounded in bytes, and heartbeats overtake the
//! appends queued before them; a connection that does not speak the
//! protocol is closed without harm; entries given file spans are sent
//! from their files; only a broker holding the cluster secret gets a
//! peer's traffic.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use raft::eraftpb::{Entry, Message, MessageType};
use rill_replication::handshake::{
    CHALLENGE_BYTES, ClusterSecret, Hello, MemoryPeerBook, PROOF_BYTES, PeerIdentity,
};
use rill_replication::ids::{ClusterId, Incarnation};
use rill_replication::transport::{
    Dialling, FRAME_TARGET_BYTES, INBOUND_BYTES_MAX, Inbound, Transport,
};
use rill_replication::{BrokerId, GroupId, Outgoing};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

fn append(from: u64, to: u64, index: u64, data_bytes: usize) -> Message {
    let mut m = Message {
        from,
        to,
        term: 1,
        index,
        ..Message::default()
    };
    m.set_msg_type(MessageType::MsgAppend);
    m.set_entries(
        vec![Entry {
            term: 1,
            index: index + 1,
            data: Bytes::from(vec![index as u8; data_bytes]),
            ..Entry::default()
        }]
        .into(),
    );
    m
}

fn secret(text: &str) -> ClusterSecret {
    ClusterSecret::new(text.as_bytes()).unwrap()
}

/// A broker's identity with `secret`, a fresh incarnation and no memory
/// of its peers.
fn identity(secret: ClusterSecret) -> PeerIdentity {
    PeerIdentity {
        secret,
        incarnation: Incarnation::fresh(),
        cluster: std::sync::Arc::default(),
        book: std::sync::Arc::new(MemoryPeerBook::default()),
    }
}

/// The secret both brokers of [`pair`] hold.
const SECRET: &str = "a cluster secret for the transport tests";

/// Broker 1's transport, broker 2's inbound messages and peer address, and
/// what must stay alive for the test's length.
async fn pair() -> (
    Transport,
    mpsc::Receiver<Inbound>,
    std::net::SocketAddr,
    (Transport, mpsc::Receiver<Inbound>),
) {
    pair_with(identity(secret(SECRET)), identity(secret(SECRET))).await
}

/// [`pair`], with each broker's identity given.
async fn pair_with(
    identity1: PeerIdentity,
    identity2: PeerIdentity,
) -> (
    Transport,
    mpsc::Receiver<Inbound>,
    std::net::SocketAddr,
    (Transport, mpsc::Receiver<Inbound>),
) {
    let l1 = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let l2 = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (a1, a2) = (l1.local_addr().unwrap(), l2.local_addr().unwrap());
    let peers: BTreeMap<BrokerId, String> =
        [(BrokerId(1), a1.to_string()), (BrokerId(2), a2.to_string())].into();
    let (tx1, _rx1) = mpsc::channel(1024);
    let (tx2, rx2) = mpsc::channel(1024);
    let t1 = Transport::start(
        BrokerId(1),
        l1,
        peers.clone(),
        Dialling::HigherIds,
        tx1,
        identity1,
    );
    let t2 = Transport::start(BrokerId(2), l2, peers, Dialling::HigherIds, tx2, identity2);
    (t1, rx2, a2, (t2, _rx1))
}

/// Waits until a probe from broker 1 reaches broker 2, then drains.
async fn connected(t1: &Transport, rx2: &mut mpsc::Receiver<Inbound>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        t1.send(vec![Outgoing {
            to: BrokerId(2),
            group: GroupId(1),
            message: append(1, 2, 0, 8),
            spans: Vec::new(),
        }]);
        if tokio::time::timeout(Duration::from_millis(100), rx2.recv())
            .await
            .is_ok()
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no connection");
    }
    while tokio::time::timeout(Duration::from_millis(200), rx2.recv())
        .await
        .is_ok()
    {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_larger_than_a_frame_arrives_whole_and_in_order() {
    let (t1, mut rx2, _, _keep) = pair().await;
    connected(&t1, &mut rx2).await;
    // 80 MiB in one round, more than the largest frame.
    let out: Vec<Outgoing> = (1..=80)
        .map(|i| Outgoing {
            to: BrokerId(2),
            group: GroupId(7),
            message: append(1, 2, i, 1 << 20),
            spans: Vec::new(),
        })
        .collect();
    assert!(t1.send(out).is_empty(), "nothing dropped");
    let mut got = Vec::new();
    while got.len() < 80 {
        let inbound = tokio::time::timeout(Duration::from_secs(30), rx2.recv())
            .await
            .expect("the rest of the round arrives")
            .unwrap();
        assert_eq!(inbound.from, BrokerId(1));
        for (g, m) in inbound.messages {
            assert_eq!(g, GroupId(7));
            assert_eq!(m.get_entries()[0].data.len(), 1 << 20);
            got.push(m.index);
        }
    }
    assert_eq!(got, (1..=80).collect::<Vec<u64>>(), "in order, once each");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_with_file_spans_are_sent_from_their_files() {
    use std::io::Write;
    use std::sync::Arc;
    let (t1, mut rx2, _, _keep) = pair().await;
    connected(&t1, &mut rx2).await;
    // 40 entries of 1 MiB in one file, more than the sockets buffer: the
    // sender waits on a full socket between `sendfile` calls. The entries
    // in memory are zeros, the file holds their real bytes: what arrives
    // is what the file holds. Every third entry has no span and goes from
    // memory, between the others.
    let entry_bytes = 1usize << 20;
    let content = |i: u64| -> Vec<u8> {
        (0..entry_bytes)
            .map(|k| (k as u64).wrapping_mul(31).wrapping_add(i) as u8)
            .collect()
    };
    let mut file = tempfile::tempfile().unwrap();
    for i in 1..=40 {
        file.write_all(&content(i)).unwrap();
    }
    let file = Arc::new(file);
    let out: Vec<Outgoing> = (1..=40u64)
        .map(|i| {
            let mut message = append(1, 2, i, entry_bytes);
            let from_memory = i % 3 == 0;
            if from_memory {
                let mut entries = message.take_entries();
                entries[0].data = Bytes::from(content(i));
                message.set_entries(entries);
            }
            let span = rill_storage::FileSpan {
                file: Arc::clone(&file),
                offset: (i - 1) * entry_bytes as u64,
                len: entry_bytes as u64,
            };
            Outgoing {
                to: BrokerId(2),
                group: GroupId(7),
                message,
                spans: if from_memory {
                    Vec::new()
                } else {
                    vec![Some(span)]
                },
            }
        })
        .collect();
    assert!(t1.send(out).is_empty(), "nothing dropped");
    let mut got = Vec::new();
    while got.len() < 40 {
        let inbound = tokio::time::timeout(Duration::from_secs(30), rx2.recv())
            .await
            .expect("every entry arrives")
            .unwrap();
        for (_, m) in inbound.messages {
            let data = &m.get_entries()[0].data;
            assert!(
                data[..] == content(m.index)[..],
                "entry {} as the file holds it",
                m.index
            );
            got.push(m.index);
        }
    }
    assert_eq!(got, (1..=40).collect::<Vec<u64>>(), "in order, once each");
}

/// The most a TCP socket buffers in one direction (`tcp_rmem`/`tcp_wmem`'s
/// maximum, bytes): the kernel grows buffers up to it as a connection runs.
fn tcp_buffer_bytes_max(sysctl: &str) -> usize {
    let path = format!("/proc/sys/net/ipv4/{sysctl}");
    let text = std::fs::read_to_string(&path).unwrap();
    text.split_whitespace().nth(2).unwrap().parse().unwrap()
}

fn heartbeat(from: u64, to: u64) -> Message {
    let mut m = Message {
        from,
        to,
        term: 1,
        ..Message::default()
    };
    m.set_msg_type(MessageType::MsgHeartbeat);
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_receiver_holds_a_bounded_backlog_and_heartbeats_overtake_appends() {
    let (t1, mut rx2, _, _keep) = pair().await;
    connected(&t1, &mut rx2).await;
    // Appends of 1 MiB (200 MiB or more) for a receiver that takes nothing
    // yet, then a heartbeat. Behind the heartbeat at most: the receiver's budget, a frame waiting
    // for it and one half read, a frame or two at the sender, and what the
    // sockets buffer (autotuned up to the kernel's maxima: 32 MiB received
    // here). Twice that many appends at least, so overtaking shows.
    let sockets_bytes = tcp_buffer_bytes_max("tcp_rmem") + tcp_buffer_bytes_max("tcp_wmem");
    let bound = (INBOUND_BYTES_MAX + 4 * FRAME_TARGET_BYTES + sockets_bytes) / (1 << 20) + 4;
    let sent = (2 * bound as u64).max(200);
    for i in 1..=sent {
        let out = vec![Outgoing {
            to: BrokerId(2),
            group: GroupId(7),
            message: append(1, 2, i, 1 << 20),
            spans: Vec::new(),
        }];
        assert!(t1.send(out).is_empty(), "nothing dropped");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Then a heartbeat, in another group.
    t1.send(vec![Outgoing {
        to: BrokerId(2),
        group: GroupId(0),
        message: heartbeat(1, 2),
        spans: Vec::new(),
    }]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    // What waits for the receiver is bounded in bytes: holding it (and so
    // its share of the budget), nothing more is read.
    let mut held = Vec::new();
    while let Ok(inbound) = rx2.try_recv() {
        held.push(inbound);
    }
    let held_bytes: usize = held
        .iter()
        .flat_map(|i| &i.messages)
        .map(|(_, m)| m.get_entries().iter().map(|e| e.data.len()).sum::<usize>())
        .sum();
    assert!(held_bytes > 0, "something arrived");
    assert!(
        held_bytes <= INBOUND_BYTES_MAX,
        "{held_bytes} bytes waiting, over the bound of {INBOUND_BYTES_MAX}"
    );
    let mut order: Vec<Option<u64>> = held
        .into_iter()
        .flat_map(|i| i.messages)
        .map(|(_, m)| (m.get_msg_type() == MessageType::MsgAppend).then_some(m.index))
        .collect();
    // The rest arrives once the receiver takes it.
    while order.iter().filter(|m| m.is_some()).count() < sent as usize || !order.contains(&None) {
        let inbound = tokio::time::timeout(Duration::from_secs(30), rx2.recv())
            .await
            .expect("the rest arrives")
            .unwrap();
        order.extend(
            inbound
                .messages
                .into_iter()
                .map(|(_, m)| (m.get_msg_type() == MessageType::MsgAppend).then_some(m.index)),
        );
    }
    let appends: Vec<u64> = order.iter().flatten().copied().collect();
    assert_eq!(
        appends,
        (1..=sent).collect::<Vec<u64>>(),
        "in order, once each"
    );
    let heartbeat_at = order
        .iter()
        .position(Option::is_none)
        .expect("the heartbeat arrived");
    assert!(
        heartbeat_at <= bound,
        "the heartbeat waited behind {heartbeat_at} appends of 1 MiB (bound {bound})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_or_garbage_on_the_peer_port_is_closed_and_peers_carry_on() {
    let (t1, mut rx2, a2, _keep) = pair().await;
    // A connection naming a broker that is not a peer, and one of garbage.
    let mut stranger = tokio::net::TcpStream::connect(a2).await.unwrap();
    let hello = Hello {
        from: BrokerId(9),
        to: BrokerId(2),
        incarnation: Incarnation(9),
        known: Incarnation::UNKNOWN,
        cluster: ClusterId::UNKNOWN,
        nonce: [1; 32],
    };
    stranger.write_all(&hello.encode()).await.unwrap();
    let mut garbage = tokio::net::TcpStream::connect(a2).await.unwrap();
    garbage.write_all(&[0xff; 128]).await.unwrap();
    // The real peer still gets through.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        t1.send(vec![Outgoing {
            to: BrokerId(2),
            group: GroupId(1),
            message: append(1, 2, 3, 8),
            spans: Vec::new(),
        }]);
        if let Ok(Some(i)) = tokio::time::timeout(Duration::from_millis(100), rx2.recv()).await {
            assert_eq!(i.from, BrokerId(1));
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the peer was disturbed"
        );
    }
    // Both bad connections were closed by the broker: the garbage at
    // once; the stranger, who may be a broker that joined since, is
    // challenged and, proving nothing, closed once the handshake's time
    // is up, having had nothing but the challenge.
    let mut garbage = garbage;
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read(&mut garbage, &mut buf),
    )
    .await
    .expect("closed within 5 s");
    assert!(matches!(n, Ok(0) | Err(_)));
    let mut heard = Vec::new();
    // Closed, or reset: either ends the read.
    let _ = tokio::time::timeout(
        Duration::from_millis(rill_replication::transport::PEER_HELLO_MS_MAX + 5_000),
        tokio::io::AsyncReadExt::read_to_end(&mut stranger, &mut heard),
    )
    .await
    .expect("closed once the handshake's time is up");
    assert!(heard.len() <= CHALLENGE_BYTES, "{} bytes", heard.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_never_names_its_sender_is_closed() {
    let (_t1, _rx2, a2, _keep) = pair().await;
    let mut silent = tokio::net::TcpStream::connect(a2).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(
        Duration::from_millis(rill_replication::transport::PEER_HELLO_MS_MAX + 5_000),
        tokio::io::AsyncReadExt::read(&mut silent, &mut buf),
    )
    .await
    .expect("closed once the hello is overdue");
    assert!(matches!(n, Ok(0) | Err(_)));
}

/// Reads from `s` until it closes (within 10 s); returns every byte read.
async fn read_until_closed(s: &mut tokio::net::TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("the broker closes the connection within 10 s");
        match n {
            Ok(0) | Err(_) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// Waits until a message from broker 2 reaches broker 1.
async fn two_reaches_one(t2: &Transport, rx1: &mut mpsc::Receiver<Inbound>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        t2.send(vec![Outgoing {
            to: BrokerId(1),
            group: GroupId(1),
            message: heartbeat(2, 1),
            spans: Vec::new(),
        }]);
        if let Ok(Some(i)) = tokio::time::timeout(Duration::from_millis(100), rx1.recv()).await {
            assert_eq!(i.from, BrokerId(2));
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "broker 2's messages no longer reach broker 1"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forger_naming_a_real_peer_gets_no_frame_and_the_peer_keeps_its_connection() {
    let (t1, mut rx2, a2, (t2, mut rx1)) = pair().await;
    connected(&t1, &mut rx2).await;
    two_reaches_one(&t2, &mut rx1).await;

    // The old way in: a bare frame naming broker 1. It is not a hello.
    let mut bare = tokio::net::TcpStream::connect(a2).await.unwrap();
    let mut frame = vec![0, 0, 0, 13, 2];
    frame.extend_from_slice(&1u64.to_le_bytes());
    frame.extend_from_slice(&0u32.to_le_bytes());
    bare.write_all(&frame).await.unwrap();

    // A well-formed hello naming broker 1, then a proof made without the
    // secret: the forger gets the challenge and nothing after it.
    let mut forger = tokio::net::TcpStream::connect(a2).await.unwrap();
    let hello = Hello {
        from: BrokerId(1),
        to: BrokerId(2),
        incarnation: Incarnation(1),
        known: Incarnation::UNKNOWN,
        cluster: ClusterId::UNKNOWN,
        nonce: [7; 32],
    };
    forger.write_all(&hello.encode()).await.unwrap();
    let mut challenge = [0u8; CHALLENGE_BYTES];
    forger.read_exact(&mut challenge).await.unwrap();
    forger.write_all(&[0u8; PROOF_BYTES]).await.unwrap();

    // Broker 2 keeps sending to broker 1 meanwhile: none of it may reach
    // either connection, and all of it keeps reaching the real broker 1.
    two_reaches_one(&t2, &mut rx1).await;
    for _ in 0..20 {
        t2.send(vec![Outgoing {
            to: BrokerId(1),
            group: GroupId(1),
            message: heartbeat(2, 1),
            spans: Vec::new(),
        }]);
    }
    assert!(
        read_until_closed(&mut bare).await.is_empty(),
        "a bare frame got bytes back"
    );
    assert!(
        read_until_closed(&mut forger).await.is_empty(),
        "the forger got a frame"
    );
    two_reaches_one(&t2, &mut rx1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brokers_holding_different_secrets_never_exchange_a_frame() {
    let (t1, rx2, _a2, (t2, rx1)) = pair_with(
        identity(secret(SECRET)),
        identity(secret("another cluster's secret, not this one")),
    )
    .await;
    never_exchange_a_frame(&t1, rx2, &t2, rx1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brokers_of_different_clusters_never_exchange_a_frame_even_sharing_a_secret() {
    let of_cluster = |cluster: u128| {
        let me = identity(secret(SECRET));
        me.cluster.set(ClusterId(cluster)).unwrap();
        me
    };
    let (t1, rx2, _a2, (t2, rx1)) = pair_with(of_cluster(0xA), of_cluster(0xB)).await;
    never_exchange_a_frame(&t1, rx2, &t2, rx1).await;

    // Of one cluster, they do.
    let (t1, mut rx2, _a2, _keep) = pair_with(of_cluster(0xA), of_cluster(0xA)).await;
    connected(&t1, &mut rx2).await;
}

/// Sends from each of two brokers to the other for 3 s; asserts that
/// neither receives anything.
async fn never_exchange_a_frame(
    t1: &Transport,
    mut rx2: mpsc::Receiver<Inbound>,
    t2: &Transport,
    mut rx1: mpsc::Receiver<Inbound>,
) {
    // Each side retries its connection several times in this window
    // (backoff under a second); none may deliver a message.
    let until = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::time::Instant::now() < until {
        t1.send(vec![Outgoing {
            to: BrokerId(2),
            group: GroupId(1),
            message: append(1, 2, 0, 8),
            spans: Vec::new(),
        }]);
        t2.send(vec![Outgoing {
            to: BrokerId(1),
            group: GroupId(1),
            message: heartbeat(2, 1),
            spans: Vec::new(),
        }]);
        tokio::select! {
            got = rx2.recv() => panic!("broker 2 took a frame from a stranger: {got:?}"),
            got = rx1.recv() => panic!("broker 1 took a frame from a stranger: {got:?}"),
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brokers_without_a_secret_on_either_side_still_connect() {
    let (t1, mut rx2, _a2, _keep) = pair_with(
        identity(ClusterSecret::insecure()),
        identity(ClusterSecret::insecure()),
    )
    .await;
    connected(&t1, &mut rx2).await;
}

/// Sends a probe from `from` to `to` until one arrives in `rx` (10 s at
/// most).
async fn reaches(t: &Transport, to: BrokerId, rx: &mut mpsc::Receiver<Inbound>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        t.send(vec![Outgoing {
            to,
            group: GroupId(1),
            message: append(t.id().get(), to.get(), 0, 8),
            spans: Vec::new(),
        }]);
        if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(100), rx.recv()).await {
            assert_eq!(m.from, t.id());
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "broker {} never reached broker {to}",
            t.id()
        );
    }
}

/// Admits the brokers that connected to `t` unknown until `peer` is
/// among them (10 s at most).
async fn admitted(t: &mut Transport, peer: BrokerId) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !t.admit_arrivals().contains(&peer) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "broker {peer} never connected to broker {}",
            t.id()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_joined_dials_the_others_which_link_it_once_authenticated() {
    // Brokers 1 and 2 started the cluster knowing only each other;
    // broker 3 joined it, knowing them, and dials both (2 < 3 included:
    // the broker that joined later dials).
    let listeners = [
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
    ];
    let addrs: Vec<String> = listeners
        .iter()
        .map(|l| l.local_addr().unwrap().to_string())
        .collect();
    let [l1, l2, l3] = listeners;
    let first: BTreeMap<BrokerId, String> = [
        (BrokerId(1), addrs[0].clone()),
        (BrokerId(2), addrs[1].clone()),
    ]
    .into();
    let (tx1, mut rx1) = mpsc::channel(1024);
    let (tx2, mut rx2) = mpsc::channel(1024);
    let (tx3, mut rx3) = mpsc::channel(1024);
    let id = || identity(secret(SECRET));
    let mut t1 = Transport::start(
        BrokerId(1),
        l1,
        first.clone(),
        Dialling::HigherIds,
        tx1,
        id(),
    );
    let mut t2 = Transport::start(
        BrokerId(2),
        l2,
        first.clone(),
        Dialling::HigherIds,
        tx2,
        id(),
    );
    reaches(&t1, BrokerId(2), &mut rx2).await;
    // Unknown yet: what is sent to broker 3 is dropped, not queued.
    let dropped = t1.send(vec![Outgoing {
        to: BrokerId(3),
        group: GroupId(1),
        message: append(1, 3, 0, 8),
        spans: Vec::new(),
    }]);
    assert_eq!(dropped.len(), 1);

    let t3 = Transport::start(BrokerId(3), l3, first, Dialling::Every, tx3, id());
    admitted(&mut t1, BrokerId(3)).await;
    admitted(&mut t2, BrokerId(3)).await;
    reaches(&t3, BrokerId(1), &mut rx1).await;
    reaches(&t3, BrokerId(2), &mut rx2).await;
    reaches(&t1, BrokerId(3), &mut rx3).await;
    reaches(&t2, BrokerId(3), &mut rx3).await;
    assert_eq!(t1.liveness().len(), 2, "broker 1 watches both peers");
    assert!(t1.admit_arrivals().is_empty(), "admitted once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_without_the_secret_is_never_linked() {
    let l1 = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let l9 = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a1 = l1.local_addr().unwrap().to_string();
    let (tx1, _rx1) = mpsc::channel(1024);
    let (tx9, _rx9) = mpsc::channel(1024);
    let mut t1 = Transport::start(
        BrokerId(1),
        l1,
        BTreeMap::new(),
        Dialling::HigherIds,
        tx1,
        identity(secret(SECRET)),
    );
    let _t9 = Transport::start(
        BrokerId(9),
        l9,
        [(BrokerId(1), a1)].into(),
        Dialling::Every,
        tx9,
        identity(secret("another cluster's secret, long enough")),
    );
    // It dials and fails the handshake, again and again: never linked.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(t1.admit_arrivals().is_empty());
    assert!(t1.liveness().is_empty());
}
