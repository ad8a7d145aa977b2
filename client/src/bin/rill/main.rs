//! `rill`: the command-line tool for topics, producing, consuming and the
//! cluster's replication status.
//!
//! Every failure is one line on stderr and a non-zero exit.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::{Parser, Subcommand, ValueEnum};
use rill_client::protocol::messages::{ClusterStatusResponse, ReplicaStatus};
use rill_client::protocol::{Request, Response};
use rill_client::{
    Acks, Admin, ClientError, Cluster, Consumer, ConsumerConfig, Producer, ProducerConfig,
    ProducerRecord, SeekTo,
};
use tokio::sync::mpsc;

#[derive(Debug, Parser)]
#[command(
    name = "rill",
    version,
    about = "Create topics, produce and consume records on a rill cluster"
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
    /// Send standard input to a topic, one record per line.
    Produce(ProduceArgs),
    /// Print a topic's records, one per line.
    Consume(ConsumeArgs),
    /// Inspect the cluster as a whole.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
}

#[derive(Debug, Subcommand)]
enum ClusterCommand {
    /// Ask every broker how replication stands: which brokers are up, the
    /// controller, and per partition (and for the controller's own group,
    /// topic "" in JSON) the leader, term, commit index, high watermark and
    /// each replica's match index and lag as the leader reports them.
    Status {
        /// Output format.
        #[arg(long, value_enum, default_value_t = DescribeFormat::Text)]
        format: DescribeFormat,
    },
}

#[derive(Debug, Subcommand)]
enum TopicCommand {
    /// Create a topic.
    Create {
        /// The topic's name: [A-Za-z0-9._-]{1,249}.
        name: String,
        /// Number of partitions.
        #[arg(long, default_value_t = 1)]
        partitions: u32,
        /// Replicas per partition.
        #[arg(long, default_value_t = 1)]
        replication_factor: u16,
        /// A topic setting, KEY=VALUE (fsync, retention.ms, retention.bytes,
        /// segment.bytes, segment.ms, max.message.bytes,
        /// message.timestamp.after.max.ms, message.timestamp.before.max.ms,
        /// message.timestamp.difference.max.ms); repeatable.
        #[arg(long = "config", value_name = "KEY=VALUE")]
        configs: Vec<String>,
    },
    /// List topic names.
    List,
    /// Show a topic's partitions: leader, replicas, log start offset, high watermark.
    Describe {
        /// The topic.
        name: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = DescribeFormat::Text)]
        format: DescribeFormat,
    },
    /// Delete a topic and its data.
    Delete {
        /// The topic.
        name: String,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum DescribeFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum RecordFormat {
    Value,
    Json,
}

#[derive(Debug, clap::Args)]
struct ProduceArgs {
    /// The topic.
    topic: String,
    /// Send every record to this partition (otherwise keys choose, and
    /// keyless records are spread).
    #[arg(long)]
    partition: Option<u32>,
    /// The key of every record.
    #[arg(long, conflicts_with = "key_separator")]
    key: Option<String>,
    /// Split each line at the first SEP: key before, value after.
    #[arg(long, value_name = "SEP")]
    key_separator: Option<String>,
    /// Acknowledgement level: 0, 1 or all.
    #[arg(long, value_name = "0|1|all", default_value = "all")]
    acks: Acks,
    /// How long a batch waits for more records, ms.
    #[arg(long, default_value_t = 5)]
    linger_ms: u64,
    /// A batch is sent once it holds this many bytes.
    #[arg(long, default_value_t = 256 * 1024)]
    batch_size: usize,
    /// A record not acknowledged within this long has failed, ms.
    #[arg(long, default_value_t = 30_000)]
    delivery_timeout_ms: u64,
}

#[derive(Debug, clap::Args)]
struct ConsumeArgs {
    /// The topic.
    topic: String,
    /// Read only this partition (otherwise every partition).
    #[arg(long)]
    partition: Option<u32>,
    /// Where to start: earliest, latest, or an offset.
    #[arg(long, default_value = "earliest")]
    offset: String,
    /// Exit after printing this many records.
    #[arg(long)]
    max_messages: Option<u64>,
    /// Exit (successfully) after this long with no new record, ms.
    #[arg(long)]
    timeout_ms: Option<u64>,
    /// Print each record's value, or one JSON object per record.
    #[arg(long, value_enum, default_value_t = RecordFormat::Value)]
    format: RecordFormat,
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
        Command::Topic { command } => topic(cluster, command).await.map(|()| 0),
        Command::Produce(args) => produce(cluster, args).await,
        Command::Consume(args) => consume(cluster, args).await.map(|()| 0),
        Command::Cluster {
            command: ClusterCommand::Status { format },
        } => cluster_status(cluster, format).await.map(|()| 0),
    }
}

