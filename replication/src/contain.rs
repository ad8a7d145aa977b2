//! A replica whose log cannot be read back stops alone.
//!
//! raft-rs 0.7 reads its own log through `Storage` and panics (`fatal!`)
//! on most failed reads: the entries a lagging follower needs, the
//! committed entries to apply, a term it looks up. Such a read fails when a
//! sealed segment was cut short or corrupted under the broker, or the disk
//! returns EIO, and a panic on the Raft thread stops every replica on the
//! broker. [`ReplicaLog`] records each failed read before raft-rs sees the
//! error ([`ReplicaLog::read_failure`]); [`raft_call`] runs a call into
//! raft-rs and tells the two kinds of panic apart:
//!
//! - after a recorded read failure, the panic is that damage: it becomes
//!   [`ReplicationError::LogUnreadable`], and the caller drops the group
//!   (its raft-rs state may be half-updated) and reports it failed;
//! - any other panic is a broken invariant and unwinds on: the broker stops,
//!   as it always did.
//!
//! Where raft-rs tolerates the error (a leader skips a send whose entries
//! are "temporarily unavailable"), nothing panics; the node stops the group
//! at its next round all the same, since the failure stays recorded.

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};

use raft::RawNode;

use crate::error::ReplicationError;
use crate::ids::GroupId;
use crate::storage::ReplicaLog;

/// Runs `f` on `group`'s raft-rs node, containing a panic caused by a log
/// that could not be read back (see the module documentation).
pub(crate) fn raft_call<T>(
    group: GroupId,
    raw: &mut RawNode<ReplicaLog>,
    f: impl FnOnce(&mut RawNode<ReplicaLog>) -> T,
) -> Result<T, ReplicationError> {
    // Unwind safety: on a contained panic the caller drops `raw` unread.
    match catch_unwind(AssertUnwindSafe(|| f(raw))) {
        Ok(value) => Ok(value),
        Err(panic) => match unreadable(group, raw) {
            Some(e) => Err(e),
            None => resume_unwind(panic),
        },
    }
}

/// The error that stops `group`, if its log could not be read back.
pub(crate) fn unreadable(group: GroupId, raw: &RawNode<ReplicaLog>) -> Option<ReplicationError> {
    raw.store()
        .read_failure()
        .map(|failure| ReplicationError::LogUnreadable {
            group,
            reason: failure.reason.clone(),
            damaged: failure.damaged,
        })
}
