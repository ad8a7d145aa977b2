//! `rill-broker`: one broker of a rill cluster. With `--peers` it joins the
//! brokers named there (each partition a Raft group over its replicas);
//! without, it is a cluster of one.
//!
//! With no arguments it listens on 127.0.0.1:9092 with data in `./data`.
//!
//! Start-up order lives here; every thread and long-lived task is started
//! (and, on SIGINT or SIGTERM, stopped and joined) by
//! `rill_broker::threads`, which documents them all.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use rill_broker::config::{BrokerConfig, FileConfig, Flags, PeerAuth};
use rill_broker::identity::{FilePeerBook, Identity};
use rill_broker::limits::LimitSettings;
use rill_broker::partition::TimestampBounds;
use rill_broker::raft::{self, RaftConfig};
use rill_broker::state::Broker;
use rill_broker::threads::{self, Tasks, Threads};
use rill_replication::handshake::{ClusterSecret, PeerIdentity};
use rill_replication::transport::Dialling;
use tokio::net::TcpListener;

/// The rill broker.
#[derive(Debug, Parser)]
#[command(
    name = "rill-broker",
    version,
    about = "The rill broker: an append-only, replicated log"
)]
struct Args {
    /// This broker's id [default: 1].
    #[arg(long)]
    node_id: Option<u32>,
    /// Directory for data [default: ./data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Address for clients [default: 127.0.0.1:9092]; port 0 picks a free one.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// host:port clients are told to connect to [default: the bound address].
    #[arg(long)]
    advertised_addr: Option<String>,
    /// Address for other brokers' Raft traffic [default: this broker's
    /// entry in --peers].
    #[arg(long)]
    peer_listen: Option<SocketAddr>,
    /// Every broker the cluster starts with and its peer address, this one
    /// included, the same on each of them and never changed after (a
    /// broker added later uses --join): ID=HOST:PORT,... [default: this
    /// broker alone, a cluster of one, which no broker can join].
    #[arg(long)]
    peers: Option<String>,
    /// Join a running cluster as a new broker, through any of its brokers'
    /// client address (HOST:PORT), instead of --peers: the cluster records
    /// this broker (--node-id, an id no broker has) with --peer-listen as
    /// its peer address, which must be one the others reach. Replicas move
    /// onto it once an operator runs `rill cluster balance`. Later starts
    /// need no other broker: what it joined with is kept in its data
    /// directory.
    #[arg(long)]
    join: Option<String>,
    /// A file holding the secret brokers authenticate each other with, the
    /// same on every broker; readable by its owner alone. Needed when
    /// --peers lists other brokers.
    #[arg(long)]
    cluster_secret_file: Option<PathBuf>,
    /// Let brokers talk to peers without a secret: anyone who reaches the
    /// peer port can then pose as a broker.
    #[arg(long)]
    insecure_peers: bool,
    /// The client port's limits (also a `[limits]` table in the file).
    #[command(flatten)]
    limits: LimitSettings,
    /// A produced batch stamped more than this many ms past this broker's
    /// clock is refused, for topics without message.timestamp.after.max.ms
    /// [default: 3600000, one hour].
    #[arg(long)]
    message_timestamp_after_max_ms: Option<u64>,
    /// A produced batch stamped more than this many ms before this broker's
    /// clock is refused, for topics without message.timestamp.before.max.ms
    /// [default: no limit].
    #[arg(long)]
    message_timestamp_before_max_ms: Option<u64>,
    /// Most partition replicas one broker may host; a topic creation past
    /// it is refused (checked by the controller leader) [default: 10000].
    #[arg(long)]
    max_partition_replicas: Option<u32>,
    /// A partition forgets an idempotent producer whose newest batch there
    /// is older than this, ms (a retry sent later is stored again)
    /// [default: 86400000, 1 day].
    #[arg(long)]
    producer_id_expiration_ms: Option<u64>,
    /// A consumer group member that sends no heartbeat for this long, or
    /// keeps partitions it was told to give up for this long, is removed
    /// and its partitions go to the others [default: 45000].
    #[arg(long)]
    group_session_timeout_ms: Option<u64>,
    /// How often consumer group members are told to heartbeat
    /// [default: 5000].
    #[arg(long)]
    group_heartbeat_interval_ms: Option<u32>,
    /// Most members of one consumer group [default: 1000].
    #[arg(long)]
    group_max_size: Option<usize>,
    /// A consumer group member told to give partitions up that has not
    /// released them this long later is removed [default: 300000].
    #[arg(long)]
    group_rebalance_timeout_ms: Option<u64>,
    /// How long the committed offsets of a group without members are kept,
    /// minutes [default: 10080, 7 days].
    #[arg(long)]
    offsets_retention_minutes: Option<u64>,
    /// How often the lag of the consumer groups coordinated here is
    /// measured for /metrics (rill_consumer_group_lag), ms, at least 100
    /// [default: 10000].
    #[arg(long)]
    group_lag_refresh_ms: Option<u64>,
    /// How often the partitions of compacted topics (cleanup.policy
    /// compact) are looked at for a compaction pass, ms [default: 15000].
    #[arg(long)]
    compaction_check_ms: Option<u64>,
    /// Most bytes a second compaction reads and writes, 0 for no limit
    /// [default: 67108864, 64 MiB].
    #[arg(long)]
    compaction_bytes_per_sec: Option<u64>,
    /// Where Prometheus metrics (/metrics) and health (/health/live,
    /// /health/ready) are served over HTTP, IP:PORT, or none
    /// [default: 127.0.0.1:9644].
    #[arg(long)]
    http_listen: Option<String>,
    /// How long a partition led here stays idle before its Raft group
    /// hibernates (stops ticking and heartbeating until a write, a message
    /// or a broker's failure wakes it), ms, 0 for never [default: 2000].
    #[arg(long)]
    hibernate_after_ms: Option<u64>,
    /// How log lines are written to stderr: text for people, json (one
    /// object per line) for log shippers.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// The least important lines logged: error, warn, info, debug or
    /// trace. RUST_LOG, when set, wins and may set levels per module
    /// (e.g. RUST_LOG=info,raft=info adds raft-rs's per-group lines, which
    /// are at debug).
    #[arg(long, value_name = "LEVEL", default_value = "info")]
    log_level: tracing::Level,
    /// A TOML file with any of: node_id, data_dir, listen, advertised_addr,
    /// peer_listen, peers, join, cluster_secret_file, insecure_peers,
    /// retention_check_ms, message_timestamp_after_max_ms,
    /// message_timestamp_before_max_ms, max_partition_replicas,
    /// producer_id_expiration_ms,
    /// group_session_timeout_ms, group_heartbeat_interval_ms,
    /// group_max_size, group_rebalance_timeout_ms,
    /// offsets_retention_minutes, group_lag_refresh_ms, compaction_check_ms,
    /// compaction_bytes_per_sec, http_listen, hibernate_after_ms, and a
    /// [limits] table.
    /// Flags win over it.
    #[arg(long)]
    config: Option<PathBuf>,
}

