//! Properties of the consumer group APIs' codec: every request and response
//! round trips through a frame, a damaged one is refused or decodes
//! cleanly, and decoding arbitrary bytes as any API never panics and never
//! allocates more than a small multiple of the bytes it was given (the
//! allocator of this test binary measures it).
#![allow(clippy::unwrap_used)]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use bytes::Bytes;
use common::{assert_request_round_trips, assert_response_round_trips, concat, header};
use proptest::prelude::*;
use rill_client::protocol::messages::*;
use rill_client::protocol::wire::Reader;
use rill_client::protocol::*;

/// The system allocator, recording the largest allocation asked for on
/// each thread, so a test can see what decoding allocated (other tests'
/// threads do not disturb it).
struct Measured;

thread_local! {
    static LARGEST_ALLOCATION_BYTES: Cell<usize> = const { Cell::new(0) };
}

fn note(bytes: usize) {
    // `try_with`: a thread being torn down has no slot left; nothing to note.
    let _ = LARGEST_ALLOCATION_BYTES.try_with(|l| l.set(l.get().max(bytes)));
}

// SAFETY: every call is passed on to `System` unchanged; only sizes are noted.
unsafe impl GlobalAlloc for Measured {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Measured = Measured;

/// The largest allocation `f` makes on this thread.
fn largest_allocation_bytes(f: impl FnOnce()) -> usize {
    LARGEST_ALLOCATION_BYTES.with(|l| l.set(0));
    f();
    LARGEST_ALLOCATION_BYTES.with(Cell::get)
}

/// What decoding may allocate at most for a frame of `len` bytes: each
/// element's smallest encoding is at least 2 bytes, and its decoded form
/// at most 64 (a few strings and vectors), plus a fixed allowance for the
/// error and small buffers.
fn allocation_bound_bytes(len: usize) -> usize {
    32 * len + 1024
}

fn name() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9._-]{0,20}"
}

fn error() -> impl Strategy<Value = ErrorCode> {
    prop::sample::select(ErrorCode::ALL.to_vec())
}

fn topic_partitions() -> impl Strategy<Value = Vec<TopicPartitions>> {
    prop::collection::vec(
        (name(), prop::collection::vec(any::<u32>(), 0..4))
            .prop_map(|(topic, partitions)| TopicPartitions { topic, partitions }),
        0..3,
    )
}

fn metadata() -> impl Strategy<Value = Option<String>> {
    prop::option::of("[ -~]{0,30}")
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        name().prop_map(|group| Request::FindCoordinator(FindCoordinatorRequest { group })),
        (
            name(),
            name(),
            any::<i32>(),
            prop::collection::vec(
                (
                    name(),
                    prop::collection::vec(
                        (any::<u32>(), any::<u64>(), any::<u64>(), metadata()),
                        0..3
                    )
                ),
                0..3
            )
        )
            .prop_map(|(group, member_id, member_epoch, t)| {
                Request::OffsetCommit(OffsetCommitRequest {
                    group,
                    member_id,
                    member_epoch,
                    topics: t
                        .into_iter()
                        .map(|(name, p)| OffsetCommitTopic {
                            name,
                            partitions: p
                                .into_iter()
                                .map(|(partition, offset, leader_epoch, metadata)| {
                                    OffsetCommitPartition {
                                        partition,
                                        offset,
                                        leader_epoch,
                                        metadata,
                                    }
                                })
                                .collect(),
                        })
                        .collect(),
                })
            }),
        (name(), prop::option::of(topic_partitions()))
            .prop_map(|(group, topics)| Request::OffsetFetch(OffsetFetchRequest { group, topics })),
        (
            name(),
            name(),
            any::<i32>(),
            prop::option::of(prop::collection::vec(name(), 0..4)),
            prop::option::of(topic_partitions())
        )
            .prop_map(
                |(group, member_id, member_epoch, subscribed_topics, owned)| {
                    Request::ConsumerGroupHeartbeat(ConsumerGroupHeartbeatRequest {
                        group,
                        member_id,
                        member_epoch,
                        subscribed_topics,
                        owned,
                    })
                }
            ),
        Just(Request::ListGroups),
        prop::collection::vec(name(), 0..4)
            .prop_map(|groups| Request::DescribeGroups(DescribeGroupsRequest { groups })),
        prop::collection::vec(name(), 0..4)
            .prop_map(|groups| Request::DeleteGroups(DeleteGroupsRequest { groups })),
    ]
}