async fn topic(cluster: Arc<Cluster>, command: TopicCommand) -> anyhow::Result<()> {
    let admin = Admin::new(cluster);
    match command {
        TopicCommand::Create {
            name,
            partitions,
            replication_factor,
            configs,
        } => {
            let configs = configs
                .iter()
                .map(|c| {
                    c.split_once('=')
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .with_context(|| format!("--config {c:?} is not KEY=VALUE"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            admin
                .create_topic(&name, partitions, replication_factor, configs)
                .await?;
            eprintln!("created topic {name} with {partitions} partition(s)");
        }
        TopicCommand::List => {
            for name in admin.list_topics().await? {
                println!("{name}");
            }
        }
        TopicCommand::Describe { name, format } => {
            let info = admin.describe_topic(&name).await?;
            match format {
                DescribeFormat::Json => {
                    let partitions: Vec<_> = info
                        .partitions
                        .iter()
                        .map(|p| {
                            serde_json::json!({
                                "partition": p.partition,
                                "leader": u32::try_from(p.leader).ok(),
                                "leader_epoch": p.leader_epoch,
                                "replicas": p.replicas,
                                "log_start_offset": p.log_start_offset,
                                "high_watermark": p.high_watermark,
                            })
                        })
                        .collect();
                    println!(
                        "{}",
                        serde_json::json!({"topic": info.name, "partitions": partitions})
                    );
                }
                DescribeFormat::Text => {
                    println!("topic {}", info.name);
                    for p in &info.partitions {
                        let leader =
                            u32::try_from(p.leader).map_or("none".to_string(), |l| l.to_string());
                        println!(
                            "  partition {}  leader {} (epoch {})  replicas {:?}  log start {}  high watermark {}",
                            p.partition,
                            leader,
                            p.leader_epoch,
                            p.replicas,
                            p.log_start_offset,
                            p.high_watermark
                        );
                    }
                }
            }
        }
        TopicCommand::Delete { name } => {
            admin.delete_topic(&name).await?;
            eprintln!("deleted topic {name}");
        }
    }
    Ok(())
}

/// Reads standard input on a thread of its own, one line at a time.
fn stdin_lines() -> mpsc::Receiver<std::io::Result<String>> {
    let (tx, rx) = mpsc::channel(1024);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            if tx.blocking_send(line).is_err() {
                return;
            }
        }
    });
    rx
}

async fn produce(cluster: Arc<Cluster>, args: ProduceArgs) -> anyhow::Result<i32> {
    let config = ProducerConfig {
        acks: args.acks,
        linger_ms: args.linger_ms,
        batch_size_bytes: args.batch_size,
        delivery_timeout_ms: args.delivery_timeout_ms,
        ..ProducerConfig::default()
    };
    let producer = Producer::new(cluster, config);
    // Outcomes are awaited in send order by one task while input is read.
    let (pending_tx, mut pending_rx) = mpsc::channel::<rill_client::DeliveryFuture>(100_000);
    let collector = tokio::spawn(async move {
        let (mut acked, mut first_error): (u64, Option<ClientError>) = (0, None);
        while let Some(f) = pending_rx.recv().await {
            match f.await {
                Ok(_) => acked += 1,
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        (acked, first_error)
    });
    let started = Instant::now();
    let (mut lines_read, mut bytes, mut send_error) = (0u64, 0u64, None);
    let mut input = stdin_lines();
    while let Some(line) = input.recv().await {
        let line = line.context("reading standard input")?;
        lines_read += 1;
        let (key, value) = match (&args.key, &args.key_separator) {
            (Some(k), _) => (Some(Bytes::from(k.clone())), line),
            (None, Some(sep)) => match line.split_once(sep.as_str()) {
                Some((k, v)) => (Some(Bytes::from(k.to_string())), v.to_string()),
                None => (None, line),
            },
            (None, None) => (None, line),
        };
        bytes += value.len() as u64;
        let record = ProducerRecord {
            topic: args.topic.clone(),
            partition: args.partition,
            key,
            value: Some(Bytes::from(value)),
            ..ProducerRecord::default()
        };
        match producer.send(record).await {
            Ok(f) => {
                if pending_tx.send(f).await.is_err() {
                    bail!("internal error: the delivery collector stopped");
                }
            }
            Err(e) => {
                send_error.get_or_insert(e);
            }
        }
    }
    producer.close().await;
    drop(pending_tx);
    let (acked, first_error) = collector.await.context("delivery collector")?;
    let seconds = started.elapsed().as_secs_f64().max(1e-9);
    eprintln!(
        "{acked} records ({bytes} bytes of values) in {seconds:.3} s: {:.0} records/s, {:.2} MB/s",
        acked as f64 / seconds,
        bytes as f64 / seconds / 1e6
    );
    let failed = lines_read - acked;
    if failed > 0 {
        if let Some(e) = first_error.or(send_error) {
            eprintln!("rill: {e}");
        }
        eprintln!("{failed} records not acknowledged");
        return Ok(1);
    }
    Ok(0)
}

fn print_record(
    out: &mut impl Write,
    r: &rill_client::ConsumerRecord,
    format: RecordFormat,
) -> std::io::Result<()> {
    let text = |b: &Option<Bytes>| b.as_ref().map(|b| String::from_utf8_lossy(b).into_owned());
    match format {
        RecordFormat::Value => writeln!(out, "{}", text(&r.value).unwrap_or_default()),
        RecordFormat::Json => writeln!(
            out,
            "{}",
            serde_json::json!({
                "topic": r.topic,
                "partition": r.partition,
                "offset": r.offset,
                "timestamp": r.timestamp_ms,
                "key": text(&r.key),
                "value": text(&r.value),
            })
        ),
    }
}

async fn consume(cluster: Arc<Cluster>, args: ConsumeArgs) -> anyhow::Result<()> {
    let from = match args.offset.as_str() {
        "earliest" => SeekTo::Earliest,
        "latest" => SeekTo::Latest,
        n => SeekTo::Offset(
            n.parse()
                .with_context(|| format!("--offset is earliest, latest or a number, not {n:?}"))?,
        ),
    };
    let mut consumer = Consumer::new(cluster, ConsumerConfig::default());
    consumer
        .assign(&args.topic, args.partition.map(|p| vec![p]), from)
        .await?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut printed = 0u64;
    let idle_limit = args.timeout_ms.map(Duration::from_millis);
    let mut last_record = Instant::now();
    loop {
        if args.max_messages.is_some_and(|m| printed >= m) {
            break;
        }
        let wait = match idle_limit {
            Some(limit) => match limit.checked_sub(last_record.elapsed()) {
                Some(left) if !left.is_zero() => left.min(Duration::from_millis(500)),
                _ => break,
            },
            None => Duration::from_millis(500),
        };
        let records = consumer.poll(wait).await?;
        if !records.is_empty() {
            last_record = Instant::now();
        }
        for r in &records {
            if args.max_messages.is_some_and(|m| printed >= m) {
                break;
            }
            if let Err(e) = print_record(&mut out, r, args.format) {
                if e.kind() == std::io::ErrorKind::BrokenPipe {
                    return Ok(());
                }
                return Err(e.into());
            }
            printed += 1;
        }
        match out.flush() {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
            other => other?,
        }
    }
    Ok(())
}

/// How long one broker has to answer `cluster status` before it counts as down.
const STATUS_TIMEOUT: Duration = Duration::from_secs(5);

/// One broker as `cluster status` found it.
#[derive(Debug)]
struct BrokerState {
    address: String,
    /// Its report, or why there is none.
    status: Result<ClusterStatusResponse, String>,
}

/// One replica of a partition, as the partition's leader reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ReplicaView {
    id: u32,
    /// Its match index; unknown without a leader's report.
    matched: Option<u64>,
    /// The leader's last index minus the match index.
    lag: Option<u64>,
}

/// One partition (or the controller's group) merged from every report.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PartitionView {
    /// Empty for the controller's own group.
    topic: String,
    partition: u32,
    group: u64,
    /// The broker that reports itself leader, if one does.
    leader: Option<u32>,
    term: u64,
    commit: u64,
    high_watermark: u64,
    replicas: Vec<ReplicaView>,
}

/// Asks the broker at `address` for its view of replication.
async fn ask_status(
    cluster: Arc<Cluster>,
    address: String,
) -> Result<ClusterStatusResponse, String> {
    let ask = async {
        let connection = cluster.connection(&address).await?;
        connection
            .request(Request::ClusterStatus, STATUS_TIMEOUT)
            .await
    };
    match tokio::time::timeout(STATUS_TIMEOUT, ask).await {
        Err(_) => Err(format!(
            "no answer within {} ms",
            STATUS_TIMEOUT.as_millis()
        )),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(Response::ClusterStatus(s))) => Ok(s),
        Ok(Ok(other)) => Err(format!("unexpected {:?} response", other.api_key())),
    }
}

