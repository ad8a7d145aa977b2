//! Deferred syncs ([`Node::defer_syncs`], [`Node::complete_syncs`]) and a
//! follower's acknowledgements: an append's acknowledgement leaves only
//! once the sync round that syncs it has run and been handed back; sync
//! rounds merged while waiting are synced by one run and release every
//! acknowledgement they hold; heartbeats are answered at once unless the
//! term they are answered in is not yet durable; a sync that completes
//! after its group closed, or of a group's earlier life, is handed back to
//! drop and releases nothing; a one-voter group is never deferred.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod helpers;

use helpers::deferred_rounds::{
    acknowledged, append, heartbeat, heartbeat_responses, node, round, synced_follower,
};
use helpers::{GROUP, small_config, voters_123};
use rill_replication::state::{Membership, MemoryStateStore, ReplicaState};
use rill_replication::{BrokerId, ReplicaSpec, SyncJob};

#[test]
fn a_followers_acknowledgement_leaves_only_after_its_deferred_sync() {
    let dir = tempfile::tempdir().unwrap();
    let mut follower = node(2, voters_123(), dir.path());
    follower.step(GROUP, append(1)).unwrap();

    let (syncs, out) = round(&mut follower);
    assert!(!syncs.is_empty(), "a follower of a 3-voter group defers");
    assert!(
        syncs.jobs() > 0,
        "the log (and the new term) wait for the sync round"
    );
    assert_eq!(
        acknowledged(&out),
        Vec::<u64>::new(),
        "nothing before the sync"
    );

    // While the sync round (with the new term's state sync) is out, the group
    // starts no Ready.
    follower.step(GROUP, append(2)).unwrap();
    let (later, out) = round(&mut follower);
    assert!(later.is_empty());
    assert!(out.is_empty());

    let mut out = Vec::new();
    let mut events = Vec::new();
    follower.complete_syncs(syncs.run(), &mut out, &mut events);
    assert_eq!(
        acknowledged(&out),
        vec![1],
        "released by the completed sync"
    );
    assert!(events.is_empty(), "no group failed");
}

#[test]
fn merged_sync_rounds_are_synced_by_one_run_and_release_every_acknowledgement() {
    let dir = tempfile::tempdir().unwrap();
    let mut follower = synced_follower(dir.path());

    follower.step(GROUP, append(2)).unwrap();
    let (mut waiting, out) = round(&mut follower);
    assert!(acknowledged(&out).is_empty());
    follower.step(GROUP, append(3)).unwrap();
    let (later, out) = round(&mut follower);
    assert!(
        !later.is_empty(),
        "deferred: an earlier Ready of the group is still unsynced"
    );
    assert!(acknowledged(&out).is_empty());

    waiting.merge(later);
    assert_eq!(waiting.jobs(), 1, "the newer log plan covers the older");
    assert_eq!(waiting.readies(), 2);
    let mut out = Vec::new();
    follower.complete_syncs(waiting.run(), &mut out, &mut Vec::new());
    assert_eq!(acknowledged(&out), vec![2, 3]);
    let status = follower.status(GROUP).unwrap();
    assert_eq!(status.last_index.get(), 3);
}

#[test]
fn heartbeats_are_answered_while_a_log_sync_is_deferred() {
    let dir = tempfile::tempdir().unwrap();
    let mut follower = synced_follower(dir.path());

    // Term and vote are durable now; entry 2's sync is deferred (it may
    // take seconds behind other writes), and the leader's heartbeat
    // arrives meanwhile.
    follower.step(GROUP, append(2)).unwrap();
    let (waiting, out) = round(&mut follower);
    assert!(!waiting.is_empty());
    assert!(
        acknowledged(&out).is_empty(),
        "the append waits for its sync"
    );
    follower.step(GROUP, heartbeat(1)).unwrap();
    let (later, out) = round(&mut follower);
    assert_eq!(
        heartbeat_responses(&out),
        1,
        "the heartbeat is answered at once, not after the sync"
    );
    assert!(acknowledged(&out).is_empty());

    let mut out = Vec::new();
    let mut merged = waiting;
    merged.merge(later);
    follower.complete_syncs(merged.run(), &mut out, &mut Vec::new());
    assert_eq!(
        acknowledged(&out),
        vec![2],
        "released by the completed sync"
    );
    assert_eq!(heartbeat_responses(&out), 0, "answered once only");
}

