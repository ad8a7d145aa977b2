//! `rill consume`: a topic's records on stdout, one a line, as values or
//! as JSON objects.
//!
//! It stops after `--max-messages` records, or successfully after
//! `--timeout-ms` without a new record, and otherwise follows the topic
//! until stopped; it polls at most half a second at a time so the idle
//! limit is checked even while nothing arrives. Output is buffered and
//! flushed after every poll, and a reader that goes away (`rill consume |
//! head`) ends the command quietly and successfully, as other command-line
//! tools do. How a record is printed (`-f`) and how its key and value are
//! written (`--value-format`) are `crate::output`'s.
//!
//! With `--group`, it reads as a member of that consumer group: the
//! partitions the group assigns it, from the group's committed offsets
//! (`--offset earliest|latest` only where the group has none). It commits
//! exactly what it printed when it stops (at `--max-messages`, after
//! `--timeout-ms` idle, or on SIGINT or SIGTERM, which then end it
//! successfully; a second signal gives up committing), then leaves the
//! group. While it runs, the group's automatic commits and the commits of
//! partitions moving to other members cover only printed records: every
//! poll's records are printed in full but for the last one.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::collections::BTreeMap;

use anyhow::Context;
use rill_client::{
    Cluster, CommitOffset, Consumer, ConsumerConfig, ConsumerRecord, GroupConfig, OffsetReset,
    SeekTo,
};
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::encoding::ValueFormat;
use crate::output::Output;

/// `rill consume`'s flags.
#[derive(Debug, clap::Args)]
pub(crate) struct ConsumeArgs {
    /// The topic.
    topic: String,
    /// Read only this partition (otherwise every partition).
    #[arg(short = 'p', long, conflicts_with = "group")]
    partition: Option<u32>,
    /// Where to start in each partition: earliest, latest, an offset N,
    /// -N (N records before the end), or @TIMESTAMP_MS (the first record
    /// at or after it). With --group, earliest or latest, for partitions
    /// the group has no commit for.
    #[arg(
        short = 'o',
        long,
        default_value = "earliest",
        allow_hyphen_values = true,
        value_name = "earliest|latest|N|-N|@MS"
    )]
    offset: String,
    /// Read as a member of this consumer group: the partitions it assigns,
    /// from its committed offsets; commit what was printed, then leave.
    #[arg(long)]
    group: Option<String>,
    /// Exit after printing this many records.
    #[arg(short = 'n', long)]
    max_messages: Option<u64>,
    /// Exit (successfully) after this long with no new record, ms.
    #[arg(long, value_parser = crate::timeout_ms_parser())]
    timeout_ms: Option<u64>,
    /// How each record is printed: value, json (topic, partition, offset,
    /// timestamp, key, value, headers), or a template with kcat's tokens:
    /// %t topic, %p partition, %o offset, %k key, %v value, %T timestamp,
    /// %h headers, %S value size, %K key size, %% a %, and \n \t \r \\
    /// (e.g. '%p:%o %k=%v\n').
    #[arg(short = 'f', long, default_value = "value", value_parser = Output::parse)]
    format: Output,
    /// How keys and values are written: text (their bytes as they are;
    /// as UTF-8 in json), base64 or hex (binary-safe).
    #[arg(long, value_enum, default_value_t = ValueFormat::Text)]
    value_format: ValueFormat,
}

/// `-o/--offset` as a place to start.
fn parse_offset(text: &str) -> anyhow::Result<SeekTo> {
    let refused = || {
        anyhow::anyhow!(
            "--offset is earliest, latest, N, -N (N records before the end) or @TIMESTAMP_MS, not {text:?}"
        )
    };
    Ok(match text {
        "earliest" => SeekTo::Earliest,
        "latest" => SeekTo::Latest,
        _ => {
            if let Some(n) = text.strip_prefix('-') {
                SeekTo::BeforeEnd(n.parse().map_err(|_| refused())?)
            } else if let Some(ms) = text.strip_prefix('@') {
                SeekTo::Timestamp(ms.parse().map_err(|_| refused())?)
            } else {
                SeekTo::Offset(text.parse().map_err(|_| refused())?)
            }
        }
    })
}

