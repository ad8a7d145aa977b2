//! The broker's log output, written by a thread of its own.
//!
//! Log lines go to stderr, which is often a file on the same disk as the
//! data. A write to a file can block for seconds while that disk is busy:
//! when the page holding the file's last partial block has been evicted,
//! ext4 reads the block back before the write can proceed, and that read
//! queues behind the writeback of gigabytes of data. Seen on the Raft
//! thread, such a write held back every group's heartbeats long enough to
//! cost the controller its leadership. So a thread that logs only queues
//! its line; the writer thread writes it.
//!
//! Invariants: a line is written whole, and lines are written in the order
//! they were queued. Nothing here blocks a thread that logs: the queue is
//! bounded ([`LINES_QUEUED_MAX`]), and a line that finds it full is dropped
//! and counted; the count is written before the next line that gets
//! through. [`FlushGuard`] drains the queue when the broker exits, and
//! [`FlushGuard::close`] ends the writer thread once every line queued
//! before it is written (`crate::threads` starts that thread and joins it,
//! last of all).

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tracing_subscriber::fmt::MakeWriter;

/// Lines waiting for the writer thread, at most.
pub const LINES_QUEUED_MAX: usize = 16_384;

/// Longest an exiting broker waits for its queued lines to be written, ms.
pub const FLUSH_WAIT_MS_MAX: u64 = 2_000;

enum Item {
    Line(Vec<u8>),
    Flush(SyncSender<()>),
    /// Ends the writer thread: nothing queued after it is written.
    Close,
}

/// Hands log lines to the writer thread; a `tracing` writer factory.
#[derive(Clone)]
pub struct LogWriter {
    queue: SyncSender<Item>,
    dropped: Arc<AtomicU64>,
}

/// Drains the queue when dropped (waiting at most [`FLUSH_WAIT_MS_MAX`]).
pub struct FlushGuard {
    queue: SyncSender<Item>,
}

/// The process's log queue, for [`flush`] on a path that exits without
/// unwinding (the first writer started; tests start several).
static PROCESS_QUEUE: OnceLock<SyncSender<Item>> = OnceLock::new();

/// Waits (at most [`FLUSH_WAIT_MS_MAX`]) until every line queued so far is
/// written: for a path that ends the process with `std::process::exit`,
/// which skips [`FlushGuard`].
pub fn flush() {
    if let Some(queue) = PROCESS_QUEUE.get() {
        flush_queue(queue);
    }
}

/// Queues a flush and waits for it, never past [`FLUSH_WAIT_MS_MAX`] in
/// all (a stuck output must not hang an exiting broker).
fn flush_queue(queue: &SyncSender<Item>) {
    let deadline = Instant::now() + Duration::from_millis(FLUSH_WAIT_MS_MAX);
    let (done, flushed) = sync_channel(1);
    if queue_by(queue, Item::Flush(done), deadline) {
        let _ = flushed.recv_timeout(deadline.saturating_duration_since(Instant::now()));
    }
}

