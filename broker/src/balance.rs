//! Where replicas should be: the plan `rill cluster balance`,
//! `remove-broker` and `add-broker` carry out as partition moves
//! (`crate::reassignment`). I/O-free: a function of the cluster image.
//!
//! A plan spreads partition replicas over the brokers that may host them
//! (the cluster's brokers but those removed) so that no two hold counts
//! more than one apart, then spreads preferred leaders (each partition's
//! first replica) the same way among each partition's replicas, moving as
//! few replicas as it can: first every replica off a removed broker, onto
//! the least loaded broker not yet holding one of its partition, then one
//! replica at a time from the most loaded broker to the least loaded,
//! then preferred leaders by reordering a partition's replicas, which
//! moves no data. Partitions already moving count with their target and
//! are left alone. Ties go to the lowest broker id and the first partition
//! in (topic, partition) order, so every broker computes the same plan.

use std::collections::{BTreeMap, BTreeSet};

use rill_replication::BrokerId;

use crate::metadata::ClusterImage;

/// One partition to move.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedMove {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// Its replicas after the move, the preferred leader first.
    pub replicas: Vec<BrokerId>,
}

/// A plan, and the partitions it could not take off removed brokers
/// (every broker that may host a replica holds one of them already).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// The moves, in (topic, partition) order.
    pub moves: Vec<PlannedMove>,
    /// `topic/partition` of each partition left on a removed broker.
    pub stuck: Vec<String>,
}

/// The brokers that may host replicas: the cluster's, but those removed.
pub fn hosts(image: &ClusterImage) -> Vec<BrokerId> {
    image
        .voters
        .iter()
        .copied()
        .filter(|b| !image.removed.contains(b))
        .collect()
}

/// The plan for `image`; see the module documentation.
pub fn plan(image: &ClusterImage) -> Plan {
    let hosts = hosts(image);
    let mut plan = Plan::default();
    if hosts.is_empty() {
        return plan;
    }
    // Every partition not moving, with its replicas as they are.
    let mut layout: BTreeMap<(String, u32), Vec<BrokerId>> = BTreeMap::new();
    let mut count: BTreeMap<BrokerId, usize> = hosts.iter().map(|b| (*b, 0)).collect();
    for t in image.topics.values() {
        for (p, replicas) in t.replicas.iter().enumerate() {
            let p = p as u32;
            let now = match t.moving.get(&p) {
                Some(m) => &m.target,
                None => {
                    layout.insert((t.name.clone(), p), replicas.clone());
                    replicas
                }
            };
            for b in now {
                if let Some(c) = count.get_mut(b) {
                    *c += 1;
                }
            }
        }
    }
    let least_loaded = |count: &BTreeMap<BrokerId, usize>, not_in: &[BrokerId]| {
        count
            .iter()
            .filter(|(b, _)| !not_in.contains(b))
            .min_by_key(|(b, c)| (**c, **b))
            .map(|(b, _)| *b)
    };
    let before = layout.clone();
    // Off removed brokers.
    for ((topic, p), replicas) in layout.iter_mut() {
        for i in 0..replicas.len() {
            if hosts.contains(&replicas[i]) {
                continue;
            }
            match least_loaded(&count, replicas) {
                Some(b) => {
                    replicas[i] = b;
                    *count.get_mut(&b).expect("a host") += 1;
                }
                None => plan.stuck.push(format!("{topic}/{p}")),
            }
        }
    }
    // Replicas spread: from the most loaded to the least, one at a time.
    let total: usize = layout.values().map(Vec::len).sum();
    for _ in 0..total {
        let (&hi, &hi_count) = count
            .iter()
            .max_by_key(|(b, c)| (**c, std::cmp::Reverse(**b)))
            .expect("hosts is not empty");
        let (&lo, &lo_count) = count
            .iter()
            .min_by_key(|(b, c)| (**c, **b))
            .expect("hosts is not empty");
        if hi_count <= lo_count + 1 {
            break;
        }
        let Some(replicas) = layout
            .values_mut()
            .find(|r| r.contains(&hi) && !r.contains(&lo))
        else {
            break;
        };
        let at = replicas.iter().position(|b| *b == hi).expect("found above");
        replicas[at] = lo;
        *count.get_mut(&hi).expect("a host") -= 1;
        *count.get_mut(&lo).expect("a host") += 1;
    }
    // Preferred leaders spread, by reordering replicas.
    let mut leading: BTreeMap<BrokerId, usize> = hosts.iter().map(|b| (*b, 0)).collect();
    for t in image.topics.values() {
        for p in 0..t.partitions() {
            let now = match t.moving.get(&p) {
                Some(m) => &m.target,
                None => &layout[&(t.name.clone(), p)],
            };
            if let Some(c) = now.first().and_then(|b| leading.get_mut(b)) {
                *c += 1;
            }
        }
    }
    for _ in 0..layout.len() {
        let mut improved = false;
        let order: Vec<BrokerId> = {
            let mut v: Vec<(usize, BrokerId)> = leading.iter().map(|(b, c)| (*c, *b)).collect();
            v.sort_by_key(|(c, b)| (std::cmp::Reverse(*c), *b));
            v.into_iter().map(|(_, b)| b).collect()
        };
        'hi: for hi in order {
            let hi_count = leading[&hi];
            for replicas in layout.values_mut() {
                if replicas.first() != Some(&hi) {
                    continue;
                }
                let best = replicas[1..]
                    .iter()
                    .enumerate()
                    .filter(|(_, b)| leading.get(b).is_some_and(|c| c + 1 < hi_count))
                    .min_by_key(|(_, b)| (leading[b], **b))
                    .map(|(i, b)| (i + 1, *b));
                if let Some((at, lo)) = best {
                    replicas.swap(0, at);
                    *leading.get_mut(&hi).expect("a host") -= 1;
                    *leading.get_mut(&lo).expect("a host") += 1;
                    improved = true;
                    break 'hi;
                }
            }
        }
        if !improved {
            break;
        }
    }
    plan.moves = layout
        .into_iter()
        .filter(|(k, r)| before.get(k) != Some(r))
        .map(|((topic, partition), replicas)| PlannedMove {
            topic,
            partition,
            replicas,
        })
        .collect();
    plan
}

