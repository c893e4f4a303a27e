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
//!
//! The node runs on a runtime of its own (threads named `raft`): Raft
//! heartbeats, elections, log replication and part transfer never wait
//! behind HTTP requests or DataFusion execution on the server's runtime.
//! Every call into the node goes through [`Replication::run`], so whatever
//! it spawns (a group's Raft core, its commit queue, a gRPC connection)
//! lives there too.

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
    runtime: OnceLock<RaftRuntime>,
    tables: OnceLock<Arc<dyn TableResolver>>,
    /// The applier of the metadata group (distributed DDL), started with
    /// the node when set.
    meta: OnceLock<Arc<dyn replication::meta_group::MetaApplier>>,
}

/// The node's runtime; dropped without waiting (the server may drop its
/// replication from inside another runtime, where blocking is refused).
struct RaftRuntime(Option<tokio::runtime::Runtime>);

impl Drop for RaftRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// Worker threads of the Raft runtime: its work is small and latency-bound.
const RAFT_THREADS: usize = 2;

impl std::fmt::Debug for Replication {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replication").field("node_id", &self.cfg.node_id).finish()
    }
}

impl Replication {
    /// The cluster `cfg` describes, its replication state under `dir`.
    pub fn new(cfg: ClusterSection, dir: PathBuf) -> Self {
        Replication {
            cfg,
            dir,
            node: Default::default(),
            runtime: OnceLock::new(),
            tables: OnceLock::new(),
            meta: OnceLock::new(),
        }
    }

    /// The Raft runtime's handle, the runtime built on first use.
    pub fn raft_runtime(&self) -> Result<tokio::runtime::Handle> {
        if let Some(rt) = self.runtime.get().and_then(|r| r.0.as_ref()) {
            return Ok(rt.handle().clone());
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(RAFT_THREADS)
            .thread_name(format!("raft-{}", self.cfg.node_id))
            .enable_all()
            .build()
            .map_err(|e| EngineError::Task(format!("cannot start the Raft runtime: {e}")))?;
        // A racing caller's runtime wins; ours is dropped unused.
        let _ = self.runtime.set(RaftRuntime(Some(rt)));
        self.runtime
            .get()
            .and_then(|r| r.0.as_ref())
            .map(|rt| rt.handle().clone())
            .ok_or_else(|| EngineError::Task("no Raft runtime".into()))
    }

    /// Runs `f` with the node (started if needed) on the Raft runtime and
    /// waits for it from any runtime.
    pub async fn run<T, Fut>(&self, f: impl FnOnce(Arc<ReplicationNode>) -> Fut) -> Result<T>
    where
        Fut: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        let node = self.start().await?;
        self.raft_runtime()?.spawn(f(node)).await.map_err(|e| EngineError::Task(e.to_string()))
    }

    /// How the node finds a table's definition when a peer creates one of
    /// its groups here (the server's catalog); set once, before `start`.
    pub fn set_tables(&self, tables: Arc<dyn TableResolver>) {
        let _ = self.tables.set(tables);
    }

    /// What applies the metadata group's entries here; set once, before
    /// `start` (the group starts with the node).
    pub fn set_meta_applier(&self, applier: Arc<dyn replication::meta_group::MetaApplier>) {
        let _ = self.meta.set(applier);
    }

    /// Every node of the cluster (this one alone without `[[cluster.nodes]]`).
    pub fn node_ids(&self) -> Vec<u64> {
        if self.cfg.nodes.is_empty() { vec![self.cfg.node_id] } else { self.cfg.nodes.iter().map(|n| n.id).collect() }
    }

    /// Proposes a metadata entry and waits until this node and every other
    /// node that is up applied it: its index. Without a quorum of the metadata group's voters within
    /// `timeout`: [`replication::ReplicationError::MetaTimeout`].
    pub async fn propose_meta(&self, entry: String, timeout: Duration) -> Result<u64> {
        self.run(move |node| async move {
            let t0 = tokio::time::Instant::now();
            let (index, _) = node.propose_meta(entry, timeout).await?;
            let meta =
                node.meta().ok_or(replication::ReplicationError::NoSuchGroup(replication::meta_group::META_GROUP))?;
            meta.wait_applied(index, timeout.saturating_sub(t0.elapsed()).max(Duration::from_millis(100))).await?;
            // As ClickHouse's ON CLUSTER: done once every live host ran it.
            node.wait_meta_hosts(index, timeout.saturating_sub(t0.elapsed()).max(Duration::from_millis(100))).await?;
            Ok::<_, replication::ReplicationError>(index)
        })
        .await?
        .map_err(EngineError::from)
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
        if let Some(n) = self.node.get() {
            return Ok(n.clone());
        }
        let rt = self.raft_runtime()?;
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
                let node = rt
                    .spawn(ReplicationNode::start(nc, tables))
                    .await
                    .map_err(|e| EngineError::Task(e.to_string()))??;
                let node = Arc::new(node);
                tracing::info!(node = self.cfg.node_id, addr = %node.addr(), "replication node started");
                if let Some(applier) = self.meta.get().cloned() {
                    let (n, ids) = (node.clone(), self.node_ids());
                    rt.spawn(async move { n.start_meta(ids, applier).await.map(|_| ()) })
                        .await
                        .map_err(|e| EngineError::Task(e.to_string()))??;
                }
                Ok::<_, EngineError>(node)
            })
            .await
            .cloned()
    }

    /// The node if it has started.
    pub fn started(&self) -> Option<Arc<ReplicationNode>> {
        self.node.get().cloned()
    }

    /// Runs a future to completion on the Raft runtime from synchronous
    /// code (the merge threads). Not for a runtime worker's thread.
    pub fn block_on<F: Future>(&self, f: F) -> Result<F::Output> {
        let rt = self.raft_runtime()?;
        match tokio::runtime::Handle::try_current() {
            // A worker of a multi-thread runtime hands its other tasks off
            // first: blocking it outright panics.
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                Ok(tokio::task::block_in_place(|| rt.block_on(f)))
            }
            _ => Ok(rt.block_on(f)),
        }
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
        if let (Some(n), Ok(rt)) = (self.started(), self.raft_runtime()) {
            let _ = rt.spawn(async move { n.shutdown().await }).await;
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
