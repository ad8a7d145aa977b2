//! Helpers shared by the protocol tests: request headers, and the parts of
//! an encoded frame joined into its bytes.
#![allow(dead_code)]

use bytes::{Bytes, BytesMut};
use rill_client::protocol::header::ApiKey;
use rill_client::protocol::{
    ErrorCode, MAX_REQUEST_FRAME_BYTES, MAX_RESPONSE_FRAME_BYTES, Request, RequestHeader, Response,
    decode_request, decode_response, decode_response_header, encode_request, encode_response,
    take_frame,
};

/// A frame's parts joined, as they go to the socket.
pub fn concat(parts: &[Bytes]) -> Vec<u8> {
    parts.iter().flat_map(|p| p.to_vec()).collect()
}

/// A version 0 request header for `api` from client "c".
pub fn header(api: ApiKey, correlation_id: u32) -> RequestHeader {
    RequestHeader {
        api_key: api as u16,
        api_version: 0,
        correlation_id,
        client_id: "c".into(),
    }
}

/// Checks that `req`, framed with a header of `correlation_id`, reads back
/// whole and alone from its frame (the property tests' round trip).
pub fn assert_request_round_trips(req: &Request, correlation_id: u32) {
    let h = header(req.api_key(), correlation_id);
    let mut buf = BytesMut::from(&concat(&encode_request(&h, req))[..]);
    let payload = take_frame(&mut buf, MAX_REQUEST_FRAME_BYTES)
        .expect("a whole frame")
        .expect("a frame");
    assert!(buf.is_empty(), "one frame, nothing after it");
    let (h2, req2) = decode_request(payload).expect("decodes");
    assert_eq!(h2, h);
    assert_eq!(&req2, req);
}

/// Checks that `resp`, framed with `correlation_id`, reads back whole.
pub fn assert_response_round_trips(resp: &Response, correlation_id: u32) {
    let mut buf = BytesMut::from(&concat(&encode_response(correlation_id, resp))[..]);
    let payload = take_frame(&mut buf, MAX_RESPONSE_FRAME_BYTES)
        .expect("a whole frame")
        .expect("a frame");
    assert_eq!(
        decode_response_header(&payload)
            .expect("a header")
            .correlation_id,
        correlation_id
    );
    let (h, resp2) = decode_response(payload, resp.api_key()).expect("decodes");
    assert_eq!(h.correlation_id, correlation_id);
    assert_eq!(h.error, ErrorCode::None);
    assert_eq!(resp2.as_ref(), Some(resp));
}