/// Refuses offset `n` if a partition read does not hold it, naming the
/// offsets it does hold (before any record is printed, as `poll` would
/// only say `OffsetOutOfRange`).
async fn check_in_range(consumer: &mut Consumer, args: &ConsumeArgs, n: u64) -> anyhow::Result<()> {
    let partitions = args.partition.map(|p| vec![p]);
    consumer
        .assign(&args.topic, partitions.clone(), SeekTo::Earliest)
        .await?;
    let starts = consumer.positions().clone();
    consumer
        .assign(&args.topic, partitions, SeekTo::Latest)
        .await?;
    for ((topic, p), end) in consumer.positions() {
        let start = starts.get(&(topic.clone(), *p)).copied().unwrap_or(0);
        if n < start || n > *end {
            anyhow::bail!(
                "offset {n} is out of range for topic {topic:?} partition {p}: its log starts at offset {start} and the next record will be offset {end}; use -o earliest, -o latest or -o -N"
            );
        }
    }
    Ok(())
}

/// The consumer's settings: with `--timeout-ms`, finding where to start
/// waits no longer than that for a partition's leader.
fn consumer_config(args: &ConsumeArgs) -> ConsumerConfig {
    let mut config = ConsumerConfig::default();
    if let Some(ms) = args.timeout_ms {
        config.leader_wait_ms = ms;
    }
    config
}

pub(crate) async fn consume(cluster: Arc<Cluster>, args: ConsumeArgs) -> anyhow::Result<()> {
    if let Some(group) = args.group.clone() {
        return consume_in_group(cluster, args, group).await;
    }
    let from = parse_offset(&args.offset)?;
    let mut consumer = Consumer::new(cluster, consumer_config(&args));
    if let SeekTo::Offset(n) = from {
        check_in_range(&mut consumer, &args, n).await?;
    }
    consumer
        .assign(&args.topic, args.partition.map(|p| vec![p]), from)
        .await?;
    let mut printer = Printer::new(&args);
    while let Some(wait) = printer.next_wait() {
        let records = consumer.poll(wait).await?;
        if printer.print(&records)? == Printed::ReaderGone {
            return Ok(());
        }
    }
    Ok(())
}

/// `rill consume --group`: reads as a member of `group` until a limit or
/// a signal, then commits what was printed and leaves.
async fn consume_in_group(
    cluster: Arc<Cluster>,
    args: ConsumeArgs,
    group: String,
) -> anyhow::Result<()> {
    let auto_offset_reset = match args.offset.as_str() {
        "earliest" => OffsetReset::Earliest,
        "latest" => OffsetReset::Latest,
        other => anyhow::bail!(
            "--offset with --group is earliest or latest (where the group has no commit), not {other:?}: a group reads on from its committed offsets (rill group reset-offsets moves them)"
        ),
    };
    let mut signals = Signals::new()?;
    let mut consumer = Consumer::new(cluster, consumer_config(&args));
    consumer.subscribe(
        GroupConfig {
            auto_offset_reset,
            ..GroupConfig::new(group.clone())
        },
        vec![args.topic.clone()],
    )?;
    let mut printer = Printer::new(&args);
    let mut stopped = false;
    while let Some(wait) = printer.next_wait() {
        let records = tokio::select! {
            records = consumer.poll(wait) => records?,
            () = signals.next() => {
                stopped = true;
                break;
            }
        };
        if printer.print(&records)? == Printed::ReaderGone {
            break;
        }
    }
    tokio::select! {
        done = finish(consumer, printer.to_commit()) => done
            .with_context(|| format!("committing what was printed to group {group:?}")),
        () = signals.next() => anyhow::bail!(
            "interrupted {}while committing to group {group:?}: what was printed since its last commit will be read again",
            if stopped { "again " } else { "" }
        ),
    }
}

/// Commits exactly what was printed, then leaves the group (whose
/// automatic commit on close finds nothing more: every record `poll`
/// returned was printed, or is in `offsets`).
async fn finish(
    mut consumer: Consumer,
    offsets: BTreeMap<(String, u32), CommitOffset>,
) -> Result<(), rill_client::ClientError> {
    let committed = consumer.commit_offsets_sync(offsets).await;
    // Left whether or not the commit went through.
    let closed = consumer.close().await;
    committed.and(closed)
}

