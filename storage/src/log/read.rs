//! Reading a log: batches by offset and by Raft index (zero-copy from the
//! segments' mappings, or copied with `pread` below a size), terms, time
//! lookups and the file spans a sender may use. Headers and anything looked
//! inside are read with `pread`; mapped bytes are only handed on.

use super::*;

impl Log {
    /// Reads whole batches from the one holding `from`, up to the log end,
    /// as zero-copy slices of the segments (one `Bytes` per segment touched).
    /// Stops once `max_bytes` is reached, but always returns at least one
    /// whole batch when there is one.
    ///
    /// A segment file found shorter than its batches (cut short under the
    /// log) answers [`LogError::Damaged`]. The slices are views of the
    /// files' mappings, meant for the kernel to copy (a vectored write to a
    /// socket, which fails with `EFAULT` should the file be cut short
    /// meanwhile); a process that reads them itself while someone else may
    /// cut its files short risks SIGBUS, and should use
    /// [`Log::read_entries`], which copies.
    pub fn read(&self, from: Offset, max_bytes: u64) -> Result<Vec<Bytes>, LogError> {
        self.read_below(from, max_bytes, self.next_offset())
    }

    /// As [`Log::read`], returning only batches whose records all lie below
    /// `limit` (a high watermark).
    pub fn read_below(
        &self,
        from: Offset,
        max_bytes: u64,
        limit: Offset,
    ) -> Result<Vec<Bytes>, LogError> {
        let (start, end) = (self.log_start_offset(), self.next_offset());
        if from < start || from > end {
            return Err(LogError::OffsetOutOfRange {
                requested: from,
                log_start: start,
                log_end: end,
            });
        }
        // The writer publishes every change before it returns: its own
        // reader sees exactly this log.
        Ok(self.reader().read_below(from, max_bytes, limit)?.batches)
    }

    /// The stored batches with Raft indexes in `[from, to)`, at most
    /// `max_bytes` of them but at least one. Headers are read with
    /// `pread`; a batch shorter than [`ENTRY_COPY_BELOW_BYTES`] is an owned
    /// copy read with `pread`, a longer one zero-copy bytes of the mapping
    /// for the kernel to copy: a file cut short answers an error, never
    /// SIGBUS.
    pub fn read_entries(
        &self,
        from: RaftIndex,
        to: RaftIndex,
        max_bytes: u64,
    ) -> Result<Vec<RecordBatch>, LogError> {
        self.read_entries_copying_below(from, to, max_bytes, ENTRY_COPY_BELOW_BYTES)
    }

    /// As [`Log::read_entries`], every batch an owned copy read with
    /// `pread`: for readers that look inside entries of any size (the
    /// controller applying its commands).
    pub fn read_entries_owned(
        &self,
        from: RaftIndex,
        to: RaftIndex,
        max_bytes: u64,
    ) -> Result<Vec<RecordBatch>, LogError> {
        self.read_entries_copying_below(from, to, max_bytes, u64::MAX)
    }

