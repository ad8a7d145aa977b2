//! A cluster of real `rill-broker` processes on 127.0.0.1 for fault tests,
//! with every peer connection passing through a proxy in this process, so a
//! test can cut a broker off from its peers without touching the code under
//! test.
//!
//! Broker `i` listens for peers on its own port and is known to the others
//! by its proxy's port. A proxy reads the start of each connection's
//! handshake hello (magic, version, flags, sender id) to learn who dials,
//! and refuses or cuts connections to or from an isolated broker. Every
//! broker reads the cluster secret from one file in the cluster's temp
//! dir.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rill_client::protocol::messages::*;
use rill_client::protocol::*;

use super::{BrokerProcess, Client};

/// A port free right now on 127.0.0.1, for a broker to bind later.
///
/// Chosen below the kernel's ephemeral range (ports it hands to
/// outgoing connections and to listeners bound to port 0): taken from
/// there, a port free when chosen could be given to any socket before the
/// broker binds it, and the broker would fail to start. Below it, only
/// another port chosen here could take it, and this process never hands
/// one out twice; a start point drawn from the process id and the clock
/// keeps test processes running side by side apart.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 10_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_low: u32 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768);
    let span = ephemeral_low.saturating_sub(LOW).max(1_000);
    let _ = NEXT.compare_exchange(
        0,
        1 + std::process::id().wrapping_mul(7_919).wrapping_add(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_micros()),
        ) % span,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..span {
        let port = LOW + NEXT.fetch_add(1, Ordering::Relaxed) % span;
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port as u16)) {
            drop(l);
            return port as u16;
        }
    }
    panic!("no free port between {LOW} and {ephemeral_low}");
}

#[derive(Default)]
struct ProxyState {
    /// Brokers cut off from their peers.
    isolated: BTreeSet<u64>,
    /// Open connections: (from, to, the two sockets).
    open: Vec<(u64, u64, TcpStream, TcpStream)>,
}

/// The proxies of a cluster, one per broker.
struct Proxies {
    state: Arc<Mutex<ProxyState>>,
}

impl Proxies {
    /// Starts a proxy for broker `to` on `listener`, forwarding to `target`.
    fn spawn(&self, to: u64, listener: TcpListener, target: SocketAddr) {
        let state = Arc::clone(&self.state);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut inbound) = conn else { continue };
                let state = Arc::clone(&state);
                std::thread::spawn(move || {
                    // Magic (8), version (2), flags (2), sender id (8).
                    let mut head = [0u8; 20];
                    if inbound.read_exact(&mut head).is_err() {
                        return;
                    }
                    let from = u64::from_le_bytes(head[12..20].try_into().unwrap());
                    let Ok(mut outbound) = TcpStream::connect(target) else {
                        return;
                    };
                    {
                        let mut s = state.lock().unwrap();
                        if s.isolated.contains(&from) || s.isolated.contains(&to) {
                            return;
                        }
                        s.open.push((
                            from,
                            to,
                            inbound.try_clone().unwrap(),
                            outbound.try_clone().unwrap(),
                        ));
                    }
                    if outbound.write_all(&head).is_err() {
                        return;
                    }
                    let (mut a, mut b) =
                        (inbound.try_clone().unwrap(), outbound.try_clone().unwrap());
                    let up = std::thread::spawn(move || {
                        let _ = std::io::copy(&mut a, &mut b);
                        let _ = b.shutdown(Shutdown::Both);
                    });
                    let _ = std::io::copy(&mut outbound, &mut inbound);
                    let _ = inbound.shutdown(Shutdown::Both);
                    let _ = up.join();
                });
            }
        });
    }

    fn isolate(&self, id: u64) {
        let mut s = self.state.lock().unwrap();
        s.isolated.insert(id);
        s.open.retain(|(from, to, a, b)| {
            if *from == id || *to == id {
                let _ = a.shutdown(Shutdown::Both);
                let _ = b.shutdown(Shutdown::Both);
                false
            } else {
                true
            }
        });
    }

    fn heal(&self) {
        self.state.lock().unwrap().isolated.clear();
    }
}

