//! What clients may make a broker hold: the client port's limits, their
//! defaults, and the gate that counts connections in total and per source
//! address.
//!
//! Every limit is a broker setting (see `config.rs` and the README's
//! "Limits and security"). Where Kafka has the same limit the default is
//! Kafka's; where Kafka leaves it unbounded (connections in total and per
//! address) rill picks a bound that a normal deployment never meets.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use rill_client::protocol::MAX_REQUEST_FRAME_BYTES;

/// The client port's limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientLimits {
    /// Client connections open at once, in total (`max_connections`).
    pub max_connections: usize,
    /// Client connections open at once from one source address
    /// (`max_connections_per_ip`).
    pub max_connections_per_ip: usize,
    /// A connection with nothing read, nothing in flight and nothing to
    /// write for this long is closed, ms (`connections_max_idle_ms`, as
    /// Kafka's `connections.max.idle.ms`).
    pub connections_max_idle_ms: u64,
    /// Request bytes being read or waiting to be handled, over all
    /// connections (`queued_max_request_bytes`, as Kafka's
    /// `queued.max.request.bytes`): past it the broker stops reading
    /// sockets until requests finish. At least one whole request frame.
    pub queued_max_request_bytes: usize,
    /// A request frame must arrive whole within this long of its first
    /// byte, ms (`request_read_timeout_ms`): a client that stalls inside a
    /// frame holds part of the queued-bytes budget only this long.
    pub request_read_timeout_ms: u64,
    /// Largest fetch response's record data, bytes (`fetch_max_bytes`, as
    /// Kafka's `fetch.max.bytes`); a request asking for more gets this.
    pub fetch_max_bytes: u32,
    /// Partitions one fetch request may name (`fetch_max_partitions`);
    /// more are answered `InvalidRequest`.
    pub fetch_max_partitions: usize,
    /// Topics one metadata request may name (`metadata_max_topics`); more
    /// are answered `InvalidRequest`.
    pub metadata_max_topics: usize,
    /// A response that cannot be written to its client within this long is
    /// given up with the connection, ms (`client_write_timeout_ms`): a
    /// client that stops reading cannot pin responses for ever.
    pub client_write_timeout_ms: u64,
}

impl Default for ClientLimits {
    fn default() -> Self {
        ClientLimits {
            max_connections: 10_000,
            max_connections_per_ip: 1_000,
            connections_max_idle_ms: 600_000,
            queued_max_request_bytes: 100 << 20,
            request_read_timeout_ms: 30_000,
            fetch_max_bytes: 55 << 20,
            fetch_max_partitions: 10_000,
            metadata_max_topics: 10_000,
            client_write_timeout_ms: 30_000,
        }
    }
}

impl ClientLimits {
    /// Checks that the limits can work together; says which does not.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("max_connections", self.max_connections as u64),
            ("max_connections_per_ip", self.max_connections_per_ip as u64),
            ("connections_max_idle_ms", self.connections_max_idle_ms),
            ("request_read_timeout_ms", self.request_read_timeout_ms),
            ("fetch_max_bytes", u64::from(self.fetch_max_bytes)),
            ("fetch_max_partitions", self.fetch_max_partitions as u64),
            ("metadata_max_topics", self.metadata_max_topics as u64),
            ("client_write_timeout_ms", self.client_write_timeout_ms),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{name} must be at least 1"));
        }
        // A request larger than the whole budget could never be read.
        let frame_max = MAX_REQUEST_FRAME_BYTES + 4;
        if self.queued_max_request_bytes < frame_max {
            return Err(format!(
                "queued_max_request_bytes must be at least one whole request frame ({frame_max} bytes)"
            ));
        }
        // The budget is counted by a semaphore of u32 permits.
        if self.queued_max_request_bytes > u32::MAX as usize {
            return Err(format!(
                "queued_max_request_bytes is at most {} bytes",
                u32::MAX
            ));
        }
        Ok(())
    }
}

