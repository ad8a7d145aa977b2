//! The parked-fetch workload: what fetches parked on many idle partitions
//! cost a broker while one partition is written.
//!
//! Creates (when missing) a topic of many partitions, keeps a fetch with a
//! long `max_wait_ms` parked on every partition (spread over a few
//! connections, each fetching its share of the partitions in one request,
//! sent again as soon as it is answered), then writes one partition at a
//! steady rate and reports the broker's CPU time over the writing phase,
//! read from `/proc/<pid>/stat` (utime + stime) before and after. The
//! broker is the one at the bootstrap address; its pid is given.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use rill_client::connection::Connection;
use rill_client::protocol::ErrorCode;
use rill_client::protocol::messages::{
    FetchPartition, FetchRequest, FetchTopic, Request, Response,
};
use rill_client::{Acks, Cluster, Producer, ProducerConfig, ProducerRecord};

/// Longest a parked fetch waits, ms: the broker's own limit, so fetches
/// are answered by data, not by their wait running out.
const PARKED_MAX_WAIT_MS: u32 = 30_000;

/// Settings of one run.
#[derive(Debug, Clone)]
pub struct ParkedOptions {
    /// `host:port` of the broker.
    pub bootstrap: String,
    /// Topic, created when missing with `partitions` partitions.
    pub topic: String,
    /// Partitions, each with a fetch parked on it.
    pub partitions: u32,
    /// Connections the parked fetches are spread over.
    pub connections: u32,
    /// Records per second written to partition 0.
    pub rate_msgs_per_s: u64,
    /// How long partition 0 is written, and the broker measured.
    pub duration: Duration,
    /// How long the fetches are left parked before the measurement starts.
    pub settle: Duration,
    /// The broker's process id, for its CPU time.
    pub broker_pid: u32,
}

/// What one run measured.
#[derive(Debug, Clone)]
pub struct ParkedReport {
    /// The broker's CPU time (user + system) over the writing phase, s.
    pub broker_cpu_s: f64,
    /// The writing phase, s.
    pub elapsed_s: f64,
    /// Records written to partition 0 (acknowledged).
    pub records: u64,
    /// Fetch responses received during the writing phase.
    pub fetch_responses: u64,
}

impl ParkedReport {
    /// One line for people, one JSON object for scripts.
    pub fn lines(&self, o: &ParkedOptions) -> String {
        let core_pct = 100.0 * self.broker_cpu_s / self.elapsed_s;
        format!(
            "parked fetches on {} partitions over {} connections, {} records/s to one partition for {:.1} s: \
             broker cpu {:.3} s ({core_pct:.1}% of a core), {} records, {} fetch responses\n\
             {{\"broker_cpu_s\":{:.4},\"core_pct\":{core_pct:.3},\"elapsed_s\":{:.3},\"records\":{},\"fetch_responses\":{}}}\n",
            o.partitions,
            o.connections,
            o.rate_msgs_per_s,
            self.elapsed_s,
            self.broker_cpu_s,
            self.records,
            self.fetch_responses,
            self.broker_cpu_s,
            self.elapsed_s,
            self.records,
            self.fetch_responses,
        )
    }
}

/// utime + stime of `pid`, s.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name may hold spaces; the fields after it do not.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("a /proc stat line has the command in parentheses")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after
    // the command.
    let ticks = |i: usize| -> anyhow::Result<u64> {
        fields
            .get(i)
            .context("a /proc stat line is shorter than expected")?
            .parse()
            .context("a /proc stat field is not a number")
    };
    // SAFETY: sysconf only reads a setting of the system.
    let per_s = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    anyhow::ensure!(per_s > 0, "sysconf(_SC_CLK_TCK) failed");
    Ok((ticks(11)? + ticks(12)?) as f64 / per_s as f64)
}

