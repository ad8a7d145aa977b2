//! Reading batches and records without copying: [`RecordBatch`] (one
//! whole batch, its bytes shared), [`Records`] (its records, as slices of
//! those bytes), [`Batches`] (consecutive batches split apart), and the
//! record framing the validation gate walks too. Parsing never panics and
//! never allocates more than the bytes can justify. A compressed batch's
//! records are decompressed once, when [`RecordBatch::records`] is called,
//! into a buffer of at most [`MAX_RECORDS_BYTES_READ`] that they then share.

use bytes::Bytes;

use super::compression::{self, Compression, MAX_RECORDS_BYTES_READ};
use super::{BatchHeader, HEADER_BYTES, compute_crc};
use crate::error::BatchError;
use crate::types::Offset;
use crate::varint;

/// Positions of one record's parts inside its encoding.
pub(crate) struct RecordFrame {
    pub(crate) total_bytes: usize,
    pub(crate) timestamp_delta: i64,
    pub(crate) offset_delta: i32,
    /// Position and length of the key inside the record's bytes.
    pub(crate) key: Option<(usize, usize)>,
    /// Position and length of the value; `None` is a tombstone.
    pub(crate) value: Option<(usize, usize)>,
    headers_at: usize,
    header_count: usize,
}

/// A cursor over one record's bytes that fails with the record's position.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    record: u32,
}

impl Cursor<'_> {
    fn fail(&self, reason: &'static str) -> BatchError {
        BatchError::CorruptRecord {
            record: self.record,
            reason,
        }
    }
    fn varint(&mut self, what: &'static str) -> Result<i32, BatchError> {
        let (v, n) = varint::decode_i32(&self.buf[self.pos..]).ok_or_else(|| self.fail(what))?;
        self.pos += n;
        Ok(v)
    }
    fn varlong(&mut self, what: &'static str) -> Result<i64, BatchError> {
        let (v, n) = varint::decode_i64(&self.buf[self.pos..]).ok_or_else(|| self.fail(what))?;
        self.pos += n;
        Ok(v)
    }
    /// A length-prefixed byte string: `None` for length -1.
    fn bytes(&mut self, what: &'static str) -> Result<Option<(usize, usize)>, BatchError> {
        let len = self.varint(what)?;
        if len == -1 {
            return Ok(None);
        }
        let len = usize::try_from(len).map_err(|_| self.fail(what))?;
        if len > self.buf.len() - self.pos {
            return Err(self.fail(what));
        }
        let at = self.pos;
        self.pos += len;
        Ok(Some((at, len)))
    }
}

/// Parses the frame of the record at the front of `buf` (the remaining body),
/// checking that every field fits exactly inside the record's length.
pub(crate) fn parse_record_frame(buf: &[u8], record: u32) -> Result<RecordFrame, BatchError> {
    let (len, n) = varint::decode_i32(buf).ok_or(BatchError::CorruptRecord {
        record,
        reason: "bad record length",
    })?;
    let len = usize::try_from(len).map_err(|_| BatchError::CorruptRecord {
        record,
        reason: "negative record length",
    })?;
    if len > buf.len() - n {
        return Err(BatchError::CorruptRecord {
            record,
            reason: "record length runs past the batch",
        });
    }
    let mut c = Cursor {
        buf: &buf[..n + len],
        pos: n,
        record,
    };
    if c.pos >= c.buf.len() || c.buf[c.pos] != 0 {
        return Err(c.fail("bad record attributes"));
    }
    c.pos += 1;
    let timestamp_delta = c.varlong("bad timestamp delta")?;
    let offset_delta = c.varint("bad offset delta")?;
    if offset_delta < 0 {
        return Err(c.fail("negative offset delta"));
    }
    let key = c.bytes("bad key")?;
    let value = c.bytes("bad value")?;
    let header_count = c.varint("bad header count")?;
    let header_count =
        usize::try_from(header_count).map_err(|_| c.fail("negative header count"))?;
    let headers_at = c.pos;
    for _ in 0..header_count {
        if c.bytes("bad header key")?.is_none() {
            return Err(c.fail("null header key"));
        }
        c.bytes("bad header value")?;
    }
    if c.pos != c.buf.len() {
        return Err(c.fail("record length disagrees with its fields"));
    }
    Ok(RecordFrame {
        total_bytes: n + len,
        timestamp_delta,
        offset_delta,
        key,
        value,
        headers_at,
        header_count,
    })
}

/// One whole batch, its bytes shared (a slice of a segment mapping, a network
/// buffer or a `Vec`). Built by [`Batches`] or [`RecordBatch::new`], which
/// check that the bytes are one batch long; the CRC and records are checked by
/// [`RecordBatch::verify_crc`] and while iterating [`RecordBatch::records`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordBatch {
    header: BatchHeader,
    bytes: Bytes,
}

impl RecordBatch {
    /// Takes `bytes` as exactly one batch: the header must decode, pass
    /// [`BatchHeader::check`] and announce exactly `bytes.len()` bytes.
    pub fn new(bytes: Bytes, max_batch_bytes: usize) -> Result<RecordBatch, BatchError> {
        let header = BatchHeader::decode(&bytes)?;
        if header.batch_bytes() != bytes.len() as u64 {
            return Err(BatchError::LengthMismatch {
                declared_bytes: header.batch_bytes(),
                actual_bytes: bytes.len() as u64,
            });
        }
        header.check(max_batch_bytes)?;
        Ok(RecordBatch { header, bytes })
    }

