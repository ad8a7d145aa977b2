//! Group commit: one sync round serves every write waiting for durability.
//!
//! Appends to `fsync` topics mark their partition dirty and wake the
//! flusher. Each round it takes every dirty partition, plans their syncs
//! (cheap, under each log's lock), runs all the syncs on a blocking thread,
//! then completes them, which moves each partition's durable end and wakes
//! the `acks=all` produces waiting on it. However many produces arrive
//! during a round, the next round syncs each written file once.

use std::sync::{Arc, Mutex};

use rill_storage::SyncPlan;
use tokio::sync::Notify;

use crate::partition::Partition;

/// The handle appends use to reach the flusher.
#[derive(Debug)]
pub struct Flusher {
    /// Partitions with appends waiting for a sync. Guards only the list;
    /// pushes and the round's swap are all that happen under it.
    dirty: Mutex<Vec<Arc<Partition>>>,
    wake: Notify,
    /// Woken after each round: high watermarks of `fsync` topics moved.
    data_arrived: Arc<Notify>,
}

impl Flusher {
    /// A flusher that wakes `data_arrived` after each round.
    pub fn new(data_arrived: Arc<Notify>) -> Self {
        Flusher {
            dirty: Mutex::new(Vec::new()),
            wake: Notify::new(),
            data_arrived,
        }
    }

    /// Queues `partition` for the next round (call once per clean-to-dirty
    /// change, see [`Partition::append`]).
    pub fn mark_dirty(&self, partition: Arc<Partition>) {
        self.dirty
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(partition);
        self.wake.notify_one();
    }

    /// Runs rounds forever.
    pub async fn run(self: Arc<Self>) {
        loop {
            self.wake.notified().await;
            let round: Vec<Arc<Partition>> =
                std::mem::take(&mut *self.dirty.lock().unwrap_or_else(|p| p.into_inner()));
            if round.is_empty() {
                continue;
            }
            let plans: Vec<_> = round.iter().map(|p| p.plan_sync()).collect();
            let bytes: u64 = plans.iter().map(SyncPlan::bytes).sum();
            let started = std::time::Instant::now();
            let results = tokio::task::spawn_blocking(move || {
                plans.into_iter().map(|p| p.run()).collect::<Vec<_>>()
            })
            .await;
            let Ok(results) = results else {
                tracing::error!("sync round panicked");
                continue;
            };
            for (partition, result) in round.iter().zip(results) {
                match result.and_then(|done| partition.complete_sync(done)) {
                    Ok(()) => {}
                    // The waiting produces time out; the next write retries.
                    Err(e) => {
                        tracing::error!(topic = %partition.topic, partition = partition.index, error = %e, "sync failed")
                    }
                }
            }
            tracing::debug!(
                partitions = round.len(),
                bytes,
                us = started.elapsed().as_micros() as u64,
                "sync round"
            );
            self.data_arrived.notify_waiters();
        }
    }
}
