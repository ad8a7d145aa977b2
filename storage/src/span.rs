//! Where a written batch lies in its segment file, so a sender can hand the
//! kernel the file's pages (`sendfile`) instead of copying the bytes.
//!
//! Invariant it relies on: a segment never rewrites a byte it has written
//! (truncation seals the segment at the cut and appends continue in a new
//! file; retention and snapshot installs unlink whole files). Pages a span
//! names therefore hold the batch for as long as the file is open, and the
//! span keeps it open.

use std::fs::File;
use std::sync::Arc;

/// A written batch's place in its segment file.
#[derive(Debug, Clone)]
pub struct FileSpan {
    /// The segment file, kept open by the span.
    pub file: Arc<File>,
    /// Where the batch starts in it, bytes.
    pub offset: u64,
    /// Its length, bytes.
    pub len: u64,
}
