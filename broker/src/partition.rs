//! One partition replica served by this broker, as the request handlers
//! see it: its log (read here, written only by the Raft thread), its high
//! watermark, and its leadership.
//!
//! The Raft thread ([`crate::raft`]) publishes what each round did on
//! the watch channels here; produce handlers wait on them for their `acks`
//! level, fetches read below the high watermark, and a parked fetch waits
//! on the high watermarks and leadership of its own partitions
//! ([`PartitionWatch`]). Reads never take the lock the Raft thread holds
//! while it writes the log. Invariants: the high watermark and the applied
//! index only grow; a record below the high watermark is committed (a
//! majority of replicas has it, persisted in the topic's durability mode)
//! and never changes.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU16, AtomicU64, Ordering};
use std::task::Poll;

use bytes::Bytes;
use rill_client::protocol::ErrorCode;
use rill_replication::{BrokerId, CheckedBatch, GroupId, ReplicaLogReader};
use rill_storage::batch::{self, Compression, compression};
use rill_storage::{BatchError, LogError, Offset, RaftIndex, RecordBatch, Term};
use tokio::sync::watch;

use crate::topics::CompactionPolicy;

/// Who leads the partition, as this replica knows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Leadership {
    /// The leader, if one is known.
    pub leader: Option<BrokerId>,
    /// Whether it is this broker.
    pub is_leader: bool,
    /// The term it leads in.
    pub term: Term,
}

impl Leadership {
    /// Who to ask instead of this replica, for a `NotLeader` answer.
    pub fn hint(&self) -> LeaderHint {
        match self.leader {
            Some(_) => LeaderHint {
                leader: self.leader,
                epoch: self.term,
            },
            None => LeaderHint::default(),
        }
    }
}

/// Who leads a partition, as told to a client that asked the wrong
/// replica: the leader and the Raft term it leads in. A client trusts a
/// hint only over one of a lower epoch, so a replica that has not yet heard
/// of an election cannot send it back to the old leader.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LeaderHint {
    /// The leader, if one is known.
    pub leader: Option<BrokerId>,
    /// The term it leads in; `Term(0)` when `leader` is only a guess.
    pub epoch: Term,
}

impl LeaderHint {
    /// A leader guessed without knowing its term (the preferred leader).
    pub fn guess(leader: Option<BrokerId>) -> LeaderHint {
        LeaderHint {
            leader,
            epoch: Term(0),
        }
    }
}

/// How far a produced batch's timestamps may be from the leader's clock,
/// ms; `None` for no bound. Only the header's timestamps are compared:
/// retention and the time index read those.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimestampBounds {
    /// The largest timestamp may be at most this far ahead.
    pub after_max_ms: Option<u64>,
    /// The first timestamp may be at most this far behind.
    pub before_max_ms: Option<u64>,
}

impl TimestampBounds {
    /// Whether a batch with `header` may be appended when the clock reads
    /// `now_ms`.
    pub fn admit(&self, header: &rill_storage::batch::BatchHeader, now_ms: i64) -> bool {
        // i128: the stamps are any i64, so their difference may not fit.
        let ahead = i128::from(header.max_timestamp_ms) - i128::from(now_ms);
        let behind = i128::from(now_ms) - i128::from(header.first_timestamp_ms);
        self.after_max_ms.is_none_or(|max| ahead <= i128::from(max))
            && self
                .before_max_ms
                .is_none_or(|max| behind <= i128::from(max))
    }
}

/// What a parked fetch waits on for one partition: its high watermark and
/// its leadership (a leader that stepped down or a replica that failed
/// answers at once), as they were when the watch was taken. Holds no
/// reference to the partition: a partition dropped meanwhile counts as a
/// change.
#[derive(Debug)]
pub struct PartitionWatch {
    high_watermark: watch::Receiver<u64>,
    leadership: watch::Receiver<Leadership>,
}

impl PartitionWatch {
    /// Resolves once the high watermark or the leadership changed since the
    /// watch was taken, or the partition is gone.
    pub async fn changed(&mut self) {
        tokio::select! {
            _ = self.high_watermark.changed() => {}
            _ = self.leadership.changed() => {}
        }
    }
}

