//! Where every OS thread and long-lived tokio task of the broker starts,
//! and how the broker stops them: the one home of the broker's threads.
//!
//! [`spawn`] is the only way the broker starts an OS thread; each thread's
//! work stays in its own module (the Raft loop in `raft`, the janitor's
//! jobs in `janitor`, ...) and is started here. [`Threads`] holds every
//! thread started at start-up, [`Tasks`] every long-lived tokio task, and
//! shutdown stops both in the order below.
//!
//! | name | started by | owns | stops |
//! | --- | --- | --- | --- |
//! | `rill-log` | [`Threads::start_log_writer`], first of all | writing log lines to stderr, so a slow terminal or disk never blocks a round (`logwriter`) | joined last, by [`Threads::stop_log_writer`]: the lines queued before it are written, then it ends |
//! | `rill-janitor` | [`Threads::start_janitor`], before the Raft thread | unlinking deleted replicas and expired segments off the Raft thread (`janitor`) | when the Raft thread's loop drops the [`Janitor`]: it runs every job queued before that, then ends; joined after the Raft thread |
//! | `rill-raft` | [`Threads::start_raft`], once `raft::open` has recovered the replicas | every `Node` group and log write; the controller image; applies metadata (`raft`) | [`RaftHandle::stop`] (leaderships handed over, every log synced); joined first |
//! | `rill-sync` (deferred syncs) and `rill-retention-sync` | [`Threads::start_raft`] | one sync round at a time, its jobs spread over the thread's own `SyncPool` (`raft::Syncer`) | when the Raft thread's loop drops its sender; joined after the Raft thread |
//! | `rill-sync-<n>`, `rill-retention-sync-<n>`, `rill-round-sync-<n>` | the owning thread's `SyncPool`, through [`spawn`], when a round first needs them | one bucket of a sync round's jobs at a time (`raft/sync_pool.rs`); `rill-round-sync` serves the Raft thread (one-voter groups) | joined as their pool drops, when the thread that owns it ends |
//! | `rill-compactor` | [`Threads::start_compactor`], after the Raft thread | compaction passes over compacted topics' replicas, one at a time (`compactor`); installs them through the Raft thread | its stop channel dropped, first thing in [`Threads::join`]: it ends within one batch's work and is joined first |
//! | tokio: HTTP listener (`http::serve`) | [`Tasks::start_http`], before recovery | `/metrics`, `/health/live`, `/health/ready`; each connection's task | aborted last of the tasks, after the Raft thread stopped |
//! | tokio: ticker, inbound forwarder | [`Tasks::start_raft_feeders`] | `raft::tick` (one tick per `TICK_MS`), `raft::forward_inbound` (peer messages to the Raft thread) | aborted once the Raft thread has stopped: its handover needs them |
//! | tokio: peer accept loop, one dial loop and one write loop per peer, one read loop per connection | [`Tasks::start_peer_transport`] (`replication/src/transport.rs`) | the peer port and links | with the runtime, after every thread is joined |
//! | tokio: client listener (`server::serve`) | [`Tasks::start_serving`] | the client port; its connections, each with a reader, a writer and one task per request (spawned in `server.rs`) | shutdown raised: stops accepting, connections answer what they routed and close, within `server::DRAIN_MS_MAX` |
//! | tokio: registration, retention timer, group coordinator sweep, group lag | [`Tasks::start_serving`] | this broker's address registered with the controller (checked every `REGISTER_CHECK_MS`); `Command::Retention` every `retention_check_ms`; the coordinator's sweep (`coordinator::Coordinator::run`, every `coordinator::SWEEP_MS`); the lag of the groups coordinated here (`coordinator::lag::refresh`, every `--group-lag-refresh-ms`) | aborted once the connections have drained |
//! | tokio: one log tailer per `__consumer_offsets` replica here | the coordinator's sweep or a group request (`coordinator/shard.rs`) | that replica's committed offsets in memory | ends once its shard and replica are dropped (it holds neither across a wait) |
//!
//! Shutdown order ([`Tasks::stop`], then [`Threads::join`], then the runtime,
//! then [`Threads::stop_log_writer`]): the client port closes and the
//! connections drain while the Raft thread still commits what they wait
//! for; the registration and retention timers stop; the Raft thread hands
//! its leaderships over and syncs every log (`RaftHandle::stop`), with the
//! ticker and the peer links still running for the handover; then the
//! ticker and the forwarder stop, and the threads are joined: the Raft
//! thread (its loop dropped, its pool joined), the two sync threads (their
//! senders went with the loop), the janitor (its queue emptied); then the
//! runtime stops (the peer transport's tasks with it); and last the log
//! writer, after the line that says how the stop went
//! ([`ALL_JOINED`] when every thread ended in time).
//!
//! Invariants: every wait of the shutdown has a deadline, and a deadline
//! passed is logged, never waited out; nothing else in the broker calls
//! `std::thread::Builder::spawn`, and every thread has a name.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rill_client::protocol::messages::BrokerMetadata;
use rill_replication::BrokerId;
use rill_replication::ReplicationError;
use rill_replication::handshake::PeerIdentity;
use rill_replication::transport::{Inbound, Transport};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::janitor::Janitor;
use crate::logwriter::{FlushGuard, LogWriter};
use crate::raft::{self, Opened, Published, RaftHandle};
use crate::server::{self, DRAIN_MS_MAX, LINGER_MS_MAX};
use crate::state::Broker;

