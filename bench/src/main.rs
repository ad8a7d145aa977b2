//! `rill-bench`: throughput and latency of a rill cluster.
//!
//! `rill-bench produce|consume|e2e|group-join [flags]` prints a table at the end, and
//! with `--json` one JSON object as the last line of standard output.
//! `rill-bench parked-fetch --broker-pid PID [flags]` prints one line and
//! one JSON object.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use rill_bench::workload::{self, Options, Progress, ValueKind};
use rill_client::{Acks, Compression, ProducerConfig};

#[derive(Debug, Parser)]
#[command(
    name = "rill-bench",
    version,
    about = "Measure rill's throughput and latency"
)]
struct Cli {
    #[command(subcommand)]
    workload: Workload,
    #[command(flatten)]
    flags: Flags,
}

#[derive(Debug, Clone, Copy, Subcommand)]
enum Workload {
    /// Producers only: records/s, MB/s, send-to-ack latency.
    Produce,
    /// Consumers only, from the start of the topic: the records it holds
    /// when they start (or `--messages`, or for `--duration-s`).
    Consume,
    /// Producers and consumers at once: latency from send to arrival.
    E2e,
    /// Members of `--group` (`--consumers` of them) read while producers
    /// write at `--rate` for `--duration-s`; one more joins: the time until
    /// the group is stable again.
    GroupJoin,
    /// A fetch parked on every partition of a topic (spread over
    /// `--connections`) while one partition is written at `--rate`: the
    /// broker's CPU time (`--broker-pid`) over `--duration-s`.
    ParkedFetch,
}

/// `--values`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Values {
    Repeated,
    Text,
}

#[derive(Debug, clap::Args)]
struct Flags {
    /// Brokers: HOST:PORT[,HOST:PORT...].
    #[arg(
        long,
        global = true,
        env = "RILL_BOOTSTRAP",
        default_value = "127.0.0.1:9092"
    )]
    bootstrap: String,
    /// Topic (`produce`, `e2e`, `group-join` and `parked-fetch` create it
    /// when missing; `consume` reads one that exists).
    #[arg(long, global = true, default_value = "rill-bench")]
    topic: String,
    /// Partitions of a created topic.
    #[arg(long, global = true, default_value_t = 1)]
    partitions: u32,
    /// Replication factor of a created topic (`parked-fetch` creates its
    /// own with one).
    #[arg(long, global = true, default_value_t = 1)]
    replication_factor: u16,
    /// A setting of a created topic, KEY=VALUE (e.g. fsync=false;
    /// `parked-fetch` takes none); repeatable.
    #[arg(long = "topic-config", global = true, value_name = "KEY=VALUE")]
    topic_configs: Vec<String>,
    /// Total records over all producers (or consumed, for `consume`)
    /// [default: 1000000; for `consume`, what the topic holds when it
    /// starts].
    #[arg(long, global = true, conflicts_with = "duration_s")]
    messages: Option<u64>,
    /// Run for this long instead of a record count, seconds [default: 10
    /// where a count is not used; 20 for `parked-fetch`].
    #[arg(long, global = true)]
    duration_s: Option<u64>,
    /// Bytes per record value.
    #[arg(long, global = true, default_value_t = 1000)]
    message_size: usize,
    /// Producers, each with its own connection.
    #[arg(long, global = true, default_value_t = 1)]
    producers: usize,
    /// Consumers, splitting the partitions.
    #[arg(long, global = true, default_value_t = 1)]
    consumers: usize,
    /// Producer batch size in bytes; the default is the size that gave the
    /// best throughput here.
    #[arg(long, global = true, default_value_t = 256 * 1024)]
    batch_size: usize,
    /// Produce requests in flight per partition, at most (the producer's
    /// `max_in_flight_per_partition`).
    #[arg(long, global = true, default_value_t = ProducerConfig::default().max_in_flight_per_partition)]
    max_in_flight: usize,
    /// Producer linger, ms.
    #[arg(long, global = true, default_value_t = 2)]
    linger_ms: u64,
    /// Acknowledgement level: 0, 1 or all.
    #[arg(long, global = true, value_name = "0|1|all", default_value = "all")]
    acks: Acks,
    /// How producers compress their batches (`produce`, `e2e`); consumers
    /// decompress whatever they read. With `--values repeated` (the
    /// default) they compress far better than most data; `--values text`
    /// compresses about as log lines do.
    #[arg(
        long,
        global = true,
        value_name = "none|lz4|zstd",
        default_value = "none"
    )]
    compression: Compression,
    /// Producers without idempotence (it is on by default with `--acks
    /// all`: producer ids and sequence numbers checked by the broker).
    #[arg(long, global = true)]
    no_idempotence: bool,
    /// What values hold: one repeated byte, or text (words drawn from a
    /// small vocabulary, the same every run).
    #[arg(long, global = true, value_enum, default_value_t = Values::Repeated)]
    values: Values,
    /// Records per second over all producers; 0 sends as fast as possible.
    /// A fixed rate is how latency is measured.
    #[arg(long, global = true, default_value_t = 0)]
    rate: u64,
    /// Print one JSON summary as the last line of standard output.
    #[arg(long, global = true)]
    json: bool,
    /// Consumers read as members of this consumer group (committing what
    /// they read) instead of splitting the partitions among themselves
    /// [default: none].
    #[arg(long, global = true)]
    group: Option<String>,
    /// `parked-fetch`: connections the parked fetches are spread over.
    #[arg(long, global = true, default_value_t = 10)]
    connections: u32,
    /// `parked-fetch` (required there): the broker's process id, whose CPU
    /// time is read.
    #[arg(long, global = true)]
    broker_pid: Option<u32>,
    /// `parked-fetch`: seconds the fetches stay parked before measuring.
    #[arg(long, global = true, default_value_t = 3)]
    settle_s: u64,
}

