//! The broker's settings: command-line flags, optionally on top of a TOML
//! file (`--config`). A flag given on the command line wins over the file.

use rill_replication::BrokerId;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::coordinator::GroupSettings;
use crate::error::BrokerError;
use crate::limits::{ClientLimits, LimitSettings};

/// Settings as read from a TOML file; every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// This broker's id.
    pub node_id: Option<u32>,
    /// Where data lives.
    pub data_dir: Option<PathBuf>,
    /// Client listener address.
    pub listen: Option<SocketAddr>,
    /// Address clients are told to use, when it differs from `listen`.
    pub advertised_addr: Option<String>,
    /// How often retention runs, ms.
    pub retention_check_ms: Option<u64>,
    /// Address for other brokers' Raft traffic.
    pub peer_listen: Option<SocketAddr>,
    /// The brokers the cluster started with (the controller's first
    /// voters) and their peer addresses, as `ID=HOST:PORT,...`: the same
    /// list on each of them, never changed after (a broker that joins
    /// later gives `join` instead).
    pub peers: Option<String>,
    /// The client address of a broker of a running cluster this new
    /// broker joins.
    pub join: Option<String>,
    /// A file holding the secret brokers authenticate each other with.
    pub cluster_secret_file: Option<PathBuf>,
    /// Lets brokers talk to peers without a secret.
    pub insecure_peers: Option<bool>,
    /// The client port's limits (a `[limits]` table).
    pub limits: Option<LimitSettings>,
    /// How far past this broker's clock a produced batch's timestamps may
    /// be, ms, for topics that do not set `message.timestamp.after.max.ms`.
    pub message_timestamp_after_max_ms: Option<u64>,
    /// How far behind this broker's clock a produced batch's first
    /// timestamp may be, ms, for topics that do not set
    /// `message.timestamp.before.max.ms`.
    pub message_timestamp_before_max_ms: Option<u64>,
    /// Most partition replicas one broker may host.
    pub max_partition_replicas: Option<u32>,
    /// An idempotent producer idle this long is forgotten by a partition,
    /// ms.
    pub producer_id_expiration_ms: Option<u64>,
    /// A group member silent this long is removed, ms.
    pub group_session_timeout_ms: Option<u64>,
    /// How often group members heartbeat, ms.
    pub group_heartbeat_interval_ms: Option<u32>,
    /// Most members of one group.
    pub group_max_size: Option<usize>,
    /// How long a group member may keep partitions it was told to give
    /// up, ms.
    pub group_rebalance_timeout_ms: Option<u64>,
    /// How long the commits of a group without members are kept, minutes.
    pub offsets_retention_minutes: Option<u64>,
    /// How often the lag of the groups coordinated here is measured, ms.
    pub group_lag_refresh_ms: Option<u64>,
    /// How often compacted partitions are looked at for a compaction
    /// pass, ms.
    pub compaction_check_ms: Option<u64>,
    /// Most bytes a second compaction reads and writes, 0 for no limit.
    pub compaction_bytes_per_sec: Option<u64>,
    /// Address of the metrics and health listener, or `none`.
    pub http_listen: Option<String>,
    /// How long a partition led here stays idle before its Raft group
    /// hibernates, ms, 0 for never.
    pub hibernate_after_ms: Option<u64>,
}

impl FileConfig {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<FileConfig, BrokerError> {
        let text = std::fs::read_to_string(path).map_err(|error| BrokerError::ConfigRead {
            path: path.to_path_buf(),
            error,
        })?;
        toml::from_str(&text).map_err(|error| BrokerError::ConfigParse {
            path: path.to_path_buf(),
            error,
        })
    }
}

