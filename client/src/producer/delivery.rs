//! What a caller awaits for one record: its [`DeliveryFuture`], and the
//! [`BatchOutcome`] that the futures of every record in one batch share.
//!
//! A record gets no allocation of its own: its future is the batch's
//! outcome plus the record's index in the batch, because the broker answers
//! for whole batches and a record's offset is the batch's base offset plus
//! that index. An outcome is set once and never changes: a batch sent again
//! after a retriable failure keeps its outcome, so a caller sees the final
//! answer, never an intermediate failure, and a late second answer is
//! ignored. Setting the outcome and registering a waker meet under the
//! outcome's own small lock, never the accumulator's, so a caller polling
//! its future does not contend with `send` or the sender task, and a result
//! stored just before a poller registers is still seen.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};

use super::{RecordMetadata, lock};
use crate::error::ClientError;

type Outcome = Result<RecordMetadata, ClientError>;

/// A batch's base offset (`None` with `acks=0`) or why it failed.
pub(super) type BatchResult = Result<Option<u64>, ClientError>;

/// What became of one batch, shared by the futures of all its records.
#[derive(Debug)]
pub(super) struct BatchOutcome {
    topic: Arc<str>,
    partition: u32,
    /// Set once, when the batch is acknowledged or has failed.
    pub(super) result: OnceLock<BatchResult>,
    /// Wakers of the futures waiting for `result`. Guards a push per
    /// waiting future and the one drain after `result` is set; nothing else
    /// runs under it.
    wakers: Mutex<Vec<Waker>>,
}

impl BatchOutcome {
    pub(super) fn new(topic: Arc<str>, partition: u32) -> Arc<BatchOutcome> {
        Arc::new(BatchOutcome {
            topic,
            partition,
            result: OnceLock::new(),
            wakers: Mutex::new(Vec::new()),
        })
    }

    pub(super) fn set(&self, result: BatchResult) {
        // The result is stored before the wakers are taken, and a poller
        // checks it again under the wakers' lock: no wake-up is lost.
        if self.result.set(result).is_ok() {
            let wakers = std::mem::take(&mut *lock(&self.wakers));
            for w in wakers {
                w.wake();
            }
        }
    }
}

/// Resolves when the record is acknowledged or has failed.
#[derive(Debug)]
pub struct DeliveryFuture {
    pub(super) batch: Arc<BatchOutcome>,
    /// The record's position in its batch: its offset is the batch's base
    /// offset plus this.
    pub(super) index: u32,
    /// Where this future's waker sits in `batch.wakers`, once registered.
    pub(super) slot: Option<usize>,
}

impl DeliveryFuture {
    /// The partition the record went to (for a record that failed before
    /// a partition was chosen, the one asked for, or 0).
    pub fn partition(&self) -> u32 {
        self.batch.partition
    }

    pub(super) fn failed(topic: &str, partition: u32, error: ClientError) -> DeliveryFuture {
        let batch = BatchOutcome::new(topic.into(), partition);
        batch.set(Err(error));
        DeliveryFuture {
            batch,
            index: 0,
            slot: None,
        }
    }

    fn outcome(batch: &BatchOutcome, index: u32, result: &BatchResult) -> Outcome {
        match result {
            Ok(base) => Ok(RecordMetadata {
                topic: Arc::clone(&batch.topic),
                partition: batch.partition,
                offset: base.map(|b| b + u64::from(index)),
            }),
            Err(e) => Err(e.clone()),
        }
    }
}

impl Future for DeliveryFuture {
    type Output = Outcome;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        let DeliveryFuture { batch, index, slot } = &mut *self;
        if let Some(r) = batch.result.get() {
            return Poll::Ready(DeliveryFuture::outcome(batch, *index, r));
        }
        let mut wakers = lock(&batch.wakers);
        if let Some(r) = batch.result.get() {
            drop(wakers);
            return Poll::Ready(DeliveryFuture::outcome(batch, *index, r));
        }
        match *slot {
            Some(i) if i < wakers.len() => {
                if !wakers[i].will_wake(cx.waker()) {
                    wakers[i] = cx.waker().clone();
                }
            }
            _ => {
                *slot = Some(wakers.len());
                wakers.push(cx.waker().clone());
            }
        }
        Poll::Pending
    }
}