/// The log writer thread's name.
pub const LOG_WRITER: &str = "rill-log";
/// The janitor thread's name.
pub const JANITOR: &str = "rill-janitor";
/// Name of the compactor thread.
pub const COMPACTOR: &str = "rill-compactor";
/// The Raft thread's name.
pub const RAFT: &str = "rill-raft";
/// The deferred syncs' thread's name (its pool's threads: `rill-sync-<n>`).
pub const SYNC: &str = "rill-sync";
/// Retention's state syncs' thread's name.
pub const RETENTION_SYNC: &str = "rill-retention-sync";
/// The Raft thread's sync pool's name: its threads are
/// `rill-round-sync-<n>`.
pub const ROUND_SYNC: &str = "rill-round-sync";

/// Logged at info when every thread was joined in time at shutdown.
pub const ALL_JOINED: &str = "stopped: all threads joined";

/// Longest the Raft thread's stop may take, ms: its handover is bounded by
/// `raft::HANDOVER_MS_MAX`, then it syncs every log.
pub const RAFT_STOP_MS_MAX: u64 = 30_000;
/// Longest a tokio task takes to end once aborted, ms.
pub const TASK_STOP_MS_MAX: u64 = 1_000;
/// Longest the joins of every thread take together, ms: the janitor may
/// still be unlinking what the Raft thread deleted last.
pub const JOIN_MS_MAX: u64 = 30_000;
/// Longest the tokio runtime takes to stop, ms.
pub const RUNTIME_STOP_MS_MAX: u64 = 1_000;
/// How often a broker checks that the metadata has its address, ms.
pub const REGISTER_CHECK_MS: u64 = 500;

/// An OS thread started by [`spawn`].
#[derive(Debug)]
pub struct Thread {
    name: String,
    handle: JoinHandle<()>,
    /// Disconnected when the thread's work returns or unwinds: a join
    /// waits on it, which a plain `JoinHandle::join` cannot do with a
    /// deadline.
    ended: Receiver<()>,
}

/// Starts an OS thread named `name` running `work`.
pub fn spawn<F>(name: impl Into<String>, work: F) -> std::io::Result<Thread>
where
    F: FnOnce() + Send + 'static,
{
    let name = name.into();
    let (ended_tx, ended) = sync_channel::<()>(1);
    let handle = std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
            let _ended = ended_tx;
            work();
        })?;
    Ok(Thread {
        name,
        handle,
        ended,
    })
}

impl Thread {
    /// The thread's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Waits until `deadline` for the thread to end, and joins it. Whether
    /// it was joined; a thread still running at the deadline is left to
    /// the process's exit, and is logged, as is one that panicked.
    pub fn join_by(self, deadline: Instant) -> bool {
        let wait = deadline.saturating_duration_since(Instant::now());
        if let Err(RecvTimeoutError::Timeout) = self.ended.recv_timeout(wait) {
            tracing::warn!(thread = %self.name, "a thread had not ended by its deadline; left running");
            return false;
        }
        if self.handle.join().is_err() {
            tracing::warn!(thread = %self.name, "a thread panicked");
            return false;
        }
        true
    }
}

