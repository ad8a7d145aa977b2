//! Helpers for the consumer group tests: finding a group's coordinator
//! among brokers that may be down or still electing, and the group
//! requests in their plainest form.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rill_client::protocol::messages::*;
use rill_client::protocol::*;

use super::Client;

/// Sends `request` on `client`; `None` when the broker is gone or the
/// answer does not come.
pub fn try_call(client: &mut Client, request: &Request) -> Option<Response> {
    let id = client.try_send(request).ok()?;
    let payload = client.next_frame().ok()??;
    let (h, r) = decode_response(payload, request.api_key()).ok()?;
    (h.correlation_id == id && h.error == ErrorCode::None)
        .then_some(r)
        .flatten()
}

/// A connection to `group`'s coordinator, asked of each of `brokers` in
/// turn until one names a coordinator that answers, for at most 60 s.
pub fn coordinator(brokers: &[SocketAddr], group: &str) -> Client {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        for addr in brokers {
            let Ok(stream) = std::net::TcpStream::connect_timeout(addr, Duration::from_secs(1))
            else {
                continue;
            };
            let mut c = Client::from_stream(stream);
            let find = Request::FindCoordinator(FindCoordinatorRequest {
                group: group.into(),
            });
            if let Some(Response::FindCoordinator(f)) = try_call(&mut c, &find)
                && f.error == ErrorCode::None
            {
                let at = SocketAddr::from(([127, 0, 0, 1], f.port));
                if let Ok(s) = std::net::TcpStream::connect_timeout(&at, Duration::from_secs(1)) {
                    return Client::from_stream(s);
                }
            }
        }
        assert!(Instant::now() < deadline, "no coordinator for {group}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether `e` says to ask for the coordinator again.
pub fn moved(e: ErrorCode) -> bool {
    matches!(
        e,
        ErrorCode::NotCoordinator
            | ErrorCode::CoordinatorNotAvailable
            | ErrorCode::CoordinatorLoadInProgress
    )
}

/// An OffsetCommit of `offsets` (partition, offset) in `topic`.
pub fn commit_request(
    group: &str,
    member: (&str, i32),
    topic: &str,
    offsets: &[(u32, u64)],
    metadata: Option<&str>,
) -> Request {
    Request::OffsetCommit(OffsetCommitRequest {
        group: group.into(),
        member_id: member.0.into(),
        member_epoch: member.1,
        topics: vec![OffsetCommitTopic {
            name: topic.into(),
            partitions: offsets
                .iter()
                .map(|&(partition, offset)| OffsetCommitPartition {
                    partition,
                    offset,
                    leader_epoch: 0,
                    metadata: metadata.map(str::to_string),
                })
                .collect(),
        }],
    })
}

/// The per-partition errors of a commit answer, in order.
pub fn commit_errors(r: Option<Response>) -> Option<Vec<ErrorCode>> {
    match r? {
        Response::OffsetCommit(c) => Some(
            c.topics
                .iter()
                .flat_map(|t| t.partitions.iter().map(|p| p.error))
                .collect(),
        ),
        _ => None,
    }
}

/// An OffsetFetch of every commit of `group`.
pub fn fetch_all(group: &str) -> Request {
    Request::OffsetFetch(OffsetFetchRequest {
        group: group.into(),
        topics: None,
    })
}

/// A heartbeat: join with `subscribed` (member epoch 0), or beat with the
/// member's id, epoch and what it owns.
pub fn heartbeat(
    group: &str,
    member_id: &str,
    member_epoch: i32,
    subscribed: Option<&[&str]>,
    owned: &[TopicPartitions],
) -> Request {
    Request::ConsumerGroupHeartbeat(ConsumerGroupHeartbeatRequest {
        group: group.into(),
        member_id: member_id.into(),
        member_epoch,
        subscribed_topics: subscribed.map(|s| s.iter().map(|t| t.to_string()).collect()),
        owned: Some(owned.to_vec()),
    })
}

/// The answer to a heartbeat, which must come.
pub fn beat(client: &mut Client, request: Request) -> ConsumerGroupHeartbeatResponse {
    match client.call(request) {
        (_, Some(Response::ConsumerGroupHeartbeat(h))) => h,
        other => panic!("a heartbeat answer, not {other:?}"),
    }
}

/// The partitions of `topic` in an assignment.
pub fn partitions_of(assignment: &[TopicPartitions], topic: &str) -> Vec<u32> {
    assignment
        .iter()
        .filter(|t| t.topic == topic)
        .flat_map(|t| t.partitions.iter().copied())
        .collect()
}