/// The limits as given, each optional: as flags (`--max-connections`, …)
/// and as the TOML file's `[limits]` table (`max_connections = …`). A flag
/// wins over the file, which wins over the default.
#[derive(Debug, Default, Clone, clap::Args, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSettings {
    /// Client connections open at once, in total [default: 10000].
    #[arg(long)]
    pub max_connections: Option<usize>,
    /// Client connections open at once from one address [default: 1000].
    #[arg(long)]
    pub max_connections_per_ip: Option<usize>,
    /// Close a client connection idle this long, ms [default: 600000].
    #[arg(long)]
    pub connections_max_idle_ms: Option<u64>,
    /// Request bytes read or queued over all connections before reading
    /// stops [default: 104857600].
    #[arg(long)]
    pub queued_max_request_bytes: Option<usize>,
    /// A request frame must arrive whole within this long, ms [default:
    /// 30000].
    #[arg(long)]
    pub request_read_timeout_ms: Option<u64>,
    /// Largest fetch response's record data, bytes [default: 57671680].
    #[arg(long)]
    pub fetch_max_bytes: Option<u32>,
    /// Partitions one fetch request may name [default: 10000].
    #[arg(long)]
    pub fetch_max_partitions: Option<usize>,
    /// Topics one metadata request may name [default: 10000].
    #[arg(long)]
    pub metadata_max_topics: Option<usize>,
    /// Close a client connection whose response cannot be written within
    /// this long, ms [default: 30000].
    #[arg(long)]
    pub client_write_timeout_ms: Option<u64>,
}

impl LimitSettings {
    /// `self` over `below`: each setting given here wins.
    pub fn or(self, below: LimitSettings) -> LimitSettings {
        LimitSettings {
            max_connections: self.max_connections.or(below.max_connections),
            max_connections_per_ip: self.max_connections_per_ip.or(below.max_connections_per_ip),
            connections_max_idle_ms: self
                .connections_max_idle_ms
                .or(below.connections_max_idle_ms),
            queued_max_request_bytes: self
                .queued_max_request_bytes
                .or(below.queued_max_request_bytes),
            request_read_timeout_ms: self
                .request_read_timeout_ms
                .or(below.request_read_timeout_ms),
            fetch_max_bytes: self.fetch_max_bytes.or(below.fetch_max_bytes),
            fetch_max_partitions: self.fetch_max_partitions.or(below.fetch_max_partitions),
            metadata_max_topics: self.metadata_max_topics.or(below.metadata_max_topics),
            client_write_timeout_ms: self
                .client_write_timeout_ms
                .or(below.client_write_timeout_ms),
        }
    }

    /// The limits in force: defaults where nothing was given, checked.
    pub fn resolve(self) -> Result<ClientLimits, String> {
        let d = ClientLimits::default();
        let limits = ClientLimits {
            max_connections: self.max_connections.unwrap_or(d.max_connections),
            max_connections_per_ip: self
                .max_connections_per_ip
                .unwrap_or(d.max_connections_per_ip),
            connections_max_idle_ms: self
                .connections_max_idle_ms
                .unwrap_or(d.connections_max_idle_ms),
            queued_max_request_bytes: self
                .queued_max_request_bytes
                .unwrap_or(d.queued_max_request_bytes),
            request_read_timeout_ms: self
                .request_read_timeout_ms
                .unwrap_or(d.request_read_timeout_ms),
            fetch_max_bytes: self.fetch_max_bytes.unwrap_or(d.fetch_max_bytes),
            fetch_max_partitions: self.fetch_max_partitions.unwrap_or(d.fetch_max_partitions),
            metadata_max_topics: self.metadata_max_topics.unwrap_or(d.metadata_max_topics),
            client_write_timeout_ms: self
                .client_write_timeout_ms
                .unwrap_or(d.client_write_timeout_ms),
        };
        limits.validate()?;
        Ok(limits)
    }
}

