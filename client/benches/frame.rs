//! Micro-benchmarks of the frame codec on the two hot requests: a produce
//! request carrying one 256 KiB batch (encoded by the client, taken off the
//! socket buffer and decoded by the broker) and a fetch response carrying
//! sixteen 64 KiB chunks of segment (encoded by the broker, decoded by the
//! client). Record bytes are shared parts on encode and slices of the frame
//! on decode, so these figures measure the framing and headers, not a copy
//! of the records: a time per frame, flat in the record bytes. Run with `cargo bench -p rill-client --bench frame`.

// Benchmarks are not reachable by users: a failure here should stop the run.
#![allow(clippy::unwrap_used)]

use bytes::{Bytes, BytesMut};
use divan::Bencher;
use rill_client::protocol::messages::{
    FetchPartitionResponse, FetchResponse, FetchTopicResponse, ProducePartition, ProduceRequest,
    ProduceTopic,
};
use rill_client::protocol::{
    ApiKey, ErrorCode, MAX_REQUEST_FRAME_BYTES, MAX_RESPONSE_FRAME_BYTES, Request, RequestHeader,
    Response, decode_request, decode_response, encode_request, encode_response, take_frame,
};

fn main() {
    divan::main();
}

fn produce() -> (RequestHeader, Request) {
    let header = RequestHeader {
        api_key: ApiKey::Produce as u16,
        api_version: 0,
        correlation_id: 7,
        client_id: "bench".into(),
    };
    let request = Request::Produce(ProduceRequest {
        acks: 1,
        timeout_ms: 30_000,
        topics: vec![ProduceTopic {
            name: "events".into(),
            partitions: vec![ProducePartition {
                partition: 0,
                records: vec![Bytes::from(vec![b'r'; 256 * 1024])],
            }],
        }],
    });
    (header, request)
}

fn fetch() -> Response {
    Response::Fetch(FetchResponse {
        topics: vec![FetchTopicResponse {
            name: "events".into(),
            partitions: vec![FetchPartitionResponse {
                partition: 0,
                error: ErrorCode::None,
                leader_hint: -1,
                leader_epoch: 0,
                high_watermark: 1 << 20,
                log_start_offset: 0,
                records: (0..16)
                    .map(|_| Bytes::from(vec![b'r'; 64 * 1024]))
                    .collect(),
            }],
        }],
    })
}

fn joined(parts: &[Bytes]) -> Bytes {
    let mut all = BytesMut::new();
    for p in parts {
        all.extend_from_slice(p);
    }
    all.freeze()
}

#[divan::bench]
fn encode_produce_request(bencher: Bencher<'_, '_>) {
    let (header, request) = produce();
    bencher.bench(|| encode_request(divan::black_box(&header), divan::black_box(&request)));
}

#[divan::bench]
fn take_and_decode_produce_request(bencher: Bencher<'_, '_>) {
    let (header, request) = produce();
    let frame = joined(&encode_request(&header, &request));
    bencher
        .with_inputs(|| BytesMut::from(&frame[..]))
        .bench_local_refs(|buf| {
            let payload = take_frame(buf, MAX_REQUEST_FRAME_BYTES).unwrap().unwrap();
            decode_request(payload).unwrap()
        });
}

#[divan::bench]
fn encode_fetch_response(bencher: Bencher<'_, '_>) {
    let response = fetch();
    bencher.bench(|| encode_response(7, divan::black_box(&response)));
}

#[divan::bench]
fn take_and_decode_fetch_response(bencher: Bencher<'_, '_>) {
    let frame = joined(&encode_response(7, &fetch()));
    bencher
        .with_inputs(|| BytesMut::from(&frame[..]))
        .bench_local_refs(|buf| {
            let payload = take_frame(buf, MAX_RESPONSE_FRAME_BYTES).unwrap().unwrap();
            decode_response(payload, ApiKey::Fetch).unwrap()
        });
}