/// Resolves once any of `watches` changed (see
/// [`PartitionWatch::changed`]); never, for none. The task is woken only by
/// these partitions; each wake polls them all (as many as the fetch's
/// partitions, which [`crate::limits::ClientLimits`] bounds).
pub async fn any_changed(watches: &mut [PartitionWatch]) {
    let mut waits: Vec<Pin<Box<dyn Future<Output = ()> + Send + '_>>> = watches
        .iter_mut()
        .map(|w| Box::pin(w.changed()) as Pin<Box<dyn Future<Output = ()> + Send + '_>>)
        .collect();
    std::future::poll_fn(|cx| {
        for wait in &mut waits {
            if wait.as_mut().poll(cx).is_ready() {
                return Poll::Ready(());
            }
        }
        Poll::Pending
    })
    .await
}

/// A request to the Raft thread to stop a replica whose reads failed.
#[derive(Debug, Clone)]
pub struct StopRequest {
    /// The replica's group.
    pub group: GroupId,
    /// Why, for the log.
    pub reason: String,
    /// Whether reopening it later may help (an I/O error), or its files are
    /// damaged and it waits for an operator.
    pub retry: bool,
}

/// One partition replica.
#[derive(Debug)]
pub struct Partition {
    /// The topic's name.
    pub topic: String,
    /// The partition number.
    pub index: u32,
    /// Its Raft group.
    pub group: GroupId,
    dir: std::path::PathBuf,
    log: ReplicaLogReader,
    fsync: bool,
    max_batch_bytes: usize,
    /// The bounds of [`TimestampBounds`], `u64::MAX` for none: atomics, so
    /// a topic's settings change while produces check against them.
    timestamp_after_max_ms: AtomicU64,
    timestamp_before_max_ms: AtomicU64,
    /// The topic's `compression.type`, [`COMPRESSION_PRODUCER`] for
    /// `producer` (batches stored as they came), else the codec batches
    /// compressed otherwise are recompressed to; atomic, as it changes live.
    compression: AtomicU8,
    /// The topic's `delete.retention.ms` when its `cleanup.policy` holds
    /// `compact`, [`NOT_COMPACTED`] otherwise; atomic, as it changes live.
    compaction: AtomicU64,
    /// The topic's `min.cleanable.dirty.ratio`, in thousandths.
    min_cleanable_dirty_permille: AtomicU16,
    /// Bytes and records in and out, registered once here.
    metrics: crate::metrics::PartitionMetrics,
    /// The last leader known here (0 before any): a leader change counts
    /// only from one leader to another, not through "none" or at open.
    last_leader: AtomicU64,
    /// Offsets below this are committed and visible to consumers.
    high_watermark: watch::Sender<u64>,
    /// The last Raft index applied here (committed and persisted).
    applied: watch::Sender<RaftIndex>,
    /// The last entry the leader wrote to its log, with its term (for
    /// `acks=1`): a term tells one leadership's appends from another's.
    appended: watch::Sender<(Term, RaftIndex)>,
    leadership: watch::Sender<Leadership>,
    /// Whether the high watermark reflects this leader's own term: a new
    /// leader's may lag until an entry of its term commits.
    high_watermark_current: AtomicBool,
    log_start_offset: AtomicU64,
    /// Set when the replica stopped after a storage failure.
    failed: AtomicBool,
    /// Where a read that found the replica's files damaged asks the Raft
    /// thread to stop it (none in unit tests).
    stop_requests: Option<std::sync::mpsc::Sender<StopRequest>>,
}

/// [`Partition::compression`]'s stored value for `producer`: no codec's.
const COMPRESSION_PRODUCER: u8 = u8::MAX;
/// [`Partition::compaction`]'s stored value for a topic not compacted.
const NOT_COMPACTED: u64 = u64::MAX;

/// Refuses a batch holding a record without a key, for a compacted topic
/// (as Kafka does): compaction keeps the newest record of each key, and
/// such a record has none.
fn refuse_keyless(b: &CheckedBatch) -> Result<(), ErrorCode> {
    let batch = RecordBatch::from_parts(*b.header(), b.bytes().clone())
        .map_err(|e| storage_error(&e.into()))?;
    for r in batch.records() {
        match r {
            Ok(r) if r.key.is_none() => return Err(ErrorCode::InvalidRecord),
            Ok(_) => {}
            Err(e) => return Err(storage_error(&e.into())),
        }
    }
    Ok(())
}

fn storage_error(e: &LogError) -> ErrorCode {
    match e {
        // A batch that would decompress past the limit is too large as its
        // consumers would hold it, however small it arrived.
        LogError::Batch(
            BatchError::TooLarge { .. } | BatchError::DecompressedTooLarge { .. },
        ) => ErrorCode::RecordTooLarge,
        // Not `CorruptMessage`, which is retriable: these bytes arrived
        // intact and will be refused again.
        LogError::Batch(
            BatchError::SparseOffsets { .. }
            | BatchError::OffsetDeltaOutOfSequence { .. }
            | BatchError::InvalidProducerFields { .. }
            // Its CRC matched: the compressed bytes are as the producer
            // made them.
            | BatchError::CorruptCompressed { .. },
        ) => ErrorCode::InvalidRecord,
        LogError::Batch(BatchError::TimestampPastMax { .. }) => ErrorCode::InvalidTimestamp,
        LogError::Batch(_) => ErrorCode::CorruptMessage,
        LogError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
        _ => ErrorCode::StorageError,
    }
}

impl Partition {
    /// A partition over `log` (in `dir`), whose applied entries end at
    /// `high_watermark`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        topic: &str,
        index: u32,
        group: GroupId,
        dir: std::path::PathBuf,
        log: ReplicaLogReader,
        fsync: bool,
        max_batch_bytes: usize,
        timestamps: TimestampBounds,
        high_watermark: Offset,
    ) -> Partition {
        let start = log.log_start_offset().get();
        Partition {
            topic: topic.to_string(),
            index,
            group,
            dir,
            log,
            fsync,
            max_batch_bytes,
            timestamp_after_max_ms: AtomicU64::new(timestamps.after_max_ms.unwrap_or(u64::MAX)),
            timestamp_before_max_ms: AtomicU64::new(timestamps.before_max_ms.unwrap_or(u64::MAX)),
            high_watermark: watch::Sender::new(high_watermark.get()),
            applied: watch::Sender::new(RaftIndex(0)),
            appended: watch::Sender::new((Term(0), RaftIndex(0))),
            leadership: watch::Sender::new(Leadership::default()),
            high_watermark_current: AtomicBool::new(false),
            log_start_offset: AtomicU64::new(start),
            failed: AtomicBool::new(false),
            stop_requests: None,
            compression: AtomicU8::new(COMPRESSION_PRODUCER),
            compaction: AtomicU64::new(NOT_COMPACTED),
            min_cleanable_dirty_permille: AtomicU16::new(500),
            metrics: crate::metrics::PartitionMetrics::new(topic, index),
            last_leader: AtomicU64::new(0),
        }
    }

    /// The partition, recompressing produced batches to `compression` when
    /// it is a codec (the topic's `compression.type`).
    pub(crate) fn with_compression(self, compression: Option<Compression>) -> Partition {
        self.set_compression(compression);
        self
    }

    /// The topic's `compression.type`: `None` for `producer`.
    pub fn compression(&self) -> Option<Compression> {
        match self.compression.load(Ordering::Relaxed) {
            COMPRESSION_PRODUCER => None,
            codec => Compression::from_codec(codec).ok(),
        }
    }

    /// Called by the Raft thread when the topic's `compression.type`
    /// changes.
    pub(crate) fn set_compression(&self, compression: Option<Compression>) {
        let codec = compression.map_or(COMPRESSION_PRODUCER, Compression::codec);
        self.compression.store(codec, Ordering::Relaxed);
    }

    /// The partition, compacted under `policy` when one is given (see
    /// [`Partition::set_compaction`]).
    pub(crate) fn with_compaction(self, policy: Option<CompactionPolicy>) -> Partition {
        self.set_compaction(policy);
        self
    }

    /// How the topic is compacted, if it is.
    pub fn compaction(&self) -> Option<CompactionPolicy> {
        match self.compaction.load(Ordering::Relaxed) {
            NOT_COMPACTED => None,
            ms => Some(CompactionPolicy {
                delete_retention_ms: ms,
                min_cleanable_dirty_permille: self
                    .min_cleanable_dirty_permille
                    .load(Ordering::Relaxed),
            }),
        }
    }

    /// Called by the Raft thread when the topic's `cleanup.policy`,
    /// `delete.retention.ms` or `min.cleanable.dirty.ratio` changes:
    /// `None` when it is not compacted.
    pub(crate) fn set_compaction(&self, policy: Option<CompactionPolicy>) {
        if let Some(p) = policy {
            self.min_cleanable_dirty_permille
                .store(p.min_cleanable_dirty_permille, Ordering::Relaxed);
        }
        let v = policy.map_or(NOT_COMPACTED, |p| {
            p.delete_retention_ms.min(NOT_COMPACTED - 1)
        });
        self.compaction.store(v, Ordering::Relaxed);
    }

    /// What a compaction pass started now would cover: the sealed
    /// segments below the high watermark (loaded first) that are durable
    /// here, and how many of their bytes lie in segments from `dirty_from`
    /// on (see [`ReplicaLogReader::cleanable`]).
    pub fn cleanable(&self, dirty_from: Offset) -> rill_storage::Cleanable {
        let committed = Offset(self.high_watermark());
        self.log.cleanable(committed, dirty_from)
    }

    /// Runs a compaction pass over the sealed segments below the high
    /// watermark (see [`ReplicaLogReader::compact`]). Damage it finds in a
    /// segment stops the replica, as a read's does; a failure of its own
    /// new files (a full disk, a read-back that disagrees) fails the pass
    /// alone. `Ok(None)` when `budget` stopped it.
    pub fn compact(
        &self,
        settings: &rill_storage::CompactionSettings,
        now_ms: i64,
        budget: &mut dyn rill_storage::IoBudget,
    ) -> Result<Option<rill_storage::Cleaned>, LogError> {
        let committed = Offset(self.high_watermark());
        self.log
            .compact(committed, settings, now_ms, budget)
            .inspect_err(|e| {
                if let LogError::Damaged { path, .. } = e
                    && !path
                        .to_string_lossy()
                        .ends_with(rill_storage::compaction::CLEANED_SUFFIX)
                {
                    self.read_failed(e);
                }
            })
    }

    /// The partition, asking `requests` to stop it when a read finds its
    /// files damaged.
    pub(crate) fn reporting_stops_to(
        mut self,
        requests: std::sync::mpsc::Sender<StopRequest>,
    ) -> Partition {
        self.stop_requests = Some(requests);
        self
    }

    /// The answer to a read that failed with `e`. A file cut short, a
    /// header that is not the one written, or an I/O error stops the
    /// replica (once: one log line, one request to the Raft thread), so
    /// that nothing reads or appends over what is left; the other replicas
    /// keep serving. Clients get `StorageError`, which is retriable: a
    /// replica stopped by an I/O error is reopened, and other replicas of
    /// the partition take over its leadership.
    fn read_failed(&self, e: &LogError) -> ErrorCode {
        let retry = matches!(e, LogError::Io { .. });
        if !e.is_damage() && !retry {
            return storage_error(e);
        }
        if !self.failed.swap(true, Ordering::AcqRel) {
            tracing::error!("replica {}/{} failed: {e}", self.topic, self.index);
            self.leadership.send_modify(|l| l.is_leader = false);
            if let Some(requests) = &self.stop_requests {
                let _ = requests.send(StopRequest {
                    group: self.group,
                    reason: e.to_string(),
                    retry,
                });
            }
        }
        ErrorCode::StorageError
    }

    /// The committed batches with Raft indexes from `from` on, owned
    /// copies read with `pread` (at most `max_bytes` of them, at least
    /// one), each with its CRC checked: for a reader that looks inside
    /// records (the group coordinator tailing its offsets log). Takes the
    /// log's lock for the read, unlike a fetch: such readers are few and
    /// read little. A damaged batch stops the replica.
    pub fn read_committed_owned(
        &self,
        from: RaftIndex,
        max_bytes: u64,
    ) -> Result<Vec<RecordBatch>, ErrorCode> {
        let to = RaftIndex(self.applied.borrow().get() + 1);
        if from >= to {
            return Ok(Vec::new());
        }
        let batches = self
            .log
            .read_entries_owned(from, to, max_bytes)
            .map_err(|e| match e {
                LogError::RaftIndexOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
                e => self.read_failed(&e),
            })?;
        for b in &batches {
            if let Err(e) = b.verify_crc() {
                return Err(self.read_failed(&LogError::Corrupt {
                    path: self.dir.clone(),
                    reason: format!(
                        "a committed batch at offset {} fails its CRC: {e}",
                        b.header().base_offset
                    ),
                }));
            }
        }
        Ok(batches)
    }

    /// A watch of the last Raft index applied here, for a reader of
    /// committed entries ([`Partition::read_committed_owned`]): it moves
    /// after the high watermark does.
    pub fn watch_applied(&self) -> watch::Receiver<RaftIndex> {
        self.applied.subscribe()
    }

    /// The Raft index of the first entry in the log.
    pub fn first_raft_index(&self) -> RaftIndex {
        self.log.first_raft_index()
    }

    /// Whether the replica's segment files still hold every batch written
    /// to them (see [`rill_storage::Log::verify_files`]).
    pub(crate) fn verify_files(&self) -> Result<(), LogError> {
        self.log.verify_files()
    }

    /// Whether the replica stopped after a storage failure.
    pub fn is_failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// The replica's directory.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Whether writes wait for fdatasync.
    pub fn fsync(&self) -> bool {
        self.fsync
    }

    /// The high watermark.
    pub fn high_watermark(&self) -> u64 {
        *self.high_watermark.borrow()
    }

    /// The log start offset.
    pub fn log_start_offset(&self) -> u64 {
        self.log_start_offset.load(Ordering::Acquire)
    }

    /// The bounds a produced batch's timestamps are checked against.
    pub fn timestamps(&self) -> TimestampBounds {
        let bound = |a: &AtomicU64| Some(a.load(Ordering::Relaxed)).filter(|ms| *ms != u64::MAX);
        TimestampBounds {
            after_max_ms: bound(&self.timestamp_after_max_ms),
            before_max_ms: bound(&self.timestamp_before_max_ms),
        }
    }

    /// Called by the Raft thread when the topic's timestamp settings
    /// change.
    pub(crate) fn set_timestamps(&self, t: TimestampBounds) {
        self.timestamp_after_max_ms
            .store(t.after_max_ms.unwrap_or(u64::MAX), Ordering::Relaxed);
        self.timestamp_before_max_ms
            .store(t.before_max_ms.unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Whether the high watermark reflects this leader's own term (a new
    /// leader's lags until an entry of its term commits).
    pub fn is_high_watermark_current(&self) -> bool {
        self.high_watermark_current.load(Ordering::Acquire)
    }

    /// Who leads.
    pub fn leadership(&self) -> Leadership {
        *self.leadership.borrow()
    }

    /// The error for a request that needs the leader, when this replica is
    /// not it (or has stopped), with the leader to try instead.
    pub fn not_leader(&self) -> Option<(ErrorCode, LeaderHint)> {
        if self.failed.load(Ordering::Acquire) {
            return Some((ErrorCode::StorageError, LeaderHint::default()));
        }
        let l = self.leadership();
        (!l.is_leader).then_some((ErrorCode::NotLeader, l.hint()))
    }

    /// The hint for a proposal this replica dropped or could not queue (a
    /// leadership handover, a broker stopping): the leader it knows when
    /// that is another broker; none when it still sees itself leading, so
    /// the client asks for fresh metadata rather than coming straight back.
    pub fn retry_hint(&self) -> LeaderHint {
        let l = self.leadership();
        if l.is_leader {
            LeaderHint::default()
        } else {
            l.hint()
        }
    }

    /// The hint for a refusal that named `leader`: with its term when the
    /// leadership published here agrees.
    pub fn hint_for(&self, leader: Option<BrokerId>) -> LeaderHint {
        let known = self.leadership().hint();
        if known.leader == leader {
            known
        } else {
            LeaderHint::guess(leader)
        }
    }

    /// Splits `records` (chunks of whole batches) into batches and checks
    /// each in full, and its timestamps against the clock reading `now_ms`:
    /// nothing is proposed unless all of them pass. Timestamps are checked
    /// here, by the leader before proposing, not when entries are applied:
    /// replicas must take whatever the leader proposed, whatever their
    /// clocks say.
    pub fn check(&self, records: &[Bytes], now_ms: i64) -> Result<Vec<CheckedBatch>, ErrorCode> {
        let timestamps = self.timestamps();
        let compression = self.compression();
        let compacted = self.compaction().is_some();
        let mut batches = Vec::new();
        for chunk in records {
            let mut at = 0;
            while at < chunk.len() {
                let rest = &chunk[at..];
                let len = match batch::declared_batch_bytes(rest) {
                    Some(len) if len <= rest.len() as u64 => len as usize,
                    Some(len) if len > self.max_batch_bytes as u64 => {
                        return Err(ErrorCode::RecordTooLarge);
                    }
                    _ => return Err(ErrorCode::CorruptMessage),
                };
                let bytes = chunk.slice(at..at + len);
                let checked = CheckedBatch::new(bytes.clone(), self.max_batch_bytes)
                    .and_then(|b| self.recompressed(b, &bytes, compression));
                if compacted && let Ok(Some(b)) = &checked {
                    refuse_keyless(b)?;
                }
                match checked {
                    Ok(Some(b)) if !timestamps.admit(b.header(), now_ms) => {
                        return Err(ErrorCode::InvalidTimestamp);
                    }
                    Ok(Some(b)) => batches.push(b),
                    Ok(None) => return Err(ErrorCode::InvalidRequest),
                    Err(e) => return Err(storage_error(&e)),
                }
                at += len;
            }
        }
        if batches.is_empty() {
            return Err(ErrorCode::InvalidRequest);
        }
        Ok(batches)
    }

    /// `batch` (checked from `bytes`) as the topic stores it: as it came,
    /// unless the topic forces a codec (`compression`) and the batch has
    /// another, when it is recompressed to that codec (length and CRC
    /// stamped again) and validated again.
    fn recompressed(
        &self,
        batch: Option<CheckedBatch>,
        bytes: &[u8],
        compression: Option<Compression>,
    ) -> Result<Option<CheckedBatch>, LogError> {
        let (Some(b), Some(to)) = (&batch, compression) else {
            return Ok(batch);
        };
        if b.header().compression()? == to {
            return Ok(batch);
        }
        let recompressed = compression::recompress(bytes, to, self.max_batch_bytes)?;
        CheckedBatch::new(Bytes::from(recompressed), self.max_batch_bytes)
    }

    /// Waits until the entry at `index`, proposed in `term`, is applied
    /// (`acks=all`) or appended to the leader's log (`acks=1`), and checks
    /// it is still the entry that was proposed (a leader change may have
    /// replaced it).
    pub async fn wait_for(
        &self,
        index: RaftIndex,
        term: Term,
        committed: bool,
    ) -> Result<(), ErrorCode> {
        let mut applied = self.applied.subscribe();
        let mut appended = self.appended.subscribe();
        let mut leadership = self.leadership.subscribe();
        loop {
            if committed {
                if *applied.borrow_and_update() >= index {
                    break;
                }
            } else {
                let (t, i) = *appended.borrow_and_update();
                if t == term && i >= index {
                    break;
                }
                // A newer term: this leadership ended (the watch may still
                // show an older term than the proposal's, which is fine).
                if t > term || leadership.borrow_and_update().term > term {
                    // Deposed before its own append: the entry may never
                    // land.
                    return Err(ErrorCode::NotLeader);
                }
            }
            if self.failed.load(Ordering::Acquire) {
                return Err(ErrorCode::StorageError);
            }
            let closed = tokio::select! {
                c = applied.changed() => c.is_err(),
                c = appended.changed() => c.is_err(),
                c = leadership.changed() => c.is_err(),
            };
            if closed {
                return Err(ErrorCode::StorageError);
            }
        }
        match self.log.term_of(index) {
            Ok(t) if t == term => Ok(()),
            // Replaced by another leader's entry.
            Ok(_) => Err(ErrorCode::NotLeader),
            Err(e) if e.is_damage() || matches!(e, LogError::Io { .. }) => {
                Err(self.read_failed(&e))
            }
            // Cut by retention before we looked (only applied entries are
            // deleted: it committed, but whose it was is no longer known).
            Err(_) => Err(ErrorCode::RequestTimedOut),
        }
    }

    /// A watch of this partition's high watermark and leadership, for a
    /// fetch about to read it and park.
    pub fn watch(&self) -> PartitionWatch {
        PartitionWatch {
            high_watermark: self.high_watermark.subscribe(),
            leadership: self.leadership.subscribe(),
        }
    }

    /// Whole batches from `offset`, up to `max_bytes` (at least one), below
    /// the high watermark, with the high watermark and log start offset.
    /// Only the leader serves reads. Never waits for the Raft thread: the
    /// log is read through the view it publishes.
    pub fn read(&self, offset: u64, max_bytes: u64) -> Result<(Vec<Bytes>, u64, u64), ErrorCode> {
        // Loaded before the log's view is taken: the entries below it are
        // committed, so the view holds them as they are, whatever a
        // truncation cut or wrote since (see `ReplicaLogReader::fetch`).
        let hw = self.high_watermark();
        // The bounds and the batches are read together: retention may move
        // the log start between two looks.
        let fetched = self
            .log
            .fetch(Offset(offset), max_bytes, Offset(hw))
            .map_err(|e| self.read_failed(&e))?;
        let start = fetched.log_start.get();
        let end = fetched.log_end.get();
        if offset < start || offset > end {
            return Err(ErrorCode::OffsetOutOfRange);
        }
        if offset > hw {
            // Seen committed elsewhere (an earlier leader), not yet known
            // committed here.
            if !self.high_watermark_current.load(Ordering::Acquire) {
                return Err(ErrorCode::OffsetNotAvailable);
            }
            return Ok((Vec::new(), hw, start));
        }
        let bytes: usize = fetched.batches.iter().map(Bytes::len).sum();
        self.metrics.bytes_out.increment(bytes as u64);
        Ok((fetched.batches, hw, start))
    }

    /// Counts `bytes` and `records` of a produce stored here.
    pub fn record_produced(&self, bytes: u64, records: u64) {
        self.metrics.bytes_in.increment(bytes);
        self.metrics.records_in.increment(records);
    }

    /// The offset for a `ListOffsets` timestamp: earliest (-2), latest (-1),
    /// or the first record at or after a time (-1 when none is visible).
    pub fn offset_for(&self, timestamp_ms: i64) -> Result<i64, ErrorCode> {
        let hw = self.high_watermark();
        let log = &self.log;
        match timestamp_ms {
            rill_client::protocol::messages::EARLIEST_TIMESTAMP => {
                Ok(log.log_start_offset().get() as i64)
            }
            rill_client::protocol::messages::LATEST_TIMESTAMP => {
                // A new leader's high watermark may lag what an earlier
                // leader said was committed until an entry of its own term
                // commits.
                if hw < log.next_offset().get()
                    && !self.high_watermark_current.load(Ordering::Acquire)
                {
                    return Err(ErrorCode::OffsetNotAvailable);
                }
                Ok(hw as i64)
            }
            t if t < 0 => Err(ErrorCode::InvalidRequest),
            t => Ok(
                match log
                    .offset_for_timestamp(t)
                    .map_err(|e| self.read_failed(&e))?
                {
                    Some(o) if o.get() < hw => o.get() as i64,
                    _ => -1,
                },
            ),
        }
    }

    /// Syncs everything in the log (shutdown).
    pub fn flush(&self) -> Result<(), LogError> {
        self.log.flush().map(drop)
    }

    /// Called by the Raft thread: as leader in `term`, entries up to
    /// `index` are in the log.
    pub(crate) fn set_appended(&self, term: Term, index: RaftIndex) {
        self.appended.send_replace((term, index));
    }

    /// Called by the Raft thread: entries up to `index` are applied and
    /// the high watermark is `hw`.
    pub(crate) fn set_committed(&self, index: RaftIndex, hw: Offset) {
        // Looked up once per leadership, not on every commit.
        if !self.high_watermark_current.load(Ordering::Acquire) {
            let l = self.leadership();
            if l.is_leader && self.log.term_of(index).ok() == Some(l.term) {
                self.high_watermark_current.store(true, Ordering::Release);
            }
        }
        self.high_watermark.send_if_modified(|h| {
            let moved = hw.get() > *h;
            *h = (*h).max(hw.get());
            moved
        });
        self.applied.send_if_modified(|a| {
            let moved = index > *a;
            *a = (*a).max(index);
            moved
        });
    }

    /// Called by the Raft thread when the leader or this replica's role
    /// changes.
    pub(crate) fn set_leader(&self, leader: Option<BrokerId>, is_leader: bool, term: Term) {
        let new = Leadership {
            leader,
            is_leader,
            term,
        };
        // The same leadership told twice (a one-voter group is told once
        // when it campaigns and again by its round) must not forget that
        // an entry of this term committed in between: on a quiet partition
        // no later commit would say so again.
        if *self.leadership.borrow() == new {
            return;
        }
        if is_leader && !self.leadership.borrow().is_leader {
            crate::metrics::election_won(false);
            // One line per leader change, on the broker that leads now.
            tracing::info!(topic = %self.topic, partition = self.index, %term, "leading the partition");
        }
        if let Some(l) = leader {
            let last = self.last_leader.swap(l.get(), Ordering::Relaxed);
            if last != 0 && last != l.get() {
                crate::metrics::leader_changed(false);
            }
        }
        let applied = *self.applied.borrow();
        let current =
            is_leader && applied > RaftIndex(0) && self.log.term_of(applied).ok() == Some(term);
        self.high_watermark_current
            .store(current, Ordering::Release);
        self.leadership.send_replace(new);
    }

    /// Called by the Raft thread when the replica stopped.
    pub(crate) fn set_failed(&self) {
        self.failed.store(true, Ordering::Release);
        self.leadership.send_modify(|l| l.is_leader = false);
    }

    /// Called by the Raft thread after retention.
    pub(crate) fn refresh_log_start(&self) {
        let start = self.log.log_start_offset().get();
        self.log_start_offset.store(start, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rill_replication::state::{Membership, MemoryStateStore, ReplicaState};
    use rill_replication::storage::ReplicaLog;
    use rill_storage::{LogConfig, SystemClock};

    use super::*;

    fn partition(dir: &std::path::Path) -> Partition {
        let store = MemoryStateStore::default();
        let state = store.load(|| ReplicaState::initial(Membership::voters([BrokerId(1)])));
        let log = ReplicaLog::open(
            dir,
            LogConfig::default(),
            Arc::new(SystemClock),
            Box::new(store),
            state,
        )
        .expect("a new replica in a temp dir opens");
        Partition::new(
            "t",
            0,
            GroupId(1),
            dir.to_path_buf(),
            log.reader(),
            true,
            1 << 20,
            TimestampBounds::default(),
            Offset(0),
        )
    }

    fn header_stamped(
        first_timestamp_ms: i64,
        max_timestamp_ms: i64,
    ) -> rill_storage::batch::BatchHeader {
        let bytes = rill_storage::control_batch(b"", 0);
        rill_storage::batch::BatchHeader {
            first_timestamp_ms,
            max_timestamp_ms,
            ..rill_storage::batch::BatchHeader::decode(&bytes).expect("a control batch decodes")
        }
    }

    #[test]
    fn timestamps_too_far_ahead_or_behind_the_clock_are_not_admitted() {
        let now = 1_700_000_000_000;
        let bounds = TimestampBounds {
            after_max_ms: Some(3_600_000),
            before_max_ms: Some(1000),
        };
        assert!(bounds.admit(&header_stamped(now - 1000, now + 3_600_000), now));
        assert!(!bounds.admit(&header_stamped(now, now + 3_600_001), now));
        assert!(!bounds.admit(&header_stamped(now - 1001, now), now));
        // Extreme stamps neither overflow nor pass.
        assert!(!bounds.admit(&header_stamped(i64::MIN, i64::MAX), now));
        let none = TimestampBounds::default();
        assert!(none.admit(&header_stamped(i64::MIN, i64::MAX), now));
    }

    /// Polls `f` once, with a waker that does nothing: whether it is ready
    /// now, without waiting for anything.
    fn ready_now(f: Pin<&mut impl Future<Output = ()>>) -> bool {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        f.poll(&mut cx).is_ready()
    }

    #[test]
    fn a_fetch_parked_on_one_partition_is_not_woken_by_commits_on_another() {
        let (dir_a, dir_b) = (
            tempfile::tempdir().expect("temp dir"),
            tempfile::tempdir().expect("temp dir"),
        );
        let (a, b) = (partition(dir_a.path()), partition(dir_b.path()));
        let mut watches = vec![a.watch()];
        let parked = any_changed(&mut watches);
        let mut parked = std::pin::pin!(parked);
        assert!(!ready_now(parked.as_mut()), "nothing moved yet");
        b.set_committed(RaftIndex(1), Offset(10));
        b.set_leader(Some(BrokerId(1)), true, Term(2));
        assert!(
            !ready_now(parked.as_mut()),
            "B's commit and leadership are not A's"
        );
        a.set_committed(RaftIndex(1), Offset(10));
        assert!(
            ready_now(parked.as_mut()),
            "A's commit wakes the fetch parked on A"
        );
    }

    #[test]
    fn a_fetch_parked_on_a_partition_wakes_when_its_leadership_changes_or_it_is_dropped() {
        let dir = tempfile::tempdir().expect("temp dir");
        let a = partition(dir.path());
        let mut watches = vec![a.watch()];
        a.set_leader(None, false, Term(3));
        assert!(ready_now(std::pin::pin!(any_changed(&mut watches))));
        let mut watches = vec![a.watch()];
        drop(a);
        assert!(ready_now(std::pin::pin!(any_changed(&mut watches))));
    }

    #[test]
    fn a_parked_fetch_sees_a_commit_made_between_its_watch_and_its_wait() {
        let dir = tempfile::tempdir().expect("temp dir");
        let a = partition(dir.path());
        let mut watches = vec![a.watch()];
        // The read found nothing; the commit lands before the fetch parks.
        a.set_committed(RaftIndex(1), Offset(1));
        assert!(ready_now(std::pin::pin!(any_changed(&mut watches))));
    }

    #[test]
    fn dropped_proposal_hints_the_other_broker_that_leads() {
        let dir = tempfile::tempdir().expect("temp dir");
        let p = partition(dir.path());
        let other = BrokerId(2);
        p.set_leader(Some(other), false, Term(7));
        assert_eq!(
            p.retry_hint(),
            LeaderHint {
                leader: Some(other),
                epoch: Term(7)
            }
        );
    }

    #[test]
    fn dropped_proposal_gives_no_hint_while_this_broker_still_leads() {
        let dir = tempfile::tempdir().expect("temp dir");
        let p = partition(dir.path());
        let me = BrokerId(1);
        p.set_leader(Some(me), true, Term(3));
        assert_eq!(p.retry_hint(), LeaderHint::default());
        // Once it steps down without knowing a successor: still none.
        p.set_leader(None, false, Term(4));
        assert_eq!(p.retry_hint(), LeaderHint::default());
    }
}
