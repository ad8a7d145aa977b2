//! Cutting a log: a suffix truncated (the segment sealed at the cut, never
//! rewritten; the next entries go to a new file) and a reset to a snapshot
//! point (every segment taken out, a new one begun there).

use super::*;

impl Log {
    /// Removes every entry with Raft index `from` or later (Raft conflict
    /// resolution). The segment holding `from` is sealed at the cut, or
    /// unlinked when the cut removes it whole, and appends continue in a new
    /// segment starting at the cut: no byte already written is rewritten.
    pub fn truncate_suffix(&mut self, from: RaftIndex) -> Result<(), LogError> {
        let (first, next) = (self.first_raft_index(), self.next_raft_index());
        if from == next {
            return Ok(());
        }
        if from < first || from > next {
            return Err(LogError::RaftIndexOutOfRange {
                requested: from,
                first,
                next,
            });
        }
        self.truncations += 1;
        self.producers.truncate_from(from);
        // The offset at the cut, before anything is removed.
        let cut_offset = {
            let i = self
                .segments
                .partition_point(|s| s.tail.next_raft_index <= from);
            let seg = &self.segments[i];
            let pos = seg
                .position_for_raft_index(from)?
                .expect("from lies inside the log");
            seg.header_at(pos)?.base_offset
        };
        let mut prev_term = Term(0);
        while let Some(seg) = self.segments.back() {
            if seg.base_raft_index < from {
                break;
            }
            seg.unlink()?;
            self.segments.pop_back();
            self.dir_generation += 1;
        }
        if let Some(seg) = self.segments.back_mut() {
            let pos = seg
                .position_for_raft_index(from)?
                .unwrap_or(seg.tail.position);
            seg.seal_at(pos, Term(0))?;
            prev_term = seg.tail.last_term;
            debug_assert_eq!(seg.tail.next_raft_index, from);
            debug_assert_eq!(seg.tail.next_offset, cut_offset);
        }
        let seg = Segment::create(&self.dir, cut_offset, from, prev_term, &self.config);
        let seg = match seg {
            Ok(seg) => seg,
            Err(e) => {
                // Readers follow the log as far as the cut went.
                self.publish_segments();
                return Err(e);
            }
        };
        self.segments.push_back(seg);
        self.dir_generation += 1;
        self.durable = self.durable.min(self.end());
        self.publish_segments();
        Ok(())
    }

    /// Empties the log and restarts it at `next` (a Raft snapshot point: a
    /// follower too far behind its leader to be sent entries). `prev_term`
    /// is the term of the entry just before `next`. Every segment is taken
    /// out of the log (the caller unlinks them through the returned
    /// [`crate::Expired`], after releasing any lock, as for retention) and
    /// appends continue in a fresh segment at `next`.
    ///
    /// Crash safety is the caller's: record the snapshot point durably
    /// before calling this, and on open reset again when the log does not
    /// reach it (a crash between the two leaves either the old segments or
    /// none).
    pub fn reset_to(
        &mut self,
        next: LogPosition,
        prev_term: Term,
    ) -> Result<crate::expired::Expired, LogError> {
        let old: Vec<Segment> = self.segments.drain(..).collect();
        // A segment of the old log may carry the name the new one needs:
        // its files go first (readers keep their mappings).
        for seg in &old {
            if (seg.base_offset, seg.base_raft_index) == (next.offset, next.raft_index) {
                seg.unlink()?;
            }
        }
        self.truncations += 1;
        self.producers.clear();
        let seg = match Segment::create(
            &self.dir,
            next.offset,
            next.raft_index,
            prev_term,
            &self.config,
        ) {
            Ok(seg) => seg,
            Err(e) => {
                // Keep the log usable as it was rather than segment-less.
                self.segments.extend(old);
                return Err(e);
            }
        };
        self.segments.push_back(seg);
        self.dir_generation += 1;
        self.durable = self.end();
        self.publish_segments();
        let old = old
            .into_iter()
            .filter(|s| (s.base_offset, s.base_raft_index) != (next.offset, next.raft_index))
            .collect();
        Ok(crate::expired::Expired::of(old))
    }
}