#[test]
fn a_heartbeat_in_a_new_term_is_answered_only_once_the_term_is_durable() {
    let dir = tempfile::tempdir().unwrap();
    let mut follower = node(2, voters_123(), dir.path());
    // The follower first hears of term 1 from this heartbeat: the new term
    // must be synced before anything is said in it.
    follower.step(GROUP, heartbeat(0)).unwrap();
    let (syncs, out) = round(&mut follower);
    assert!(!syncs.is_empty(), "the new term's state sync is deferred");
    assert_eq!(
        heartbeat_responses(&out),
        0,
        "nothing before the term is durable"
    );
    let mut out = Vec::new();
    follower.complete_syncs(syncs.run(), &mut out, &mut Vec::new());
    assert_eq!(
        heartbeat_responses(&out),
        1,
        "answered once the term is durable"
    );
}

#[test]
fn a_sync_that_completes_after_its_group_closed_is_handed_back_to_drop() {
    let dir = tempfile::tempdir().unwrap();
    let mut follower = synced_follower(dir.path());
    follower.step(GROUP, append(2)).unwrap();
    let (waiting, _) = round(&mut follower);
    assert!(waiting.jobs() > 0);
    // The topic is deleted while the sync runs.
    follower.remove_group(GROUP).unwrap();
    let mut out = Vec::new();
    follower.complete_syncs(waiting.run(), &mut out, &mut Vec::new());
    assert!(out.is_empty(), "nothing is said for a closed group");
    assert_eq!(
        follower.take_closed_syncs().len(),
        1,
        "the sync, which holds the files open, is the caller's to drop"
    );
    assert!(follower.take_closed_syncs().is_empty(), "handed back once");
}

#[test]
fn a_sync_of_a_group_stopped_and_opened_again_never_completes_the_new_life() {
    // The group's first life defers the sync of entry 2 and stops (say a
    // write failed); the broker opens it again from its files and it takes
    // entry 3, whose Ready is again the first of its raft-rs node.
    let dir = tempfile::tempdir().unwrap();
    let mut follower = synced_follower(dir.path());
    follower.step(GROUP, append(2)).unwrap();
    let (old_life, _) = round(&mut follower);
    assert!(old_life.jobs() > 0);
    follower.remove_group(GROUP).unwrap();
    follower
        .add_group(ReplicaSpec {
            group: GROUP,
            dir: dir.path(),
            log_config: small_config(),
            fsync: true,
            store: Box::new(MemoryStateStore::default()),
            state: ReplicaState::initial(voters_123()),
        })
        .unwrap();
    follower.step(GROUP, append(3)).unwrap();
    let (new_life, out) = round(&mut follower);
    assert!(acknowledged(&out).is_empty());
    assert!(new_life.jobs() > 0, "entry 3 waits for its own sync");

    // The old life's sync round completes: it syncs nothing of entry 3, so it
    // releases nothing, and is handed back as a closed group's.
    let mut out = Vec::new();
    let mut events = Vec::new();
    follower.complete_syncs(old_life.run(), &mut out, &mut events);
    assert!(
        acknowledged(&out).is_empty(),
        "entry 3 is acknowledged only by its own sync"
    );
    assert!(events.is_empty(), "{events:?}");
    assert_eq!(follower.take_closed_syncs().len(), 1);

    follower.complete_syncs(new_life.run(), &mut out, &mut events);
    assert_eq!(acknowledged(&out), vec![3]);
    assert!(events.is_empty(), "{events:?}");
}

#[test]
fn a_one_voter_group_syncs_inside_its_round() {
    let dir = tempfile::tempdir().unwrap();
    let mut alone = node(1, Membership::voters([BrokerId(1)]), dir.path());
    alone.campaign(GROUP).unwrap();
    let mut out = Vec::new();
    let mut events = Vec::new();
    let mut jobs = Vec::new();
    let mut round = alone.start_round(&mut out, &mut events);
    alone.write_round(&mut round, &mut jobs, &mut events);
    let syncs = alone.defer_syncs(&mut round, &mut jobs);
    assert!(syncs.is_empty(), "nothing deferred");
    assert!(!jobs.is_empty(), "its syncs stay in the round");
    let results = jobs.into_iter().map(SyncJob::run).collect();
    alone.finish_round(round, results, &mut out, &mut events);
    assert_eq!(alone.leader(GROUP), Some(BrokerId(1)));
}
