//! Frames on the wire, free of I/O: a `u32` little-endian length, then that
//! many bytes of payload (a header and a body).
//!
//! A frame longer than the receiver's maximum is refused as soon as its
//! length prefix is read, before anything is allocated for it: the
//! connection that sent it is closed, and nothing else is disturbed. A
//! request whose header names an API or version this build does not speak
//! gets an error response instead, so old and new peers can talk.

use bytes::{Buf, Bytes, BytesMut};

use crate::protocol::error::{DecodeError, ErrorCode};
use crate::protocol::header::{ApiKey, RequestHeader, ResponseHeader};
use crate::protocol::messages::{Request, Response};
use crate::protocol::wire::{Reader, Writer};

/// Size of the length prefix, bytes.
pub const LENGTH_PREFIX_BYTES: usize = 4;
/// Largest request payload a broker accepts, bytes (16 MiB: several
/// maximum-size batches in one produce).
pub const MAX_REQUEST_FRAME_BYTES: usize = 16 << 20;
/// Largest response payload a client accepts, bytes (64 MiB: a fetch's
/// `max_bytes` plus the one batch it may exceed it by).
pub const MAX_RESPONSE_FRAME_BYTES: usize = 64 << 20;

/// A frame that must close the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The length prefix announces more than the maximum.
    #[error("frame of {announced_bytes} bytes exceeds the maximum of {max_bytes} bytes")]
    TooLarge {
        /// The announced payload size.
        announced_bytes: u64,
        /// The limit in force.
        max_bytes: usize,
    },
}

/// Takes the payload of one whole frame off the front of `buf`, or `None`
/// until it has fully arrived. The length is checked against
/// `max_frame_bytes` before any space is reserved for it.
pub fn take_frame(buf: &mut BytesMut, max_frame_bytes: usize) -> Result<Option<Bytes>, FrameError> {
    if buf.len() < LENGTH_PREFIX_BYTES {
        return Ok(None);
    }
    let len = u32::from_le_bytes(buf[..LENGTH_PREFIX_BYTES].try_into().expect("4 bytes")) as usize;
    if len > max_frame_bytes {
        return Err(FrameError::TooLarge {
            announced_bytes: len as u64,
            max_bytes: max_frame_bytes,
        });
    }
    let total = LENGTH_PREFIX_BYTES + len;
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    buf.advance(LENGTH_PREFIX_BYTES);
    Ok(Some(buf.split_to(len).freeze()))
}

/// Prepends the length prefix to an encoded payload's parts.
fn framed(payload: Vec<Bytes>) -> Vec<Bytes> {
    let len: usize = payload.iter().map(Bytes::len).sum();
    let mut parts = Vec::with_capacity(payload.len() + 1);
    parts.push(Bytes::copy_from_slice(&(len as u32).to_le_bytes()));
    parts.extend(payload);
    parts
}

/// Encodes a whole request frame, length prefix first, as parts to write in
/// order (record batches stay shared, not copied).
pub fn encode_request(header: &RequestHeader, request: &Request) -> Vec<Bytes> {
    let mut w = Writer::new();
    header.encode(&mut w);
    request.encode(&mut w);
    framed(w.finish_parts())
}

/// Encodes a whole response frame, length prefix first, as parts.
pub fn encode_response(correlation_id: u32, response: &Response) -> Vec<Bytes> {
    let mut w = Writer::new();
    ResponseHeader {
        correlation_id,
        error: ErrorCode::None,
    }
    .encode(&mut w);
    response.encode(&mut w);
    framed(w.finish_parts())
}

/// Encodes a response frame that carries only a request-level error.
pub fn encode_error_response(correlation_id: u32, error: ErrorCode) -> Vec<Bytes> {
    let mut w = Writer::new();
    ResponseHeader {
        correlation_id,
        error,
    }
    .encode(&mut w);
    framed(w.finish_parts())
}

/// A request frame that could not be turned into a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestFrameError {
    /// The header is fine but names an API or version this build does not
    /// speak: answer with `error`, keep the connection.
    #[error("unsupported request: {error}")]
    Unsupported {
        /// The request's header.
        header: RequestHeader,
        /// `UnsupportedApi` or `UnsupportedVersion`.
        error: ErrorCode,
    },
    /// The frame cannot be parsed: close the connection.
    #[error("malformed request: {0}")]
    Malformed(#[from] DecodeError),
}

/// Decodes a request frame's payload.
pub fn decode_request(payload: Bytes) -> Result<(RequestHeader, Request), RequestFrameError> {
    let mut r = Reader::new(payload);
    let header = RequestHeader::decode(&mut r)?;
    let Some(api) = ApiKey::from_u16(header.api_key) else {
        return Err(RequestFrameError::Unsupported {
            header,
            error: ErrorCode::UnsupportedApi,
        });
    };
    let (min, max) = api.versions();
    if header.api_version < min || header.api_version > max {
        return Err(RequestFrameError::Unsupported {
            header,
            error: ErrorCode::UnsupportedVersion,
        });
    }
    let request = Request::decode(api, &mut r)?;
    Ok((header, request))
}

/// Reads just the header of a response frame's payload (to find which
/// request it answers).
pub fn decode_response_header(payload: &Bytes) -> Result<ResponseHeader, DecodeError> {
    ResponseHeader::decode(&mut Reader::new(payload.clone()))
}

/// Decodes a response frame's payload, answering a request to `api`. The
/// body is `None` when the header carries a request-level error.
pub fn decode_response(
    payload: Bytes,
    api: ApiKey,
) -> Result<(ResponseHeader, Option<Response>), DecodeError> {
    let mut r = Reader::new(payload);
    let header = ResponseHeader::decode(&mut r)?;
    if !header.error.is_ok() {
        r.finish()?;
        return Ok((header, None));
    }
    Ok((header, Some(Response::decode(api, &mut r)?)))
}
