//! Opening a log: the directory locked, its segments found, each one
//! recovered in order (the longest valid prefix kept, a hole in committed
//! entries refused), and segments wholly before a replica's snapshot point
//! removed.

use super::*;

impl Log {
    /// Opens the log in `dir` (creating it empty, at offset 0 and Raft index
    /// 1, when there is none), recovering the longest valid prefix.
    pub fn open(dir: impl AsRef<Path>, config: LogConfig) -> Result<Log, LogError> {
        Self::open_with_clock(dir, config, Arc::new(SystemClock))
    }

    /// As [`Log::open`], reading time from `clock` (for rolling and retention).
    pub fn open_with_clock(
        dir: impl AsRef<Path>,
        config: LogConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Log, LogError> {
        Self::open_committed_through(dir, config, clock, RaftIndex(u64::MAX))
    }

    /// As [`Log::open_with_clock`], for a log whose entries through
    /// `committed` were durable and counted as committed (a replica's saved
    /// commit index). A hole in the middle of the log at or below it fails
    /// the open ([`LogError::Hole`]); one past it is a tail that was never
    /// synced (a machine crash can leave a later segment's pages on disk
    /// and not an earlier one's), cut as a torn tail is, for Raft to send
    /// again.
    pub fn open_committed_through(
        dir: impl AsRef<Path>,
        config: LogConfig,
        clock: Arc<dyn Clock>,
        committed: RaftIndex,
    ) -> Result<Log, LogError> {
        let start = LogPosition {
            offset: Offset(0),
            raft_index: RaftIndex(0),
        };
        Self::open_from(dir, config, clock, start, committed)
    }

    /// As [`Log::open_committed_through`], for a log that needs nothing
    /// before `start` (a replica's first position after its snapshot
    /// point). Segments wholly before it, and one of another history that
    /// begins at its index but not its offset, are removed first: retention
    /// or a snapshot install took them and a crash came before their unlink
    /// reached the disk. Left in place, such a segment would sit before a gap (the
    /// entries between it and the log start were taken with it, or never
    /// held here) that recovery must count as a hole in committed entries.
    pub fn open_from(
        dir: impl AsRef<Path>,
        config: LogConfig,
        clock: Arc<dyn Clock>,
        start: LogPosition,
        committed: RaftIndex,
    ) -> Result<Log, LogError> {
        config.validate()?;
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(LogError::io("create log directory", &dir))?;
        let lock = if config.lock_dir {
            Some(lock_directory(&dir)?)
        } else {
            None
        };
        let mut bases = Vec::new();
        let mut stems = std::collections::BTreeSet::new();
        let mut others = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(LogError::io("list log directory", &dir))? {
            let entry = entry.map_err(LogError::io("list log directory", &dir))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.ends_with(crate::compaction::CLEANED_SUFFIX) {
                // A compaction pass's file never installed: the segment it
                // was cleaned from is still here.
                let path = entry.path();
                std::fs::remove_file(&path)
                    .map_err(LogError::io("remove uninstalled cleaned segment", &path))?;
            } else if let Some(base) = parse_segment_name(name) {
                bases.push(base);
                stems.insert(name.trim_end_matches(".log").to_string());
            } else if let Some(stem) = name
                .strip_suffix(".index")
                .or_else(|| name.strip_suffix(".timeindex"))
            {
                others.push((stem.to_string(), entry.path()));
            }
        }
        // Index files without their segment would be mistaken for the index
        // of a future segment of the same name.
        for (stem, path) in others {
            if !stems.contains(&stem) {
                std::fs::remove_file(&path).map_err(LogError::io("remove orphan index", &path))?;
            }
        }
        bases.sort_by_key(|&(o, i)| (i, o));
        let gone = before_start(&bases, start);
        for &(o, i) in &gone {
            let paths = SegmentPaths::new(&dir, o, i);
            tracing::info!(
                segment = %paths.log.display(),
                start = %start.raft_index,
                "removing a segment left before the log start"
            );
            paths.remove("remove segment before the log start")?;
        }
        bases.retain(|b| !gone.contains(b));
        let mut log = Log {
            dir,
            config,
            clock,
            segments: VecDeque::new(),
            dir_generation: 0,
            dir_synced_generation: 0,
            truncations: 0,
            durable: LogPosition {
                offset: Offset(0),
                raft_index: RaftIndex(1),
            },
            published: Arc::new(PublishedSegments::new(Arc::new([]))),
            producers: ProducerTable::default(),
            _lock: lock,
        };
        log.recover_segments(&bases, committed)?;
        log.rebuild_producers()?;
        log.durable = log.end();
        log.publish_segments();
        Ok(log)
    }

    /// Rebuilds the producer table from the batch headers of the segments
    /// written to within the producer expiry (older ones hold no producer
    /// that would not be forgotten at once). A batch counts as recorded
    /// when its segment was last written.
    fn rebuild_producers(&mut self) -> Result<(), LogError> {
        let now_ms = self.clock.now_ms();
        let expiration_ms = i64::try_from(self.config.producer_expiration_ms).unwrap_or(i64::MAX);
        let mut table = ProducerTable::default();
        for seg in &self.segments {
            if seg.is_empty() {
                continue;
            }
            let written_ms = seg.modified_ms()?;
            if now_ms.saturating_sub(written_ms) > expiration_ms {
                continue;
            }
            seg.for_each_header(|h| {
                if let Some(sequence) = ProducerSequence::of(h) {
                    let at = StoredAt {
                        base_offset: h.base_offset,
                        next_offset: h.next_offset(),
                        raft_index: h.raft_index,
                        term: h.raft_term,
                    };
                    table.record(ProducerBatch { sequence, at }, written_ms);
                }
            })?;
        }
        self.producers = table;
        Ok(())
    }

    /// Opens every segment in order, cutting the log at the first gap past
    /// `committed` and failing at one at or below it.
    fn recover_segments(
        &mut self,
        bases: &[(Offset, RaftIndex)],
        committed: RaftIndex,
    ) -> Result<(), LogError> {
        let mut last_term = Term(0);
        let mut i = 0;
        while i < bases.len() {
            let base = bases[i];
            let next = bases.get(i + 1).copied();
            let paths = SegmentPaths::new(&self.dir, base.0, base.1);
            let mut seg = open_segment(
                paths.clone(),
                base,
                Expect { last_term },
                next.map(|n| n.1),
                next.is_none(),
                &self.config,
            )?;
            if let Some(next) = next {
                let t = seg.tail;
                if (t.next_offset, t.next_raft_index) != next {
                    // A bad batch before the next segment's start. When a
                    // later segment holds a batch and the first entry
                    // missing was committed, this is a hole in the middle
                    // of the log: dropping everything after it would
                    // silently lose entries Raft counted as committed, so
                    // the log refuses to open. Otherwise it is the torn
                    // tail of a log that had just rolled (its later pages
                    // may have reached the disk before these), cut as the
                    // last segment's is.
                    if t.next_raft_index <= committed
                        && let Some(later) = self.first_with_a_batch(&bases[i + 1..])?
                    {
                        tracing::error!(
                            segment = %paths.log.display(),
                            position = t.position,
                            later = %later.display(),
                            "a bad batch in a sealed segment that later segments follow"
                        );
                        return Err(LogError::Hole {
                            path: paths.log.clone(),
                            position: t.position,
                            offset: t.next_offset,
                            raft_index: t.next_raft_index,
                        });
                    }
                    // A gap: everything after this segment is not part of the
                    // longest valid prefix.
                    tracing::warn!(
                        dir = %self.dir.display(),
                        segment = %paths.log.display(),
                        "segment ends before the next one starts; dropping the segments after it"
                    );
                    for &(o, r) in &bases[i + 1..] {
                        SegmentPaths::new(&self.dir, o, r).remove("remove segment after gap")?;
                    }
                    self.dir_generation += 1;
                    drop(seg);
                    seg =
                        open_segment(paths, base, Expect { last_term }, None, true, &self.config)?;
                    self.segments.push_back(seg);
                    break;
                }
                if seg.is_empty() {
                    // An empty segment between two others adds nothing.
                    seg.unlink()?;
                    self.dir_generation += 1;
                    i += 1;
                    continue;
                }
            }
            last_term = seg.tail.last_term;
            self.segments.push_back(seg);
            i += 1;
        }
        if self.segments.is_empty() {
            let seg = Segment::create(&self.dir, Offset(0), RaftIndex(1), Term(0), &self.config)?;
            self.dir_generation += 1;
            self.segments.push_back(seg);
        }
        // Bytes past the last index entry may have been in the page cache
        // only (a killed process): make them durable before anything counts
        // on them. One `syncfs` covers every segment, where a sync per file
        // would flush the disk cache once per segment, and every directory
        // entry with them.
        if self.segments.iter().any(|s| !s.is_empty()) {
            let dir =
                File::open(&self.dir).map_err(LogError::io("open log directory", &self.dir))?;
            // SAFETY: syncfs on an fd we own.
            if unsafe { libc::syncfs(dir.as_raw_fd()) } != 0 {
                return Err(LogError::io("sync filesystem", &self.dir)(
                    std::io::Error::last_os_error(),
                ));
            }
            self.dir_synced_generation = self.dir_generation;
        } else {
            // An empty log: a crash can take nothing that counts, and the
            // next open makes again whatever it loses. Its directory (the
            // segment just created, or one created empty before a crash
            // whose entry may never have been synced) is synced with its
            // first entries, by the first sync plan: a topic of many
            // partitions is created without a directory sync per partition.
            self.dir_generation = self.dir_generation.max(1);
            self.dir_synced_generation = 0;
        }
        Ok(())
    }

    /// The first of the segments `bases` whose file starts with a batch
    /// header that passes its checks, if any (read with `pread`).
    fn first_with_a_batch(
        &self,
        bases: &[(Offset, RaftIndex)],
    ) -> Result<Option<PathBuf>, LogError> {
        use std::os::unix::fs::FileExt;
        for &(o, r) in bases {
            let path = SegmentPaths::new(&self.dir, o, r).log;
            let file = File::open(&path).map_err(LogError::io("open segment", &path))?;
            let mut head = [0u8; batch::HEADER_BYTES];
            match file.read_exact_at(&mut head, 0) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => continue,
                Err(e) => return Err(LogError::io("read segment", &path)(e)),
            }
            let valid = BatchHeader::decode(&head)
                .is_ok_and(|h| h.check(self.config.max_batch_bytes).is_ok() && h.raft_index == r);
            if valid {
                return Ok(Some(path));
            }
        }
        Ok(None)
    }
}

