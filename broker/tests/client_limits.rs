//! The client port's limits against hostile clients, on a real broker:
//! connection floods, idle and stalled connections, clients that never read
//! their responses, amplifying metadata and fetch requests, and frames that
//! would make the broker hold more than its budget. Each attack meets a
//! clear error or a closed connection, and a normal client keeps being
//! served.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{BrokerProcess, Client, batch, values};
use rill_client::protocol::messages::*;
use rill_client::protocol::{ErrorCode, Request, RequestHeader, Response, encode_request};

fn start(dir: &std::path::Path, limits: &[&str]) -> BrokerProcess {
    let mut args = vec!["--listen".to_string(), "127.0.0.1:0".to_string()];
    args.extend(limits.iter().map(|s| s.to_string()));
    BrokerProcess::start_with(dir, &args)
}

/// Waits (at most 20 s) until the broker has closed `s`: reads drain what
/// it sent, then meet end of file or a reset.
fn closed_by_broker(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = vec![0u8; 1 << 16];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return true,
        }
    }
    false
}

/// Raises this process's open-file limit to `want` (or its hard limit).
fn raise_open_file_limit(want: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < want {
            lim.rlim_cur = want.min(lim.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// A connection to `to` from the loopback address `from`.
fn connect_from(from: [u8; 4], to: SocketAddr) -> std::io::Result<TcpStream> {
    common::runtime().block_on(async {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(SocketAddr::from((from, 0)))?;
        let stream = socket.connect(to).await?;
        let std = stream.into_std()?;
        std.set_nonblocking(false)?;
        Ok(std)
    })
}

/// `request` as one whole frame's bytes.
fn frame_bytes(request: &Request) -> Vec<u8> {
    let header = RequestHeader {
        api_key: request.api_key() as u16,
        api_version: 0,
        correlation_id: 1,
        client_id: "hostile".into(),
    };
    encode_request(&header, request)
        .iter()
        .flat_map(|b| b.iter().copied())
        .collect()
}

fn metadata(client: &mut Client, topics: Option<Vec<String>>) -> MetadataResponse {
    let (_, r) = client.call(Request::Metadata(MetadataRequest { topics }));
    let Some(Response::Metadata(m)) = r else {
        panic!("a metadata response")
    };
    m
}

#[test]
fn connections_past_the_per_address_limit_are_closed_and_other_clients_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path(), &["--max-connections-per-ip", "20"]);
    raise_open_file_limit(4096);
    // 2,000 connections from one address: 20 are kept, the rest closed.
    let mut flood = Vec::new();
    for _ in 0..2000 {
        if let Ok(s) = connect_from([127, 0, 0, 2], broker.addr) {
            flood.push(s);
        }
    }
    let mut kept = 0;
    let mut closed = 0;
    for s in &mut flood {
        // Kept connections answer a request; closed ones never do.
        let bytes = frame_bytes(&Request::ApiVersions);
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut len = [0u8; 4];
        if s.write_all(&bytes).is_ok() && s.read_exact(&mut len).is_ok() {
            kept += 1;
        } else {
            closed += 1;
        }
    }
    assert_eq!(kept, 20, "{closed} closed");
    // Another address is served meanwhile.
    let mut client = Client::connect(broker.addr);
    assert_eq!(metadata(&mut client, None).brokers.len(), 1);
    // Closing the flood frees the address's places.
    drop(flood);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = connect_from([127, 0, 0, 2], broker.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut c = Client::from_stream(s);
        c.stream
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        if c.try_send(&Request::ApiVersions).is_ok() && c.read_frame().is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the address never got its places back"
        );
    }
}

#[test]
fn an_idle_connection_is_closed_after_connections_max_idle_ms() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path(), &["--connections-max-idle-ms", "300"]);
    let mut idle = TcpStream::connect(broker.addr).unwrap();
    assert!(closed_by_broker(&mut idle));
}

#[test]
fn a_frame_that_stalls_halfway_is_cut_off_after_request_read_timeout_ms() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path(), &["--request-read-timeout-ms", "300"]);
    let mut stalled = TcpStream::connect(broker.addr).unwrap();
    stalled.write_all(&1000u32.to_le_bytes()).unwrap();
    stalled.write_all(&[0u8; 10]).unwrap();
    assert!(closed_by_broker(&mut stalled));
}

#[test]
fn one_metadata_request_naming_a_topic_many_times_describes_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path(), &["--metadata-max-topics", "3"]);
    let mut client = broker.connect();
    assert!(client.create_topic("wide", 100, &[]).error.is_ok());
    let m = metadata(&mut client, Some(vec!["wide".to_string(); 10_000]));
    assert_eq!(m.topics.len(), 1);
    assert_eq!(m.topics[0].partitions.len(), 100);
    // Past the cap, topics are refused by name, not described.
    let names: Vec<String> = ["wide", "a", "b", "c", "d"].map(String::from).to_vec();
    let m = metadata(&mut client, Some(names));
    let errors: Vec<ErrorCode> = m.topics.iter().map(|t| t.error).collect();
    assert_eq!(
        errors,
        [
            ErrorCode::None,
            ErrorCode::UnknownTopicOrPartition,
            ErrorCode::UnknownTopicOrPartition,
            ErrorCode::InvalidRequest,
            ErrorCode::InvalidRequest
        ]
    );
}

