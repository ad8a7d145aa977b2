//! Sparse index files: the `.index` of a segment (this module's
//! [`OffsetEntry`]) and, through the same [`IndexFile`], its `.timeindex`
//! (see [`crate::timeindex`]).
//!
//! An entry is added for the first batch that starts at least
//! `index_interval_bytes` after the previous entry (never for position 0: the
//! segment's start is implicit), so one entry covers a few KiB of log.
//!
//! # File layout
//!
//! Little-endian. A 16-byte header, then `entry_count` fixed-size entries:
//!
//! | offset | size | field |
//! |-------:|-----:|-------|
//! |      0 |    4 | `magic`: `RIX1` (`.index`) or `RTX1` (`.timeindex`) |
//! |      4 |    4 | `entry_count` |
//! |      8 |    4 | `crc`: CRC-32 of the entry bytes |
//! |     12 |    4 | reserved, 0 |
//!
//! An `.index` entry is 12 bytes: `relative_offset u32` (base offset minus
//! the segment's), `relative_raft_index u32`, `position u32` (byte position
//! of the batch in the `.log`).
//!
//! # Invariants
//!
//! Positions strictly increase, relative offsets never decrease and relative
//! Raft indexes strictly increase: one index answers lookups by either key.
//! Index files are never fsynced. Instead an entry is written to the file
//! only after the bytes before its position were made durable, so on open
//! the log trusts the prefix a valid index covers and scans only past its last
//! entry. A file whose header, size or CRC is off, or whose last entry does
//! not match the batch at its position, is rebuilt from the segment.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const HEADER_BYTES: usize = 16;

/// A fixed-size entry of an index file.
pub(crate) trait IndexEntry: Copy + PartialEq + std::fmt::Debug {
    /// Encoded size, bytes.
    const BYTES: usize;
    /// File magic.
    const MAGIC: [u8; 4];
    /// Writes the entry into `out[..BYTES]`.
    fn encode(&self, out: &mut [u8]);
    /// Reads an entry from `b[..BYTES]`.
    fn decode(b: &[u8]) -> Self;
    /// Byte position in the segment of the batch the entry points at.
    fn position(&self) -> u32;
}

/// One `.index` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OffsetEntry {
    /// Batch base offset minus the segment base offset.
    pub(crate) relative_offset: u32,
    /// Batch Raft index minus the segment base Raft index.
    pub(crate) relative_raft_index: u32,
    /// Byte position of the batch in the segment.
    pub(crate) position: u32,
}

impl IndexEntry for OffsetEntry {
    const BYTES: usize = 12;
    const MAGIC: [u8; 4] = *b"RIX1";
    fn encode(&self, out: &mut [u8]) {
        out[0..4].copy_from_slice(&self.relative_offset.to_le_bytes());
        out[4..8].copy_from_slice(&self.relative_raft_index.to_le_bytes());
        out[8..12].copy_from_slice(&self.position.to_le_bytes());
    }
    fn decode(b: &[u8]) -> Self {
        let u = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().expect("4-byte slice"));
        OffsetEntry {
            relative_offset: u(0),
            relative_raft_index: u(4),
            position: u(8),
        }
    }
    fn position(&self) -> u32 {
        self.position
    }
}

/// The entries of one index file, in memory, and how many of them are on disk.
#[derive(Debug)]
pub(crate) struct IndexFile<E: IndexEntry> {
    path: PathBuf,
    entries: Vec<E>,
    /// Entries `[..persisted]` are in the file, which holds nothing else.
    persisted: usize,
    /// CRC state over the persisted entries' bytes.
    crc: crc32fast::Hasher,
    /// Open only while entries are written (see `Segment::persist_indexes`).
    file: Option<File>,
    /// The file may hold entries this index does not: start it over.
    rewrite: bool,
}

impl<E: IndexEntry> IndexFile<E> {
    /// An index with `entries`, none of them persisted yet; the file at `path`
    /// is replaced on the next [`IndexFile::persist_below`].
    pub(crate) fn new(path: PathBuf, entries: Vec<E>) -> Self {
        IndexFile {
            path,
            entries,
            persisted: 0,
            crc: crc32fast::Hasher::new(),
            file: None,
            rewrite: true,
        }
    }

