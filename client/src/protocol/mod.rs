//! rill's wire protocol, free of I/O: frames ([`frame`]), headers and API
//! keys ([`header`]), request and response bodies ([`messages`]), error
//! codes ([`error`]) and the primitive encodings ([`wire`]).
//!
//! Every decoder here reads bytes from the network: each checks sizes
//! before allocating, never panics, and is covered by property tests and a
//! fuzz target (`client/fuzz`).

pub mod error;
pub mod frame;
pub mod header;
pub mod messages;
pub mod wire;

pub use error::{DecodeError, ErrorCode};
pub use frame::{
    FrameError, MAX_REQUEST_FRAME_BYTES, MAX_RESPONSE_FRAME_BYTES, RequestFrameError,
    decode_request, decode_response, decode_response_header, encode_error_response, encode_request,
    encode_response, take_frame,
};
pub use header::{ApiKey, RequestHeader, ResponseHeader};
pub use messages::{Request, Response};