/// SIGINT and SIGTERM, which end a group member gracefully.
struct Signals {
    interrupt: Signal,
    terminate: Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Signals> {
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt()).context("handling SIGINT")?,
            terminate: signal(SignalKind::terminate()).context("handling SIGTERM")?,
        })
    }

    /// The next SIGINT or SIGTERM.
    async fn next(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

/// Whether the reader of stdout is still there.
#[derive(Debug, PartialEq, Eq)]
enum Printed {
    Ok,
    ReaderGone,
}

/// Prints records up to the limits, and remembers what it printed.
struct Printer {
    out: std::io::BufWriter<std::io::StdoutLock<'static>>,
    format: Output,
    value_format: ValueFormat,
    max_messages: Option<u64>,
    idle_limit: Option<Duration>,
    count: u64,
    last_record: Instant,
    /// Per partition, the offset after the last record printed and
    /// flushed, with its leader epoch: what a group commits.
    printed: BTreeMap<(String, u32), CommitOffset>,
    /// Per partition, the first record a poll returned that
    /// `--max-messages` left unprinted: where a group reads on.
    unprinted: BTreeMap<(String, u32), u64>,
}

impl Printer {
    fn new(args: &ConsumeArgs) -> Printer {
        Printer {
            out: std::io::BufWriter::new(std::io::stdout().lock()),
            format: args.format.clone(),
            value_format: args.value_format,
            max_messages: args.max_messages,
            idle_limit: args.timeout_ms.map(Duration::from_millis),
            count: 0,
            last_record: Instant::now(),
            printed: BTreeMap::new(),
            unprinted: BTreeMap::new(),
        }
    }

    /// What a group commits: the offset after the last record printed of
    /// each partition printed from, and the first record left unprinted
    /// of the others (the consumer took those records; the group must not
    /// count them read).
    fn to_commit(&self) -> BTreeMap<(String, u32), CommitOffset> {
        let mut out = self.printed.clone();
        for (k, &offset) in &self.unprinted {
            // Printed from, the partition's next record is that one.
            out.entry(k.clone()).or_insert(CommitOffset {
                offset,
                leader_epoch: 0,
            });
        }
        out
    }

    /// How long the next poll may wait, or `None` once a limit is reached.
    fn next_wait(&self) -> Option<Duration> {
        if self.max_messages.is_some_and(|m| self.count >= m) {
            return None;
        }
        match self.idle_limit {
            Some(limit) => match limit.checked_sub(self.last_record.elapsed()) {
                Some(left) if !left.is_zero() => Some(left.min(Duration::from_millis(500))),
                _ => None,
            },
            None => Some(Duration::from_millis(500)),
        }
    }

    /// Prints `records` up to `--max-messages`, then flushes.
    fn print(&mut self, records: &[ConsumerRecord]) -> anyhow::Result<Printed> {
        if !records.is_empty() {
            self.last_record = Instant::now();
        }
        // Counted as printed only once flushed: what a reader that went
        // away may not have seen is read again by the group's next member.
        let mut written: BTreeMap<(String, u32), CommitOffset> = BTreeMap::new();
        for r in records {
            if self.max_messages.is_some_and(|m| self.count >= m) {
                self.unprinted
                    .entry((r.topic.clone(), r.partition))
                    .or_insert(r.offset);
                continue;
            }
            if let Err(e) = self.format.write(&mut self.out, r, self.value_format) {
                if e.kind() == std::io::ErrorKind::BrokenPipe {
                    return Ok(Printed::ReaderGone);
                }
                return Err(e.into());
            }
            self.count += 1;
            written.insert(
                (r.topic.clone(), r.partition),
                CommitOffset {
                    offset: r.offset + 1,
                    leader_epoch: r.leader_epoch,
                },
            );
        }
        match self.out.flush() {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(Printed::ReaderGone),
            Err(e) => Err(e.into()),
            Ok(()) => {
                self.printed.extend(written);
                Ok(Printed::Ok)
            }
        }
    }
}