fn main() {
    if let Err(e) = run() {
        eprintln!("rill-bench: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let f = cli.flags;
    if let Workload::ParkedFetch = cli.workload {
        let options = rill_bench::parked::ParkedOptions {
            bootstrap: f.bootstrap,
            topic: f.topic,
            partitions: f.partitions,
            connections: f.connections,
            rate_msgs_per_s: f.rate,
            duration: Duration::from_secs(f.duration_s.unwrap_or(20)),
            settle: Duration::from_secs(f.settle_s),
            broker_pid: f
                .broker_pid
                .context("parked-fetch reads the broker's CPU time: give --broker-pid")?,
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        let report = runtime.block_on(rill_bench::parked::run(&options))?;
        print!("{}", report.lines(&options));
        return Ok(());
    }
    let topic_configs = f
        .topic_configs
        .iter()
        .map(|c| {
            c.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .with_context(|| format!("--topic-config {c:?} is not KEY=VALUE"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let messages = match (f.messages, f.duration_s, cli.workload) {
        // `consume` counts what the topic holds when it starts.
        (None, None, Workload::Consume) => None,
        (None, None, _) => Some(1_000_000),
        (m, _, _) => m,
    };
    let held =
        matches!(cli.workload, Workload::Consume) && f.messages.is_none() && f.duration_s.is_none();
    let options = Options {
        bootstrap: f.bootstrap,
        topic: f.topic,
        partitions: f.partitions,
        replication_factor: f.replication_factor,
        topic_configs,
        messages,
        duration: Duration::from_secs(f.duration_s.unwrap_or(10)),
        message_size_bytes: f.message_size,
        producers: f.producers,
        consumers: f.consumers,
        batch_size_bytes: f.batch_size,
        linger_ms: f.linger_ms,
        max_in_flight_per_partition: f.max_in_flight,
        acks: f.acks,
        compression: f.compression,
        idempotence: !f.no_idempotence,
        values: match f.values {
            Values::Repeated => ValueKind::Repeated,
            Values::Text => ValueKind::Text,
        },
        rate_msgs_per_s: f.rate,
        group: f.group,
        consume_held: held,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let progress = Arc::new(Progress::default());
    let bar = match options.messages {
        Some(n) => ProgressBar::new(n),
        None => ProgressBar::new(options.duration.as_secs()),
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let summary = runtime.block_on(async {
        let ticker = {
            let (bar, progress, by_count) = (
                bar.clone(),
                Arc::clone(&progress),
                options.messages.is_some(),
            );
            tokio::spawn(async move {
                let mut last = 0u64;
                let mut tick = tokio::time::interval(Duration::from_millis(250));
                loop {
                    tick.tick().await;
                    let n = progress.records.load(Ordering::Relaxed);
                    if by_count {
                        bar.set_position(n);
                    } else {
                        bar.set_position(bar.elapsed().as_secs());
                    }
                    bar.set_message(format!("{:.0} records/s", (n - last) as f64 * 4.0));
                    last = n;
                }
            })
        };
        let result = match cli.workload {
            Workload::Produce => workload::produce(&options, Arc::clone(&progress)).await,
            Workload::Consume => workload::consume(&options, Arc::clone(&progress)).await,
            Workload::E2e => workload::e2e(&options, Arc::clone(&progress)).await,
            Workload::GroupJoin => {
                rill_bench::group::group_join(&options, Arc::clone(&progress)).await
            }
            Workload::ParkedFetch => unreachable!("parked-fetch returned above"),
        };
        ticker.abort();
        result
    });
    bar.finish_and_clear();
    let summary = summary?;
    print!("{}", summary.table());
    if f.json {
        println!("{}", summary.json());
    }
    Ok(())
}