/// Merges the brokers' reports into one row per partition, sorted by topic
/// then partition (the controller's group, topic "", first). A row comes
/// from the broker that reports itself the leader (the highest term if
/// several do); without one, from the replica with the highest term, with
/// no leader and unknown match indexes.
fn merge_partitions(reports: &[&ClusterStatusResponse]) -> Vec<PartitionView> {
    let mut seen: BTreeMap<(&str, u32), Vec<(u32, &ReplicaStatus)>> = BTreeMap::new();
    for report in reports {
        for r in &report.replicas {
            seen.entry((r.topic.as_str(), r.partition))
                .or_default()
                .push((report.broker_id, r));
        }
    }
    seen.into_iter()
        .filter_map(|((topic, partition), seen)| {
            let leader = seen
                .iter()
                .filter(|(b, r)| !r.matched.is_empty() && u32::try_from(r.leader) == Ok(*b))
                .max_by_key(|(_, r)| (r.term, r.commit));
            let (leader, r) = match leader {
                Some((b, r)) => (Some(*b), *r),
                None => (None, seen.iter().max_by_key(|(_, r)| (r.term, r.commit))?.1),
            };
            let mut ids = r.replicas.clone();
            for (b, _) in &r.matched {
                if !ids.contains(b) {
                    ids.push(*b);
                }
            }
            let replicas = ids
                .into_iter()
                .map(|id| {
                    let matched = leader
                        .and_then(|_| r.matched.iter().find(|(b, _)| *b == id).map(|(_, i)| *i));
                    ReplicaView {
                        id,
                        matched,
                        lag: matched.map(|m| r.last_index.saturating_sub(m)),
                    }
                })
                .collect();
            Some(PartitionView {
                topic: topic.to_string(),
                partition,
                group: r.group,
                leader,
                term: r.term,
                commit: r.commit,
                high_watermark: r.high_watermark,
                replicas,
            })
        })
        .collect()
}