/// The broker's OS threads, each joined at shutdown in the order that lets
/// it end (see the module documentation).
#[derive(Default)]
pub struct Threads {
    log: Option<(Thread, FlushGuard)>,
    janitor: Option<Thread>,
    raft: Option<Thread>,
    sync: Option<Thread>,
    retention_sync: Option<Thread>,
    /// The compactor and the sender whose drop stops it.
    compactor: Option<(Thread, std::sync::mpsc::Sender<()>)>,
}

impl Threads {
    /// Starts the log writer thread, writing to `out`; returns the writer
    /// to give `tracing`. Until [`Threads::stop_log_writer`], dropping
    /// these threads flushes what is queued (an exit on an error).
    pub fn start_log_writer<W: Write + Send + 'static>(
        &mut self,
        out: W,
    ) -> std::io::Result<LogWriter> {
        let (writer, guard, lines) = LogWriter::new(out);
        let thread = spawn(LOG_WRITER, move || lines.run())?;
        self.log = Some((thread, guard));
        Ok(writer)
    }

    /// Starts the janitor thread for `data_dir`; returns the janitor to
    /// hand the Raft thread (`raft::open`).
    pub fn start_janitor(&mut self, data_dir: &Path) -> Result<Janitor, ReplicationError> {
        let (janitor, work) = Janitor::new(data_dir);
        let thread = spawn(JANITOR, move || work.run())
            .map_err(ReplicationError::io("start the janitor thread", JANITOR))?;
        self.janitor = Some(thread);
        Ok(janitor)
    }

    /// Starts the Raft thread and its two sync threads, as `raft::open`
    /// made them; returns the handle to the Raft thread and what it
    /// publishes.
    pub fn start_raft(
        &mut self,
        opened: Opened,
    ) -> Result<(RaftHandle, Arc<Published>), ReplicationError> {
        let Opened {
            handle,
            published,
            raft,
            sync,
            retention_sync,
        } = opened;
        // The sync threads first: the Raft thread hands them sync rounds
        // from its first round on. Should a start fail, what was started
        // ends as the rest is dropped here (the senders go with the loop).
        let started = |name, work: raft::Syncer| {
            spawn(name, move || work.run())
                .map_err(ReplicationError::io("start a sync thread", name))
        };
        self.sync = Some(started(SYNC, sync)?);
        self.retention_sync = Some(started(RETENTION_SYNC, retention_sync)?);
        let thread = spawn(RAFT, move || raft.run())
            .map_err(ReplicationError::io("start the replication thread", RAFT))?;
        self.raft = Some(thread);
        Ok((handle, published))
    }

    /// Starts the compactor thread over `published`'s replicas, installing
    /// its passes through `raft`.
    pub fn start_compactor(
        &mut self,
        raft: RaftHandle,
        published: Arc<Published>,
        settings: crate::config::CompactorSettings,
    ) -> Result<(), ReplicationError> {
        let (stop, stopped) = std::sync::mpsc::channel();
        let compactor = crate::compactor::Compactor::new(raft, published, settings, stopped);
        let thread = spawn(COMPACTOR, move || compactor.run()).map_err(ReplicationError::io(
            "start the compactor thread",
            COMPACTOR,
        ))?;
        self.compactor = Some((thread, stop));
        Ok(())
    }

    /// Joins every thread but the log writer, within [`JOIN_MS_MAX`] in
    /// all: the Raft thread (stopped by `RaftHandle::stop`, or ending as
    /// every handle is gone), then the sync threads and the janitor, which
    /// end as its loop drops. Returns the names of the threads not joined.
    pub fn join(&mut self) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_millis(JOIN_MS_MAX);
        let mut not_joined = Vec::new();
        // Stopped first: a pass in flight ends at its next batch.
        let compactor = self.compactor.take().map(|(thread, stop)| {
            drop(stop);
            thread
        });
        for thread in [
            compactor,
            self.raft.take(),
            self.sync.take(),
            self.retention_sync.take(),
            self.janitor.take(),
        ]
        .into_iter()
        .flatten()
        {
            let name = thread.name().to_string();
            if !thread.join_by(deadline) {
                not_joined.push(name);
            }
        }
        not_joined
    }

    /// Ends the log writer once every line queued so far is written, and
    /// joins it (within `logwriter::FLUSH_WAIT_MS_MAX` for the queue and
    /// [`JOIN_MS_MAX`] for the thread). Lines logged after this are lost:
    /// this is the last step of a stop. Whether it was joined.
    pub fn stop_log_writer(&mut self) -> bool {
        let Some((thread, guard)) = self.log.take() else {
            return true;
        };
        if !guard.close() {
            return false;
        }
        thread.join_by(Instant::now() + Duration::from_millis(JOIN_MS_MAX))
    }
}