/// The settings in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerConfig {
    /// This broker's id. Default 1; never 0 (Raft's "none").
    pub node_id: BrokerId,
    /// Where data lives. Default `./data`.
    pub data_dir: PathBuf,
    /// Client listener address. Default `127.0.0.1:9092`; port 0 picks one.
    pub listen: SocketAddr,
    /// `host:port` clients are told to use. Default: the bound address.
    pub advertised_addr: Option<String>,
    /// How often retention runs, ms. Default 60 s.
    pub retention_check_ms: u64,
    /// Address for other brokers' Raft traffic. Default: this broker's
    /// entry in `peers`.
    pub peer_listen: Option<SocketAddr>,
    /// Every broker of the cluster with its peer address, this one
    /// included. Default: this broker alone (a cluster of one).
    pub peers: BTreeMap<BrokerId, String>,
    /// The client address (`HOST:PORT`) of a broker of a running cluster
    /// this broker joins (see `crate::join`); its peers then come from the
    /// cluster, and `peer_listen` is where the others reach it.
    pub join: Option<String>,
    /// How this broker authenticates its peers.
    pub peer_auth: PeerAuth,
    /// What clients may make this broker hold.
    pub limits: ClientLimits,
    /// A produced batch whose largest timestamp is more than this far
    /// past the leader's clock is refused (`InvalidTimestamp`), ms; a
    /// topic's `message.timestamp.after.max.ms` wins. Default 1 hour, as
    /// Kafka 4's: one far-future record would otherwise keep its segment
    /// from age retention for as long.
    pub message_timestamp_after_max_ms: Option<u64>,
    /// A produced batch whose first timestamp is more than this far behind
    /// the leader's clock is refused, ms; a topic's
    /// `message.timestamp.before.max.ms` wins. Default `None`: no limit.
    pub message_timestamp_before_max_ms: Option<u64>,
    /// Most partition replicas one broker may host: a topic creation that
    /// would place more on any broker is refused. Checked by the
    /// controller leader with its own setting. Default 10,000.
    pub max_partition_replicas: u32,
    /// A partition forgets an idempotent producer whose newest batch there
    /// is older than this, ms (Kafka's `producer.id.expiration.ms`): a
    /// retry it sends later is no longer recognised. Default 1 day.
    pub producer_id_expiration_ms: u64,
    /// How the group coordinator treats groups: session timeout (default
    /// 45 s), heartbeat interval (default 5 s), group size (default
    /// 1,000), rebalance timeout (default 5 minutes), offsets retention
    /// (default 7 days).
    pub groups: GroupSettings,
    /// How compacted topics' partitions are compacted here: checked every
    /// `check_ms` (default 15 s, Kafka's `log.cleaner.backoff.ms`), at
    /// most `bytes_per_sec` read and written (default 64 MiB/s).
    pub compaction: CompactorSettings,
    /// Where `/metrics`, `/health/live` and `/health/ready` are served.
    /// Default `127.0.0.1:9644` (beside the client port, as Redpanda's
    /// admin port); `None` (`--http-listen none`) serves none.
    pub http_listen: Option<SocketAddr>,
    /// How long a partition led here stays idle before its Raft group
    /// hibernates, ms (default 2 s); `None` (0): never.
    pub hibernate_after_ms: Option<u64>,
}

/// Default [`BrokerConfig::hibernate_after_ms`].
pub const HIBERNATE_AFTER_MS_DEFAULT: u64 = 2_000;

/// Default [`BrokerConfig::http_listen`].
pub const HTTP_LISTEN_DEFAULT: &str = "127.0.0.1:9644";

/// How the compactor thread runs (see `compactor`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactorSettings {
    /// How often every compacted partition is looked at, ms.
    pub check_ms: u64,
    /// Most bytes a second a pass reads and writes; `None` for no limit.
    pub bytes_per_sec: Option<u64>,
    /// Most memory a pass's key map takes, bytes.
    pub key_map_bytes_max: usize,
}

/// Default [`CompactorSettings::check_ms`].
pub const COMPACTION_CHECK_MS_DEFAULT: u64 = 15_000;
/// Default [`CompactorSettings::bytes_per_sec`]: 64 MiB/s, a fraction of
/// what a disk the log lives on does, so a pass never starves produces.
pub const COMPACTION_BYTES_PER_SEC_DEFAULT: u64 = 64 << 20;

/// How a broker authenticates its peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerAuth {
    /// A cluster of one: there are no peers.
    NoPeers,
    /// With the secret in this file (`--cluster-secret-file`).
    Secret(PathBuf),
    /// Not at all (`--insecure-peers`): anyone who reaches the peer port
    /// can pose as a broker.
    Insecure,
}

/// Default of [`BrokerConfig::message_timestamp_after_max_ms`]: 1 hour.
pub const MESSAGE_TIMESTAMP_AFTER_MAX_MS_DEFAULT: u64 = 3_600_000;
/// Default of [`BrokerConfig::max_partition_replicas`].
pub const MAX_PARTITION_REPLICAS_DEFAULT: u32 = 10_000;

