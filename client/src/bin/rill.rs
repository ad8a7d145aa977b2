//! `rill`: the command-line tool for topics, producing and consuming.
//!
//! Every failure is one line on stderr and a non-zero exit.

use std::io::{BufRead, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::{Parser, Subcommand, ValueEnum};
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
        /// segment.bytes, segment.ms, max.message.bytes); repeatable.
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
                            "  partition {}  leader {}  replicas {:?}  log start {}  high watermark {}",
                            p.partition, leader, p.replicas, p.log_start_offset, p.high_watermark
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
