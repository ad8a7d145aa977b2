//! One sealed segment as a compaction pass reads it: from the view the
//! log published, with `pread`, every batch's header checked and its CRC
//! verified before anything looks inside it (damage stops the pass, and
//! is never copied into a new file).

use std::sync::Arc;

use super::IoBudget;
use crate::batch::{self, BatchHeader};
use crate::error::LogError;
use crate::recovery::FileWindow;
use crate::segment::parse_segment_name;
use crate::types::{Offset, RaftIndex, Term};
use crate::view::SegmentView;

/// One sealed segment as a pass reads it.
pub(crate) struct Source {
    pub(crate) view: Arc<SegmentView>,
    pub(crate) base: (Offset, RaftIndex),
    pub(crate) end_position: u64,
    pub(crate) end_offset: Offset,
    /// When its file was last written, ms since the epoch.
    pub(crate) modified_ms: i64,
}

/// Where a segment's batches ended when it was read: it is replaced only
/// if it still ends there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentEnd {
    pub(crate) position: u64,
    pub(crate) next_offset: Offset,
    pub(crate) next_raft_index: RaftIndex,
    pub(crate) last_term: Term,
}

impl Source {
    /// The sealed segment `view`, whose batches end at `end_position`
    /// and `end_offset`.
    pub(crate) fn new(
        view: &Arc<SegmentView>,
        end_position: u64,
        end_offset: Offset,
    ) -> Result<Source, LogError> {
        let base_raft_index = view
            .path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(parse_segment_name)
            .map(|(_, index)| index)
            .ok_or_else(|| LogError::Corrupt {
                path: view.path.clone(),
                reason: "not a segment file name".into(),
            })?;
        let modified = view
            .file
            .metadata()
            .and_then(|m| m.modified())
            .map_err(LogError::io("read segment time", &view.path))?;
        let modified_ms = modified
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        Ok(Source {
            view: Arc::clone(view),
            base: (view.base_offset, base_raft_index),
            end_position,
            end_offset,
            modified_ms,
        })
    }

    /// Calls `f` with each batch (its position, header and whole bytes,
    /// header checked against `max_batch_bytes` and CRC verified).
    /// `Ok(false)` when the budget stopped it.
    pub(crate) fn for_each_batch(
        &self,
        max_batch_bytes: usize,
        budget: &mut dyn IoBudget,
        mut f: impl FnMut(u64, &BatchHeader, &[u8]) -> Result<(), LogError>,
    ) -> Result<bool, LogError> {
        let view = &self.view;
        let mut window = FileWindow::new(&view.file, &view.path, self.end_position);
        let mut position = 0;
        while position < self.end_position {
            let damaged = |reason: String| view.damaged(position, reason);
            let head = window
                .get(position, batch::HEADER_BYTES)?
                .ok_or_else(|| damaged("the segment ends inside a batch header".into()))?;
            let header = BatchHeader::decode(head).map_err(|e| damaged(e.to_string()))?;
            header
                .check(max_batch_bytes)
                .map_err(|e| damaged(e.to_string()))?;
            let len = header.batch_bytes();
            let bytes = window
                .get(position, usize::try_from(len).unwrap_or(usize::MAX))?
                .ok_or_else(|| damaged(format!("a batch of {len} bytes runs past the segment")))?;
            let crc = batch::compute_crc(bytes);
            if crc != header.crc {
                return Err(damaged(format!(
                    "CRC {crc:#010x} does not match the stored {:#010x}",
                    header.crc
                )));
            }
            f(position, &header, bytes)?;
            position += len;
            if !budget.spend(len) {
                return Ok(false);
            }
        }
        Ok(true)
    }
}
