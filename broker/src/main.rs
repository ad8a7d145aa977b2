//! `rill-broker`: one broker of a rill cluster. With `--peers` it joins the
//! brokers named there (each partition a Raft group over its replicas);
//! without, it is a cluster of one.
//!
//! With no arguments it listens on 127.0.0.1:9092 with data in `./data`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use rill_broker::config::{BrokerConfig, FileConfig, Flags, PeerAuth};
use rill_broker::identity::{FilePeerBook, Identity};
use rill_broker::limits::LimitSettings;
use rill_broker::logwriter::LogWriter;
use rill_broker::partition::TimestampBounds;
use rill_broker::raft::{self, RaftConfig};
use rill_broker::server::serve;
use rill_broker::state::Broker;
use rill_client::protocol::messages::BrokerMetadata;
use rill_replication::handshake::{ClusterSecret, PeerIdentity};
use rill_replication::transport::Transport;
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
    /// Every broker of the cluster with its peer address, this one
    /// included, the same on every broker: ID=HOST:PORT,... [default: this
    /// broker alone, a cluster of one].
    #[arg(long)]
    peers: Option<String>,
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
    /// A TOML file with any of: node_id, data_dir, listen, advertised_addr,
    /// peer_listen, peers, cluster_secret_file, insecure_peers,
    /// retention_check_ms, message_timestamp_after_max_ms,
    /// message_timestamp_before_max_ms, max_partition_replicas, and a
    /// [limits] table. Flags win over it.
    #[arg(long)]
    config: Option<PathBuf>,
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

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

/// How often a broker checks that the metadata has its address, ms.
const REGISTER_CHECK_MS: u64 = 500;

fn main() {
    if let Err(e) = run() {
        eprintln!("rill-broker: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    // Lines are written by a thread of their own: a slow log file must not
    // stall the Raft thread (see `logwriter`). The guard writes what is
    // still queued when the broker exits.
    let (log_writer, _log_flush) = LogWriter::start(std::io::stderr())?;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(log_writer)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // Before any frame is read: frame buffers are then reused, not faulted
    // in afresh (see `heap`).
    if let Err(e) = rill_broker::heap::keep_freed_memory() {
        tracing::warn!(error = %e, "the heap keeps its default trimming");
    }
    let file = match &args.config {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    };
    let config = BrokerConfig::resolve(
        file,
        Flags {
            node_id: args.node_id,
            data_dir: args.data_dir,
            listen: args.listen,
            advertised_addr: args.advertised_addr,
            peer_listen: args.peer_listen,
            peers: args.peers,
            cluster_secret_file: args.cluster_secret_file,
            insecure_peers: args.insecure_peers,
            limits: args.limits,
            message_timestamp_after_max_ms: args.message_timestamp_after_max_ms,
            message_timestamp_before_max_ms: args.message_timestamp_before_max_ms,
            max_partition_replicas: args.max_partition_replicas,
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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let id = config.node_id;
        let identity = Identity::load_or_create(&config.data_dir, id)?;
        tracing::info!(incarnation = %identity.incarnation, rejoining = identity.rejoining, "data directory identity");
        let cluster = Arc::new(std::sync::OnceLock::new());
        if identity.cluster_id.is_known() {
            let _ = cluster.set(identity.cluster_id);
        }
        let rejoin_requested = Arc::new(std::sync::atomic::AtomicBool::new(false));
        // Peers first, so votes can flow while replicas recover.
        let (inbound_tx, inbound_rx) = tokio::sync::mpsc::channel(1024);
        let transport = if config.peers.len() > 1 {
            let listen = match config.peer_listen {
                Some(a) => a,
                None => config.peers[&config.node_id]
                    .parse()
                    .context("this broker's --peers entry is not an IP:PORT to listen on; give --peer-listen")?,
            };
            let listener = TcpListener::bind(listen)
                .await
                .with_context(|| format!("binding the peer listener {listen}"))?;
            tracing::info!("peers on {}", listener.local_addr()?);
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
            Some(Transport::start(id, listener, peers, inbound_tx, me))
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
            voters: config.voters(),
            timestamps: TimestampBounds {
                after_max_ms: config.message_timestamp_after_max_ms,
                before_max_ms: config.message_timestamp_before_max_ms,
            },
            max_partition_replicas: config.max_partition_replicas,
        };
        let (raft, published) =
            tokio::task::spawn_blocking(move || raft::start(raft_config, transport)).await??;
        tokio::spawn(raft::tick(raft.clone()));
        tokio::spawn(raft::forward_inbound(inbound_rx, raft.clone()));
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
        ));
        // Tell the controller where clients reach this broker, and again
        // whenever the metadata stops saying so.
        let registering = Arc::clone(&broker);
        tokio::spawn(async move {
            let me = BrokerMetadata {
                broker_id: registering.node_id.get() as u32,
                host: registering.advertised_host.clone(),
                port: registering.advertised_port,
            };
            loop {
                if !registering.registered()
                    && let Err(e) = registering.register(&me).await
                {
                    tracing::debug!(code = %e.code(), message = %e, "registration not done yet");
                }
                tokio::time::sleep(Duration::from_millis(REGISTER_CHECK_MS)).await;
            }
        });
        let retention = raft.clone();
        let every = Duration::from_millis(config.retention_check_ms.max(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                if retention.send(raft::Command::Retention).await.is_err() {
                    return;
                }
            }
        });
        tracing::info!(node_id = %config.node_id, data_dir = %config.data_dir.display(), "ready");
        // Scripts and tests wait for this line, whatever the log level.
        eprintln!("listening on {bound}");
        tokio::select! {
            _ = serve(listener, Arc::clone(&broker)) => {}
            _ = shutdown_signal() => tracing::info!("shutting down"),
        }
        // Leaderships handed over and every log synced before the process
        // exits.
        raft.stop().await;
        tracing::info!("stopped");
        anyhow::Ok(())
    })
}