fn fetch_of(partitions: &[(u32, u64)], max_bytes: u32) -> Request {
    Request::Fetch(FetchRequest {
        max_wait_ms: 0,
        min_bytes: 1,
        max_bytes,
        topics: vec![FetchTopic {
            name: "f".into(),
            partitions: partitions
                .iter()
                .map(|&(partition, fetch_offset)| FetchPartition {
                    partition,
                    fetch_offset,
                    partition_max_bytes: u32::MAX,
                })
                .collect(),
        }],
    })
}

fn fetched(client: &mut Client, request: Request) -> FetchResponse {
    let (_, r) = client.call(request);
    let Some(Response::Fetch(f)) = r else {
        panic!("a fetch response")
    };
    f
}

/// Produces `batches` batches of 100 records of about 1 KiB to partition 0
/// of topic `f`.
fn fill(client: &mut Client, batches: u64) {
    for b in 0..batches {
        let vals: Vec<String> = values(b * 100..(b + 1) * 100)
            .into_iter()
            .map(|v| format!("{v}-{}", "x".repeat(1000)))
            .collect();
        let r = client.produce("f", 0, 1, batch(&vals, 1));
        assert!(r.error.is_ok(), "{:?}", r.error);
    }
}

#[test]
fn fetches_are_deduplicated_capped_and_clamped_to_fetch_max_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(
        dir.path(),
        &["--fetch-max-partitions", "4", "--fetch-max-bytes", "200000"],
    );
    let mut client = broker.connect();
    assert!(client.create_topic("f", 5, &[]).error.is_ok());
    fill(&mut client, 10);
    // The same partition twenty times is read once.
    let f = fetched(&mut client, fetch_of(&[(0, 0); 20], u32::MAX));
    assert_eq!(f.topics.len(), 1);
    assert_eq!(f.topics[0].partitions.len(), 1);
    // Asking for 4 GiB gets about fetch_max_bytes (whole batches of about
    // 100 KiB: the one that crosses the limit is not sent).
    let bytes: usize = f.topics[0].partitions[0]
        .records
        .iter()
        .map(|b| b.len())
        .sum();
    assert!(bytes > 0 && bytes <= 200_000, "{bytes} bytes");
    // More distinct partitions than the cap: each refused by name.
    let five: Vec<(u32, u64)> = (0..5).map(|p| (p, 0)).collect();
    let f = fetched(&mut client, fetch_of(&five, u32::MAX));
    assert_eq!(f.topics[0].partitions.len(), 5);
    assert!(
        f.topics[0]
            .partitions
            .iter()
            .all(|p| p.error == ErrorCode::InvalidRequest && p.records.is_empty())
    );
}

#[test]
fn a_client_that_never_reads_its_fetch_responses_is_cut_off_and_others_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path(), &["--client-write-timeout-ms", "500"]);
    let mut client = broker.connect();
    assert!(client.create_topic("f", 1, &[]).error.is_ok());
    fill(&mut client, 10);
    // Fetches of about 1 MiB each, never read: far more than the socket
    // buffers hold.
    let mut sink = TcpStream::connect(broker.addr).unwrap();
    let one = frame_bytes(&fetch_of(&[(0, 0)], 1 << 20));
    sink.set_write_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let cut_off = loop {
        assert!(Instant::now() < deadline, "the broker kept the connection");
        match sink.write(&one) {
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break true,
        }
    };
    assert!(cut_off);
    let mut other = broker.connect();
    let f = fetched(&mut other, fetch_of(&[(0, 0)], 1 << 20));
    assert!(f.topics[0].partitions[0].error.is_ok());
}

#[test]
fn frames_beyond_the_request_byte_budget_wait_unread_instead_of_filling_memory() {
    let dir = tempfile::tempdir().unwrap();
    let budget = (16 << 20) + 4 + (1 << 20);
    let broker = start(
        dir.path(),
        &[
            "--queued-max-request-bytes",
            &budget.to_string(),
            "--request-read-timeout-ms",
            "5000",
        ],
    );
    let before = broker.rss_bytes();
    // Twenty clients each announce a 16 MiB request and send 15 MiB of it.
    let senders: Vec<_> = (0..20)
        .map(|_| {
            let addr = broker.addr;
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(addr).unwrap();
                s.set_write_timeout(Some(Duration::from_secs(3))).unwrap();
                let _ = s.write_all(&(16u32 << 20).to_le_bytes());
                let chunk = vec![0u8; 1 << 20];
                for _ in 0..15 {
                    if s.write_all(&chunk).is_err() {
                        break;
                    }
                }
                s
            })
        })
        .collect();
    let mut stalled: Vec<TcpStream> = senders.into_iter().map(|t| t.join().unwrap()).collect();
    let grown = broker.rss_bytes().saturating_sub(before);
    // Without the budget the broker held every client's bytes: 300 MiB.
    assert!(grown < 120 << 20, "the broker grew by {} MiB", grown >> 20);
    // The stalled frames are cut off, and then a normal client is served.
    for s in &mut stalled {
        assert!(closed_by_broker(s));
    }
    let mut client = broker.connect();
    assert_eq!(metadata(&mut client, None).brokers.len(), 1);
}