/// Replicas per broker among `hosts` once `plan` is carried out (for
/// tests and reports).
pub fn replica_counts(image: &ClusterImage, plan: &Plan) -> BTreeMap<BrokerId, usize> {
    let moved: BTreeMap<(&str, u32), &Vec<BrokerId>> = plan
        .moves
        .iter()
        .map(|m| ((m.topic.as_str(), m.partition), &m.replicas))
        .collect();
    let mut count = BTreeMap::new();
    for t in image.topics.values() {
        for (p, replicas) in t.replicas.iter().enumerate() {
            let p = p as u32;
            let now = moved
                .get(&(t.name.as_str(), p))
                .copied()
                .or(t.moving.get(&p).map(|m| &m.target))
                .unwrap_or(replicas);
            for b in now {
                *count.entry(*b).or_insert(0) += 1;
            }
        }
    }
    count
}

/// Brokers holding no replica and no place in a move: removed ones among
/// them may stop.
pub fn holding_nothing(image: &ClusterImage) -> BTreeSet<BrokerId> {
    let mut holding = BTreeSet::new();
    for t in image.topics.values() {
        for r in &t.replicas {
            holding.extend(r.iter().copied());
        }
        for m in t.moving.values() {
            holding.extend(m.target.iter().copied());
        }
    }
    image
        .voters
        .iter()
        .copied()
        .filter(|b| !holding.contains(b))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::{MetadataCommand, Outcome};

    fn image(brokers: u64, topics: &[(&str, u32, u16)]) -> ClusterImage {
        let mut image = ClusterImage::new((1..=brokers).map(BrokerId).collect());
        for (i, (name, partitions, rf)) in topics.iter().enumerate() {
            let cmd = MetadataCommand::CreateTopic {
                name: name.to_string(),
                id: format!("00000000-0000-4000-8000-{i:012}"),
                partitions: *partitions,
                replication_factor: *rf,
                configs: vec![],
                max_partition_replicas: None,
            };
            assert_eq!(image.apply(&cmd), Outcome::Done);
        }
        image
    }

    fn apply(image: &mut ClusterImage, plan: &Plan) {
        for m in &plan.moves {
            image.topics.get_mut(&m.topic).unwrap().replicas[m.partition as usize] =
                m.replicas.clone();
        }
    }

    fn spread(counts: impl Iterator<Item = usize>) -> usize {
        let v: Vec<usize> = counts.collect();
        v.iter().max().unwrap() - v.iter().min().unwrap()
    }

    #[test]
    fn a_balanced_cluster_needs_no_moves() {
        let image = image(3, &[("a", 6, 3), ("b", 3, 2)]);
        assert_eq!(plan(&image), Plan::default());
    }

    #[test]
    fn a_new_broker_takes_its_share_of_replicas_and_preferred_leaders() {
        let mut img = image(3, &[("a", 12, 3)]);
        // A fourth broker joins the hosts.
        img.voters.push(BrokerId(4));
        let p = plan(&img);
        assert!(p.stuck.is_empty());
        let counts = replica_counts(&img, &p);
        assert_eq!(counts[&BrokerId(4)], 9, "{counts:?}");
        assert!(spread(counts.values().copied()) <= 1, "{counts:?}");
        apply(&mut img, &p);
        let mut leaders: BTreeMap<BrokerId, usize> = BTreeMap::new();
        for r in &img.topics["a"].replicas {
            let mut distinct = r.clone();
            distinct.sort();
            distinct.dedup();
            assert_eq!(distinct.len(), 3, "a partition on a broker twice: {r:?}");
            *leaders.entry(r[0]).or_default() += 1;
        }
        assert_eq!(leaders.values().copied().collect::<Vec<_>>(), [3, 3, 3, 3]);
        // Carried out, the plan is stable.
        assert_eq!(plan(&img).moves, []);
    }

    #[test]
    fn a_removed_broker_gives_up_every_replica() {
        let mut img = image(4, &[("a", 6, 3)]);
        img.removed.insert(BrokerId(2));
        let p = plan(&img);
        assert!(p.stuck.is_empty());
        apply(&mut img, &p);
        assert!(holding_nothing(&img).contains(&BrokerId(2)));
        let counts = replica_counts(&img, &Plan::default());
        assert_eq!(counts.get(&BrokerId(2)), None);
        assert!(spread(counts.values().copied()) <= 1, "{counts:?}");
    }

    #[test]
    fn a_replica_with_nowhere_to_go_is_reported_stuck() {
        let mut img = image(3, &[("a", 1, 3)]);
        img.removed.insert(BrokerId(3));
        let p = plan(&img);
        assert_eq!(p.stuck, ["a/0"]);
    }
}
