//! Logical clusters of shards, as ClickHouse's `remote_servers` names them:
//! each cluster a list of shards in order, each shard a `weight` (default
//! 1) and its replica nodes. The configuration spells them
//!
//! ```toml
//! [remote_servers.c]
//! shards = [ { weight = 1, replicas = [1, 2] }, { weight = 2, replicas = [3, 4] } ]
//! ```
//!
//! where replicas are node ids of `[[cluster.nodes]]`. [`SlotMap`] is
//! ClickHouse's rule for which shard a row goes to.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::config::ClusterSection;

/// One shard of a logical cluster.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ShardConfig {
    /// Share of the rows a Distributed insert sends here (ClickHouse's
    /// `<weight>`); 0 takes no inserted rows but still answers queries.
    #[serde(default = "one")]
    pub weight: u64,
    /// Node ids of the shard's replicas, in `in_order` load-balancing order.
    pub replicas: Vec<u64>,
}

fn one() -> u64 {
    1
}

/// A logical cluster: `[remote_servers.<name>]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    pub shards: Vec<ShardConfig>,
}

/// Every logical cluster by name.
pub type RemoteServers = BTreeMap<String, ClusterConfig>;

/// Checks every cluster against the nodes the configuration lists. The
/// one-node default (no `[[cluster.nodes]]`) may name only its own node.
pub fn validate(servers: &RemoteServers, nodes: &ClusterSection) -> Result<(), String> {
    for (name, c) in servers {
        if c.shards.is_empty() {
            return Err(format!("remote_servers.{name} has no shards"));
        }
        let mut seen = Vec::new();
        for (i, s) in c.shards.iter().enumerate() {
            if s.replicas.is_empty() {
                return Err(format!("remote_servers.{name}: shard {} has no replicas", i + 1));
            }
            for r in &s.replicas {
                let known =
                    if nodes.nodes.is_empty() { *r == nodes.node_id } else { nodes.nodes.iter().any(|n| n.id == *r) };
                if !known {
                    return Err(format!("remote_servers.{name}: shard {} names node {r}, not in cluster.nodes", i + 1));
                }
                if seen.contains(r) {
                    return Err(format!("remote_servers.{name}: node {r} is in more than one shard or twice in one"));
                }
                seen.push(*r);
            }
        }
        if c.shards.iter().all(|s| s.weight == 0) {
            return Err(format!("remote_servers.{name}: every shard has weight 0, so no shard can take a row"));
        }
    }
    Ok(())
}

/// ClickHouse's weighted slots: a row whose sharding expression is `v`
/// (as UInt64) goes to slot `v % sum(weights)`, and shard `i` (in
/// configuration order) owns the `weights[i]` slots after those of the
/// shards before it. With weights 9 and 10, slots 0–8 are shard 1's and
/// 9–18 shard 2's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotMap {
    /// Exclusive end slot of each shard.
    ends: Vec<u64>,
}

impl SlotMap {
    /// The slot map of shards with `weights`; `None` when they sum to 0.
    pub fn new(weights: &[u64]) -> Option<SlotMap> {
        let mut total = 0u64;
        let ends = weights
            .iter()
            .map(|w| {
                total = total.saturating_add(*w);
                total
            })
            .collect();
        (total > 0).then_some(SlotMap { ends })
    }

    /// Total slots: the sum of the weights.
    pub fn total(&self) -> u64 {
        self.ends.last().copied().unwrap_or(0)
    }

    /// Index (0-based, configuration order) of the shard owning value `v`.
    pub fn shard_of(&self, v: u64) -> usize {
        let slot = v % self.total();
        // The first shard whose range ends after the slot; weight-0 shards
        // have empty ranges and are never chosen.
        self.ends.partition_point(|end| *end <= slot)
    }

    /// Row indices per shard for rows whose sharding values are `values`,
    /// in row order: the split is a function of the values alone, so a
    /// retried block splits the same way.
    pub fn split(&self, values: impl IntoIterator<Item = u64>) -> Vec<Vec<u32>> {
        let mut out = vec![Vec::new(); self.ends.len()];
        for (row, v) in values.into_iter().enumerate() {
            out[self.shard_of(v)].push(row as u32);
        }
        out
    }
}

impl ClusterConfig {
    /// The cluster's slot map.
    pub fn slots(&self) -> Option<SlotMap> {
        SlotMap::new(&self.shards.iter().map(|s| s.weight).collect::<Vec<_>>())
    }

    /// The 1-based number of the shard `node` is a replica of, and its
    /// 1-based replica number there.
    pub fn position_of(&self, node: u64) -> Option<(usize, usize)> {
        self.shards
            .iter()
            .enumerate()
            .find_map(|(i, s)| s.replicas.iter().position(|r| *r == node).map(|j| (i + 1, j + 1)))
    }
}