/// A millisecond bound given as a setting: `i64::MAX` or more is the same
/// as none, since no clock difference can reach it.
fn ms_bound(ms: u64) -> Option<u64> {
    (ms < i64::MAX as u64).then_some(ms)
}

/// Parses `ID=HOST:PORT,...`.
pub fn parse_peers(text: &str) -> Result<BTreeMap<BrokerId, String>, String> {
    let mut peers = BTreeMap::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (id, addr) = item
            .split_once('=')
            .ok_or_else(|| format!("{item:?} is not ID=HOST:PORT"))?;
        let id: u32 = id
            .trim()
            .parse()
            .map_err(|_| format!("{id:?} is not a broker id"))?;
        if id == 0 {
            return Err("broker ids start at 1".into());
        }
        if !addr.contains(':') {
            return Err(format!("{addr:?} is not HOST:PORT"));
        }
        if peers
            .insert(BrokerId(u64::from(id)), addr.trim().to_string())
            .is_some()
        {
            return Err(format!("broker {id} is listed twice"));
        }
    }
    Ok(peers)
}

impl BrokerConfig {
    /// Defaults, overridden by the file, overridden by flags.
    pub fn resolve(file: FileConfig, flags: Flags) -> Result<BrokerConfig, BrokerError> {
        Self::resolve_settings(file, flags).map_err(BrokerError::InvalidSettings)
    }

