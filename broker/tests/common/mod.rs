//! Shared helpers for the broker's integration tests: a real `rill-broker`
//! process on 127.0.0.1 with an ephemeral port and a temporary data
//! directory, and a small blocking client speaking the wire protocol.
#![allow(dead_code, clippy::unwrap_used)]

pub mod cluster;
pub mod groups;
pub mod load;
pub mod prometheus;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rill_client::protocol::messages::*;
use rill_client::protocol::*;
use rill_storage::{BatchBuilder, NewRecord};

/// A small tokio runtime for tests that use the async client.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A running broker process.
pub struct BrokerProcess {
    child: Child,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    /// Its last [`LOG_LINES_KEPT`] lines of stderr.
    log: std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<String>>>,
    /// Disconnected once its stderr is read to the end.
    log_closed: mpsc::Receiver<()>,
}

/// Lines of a broker's stderr a [`BrokerProcess`] keeps.
pub const LOG_LINES_KEPT: usize = 1000;

impl BrokerProcess {
    /// Starts a broker on a free port with data in `data_dir` and waits for
    /// its `listening on` line (at most 60 s).
    pub fn start(data_dir: &Path) -> BrokerProcess {
        Self::start_with(data_dir, &["--listen".into(), "127.0.0.1:0".into()])
    }

    /// Starts a broker with data in `data_dir` and the given flags, and
    /// waits for its `listening on` line (at most 60 s).
    pub fn start_with(data_dir: &Path, args: &[String]) -> BrokerProcess {
        Self::start_with_env(data_dir, args, &[])
    }

