//! How the client's cached view of a topic takes in leader changes: a
//! `NotLeader` hint or a metadata answer moves a partition only to a leader
//! of a newer epoch, so replicas that have not heard of an election cannot
//! send the client back to a leader that is gone.

use rill_client::TopicInfo;
use rill_client::protocol::ErrorCode;
use rill_client::protocol::messages::{NO_BROKER, PartitionMetadata};

fn partition(partition: u32, leader: i32, leader_epoch: u64) -> PartitionMetadata {
    PartitionMetadata {
        partition,
        error: ErrorCode::None,
        leader,
        leader_epoch,
        replicas: vec![1, 2, 3],
        log_start_offset: 0,
        high_watermark: 10,
    }
}

fn topic(id: u8, partitions: Vec<PartitionMetadata>) -> TopicInfo {
    TopicInfo {
        name: "events".into(),
        topic_id: [id; 16],
        partitions,
    }
}

fn leaders(t: &TopicInfo) -> Vec<(i32, u64)> {
    t.partitions
        .iter()
        .map(|p| (p.leader, p.leader_epoch))
        .collect()
}

#[test]
fn a_hint_of_a_newer_epoch_moves_only_its_partition() {
    let mut t = topic(1, vec![partition(0, 1, 4), partition(1, 2, 7)]);
    assert!(t.follow(0, 3, 5));
    assert_eq!(leaders(&t), vec![(3, 5), (2, 7)]);
}

#[test]
fn a_hint_of_the_same_or_an_older_epoch_is_ignored() {
    let mut t = topic(1, vec![partition(0, 1, 4)]);
    assert!(!t.follow(0, 2, 4), "same epoch");
    assert!(!t.follow(0, 2, 3), "older epoch");
    assert_eq!(leaders(&t), vec![(1, 4)]);
}

#[test]
fn a_hint_without_a_leader_or_an_epoch_is_ignored() {
    let mut t = topic(1, vec![partition(0, 1, 4)]);
    assert!(!t.follow(0, NO_BROKER, 9), "no leader named");
    assert!(!t.follow(0, 2, 0), "a guess carries epoch 0");
    assert!(!t.follow(7, 2, 9), "no such partition");
    assert_eq!(leaders(&t), vec![(1, 4)]);
}

#[test]
fn metadata_from_a_broker_that_is_behind_keeps_the_newer_leader() {
    let mut t = topic(1, vec![partition(0, 3, 5), partition(1, 2, 7)]);
    // Partition 0: the answering broker still names the old leader;
    // partition 1: it knows of a newer one.
    t.merge(topic(1, vec![partition(0, 1, 4), partition(1, 1, 8)]));
    assert_eq!(leaders(&t), vec![(3, 5), (1, 8)]);
}

#[test]
fn metadata_takes_everything_but_older_leaders_from_the_answer() {
    let mut t = topic(1, vec![partition(0, 3, 5)]);
    let mut fresh = partition(0, 3, 5);
    fresh.high_watermark = 99;
    t.merge(topic(1, vec![fresh, partition(1, 2, 1)]));
    assert_eq!(t.partitions.len(), 2, "partitions added are taken");
    assert_eq!(t.partitions[0].high_watermark, 99);
}

#[test]
fn a_topic_created_again_under_the_same_name_replaces_what_was_known() {
    let mut t = topic(1, vec![partition(0, 3, 9)]);
    // Terms of the new topic's groups start again from 1.
    t.merge(topic(2, vec![partition(0, 1, 1)]));
    assert_eq!(leaders(&t), vec![(1, 1)]);
    assert_eq!(t.topic_id, [2; 16]);
}

#[test]
fn a_leader_that_failed_a_request_is_replaced_by_the_next_answer_even_a_guess() {
    let mut t = topic(1, vec![partition(0, 3, 5), partition(1, 2, 7)]);
    // Leader 3 is unreachable; a broker holding no replica guesses 1.
    t.forget_leader_epoch(0);
    t.merge(topic(1, vec![partition(0, 1, 0), partition(1, 1, 0)]));
    assert_eq!(leaders(&t), vec![(1, 0), (2, 7)], "only partition 0 forgot");
}