/// How log lines are written (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Raises the open-file limit to its hard maximum: every segment is a file.
fn raise_nofile_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                tracing::warn!("could not raise the open-file limit");
            }
        }
    }
}

/// SIGINT or SIGTERM, whichever comes first. The handlers are installed
/// here, before the broker says it is listening: a signal sent once it
/// does is never the default action's (an exit without the stop).
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("handling SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("handling SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

fn main() {
    if let Err(e) = run() {
        eprintln!("rill-broker: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    // Lines are written by a thread of their own: a slow log file must not
    // stall the Raft thread (see `logwriter`). Dropped on an error, the
    // threads write what is still queued.
    let mut threads = Threads::default();
    let log_writer = threads.start_log_writer(std::io::stderr())?;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(args.log_level.to_string()));
    match args.log_format {
        LogFormat::Text => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(log_writer)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        // One JSON object per line, for log shippers.
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .with_writer(log_writer)
            .init(),
    }
    // Before any frame is read: frame buffers are then reused, not faulted
    // in afresh (see `heap`).
    if let Err(e) = rill_broker::heap::keep_freed_memory() {
        tracing::warn!(error = %e, "the heap keeps its default trimming");
    }
    let file = match &args.config {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    };
    let mut config = BrokerConfig::resolve(
        file,
        Flags {
            node_id: args.node_id,
            data_dir: args.data_dir,
            listen: args.listen,
            advertised_addr: args.advertised_addr,
            peer_listen: args.peer_listen,
            peers: args.peers,
            cluster_secret_file: args.cluster_secret_file,
            join: args.join,
            insecure_peers: args.insecure_peers,
            limits: args.limits,
            message_timestamp_after_max_ms: args.message_timestamp_after_max_ms,
            message_timestamp_before_max_ms: args.message_timestamp_before_max_ms,
            max_partition_replicas: args.max_partition_replicas,
            producer_id_expiration_ms: args.producer_id_expiration_ms,
            group_session_timeout_ms: args.group_session_timeout_ms,
            group_heartbeat_interval_ms: args.group_heartbeat_interval_ms,
            group_max_size: args.group_max_size,
            group_rebalance_timeout_ms: args.group_rebalance_timeout_ms,
            offsets_retention_minutes: args.offsets_retention_minutes,
            group_lag_refresh_ms: args.group_lag_refresh_ms,
            compaction_check_ms: args.compaction_check_ms,
            compaction_bytes_per_sec: args.compaction_bytes_per_sec,
            hibernate_after_ms: args.hibernate_after_ms,
            http_listen: args.http_listen,
        },
    )?;
    let secret = match &config.peer_auth {
        PeerAuth::Secret(path) => ClusterSecret::load(path)?,
        PeerAuth::NoPeers => ClusterSecret::insecure(),
        PeerAuth::Insecure => {
            tracing::warn!(
                "--insecure-peers: peers are not authenticated; anyone who reaches the peer port can pose as a broker"
            );
            ClusterSecret::insecure()
        }
    };
    raise_nofile_limit();
    // One broker per data directory, for the life of the process: every
    // replica's log skips a lock of its own (`LogConfig::lock_dir`), one
    // open file fewer per replica.
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating the data directory {}", config.data_dir.display()))?;
    let _data_dir_lock = rill_storage::lock_directory(&config.data_dir).with_context(|| {
        format!(
            "locking the data directory {} (is another broker using it?)",
            config.data_dir.display()
        )
    })?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let stopping = runtime.block_on(async {
        let threads = &mut threads;
        let mut tasks = Tasks::default();
        let id = config.node_id;
        let identity = Identity::load_or_create(&config.data_dir, id)?;
        tracing::info!(incarnation = %identity.incarnation, rejoining = identity.rejoining, "data directory identity");
        let cluster = Arc::new(std::sync::OnceLock::new());
        if identity.cluster_id.is_known() {
            let _ = cluster.set(identity.cluster_id);
        }
        let rejoin_requested = Arc::new(std::sync::atomic::AtomicBool::new(false));
        // Metrics and health first: liveness answers while the logs recover.
        let http = match config.http_listen {
            Some(addr) => {
                let metrics = rill_broker::metrics::install()
                    .map_err(|e| anyhow::anyhow!("installing the metrics recorder: {e}"))?;
                let listener = rill_broker::http::bind(addr)
                    .await
                    .with_context(|| format!("binding the HTTP listener {addr} (--http-listen)"))?;
                let state = Arc::new(rill_broker::http::HttpState::new(metrics, id));
                // Scripts and tests read the address from this line.
                eprintln!("metrics and health on http://{}", listener.local_addr()?);
                tasks.start_http(listener, Arc::clone(&state));
                Some(state)
            }
            None => None,
        };
        if config.join.is_none()
            && rill_broker::join::Joined::load(&config.data_dir, id)?.is_some()
        {
            anyhow::bail!(
                "{} holds {}: this broker joined a running cluster; start it with --join as it was started",
                config.data_dir.display(),
                rill_broker::join::JOINED_FILE
            );
        }
        // Peers first, so votes can flow while replicas recover.
        let (inbound_tx, inbound_rx) = tokio::sync::mpsc::channel(1024);
        let mut voters = config.voters();
        let transport = if config.peers.len() > 1 || config.join.is_some() {
            let listen = match config.peer_listen {
                Some(a) => a,
                None => config.peers[&config.node_id]
                    .parse()
                    .context("this broker's --peers entry is not an IP:PORT to listen on; give --peer-listen")?,
            };
            // Bound before joining: the cluster records a broker that
            // can listen where it says.
            let listener = TcpListener::bind(listen)
                .await
                .with_context(|| format!("binding the peer listener {listen}"))?;
            tracing::info!("peers on {}", listener.local_addr()?);
            // A broker joining a running cluster learns its peers and the
            // controller's first voters from it (once; kept after), and
            // dials every one of them: they were there first.
            let dialling = match &config.join {
                Some(bootstrap) => {
                    let my_addr = listen.to_string();
                    let joined =
                        rill_broker::join::join(&config.data_dir, bootstrap, id, &my_addr).await?;
                    config.peers = joined.peers_with(id, &my_addr);
                    voters = joined.first_voters();
                    Dialling::Every
                }
                None => Dialling::HigherIds,
            };
            let peers = config.peers.clone();
            let book = FilePeerBook::open(
                &config.data_dir,
                identity.incarnation,
                Arc::clone(&rejoin_requested),
            )?;
            let me = PeerIdentity {
                secret,
                incarnation: identity.incarnation,
                cluster: Arc::clone(&cluster),
                book: Arc::new(book),
            };
            Some(tasks.start_peer_transport(id, listener, peers, dialling, inbound_tx, me))
        } else {
            None
        };
        // Local recovery before the client port opens.
        let raft_config = RaftConfig {
            identity,
            cluster,
            rejoin_requested,
            id,
            data_dir: config.data_dir.clone(),
            voters,
            timestamps: TimestampBounds {
                after_max_ms: config.message_timestamp_after_max_ms,
                before_max_ms: config.message_timestamp_before_max_ms,
            },
            max_partition_replicas: config.max_partition_replicas,
            producer_id_expiration_ms: config.producer_id_expiration_ms,
            hibernate_after_ms: config.hibernate_after_ms,
        };
        let janitor = threads.start_janitor(&config.data_dir)?;
        let opened =
            tokio::task::spawn_blocking(move || raft::open(raft_config, transport, janitor))
                .await??;
        let (raft, published) = threads.start_raft(opened)?;
        threads.start_compactor(raft.clone(), Arc::clone(&published), config.compaction)?;
        tasks.start_raft_feeders(&raft, inbound_rx);
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let bound = listener.local_addr()?;
        let (host, port) = match &config.advertised_addr {
            Some(a) => {
                let (h, p) = a.rsplit_once(':').context("--advertised-addr is host:port")?;
                (h.to_string(), p.parse().context("--advertised-addr port")?)
            }
            None => (bound.ip().to_string(), bound.port()),
        };
        let broker = Arc::new(Broker::new(
            id,
            host,
            port,
            raft.clone(),
            published,
            config.limits.clone(),
            config.groups,
            TimestampBounds {
                after_max_ms: config.message_timestamp_after_max_ms,
                before_max_ms: config.message_timestamp_before_max_ms,
            },
            config.peers.clone(),
        ));
        tasks.start_serving(listener, &broker, config.retention_check_ms);
        if let Some(http) = &http {
            http.serving(
                Arc::clone(&broker.published),
                Arc::clone(&broker.groups.lag),
            );
        }
        tracing::info!(node_id = %config.node_id, data_dir = %config.data_dir.display(), "ready");
        let signalled = shutdown_signal()?;
        // Scripts and tests wait for this line, whatever the log level.
        eprintln!("listening on {bound}");
        signalled.await;
        if let Some(http) = &http {
            http.stopping();
        }
        tracing::info!("shutting down");
        // Connections drained, then leaderships handed over and every log
        // synced (see `threads`).
        let late = tasks.stop(&raft).await;
        anyhow::Ok(late)
    })?;
    let mut late = stopping;
    late.extend(threads.join());
    runtime.shutdown_timeout(std::time::Duration::from_millis(
        threads::RUNTIME_STOP_MS_MAX,
    ));
    if late.is_empty() {
        tracing::info!("{}", threads::ALL_JOINED);
    } else {
        tracing::warn!(?late, "stopped: not everything ended by its deadline");
    }
    if !threads.stop_log_writer() {
        eprintln!("rill-broker: the log writer had not ended by its deadline");
    }
    Ok(())
}
