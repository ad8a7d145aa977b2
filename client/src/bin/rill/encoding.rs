//! How record keys and values are written as text on the command line
//! (`--value-format`): as they are (`text`), or binary-safe as base64 or
//! hex. `produce` decodes each input record with it and `consume` encodes
//! each record's key and value, so any bytes round-trip through
//! `--value-format base64` (or `hex`).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use clap::ValueEnum;

/// A record format (`--value-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ValueFormat {
    /// The bytes as they are (consume prints them as UTF-8, replacing
    /// what is not).
    Text,
    /// Standard base64, with padding.
    Base64,
    /// Two hex digits a byte (either case when produced).
    Hex,
}

impl ValueFormat {
    /// The bytes `text` stands for.
    pub(crate) fn decode(self, text: &[u8]) -> Result<Vec<u8>, String> {
        match self {
            ValueFormat::Text => Ok(text.to_vec()),
            ValueFormat::Base64 => STANDARD
                .decode(text)
                .map_err(|e| format!("not base64: {e}")),
            ValueFormat::Hex => decode_hex(text),
        }
    }

    /// `bytes` written in this format.
    pub(crate) fn encode(self, bytes: &[u8]) -> String {
        match self {
            ValueFormat::Text => String::from_utf8_lossy(bytes).into_owned(),
            ValueFormat::Base64 => STANDARD.encode(bytes),
            ValueFormat::Hex => bytes.iter().map(|b| format!("{b:02x}")).collect(),
        }
    }
}

fn decode_hex(text: &[u8]) -> Result<Vec<u8>, String> {
    if text.len() % 2 != 0 {
        return Err(format!("not hex: {} digits, an odd number", text.len()));
    }
    let digit = |c: u8, at: usize| {
        (c as char)
            .to_digit(16)
            .map(|d| d as u8)
            .ok_or_else(|| format!("not hex: {:?} at byte {at}", c as char))
    };
    text.chunks(2)
        .enumerate()
        .map(|(i, pair)| Ok(digit(pair[0], 2 * i)? << 4 | digit(pair[1], 2 * i + 1)?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_round_trips_through_base64_and_hex() {
        let all: Vec<u8> = (0..=255).collect();
        for f in [ValueFormat::Base64, ValueFormat::Hex] {
            assert_eq!(f.decode(f.encode(&all).as_bytes()).unwrap(), all, "{f:?}");
        }
        assert_eq!(ValueFormat::Hex.encode(b"\x00\xff"), "00ff");
        assert_eq!(ValueFormat::Hex.decode(b"00FF").unwrap(), b"\x00\xff");
        assert_eq!(ValueFormat::Base64.encode(b"hi"), "aGk=");
    }

    #[test]
    fn text_that_is_not_in_the_format_is_refused_with_the_reason() {
        assert!(ValueFormat::Hex.decode(b"abc").unwrap_err().contains("odd"));
        assert!(ValueFormat::Hex.decode(b"zz").unwrap_err().contains("'z'"));
        assert!(ValueFormat::Base64.decode(b"a!==").is_err());
        assert_eq!(ValueFormat::Text.decode(b"\xff\x00").unwrap(), b"\xff\x00");
    }
}