/// `rill cluster status`: metadata for the broker list, then every broker's
/// own report, merged.
async fn cluster_status(cluster: Arc<Cluster>, format: DescribeFormat) -> anyhow::Result<()> {
    let metadata = cluster.refresh(None).await?;
    let mut brokers: BTreeMap<u32, BrokerState> = BTreeMap::new();
    let mut to_ask: Vec<(u32, String)> = metadata
        .brokers
        .iter()
        .map(|b| (b.broker_id, format!("{}:{}", b.host, b.port)))
        .collect();
    // Brokers registered but missing from the metadata are asked too, once
    // another broker's report names them.
    while !to_ask.is_empty() {
        let asks: Vec<_> = to_ask
            .drain(..)
            .map(|(id, address)| {
                let ask = tokio::spawn(ask_status(Arc::clone(&cluster), address.clone()));
                (id, address, ask)
            })
            .collect();
        for (id, address, ask) in asks {
            let status = ask
                .await
                .unwrap_or_else(|e| Err(format!("internal error: {e}")));
            brokers.insert(id, BrokerState { address, status });
        }
        for state in brokers.values() {
            for b in state.status.iter().flat_map(|s| &s.brokers) {
                if !brokers.contains_key(&b.broker_id)
                    && !to_ask.iter().any(|(id, _)| *id == b.broker_id)
                {
                    to_ask.push((b.broker_id, format!("{}:{}", b.host, b.port)));
                }
            }
        }
    }
    let reports: Vec<&ClusterStatusResponse> = brokers
        .values()
        .filter_map(|b| b.status.as_ref().ok())
        .collect();
    if reports.is_empty() {
        let why = brokers
            .iter()
            .map(|(id, b)| {
                let error = b.status.as_ref().err().map_or("", String::as_str);
                format!("broker {id} at {}: {error}", b.address)
            })
            .collect::<Vec<_>>()
            .join("; ");
        bail!("no broker answered the cluster status request ({why})");
    }
    let partitions = merge_partitions(&reports);
    // The controller: whoever leads the controller's group, else what the
    // metadata or any broker says.
    let controller = partitions
        .iter()
        .find(|p| p.topic.is_empty())
        .and_then(|p| p.leader)
        .or_else(|| u32::try_from(metadata.controller_id).ok())
        .or_else(|| {
            reports
                .iter()
                .find_map(|r| u32::try_from(r.controller_id).ok())
        });
    match format {
        DescribeFormat::Json => {
            let brokers: Vec<_> = brokers
                .iter()
                .map(|(id, b)| {
                    serde_json::json!({
                        "id": id,
                        "address": b.address,
                        "up": b.status.is_ok(),
                    })
                })
                .collect();
            let partitions: Vec<_> = partitions
                .iter()
                .map(|p| {
                    let replicas: Vec<_> = p
                        .replicas
                        .iter()
                        .map(|r| serde_json::json!({"id": r.id, "match": r.matched, "lag": r.lag}))
                        .collect();
                    serde_json::json!({
                        "topic": p.topic,
                        "partition": p.partition,
                        "group": p.group,
                        "leader": p.leader,
                        "term": p.term,
                        "commit": p.commit,
                        "high_watermark": p.high_watermark,
                        "replicas": replicas,
                    })
                })
                .collect();
            println!(
                "{}",
                serde_json::json!({
                    "controller": controller,
                    "brokers": brokers,
                    "partitions": partitions,
                })
            );
        }
        DescribeFormat::Text => {
            let or_none = |b: Option<u32>| b.map_or("none".to_string(), |b| b.to_string());
            for (id, b) in &brokers {
                match &b.status {
                    Ok(_) => println!("broker {id}  {}  up", b.address),
                    Err(e) => println!("broker {id}  {}  down ({e})", b.address),
                }
            }
            println!("controller {}", or_none(controller));
            for p in &partitions {
                let name = if p.topic.is_empty() {
                    "controller group".to_string()
                } else {
                    format!("topic {}  partition {}", p.topic, p.partition)
                };
                let replicas = p
                    .replicas
                    .iter()
                    .map(|r| {
                        let down = if brokers.get(&r.id).is_none_or(|b| b.status.is_err()) {
                            "down, "
                        } else {
                            ""
                        };
                        match (r.matched, r.lag) {
                            (Some(m), Some(lag)) => {
                                format!("{} ({down}match {m}, lag {lag})", r.id)
                            }
                            _ => format!("{} ({down}match unknown)", r.id),
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                println!(
                    "{name}  group {}  leader {}  term {}  commit {}  high watermark {}  replicas {replicas}",
                    p.group,
                    or_none(p.leader),
                    p.term,
                    p.commit,
                    p.high_watermark
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica(topic: &str, leader: i32, term: u64, matched: &[(u32, u64)]) -> ReplicaStatus {
        ReplicaStatus {
            topic: topic.to_string(),
            partition: 0,
            group: 7,
            leader,
            term,
            commit: 8,
            last_index: 10,
            high_watermark: 5,
            replicas: vec![1, 2, 3],
            matched: matched.to_vec(),
        }
    }

    fn report(broker_id: u32, replicas: Vec<ReplicaStatus>) -> ClusterStatusResponse {
        ClusterStatusResponse {
            broker_id,
            controller_id: 1,
            brokers: Vec::new(),
            replicas,
        }
    }

    #[test]
    fn the_leaders_report_gives_match_indexes_and_lag() {
        let follower = report(1, vec![replica("t", 2, 4, &[])]);
        let leader = report(2, vec![replica("t", 2, 4, &[(1, 9), (2, 10), (3, 4)])]);
        let merged = merge_partitions(&[&follower, &leader]);
        assert_eq!(merged.len(), 1);
        assert_eq!(merged[0].leader, Some(2));
        let lags: Vec<_> = merged[0]
            .replicas
            .iter()
            .map(|r| (r.id, r.matched, r.lag))
            .collect();
        assert_eq!(
            lags,
            [
                (1, Some(9), Some(1)),
                (2, Some(10), Some(0)),
                (3, Some(4), Some(6))
            ]
        );
    }

    #[test]
    fn without_a_claimed_leader_the_row_has_no_leader_and_unknown_lags() {
        // Broker 1 believes 3 leads, but 3 did not answer.
        let a = report(1, vec![replica("t", 3, 5, &[])]);
        let b = report(2, vec![replica("t", 3, 4, &[])]);
        let merged = merge_partitions(&[&a, &b]);
        assert_eq!(merged[0].leader, None);
        assert_eq!(merged[0].term, 5);
        assert!(merged[0].replicas.iter().all(|r| r.matched.is_none()));
    }

    #[test]
    fn a_deposed_leader_loses_to_the_newer_term_and_rows_are_sorted() {
        let old = report(
            1,
            vec![replica("b", 1, 3, &[(1, 10)]), replica("", 1, 2, &[(1, 1)])],
        );
        let new = report(2, vec![replica("b", 2, 4, &[(2, 10)])]);
        let merged = merge_partitions(&[&old, &new]);
        let rows: Vec<_> = merged
            .iter()
            .map(|p| (p.topic.as_str(), p.leader))
            .collect();
        assert_eq!(rows, [("", Some(1)), ("b", Some(2))]);
    }
}
