//! Where a group's replicas live.

/// Replicas of `group` among `nodes`: every node when `rf` is 0 or covers
/// the cluster, else `rf` nodes chosen by rendezvous hashing on the group id
/// (stable as nodes come and go: a node joining or leaving moves only the
/// groups it wins or held). Every node comes in the configuration's order;
/// a subset sorted by id.
pub fn replicas(nodes: &[u64], group: u64, rf: usize) -> Vec<u64> {
    let mut ids = nodes.to_vec();
    if rf == 0 || rf >= ids.len() {
        return ids;
    }
    ids.sort_by_key(|id| {
        std::cmp::Reverse(xxhash_rust::xxh3::xxh3_64(&[group.to_le_bytes(), id.to_le_bytes()].concat()))
    });
    ids.truncate(rf);
    ids.sort_unstable();
    ids
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// `rf` distinct members of the cluster, the same on every call, and
        /// a node leaving moves only the groups it held.
        #[test]
        fn rendezvous_placement_is_stable(group in any::<u64>(), n in 1usize..8, rf in 0usize..9, gone in 0usize..8) {
            let nodes: Vec<u64> = (1..=n as u64).collect();
            let a = replicas(&nodes, group, rf);
            prop_assert_eq!(&a, &replicas(&nodes, group, rf));
            let want = if rf == 0 || rf >= n { n } else { rf };
            prop_assert_eq!(a.len(), want);
            prop_assert!(a.windows(2).all(|w| w[0] < w[1]) && a.iter().all(|x| nodes.contains(x)));
            let gone = nodes[gone % n];
            if rf > 0 && rf < n - 1 && !a.contains(&gone) {
                let rest: Vec<u64> = nodes.iter().copied().filter(|x| *x != gone).collect();
                prop_assert_eq!(replicas(&rest, group, rf), a);
            }
        }
    }
}
