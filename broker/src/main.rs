//! `rill-broker`: serves a rill cluster (for now, a single node: every
//! partition a one-voter Raft group).
//!
//! With no arguments it listens on 127.0.0.1:9092 with data in `./data`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use rill_broker::config::{BrokerConfig, FileConfig};
use rill_broker::raft_loop;
use rill_broker::server::serve;
use rill_broker::state::Broker;
use rill_replication::BrokerId;
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
    /// A TOML file with any of: node_id, data_dir, listen, advertised_addr,
    /// retention_check_ms. Flags win over it.
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

fn main() {
    if let Err(e) = run() {
        eprintln!("rill-broker: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let file = match &args.config {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    };
    let config = BrokerConfig::resolve(
        file,
        args.node_id,
        args.data_dir,
        args.listen,
        args.advertised_addr,
    );
    raise_nofile_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        // Local recovery first: the client port opens only once every
        // partition is readable.
        let data_dir = config.data_dir.clone();
        let node_id = config.node_id;
        let data_arrived = Arc::new(tokio::sync::Notify::new());
        let raft = raft_loop::start(BrokerId(u64::from(node_id)), Arc::clone(&data_arrived))?;
        tokio::spawn(raft_loop::tick(raft.clone()));
        let opening = raft.clone();
        let mut broker = tokio::task::spawn_blocking(move || {
            Broker::open(node_id, data_dir, String::new(), 0, opening, data_arrived)
        })
        .await??;
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
        broker.advertised_host = host;
        broker.advertised_port = port;
        let broker = Arc::new(broker);
        let retention = raft.clone();
        let every = Duration::from_millis(config.retention_check_ms.max(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                if retention.send(raft_loop::Command::Retention).await.is_err() {
                    return;
                }
            }
        });
        tracing::info!(node_id = config.node_id, data_dir = %config.data_dir.display(), "listening on {bound}");
        tokio::select! {
            _ = serve(listener, Arc::clone(&broker)) => {}
            _ = shutdown_signal() => tracing::info!("shutting down"),
        }
        // Every log synced before the process exits.
        raft.stop().await;
        tracing::info!("stopped");
        anyhow::Ok(())
    })
}
