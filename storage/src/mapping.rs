//! The memory mapping of one segment file, and the `Bytes` handed to readers.
//!
//! A segment is mapped once, read-only, over its full capacity
//! (`segment_bytes`), but the file behind it is only as long as the log has
//! grown it (`fallocate` in steps, see [`crate::segment`]); the log writes
//! the file with `pwritev`, never through the mapping. The invariants, which
//! every `unsafe` block here leans on:
//!
//! - nothing touches a mapped byte at or past the file's current length
//!   (that would be SIGBUS): readers only see the written prefix, the log
//!   parses headers and record bodies from `pread` copies (never from the
//!   mapping), and a `Bytes` over the mapping is handed out only after an
//!   `fstat` showed the file still covers it (see `Segment::bytes`);
//! - every slice of the mapping is bounds-checked against it with
//!   `assert!`, in release builds too;
//! - a byte inside the written prefix is never written again, so a `&[u8]`
//!   or `Bytes` over it stays valid and unchanged for as long as it lives;
//! - a mapped file is never shrunk (`ftruncate`) while mapped; the mapping is
//!   unmapped when the last reader's `Bytes` is dropped, even if the file was
//!   unlinked meanwhile.

use std::fs::File;
use std::io;
use std::sync::Arc;

use bytes::Bytes;
use memmap2::{MmapOptions, MmapRaw};

/// A shared mapping of a segment file over `capacity` bytes.
#[derive(Debug)]
pub(crate) struct SegmentMap {
    /// `None` for a zero-capacity mapping (an empty sealed segment): `mmap`
    /// refuses zero lengths.
    raw: Option<MmapRaw>,
}

impl SegmentMap {
    /// Maps `capacity_bytes` of `file` for reading. The file may be shorter
    /// than the mapping; see the module invariants.
    pub(crate) fn map(file: &File, capacity_bytes: u64) -> io::Result<SegmentMap> {
        if capacity_bytes == 0 {
            return Ok(SegmentMap { raw: None });
        }
        let len = usize::try_from(capacity_bytes)
            .map_err(|_| io::Error::other("segment larger than the address space"))?;
        let mut opts = MmapOptions::new();
        opts.len(len);
        Ok(SegmentMap {
            raw: Some(opts.map_raw_read_only(file)?),
        })
    }

    /// Mapped length, bytes.
    pub(crate) fn capacity(&self) -> u64 {
        self.raw.as_ref().map_or(0, |r| r.len() as u64)
    }

    /// The bytes `[start, start + len)` of the written prefix.
    ///
    /// # Safety
    /// The range must lie within the file's length and within bytes already
    /// written, which are never written again.
    pub(crate) unsafe fn slice(&self, start: u64, len: usize) -> &[u8] {
        if len == 0 {
            return &[];
        }
        let raw = self
            .raw
            .as_ref()
            .expect("a non-empty range implies a mapping");
        // Checked in release builds too: a slice past the mapping would
        // read memory that is not ours.
        assert!(
            start
                .checked_add(len as u64)
                .is_some_and(|end| end <= raw.len() as u64),
            "mapping bounds are checked in release builds: [{start}, +{len}) past {}",
            raw.len()
        );
        // SAFETY: per the caller's contract.
        unsafe { std::slice::from_raw_parts(raw.as_ptr().add(start as usize), len) }
    }
}

/// Zero-copy `Bytes` over `[start, start + len)` of the written prefix of
/// `map`. The `Bytes` keeps the mapping alive.
///
/// # Safety
/// As [`SegmentMap::slice`].
pub(crate) unsafe fn shared_bytes(map: &Arc<SegmentMap>, start: u64, len: usize) -> Bytes {
    if len == 0 {
        return Bytes::new();
    }
    assert!(
        start
            .checked_add(len as u64)
            .is_some_and(|end| end <= map.capacity()),
        "mapping bounds are checked in release builds: [{start}, +{len}) past {}",
        map.capacity()
    );
    Bytes::from_owner(MapView {
        map: Arc::clone(map),
        start: start as usize,
        len,
    })
}

/// The owner behind a reader's `Bytes`: a range of the written prefix.
struct MapView {
    map: Arc<SegmentMap>,
    start: usize,
    len: usize,
}

impl AsRef<[u8]> for MapView {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: a MapView is only built by `shared_bytes`, whose caller
        // vouched that the range is written, immutable and backed by the file.
        unsafe { self.map.slice(self.start as u64, self.len) }
    }
}