fn response() -> impl Strategy<Value = Response> {
    prop_oneof![
        (error(), any::<i32>(), name(), any::<u16>()).prop_map(
            |(error, coordinator, host, port)| {
                Response::FindCoordinator(FindCoordinatorResponse {
                    error,
                    coordinator,
                    host,
                    port,
                })
            }
        ),
        prop::collection::vec(
            (name(), prop::collection::vec((any::<u32>(), error()), 0..3)),
            0..3
        )
        .prop_map(|t| Response::OffsetCommit(OffsetCommitResponse {
            topics: t
                .into_iter()
                .map(|(name, p)| OffsetCommitTopicResponse {
                    name,
                    partitions: p
                        .into_iter()
                        .map(|(partition, error)| OffsetCommitPartitionResponse {
                            partition,
                            error
                        })
                        .collect(),
                })
                .collect(),
        })),
        (
            error(),
            prop::collection::vec(
                (
                    name(),
                    prop::collection::vec(
                        (
                            any::<u32>(),
                            any::<i64>(),
                            any::<u64>(),
                            metadata(),
                            error()
                        ),
                        0..3
                    )
                ),
                0..3
            )
        )
            .prop_map(|(error, t)| Response::OffsetFetch(OffsetFetchResponse {
                error,
                topics: t
                    .into_iter()
                    .map(|(name, p)| OffsetFetchTopicResponse {
                        name,
                        partitions: p
                            .into_iter()
                            .map(|(partition, offset, leader_epoch, metadata, error)| {
                                OffsetFetchPartitionResponse {
                                    partition,
                                    offset,
                                    leader_epoch,
                                    metadata,
                                    error,
                                }
                            })
                            .collect(),
                    })
                    .collect(),
            })),
        (
            error(),
            prop::option::of(name()),
            any::<i32>(),
            any::<u32>(),
            prop::option::of(topic_partitions())
        )
            .prop_map(
                |(error, member_id, member_epoch, heartbeat_interval_ms, assignment)| {
                    Response::ConsumerGroupHeartbeat(ConsumerGroupHeartbeatResponse {
                        error,
                        member_id,
                        member_epoch,
                        heartbeat_interval_ms,
                        assignment,
                    })
                }
            ),
        (error(), prop::collection::vec((name(), name()), 0..4)).prop_map(|(error, g)| {
            Response::ListGroups(ListGroupsResponse {
                error,
                groups: g
                    .into_iter()
                    .map(|(group, state)| ListedGroup { group, state })
                    .collect(),
            })
        }),
        prop::collection::vec(
            (
                (name(), error(), name(), any::<i32>(), any::<i32>()),
                prop::collection::vec(
                    (name(), name(), name(), any::<i32>(), topic_partitions()),
                    0..3
                )
            ),
            0..3
        )
        .prop_map(|g| Response::DescribeGroups(DescribeGroupsResponse {
            groups: g
                .into_iter()
                .map(
                    |((group, error, state, group_epoch, assignment_epoch), m)| DescribedGroup {
                        group,
                        error,
                        state,
                        group_epoch,
                        assignment_epoch,
                        members: m
                            .into_iter()
                            .map(|(member_id, client_id, host, member_epoch, assigned)| {
                                DescribedMember {
                                    member_id,
                                    client_id,
                                    host,
                                    member_epoch,
                                    assigned,
                                }
                            })
                            .collect(),
                    }
                )
                .collect(),
        })),
        prop::collection::vec((name(), error()), 0..4).prop_map(|g| {
            Response::DeleteGroups(DeleteGroupsResponse {
                groups: g
                    .into_iter()
                    .map(|(group, error)| DeletedGroup { group, error })
                    .collect(),
            })
        }),
    ]
}

/// Bytes that look like a body of the group APIs more often than uniform
/// noise does: small values and big counts, so decoders reach their nested
/// arrays.
fn body_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![Just(0u8), Just(1u8), Just(0xffu8), any::<u8>()],
        0..200,
    )
}

proptest! {
    #[test]
    fn any_group_request_round_trips_through_a_frame(req in request(), correlation_id in any::<u32>()) {
        assert_request_round_trips(&req, correlation_id);
    }

    #[test]
    fn any_group_response_round_trips_through_a_frame(resp in response(), correlation_id in any::<u32>()) {
        assert_response_round_trips(&resp, correlation_id);
    }

    #[test]
    fn a_damaged_group_request_or_response_is_refused_or_decodes_cleanly(
        req in request(),
        resp in response(),
        at in any::<prop::sample::Index>(),
        xor in 1u8..,
    ) {
        let mut frame = concat(&encode_request(&header(req.api_key(), 1), &req))[4..].to_vec();
        let i = at.index(frame.len());
        frame[i] ^= xor;
        let _ = decode_request(Bytes::from(frame));
        let mut frame = concat(&encode_response(1, &resp))[4..].to_vec();
        let i = at.index(frame.len());
        frame[i] ^= xor;
        let _ = decode_response(Bytes::from(frame), resp.api_key());
    }

    #[test]
    fn decoding_arbitrary_bytes_as_any_api_never_panics_nor_allocates_unbounded(bytes in body_bytes()) {
        let len = bytes.len();
        let payload = Bytes::from(bytes);
        for api in ApiKey::ALL {
            let largest = largest_allocation_bytes(|| {
                let _ = Request::decode(api, &mut Reader::new(payload.clone()));
                let _ = Response::decode(api, &mut Reader::new(payload.clone()));
            });
            prop_assert!(
                largest <= allocation_bound_bytes(len),
                "{:?}: {} bytes allocated at once for {} bytes", api, largest, len
            );
        }
    }
}

#[test]
fn a_claimed_count_allocates_nothing_beyond_what_the_bytes_could_hold() {
    // A DescribeGroups response claiming as many groups as 200 bytes could
    // hold at the smallest, each then cut short: the vector reserved is
    // bounded by the bytes, not by the claim.
    let mut body = (200u32 / 18).to_le_bytes().to_vec();
    body.resize(204, 0);
    let largest = largest_allocation_bytes(|| {
        let _ = Response::decode(ApiKey::DescribeGroups, &mut Reader::new(Bytes::from(body)));
    });
    assert!(largest <= allocation_bound_bytes(204), "{largest}");
    // A million groups: far more than 204 bytes hold, far less than any
    // fixed cap a decoder might trust instead of the bytes left.
    let mut body = (1u32 << 20).to_le_bytes().to_vec();
    body.resize(204, 0);
    let largest = largest_allocation_bytes(|| {
        let _ = Response::decode(ApiKey::DescribeGroups, &mut Reader::new(Bytes::from(body)));
    });
    assert!(largest <= allocation_bound_bytes(204), "{largest}");
}