    /// As [`BrokerProcess::start_with`], with extra environment variables
    /// (winning over the tests' `RUST_LOG`; an empty value unsets one).
    pub fn start_with_env(data_dir: &Path, args: &[String], env: &[(&str, &str)]) -> BrokerProcess {
        let mut command = Command::new(env!("CARGO_BIN_EXE_rill-broker"));
        command
            .args(args)
            .args(http_listen_unless_given(args))
            .arg("--data-dir")
            .arg(data_dir)
            .env(
                "RUST_LOG",
                std::env::var("RILL_TEST_LOG").unwrap_or_else(|_| "info,raft=warn".into()),
            );
        for (k, v) in env {
            if v.is_empty() {
                command.env_remove(k);
            } else {
                command.env(k, v);
            }
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let echo = std::env::var_os("RILL_TEST_LOG").is_some();
        let log = std::sync::Arc::new(std::sync::Mutex::new(std::collections::VecDeque::new()));
        let kept = std::sync::Arc::clone(&log);
        let (closing, log_closed) = mpsc::channel::<()>();
        std::thread::spawn(move || {
            let _closing = closing;
            let mut sent = false;
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if echo {
                    eprintln!("{line}");
                }
                {
                    let mut kept = kept.lock().unwrap();
                    if kept.len() == LOG_LINES_KEPT {
                        kept.pop_front();
                    }
                    kept.push_back(line.clone());
                }
                if !sent && let Some(rest) = line.split("listening on ").nth(1) {
                    let addr: SocketAddr = rest.split_whitespace().next().unwrap().parse().unwrap();
                    let _ = tx.send(addr);
                    sent = true;
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(addr) => addr,
            Err(e) => {
                let lines: Vec<String> = log.lock().unwrap().iter().cloned().collect();
                panic!(
                    "the broker did not start listening ({e}); its last lines: {:?}",
                    &lines[lines.len().saturating_sub(10)..]
                );
            }
        };
        BrokerProcess {
            child,
            addr,
            data_dir: data_dir.to_path_buf(),
            log,
            log_closed,
        }
    }

    /// Waits (at most `timeout`) for the process to exit on its own;
    /// returns its status, or `None` if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        wait_for_exit(&mut self.child, timeout)
    }

    /// The lines of stderr kept so far (the last [`LOG_LINES_KEPT`]).
    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().unwrap().iter().cloned().collect()
    }

    /// The last lines of stderr of a process that has exited, once all of
    /// them are read (waiting at most `timeout` for the end of the pipe).
    pub fn final_log_lines(&self, timeout: Duration) -> Vec<String> {
        let _ = self.log_closed.recv_timeout(timeout);
        self.log_lines()
    }

    /// Sends SIGTERM, without waiting.
    pub fn sigterm(&self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Sends the process `signal` (`STOP`, `CONT`, ...).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal}");
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, and wait (at most 30 s) for a clean exit: status 0 and,
    /// at the default log level, the line that says every thread was
    /// joined.
    pub fn terminate(mut self) {
        self.sigterm();
        let Some(status) = self.wait_exit(Duration::from_secs(30)) else {
            panic!("the broker did not stop within 30 s of SIGTERM");
        };
        assert!(status.success(), "clean exit after SIGTERM: {status}");
        if std::env::var_os("RILL_TEST_LOG").is_none() {
            let lines = self.final_log_lines(Duration::from_secs(10));
            assert!(
                lines
                    .iter()
                    .any(|l| l.contains(rill_broker::threads::ALL_JOINED)),
                "every thread joined at shutdown: {:?}",
                &lines[lines.len().saturating_sub(20)..]
            );
        }
    }

    pub fn connect(&self) -> Client {
        Client::connect(self.addr)
    }

    /// Where the broker serves metrics and health, from its start-up line.
    pub fn http_addr(&self) -> SocketAddr {
        self.log_lines()
            .iter()
            .find_map(|l| l.split("metrics and health on http://").nth(1))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .expect("the broker logged its HTTP address")
    }

    /// The broker's resident memory now, bytes (`VmRSS`).
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        kib * 1024
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `--http-listen 127.0.0.1:0` unless `args` choose an HTTP address:
/// brokers of a test (and of tests running at once) never share the
/// default port.
fn http_listen_unless_given<S: AsRef<str>>(args: &[S]) -> Vec<&'static str> {
    if args.iter().any(|a| a.as_ref() == "--http-listen") {
        Vec::new()
    } else {
        vec!["--http-listen", "127.0.0.1:0"]
    }
}

/// Runs `rill-broker` on `data_dir` with `args` (and `--listen
/// 127.0.0.1:0`) and returns its exit status and stderr: for brokers that
/// must refuse to run. It must exit on its own within 60 s.
pub fn run_to_exit(data_dir: &Path, args: &[&str]) -> (std::process::ExitStatus, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rill-broker"))
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .args(http_listen_unless_given(args))
        .arg("--data-dir")
        .arg(data_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read while it runs: a broker that logs much must not block on a
    // full pipe.
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut err = String::new();
        let _ = stderr.read_to_string(&mut err);
        err
    });
    let Some(status) = wait_for_exit(&mut child, Duration::from_secs(60)) else {
        let _ = child.kill();
        panic!("the broker did not exit");
    };
    (status, reader.join().unwrap())
}

