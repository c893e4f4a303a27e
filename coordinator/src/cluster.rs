//! The cluster this server belongs to (`[cluster]` in the configuration) and
//! its replication node, started on first use or by [`Replication::start`].
//!
//! ```toml
//! [cluster]
//! name = "prod"                      # every node of one cluster the same; nodes refuse
//!                                    # requests of another name ("shardhouse" if absent)
//! node_id = 1
//! raft_listen = "127.0.0.1:9234"     # this node's gRPC (Raft and part transfer) address
//! [[cluster.nodes]]
//! id = 1
//! raft = "127.0.0.1:9234"
//! http = "127.0.0.1:8123"
//! [[cluster.nodes]]
//! id = 2
//! raft = "127.0.0.1:9235"
//! http = "127.0.0.1:8124"
//! ```
//!
//! Without a `[cluster]` section the server is a one-node cluster whose
//! gRPC service listens on an ephemeral loopback port: the same code path,
//! with replication factor 1.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use replication::{NodeConfig, ReplicationNode, TableResolver};

pub use crate::config::{ClusterNode, ClusterSection};
use crate::error::{EngineError, Result};

/// The server's replication: configuration and the node, once started.
pub struct Replication {
    cfg: ClusterSection,
    dir: PathBuf,
    node: tokio::sync::OnceCell<Arc<ReplicationNode>>,
    handle: OnceLock<tokio::runtime::Handle>,
    tables: OnceLock<Arc<dyn TableResolver>>,
}

impl std::fmt::Debug for Replication {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replication").field("node_id", &self.cfg.node_id).finish()
    }
}

impl Replication {
    /// The cluster `cfg` describes, its replication state under `dir`.
    pub fn new(cfg: ClusterSection, dir: PathBuf) -> Self {
        Replication { cfg, dir, node: Default::default(), handle: OnceLock::new(), tables: OnceLock::new() }
    }

    /// How the node finds a table's definition when a peer creates one of
    /// its groups here (the server's catalog); set once, before `start`.
    pub fn set_tables(&self, tables: Arc<dyn TableResolver>) {
        let _ = self.tables.set(tables);
    }

    /// This node's id.
    pub fn node_id(&self) -> u64 {
        self.cfg.node_id
    }

    /// The cluster section.
    pub fn config(&self) -> &ClusterSection {
        &self.cfg
    }

    /// Starts the node (idempotent): its gRPC service and every group it hosts.
    pub async fn start(&self) -> Result<Arc<ReplicationNode>> {
        let _ = self.handle.set(tokio::runtime::Handle::current());
        self.node
            .get_or_try_init(|| async {
                let me = self.cfg.nodes.iter().find(|n| n.id == self.cfg.node_id);
                let listen = match (self.cfg.raft_listen, me) {
                    (Some(a), _) => a,
                    (None, Some(n)) => n.raft.parse().map_err(|e| {
                        EngineError::BadConfig(format!("cluster node {} raft address {}: {e}", n.id, n.raft))
                    })?,
                    (None, None) => SocketAddr::from(([127, 0, 0, 1], 0)),
                };
                let mut nc = NodeConfig::new(self.cfg.node_id, &self.dir, listen);
                nc.peers = self.cfg.nodes.iter().map(|n| (n.id, n.raft.clone())).collect::<BTreeMap<_, _>>();
                nc.cluster = self.cfg.name.clone();
                nc.heartbeat_ms = self.cfg.heartbeat_ms;
                nc.election_timeout_ms = (self.cfg.election_timeout_ms, self.cfg.election_timeout_ms * 2);
                nc.snapshot_logs = self.cfg.snapshot_logs;
                nc.idle_after =
                    (self.cfg.quiesce_after_ms > 0).then(|| Duration::from_millis(self.cfg.quiesce_after_ms));
                let tables = self.tables.get().cloned().unwrap_or_else(|| Arc::new(NoTables));
                let node = ReplicationNode::start(nc, tables).await?;
                tracing::info!(node = self.cfg.node_id, addr = %node.addr(), "replication node started");
                Ok::<_, EngineError>(Arc::new(node))
            })
            .await
            .cloned()
    }

    /// The node if it has started.
    pub fn started(&self) -> Option<Arc<ReplicationNode>> {
        self.node.get().cloned()
    }

    /// Runs a future to completion from synchronous code (table operations
    /// run on blocking threads, merges on their own threads, system tables
    /// on a runtime worker).
    pub fn block_on<F: Future>(&self, f: F) -> Result<F::Output> {
        let handle = match tokio::runtime::Handle::try_current() {
            Ok(h) => h,
            Err(_) => {
                self.handle.get().cloned().ok_or_else(|| EngineError::Task("no runtime for replication".into()))?
            }
        };
        // On a runtime worker (a system table built while planning), hand
        // the worker's other tasks off first: blocking it outright panics.
        Ok(match handle.runtime_flavor() {
            tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(|| handle.block_on(f)),
            _ => handle.block_on(f),
        })
    }

    /// The node, started if needed, from a blocking thread.
    pub fn node_blocking(&self) -> Result<Arc<ReplicationNode>> {
        if let Some(n) = self.started() {
            return Ok(n);
        }
        self.block_on(self.start())?
    }

    /// Replicas of a group: every node when `rf` is 0 or covers the cluster,
    /// else `rf` nodes chosen by rendezvous hashing on the group id (stable
    /// as nodes come and go; the catalog issue replaces this with placement).
    pub fn members(&self, group: u64, rf: usize) -> Vec<u64> {
        crate::placement::replicas(&self.cfg.node_ids(), group, rf)
    }

    /// Stops the node.
    pub async fn shutdown(&self) {
        if let Some(n) = self.started() {
            n.shutdown().await;
        }
    }
}

/// Before the server sets its catalog: no table is known.
struct NoTables;

impl TableResolver for NoTables {
    fn table(&self, _name: &str) -> Option<Arc<storage::Table>> {
        None
    }
}
