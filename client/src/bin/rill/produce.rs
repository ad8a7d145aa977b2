//! `rill produce`: standard input to a topic, one record per line (or per
//! NUL-terminated chunk with `-Z`, so values may hold newlines).
//!
//! The topic is looked up first: one that does not exist fails the command
//! at once, before anything is read. Standard input is read on a thread of
//! its own, because reading it blocks, and records go to the producer as
//! they come; one task awaits their delivery futures in the order they
//! were sent, so reading never waits for acknowledgements, `--print-offsets`
//! prints where each landed in input order, and the error reported is the
//! first failed record's, with its partition. Each record's key and value
//! are decoded with `--value-format`; a record that cannot be is reported
//! with its line number, and nothing from it on is sent. The summary
//! (records acknowledged, rate) goes to stderr whatever happened; any
//! record not acknowledged, or not sent, makes the exit 1, so a partial
//! write never looks like success to a script.

use std::io::BufRead;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use rill_client::{
    Acks, ClientError, Cluster, Compression, Producer, ProducerConfig, ProducerRecord,
};
use tokio::sync::mpsc;

use crate::encoding::ValueFormat;

#[derive(Debug, clap::Args)]
pub(crate) struct ProduceArgs {
    /// The topic.
    topic: String,
    /// Send every record to this partition (otherwise keys choose, and
    /// keyless records are spread).
    #[arg(short = 'p', long)]
    partition: Option<u32>,
    /// The key of every record, as text (not decoded with
    /// --value-format).
    #[arg(long, conflicts_with = "key_separator")]
    key: Option<String>,
    /// Split each record at the first SEP: key before, value after (a
    /// record without SEP has no key).
    #[arg(short = 'k', long, value_name = "SEP")]
    key_separator: Option<String>,
    /// A header on every record, KEY=VALUE (the value may be empty);
    /// repeatable.
    #[arg(short = 'H', long = "header", value_name = "KEY=VALUE")]
    headers: Vec<String>,
    /// Every record's timestamp, ms since the epoch [default: now].
    #[arg(long, value_name = "MS")]
    timestamp_ms: Option<i64>,
    /// How each record's key and value are written in the input: text (as
    /// they are), base64 or hex.
    #[arg(long, value_enum, default_value_t = ValueFormat::Text)]
    value_format: ValueFormat,
    /// Records are separated by NUL bytes instead of newlines.
    #[arg(short = 'Z', long)]
    null_delimited: bool,
    /// Print `partition P offset O` on stdout for each record acknowledged,
    /// in input order.
    #[arg(long)]
    print_offsets: bool,
    /// Acknowledgement level: 0, 1 or all.
    #[arg(long, value_name = "0|1|all", default_value = "all")]
    acks: Acks,
    /// How long a batch waits for more records, ms.
    #[arg(long, default_value_t = 5)]
    linger_ms: u64,
    /// A batch is sent once it holds this many bytes.
    #[arg(long, default_value_t = 256 * 1024)]
    batch_size: usize,
    /// A record not acknowledged within this long has failed, ms; finding
    /// the topic waits no longer either.
    #[arg(long, value_parser = crate::timeout_ms_parser(), default_value_t = 30_000)]
    delivery_timeout_ms: u64,
    /// How batches are compressed: none, lz4 or zstd (a batch is sent
    /// compressed only when that makes it smaller).
    #[arg(long, value_name = "none|lz4|zstd", default_value = "none")]
    compression: Compression,
    /// Turn the idempotent producer off. It is on by default with
    /// `--acks all`: a batch retried after a lost answer or a leader change
    /// is stored once, in send order.
    #[arg(long)]
    no_idempotence: bool,
}