    fn read_entries_copying_below(
        &self,
        from: RaftIndex,
        to: RaftIndex,
        max_bytes: u64,
        copy_below_bytes: u64,
    ) -> Result<Vec<RecordBatch>, LogError> {
        let (first, next) = (self.first_raft_index(), self.next_raft_index());
        if from < first || to > next || from > to {
            return Err(LogError::RaftIndexOutOfRange {
                requested: if from < first || from > to { from } else { to },
                first,
                next,
            });
        }
        let mut out = Vec::new();
        let mut budget = max_bytes;
        let mut index = from;
        let start = self
            .segments
            .partition_point(|s| s.tail.next_raft_index <= from);
        'segments: for seg in self.segments.iter().skip(start) {
            let Some(mut pos) = seg.position_for_raft_index(index)? else {
                continue;
            };
            while pos < seg.tail.position && index < to {
                let h = seg.header_at(pos)?;
                let len = h.batch_bytes();
                if len > budget && !out.is_empty() {
                    break 'segments;
                }
                // Zero-copy, as fetches are: raft-rs reads every committed
                // entry back to apply it, and a copy here was a second
                // memcpy of every byte produced (W1 -11%). The length is
                // checked (`fstat`) first and the header was read with
                // `pread`. Applying reads no data, and the data of entries
                // sent to followers is copied by the kernel (writev,
                // sendfile), where a page cut away since the check is an
                // error. Shorter entries (control entries among them) are
                // copied by the process that sends or decodes them: read
                // with `pread`, they never fault.
                let bytes = if len < copy_below_bytes {
                    seg.read_owned(pos, pos + len)?
                } else {
                    seg.bytes(pos, pos + len)?
                };
                let b = RecordBatch::from_parts(h, bytes)?;
                if b.header().raft_index != index {
                    return Err(LogError::Damaged {
                        path: seg.paths.log.clone(),
                        position: pos,
                        reason: format!(
                            "the batch there carries raft index {}, not {index}",
                            b.header().raft_index
                        ),
                    });
                }
                out.push(b);
                budget = budget.saturating_sub(len);
                pos += len;
                index = index.next();
            }
            if index >= to {
                break;
            }
        }
        Ok(out)
    }

    /// The term of the entry at `index`.
    pub fn term_of(&self, index: RaftIndex) -> Result<Term, LogError> {
        // The last entry's term is kept in memory: Raft asks for it on
        // every proposal, and answering it needs no read of a file that
        // may have been damaged under the log.
        if index.next() == self.next_raft_index() && index >= self.first_raft_index() {
            return Ok(self.last_term());
        }
        let out_of_range = || LogError::RaftIndexOutOfRange {
            requested: index,
            first: self.first_raft_index(),
            next: self.next_raft_index(),
        };
        let i = self
            .segments
            .partition_point(|s| s.tail.next_raft_index <= index);
        let seg = self.segments.get(i).ok_or_else(out_of_range)?;
        let pos = seg
            .position_for_raft_index(index)?
            .ok_or_else(out_of_range)?;
        Ok(seg.header_at(pos)?.raft_term)
    }

    /// The offset of the first record whose timestamp is at or after
    /// `timestamp_ms`, or `None` when there is no such record.
    pub fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<Option<Offset>, LogError> {
        for seg in &self.segments {
            let Some(mut pos) = seg.position_for_timestamp(timestamp_ms)? else {
                continue;
            };
            while pos < seg.tail.position {
                let h = seg.header_at(pos)?;
                let len = h.batch_bytes();
                if !h.is_control() && h.max_timestamp_ms >= timestamp_ms {
                    let b = RecordBatch::new(seg.read_owned(pos, pos + len)?, usize::MAX)?;
                    // Its records are about to be decoded: bytes that no
                    // longer match the CRC the log checked when it wrote
                    // them are damage, not a bad batch from a client.
                    b.verify_crc().map_err(|e| LogError::Damaged {
                        path: seg.paths.log.clone(),
                        position: pos,
                        reason: e.to_string(),
                    })?;
                    for r in b.records() {
                        let r = r?;
                        if r.timestamp_ms >= timestamp_ms {
                            return Ok(Some(r.offset));
                        }
                    }
                }
                pos += len;
            }
        }
        Ok(None)
    }

    /// Where the entry at Raft index `index`, of term `term`, lies in its
    /// segment file, or `None` when the log does not hold that entry
    /// (written) here, or its file cannot be read (the sender then sends
    /// the entry from memory, or learns of the damage from its next read).
    pub fn file_span(&self, index: RaftIndex, term: Term) -> Option<crate::FileSpan> {
        let i = self
            .segments
            .partition_point(|s| s.tail.next_raft_index <= index);
        let seg = self.segments.get(i)?;
        let position = seg.position_for_raft_index(index).ok()??;
        let h = seg.header_at(position).ok()?;
        (h.raft_index == index && h.raft_term == term).then(|| crate::FileSpan {
            file: Arc::clone(&seg.file),
            offset: position,
            len: h.batch_bytes(),
        })
    }
}
