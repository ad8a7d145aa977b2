//! The memory mapping of one segment file, and the `Bytes` handed to readers.
//!
//! A segment is mapped once over its full capacity (`segment_bytes`), but the
//! file behind it is only as long as the log has grown it (`fallocate` in
//! steps, see [`crate::segment`]). The invariants, which every `unsafe` block
//! here leans on:
//!
//! - nothing touches a mapped byte at or past the file's current length
//!   (that would be SIGBUS): writers grow the file before writing, readers
//!   only see the written prefix;
//! - a byte inside the written prefix is never written again, so a `&[u8]`
//!   or `Bytes` over it stays valid and unchanged for as long as it lives;
//! - a mapped file is never shrunk (`ftruncate`) while mapped; the mapping is
//!   unmapped when the last reader's `Bytes` is dropped, even if the file was
//!   unlinked meanwhile.

use std::fs::File;
use std::io;
use std::sync::Arc;

use bytes::Bytes;
use memmap2::{Advice, MmapOptions, MmapRaw};

/// A shared mapping of a segment file over `capacity` bytes.
#[derive(Debug)]
pub(crate) struct SegmentMap {
    /// `None` for a zero-capacity mapping (an empty sealed segment): `mmap`
    /// refuses zero lengths.
    raw: Option<MmapRaw>,
}

impl SegmentMap {
    /// Maps `capacity_bytes` of `file`, writable or read-only. The file may
    /// be shorter than the mapping; see the module invariants.
    pub(crate) fn map(file: &File, capacity_bytes: u64, writable: bool) -> io::Result<SegmentMap> {
        if capacity_bytes == 0 {
            return Ok(SegmentMap { raw: None });
        }
        let len = usize::try_from(capacity_bytes)
            .map_err(|_| io::Error::other("segment larger than the address space"))?;
        let mut opts = MmapOptions::new();
        opts.len(len);
        let raw = if writable {
            opts.map_raw(file)?
        } else {
            opts.map_raw_read_only(file)?
        };
        Ok(SegmentMap { raw: Some(raw) })
    }

    /// Mapped length, bytes.
    pub(crate) fn capacity(&self) -> u64 {
        self.raw.as_ref().map_or(0, |r| r.len() as u64)
    }

    /// Copies `src` to `position`.
    ///
    /// # Safety
    /// `position + src.len()` must lie within both the mapping and the file's
    /// current length, the mapping must be writable, and no byte of that range
    /// may have been handed out to a reader.
    pub(crate) unsafe fn write(&self, position: u64, src: &[u8]) {
        let raw = self
            .raw
            .as_ref()
            .expect("writes only go to mapped, non-empty segments");
        debug_assert!(position + src.len() as u64 <= raw.len() as u64);
        // SAFETY: in bounds per the caller's contract; `src` is ordinary memory
        // and cannot overlap a mapping of our own file that nobody reads.
        unsafe {
            std::ptr::copy_nonoverlapping(
                src.as_ptr(),
                raw.as_mut_ptr().add(position as usize),
                src.len(),
            );
        }
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
        debug_assert!(start + len as u64 <= raw.len() as u64);
        // SAFETY: per the caller's contract.
        unsafe { std::slice::from_raw_parts(raw.as_ptr().add(start as usize), len) }
    }

    /// Makes `[start, start + len)` durable (`msync(MS_SYNC)`: on Linux an
    /// `fdatasync` limited to that range, so pages prefaulted ahead of the
    /// writer are not written out as zeros).
    pub(crate) fn sync_range(&self, start: u64, len: u64) -> io::Result<()> {
        match &self.raw {
            Some(raw) if len > 0 => raw.flush_range(start as usize, len as usize),
            _ => Ok(()),
        }
    }

    /// Asks the kernel to fault in `[start, start + len)` for writing now, so
    /// the writer does not take a page fault per page later. Best effort: an
    /// old kernel without `MADV_POPULATE_WRITE` just faults lazily.
    pub(crate) fn populate_write(&self, start: u64, len: u64) {
        if let Some(raw) = &self.raw {
            let _ = raw.advise_range(Advice::PopulateWrite, start as usize, len as usize);
        }
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
