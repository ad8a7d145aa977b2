//! `rill`: the command-line tool for topics, producing, consuming,
//! consumer groups and the cluster's replication status.
//!
//! Every failure is one line on stderr and a non-zero exit.
//!
//! Layout: this file parses the command line (clap), dispatches, and holds
//! what more than one command shares (the `--format` of describing
//! commands); each command lives in a module of its own: `topic`,
//! `produce`, `consume`, `group`, `cluster` (and `brokers`: its balance,
//! remove-broker and add-broker). Commands print their results and
//! return; only `main` exits. A command's error comes back here and is
//! printed once, as `rill: ` and the error's chain on one line, with exit
//! 1, so every command fails the same way; `produce` alone picks its own
//! exit code, because records not acknowledged are an outcome it reports
//! rather than an error that stops it. Results go to stdout and
//! confirmations and summaries to stderr, so output can be piped.

mod brokers;
mod cluster;
mod consume;
mod encoding;
mod group;
mod output;
mod produce;
mod status;
mod topic;

use clap::{Parser, Subcommand, ValueEnum};
use rill_client::Cluster;
use rill_client::protocol::messages::BrokerAction;

use cluster::ClusterCommand;
use consume::ConsumeArgs;
use group::GroupCommand;
use produce::ProduceArgs;
use topic::TopicCommand;

#[derive(Debug, Parser)]
#[command(
    name = "rill",
    version,
    about = "Create topics, produce and consume records, and manage consumer groups on a rill cluster"
)]
struct Cli {
    /// Brokers to contact first: HOST:PORT[,HOST:PORT...].
    #[arg(
        long,
        env = "RILL_BOOTSTRAP",
        default_value = "127.0.0.1:9092",
        global = true
    )]
    bootstrap: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create, list, describe and delete topics.
    Topic {
        #[command(subcommand)]
        command: TopicCommand,
    },
    /// Send standard input to a topic, one record per line (or per
    /// NUL-terminated chunk with -Z).
    Produce(ProduceArgs),
    /// Print a topic's records, one per line. Without --timeout-ms or -n
    /// it follows the topic until interrupted (Ctrl-C); with either, it
    /// stops at the first limit reached.
    Consume(ConsumeArgs),
    /// List, describe, reset the offsets of and delete consumer groups.
    Group {
        #[command(subcommand)]
        command: GroupCommand,
    },
    /// Inspect the cluster as a whole, and change which brokers host
    /// replicas.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
}

/// The longest timeout a command takes, ms (a year): a larger one would
/// overflow the clock.
pub(crate) const TIMEOUT_MS_MAX: u64 = 365 * 24 * 3600 * 1000;

/// Parses a `--timeout-ms`-like flag, refusing more than [`TIMEOUT_MS_MAX`].
pub(crate) fn timeout_ms_parser() -> clap::builder::RangedU64ValueParser<u64> {
    clap::value_parser!(u64).range(..=TIMEOUT_MS_MAX)
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum DescribeFormat {
    Text,
    Json,
}

fn main() {
    // `rill consume ... | head` ends quietly when the reader goes away, as
    // other command-line tools do, instead of failing on a closed pipe.
    // SAFETY: restoring the default disposition of SIGPIPE before any
    // thread starts; no handler is involved.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("rill: {e}");
            std::process::exit(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("rill: {e:#}");
            std::process::exit(1);
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<i32> {
    let cluster = Cluster::new(&cli.bootstrap, "rill-cli")?;
    match cli.command {
        Command::Topic { command } => topic::topic(cluster, command).await.map(|()| 0),
        Command::Produce(args) => produce::produce(cluster, args).await,
        Command::Consume(args) => consume::consume(cluster, args).await.map(|()| 0),
        Command::Group { command } => group::group(cluster, command).await.map(|()| 0),
        Command::Cluster {
            command: ClusterCommand::Status { format, raft },
        } => cluster::cluster_status(cluster, format, raft).await,
        Command::Cluster {
            command: ClusterCommand::Health { format },
        } => cluster::cluster_health(cluster, format).await,
        Command::Cluster {
            command: ClusterCommand::Balance { timeout_ms },
        } => brokers::change_brokers(cluster, BrokerAction::Balance, 0, "", timeout_ms)
            .await
            .map(|()| 0),
        Command::Cluster {
            command: ClusterCommand::RemoveBroker { id, timeout_ms },
        } => brokers::change_brokers(cluster, BrokerAction::Remove, id, "", timeout_ms)
            .await
            .map(|()| 0),
        Command::Cluster {
            command:
                ClusterCommand::AddBroker {
                    id,
                    peer_addr,
                    timeout_ms,
                },
        } => brokers::change_brokers(
            cluster,
            BrokerAction::Add,
            id,
            peer_addr.as_deref().unwrap_or(""),
            timeout_ms,
        )
        .await
        .map(|()| 0),
    }
}