    /// [`BrokerConfig::resolve`], with what is wrong in words: the
    /// checks it calls ([`parse_peers`], the limits) explain in words too.
    fn resolve_settings(file: FileConfig, flags: Flags) -> Result<BrokerConfig, String> {
        let Flags {
            node_id,
            data_dir,
            listen,
            advertised_addr,
            peer_listen,
            peers,
            join,
            cluster_secret_file,
            insecure_peers,
            limits,
            message_timestamp_after_max_ms,
            message_timestamp_before_max_ms,
            max_partition_replicas,
            producer_id_expiration_ms,
            group_session_timeout_ms,
            group_heartbeat_interval_ms,
            group_max_size,
            group_rebalance_timeout_ms,
            offsets_retention_minutes,
            group_lag_refresh_ms,
            compaction_check_ms,
            compaction_bytes_per_sec,
            http_listen,
            hibernate_after_ms,
        } = flags;
        let http_listen = match http_listen
            .or(file.http_listen)
            .unwrap_or_else(|| HTTP_LISTEN_DEFAULT.to_string())
            .as_str()
        {
            "none" => None,
            addr => Some(
                addr.parse::<SocketAddr>()
                    .map_err(|_| format!("--http-listen takes IP:PORT or none, not {addr:?}"))?,
            ),
        };
        let compaction = CompactorSettings {
            check_ms: compaction_check_ms
                .or(file.compaction_check_ms)
                .unwrap_or(COMPACTION_CHECK_MS_DEFAULT),
            bytes_per_sec: match compaction_bytes_per_sec
                .or(file.compaction_bytes_per_sec)
                .unwrap_or(COMPACTION_BYTES_PER_SEC_DEFAULT)
            {
                0 => None,
                n => Some(n),
            },
            key_map_bytes_max: rill_storage::compaction::KEY_MAP_BYTES_DEFAULT,
        };
        if compaction.check_ms == 0 {
            return Err("compaction.check.ms must be at least 1".into());
        }
        let defaults = GroupSettings::default();
        let groups = GroupSettings {
            session_timeout_ms: group_session_timeout_ms
                .or(file.group_session_timeout_ms)
                .unwrap_or(defaults.session_timeout_ms),
            heartbeat_interval_ms: group_heartbeat_interval_ms
                .or(file.group_heartbeat_interval_ms)
                .unwrap_or(defaults.heartbeat_interval_ms),
            group_max_size: group_max_size
                .or(file.group_max_size)
                .unwrap_or(defaults.group_max_size),
            rebalance_timeout_ms: group_rebalance_timeout_ms
                .or(file.group_rebalance_timeout_ms)
                .unwrap_or(defaults.rebalance_timeout_ms),
            offsets_retention_ms: match offsets_retention_minutes.or(file.offsets_retention_minutes)
            {
                Some(m) => m.saturating_mul(60_000),
                None => defaults.offsets_retention_ms,
            },
            lag_refresh_ms: group_lag_refresh_ms
                .or(file.group_lag_refresh_ms)
                .unwrap_or(defaults.lag_refresh_ms),
        };
        if groups.lag_refresh_ms < 100 {
            return Err(format!(
                "group.lag.refresh.ms ({}) must be at least 100",
                groups.lag_refresh_ms
            ));
        }
        if groups.heartbeat_interval_ms == 0
            || u64::from(groups.heartbeat_interval_ms) >= groups.session_timeout_ms
        {
            return Err(format!(
                "group.heartbeat.interval.ms ({}) must be at least 1 and below group.session.timeout.ms ({})",
                groups.heartbeat_interval_ms, groups.session_timeout_ms
            ));
        }
        if groups.group_max_size == 0 {
            return Err("group.max.size must be at least 1".into());
        }
        let node_id = match node_id.or(file.node_id).unwrap_or(1) {
            0 => return Err("broker ids start at 1 (--node-id)".into()),
            id => BrokerId(u64::from(id)),
        };
        let peers = match peers.or(file.peers) {
            Some(text) => parse_peers(&text)?,
            None => BTreeMap::new(),
        };
        if !peers.is_empty() && !peers.contains_key(&node_id) {
            return Err(format!("--peers does not list this broker ({node_id})"));
        }
        let join = join.or(file.join);
        let peer_listen = peer_listen.or(file.peer_listen);
        if join.is_some() {
            if !peers.is_empty() {
                return Err("--join and --peers contradict each other: a broker joining a running cluster learns its peers from it; give one".into());
            }
            match peer_listen {
                Some(a) if !a.ip().is_unspecified() && a.port() != 0 => {}
                _ => return Err("--join needs --peer-listen IP:PORT with the IP and port the other brokers reach this one at (not 0.0.0.0, not port 0)".into()),
            }
        }
        let cluster_secret_file = cluster_secret_file.or(file.cluster_secret_file);
        let insecure = insecure_peers || file.insecure_peers.unwrap_or(false);
        let peer_auth = match (&cluster_secret_file, insecure) {
            _ if peers.len() <= 1 && join.is_none() => PeerAuth::NoPeers,
            (Some(path), false) => PeerAuth::Secret(path.clone()),
            (Some(_), true) => {
                return Err(
                    "--cluster-secret-file and --insecure-peers contradict each other; give one"
                        .into(),
                );
            }
            (None, true) => PeerAuth::Insecure,
            (None, false) => {
                return Err("a broker with peers needs --cluster-secret-file FILE (the same secret on every broker; `head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n' > FILE; chmod 600 FILE`), or --insecure-peers to let anyone who reaches the peer port pose as a broker".into());
            }
        };
        Ok(BrokerConfig {
            node_id,
            data_dir: data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from("data")),
            listen: listen
                .or(file.listen)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9092))),
            advertised_addr: advertised_addr.or(file.advertised_addr),
            retention_check_ms: file.retention_check_ms.unwrap_or(60_000),
            peer_listen,
            peers,
            join,
            peer_auth,
            limits: limits.or(file.limits.unwrap_or_default()).resolve()?,
            message_timestamp_after_max_ms: ms_bound(
                message_timestamp_after_max_ms
                    .or(file.message_timestamp_after_max_ms)
                    .unwrap_or(MESSAGE_TIMESTAMP_AFTER_MAX_MS_DEFAULT),
            ),
            message_timestamp_before_max_ms: message_timestamp_before_max_ms
                .or(file.message_timestamp_before_max_ms)
                .and_then(ms_bound),
            max_partition_replicas: max_partition_replicas
                .or(file.max_partition_replicas)
                .unwrap_or(MAX_PARTITION_REPLICAS_DEFAULT),
            producer_id_expiration_ms: producer_id_expiration_ms
                .or(file.producer_id_expiration_ms)
                .unwrap_or(rill_storage::LogConfig::default().producer_expiration_ms),
            groups,
            compaction,
            http_listen,
            hibernate_after_ms: match hibernate_after_ms
                .or(file.hibernate_after_ms)
                .unwrap_or(HIBERNATE_AFTER_MS_DEFAULT)
            {
                0 => None,
                ms => Some(ms),
            },
        })
    }

    /// The controller's voters: every broker of the cluster.
    pub fn voters(&self) -> Vec<BrokerId> {
        if self.peers.is_empty() {
            vec![self.node_id]
        } else {
            self.peers.keys().copied().collect()
        }
    }
}