/// Waits (at most `timeout`) for `child` to exit on its own; its status,
/// or `None` if it is still running.
fn wait_for_exit(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if std::time::Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A blocking client for tests: one request at a time unless told otherwise.
pub struct Client {
    pub stream: TcpStream,
    buf: BytesMut,
    next_id: u32,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        Client::from_stream(TcpStream::connect(addr).unwrap())
    }

    /// A client over a connection already in use; correlation ids from 1000.
    pub fn from_stream(stream: TcpStream) -> Client {
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        Client {
            stream,
            buf: BytesMut::new(),
            next_id: 1000,
        }
    }

    /// Sends a request and returns its correlation id.
    pub fn send(&mut self, request: &Request) -> u32 {
        self.try_send(request).unwrap()
    }

    /// As [`Client::send`], or the error writing it met (the broker gone).
    pub fn try_send(&mut self, request: &Request) -> std::io::Result<u32> {
        let id = self.next_id;
        self.next_id += 1;
        let header = RequestHeader {
            api_key: request.api_key() as u16,
            api_version: 0,
            correlation_id: id,
            client_id: "test".into(),
        };
        for part in encode_request(&header, request) {
            self.stream.write_all(&part)?;
        }
        Ok(id)
    }

    /// Reads the next response frame's payload; `None` if the broker closed.
    pub fn read_frame(&mut self) -> Option<Bytes> {
        self.next_frame().ok().flatten()
    }

    /// Reads the next response frame's payload: `Ok(None)` if the broker
    /// closed the connection cleanly between frames; an error if it was
    /// reset, cut inside a frame, or the read timed out.
    pub fn next_frame(&mut self) -> std::io::Result<Option<Bytes>> {
        loop {
            if let Some(p) = take_frame(&mut self.buf, MAX_RESPONSE_FRAME_BYTES).unwrap() {
                return Ok(Some(p));
            }
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk)? {
                0 if self.buf.is_empty() => return Ok(None),
                0 => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "closed inside a frame",
                    ));
                }
                n => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Sends `request` and decodes its response.
    pub fn call(&mut self, request: Request) -> (ResponseHeader, Option<Response>) {
        let api = request.api_key();
        let id = self.send(&request);
        let payload = self.read_frame().expect("a response");
        let (h, r) = decode_response(payload, api).unwrap();
        assert_eq!(h.correlation_id, id);
        (h, r)
    }

    pub fn create_topic(
        &mut self,
        name: &str,
        partitions: u32,
        configs: &[(&str, &str)],
    ) -> TopicResult {
        let (_, r) = self.call(Request::CreateTopics(CreateTopicsRequest {
            topics: vec![NewTopic {
                name: name.into(),
                partitions,
                replication_factor: 1,
                configs: configs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            }],
            timeout_ms: 10_000,
        }));
        let Some(Response::CreateTopics(r)) = r else {
            panic!("create topics response")
        };
        r.results.into_iter().next().unwrap()
    }

    pub fn produce(
        &mut self,
        topic: &str,
        partition: u32,
        acks: i8,
        records: Bytes,
    ) -> ProducePartitionResponse {
        let (_, r) = self.call(Request::Produce(ProduceRequest {
            acks,
            timeout_ms: 30_000,
            topics: vec![ProduceTopic {
                name: topic.into(),
                partitions: vec![ProducePartition {
                    partition,
                    records: vec![records],
                }],
            }],
        }));
        let Some(Response::Produce(mut r)) = r else {
            panic!("produce response")
        };
        r.topics.remove(0).partitions.remove(0)
    }

    pub fn fetch(
        &mut self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_wait_ms: u32,
    ) -> FetchPartitionResponse {
        let (_, r) = self.call(fetch_request(topic, partition, offset, max_wait_ms));
        let Some(Response::Fetch(mut r)) = r else {
            panic!("fetch response")
        };
        r.topics.remove(0).partitions.remove(0)
    }
}

pub fn fetch_request(topic: &str, partition: u32, offset: u64, max_wait_ms: u32) -> Request {
    Request::Fetch(FetchRequest {
        max_wait_ms,
        min_bytes: 1,
        max_bytes: 1 << 20,
        topics: vec![FetchTopic {
            name: topic.into(),
            partitions: vec![FetchPartition {
                partition,
                fetch_offset: offset,
                partition_max_bytes: 1 << 20,
            }],
        }],
    })
}

/// `value-<n>` for each `n` in `range`.
pub fn values(range: std::ops::Range<u64>) -> Vec<String> {
    range.map(|i| format!("value-{i}")).collect()
}

/// A batch of `values`, timestamped `timestamp_ms`.
pub fn batch(values: &[String], timestamp_ms: i64) -> Bytes {
    let mut b = BatchBuilder::new(1 << 20);
    for v in values {
        assert!(
            b.push(&NewRecord::value(v.as_bytes(), timestamp_ms))
                .unwrap()
        );
    }
    Bytes::from(b.finish().unwrap())
}

