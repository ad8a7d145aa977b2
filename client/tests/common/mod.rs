//! Helpers shared by the protocol tests: request headers, and the parts of
//! an encoded frame joined into its bytes.
#![allow(dead_code)]

use bytes::Bytes;
use rill_client::protocol::RequestHeader;
use rill_client::protocol::header::ApiKey;

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
