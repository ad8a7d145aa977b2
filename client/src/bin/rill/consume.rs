//! `rill consume`: a topic's records on stdout, one a line, as values or
//! as JSON objects.
//!
//! It stops after `--max-messages` records, or successfully after
//! `--timeout-ms` without a new record, and otherwise follows the topic
//! until stopped; it polls at most half a second at a time so the idle
//! limit is checked even while nothing arrives. Output is buffered and
//! flushed after every poll, and a reader that goes away (`rill consume |
//! head`) ends the command quietly and successfully, as other command-line
//! tools do. Keys and values are printed as UTF-8, lossily: the output is
//! for people and line-based tools.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use clap::ValueEnum;
use rill_client::{Cluster, Consumer, ConsumerConfig, SeekTo};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum RecordFormat {
    Value,
    Json,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ConsumeArgs {
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

pub(crate) async fn consume(cluster: Arc<Cluster>, args: ConsumeArgs) -> anyhow::Result<()> {
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
