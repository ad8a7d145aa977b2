//! Fuzzes what a broker does with bytes from a client: framing (with a small
//! maximum so the limit is hit), then request decoding; and what a client
//! does with a response of every API in `ApiKey::ALL` (the consumer group
//! APIs included). Nothing may panic, and a request that decodes must
//! encode back to the same frame.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use rill_client::protocol::wire::Reader;
use rill_client::protocol::{
    ApiKey, Response, decode_request, decode_response, encode_request, take_frame,
};

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    while let Ok(Some(payload)) = take_frame(&mut buf, 4096) {
        if let Ok((header, request)) = decode_request(payload.clone()) {
            let again: Vec<u8> = encode_request(&header, &request).iter().flat_map(|p| p.to_vec()).collect();
            assert_eq!(&again[4..], &payload[..], "a decoded request re-encodes to its frame");
        }
    }
    let payload = Bytes::copy_from_slice(data);
    for api in ApiKey::ALL {
        let _ = decode_response(payload.clone(), api);
        let _ = Response::decode(api, &mut Reader::new(payload.clone()));
    }
});
