//! Primitive encodings of the wire protocol, free of I/O.
//!
//! All integers are little-endian, as in the record batch. A string is a
//! `u16` byte length then UTF-8; a byte string is a `u32` length then the
//! bytes; an array is a `u32` count then the elements; an optional value is
//! a `u8` (0 absent, 1 present) then the value.
//!
//! [`Reader`] never reads past its buffer and never allocates for a count or
//! length before checking that the remaining bytes could hold it, so a frame
//! announcing a billion elements fails at once instead of allocating.

use bytes::{BufMut, Bytes, BytesMut};

use crate::protocol::error::DecodeError;

/// Reads protocol values from the front of a frame body. Byte strings are
/// zero-copy slices of the frame.
#[derive(Debug)]
pub struct Reader {
    buf: Bytes,
    pos: usize,
}

impl Reader {
    /// A reader over `buf`.
    pub fn new(buf: Bytes) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&[u8], DecodeError> {
        if n > self.remaining() {
            return Err(DecodeError::Truncated { what });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    /// A `u8`.
    pub fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }
    /// An `i8`.
    pub fn i8(&mut self, what: &'static str) -> Result<i8, DecodeError> {
        Ok(self.u8(what)? as i8)
    }
    /// A `u16`.
    pub fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(
            self.take(2, what)?.try_into().expect("2 bytes"),
        ))
    }
    /// An `i16`.
    pub fn i16(&mut self, what: &'static str) -> Result<i16, DecodeError> {
        Ok(self.u16(what)? as i16)
    }
    /// A `u32`.
    pub fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(
            self.take(4, what)?.try_into().expect("4 bytes"),
        ))
    }
    /// An `i32`.
    pub fn i32(&mut self, what: &'static str) -> Result<i32, DecodeError> {
        Ok(self.u32(what)? as i32)
    }
    /// A `u64`.
    pub fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(
            self.take(8, what)?.try_into().expect("8 bytes"),
        ))
    }
    /// An `i64`.
    pub fn i64(&mut self, what: &'static str) -> Result<i64, DecodeError> {
        Ok(self.u64(what)? as i64)
    }
    /// 16 raw bytes (a UUID).
    pub fn uuid(&mut self, what: &'static str) -> Result<[u8; 16], DecodeError> {
        Ok(self.take(16, what)?.try_into().expect("16 bytes"))
    }
    /// A UTF-8 string with a `u16` length.
    pub fn string(&mut self, what: &'static str) -> Result<String, DecodeError> {
        let len = self.u16(what)? as usize;
        let raw = self.take(len, what)?;
        std::str::from_utf8(raw)
            .map(str::to_owned)
            .map_err(|_| DecodeError::InvalidUtf8 { what })
    }
    /// A byte string with a `u32` length, as a zero-copy slice.
    pub fn bytes(&mut self, what: &'static str) -> Result<Bytes, DecodeError> {
        let len = self.u32(what)? as usize;
        if len > self.remaining() {
            return Err(DecodeError::Truncated { what });
        }
        let b = self.buf.slice(self.pos..self.pos + len);
        self.pos += len;
        Ok(b)
    }
    /// A byte string written as chunks ([`Writer::shared_bytes`]), as one
    /// zero-copy chunk, or none when empty.
    pub fn chunks(&mut self, what: &'static str) -> Result<Vec<Bytes>, DecodeError> {
        let b = self.bytes(what)?;
        Ok(if b.is_empty() { Vec::new() } else { vec![b] })
    }
    /// An optional value: a presence byte, then the value.
    pub fn option<T>(
        &mut self,
        what: &'static str,
        read: impl FnOnce(&mut Reader) -> Result<T, DecodeError>,
    ) -> Result<Option<T>, DecodeError> {
        match self.u8(what)? {
            0 => Ok(None),
            1 => read(self).map(Some),
            _ => Err(DecodeError::Invalid { what }),
        }
    }
    /// An array: a `u32` count, each element at least `min_element_bytes`
    /// long (checked against the remaining bytes before allocating).
    pub fn array<T>(
        &mut self,
        what: &'static str,
        min_element_bytes: usize,
        mut read: impl FnMut(&mut Reader) -> Result<T, DecodeError>,
    ) -> Result<Vec<T>, DecodeError> {
        let count = self.u32(what)? as usize;
        if count.saturating_mul(min_element_bytes.max(1)) > self.remaining() {
            return Err(DecodeError::Truncated { what });
        }
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            out.push(read(self)?);
        }
        Ok(out)
    }
    /// Fails unless every byte was read.
    pub fn finish(&self) -> Result<(), DecodeError> {
        if self.remaining() == 0 {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes {
                bytes: self.remaining(),
            })
        }
    }
}

