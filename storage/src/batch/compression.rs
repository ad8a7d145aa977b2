//! Per-batch compression: the codecs of attribute bits 0-2 and the layout
//! of a compressed body.
//!
//! Codec values are Kafka's: 0 none, 3 lz4, 4 zstd. Kafka's 1 (gzip) and 2
//! (snappy), and 5-7, are refused ([`BatchError::UnsupportedCompression`]).
//!
//! # Byte layout of a compressed batch
//!
//! The 74-byte header stays uncompressed (the broker reads offsets, counts
//! and timestamps from it without decompressing); everything after it, the
//! records section, is compressed as one block:
//!
//! | offset | size | field           | meaning |
//! |-------:|-----:|-----------------|---------|
//! |     74 |    4 | `records_bytes` | `u32` little-endian: size of the records section once decompressed |
//! |     78 |    … | block           | the records section compressed with the header's codec |
//!
//! - lz4 (3): an LZ4 *block* (`lz4_flex::block`), not an LZ4 frame. The
//!   frame format would add its own magic, block framing and an optional
//!   checksum, all redundant here: the batch CRC already covers the
//!   compressed bytes and `records_bytes` already says the decompressed
//!   size, which a block needs to be decoded into a buffer of exactly that
//!   size.
//! - zstd (4): one or more zstd frames (`zstd::bulk`), level 3.
//!
//! The CRC covers the compressed bytes, as Kafka's does, so a follower's
//! framing-and-CRC check never decompresses.
//!
//! # Invariants
//!
//! - Decompression is bounded before it allocates: a `records_bytes` above
//!   the caller's limit is refused ([`BatchError::DecompressedTooLarge`])
//!   without decoding anything, and the output buffer is exactly
//!   `records_bytes` long, so a block that expands further (a decompression
//!   bomb lying about its size) fails on the first byte past it
//!   ([`BatchError::CorruptCompressed`]: what it declared was allowed). zstd's
//!   window is also capped, at the larger of `records_bytes` and 8 MiB
//!   (the largest default window of zstd levels 1 to 19, which streaming
//!   encoders use), bounding the decoder's own memory.
//! - Corrupt compressed data is an error ([`BatchError::CorruptCompressed`]),
//!   never a panic.
//! - Producers compress only when it makes the batch smaller (see
//!   [`crate::builder`]), so a compressed batch is never larger than the
//!   same records uncompressed, and the uncompressed size bound a builder
//!   applies is the one validation applies to `records_bytes`.

use std::fmt;
use std::io::Read;
use std::str::FromStr;

use super::{ATTR_COMPRESSION_MASK, BatchHeader, HEADER_BYTES, LENGTH_FIELD_BYTES, compute_crc};
use crate::error::BatchError;

/// Size of the `records_bytes` prefix of a compressed body, bytes.
pub const RECORDS_BYTES_PREFIX_BYTES: usize = 4;

/// The zstd level producers write: zstd's own default, a good ratio at
/// several hundred MB/s.
pub const ZSTD_LEVEL: i32 = 3;

/// Largest records section any reader decompresses: the broker's largest
/// `max.message.bytes` (16 MiB, one request frame). The log's validation
/// applies the log's own, usually smaller, limit.
pub const MAX_RECORDS_BYTES_READ: usize = 16 << 20;

/// A batch compression codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Compression {
    /// Records stored as they are (codec 0).
    #[default]
    None,
    /// LZ4 block (codec 3).
    Lz4,
    /// Zstandard (codec 4).
    Zstd,
}

impl Compression {
    /// Every codec, for tests and help texts.
    pub const ALL: [Compression; 3] = [Compression::None, Compression::Lz4, Compression::Zstd];

    /// The codec from attribute bits 0-2.
    pub fn from_codec(codec: u8) -> Result<Compression, BatchError> {
        match codec {
            0 => Ok(Compression::None),
            3 => Ok(Compression::Lz4),
            4 => Ok(Compression::Zstd),
            other => Err(BatchError::UnsupportedCompression(other)),
        }
    }