/// Counts open client connections, in total and per source address.
#[derive(Debug)]
pub struct ConnectionGate {
    max_total: usize,
    max_per_ip: usize,
    /// Open connections per source address, and their total. Guards only
    /// these counters: taken once per accept and once per close.
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `max_connections` are open.
    Total,
    /// `max_connections_per_ip` are open from this address.
    PerIp,
}

/// A connection's place at the gate, given back when dropped.
#[derive(Debug)]
pub struct Admitted {
    gate: Arc<ConnectionGate>,
    ip: IpAddr,
}

impl ConnectionGate {
    /// A gate for `limits`.
    pub fn new(limits: &ClientLimits) -> Arc<ConnectionGate> {
        Arc::new(ConnectionGate {
            max_total: limits.max_connections,
            max_per_ip: limits.max_connections_per_ip,
            open: Mutex::new((0, HashMap::new())),
        })
    }

    /// Admits a connection from `ip`, or says which limit it meets.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Admitted, Refusal> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let (total, per_ip) = &mut *open;
        if *total >= self.max_total {
            return Err(Refusal::Total);
        }
        let from_ip = per_ip.entry(ip).or_insert(0);
        if *from_ip >= self.max_per_ip {
            return Err(Refusal::PerIp);
        }
        *from_ip += 1;
        *total += 1;
        Ok(Admitted {
            gate: Arc::clone(self),
            ip,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).0
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut open = self.gate.open.lock().unwrap_or_else(|p| p.into_inner());
        let (total, per_ip) = &mut *open;
        *total -= 1;
        if let Some(n) = per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn the_gate_counts_connections_in_total_and_per_address_and_frees_them_on_close() {
        let gate = ConnectionGate::new(&ClientLimits {
            max_connections: 3,
            max_connections_per_ip: 2,
            ..ClientLimits::default()
        });
        let a1 = gate.admit(ip(1)).expect("first");
        let _a2 = gate.admit(ip(1)).expect("second from the same address");
        assert_eq!(gate.admit(ip(1)).unwrap_err(), Refusal::PerIp);
        let _b1 = gate.admit(ip(2)).expect("another address");
        assert_eq!(gate.admit(ip(3)).unwrap_err(), Refusal::Total);
        assert_eq!(gate.open(), 3);
        drop(a1);
        assert_eq!(gate.open(), 2);
        let _a3 = gate.admit(ip(1)).expect("room again once one closed");
    }

    #[test]
    fn flags_win_over_the_file_which_wins_over_the_defaults() {
        let flags = LimitSettings {
            max_connections: Some(5),
            ..LimitSettings::default()
        };
        let file: LimitSettings =
            toml::from_str("max_connections = 9\nfetch_max_bytes = 1048576\n").expect("parses");
        let limits = flags.or(file).resolve().expect("valid");
        assert_eq!(limits.max_connections, 5);
        assert_eq!(limits.fetch_max_bytes, 1 << 20);
        assert_eq!(limits.connections_max_idle_ms, 600_000);
        assert!(toml::from_str::<LimitSettings>("max_conections = 1").is_err());
        let zero = LimitSettings {
            client_write_timeout_ms: Some(0),
            ..LimitSettings::default()
        };
        assert!(zero.resolve().is_err());
    }

    #[test]
    fn limits_that_cannot_work_are_refused() {
        assert!(ClientLimits::default().validate().is_ok());
        let small_budget = ClientLimits {
            queued_max_request_bytes: 1 << 20,
            ..ClientLimits::default()
        };
        assert!(
            small_budget
                .validate()
                .unwrap_err()
                .contains("whole request frame")
        );
        let zero = ClientLimits {
            max_connections: 0,
            ..ClientLimits::default()
        };
        assert!(zero.validate().unwrap_err().contains("max_connections"));
    }
}
