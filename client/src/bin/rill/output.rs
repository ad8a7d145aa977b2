//! How `rill consume` prints a record (`-f/--format`): its value alone, one
//! JSON object, or a kcat-style template.
//!
//! Template tokens: `%t` topic, `%p` partition, `%o` offset, `%k` key, `%v`
//! value (also `%s`, kcat's name for it), `%T` timestamp (ms since the epoch), `%h` headers (`k=v`,
//! comma-separated), `%S` value size and `%K` key size (bytes, -1 when
//! absent), `%%` a `%`; escapes `\n`, `\r`, `\t` and `\\`. A template
//! prints exactly what it says, so it ends with `\n` to print a line per
//! record. Keys, values and header values are written in the
//! `--value-format`; as text, their bytes go out as they are.

use std::io::Write;

use rill_client::ConsumerRecord;

use crate::encoding::ValueFormat;

/// One part of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Piece {
    Literal(Vec<u8>),
    Topic,
    Partition,
    Offset,
    Key,
    Value,
    Timestamp,
    Headers,
    ValueSize,
    KeySize,
}

/// A record's printed form (`-f/--format`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Output {
    /// The value and a newline.
    Value,
    /// One JSON object a line: topic, partition, offset, timestamp, key,
    /// value, headers (`[{key, value}]`).
    Json,
    /// A template; see the module documentation.
    Template(Vec<Piece>),
}

impl Output {
    /// `value`, `json`, or a template (anything else).
    pub(crate) fn parse(text: &str) -> Result<Output, String> {
        match text {
            "value" => Ok(Output::Value),
            "json" => Ok(Output::Json),
            template => parse_template(template).map(Output::Template),
        }
    }

    /// Writes `r` to `out` in this form.
    pub(crate) fn write(
        &self,
        out: &mut impl Write,
        r: &ConsumerRecord,
        format: ValueFormat,
    ) -> std::io::Result<()> {
        match self {
            Output::Value => {
                write_bytes(out, r.value.as_deref().unwrap_or_default(), format)?;
                out.write_all(b"\n")
            }
            Output::Json => {
                let text = |b: Option<&[u8]>| b.map(|b| format.encode(b));
                let headers: Vec<serde_json::Value> = r
                    .headers
                    .iter()
                    .map(|(k, v)| serde_json::json!({ "key": k, "value": text(v.as_deref()) }))
                    .collect();
                let object = serde_json::json!({
                    "topic": r.topic,
                    "partition": r.partition,
                    "offset": r.offset,
                    "timestamp": r.timestamp_ms,
                    "key": text(r.key.as_deref()),
                    "value": text(r.value.as_deref()),
                    "headers": headers,
                });
                writeln!(out, "{object}")
            }
            Output::Template(pieces) => {
                for piece in pieces {
                    write_piece(out, piece, r, format)?;
                }
                Ok(())
            }
        }
    }
}

fn write_bytes(out: &mut impl Write, bytes: &[u8], format: ValueFormat) -> std::io::Result<()> {
    match format {
        ValueFormat::Text => out.write_all(bytes),
        other => out.write_all(other.encode(bytes).as_bytes()),
    }
}

fn size(b: Option<&[u8]>) -> i64 {
    b.map_or(-1, |b| b.len() as i64)
}

fn write_piece(
    out: &mut impl Write,
    piece: &Piece,
    r: &ConsumerRecord,
    format: ValueFormat,
) -> std::io::Result<()> {
    match piece {
        Piece::Literal(bytes) => out.write_all(bytes),
        Piece::Topic => out.write_all(r.topic.as_bytes()),
        Piece::Partition => write!(out, "{}", r.partition),
        Piece::Offset => write!(out, "{}", r.offset),
        Piece::Key => write_bytes(out, r.key.as_deref().unwrap_or_default(), format),
        Piece::Value => write_bytes(out, r.value.as_deref().unwrap_or_default(), format),
        Piece::Timestamp => write!(out, "{}", r.timestamp_ms),
        Piece::Headers => {
            for (i, (k, v)) in r.headers.iter().enumerate() {
                if i > 0 {
                    out.write_all(b",")?;
                }
                out.write_all(k.as_bytes())?;
                out.write_all(b"=")?;
                write_bytes(out, v.as_deref().unwrap_or_default(), format)?;
            }
            Ok(())
        }
        Piece::ValueSize => write!(out, "{}", size(r.value.as_deref())),
        Piece::KeySize => write!(out, "{}", size(r.key.as_deref())),
    }
}

