//! The client protocol's framing: a frame is taken only once whole, limits
//! and counts are checked before allocating, unknown APIs get an error, and
//! truncated or padded requests are malformed.
#![allow(clippy::unwrap_used)]

mod common;

use bytes::{Bytes, BytesMut};
use common::{concat, header};
use rill_client::protocol::messages::*;
use rill_client::protocol::*;

#[test]
fn a_frame_is_taken_only_once_whole() {
    let frame = concat(&encode_request(
        &header(ApiKey::ApiVersions, 1),
        &Request::ApiVersions,
    ));
    let mut buf = BytesMut::new();
    for (i, b) in frame.iter().enumerate() {
        assert_eq!(
            take_frame(&mut buf, MAX_REQUEST_FRAME_BYTES).unwrap(),
            None,
            "byte {i}"
        );
        buf.extend_from_slice(&[*b]);
    }
    let payload = take_frame(&mut buf, MAX_REQUEST_FRAME_BYTES)
        .unwrap()
        .unwrap();
    assert!(buf.is_empty());
    let (h, r) = decode_request(payload).unwrap();
    assert_eq!((h.correlation_id, r), (1, Request::ApiVersions));
}

#[test]
fn a_frame_announcing_more_than_the_maximum_is_refused_before_allocating() {
    let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3][..]);
    let cap = buf.capacity();
    assert_eq!(
        take_frame(&mut buf, MAX_REQUEST_FRAME_BYTES),
        Err(FrameError::TooLarge {
            announced_bytes: u32::MAX as u64,
            max_bytes: MAX_REQUEST_FRAME_BYTES
        })
    );
    assert_eq!(buf.capacity(), cap, "nothing reserved for the claimed size");
}

#[test]
fn unknown_apis_and_versions_get_an_error_not_a_closed_connection() {
    let mut h = header(ApiKey::Metadata, 3);
    h.api_key = 77;
    let frame = concat(&encode_request(&h, &Request::ApiVersions));
    let err = decode_request(Bytes::copy_from_slice(&frame[4..])).unwrap_err();
    assert!(
        matches!(err, RequestFrameError::Unsupported { error: ErrorCode::UnsupportedApi, ref header } if header.correlation_id == 3)
    );
    let mut h = header(ApiKey::Metadata, 4);
    h.api_version = 9;
    let frame = concat(&encode_request(&h, &Request::ApiVersions));
    let err = decode_request(Bytes::copy_from_slice(&frame[4..])).unwrap_err();
    assert!(matches!(
        err,
        RequestFrameError::Unsupported {
            error: ErrorCode::UnsupportedVersion,
            ..
        }
    ));
    // The error response carries the correlation id and no body.
    let resp = concat(&encode_error_response(4, ErrorCode::UnsupportedVersion));
    let (h, body) = decode_response(Bytes::copy_from_slice(&resp[4..]), ApiKey::Metadata).unwrap();
    assert_eq!(
        (h.correlation_id, h.error, body),
        (4, ErrorCode::UnsupportedVersion, None)
    );
}

#[test]
fn truncated_and_padded_requests_are_malformed() {
    let req = Request::DeleteTopics(DeleteTopicsRequest {
        names: vec!["a".into(), "b".into()],
        timeout_ms: 5,
    });
    let frame = concat(&encode_request(&header(ApiKey::DeleteTopics, 1), &req));
    let payload = &frame[4..];
    for cut in 0..payload.len() {
        let r = decode_request(Bytes::copy_from_slice(&payload[..cut]));
        assert!(
            matches!(r, Err(RequestFrameError::Malformed(_))),
            "cut at {cut}"
        );
    }
    let mut padded = payload.to_vec();
    padded.push(0);
    assert!(matches!(
        decode_request(Bytes::from(padded)),
        Err(RequestFrameError::Malformed(DecodeError::TrailingBytes {
            bytes: 1
        }))
    ));
}

#[test]
fn a_huge_array_count_fails_without_allocating() {
    // A metadata request claiming 2^32-1 topic names in 4 bytes.
    let mut payload = concat(&encode_request(
        &header(ApiKey::Metadata, 1),
        &Request::ApiVersions,
    ))[4..]
        .to_vec();
    payload.extend_from_slice(&[1, 0xff, 0xff, 0xff, 0xff]);
    assert!(matches!(
        decode_request(Bytes::from(payload)),
        Err(RequestFrameError::Malformed(DecodeError::Truncated { .. }))
    ));
}