/// Reads standard input on a thread of its own, one record (up to
/// `delimiter`, which is dropped) at a time.
fn stdin_records(delimiter: u8) -> mpsc::Receiver<std::io::Result<Vec<u8>>> {
    let (tx, rx) = mpsc::channel(1024);
    std::thread::spawn(move || {
        let mut input = std::io::stdin().lock();
        loop {
            let mut record = Vec::new();
            match input.read_until(delimiter, &mut record) {
                Ok(0) => return,
                Ok(_) => {
                    if record.last() == Some(&delimiter) {
                        record.pop();
                    }
                    if tx.blocking_send(Ok(record)).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
    });
    rx
}

/// `-H KEY=VALUE` flags as headers.
fn parse_headers(headers: &[String]) -> anyhow::Result<Vec<(String, Option<Bytes>)>> {
    headers
        .iter()
        .map(|h| match h.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                Ok((k.to_string(), Some(Bytes::from(v.as_bytes().to_vec()))))
            }
            _ => bail!("--header {h:?} is not KEY=VALUE"),
        })
        .collect()
}

/// One input record's key and value, decoded.
fn key_and_value(args: &ProduceArgs, record: &[u8]) -> Result<(Option<Bytes>, Bytes), String> {
    let split = args.key_separator.as_ref().and_then(|sep| {
        let sep = sep.as_bytes();
        (!sep.is_empty())
            .then(|| {
                record
                    .windows(sep.len())
                    .position(|w| w == sep)
                    .map(|at| (&record[..at], &record[at + sep.len()..]))
            })
            .flatten()
    });
    let decode = |what: &str, text: &[u8]| {
        args.value_format
            .decode(text)
            .map(Bytes::from)
            .map_err(|e| format!("its {what} is {e}"))
    };
    match (&args.key, split) {
        (Some(k), _) => Ok((Some(Bytes::from(k.clone())), decode("value", record)?)),
        (None, Some((k, v))) => Ok((Some(decode("key", k)?), decode("value", v)?)),
        (None, None) => Ok((None, decode("value", record)?)),
    }
}

/// `n` records, grammatically.
fn records(n: u64) -> String {
    if n == 1 {
        "1 record".into()
    } else {
        format!("{n} records")
    }
}

/// What the collector of delivery outcomes found.
struct Delivered {
    acked: u64,
    /// The first failure, with the partition, input line and value size
    /// of its record; for a batch refused as too large, its largest
    /// record (the others failed with it).
    first_error: Option<Failed>,
}

/// A record that was not acknowledged.
struct Failed {
    partition: u32,
    line: u64,
    value_bytes: usize,
    error: ClientError,
}

/// A record sent, awaiting its outcome.
struct Pending {
    delivery: rill_client::DeliveryFuture,
    line: u64,
    value_bytes: usize,
}

/// Whether `e` refuses a batch as too large.
fn too_large(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Broker { code, .. } if *code == rill_client::protocol::ErrorCode::RecordTooLarge
    )
}

/// Says what went wrong with `f`, in the topic's terms: a record too
/// large is compared with the topic's `max.message.bytes`.
async fn explain(cluster: &Arc<Cluster>, topic: &str, f: &Failed) -> String {
    let at = format!("topic {topic:?} partition {}", f.partition);
    if !too_large(&f.error) {
        return format!("{at}: {}", f.error);
    }
    let limit = rill_client::Admin::new(Arc::clone(cluster))
        .describe_topic_configs(topic)
        .await
        .ok()
        .and_then(|c| c.into_iter().find(|c| c.key == "max.message.bytes"))
        .map_or_else(
            || "its limit".to_string(),
            |c| format!("max.message.bytes = {}", c.value),
        );
    format!(
        "{at}: the record on line {} ({} bytes of value, more with its key, headers and the batch's framing) is larger than the topic allows ({limit}); raise it with `rill topic create ... --config max.message.bytes=N` for a new topic, or send smaller records",
        f.line, f.value_bytes
    )
}