/// A long-lived tokio task, named for the shutdown's log lines.
#[derive(Debug)]
struct Task {
    name: &'static str,
    handle: tokio::task::JoinHandle<()>,
}

impl Task {
    fn spawn<F>(name: &'static str, work: F) -> Task
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        Task {
            name,
            handle: tokio::spawn(work),
        }
    }

    /// Aborts the task and waits (at most [`TASK_STOP_MS_MAX`]) for it to
    /// end; whether it did.
    async fn abort(self) -> bool {
        self.handle.abort();
        self.end_within(Duration::from_millis(TASK_STOP_MS_MAX))
            .await
    }

    /// Waits at most `wait` for the task to end; whether it did.
    async fn end_within(self, wait: Duration) -> bool {
        if tokio::time::timeout(wait, self.handle).await.is_err() {
            tracing::warn!(task = self.name, "a task had not ended by its deadline");
            return false;
        }
        true
    }
}

/// The broker's long-lived tokio tasks, stopped in order by
/// [`Tasks::stop`] (see the module documentation).
#[derive(Debug)]
pub struct Tasks {
    /// Raised to stop the client listener and drain its connections.
    shutdown: watch::Sender<bool>,
    /// The client listener, which drains its connections before it ends.
    server: Option<Task>,
    /// Registration and the retention timer: stopped once the connections
    /// have drained.
    timers: Vec<Task>,
    /// The ticker and the inbound forwarder: stopped once the Raft thread
    /// has.
    raft_feeders: Vec<Task>,
    /// The metrics and health listener: stopped last, so liveness answers
    /// through the whole stop.
    http: Option<Task>,
}

impl Default for Tasks {
    fn default() -> Tasks {
        Tasks {
            shutdown: watch::Sender::new(false),
            server: None,
            timers: Vec::new(),
            raft_feeders: Vec::new(),
            http: None,
        }
    }
}

impl Tasks {
    /// Starts the peer transport of broker `id` on `listener` (its tasks
    /// are the transport's, and stop with the runtime); see
    /// [`Transport::start`].
    pub fn start_peer_transport(
        &mut self,
        id: BrokerId,
        listener: TcpListener,
        peers: std::collections::BTreeMap<BrokerId, String>,
        dialling: rill_replication::transport::Dialling,
        inbound: mpsc::Sender<Inbound>,
        identity: PeerIdentity,
    ) -> Transport {
        Transport::start(id, listener, peers, dialling, inbound, identity)
    }

    /// Starts the metrics and health listener (`http::serve`) on
    /// `listener`.
    pub fn start_http(&mut self, listener: TcpListener, state: Arc<crate::http::HttpState>) {
        self.raft_feeders.push(Task::spawn(
            "metrics upkeep",
            crate::metrics::upkeep(state.metrics_handle()),
        ));
        self.http = Some(Task::spawn(
            "http listener",
            crate::http::serve(listener, state),
        ));
    }

    /// Starts the ticker and the forwarder of peers' messages to the Raft
    /// thread.
    pub fn start_raft_feeders(&mut self, raft: &RaftHandle, inbound: mpsc::Receiver<Inbound>) {
        self.raft_feeders
            .push(Task::spawn("ticker", raft::tick(raft.clone())));
        self.raft_feeders.push(Task::spawn(
            "inbound forwarder",
            raft::forward_inbound(inbound, raft.clone()),
        ));
    }