/// A batch of `values` from idempotent producer `producer_id` at `epoch`,
/// its first record's sequence `first_sequence`.
pub fn producer_batch(
    values: &[String],
    producer_id: i64,
    epoch: i16,
    first_sequence: i32,
) -> Bytes {
    let mut b = BatchBuilder::new(1 << 20);
    b.producer(rill_storage::ProducerStamp {
        producer_id,
        producer_epoch: epoch,
        base_sequence: first_sequence,
    });
    for v in values {
        assert!(b.push(&NewRecord::value(v.as_bytes(), now_ms())).unwrap());
    }
    Bytes::from(b.finish().unwrap())
}

/// Every record value of a partition, from offset 0 to the high watermark.
pub fn read_all(client: &mut Client, topic: &str, partition: u32) -> Vec<(u64, String)> {
    read_from(client, topic, partition, 0)
}

/// Every record of the partition from `offset` on, as (offset, value).
pub fn read_from(
    client: &mut Client,
    topic: &str,
    partition: u32,
    offset: u64,
) -> Vec<(u64, String)> {
    try_read_from(client, topic, partition, offset)
        .unwrap_or_else(|error| panic!("fetch error {error:?}"))
}

/// As [`read_from`], or the error of the first fetch that failed.
pub fn try_read_from(
    client: &mut Client,
    topic: &str,
    partition: u32,
    mut offset: u64,
) -> Result<Vec<(u64, String)>, ErrorCode> {
    let mut out = Vec::new();
    loop {
        let f = client.fetch(topic, partition, offset, 0);
        if !f.error.is_ok() {
            return Err(f.error);
        }
        let mut got = false;
        for chunk in &f.records {
            for b in rill_storage::Batches::new(chunk.clone(), usize::MAX) {
                let b = b.unwrap();
                b.verify_crc().unwrap();
                for r in b.records() {
                    let r = r.unwrap();
                    out.push((
                        r.offset.get(),
                        String::from_utf8(r.value.unwrap().to_vec()).unwrap(),
                    ));
                    offset = r.offset.get() + 1;
                    got = true;
                }
            }
        }
        if !got {
            return Ok(out);
        }
    }
}

/// Runs the `rill` CLI with `args` (no input) and asserts that it
/// succeeded, showing its stderr if not; its output.
pub fn run_rill_ok(bootstrap: &str, args: &[&str]) -> std::process::Output {
    let out = run_rill(bootstrap, args, "");
    assert!(
        out.status.success(),
        "rill {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The `rill` CLI binary, built beside `rill-broker` by `cargo test --workspace`.
/// Runs the `rill` CLI with `bootstrap` as its brokers and `stdin` as its
/// standard input, and waits for it.
/// A command that stops before reading its input (a topic that does not
/// exist) may close it before it is written: that is not the test's
/// failure.
pub fn run_rill(bootstrap: &str, args: &[&str], stdin: impl AsRef<[u8]>) -> std::process::Output {
    let mut child = Command::new(rill_cli())
        .args(args)
        .env("RILL_BOOTSTRAP", bootstrap)
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let written = child.stdin.take().unwrap().write_all(stdin.as_ref());
    if let Err(e) = written {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
    }
    child.wait_with_output().unwrap()
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The path of the `rill` CLI built beside the broker.
pub fn rill_cli() -> PathBuf {
    let broker = PathBuf::from(env!("CARGO_BIN_EXE_rill-broker"));
    let cli = broker.with_file_name("rill");
    assert!(
        cli.exists(),
        "{} is missing: run the tests with `cargo test --workspace`",
        cli.display()
    );
    cli
}

/// Sends `request` (raw bytes) to the HTTP listener at `addr` and returns
/// the whole response as text (the server closes after one), within 10 s.
pub fn http_raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // A server that closed at once (its connections full) may refuse the
    // write: the answer is then the empty response.
    let _ = stream.write_all(request);
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// `GET path` from the HTTP listener at `addr`: status code and body.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let response = http_raw(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: rill\r\n\r\n").as_bytes(),
    );
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("an HTTP status line: {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}