/// Settings given as flags (each wins over the file).
#[derive(Debug, Default)]
pub struct Flags {
    /// `--node-id`.
    pub node_id: Option<u32>,
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--listen`.
    pub listen: Option<SocketAddr>,
    /// `--advertised-addr`.
    pub advertised_addr: Option<String>,
    /// `--peer-listen`.
    pub peer_listen: Option<SocketAddr>,
    /// `--peers`.
    pub peers: Option<String>,
    /// `--join`.
    pub join: Option<String>,
    /// `--cluster-secret-file`.
    pub cluster_secret_file: Option<PathBuf>,
    /// `--insecure-peers`.
    pub insecure_peers: bool,
    /// The client port's limits.
    pub limits: LimitSettings,
    /// `--message-timestamp-after-max-ms`.
    pub message_timestamp_after_max_ms: Option<u64>,
    /// `--message-timestamp-before-max-ms`.
    pub message_timestamp_before_max_ms: Option<u64>,
    /// `--max-partition-replicas`.
    pub max_partition_replicas: Option<u32>,
    /// `--producer-id-expiration-ms`.
    pub producer_id_expiration_ms: Option<u64>,
    /// `--group-session-timeout-ms`.
    pub group_session_timeout_ms: Option<u64>,
    /// `--group-heartbeat-interval-ms`.
    pub group_heartbeat_interval_ms: Option<u32>,
    /// `--group-max-size`.
    pub group_max_size: Option<usize>,
    /// `--group-rebalance-timeout-ms`.
    pub group_rebalance_timeout_ms: Option<u64>,
    /// `--offsets-retention-minutes`.
    pub offsets_retention_minutes: Option<u64>,
    /// `--group-lag-refresh-ms`.
    pub group_lag_refresh_ms: Option<u64>,
    /// `--compaction-check-ms`.
    pub compaction_check_ms: Option<u64>,
    /// `--compaction-bytes-per-sec`.
    pub compaction_bytes_per_sec: Option<u64>,
    /// `--http-listen`.
    pub http_listen: Option<String>,
    /// How long a partition led here stays idle before its Raft group
    /// hibernates, ms, 0 for never.
    pub hibernate_after_ms: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file_which_wins_over_defaults() {
        let file: FileConfig = toml::from_str("node_id = 7\ndata_dir = \"/var/rill\"\n").unwrap();
        let c = BrokerConfig::resolve(
            file,
            Flags {
                data_dir: Some("/tmp/x".into()),
                ..Flags::default()
            },
        )
        .unwrap();
        assert_eq!(c.node_id, BrokerId(7));
        assert_eq!(c.voters(), [BrokerId(7)]);
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.listen, "127.0.0.1:9092".parse().unwrap());
        assert!(toml::from_str::<FileConfig>("nope = 1").is_err());
    }

    #[test]
    fn limits_default_and_come_from_the_file_or_flags() {
        let c = BrokerConfig::resolve(FileConfig::default(), Flags::default()).unwrap();
        assert_eq!(c.message_timestamp_after_max_ms, Some(3_600_000));
        assert_eq!(c.message_timestamp_before_max_ms, None);
        assert_eq!(c.max_partition_replicas, 10_000);
        assert_eq!(c.producer_id_expiration_ms, 86_400_000);
        let file: FileConfig = toml::from_str(
            "max_partition_replicas = 10\nmessage_timestamp_before_max_ms = 86400000\n\
             message_timestamp_after_max_ms = 9223372036854775807\n\
             producer_id_expiration_ms = 60000\n",
        )
        .unwrap();
        let c = BrokerConfig::resolve(
            file,
            Flags {
                max_partition_replicas: Some(20),
                ..Flags::default()
            },
        )
        .unwrap();
        assert_eq!(c.max_partition_replicas, 20);
        assert_eq!(c.producer_id_expiration_ms, 60_000);
        assert_eq!(c.message_timestamp_before_max_ms, Some(86_400_000));
        assert_eq!(
            c.message_timestamp_after_max_ms, None,
            "i64::MAX is no limit"
        );
    }

    #[test]
    fn peers_list_every_broker_and_must_include_this_one() {
        let flags = |id, peers: &str| Flags {
            node_id: Some(id),
            peers: Some(peers.into()),
            insecure_peers: true,
            ..Flags::default()
        };
        let c = BrokerConfig::resolve(
            FileConfig::default(),
            flags(2, "1=127.0.0.1:9192, 2=127.0.0.1:9193,3=h:1"),
        )
        .unwrap();
        assert_eq!(c.voters(), [BrokerId(1), BrokerId(2), BrokerId(3)]);
        assert_eq!(c.peers[&BrokerId(2)], "127.0.0.1:9193");
        assert!(BrokerConfig::resolve(FileConfig::default(), flags(4, "1=a:1")).is_err());
        let zero = Flags {
            node_id: Some(0),
            ..Flags::default()
        };
        assert!(BrokerConfig::resolve(FileConfig::default(), zero).is_err());
        for bad in ["1", "x=a:1", "0=a:1", "1=a:1,1=b:2", "1=nocolon"] {
            assert!(parse_peers(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_joining_broker_gives_a_dialable_peer_listener_and_no_peers() {
        let flags = |peers: Option<&str>, listen: Option<&str>, insecure| Flags {
            node_id: Some(4),
            join: Some("127.0.0.1:9092".into()),
            peers: peers.map(str::to_string),
            peer_listen: listen.map(|l| l.parse().unwrap()),
            insecure_peers: insecure,
            ..Flags::default()
        };
        let resolve = |f| BrokerConfig::resolve_settings(FileConfig::default(), f);
        let c = resolve(flags(None, Some("127.0.0.1:9194"), true)).unwrap();
        assert_eq!(c.join.as_deref(), Some("127.0.0.1:9092"));
        assert_eq!(c.peer_auth, PeerAuth::Insecure, "it has peers to come");
        let err = resolve(flags(
            Some("4=127.0.0.1:9194"),
            Some("127.0.0.1:9194"),
            true,
        ));
        assert!(err.unwrap_err().contains("contradict"));
        for listen in [None, Some("0.0.0.0:9194"), Some("127.0.0.1:0")] {
            let err = resolve(flags(None, listen, true)).unwrap_err();
            assert!(err.contains("--peer-listen"), "{listen:?}: {err}");
        }
        let err = resolve(flags(None, Some("127.0.0.1:9194"), false)).unwrap_err();
        assert!(err.contains("--cluster-secret-file"), "{err}");
    }

    #[test]
    fn a_broker_with_peers_needs_a_secret_or_an_explicit_insecure_choice() {
        let flags = |secret: Option<&str>, insecure| Flags {
            node_id: Some(1),
            peers: Some("1=127.0.0.1:9192,2=127.0.0.1:9193".into()),
            cluster_secret_file: secret.map(PathBuf::from),
            insecure_peers: insecure,
            ..Flags::default()
        };
        let resolve = |f| BrokerConfig::resolve(FileConfig::default(), f);
        let refused = resolve(flags(None, false)).unwrap_err().to_string();
        assert!(refused.contains("--cluster-secret-file"), "{refused}");
        assert!(refused.contains("--insecure-peers"), "{refused}");
        assert_eq!(
            resolve(flags(Some("/etc/rill/secret"), false))
                .unwrap()
                .peer_auth,
            PeerAuth::Secret("/etc/rill/secret".into())
        );
        assert_eq!(
            resolve(flags(None, true)).unwrap().peer_auth,
            PeerAuth::Insecure
        );
        assert!(resolve(flags(Some("/etc/rill/secret"), true)).is_err());
        // From the file too.
        let file: FileConfig = toml::from_str(
            "peers = \"1=127.0.0.1:9192,2=127.0.0.1:9193\"\ncluster_secret_file = \"/s\"\n",
        )
        .unwrap();
        assert_eq!(
            BrokerConfig::resolve(file, Flags::default())
                .unwrap()
                .peer_auth,
            PeerAuth::Secret("/s".into())
        );
        // A cluster of one has no peers to authenticate.
        assert_eq!(
            resolve(Flags::default()).unwrap().peer_auth,
            PeerAuth::NoPeers
        );
    }
}
