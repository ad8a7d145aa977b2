//! Segments taken out of a log, still on disk, waiting to be unlinked.
//!
//! Retention ([`crate::retention`]) and a reset to a snapshot point
//! ([`crate::Log::reset_to`]) take whole segments out of a log and hand
//! them back as an [`Expired`]. The log no longer holds them, but their
//! files stay until the caller unlinks them ([`Expired::unlink`], oldest
//! first), after letting go of any lock around the log, so readers and
//! writers never wait on the file system. Readers that still map a segment
//! keep their mappings after the unlink. What a crash before the unlink
//! leaves on disk is each caller's to handle (see the two above).

use crate::error::LogError;
use crate::segment::Segment;
use crate::types::{RaftIndex, Term};

/// Segments taken out of a log by retention, still on disk.
#[derive(Debug)]
#[must_use = "the expired segments stay on disk until unlinked"]
pub struct Expired {
    pub(crate) segments: Vec<Segment>,
}

impl Expired {
    pub(crate) fn of(segments: Vec<Segment>) -> Expired {
        Expired { segments }
    }

    /// The last entry taken (its Raft index and term): the new snapshot
    /// point of a Raft replica.
    pub fn last_entry(&self) -> Option<(RaftIndex, Term)> {
        let seg = self.segments.last()?;
        let next = seg.tail.next_raft_index.get();
        (next > seg.base_raft_index.get()).then(|| (RaftIndex(next - 1), seg.tail.last_term))
    }

    /// Whether retention took nothing.
    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// Deletes the segments' files, oldest first.
    pub fn unlink(self) -> Result<(), LogError> {
        for seg in &self.segments {
            seg.unlink()?;
        }
        Ok(())
    }
}
