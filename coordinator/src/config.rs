//! The cluster this node belongs to, as configured (`[cluster]`): its name,
//! this node's identity and the nodes with their addresses.

use std::net::SocketAddr;

use serde::Deserialize;

/// One node of `[[cluster.nodes]]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClusterNode {
    pub id: u64,
    /// gRPC address (Raft and part transfer).
    pub raft: String,
    /// ClickHouse HTTP address, for operators and tests.
    #[serde(default)]
    pub http: Option<String>,
}

/// `[cluster]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterSection {
    /// The cluster's name, stamped on every inter-node request: a node
    /// refuses requests of another cluster, and requests addressed to
    /// another node id (a peer listed under a wrong address).
    pub name: String,
    pub node_id: u64,
    /// Where this node's gRPC service listens; defaults to its `raft` entry
    /// in `nodes`, or an ephemeral loopback port for a one-node cluster.
    pub raft_listen: Option<SocketAddr>,
    pub nodes: Vec<ClusterNode>,
    pub heartbeat_ms: u64,
    pub election_timeout_ms: u64,
    /// Entries between snapshots of a group.
    pub snapshot_logs: u64,
    /// Quiesce a group (no heartbeats, no election timers) after this long
    /// without writes; 0 never quiesces.
    pub quiesce_after_ms: u64,
}

impl Default for ClusterSection {
    fn default() -> Self {
        ClusterSection {
            name: replication::transport::DEFAULT_CLUSTER.into(),
            node_id: 1,
            raft_listen: None,
            nodes: Vec::new(),
            // openraft wakes each group's tick timer every 1.5 heartbeats even
            // while the group is quiesced; 250 ms keeps 1,000 idle groups near
            // 2 % of a core while a dead leader is replaced in about 1-2 s.
            heartbeat_ms: 250,
            election_timeout_ms: 1000,
            snapshot_logs: 5000,
            quiesce_after_ms: 2000,
        }
    }
}

impl ClusterSection {
    /// Checks the section makes sense.
    pub fn validate(&self) -> Result<(), String> {
        if !replication::transport::valid_cluster_name(&self.name) {
            return Err(format!(
                "cluster.name '{}' must be 1 to 128 printable ASCII characters without spaces",
                self.name
            ));
        }
        if !self.nodes.is_empty() && !self.nodes.iter().any(|n| n.id == self.node_id) {
            return Err(format!("cluster.node_id {} is not among cluster.nodes", self.node_id));
        }
        let mut ids: Vec<u64> = self.nodes.iter().map(|n| n.id).collect();
        ids.sort_unstable();
        if ids.windows(2).any(|w| w[0] == w[1]) {
            return Err("cluster.nodes lists a node id twice".into());
        }
        if self.heartbeat_ms == 0 || self.election_timeout_ms <= self.heartbeat_ms {
            return Err("cluster.election_timeout_ms must exceed cluster.heartbeat_ms > 0".into());
        }
        Ok(())
    }

    /// Every node id, this one included.
    pub fn node_ids(&self) -> Vec<u64> {
        if self.nodes.is_empty() { vec![self.node_id] } else { self.nodes.iter().map(|n| n.id).collect() }
    }
}