/// Runs the workload once. See the module documentation.
pub async fn run(o: &ParkedOptions) -> anyhow::Result<ParkedReport> {
    let cluster = Cluster::new(&o.bootstrap, "rill-bench-parked")?;
    match rill_client::Admin::new(Arc::clone(&cluster))
        .create_topic(&o.topic, o.partitions, 1, Vec::new())
        .await
    {
        Ok(()) => {}
        Err(rill_client::ClientError::Broker {
            code: ErrorCode::TopicAlreadyExists,
            ..
        }) => {}
        Err(e) => return Err(e.into()),
    }
    let addr = o
        .bootstrap
        .split(',')
        .next()
        .context("--bootstrap names a broker")?
        .to_string();
    let connections = o.connections.clamp(1, o.partitions.max(1));
    let responses = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut fetchers = Vec::new();
    for c in 0..connections {
        let mine: Vec<u32> = (0..o.partitions).filter(|p| p % connections == c).collect();
        let conn = Connection::connect(&addr, "rill-bench-parked", Duration::from_secs(10)).await?;
        let (topic, responses, stop) = (o.topic.clone(), Arc::clone(&responses), Arc::clone(&stop));
        fetchers.push(tokio::spawn(async move {
            park(conn, topic, mine, responses, stop).await
        }));
    }
    let producer = Producer::new(
        cluster,
        ProducerConfig {
            acks: Acks::All,
            linger_ms: 0,
            ..ProducerConfig::default()
        },
    );
    // One write first: the topic's partitions are led and the first
    // fetches answered before anything is measured.
    producer
        .send(ProducerRecord {
            topic: o.topic.clone(),
            partition: Some(0),
            value: Some(bytes::Bytes::from_static(b"warm-up")),
            ..ProducerRecord::default()
        })
        .await?
        .await?;
    tokio::time::sleep(o.settle).await;
    let responses_before = responses.load(Ordering::Relaxed);
    let cpu_before = cpu_seconds(o.broker_pid)?;
    let begin = Instant::now();
    let every = Duration::from_secs_f64(1.0 / o.rate_msgs_per_s.max(1) as f64);
    let mut pending = Vec::new();
    let mut n = 0u64;
    while begin.elapsed() < o.duration {
        tokio::time::sleep_until((begin + every.mul_f64(n as f64)).into()).await;
        pending.push(
            producer
                .send(ProducerRecord {
                    topic: o.topic.clone(),
                    partition: Some(0),
                    value: Some(bytes::Bytes::from(format!("record-{n}"))),
                    ..ProducerRecord::default()
                })
                .await?,
        );
        n += 1;
    }
    let mut records = 0;
    for d in pending {
        d.await?;
        records += 1;
    }
    let elapsed_s = begin.elapsed().as_secs_f64();
    let cpu_after = cpu_seconds(o.broker_pid)?;
    let fetch_responses = responses.load(Ordering::Relaxed) - responses_before;
    stop.store(true, Ordering::Relaxed);
    for f in fetchers {
        f.abort();
    }
    Ok(ParkedReport {
        broker_cpu_s: cpu_after - cpu_before,
        elapsed_s,
        records,
        fetch_responses,
    })
}

/// Keeps one fetch of `partitions` parked, from their high watermarks on,
/// until `stop`; counts its answers.
async fn park(
    conn: Connection,
    topic: String,
    partitions: Vec<u32>,
    responses: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let mut offsets: Vec<u64> = vec![0; partitions.len()];
    while !stop.load(Ordering::Relaxed) {
        let request = Request::Fetch(FetchRequest {
            max_wait_ms: PARKED_MAX_WAIT_MS,
            min_bytes: 1,
            max_bytes: 1 << 20,
            topics: vec![FetchTopic {
                name: topic.clone(),
                partitions: partitions
                    .iter()
                    .zip(&offsets)
                    .map(|(&partition, &fetch_offset)| FetchPartition {
                        partition,
                        fetch_offset,
                        partition_max_bytes: 64 * 1024,
                    })
                    .collect(),
            }],
        });
        let wait = Duration::from_millis(u64::from(PARKED_MAX_WAIT_MS) + 10_000);
        let Response::Fetch(f) = conn.request(request, wait).await? else {
            anyhow::bail!("a fetch was answered with another response");
        };
        responses.fetch_add(1, Ordering::Relaxed);
        let mut refused = false;
        for p in f.topics.iter().flat_map(|t| &t.partitions) {
            refused |= !p.error.is_ok();
            if let Some(i) = partitions.iter().position(|&q| q == p.partition)
                && p.error.is_ok()
            {
                // Past whatever was returned: the next fetch parks again.
                offsets[i] = offsets[i].max(p.high_watermark);
            }
        }
        if refused {
            // Partitions not led yet: asked again after a pause.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}