/// Locks `dir` (an exclusive `flock` on `dir/.lock`, created if missing)
/// for as long as the returned file stays open: a second process (or a
/// second opener in this one) gets an error instead of sharing it.
pub fn lock_directory(dir: &Path) -> Result<File, LogError> {
    let path = dir.join(".lock");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(LogError::io("open lock file", &path))?;
    // SAFETY: flock on an fd we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(LogError::io(
            "lock log directory (is another process using it?)",
            &path,
        )(std::io::Error::last_os_error()));
    }
    Ok(file)
}

/// The segments of `bases` (sorted by Raft index, then offset) that hold
/// nothing a log starting at `start` needs: each one followed by a segment
/// of a higher base index that is still at or before the start (its
/// entries end before that base), and, at the start's own base index, one
/// whose offset is not the start's while one whose offset is stays (an
/// old history's segment a reset took out: it shares the index, not the
/// offset). Segments at or past the start otherwise stay for recovery.
fn before_start(bases: &[(Offset, RaftIndex)], start: LogPosition) -> Vec<(Offset, RaftIndex)> {
    let mut gone = Vec::new();
    for (n, &(offset, index)) in bases.iter().enumerate() {
        let superseded = bases[n + 1..]
            .iter()
            .any(|&(_, next)| next > index && next <= start.raft_index);
        let other_history = index == start.raft_index
            && offset != start.offset
            && bases.contains(&(start.offset, start.raft_index));
        if superseded || other_history {
            gone.push((offset, index));
        }
    }
    gone
}