fn parse_template(template: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut literal = Vec::new();
    let mut chars = template.chars();
    while let Some(c) = chars.next() {
        let token = match c {
            '%' => match chars.next() {
                Some('t') => Piece::Topic,
                Some('p') => Piece::Partition,
                Some('o') => Piece::Offset,
                Some('k') => Piece::Key,
                Some('v' | 's') => Piece::Value,
                Some('T') => Piece::Timestamp,
                Some('h') => Piece::Headers,
                Some('S') => Piece::ValueSize,
                Some('K') => Piece::KeySize,
                Some('%') => {
                    literal.push(b'%');
                    continue;
                }
                Some(other) => {
                    return Err(format!(
                        "--format: %{other} is no token (tokens: %t %p %o %k %v %T %h %S %K %%)"
                    ));
                }
                None => return Err("--format ends in a lone %".into()),
            },
            '\\' => {
                match chars.next() {
                    Some('n') => literal.push(b'\n'),
                    Some('r') => literal.push(b'\r'),
                    Some('t') => literal.push(b'\t'),
                    Some('\\') => literal.push(b'\\'),
                    Some(other) => {
                        return Err(format!(
                            "--format: \\{other} is no escape (escapes: \\n \\r \\t \\\\)"
                        ));
                    }
                    None => return Err("--format ends in a lone \\".into()),
                }
                continue;
            }
            c => {
                let mut buf = [0; 4];
                literal.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                continue;
            }
        };
        if !literal.is_empty() {
            pieces.push(Piece::Literal(std::mem::take(&mut literal)));
        }
        pieces.push(token);
    }
    if !literal.is_empty() {
        pieces.push(Piece::Literal(literal));
    }
    if !pieces.iter().any(|p| !matches!(p, Piece::Literal(_))) {
        return Err(format!(
            "--format {template:?} is neither value, json nor a template with a token (%t %p %o %k %v %T %h %S %K)"
        ));
    }
    Ok(pieces)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn record() -> ConsumerRecord {
        ConsumerRecord {
            topic: "t".into(),
            partition: 2,
            offset: 7,
            leader_epoch: 1,
            timestamp_ms: 1_700_000_000_000,
            key: Some(Bytes::from_static(b"k")),
            value: Some(Bytes::from_static(b"v\x00")),
            headers: vec![
                ("h".into(), Some(Bytes::from_static(b"x"))),
                ("n".into(), None),
            ],
        }
    }

    fn printed(format: &str, value_format: ValueFormat) -> Vec<u8> {
        let mut out = Vec::new();
        Output::parse(format)
            .unwrap()
            .write(&mut out, &record(), value_format)
            .unwrap();
        out
    }

    #[test]
    fn a_template_prints_every_token_and_escape_as_kcat_does() {
        assert_eq!(
            printed(
                "%t/%p@%o %k=%v %T [%h] %S %K 100%%\\t.\\n",
                ValueFormat::Text
            ),
            b"t/2@7 k=v\x00 1700000000000 [h=x,n=] 2 1 100%\t.\n"
        );
        assert_eq!(printed("%v\\n", ValueFormat::Hex), b"7600\n");
        assert_eq!(printed("%s", ValueFormat::Text), b"v\x00", "kcat's %s");
        assert_eq!(printed("value", ValueFormat::Base64), b"dgA=\n");
    }

    #[test]
    fn json_carries_headers_and_encodes_binary_values() {
        let line = printed("json", ValueFormat::Base64);
        let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["value"], "dgA=");
        assert_eq!(v["key"], "aw==");
        assert_eq!(
            v["headers"],
            serde_json::json!([{"key": "h", "value": "eA=="}, {"key": "n", "value": null}])
        );
        assert_eq!(v["offset"], 7);
    }

    #[test]
    fn a_template_without_tokens_or_with_unknown_ones_is_refused() {
        for bad in ["plain", "%x", "50%", "\\q", "x\\"] {
            assert!(Output::parse(bad).is_err(), "{bad:?}");
        }
    }
}