/// Queues `item`, waiting while the queue is full but not past
/// `deadline`; whether it was queued.
fn queue_by(queue: &SyncSender<Item>, mut item: Item, deadline: Instant) -> bool {
    loop {
        match queue.try_send(item) {
            Ok(()) => return true,
            Err(TrySendError::Disconnected(_)) => return false,
            Err(TrySendError::Full(back)) => {
                if Instant::now() >= deadline {
                    return false;
                }
                item = back;
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

impl LogWriter {
    /// A writer to `out`, the guard that drains its queue, and the writer
    /// thread's work, for `crate::threads::start_log_writer` to run.
    pub fn new<W: Write + Send + 'static>(out: W) -> (LogWriter, FlushGuard, LogLines<W>) {
        let (queue, lines) = sync_channel(LINES_QUEUED_MAX);
        let dropped = Arc::new(AtomicU64::new(0));
        let _ = PROCESS_QUEUE.set(queue.clone());
        (
            LogWriter {
                queue: queue.clone(),
                dropped: Arc::clone(&dropped),
            },
            FlushGuard { queue },
            LogLines {
                out,
                lines,
                dropped,
            },
        )
    }
}

/// The writer thread's work: every queued line, in order, to the output.
pub struct LogLines<W> {
    out: W,
    lines: Receiver<Item>,
    dropped: Arc<AtomicU64>,
}

impl<W: Write> LogLines<W> {
    /// Writes lines until [`FlushGuard::close`] or until every
    /// [`LogWriter`] and [`FlushGuard`] is gone.
    pub fn run(self) {
        write_lines(self.out, self.lines, &self.dropped);
    }
}

/// The writer thread: every line in order; before each line or flush, the
/// count of lines dropped since the last one, if any. Write errors are
/// ignored (there is nowhere left to report them).
fn write_lines<W: Write>(mut out: W, lines: Receiver<Item>, dropped: &AtomicU64) {
    for item in lines {
        let lost = dropped.swap(0, Ordering::Relaxed);
        if lost > 0 {
            let _ = writeln!(
                out,
                "rill-broker: {lost} log lines dropped (log output too slow)"
            );
        }
        match item {
            Item::Line(line) => {
                let _ = out.write_all(&line);
                let _ = out.flush();
            }
            Item::Flush(done) => {
                let _ = out.flush();
                let _ = done.send(());
            }
            Item::Close => {
                let _ = out.flush();
                return;
            }
        }
    }
}

impl FlushGuard {
    /// Waits (at most [`FLUSH_WAIT_MS_MAX`]) until every line queued so far
    /// is written.
    pub fn flush(&self) {
        flush_queue(&self.queue);
    }

    /// Has the writer thread end once every line queued so far is written
    /// (waiting at most [`FLUSH_WAIT_MS_MAX`] for room in the queue):
    /// lines logged after this are dropped. Whether the end was queued.
    pub fn close(&self) -> bool {
        let deadline = Instant::now() + Duration::from_millis(FLUSH_WAIT_MS_MAX);
        queue_by(&self.queue, Item::Close, deadline)
    }
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        self.flush();
    }
}

/// One event's output: gathered here, queued whole when dropped.
pub struct Line<'a> {
    buf: Vec<u8>,
    writer: &'a LogWriter,
}

impl Write for Line<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line<'_> {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let line = std::mem::take(&mut self.buf);
        if self.writer.queue.try_send(Item::Line(line)).is_err() {
            self.writer.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Line<'a> {
        Line {
            buf: Vec::new(),
            writer: self,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// An output that collects what is written, and can be held shut.
    #[derive(Clone, Default)]
    struct Output {
        written: Arc<Mutex<Vec<u8>>>,
        gate: Arc<Mutex<()>>,
    }

    impl Write for Output {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            let _open = self.gate.lock().expect("the gate is never poisoned");
            self.written
                .lock()
                .expect("the output is never poisoned")
                .extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Output {
        fn text(&self) -> String {
            String::from_utf8(self.written.lock().expect("not poisoned").clone())
                .expect("lines are UTF-8")
        }
    }

    /// A writer to `out` with its thread running (left to end with the
    /// test's process).
    fn start(out: Output) -> (LogWriter, FlushGuard) {
        let (writer, guard, lines) = LogWriter::new(out);
        crate::threads::spawn(crate::threads::LOG_WRITER, move || lines.run()).expect("a thread");
        (writer, guard)
    }

    fn log(writer: &LogWriter, text: &str) {
        let mut line = writer.make_writer();
        // Written in pieces, as a formatter does: it must arrive whole.
        for piece in text.as_bytes().chunks(3) {
            line.write_all(piece).expect("a line takes any bytes");
        }
    }

    #[test]
    fn lines_are_written_whole_and_in_order() {
        let out = Output::default();
        let (writer, guard) = start(out.clone());
        for i in 0..100 {
            log(&writer, &format!("line {i}\n"));
        }
        drop(guard);
        let expected: String = (0..100).map(|i| format!("line {i}\n")).collect();
        assert_eq!(out.text(), expected);
    }

    #[test]
    fn a_stuck_output_never_blocks_the_logging_thread_and_drops_are_reported() {
        let out = Output::default();
        let (writer, guard) = start(out.clone());
        let extra = 10;
        {
            let _shut = out.gate.lock().expect("not poisoned");
            // The writer thread takes one line and blocks on it; the queue
            // fills behind it; the rest are dropped, without waiting.
            for i in 0..LINES_QUEUED_MAX + 1 + extra {
                log(&writer, &format!("line {i}\n"));
            }
        }
        guard.flush();
        log(&writer, "after\n");
        drop(guard);
        let text = out.text();
        let dropped_line = text
            .lines()
            .find(|l| l.contains("log lines dropped"))
            .expect("the drops are reported");
        let count: usize = dropped_line
            .trim_start_matches("rill-broker: ")
            .split(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .expect("the report starts with the count");
        assert!(
            count >= extra,
            "at least the lines beyond the queue: {count}"
        );
        assert!(
            text.ends_with("after\n"),
            "lines after the drops still arrive"
        );
        assert!(
            text.starts_with("line 0\n"),
            "the first lines arrive, in order"
        );
    }

    #[test]
    fn close_ends_the_writer_thread_after_the_lines_queued_before_it() {
        let out = Output::default();
        let (writer, guard, lines) = LogWriter::new(out.clone());
        let thread = crate::threads::spawn(crate::threads::LOG_WRITER, move || lines.run())
            .expect("a thread");
        log(&writer, "last\n");
        assert!(guard.close());
        let deadline = Instant::now() + Duration::from_secs(10);
        assert!(
            thread.join_by(deadline),
            "the thread ends while writers are still held"
        );
        log(&writer, "after\n");
        assert_eq!(out.text(), "last\n");
    }

    #[test]
    fn an_empty_event_queues_nothing() {
        let out = Output::default();
        let (writer, guard) = start(out.clone());
        drop(writer.make_writer());
        drop(guard);
        assert_eq!(out.text(), "");
    }
}
