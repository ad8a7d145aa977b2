//! Faulting in the active segment's pages ahead of the writer, on a
//! background thread.
//!
//! Writing to a mapped page for the first time costs a page fault: the kernel
//! allocates and zeroes the page and asks the filesystem to reserve it
//! (`page_mkwrite`). Done on the writer's thread that costs more than the copy
//! itself, and done in one go when the file grows it stalls an append for
//! milliseconds. So the writer only queues "populate this range" and one
//! shared thread does it with `MADV_POPULATE_WRITE`, a window ahead of the
//! writer. The window is small (a few MiB per active segment): populated
//! pages count as dirty page cache, and pages populated long before they are
//! written would be written back as zeros first.
//!
//! Invariants: a job covers only bytes inside the file's length when it was
//! queued (the file never shrinks while mapped, so they stay inside), and the
//! job holds the mapping alive. The queue is bounded; when it is full the job
//! is dropped and the writer simply takes the faults itself.

use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, OnceLock};

use crate::mapping::SegmentMap;

/// Jobs waiting for the prefault thread, at most.
const QUEUE_MAX: usize = 256;

/// One range to fault in for writing.
struct Job {
    map: Arc<SegmentMap>,
    start: u64,
    len: u64,
}

/// The sender to the shared prefault thread, started on first use; `None`
/// when the thread could not be started (prefaulting is then skipped).
fn queue() -> Option<&'static SyncSender<Job>> {
    static QUEUE: OnceLock<Option<SyncSender<Job>>> = OnceLock::new();
    QUEUE
        .get_or_init(|| {
            let (tx, rx) = sync_channel::<Job>(QUEUE_MAX);
            std::thread::Builder::new()
                .name("rill-prefault".into())
                .spawn(move || {
                    for job in rx {
                        job.map.populate_write(job.start, job.len);
                    }
                })
                .ok()
                .map(|_| tx)
        })
        .as_ref()
}

/// Queues `[start, start + len)` of `map` to be faulted in for writing. The
/// range must lie inside the file behind the mapping.
pub(crate) fn prefault(map: &Arc<SegmentMap>, start: u64, len: u64) {
    if len == 0 {
        return;
    }
    let Some(q) = queue() else { return };
    match q.try_send(Job {
        map: Arc::clone(map),
        start,
        len,
    }) {
        Ok(()) | Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {}
    }
}