/// This node's macros: the configured `[macros]`, with `shard` and
/// `replica` filled in when absent — `shard` from the first cluster (by
/// name) that lists this node, or 1 when none does (a node on its own is
/// a one-shard cluster: the zero-config default keeps working where
/// ClickHouse would want `<macros>` configured), `replica` as the node id —
/// so the tutorial's `'/clickhouse/tables/{shard}/hits', '{replica}'` works
/// without per-node configuration.
pub fn macros(configured: &BTreeMap<String, String>, servers: &RemoteServers, node: u64) -> BTreeMap<String, String> {
    let mut m = configured.clone();
    if !m.contains_key("shard") {
        let shard = servers.values().find_map(|c| c.position_of(node)).map_or(1, |(s, _)| s);
        m.insert("shard".into(), shard.to_string());
    }
    m.entry("replica".into()).or_insert_with(|| node.to_string());
    m
}

/// `text` with every `{name}` replaced by its macro; an unknown macro is
/// an error naming it (ClickHouse: "No macro 'x' in config").
pub fn expand_macros(text: &str, macros: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let Some(close) = rest[open..].find('}') else {
            out.push_str(&rest[open..]);
            return Ok(out);
        };
        let name = &rest[open + 1..open + close];
        match macros.get(name) {
            Some(v) => out.push_str(v),
            None => return Err(format!("No macro '{name}' in config while processing substitutions in '{text}'")),
        }
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The docs' example: weights 9 and 10 — slots 0..9 to the first shard,
    /// 9..19 to the second.
    #[test]
    fn weights_9_and_10_split_slots_as_clickhouse_documents() {
        let m = SlotMap::new(&[9, 10]).unwrap();
        assert_eq!(m.total(), 19);
        assert!((0..9).all(|v| m.shard_of(v) == 0));
        assert!((9..19).all(|v| m.shard_of(v) == 1));
        assert_eq!(m.shard_of(19), 0);
        assert_eq!(m.shard_of(u64::MAX), (u64::MAX % 19 >= 9) as usize);
        assert_eq!(SlotMap::new(&[0, 0]), None);
        assert_eq!(
            SlotMap::new(&[0, 3, 0, 1]).unwrap().split([0, 1, 2, 3, 4]),
            vec![vec![], vec![0, 1, 2, 4], vec![], vec![3]]
        );
    }

    proptest! {
        /// The slot rule against a model that lists each slot's owner.
        #[test]
        fn slots_follow_the_model(weights in proptest::collection::vec(0u64..12, 1..8), values in proptest::collection::vec(any::<u64>(), 0..200)) {
            let model: Vec<usize> = weights.iter().enumerate().flat_map(|(i, w)| std::iter::repeat_n(i, *w as usize)).collect();
            match SlotMap::new(&weights) {
                None => prop_assert!(model.is_empty()),
                Some(m) => {
                    let split = m.split(values.iter().copied());
                    for (row, v) in values.iter().enumerate() {
                        let want = model[(*v % model.len() as u64) as usize];
                        prop_assert_eq!(m.shard_of(*v), want);
                        prop_assert!(split[want].contains(&(row as u32)));
                    }
                    prop_assert_eq!(split.iter().map(Vec::len).sum::<usize>(), values.len());
                }
            }
        }
    }

    #[test]
    fn macros_default_to_the_nodes_place_and_expand() {
        let servers: RemoteServers = [(
            "c".to_string(),
            ClusterConfig {
                shards: vec![
                    ShardConfig { weight: 1, replicas: vec![1, 2] },
                    ShardConfig { weight: 2, replicas: vec![3, 4] },
                ],
            },
        )]
        .into();
        let m = macros(&Default::default(), &servers, 4);
        assert_eq!(m["shard"], "2");
        assert_eq!(m["replica"], "4");
        assert_eq!(expand_macros("/clickhouse/tables/{shard}/hits", &m).unwrap(), "/clickhouse/tables/2/hits");
        let e = expand_macros("/t/{layer}-{shard}", &m).unwrap_err();
        assert!(e.contains("No macro 'layer'"), "{e}");
        let configured: BTreeMap<String, String> = [("shard".to_string(), "01".to_string())].into();
        assert_eq!(macros(&configured, &servers, 4)["shard"], "01");
        assert_eq!(macros(&Default::default(), &servers, 9)["shard"], "1", "a node in no cluster is shard 1");
    }

    #[test]
    fn validation_names_the_problem() {
        let nodes = ClusterSection {
            nodes: (1..=3)
                .map(|id| crate::config::ClusterNode { id, raft: format!("127.0.0.1:{id}"), http: None })
                .collect(),
            ..Default::default()
        };
        let one = |replicas: Vec<u64>, weight| ClusterConfig { shards: vec![ShardConfig { weight, replicas }] };
        let check = |c: ClusterConfig| validate(&[("c".to_string(), c)].into(), &nodes);
        assert!(check(one(vec![1, 2], 1)).is_ok());
        assert!(check(one(vec![9], 1)).unwrap_err().contains("node 9"));
        assert!(check(one(vec![1, 1], 1)).unwrap_err().contains("twice"));
        assert!(check(one(vec![1], 0)).unwrap_err().contains("weight 0"));
        assert!(check(one(vec![], 1)).unwrap_err().contains("no replicas"));
    }
}