    /// Reads the file at `path`: its entries if the header, size and CRC are
    /// right, `None` when it is missing or damaged in any way.
    pub(crate) fn load(path: &Path) -> Option<Vec<E>> {
        // An index has at most one entry per batch of a 4 GiB segment; a
        // larger file is not an index of ours.
        let len = std::fs::metadata(path).ok()?.len();
        if len
            > HEADER_BYTES as u64
                + (u64::from(u32::MAX) / crate::batch::HEADER_BYTES as u64) * E::BYTES as u64
        {
            return None;
        }
        let bytes = std::fs::read(path).ok()?;
        if bytes.len() < HEADER_BYTES || bytes[0..4] != E::MAGIC {
            return None;
        }
        let count = u32::from_le_bytes(bytes[4..8].try_into().ok()?) as usize;
        let crc = u32::from_le_bytes(bytes[8..12].try_into().ok()?);
        let body = &bytes[HEADER_BYTES..];
        if body.len() != count.checked_mul(E::BYTES)? || crc32fast::hash(body) != crc {
            return None;
        }
        Some(body.chunks_exact(E::BYTES).map(E::decode).collect())
    }

    /// An index whose `entries` are exactly what the file at `path` holds.
    pub(crate) fn loaded(path: PathBuf, entries: Vec<E>) -> Self {
        let mut crc = crc32fast::Hasher::new();
        let mut buf = vec![0; E::BYTES];
        for e in &entries {
            e.encode(&mut buf);
            crc.update(&buf);
        }
        IndexFile {
            path,
            persisted: entries.len(),
            entries,
            crc,
            file: None,
            rewrite: false,
        }
    }

    pub(crate) fn entries(&self) -> &[E] {
        &self.entries
    }

    pub(crate) fn push(&mut self, e: E) {
        debug_assert!(
            self.entries
                .last()
                .is_none_or(|l| l.position() < e.position())
        );
        self.entries.push(e);
    }

    /// Whether the file must be rewritten (it holds entries this index no
    /// longer has, or was never written).
    pub(crate) fn needs_rewrite(&self) -> bool {
        self.rewrite
    }

    /// Drops entries at or past `position`; the file is rewritten on the next
    /// persist if it held any of them.
    pub(crate) fn truncate_from(&mut self, position: u32) {
        let keep = self.entries.partition_point(|e| e.position() < position);
        self.entries.truncate(keep);
        if keep < self.persisted {
            self.rewrite = true;
        }
    }

    /// Writes every entry whose position is below `durable_end` (the bytes
    /// before it are durable), rewriting the file from scratch first when it
    /// may hold entries this index no longer has. Never syncs.
    pub(crate) fn persist_below(&mut self, durable_end: u64) -> io::Result<()> {
        if self.rewrite {
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&self.path)?;
            f.write_all_at(&Self::header(0, 0), 0)?;
            self.file = Some(f);
            self.persisted = 0;
            self.crc = crc32fast::Hasher::new();
            self.rewrite = false;
        }
        let upto = self
            .entries
            .partition_point(|e| u64::from(e.position()) < durable_end);
        if upto <= self.persisted {
            return Ok(());
        }
        if self.file.is_none() {
            self.file = Some(OpenOptions::new().read(true).write(true).open(&self.path)?);
        }
        let mut buf = vec![0; (upto - self.persisted) * E::BYTES];
        for (e, out) in self.entries[self.persisted..upto]
            .iter()
            .zip(buf.chunks_exact_mut(E::BYTES))
        {
            e.encode(out);
        }
        let file = self.file.as_ref().expect("opened above");
        file.write_all_at(&buf, (HEADER_BYTES + self.persisted * E::BYTES) as u64)?;
        self.crc.update(&buf);
        self.persisted = upto;
        file.write_all_at(&Self::header(upto, self.crc.clone().finalize()), 0)
    }

    /// Closes the file handle (entries stay in memory; the next persist
    /// opens it again).
    pub(crate) fn close(&mut self) {
        self.file = None;
    }

    fn header(count: usize, crc: u32) -> [u8; HEADER_BYTES] {
        let mut h = [0; HEADER_BYTES];
        h[0..4].copy_from_slice(&E::MAGIC);
        h[4..8].copy_from_slice(&(count as u32).to_le_bytes());
        h[8..12].copy_from_slice(&crc.to_le_bytes());
        h
    }

    /// Index of the last entry whose key (by `key`) is at most `target`.
    pub(crate) fn floor_by<K: Ord>(&self, target: K, key: impl Fn(&E) -> K) -> Option<&E> {
        let n = self.entries.partition_point(|e| key(e) <= target);
        n.checked_sub(1).map(|i| &self.entries[i])
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

/// Whether the entries are strictly increasing in position and Raft index and
/// non-decreasing in offset, and all lie below `end`.
pub(crate) fn offset_entries_are_ordered(entries: &[OffsetEntry], end: u64) -> bool {
    entries.windows(2).all(|w| {
        w[0].position < w[1].position
            && w[0].relative_raft_index < w[1].relative_raft_index
            && w[0].relative_offset <= w[1].relative_offset
    }) && entries
        .iter()
        .all(|e| e.position > 0 && u64::from(e.position) < end)
}