pub(crate) async fn produce(cluster: Arc<Cluster>, args: ProduceArgs) -> anyhow::Result<i32> {
    let headers = parse_headers(&args.headers)?;
    let info = cluster
        .topic_within(&args.topic, Duration::from_millis(args.delivery_timeout_ms))
        .await?;
    if let Some(p) = args.partition
        && !info.partitions.iter().any(|m| m.partition == p)
    {
        bail!(
            "topic {:?} has no partition {p} (it has {})",
            args.topic,
            info.partitions.len()
        );
    }
    let config = ProducerConfig {
        acks: args.acks,
        linger_ms: args.linger_ms,
        batch_size_bytes: args.batch_size,
        delivery_timeout_ms: args.delivery_timeout_ms,
        compression: args.compression,
        idempotence: !args.no_idempotence,
        ..ProducerConfig::default()
    };
    let producer = Producer::new(Arc::clone(&cluster), config);
    // Outcomes are awaited in send order by one task while input is read.
    let (pending_tx, mut pending_rx) = mpsc::channel::<Pending>(100_000);
    let print_offsets = args.print_offsets;
    let collector = tokio::spawn(async move {
        let mut delivered = Delivered {
            acked: 0,
            first_error: None,
        };
        while let Some(p) = pending_rx.recv().await {
            let partition = p.delivery.partition();
            match p.delivery.await {
                Ok(m) => {
                    delivered.acked += 1;
                    if print_offsets {
                        match m.offset {
                            Some(o) => println!("partition {} offset {o}", m.partition),
                            None => println!("partition {} offset unknown (acks=0)", m.partition),
                        }
                    }
                }
                Err(error) => {
                    let failed = Failed {
                        partition,
                        line: p.line,
                        value_bytes: p.value_bytes,
                        error,
                    };
                    match &delivered.first_error {
                        None => delivered.first_error = Some(failed),
                        Some(first)
                            if too_large(&first.error)
                                && too_large(&failed.error)
                                && failed.value_bytes > first.value_bytes =>
                        {
                            delivered.first_error = Some(failed);
                        }
                        Some(_) => {}
                    }
                }
            }
        }
        delivered
    });
    let started = Instant::now();
    let (mut sent, mut bytes, mut send_error, mut stopped) = (0u64, 0u64, None, None);
    let mut input = stdin_records(if args.null_delimited { 0 } else { b'\n' });
    let mut line = 0u64;
    while let Some(record) = input.recv().await {
        line += 1;
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                stopped = Some(format!(
                    "line {line}: standard input could not be read ({e}); it and everything after it were not sent"
                ));
                break;
            }
        };
        let (key, value) = match key_and_value(&args, &record) {
            Ok(kv) => kv,
            Err(why) => {
                stopped = Some(format!(
                    "line {line}: {why}; it and everything after it were not sent"
                ));
                break;
            }
        };
        bytes += value.len() as u64;
        let value_bytes = value.len();
        let record = ProducerRecord {
            topic: args.topic.clone(),
            partition: args.partition,
            key,
            value: Some(value),
            timestamp_ms: args.timestamp_ms,
            headers: headers.clone(),
        };
        sent += 1;
        match producer.send(record).await {
            Ok(delivery) => {
                let pending = Pending {
                    delivery,
                    line,
                    value_bytes,
                };
                if pending_tx.send(pending).await.is_err() {
                    bail!("internal error: the delivery collector stopped");
                }
            }
            Err(e) => {
                send_error.get_or_insert(e);
            }
        }
    }
    drop(input);
    producer.close().await;
    drop(pending_tx);
    let delivered = collector.await.context("delivery collector")?;
    let seconds = started.elapsed().as_secs_f64().max(1e-9);
    eprintln!(
        "{} acknowledged ({bytes} bytes of values sent) in {seconds:.3} s: {:.0} records/s, {:.2} MB/s",
        records(delivered.acked),
        delivered.acked as f64 / seconds,
        bytes as f64 / seconds / 1e6
    );
    let failed = sent - delivered.acked;
    if failed > 0 {
        match (delivered.first_error, send_error) {
            (Some(f), _) => eprintln!("rill: {}", explain(&cluster, &args.topic, &f).await),
            (None, Some(e)) => eprintln!("rill: topic {:?}: {e}", args.topic),
            (None, None) => {}
        }
        eprintln!("{} not acknowledged", records(failed));
    }
    if let Some(why) = &stopped {
        eprintln!("rill: {why}");
    }
    Ok(if failed > 0 || stopped.is_some() {
        1
    } else {
        0
    })
}
