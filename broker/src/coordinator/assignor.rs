//! The assignor: which member of a group should own which partition. It
//! is uniform (member counts differ by at most one when every member
//! subscribes to the same topics) and sticky (a partition stays with the
//! member that had it unless balance requires a move), so a member joining
//! or leaving moves as few partitions as possible.
//!
//! Pure and deterministic: the same members, subscriptions, partitions and
//! previous target give the same answer on every broker, so a coordinator
//! that takes over computes what its predecessor would have.
//!
//! Invariants of [`assign`]'s answer, pinned by property tests: every
//! partition of a subscribed topic is assigned to exactly one member that
//! subscribes to its topic; with identical subscriptions counts differ by
//! at most one; a partition that a member kept in the previous target and
//! may keep within its quota is not moved.

use std::collections::{BTreeMap, BTreeSet};

/// A partition of a topic.
pub type TopicPartition = (String, u32);

/// Computes the target assignment: for each member in `subscriptions`, the
/// partitions it should own. `partitions` gives each existing topic's
/// partition count; `previous` is the last target (members that left are
/// simply absent from `subscriptions`).
pub fn assign(
    subscriptions: &BTreeMap<String, BTreeSet<String>>,
    partitions: &BTreeMap<String, u32>,
    previous: &BTreeMap<String, BTreeSet<TopicPartition>>,
) -> BTreeMap<String, BTreeSet<TopicPartition>> {
    let mut target: BTreeMap<String, BTreeSet<TopicPartition>> = subscriptions
        .keys()
        .map(|m| (m.clone(), BTreeSet::new()))
        .collect();
    if subscriptions.is_empty() {
        return target;
    }
    // Every partition some member subscribes to.
    let wanted: BTreeSet<TopicPartition> = subscriptions
        .values()
        .flatten()
        .filter_map(|t| partitions.get(t).map(|n| (t, *n)))
        .flat_map(|(t, n)| (0..n).map(move |p| (t.clone(), p)))
        .collect();
    // Each member keeps what it had that it still subscribes to; a
    // partition an earlier member already kept is not kept twice.
    let mut kept_once = BTreeSet::new();
    for (member, had) in previous {
        let Some(topics) = subscriptions.get(member) else {
            continue;
        };
        let kept = target
            .get_mut(member)
            .expect("members of target are those subscribed");
        kept.extend(
            had.iter()
                .filter(|tp| topics.contains(&tp.0) && wanted.contains(*tp))
                .filter(|tp| kept_once.insert((*tp).clone()))
                .cloned(),
        );
    }
    // Quotas: floor(N/M) each, and N mod M members may hold one more; the
    // members already holding the most keep the extra one (fewest moves).
    let total = wanted.len();
    let members = subscriptions.len();
    let floor = total / members;
    let mut extra = total % members;
    let mut by_count: Vec<(usize, String)> =
        target.iter().map(|(m, p)| (p.len(), m.clone())).collect();
    by_count.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    for (count, member) in by_count {
        let quota = if extra > 0 && count > floor {
            extra -= 1;
            floor + 1
        } else {
            floor
        };
        let held = target.get_mut(&member).expect("member is in target");
        while held.len() > quota {
            // The highest partitions go first: deterministic, and moves
            // the same ones a predecessor would.
            let last = held.iter().next_back().cloned().expect("len > quota >= 0");
            held.remove(&last);
        }
    }
    // Whatever nobody holds goes to the subscribed member holding fewest
    // (ties by member id).
    let held: BTreeSet<TopicPartition> = target.values().flatten().cloned().collect();
    for tp in wanted.into_iter().filter(|tp| !held.contains(tp)) {
        let chosen = subscriptions
            .iter()
            .filter(|(_, topics)| topics.contains(&tp.0))
            .map(|(m, _)| (target[m].len(), m))
            .min()
            .map(|(_, m)| m.clone());
        if let Some(m) = chosen {
            target.get_mut(&m).expect("member is in target").insert(tp);
        }
    }
    target
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn subs(members: &[&str], topics: &[&str]) -> BTreeMap<String, BTreeSet<String>> {
        members
            .iter()
            .map(|m| {
                (
                    m.to_string(),
                    topics.iter().map(|t| t.to_string()).collect(),
                )
            })
            .collect()
    }

    fn counts(t: &BTreeMap<String, BTreeSet<TopicPartition>>) -> Vec<usize> {
        t.values().map(BTreeSet::len).collect()
    }

    #[test]
    fn two_members_split_six_partitions_three_each() {
        let parts = BTreeMap::from([("t".to_string(), 6)]);
        let t = assign(&subs(&["a", "b"], &["t"]), &parts, &BTreeMap::new());
        assert_eq!(counts(&t), vec![3, 3]);
    }

    #[test]
    fn a_third_member_takes_only_what_balance_requires() {
        let parts = BTreeMap::from([("t".to_string(), 6)]);
        let before = assign(&subs(&["a", "b"], &["t"]), &parts, &BTreeMap::new());
        let after = assign(&subs(&["a", "b", "c"], &["t"]), &parts, &before);
        assert_eq!(counts(&after), vec![2, 2, 2]);
        // a and b each give up exactly one partition and keep the rest.
        for m in ["a", "b"] {
            assert_eq!(after[m].difference(&before[m]).count(), 0);
            assert_eq!(before[m].difference(&after[m]).count(), 1);
        }
    }

    #[test]
    fn a_member_that_leaves_has_its_partitions_spread_and_nothing_else_moves() {
        let parts = BTreeMap::from([("t".to_string(), 6)]);
        let before = assign(&subs(&["a", "b", "c"], &["t"]), &parts, &BTreeMap::new());
        let after = assign(&subs(&["a", "b"], &["t"]), &parts, &before);
        assert_eq!(counts(&after), vec![3, 3]);
        for m in ["a", "b"] {
            assert!(before[m].is_subset(&after[m]));
        }
    }

    #[test]
    fn members_only_get_topics_they_subscribe_to() {
        let parts = BTreeMap::from([("t".to_string(), 2), ("u".to_string(), 2)]);
        let mut s = subs(&["a"], &["t"]);
        s.extend(subs(&["b"], &["u"]));
        let t = assign(&s, &parts, &BTreeMap::new());
        assert!(t["a"].iter().all(|tp| tp.0 == "t"));
        assert!(t["b"].iter().all(|tp| tp.0 == "u"));
        assert_eq!(counts(&t), vec![2, 2]);
    }

    #[test]
    fn topics_that_do_not_exist_assign_nothing() {
        let t = assign(
            &subs(&["a"], &["missing"]),
            &BTreeMap::new(),
            &BTreeMap::new(),
        );
        assert!(t["a"].is_empty());
    }

    proptest! {
        #[test]
        fn every_partition_goes_to_one_member_and_counts_differ_by_at_most_one(
            members in 1usize..8, before in 1usize..8, parts in 0u32..40,
        ) {
            let names: Vec<String> = (0..8).map(|i| format!("m{i}")).collect();
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            let partitions = BTreeMap::from([("t".to_string(), parts)]);
            let previous = assign(&subs(&refs[..before], &["t"]), &partitions, &BTreeMap::new());
            let now = assign(&subs(&refs[..members], &["t"]), &partitions, &previous);
            let all: Vec<&TopicPartition> = now.values().flatten().collect();
            let unique: BTreeSet<&TopicPartition> = all.iter().copied().collect();
            prop_assert_eq!(all.len(), parts as usize);
            prop_assert_eq!(unique.len(), parts as usize);
            let c = counts(&now);
            prop_assert!(c.iter().max().unwrap_or(&0) - c.iter().min().unwrap_or(&0) <= 1);
            // Sticky: of the members present in both, the number of
            // partitions that moved away from one is at most what it must
            // give up to reach its quota.
            for (m, had) in &previous {
                if let Some(has) = now.get(m) {
                    let lost = had.difference(has).count();
                    prop_assert!(lost <= had.len().saturating_sub(has.len().min(had.len())));
                }
            }
        }
    }
}
