//! Zig-zag LEB128 variable-length integers, as in Kafka's v2 record format
//! (and protobuf's `sint32`/`sint64`).
//!
//! Decoding is bounded: at most 5 bytes for an `i32` and 10 for an `i64`, and
//! never reads past the slice it is given. Encoding appends to a `Vec`.

/// Bytes `encode_i64` writes for `v`.
#[inline]
pub fn encoded_len_i64(v: i64) -> usize {
    let z = zigzag64(v);
    // One byte per started 7-bit group; zero still takes one byte.
    let bits = 64 - (z | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Bytes `encode_i32` writes for `v`.
#[inline]
pub fn encoded_len_i32(v: i32) -> usize {
    encoded_len_i64(i64::from(v))
}

#[inline]
fn zigzag64(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// Appends `v` zig-zag encoded.
#[inline]
pub fn encode_i64(buf: &mut Vec<u8>, v: i64) {
    let mut z = zigzag64(v);
    while z >= 0x80 {
        buf.push((z as u8) | 0x80);
        z >>= 7;
    }
    buf.push(z as u8);
}

/// Appends `v` zig-zag encoded (the same bytes as `encode_i64(v as i64)`).
#[inline]
pub fn encode_i32(buf: &mut Vec<u8>, v: i32) {
    encode_i64(buf, i64::from(v));
}

/// Decodes an `i64` from the front of `buf`: the value and the bytes used, or
/// `None` when `buf` ends first or the encoding runs past 10 bytes.
#[inline]
pub fn decode_i64(buf: &[u8]) -> Option<(i64, usize)> {
    let mut z: u64 = 0;
    for (i, &b) in buf.iter().enumerate().take(10) {
        z |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            // The 10th byte may only carry the top bit of a u64.
            if i == 9 && b > 1 {
                return None;
            }
            return Some((((z >> 1) as i64) ^ -((z & 1) as i64), i + 1));
        }
    }
    None
}

/// Decodes an `i32`: as [`decode_i64`], at most 5 bytes, and `None` when the
/// value does not fit in 32 bits.
#[inline]
pub fn decode_i32(buf: &[u8]) -> Option<(i32, usize)> {
    let head = &buf[..buf.len().min(5)];
    let (v, n) = decode_i64(head)?;
    i32::try_from(v).ok().map(|v| (v, n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_encodings_match_kafka() {
        let cases: &[(i64, &[u8])] = &[
            (0, &[0x00]),
            (-1, &[0x01]),
            (1, &[0x02]),
            (-64, &[0x7f]),
            (64, &[0x80, 0x01]),
            (300, &[0xd8, 0x04]),
        ];
        for &(v, bytes) in cases {
            let mut buf = Vec::new();
            encode_i64(&mut buf, v);
            assert_eq!(buf, bytes, "encoding of {v}");
            assert_eq!(decode_i64(bytes), Some((v, bytes.len())));
        }
    }

    #[test]
    fn overlong_and_truncated_inputs_are_refused() {
        assert_eq!(decode_i64(&[0x80; 11]), None);
        assert_eq!(decode_i64(&[0x80, 0x80]), None);
        assert_eq!(decode_i64(&[]), None);
        assert_eq!(decode_i32(&[0xff, 0xff, 0xff, 0xff, 0x7f]), None);
    }

    proptest! {
        #[test]
        fn any_i64_round_trips(v in any::<i64>()) {
            let mut buf = Vec::new();
            encode_i64(&mut buf, v);
            prop_assert_eq!(buf.len(), encoded_len_i64(v));
            prop_assert_eq!(decode_i64(&buf), Some((v, buf.len())));
        }

        #[test]
        fn any_i32_round_trips(v in any::<i32>()) {
            let mut buf = Vec::new();
            encode_i32(&mut buf, v);
            prop_assert_eq!(buf.len(), encoded_len_i32(v));
            prop_assert_eq!(decode_i32(&buf), Some((v, buf.len())));
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..16)) {
            let _ = decode_i64(&bytes);
            let _ = decode_i32(&bytes);
        }
    }
}
