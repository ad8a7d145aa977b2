//! The settings of one log, and the clock it reads.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use crate::batch::{HEADER_BYTES, MAX_BATCH_BYTES_DEFAULT};
use crate::error::LogError;

/// How a log lays out and keeps its data. Defaults follow Kafka's where one
/// exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// Largest size of a segment file, bytes; the active segment is mapped
    /// over this much address space. At most 4 GiB (positions are `u32`).
    /// Default 1 GiB.
    pub segment_bytes: u64,
    /// Roll the active segment once it is this old (from its first append),
    /// milliseconds. Default 7 days.
    pub segment_ms: Option<u64>,
    /// The active segment's file is grown ahead of the writer in steps of
    /// at most this many bytes (`fallocate`); a new segment's steps start
    /// at 64 KiB and double as it fills. Default 16 MiB.
    pub grow_step_bytes: u64,
    /// Bytes of log between two sparse index entries. Default 4 KiB.
    pub index_interval_bytes: u64,
    /// Largest accepted batch, length field included, bytes. Default 1 MiB.
    pub max_batch_bytes: usize,
    /// Delete sealed segments whose newest record is older than this,
    /// milliseconds. Default 7 days; `None` keeps data forever.
    pub retention_ms: Option<u64>,
    /// Delete the oldest sealed segments while the log is larger than this,
    /// bytes. Default `None`: no size limit.
    pub retention_bytes: Option<u64>,
    /// Forget an idempotent producer whose newest batch here is older than
    /// this, ms (Kafka's `producer.id.expiration.ms`): a batch it sends
    /// later is taken as the start of a new sequence. Default 1 day.
    pub producer_expiration_ms: u64,
    /// Whether the log locks its directory (`.lock`, `flock`) against a
    /// second opener for as long as it is open: one more open file per
    /// log. Default true; an owner that holds a lock over every log it
    /// opens (the broker locks its data directory) turns it off, as a
    /// broker holding thousands of replicas counts its open files.
    pub lock_dir: bool,
}

const DAY_MS: u64 = 24 * 60 * 60 * 1000;

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: Some(7 * DAY_MS),
            grow_step_bytes: 16 << 20,
            index_interval_bytes: 4096,
            max_batch_bytes: MAX_BATCH_BYTES_DEFAULT,
            retention_ms: Some(7 * DAY_MS),
            retention_bytes: None,
            producer_expiration_ms: DAY_MS,
            lock_dir: true,
        }
    }
}

/// Page size the grow step must be a multiple of, bytes.
const PAGE_BYTES: u64 = 4096;

impl LogConfig {
    /// Refuses settings that cannot work together.
    pub fn validate(&self) -> Result<(), LogError> {
        let bad = |why: &str| Err(LogError::InvalidConfig(why.to_string()));
        if self.max_batch_bytes < HEADER_BYTES {
            return bad("max_batch_bytes is smaller than a batch header");
        }
        if self.segment_bytes < self.max_batch_bytes as u64 {
            return bad("segment_bytes must hold at least one batch of max_batch_bytes");
        }
        if self.segment_bytes > u64::from(u32::MAX) {
            return bad("segment_bytes must be at most 4 GiB");
        }
        if self.grow_step_bytes == 0 || self.grow_step_bytes % PAGE_BYTES != 0 {
            return bad("grow_step_bytes must be a positive multiple of 4096");
        }
        if self.index_interval_bytes == 0 {
            return bad("index_interval_bytes must be positive");
        }
        Ok(())
    }
}

/// Wall-clock time for rolling and retention, injectable for tests.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
    }
}

/// A clock that only moves when told to: for tests of rolling and retention.
#[derive(Debug, Default, Clone)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    /// A clock reading `now_ms`.
    pub fn new(now_ms: i64) -> Self {
        ManualClock(Arc::new(AtomicI64::new(now_ms)))
    }
    /// Sets the time, milliseconds since the epoch.
    pub fn set_ms(&self, now_ms: i64) {
        self.0.store(now_ms, Ordering::Relaxed);
    }
    /// Moves the time forward by `ms`.
    pub fn advance_ms(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::Relaxed);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}