    /// The value of attribute bits 0-2 for this codec.
    pub fn codec(self) -> u8 {
        match self {
            Compression::None => 0,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }

    /// The codec's name as settings and flags spell it.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A codec name that is not one of `none`, `lz4`, `zstd`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown compression {0:?}; use none, lz4 or zstd")]
pub struct UnknownCompression(pub String);

impl FromStr for Compression {
    type Err = UnknownCompression;

    fn from_str(s: &str) -> Result<Compression, UnknownCompression> {
        match s {
            "none" => Ok(Compression::None),
            "lz4" => Ok(Compression::Lz4),
            "zstd" => Ok(Compression::Zstd),
            other => Err(UnknownCompression(other.to_string())),
        }
    }
}

/// Compresses a records section into a compressed body (`records_bytes`
/// prefix, then the block), appended to `out`. `Compression::None` copies
/// the records unchanged.
pub fn compress_into(
    codec: Compression,
    records: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), BatchError> {
    if codec == Compression::None {
        out.extend_from_slice(records);
        return Ok(());
    }
    let records_bytes = u32::try_from(records.len()).map_err(|_| BatchError::CompressFailed {
        codec: codec.name(),
    })?;
    out.extend_from_slice(&records_bytes.to_le_bytes());
    match codec {
        Compression::None => {}
        Compression::Lz4 => out.extend_from_slice(&lz4_flex::block::compress(records)),
        Compression::Zstd => {
            let block = zstd::bulk::compress(records, ZSTD_LEVEL).map_err(|_| {
                BatchError::CompressFailed {
                    codec: codec.name(),
                }
            })?;
            out.extend_from_slice(&block);
        }
    }
    Ok(())
}

/// The `records_bytes` a compressed body declares, checked against
/// `max_records_bytes` before anything is allocated.
pub fn declared_records_bytes(body: &[u8], max_records_bytes: usize) -> Result<usize, BatchError> {
    let prefix: [u8; RECORDS_BYTES_PREFIX_BYTES] = body
        .get(..RECORDS_BYTES_PREFIX_BYTES)
        .and_then(|p| p.try_into().ok())
        .ok_or(BatchError::CorruptCompressed {
            reason: "body too short for its decompressed size",
        })?;
    let declared = u32::from_le_bytes(prefix) as usize;
    if declared > max_records_bytes {
        return Err(BatchError::DecompressedTooLarge {
            records_bytes: declared as u64,
            max_records_bytes: max_records_bytes as u64,
        });
    }
    Ok(declared)
}

/// Decompresses a compressed body (`records_bytes` prefix, then the block)
/// into the records section, refusing one that declares or expands to more
/// than `max_records_bytes`. `Compression::None` copies the body.
pub fn decompress(
    codec: Compression,
    body: &[u8],
    max_records_bytes: usize,
) -> Result<Vec<u8>, BatchError> {
    if codec == Compression::None {
        return Ok(body.to_vec());
    }
    let records_bytes = declared_records_bytes(body, max_records_bytes)?;
    let block = &body[RECORDS_BYTES_PREFIX_BYTES..];
    // Bounded by the check above: never more than the caller's limit.
    let mut out = vec![0u8; records_bytes];
    match codec {
        Compression::None => {}
        Compression::Lz4 => {
            // The output buffer is exactly `records_bytes`: a block that
            // would write past it fails here instead of growing anything.
            let written = lz4_flex::block::decompress_into(block, &mut out).map_err(|_| {
                BatchError::CorruptCompressed {
                    reason: "lz4 block is corrupt or expands past its declared size",
                }
            })?;
            if written != records_bytes {
                return Err(BatchError::CorruptCompressed {
                    reason: "lz4 block is shorter than its declared size",
                });
            }
        }
        Compression::Zstd => {
            let corrupt = |reason| BatchError::CorruptCompressed { reason };
            let mut decoder = zstd::stream::read::Decoder::with_buffer(block)
                .map_err(|_| corrupt("zstd decoder could not start"))?;
            // A frame may ask for a window of up to 2 GiB; none larger than
            // the output is needed, but encoders that do not know the
            // content's size (streaming ones) ask for their level's default
            // window, up to 8 MiB for levels 1 to 19, so the cap is at
            // least that.
            decoder
                .window_log_max(window_log_for(records_bytes))
                .map_err(|_| corrupt("zstd decoder could not start"))?;
            decoder
                .read_exact(&mut out)
                .map_err(|_| corrupt("zstd data is corrupt or shorter than its declared size"))?;
            let mut extra = [0u8; 1];
            match decoder.read(&mut extra) {
                Ok(0) => {}
                // A block lying about its size is corrupt, as an lz4 one
                // overrunning its buffer is: its declared size was allowed.
                Ok(_) => return Err(corrupt("zstd data expands past its declared size")),
                Err(_) => return Err(corrupt("zstd data is corrupt after its declared size")),
            }
        }
    }
    Ok(out)
}

/// The batch `batch` (one whole batch that passed [`validate`](super::validate()) with
/// `max_batch_bytes`) with its records section compressed with `to`
/// instead, its length and CRC stamped again; every other header field is
/// kept. For a topic that forces a codec: the caller validates the result
/// before storing it.
pub fn recompress(
    batch: &[u8],
    to: Compression,
    max_batch_bytes: usize,
) -> Result<Vec<u8>, BatchError> {
    let header = BatchHeader::decode(batch)?;
    let body = batch.get(HEADER_BYTES..).unwrap_or_default();
    let records = decompress(
        header.compression()?,
        body,
        max_batch_bytes.saturating_sub(HEADER_BYTES),
    )?;
    let mut out = Vec::with_capacity(HEADER_BYTES + records.len());
    out.extend_from_slice(&batch[..HEADER_BYTES]);
    compress_into(to, &records, &mut out)?;
    let length = u32::try_from(out.len() - LENGTH_FIELD_BYTES)
        .map_err(|_| BatchError::CompressFailed { codec: to.name() })?;
    let attributes = (header.attributes & !ATTR_COMPRESSION_MASK) | u16::from(to.codec());
    let mut restamped = BatchHeader {
        length,
        attributes,
        ..header
    };
    restamped.encode_into(&mut out);
    restamped.crc = compute_crc(&out);
    restamped.encode_into(&mut out);
    Ok(out)
}

/// The zstd window log allowed when decompressing to `bytes`: the
/// smallest covering them, at least 23 (8 MiB) and at most 31.
fn window_log_for(bytes: usize) -> u32 {
    let needed = usize::BITS - bytes.saturating_sub(1).leading_zeros();
    needed.clamp(23, 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        b"rill rill rill rill rill rill rill rill rill rill rill rill".repeat(20)
    }

    #[test]
    fn every_codec_round_trips() {
        for codec in Compression::ALL {
            let mut body = Vec::new();
            compress_into(codec, &sample(), &mut body).unwrap();
            assert_eq!(decompress(codec, &body, 1 << 20).unwrap(), sample());
            assert_eq!(Compression::from_codec(codec.codec()).unwrap(), codec);
            assert_eq!(codec.name().parse::<Compression>().unwrap(), codec);
        }
    }

    #[test]
    fn other_codecs_are_refused() {
        for codec in [1, 2, 5, 6, 7] {
            assert_eq!(
                Compression::from_codec(codec),
                Err(BatchError::UnsupportedCompression(codec))
            );
        }
        assert!("gzip".parse::<Compression>().is_err());
    }

    /// Golden bytes: the layout above, pinned, so a change of library or
    /// settings that changes what is written is seen.
    #[test]
    fn lz4_golden_bytes() {
        let mut body = Vec::new();
        compress_into(Compression::Lz4, b"abcabcabcabcabcabc", &mut body).unwrap();
        // records_bytes 18, then a sequence of 3 literals "abc" and a
        // match of 4+5 bytes at distance 3, then the last 6 bytes as
        // literals (LZ4 ends every block with literals).
        let expected: &[u8] = &[
            18, 0, 0, 0, // records_bytes
            0x35, b'a', b'b', b'c', 3, 0, // token, literals, match offset
            0x60, b'a', b'b', b'c', b'a', b'b', b'c', // last literals
        ];
        assert_eq!(body, expected);
        assert_eq!(
            decompress(Compression::Lz4, expected, 18).unwrap(),
            b"abcabcabcabcabcabc"
        );
    }

    #[test]
    fn zstd_golden_bytes() {
        let mut body = Vec::new();
        compress_into(Compression::Zstd, b"rill", &mut body).unwrap();
        let expected: &[u8] = &[
            4, 0, 0, 0, // records_bytes
            0x28, 0xb5, 0x2f, 0xfd, // zstd magic
            0x20, 4, // frame header: single segment, content size 4
            0x21, 0, 0, // last block, raw, 4 bytes
            b'r', b'i', b'l', b'l',
        ];
        assert_eq!(body, expected);
        assert_eq!(decompress(Compression::Zstd, expected, 4).unwrap(), b"rill");
    }

    #[test]
    fn zstd_streams_are_read_and_windows_past_the_cap_refused() {
        // A streaming encoder does not know the content size and asks for
        // its level's default window (2 MiB at level 3, 8 MiB at 19),
        // however small the content.
        let records = sample();
        for level in [ZSTD_LEVEL, 19] {
            let mut stream = zstd::stream::write::Encoder::new(Vec::new(), level).unwrap();
            std::io::Write::write_all(&mut stream, &records).unwrap();
            let block = stream.finish().unwrap();
            let mut body = (records.len() as u32).to_le_bytes().to_vec();
            body.extend_from_slice(&block);
            assert_eq!(
                decompress(Compression::Zstd, &body, 1 << 20).unwrap(),
                records,
                "level {level}"
            );
        }
        // One asking for a 128 MiB window to write 1 KiB is refused.
        let mut stream = zstd::stream::write::Encoder::new(Vec::new(), ZSTD_LEVEL).unwrap();
        stream.window_log(27).unwrap();
        std::io::Write::write_all(&mut stream, &records).unwrap();
        let block = stream.finish().unwrap();
        let mut body = (records.len() as u32).to_le_bytes().to_vec();
        body.extend_from_slice(&block);
        assert!(matches!(
            decompress(Compression::Zstd, &body, 1 << 20),
            Err(BatchError::CorruptCompressed { .. })
        ));
        assert_eq!(window_log_for(0), 23);
        assert_eq!(window_log_for(8 << 20), 23);
        assert_eq!(window_log_for((8 << 20) + 1), 24);
        assert_eq!(window_log_for(usize::MAX), 31);
    }

    #[test]
    fn a_declared_size_past_the_limit_is_refused_before_decoding() {
        for codec in [Compression::Lz4, Compression::Zstd] {
            let mut body = Vec::new();
            compress_into(codec, &vec![0u8; 10_000], &mut body).unwrap();
            assert_eq!(
                decompress(codec, &body, 9_999),
                Err(BatchError::DecompressedTooLarge {
                    records_bytes: 10_000,
                    max_records_bytes: 9_999
                })
            );
        }
    }

    #[test]
    fn a_block_expanding_past_its_declared_size_is_refused() {
        for codec in [Compression::Lz4, Compression::Zstd] {
            let mut body = Vec::new();
            compress_into(codec, &vec![7u8; 1 << 20], &mut body).unwrap();
            // Lie: claim 100 bytes.
            body[..4].copy_from_slice(&100u32.to_le_bytes());
            assert!(
                matches!(
                    decompress(codec, &body, 1 << 20),
                    Err(BatchError::CorruptCompressed { .. })
                ),
                "{codec}"
            );
        }
    }

    #[test]
    fn corrupt_blocks_fail_without_panicking() {
        for codec in [Compression::Lz4, Compression::Zstd] {
            let mut body = Vec::new();
            compress_into(codec, &sample(), &mut body).unwrap();
            for i in 0..body.len() {
                for flip in [0x01u8, 0x80, 0xff] {
                    let mut bad = body.clone();
                    bad[i] ^= flip;
                    let _ = decompress(codec, &bad, 1 << 20);
                }
                let _ = decompress(codec, &body[..i], 1 << 20);
            }
        }
    }
}