    /// Starts serving clients on `listener`, registering this broker with
    /// the controller, and the retention timer (a
    /// `raft::Command::Retention` every `retention_check_ms`).
    pub fn start_serving(
        &mut self,
        listener: TcpListener,
        broker: &Arc<Broker>,
        retention_check_ms: u64,
    ) {
        self.timers.push(Task::spawn(
            "registration",
            keep_registered(Arc::clone(broker)),
        ));
        self.timers.push(Task::spawn(
            "retention timer",
            retention_timer(broker.raft.clone(), retention_check_ms),
        ));
        self.timers.push(Task::spawn(
            "group coordinator sweep",
            crate::coordinator::Coordinator::run(Arc::clone(broker)),
        ));
        self.timers.push(Task::spawn(
            "group lag",
            crate::coordinator::lag::refresh(
                Arc::clone(broker),
                Arc::clone(&broker.groups.lag),
                broker.groups.settings.lag_refresh_ms,
            ),
        ));
        self.server = Some(Task::spawn(
            "client listener",
            server::serve(listener, Arc::clone(broker), self.shutdown.subscribe()),
        ));
    }

    /// Stops the broker's tasks and the Raft thread, in the module
    /// documentation's order, each within its deadline. Returns the names
    /// of what did not stop in time.
    pub async fn stop(self, raft: &RaftHandle) -> Vec<String> {
        let mut late = Vec::new();
        self.shutdown.send_replace(true);
        if let Some(server) = self.server {
            // The listener bounds its drain itself; this is a guard.
            let wait = Duration::from_millis(DRAIN_MS_MAX + LINGER_MS_MAX + TASK_STOP_MS_MAX);
            if !server.end_within(wait).await {
                late.push("client listener".to_string());
            }
        }
        for task in self.timers {
            let name = task.name;
            if !task.abort().await {
                late.push(name.to_string());
            }
        }
        tracing::info!("stopping the replication thread");
        let stop = tokio::time::timeout(Duration::from_millis(RAFT_STOP_MS_MAX), raft.stop());
        if stop.await.is_err() {
            tracing::warn!(
                raft_stop_ms_max = RAFT_STOP_MS_MAX,
                "the replication thread had not stopped by its deadline"
            );
            late.push(RAFT.to_string());
        }
        for task in self.raft_feeders.into_iter().chain(self.http) {
            let name = task.name;
            if !task.abort().await {
                late.push(name.to_string());
            }
        }
        late
    }
}

/// Tells the controller where clients reach this broker, and again
/// whenever the metadata stops saying so.
async fn keep_registered(broker: Arc<Broker>) {
    let me = BrokerMetadata {
        broker_id: broker.node_id.get() as u32,
        host: broker.advertised_host.clone(),
        port: broker.advertised_port,
    };
    loop {
        if !broker.registered()
            && let Err(e) = broker.register(&me).await
        {
            tracing::debug!(code = %e.code(), message = %e, "registration not done yet");
        }
        tokio::time::sleep(Duration::from_millis(REGISTER_CHECK_MS)).await;
    }
}

/// Asks the Raft thread to apply retention every `every_ms`, until it
/// stops.
async fn retention_timer(raft: RaftHandle, every_ms: u64) {
    let mut tick = tokio::time::interval(Duration::from_millis(every_ms.max(1)));
    loop {
        tick.tick().await;
        if raft.send(raft::Command::Retention).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_is_joined_once_its_work_returns() {
        let (go, wait) = std::sync::mpsc::channel::<()>();
        let thread = spawn("test-joined", move || {
            let _ = wait.recv();
        })
        .expect("a thread");
        assert_eq!(thread.name(), "test-joined");
        drop(go);
        assert!(thread.join_by(Instant::now() + Duration::from_secs(30)));
    }

    #[test]
    fn a_thread_still_running_at_its_deadline_is_left_not_waited_for() {
        let (go, wait) = std::sync::mpsc::channel::<()>();
        let thread = spawn("test-stuck", move || {
            let _ = wait.recv();
        })
        .expect("a thread");
        assert!(!thread.join_by(Instant::now()));
        drop(go);
    }

    #[test]
    fn a_thread_that_panicked_is_not_counted_joined() {
        let thread = spawn("test-panics", || panic!("on purpose")).expect("a thread");
        assert!(!thread.join_by(Instant::now() + Duration::from_secs(30)));
    }
}
