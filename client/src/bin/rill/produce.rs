//! `rill produce`: standard input to a topic, one record per line.
//!
//! Standard input is read on a thread of its own, because reading it
//! blocks, and records go to the producer as lines come; one task awaits
//! their delivery futures in the order they were sent, so reading never
//! waits for acknowledgements and the error reported is the first failed
//! record's. The summary (records acknowledged, rate) goes to stderr
//! whatever happened; any line not acknowledged makes the exit 1, with the
//! first error and the count, so a partial write never looks like success
//! to a script.

use std::io::BufRead;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use bytes::Bytes;
use rill_client::{
    Acks, ClientError, Cluster, Compression, Producer, ProducerConfig, ProducerRecord,
};
use tokio::sync::mpsc;

#[derive(Debug, clap::Args)]
pub(crate) struct ProduceArgs {
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

pub(crate) async fn produce(cluster: Arc<Cluster>, args: ProduceArgs) -> anyhow::Result<i32> {
    let config = ProducerConfig {
        acks: args.acks,
        linger_ms: args.linger_ms,
        batch_size_bytes: args.batch_size,
        delivery_timeout_ms: args.delivery_timeout_ms,
        compression: args.compression,
        idempotence: !args.no_idempotence,
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