/// Writes a fresh random cluster secret to `path`, readable by its owner
/// alone.
pub fn write_secret(path: &std::path::Path) {
    use std::os::unix::fs::OpenOptionsExt;
    let secret: String = rill_replication::handshake::fresh_nonce()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    writeln!(f, "{secret}").unwrap();
}

/// A running cluster. Broker ids are 1..=n.
pub struct TestCluster {
    pub dir: tempfile::TempDir,
    brokers: Vec<Option<BrokerProcess>>,
    client_ports: Vec<u16>,
    /// Each broker's metrics and health port, chosen here like the
    /// others: a broker binding an ephemeral listener of its own could
    /// take a port chosen for another broker that has not started yet.
    http_ports: Vec<u16>,
    peer_ports: Vec<u16>,
    proxy_ports: Vec<u16>,
    proxies: Proxies,
    /// Flags every broker starts with, beyond those that make the cluster.
    extra_args: Vec<String>,
    /// Brokers SIGSTOPped ([`TestCluster::pause`]): running, answering
    /// nobody, so not asked.
    paused: Vec<bool>,
    /// The brokers the cluster started with (named in `--peers`); those
    /// after them joined it (`--join`).
    founders: usize,
}

impl TestCluster {
    /// Starts `n` brokers and waits until they have a controller and every
    /// broker is registered.
    pub fn start(n: usize) -> TestCluster {
        Self::start_with(n, &[])
    }

    /// As [`TestCluster::start`], every broker also given `extra_args`.
    pub fn start_with(n: usize, extra_args: &[&str]) -> TestCluster {
        let proxies = Proxies {
            state: Arc::default(),
        };
        let mut proxy_ports = Vec::new();
        let mut peer_ports = Vec::new();
        for i in 1..=n {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            proxy_ports.push(listener.local_addr().unwrap().port());
            let peer = free_port();
            peer_ports.push(peer);
            proxies.spawn(i as u64, listener, SocketAddr::from(([127, 0, 0, 1], peer)));
        }
        let mut cluster = TestCluster {
            dir: tempfile::tempdir().unwrap(),
            brokers: (0..n).map(|_| None).collect(),
            client_ports: (0..n).map(|_| free_port()).collect(),
            http_ports: (0..n).map(|_| free_port()).collect(),
            peer_ports,
            proxy_ports,
            proxies,
            extra_args: extra_args.iter().map(|a| a.to_string()).collect(),
            paused: vec![false; n],
            founders: n,
        };
        write_secret(&cluster.secret_file());
        for i in 1..=n {
            cluster.restart(i);
        }
        cluster.wait_for("a controller and every broker registered", 60, |c| {
            c.metadata_from_any()
                .is_some_and(|m| m.controller_id > 0 && m.brokers.len() == n)
        });
        cluster
    }

    /// Number of brokers.
    pub fn size(&self) -> usize {
        self.brokers.len()
    }

    /// The cluster secret's file, which every broker is given.
    pub fn secret_file(&self) -> PathBuf {
        self.dir.path().join("cluster.secret")
    }

    fn data_dir(&self, id: usize) -> PathBuf {
        self.dir.path().join(format!("b{id}"))
    }