    /// As [`RecordBatch::new`], with the header already decoded (read with
    /// `pread` from the batch's first bytes): nothing reads `bytes`, which
    /// may be pages of a mapping that only the kernel should touch.
    pub fn from_parts(header: BatchHeader, bytes: Bytes) -> Result<RecordBatch, BatchError> {
        if header.batch_bytes() != bytes.len() as u64 {
            return Err(BatchError::LengthMismatch {
                declared_bytes: header.batch_bytes(),
                actual_bytes: bytes.len() as u64,
            });
        }
        header.check(usize::MAX)?;
        Ok(RecordBatch { header, bytes })
    }

    /// The fixed header.
    #[inline]
    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    /// The whole batch, header included.
    #[inline]
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The body after the header: records, or a control batch's payload.
    pub fn body(&self) -> Bytes {
        self.bytes.slice(HEADER_BYTES..)
    }

    /// Checks the CRC against the bytes it covers.
    pub fn verify_crc(&self) -> Result<(), BatchError> {
        let computed = compute_crc(&self.bytes);
        if computed == self.header.crc {
            Ok(())
        } else {
            Err(BatchError::CrcMismatch {
                stored: self.header.crc,
                computed,
            })
        }
    }

    /// Iterates the records, each as zero-copy slices of the batch (of its
    /// decompressed records, for a compressed batch). Yields an error (and
    /// then stops) at the first malformed record, or first thing when a
    /// compressed batch does not decompress within [`MAX_RECORDS_BYTES_READ`].
    pub fn records(&self) -> Records<'_> {
        let (section, pending) = match self.header.compression() {
            Ok(Compression::None) => (self.bytes.slice(HEADER_BYTES..), None),
            Ok(codec) => match compression::decompress(
                codec,
                &self.bytes[HEADER_BYTES..],
                MAX_RECORDS_BYTES_READ,
            ) {
                Ok(records) => (Bytes::from(records), None),
                Err(e) => (Bytes::new(), Some(e)),
            },
            Err(e) => (Bytes::new(), Some(e)),
        };
        Records {
            header: &self.header,
            section,
            pos: 0,
            next: 0,
            failed: false,
            pending,
        }
    }
}

/// A record read back from a batch; key, value and header values share the
/// batch's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The record's offset.
    pub offset: Offset,
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// The key, if any.
    pub key: Option<Bytes>,
    /// The value; `None` is a tombstone.
    pub value: Option<Bytes>,
    /// Headers in the order the producer gave them.
    pub headers: Vec<Header>,
}

/// A record header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The header key, UTF-8 as written by rill producers (not checked on read).
    pub key: Bytes,
    /// The header value, if any.
    pub value: Option<Bytes>,
}

/// Iterator over the records of a [`RecordBatch`].
pub struct Records<'a> {
    header: &'a BatchHeader,
    /// The records section: a slice of the batch, or its decompressed
    /// records.
    section: Bytes,
    pos: usize,
    next: u32,
    failed: bool,
    /// Why the records section could not be had, yielded first.
    pending: Option<BatchError>,
}

impl Iterator for Records<'_> {
    type Item = Result<Record, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(e) = self.pending.take() {
            self.failed = true;
            return Some(Err(e));
        }
        if self.failed || self.next >= self.header.record_count {
            return None;
        }
        let bytes = &self.section;
        let frame = match parse_record_frame(&bytes[self.pos..], self.next) {
            Ok(f) => f,
            Err(e) => {
                self.failed = true;
                return Some(Err(e));
            }
        };
        let base = self.pos;
        let slice = |(at, len): (usize, usize)| bytes.slice(base + at..base + at + len);
        // Header count is bounded by the record's bytes (each header takes at
        // least two), checked by `parse_record_frame` before we allocate.
        let mut headers = Vec::with_capacity(frame.header_count);
        let mut c = Cursor {
            buf: &bytes[base..base + frame.total_bytes],
            pos: frame.headers_at,
            record: self.next,
        };
        for _ in 0..frame.header_count {
            // Cannot fail: the same bytes parsed in `parse_record_frame`.
            let (Ok(Some(k)), Ok(v)) = (c.bytes("bad header key"), c.bytes("bad header value"))
            else {
                self.failed = true;
                return Some(Err(c.fail("bad header")));
            };
            headers.push(Header {
                key: slice(k),
                value: v.map(slice),
            });
        }
        let header = self.header;
        let record = Record {
            offset: Offset(header.base_offset.0.wrapping_add(frame.offset_delta as u64)),
            timestamp_ms: header
                .first_timestamp_ms
                .wrapping_add(frame.timestamp_delta),
            key: frame.key.map(slice),
            value: frame.value.map(slice),
            headers,
        };
        self.pos += frame.total_bytes;
        self.next += 1;
        Some(Ok(record))
    }
}

/// Splits a buffer of consecutive whole batches (a fetch response, a segment
/// read) into [`RecordBatch`]es without copying. Stops with an error at the
/// first batch whose header is bad or whose bytes are cut short.
pub struct Batches {
    bytes: Bytes,
    max_batch_bytes: usize,
    failed: bool,
}

impl Batches {
    /// Iterates the batches in `bytes`, refusing any above `max_batch_bytes`.
    pub fn new(bytes: Bytes, max_batch_bytes: usize) -> Batches {
        Batches {
            bytes,
            max_batch_bytes,
            failed: false,
        }
    }
}

impl Iterator for Batches {
    type Item = Result<RecordBatch, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.bytes.is_empty() {
            return None;
        }
        let result = (|| {
            let header = BatchHeader::decode(&self.bytes)?;
            header.check(self.max_batch_bytes)?;
            let len = header.batch_bytes() as usize;
            if len > self.bytes.len() {
                return Err(BatchError::Truncated {
                    needed_bytes: len,
                    available_bytes: self.bytes.len(),
                });
            }
            Ok(RecordBatch {
                header,
                bytes: self.bytes.split_to(len),
            })
        })();
        self.failed = result.is_err();
        Some(result)
    }
}
