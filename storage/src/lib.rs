//! rill-storage: the log of one partition replica.
//!
//! - [`batch`]: the record batch format (on disk = on the wire), its
//!   validation and zero-copy decoding; [`builder`] encodes batches.
//! - [`Log`]: a directory of memory-mapped segments with sparse indexes by
//!   offset, Raft index and time; append, read, truncate, roll, retention,
//!   and durability as a separate step ([`SyncPlan`]) so callers group-commit.
//! - Recovery on open keeps the longest valid prefix after any crash.
//! - [`producers`]: the idempotent producers a log holds batches of, and
//!   the check that keeps a retried batch from being stored twice.
//! - [`LogReader`]: reads from other threads through the segments the log
//!   publishes, never waiting for its writer.
//!
//! Lives here because it is the lowest crate that needs them: the newtypes
//! [`Offset`], [`RaftIndex`] and [`Term`].

pub mod batch;
pub mod builder;
pub mod compaction;
mod config;
mod error;
mod expired;
pub mod fault;
mod index;
mod log;
mod mapping;
pub mod producers;
mod recovery;
mod retention;
mod segment;
mod span;
mod sync;
mod timeindex;
mod types;
pub mod varint;
mod view;

pub use crate::batch::{Batches, Header, MAX_BATCH_BYTES_DEFAULT, Record, RecordBatch};
pub use crate::builder::{BatchBuilder, NewRecord, ProducerStamp, control_batch};
pub use crate::compaction::{
    Cleanable, Cleaned, CompactionSettings, CompactionStats, InstallOutcome, IoBudget, MergedAway,
    Unthrottled,
};
pub use crate::config::{Clock, LogConfig, ManualClock, SystemClock};
pub use crate::error::{BatchError, LogError};
pub use crate::expired::Expired;
pub use crate::log::{
    Appended, ENTRY_COPY_BELOW_BYTES, Log, LogPosition, batches_of, lock_directory,
};
pub use crate::recovery::sync_dir;
pub use crate::retention::RetentionOutcome;
pub use crate::span::FileSpan;
pub use crate::sync::{SyncDone, SyncPlan};
pub use crate::types::{Offset, RaftIndex, Term};
pub use crate::view::{LogRead, LogReader};
