//! Fuzzes what a broker does with a peer frame payload from another broker:
//! decoding, with small limits so they are hit. Nothing may panic, and a
//! frame that decodes must encode back to exactly the bytes it came from
//! (every byte of the layout has one meaning).
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use rill_replication::wire::{
    FRAME_HEADER_BYTES, WireLimits, decode_frame, encode_frame, encoded_len,
};

const LIMITS: WireLimits = WireLimits {
    frame_bytes_max: 64 << 10,
    messages_max: 16,
    entries_max: 16,
};

fuzz_target!(|data: &[u8]| {
    let payload = Bytes::copy_from_slice(data);
    if let Ok(frame) = decode_frame(payload, &LIMITS) {
        let mut again = BytesMut::new();
        encode_frame(frame.from, &frame.messages, &mut again);
        assert_eq!(&again[..], data, "a decoded frame re-encodes to its bytes");
        let lens: usize = frame.messages.iter().map(|(g, m)| encoded_len(frame.from, *g, m)).sum();
        assert_eq!(
            FRAME_HEADER_BYTES + lens,
            data.len(),
            "encoded_len is exact"
        );
    }
});