    /// Broker `id`'s client address.
    pub fn addr(&self, id: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.client_ports[id - 1]))
    }

    /// Broker `id`'s own peer listener (not its proxy).
    pub fn peer_addr(&self, id: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.peer_ports[id - 1]))
    }

    /// Every broker's client address, comma-separated.
    pub fn bootstrap(&self) -> String {
        (1..=self.size())
            .map(|i| self.addr(i).to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Whether broker `id` runs and is not paused.
    pub fn is_up(&self, id: usize) -> bool {
        self.brokers[id - 1].is_some() && !self.paused[id - 1]
    }

    /// SIGSTOPs broker `id`: its connections stay open and nothing
    /// answers on them, as with a hung process or machine.
    pub fn pause(&mut self, id: usize) {
        if let Some(b) = &self.brokers[id - 1] {
            b.signal("STOP");
            self.paused[id - 1] = true;
        }
    }

    /// SIGCONTs broker `id`.
    pub fn resume(&mut self, id: usize) {
        if let Some(b) = &self.brokers[id - 1] {
            b.signal("CONT");
            self.paused[id - 1] = false;
        }
    }

    /// Starts a new broker (the next id) that joins the running cluster
    /// through the first brokers' client ports (`--join`), and returns its
    /// id. Its peer traffic goes through no proxy.
    pub fn join_new_broker(&mut self) -> usize {
        self.client_ports.push(free_port());
        self.http_ports.push(free_port());
        let peer = free_port();
        self.peer_ports.push(peer);
        self.proxy_ports.push(peer);
        self.brokers.push(None);
        self.paused.push(false);
        let id = self.size();
        self.restart(id);
        id
    }

    /// Starts broker `id` (again), on the same ports and data: with the
    /// first brokers' `--peers` if it is one of them, with `--join` if it
    /// joined later.
    pub fn restart(&mut self, id: usize) {
        assert!(self.brokers[id - 1].is_none(), "broker {id} is up");
        let how = if id <= self.founders {
            let peers = (1..=self.founders)
                .map(|i| format!("{i}=127.0.0.1:{}", self.proxy_ports[i - 1]))
                .collect::<Vec<_>>()
                .join(",");
            ["--peers".to_string(), peers]
        } else {
            let bootstrap = (1..=self.founders)
                .map(|i| self.addr(i).to_string())
                .collect::<Vec<_>>()
                .join(",");
            ["--join".to_string(), bootstrap]
        };
        let args = vec![
            "--node-id".to_string(),
            id.to_string(),
            "--listen".into(),
            self.addr(id).to_string(),
            "--peer-listen".into(),
            format!("127.0.0.1:{}", self.peer_ports[id - 1]),
            how[0].clone(),
            how[1].clone(),
            "--cluster-secret-file".into(),
            self.secret_file().display().to_string(),
            "--http-listen".into(),
            format!("127.0.0.1:{}", self.http_ports[id - 1]),
        ]
        .into_iter()
        .chain(self.extra_args.iter().cloned())
        .collect::<Vec<_>>();
        self.brokers[id - 1] = Some(BrokerProcess::start_with(&self.data_dir(id), &args));
    }

    /// SIGKILLs broker `id`.
    pub fn kill(&mut self, id: usize) {
        if let Some(b) = self.brokers[id - 1].take() {
            b.kill();
        }
    }

    /// SIGTERMs broker `id` and waits for its clean exit.
    pub fn terminate(&mut self, id: usize) {
        if let Some(b) = self.brokers[id - 1].take() {
            b.terminate();
        }
    }

    /// Cuts broker `id` off from its peers (clients still reach it).
    pub fn isolate(&self, id: usize) {
        self.proxies.isolate(id as u64);
    }

    /// Lets every broker reach its peers again.
    pub fn heal(&self) {
        self.proxies.heal();
    }

    /// Broker `id`'s view of replication, if it answers.
    pub fn status(&self, id: usize) -> Option<ClusterStatusResponse> {
        if !self.is_up(id) {
            return None;
        }
        let stream = TcpStream::connect_timeout(&self.addr(id), Duration::from_secs(2)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let mut c = Client::from_stream(stream);
        c.send(&Request::ClusterStatus);
        let payload = c.read_frame()?;
        match decode_response(payload, ApiKey::ClusterStatus).ok()? {
            (_, Some(Response::ClusterStatus(s))) => Some(s),
            _ => None,
        }
    }

    /// Metadata from the first broker that answers.
    pub fn metadata_from_any(&self) -> Option<MetadataResponse> {
        (1..=self.size())
            .filter(|i| self.is_up(*i))
            .find_map(|i| self.metadata_from(i))
    }

    /// Broker `id`'s answer to a metadata request for every topic, if it
    /// gives one.
    pub fn metadata_from(&self, id: usize) -> Option<MetadataResponse> {
        let stream = TcpStream::connect_timeout(&self.addr(id), Duration::from_secs(2)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let mut c = Client::from_stream(stream);
        c.send(&Request::Metadata(MetadataRequest { topics: None }));
        match decode_response(c.read_frame()?, ApiKey::Metadata).ok()? {
            (_, Some(Response::Metadata(m))) => Some(m),
            _ => None,
        }
    }

    /// The leader of `topic`/`partition` as the live brokers that hold a
    /// replica agree on it (a broker that claims to lead, seen by itself).
    pub fn leader_of(&self, topic: &str, partition: u32) -> Option<usize> {
        (1..=self.size()).find(|&i| {
            self.status(i).is_some_and(|s| {
                s.replicas.iter().any(|r| {
                    r.topic == topic
                        && r.partition == partition
                        && r.leader == i as i32
                        && !r.matched.is_empty()
                })
            })
        })
    }

    /// Whether every partition of `topic` has a leader whose followers all
    /// have its whole log (after faults, the cluster has settled).
    pub fn settled(&self, topic: &str, partitions: u32) -> bool {
        (0..partitions).all(|p| {
            let Some(l) = self.leader_of(topic, p) else {
                return false;
            };
            self.status(l).is_some_and(|s| {
                s.replicas.iter().any(|r| {
                    r.topic == topic
                        && r.partition == p
                        && r.commit == r.last_index
                        && r.matched.iter().all(|(_, m)| *m == r.last_index)
                })
            })
        })
    }

    /// Prints the last `lines` lines of each running broker's log to
    /// stderr: what a failed wait shows, as the brokers saw it.
    pub fn print_recent_logs(&self, lines: usize) {
        for (i, b) in self.brokers.iter().enumerate() {
            let Some(b) = b else { continue };
            let log = b.log_lines();
            eprintln!("--- broker {} (last {lines} lines) ---", i + 1);
            for line in &log[log.len().saturating_sub(lines)..] {
                eprintln!("{line}");
            }
        }
    }

    /// Polls `cond` every 100 ms until it holds, panicking after
    /// `timeout_s` seconds. Returns how long it took.
    pub fn wait_for(
        &self,
        what: &str,
        timeout_s: u64,
        mut cond: impl FnMut(&TestCluster) -> bool,
    ) -> Duration {
        let started = Instant::now();
        while !cond(self) {
            if started.elapsed() >= Duration::from_secs(timeout_s) {
                self.print_recent_logs(40);
                panic!("waited {timeout_s} s for {what}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        started.elapsed()
    }

    /// Creates `topic` with replication factor 3 through the admin client.
    pub fn create_topic(&self, topic: &str, partitions: u32) {
        super::runtime().block_on(async {
            let cluster = rill_client::Cluster::new(&self.bootstrap(), "test").unwrap();
            rill_client::Admin::new(cluster)
                .create_topic(topic, partitions, 3, vec![])
                .await
                .unwrap();
        });
    }

    /// Produces `records` as one batch with `acks=all` to the leader of
    /// `partition`, trying again (at most 30 s) until it is acknowledged.
    pub fn produce_acknowledged(&self, topic: &str, partition: u32, records: &[String]) {
        self.wait_for("an acks=all produce to be acknowledged", 30, |c| {
            c.leader_of(topic, partition).is_some_and(|leader| {
                let mut client = Client::connect(c.addr(leader));
                client
                    .produce(topic, partition, -1, super::batch(records, 1))
                    .error
                    .is_ok()
            })
        });
    }

    /// Whether `rill cluster health` passes (exit code 0).
    pub fn healthy(&self) -> bool {
        super::run_rill(&self.bootstrap(), &["cluster", "health"], "")
            .status
            .success()
    }

    /// Where broker `id` serves metrics and health, while it is up.
    pub fn http_addr(&self, id: usize) -> Option<SocketAddr> {
        self.brokers[id - 1].as_ref().map(BrokerProcess::http_addr)
    }

    /// The data directory of broker `id`.
    pub fn broker_dir(&self, id: usize) -> PathBuf {
        self.data_dir(id)
    }
}
