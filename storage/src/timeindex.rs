//! The `.timeindex` of a segment: "from which batch on can a record have a
//! timestamp at or after T?".
//!
//! Its entries sit at exactly the positions of the `.index` entries (they are
//! added together, see [`crate::index`] for the file layout). A 16-byte entry
//! is `max_timestamp_before_ms i64` (the largest timestamp of every batch in
//! the segment before this position, -2^63 when none), `relative_offset u32`
//! and `position u32`.
//!
//! Invariant: `max_timestamp_before_ms` never decreases along the file
//! (it is a running maximum), so a binary search finds the last entry before
//! which no batch reaches T; a lookup scans forward from there.

use crate::index::IndexEntry;

/// One `.timeindex` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimeEntry {
    /// Largest batch timestamp before `position` in this segment, ms.
    pub(crate) max_timestamp_before_ms: i64,
    /// Base offset of the batch at `position` minus the segment base offset.
    pub(crate) relative_offset: u32,
    /// Byte position of the batch in the segment.
    pub(crate) position: u32,
}

impl IndexEntry for TimeEntry {
    const BYTES: usize = 16;
    const MAGIC: [u8; 4] = *b"RTX1";
    fn encode(&self, out: &mut [u8]) {
        out[0..8].copy_from_slice(&self.max_timestamp_before_ms.to_le_bytes());
        out[8..12].copy_from_slice(&self.relative_offset.to_le_bytes());
        out[12..16].copy_from_slice(&self.position.to_le_bytes());
    }
    fn decode(b: &[u8]) -> Self {
        TimeEntry {
            max_timestamp_before_ms: i64::from_le_bytes(b[0..8].try_into().expect("8-byte slice")),
            relative_offset: u32::from_le_bytes(b[8..12].try_into().expect("4-byte slice")),
            position: u32::from_le_bytes(b[12..16].try_into().expect("4-byte slice")),
        }
    }
    fn position(&self) -> u32 {
        self.position
    }
}

/// Whether `time` entries sit exactly at the `offsets` entries' positions and
/// offsets and their timestamps never decrease.
pub(crate) fn time_entries_agree(
    time: &[TimeEntry],
    offsets: &[crate::index::OffsetEntry],
) -> bool {
    time.len() == offsets.len()
        && time
            .iter()
            .zip(offsets)
            .all(|(t, o)| t.position == o.position && t.relative_offset == o.relative_offset)
        && time
            .windows(2)
            .all(|w| w[0].max_timestamp_before_ms <= w[1].max_timestamp_before_ms)
}