/// Appends protocol values to a frame being built. Shared byte strings
/// (record batches borrowed from a segment) are kept as separate parts, not
/// copied, so a response can go to the socket as a vectored write.
#[derive(Debug, Default)]
pub struct Writer {
    parts: Vec<Bytes>,
    buf: BytesMut,
    len: usize,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Self {
        Writer::default()
    }
    /// The encoding as parts to be written one after another.
    pub fn finish_parts(mut self) -> Vec<Bytes> {
        if !self.buf.is_empty() {
            self.parts.push(self.buf.freeze());
        }
        self.parts
    }
    /// The encoding as one buffer (copies only when shared parts were added).
    pub fn finish(self) -> Bytes {
        let mut parts = self.finish_parts();
        match parts.len() {
            0 => Bytes::new(),
            1 => parts.pop().expect("one part"),
            _ => {
                let mut all = BytesMut::with_capacity(parts.iter().map(Bytes::len).sum());
                parts.iter().for_each(|p| all.put_slice(p));
                all.freeze()
            }
        }
    }
    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.len + self.buf.len()
    }
    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// A byte string with a `u32` length made of `chunks` back to back, kept
    /// as shared parts rather than copied.
    pub fn shared_bytes(&mut self, chunks: &[Bytes]) {
        let total: usize = chunks.iter().map(Bytes::len).sum();
        self.u32(total as u32);
        for c in chunks.iter().filter(|c| !c.is_empty()) {
            if !self.buf.is_empty() {
                self.len += self.buf.len();
                self.parts.push(self.buf.split().freeze());
            }
            self.len += c.len();
            self.parts.push(c.clone());
        }
    }
    /// A `u8`.
    pub fn u8(&mut self, v: u8) {
        self.buf.put_u8(v);
    }
    /// An `i8`.
    pub fn i8(&mut self, v: i8) {
        self.buf.put_i8(v);
    }
    /// A `u16`.
    pub fn u16(&mut self, v: u16) {
        self.buf.put_u16_le(v);
    }
    /// An `i16`.
    pub fn i16(&mut self, v: i16) {
        self.buf.put_i16_le(v);
    }
    /// A `u32`.
    pub fn u32(&mut self, v: u32) {
        self.buf.put_u32_le(v);
    }
    /// An `i32`.
    pub fn i32(&mut self, v: i32) {
        self.buf.put_i32_le(v);
    }
    /// A `u64`.
    pub fn u64(&mut self, v: u64) {
        self.buf.put_u64_le(v);
    }
    /// An `i64`.
    pub fn i64(&mut self, v: i64) {
        self.buf.put_i64_le(v);
    }
    /// 16 raw bytes.
    pub fn uuid(&mut self, v: &[u8; 16]) {
        self.buf.put_slice(v);
    }
    /// A string; at most `u16::MAX` bytes (longer ones are cut at a char
    /// boundary, which no valid name or message reaches).
    pub fn string(&mut self, s: &str) {
        let mut end = s.len().min(u16::MAX as usize);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        self.u16(end as u16);
        self.buf.put_slice(&s.as_bytes()[..end]);
    }
    /// A byte string with a `u32` length.
    pub fn bytes(&mut self, b: &[u8]) {
        self.u32(b.len() as u32);
        self.buf.put_slice(b);
    }
    /// An optional value.
    pub fn option<T>(&mut self, v: Option<&T>, write: impl FnOnce(&mut Writer, &T)) {
        match v {
            None => self.u8(0),
            Some(v) => {
                self.u8(1);
                write(self, v);
            }
        }
    }
    /// An array.
    pub fn array<T>(&mut self, items: &[T], mut write: impl FnMut(&mut Writer, &T)) {
        self.u32(items.len() as u32);
        for i in items {
            write(self, i);
        }
    }
}
