//! The multi-raft registry of one node: any number of groups, created on
//! demand and reopened at startup, sharing one RocksDB and one transport; and
//! the replicated write path (stage, push, propose).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use openraft::{BasicNode, ChangeMembers};
use serde::{Deserialize, Serialize};

use crate::command::Response;
use crate::error::{ReplicationError, Result};
use crate::log_store::{LogDb, MetaTag};
use crate::replica::{Replica, ReplicaSettings};
use crate::state_machine::GroupStateMachine;
use crate::transport::{NetControl, Peers, TransportFetcher};
use crate::{GroupId, NodeId, Raft};

/// What a group is: which table's partition it holds and on which nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSpec {
    pub group: GroupId,
    pub table: String,
    pub partition_id: String,
    pub members: Vec<NodeId>,
    #[serde(default)]
    pub settings: ReplicaSettings,
}

/// The storage definition of a table by name; the query layer provides it.
pub trait TableResolver: Send + Sync + 'static {
    fn table(&self, name: &str) -> Option<Arc<storage::Table>>;
}

/// A node's replication settings.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub id: NodeId,
    pub dir: PathBuf,
    /// The gRPC listen address (port 0 picks one; see [`ReplicationNode::addr`]).
    pub listen: SocketAddr,
    /// Every node of the cluster and its gRPC address (this node included).
    pub peers: BTreeMap<NodeId, String>,
    /// The cluster's name: nodes refuse requests stamped with another
    /// (see [`crate::transport::valid_cluster_name`]).
    pub cluster: String,
    pub heartbeat_ms: u64,
    pub election_timeout_ms: (u64, u64),
    /// Build a snapshot (and allow purging the log) after this many entries.
    pub snapshot_logs: u64,
    /// How long a proposal waits for a leader before giving up.
    pub propose_timeout: Duration,
    /// Quiesce a group whose log has not moved for this long (`None`: never).
    pub idle_after: Option<Duration>,
    /// Fault injection for tests; inert by default.
    pub net: Arc<NetControl>,
}

impl NodeConfig {
    /// Defaults for node `id` storing under `dir`, listening on `listen`.
    pub fn new(id: NodeId, dir: &Path, listen: SocketAddr) -> Self {
        NodeConfig {
            id,
            dir: dir.to_path_buf(),
            listen,
            peers: BTreeMap::new(),
            cluster: crate::transport::DEFAULT_CLUSTER.into(),
            heartbeat_ms: 100,
            election_timeout_ms: (400, 800),
            snapshot_logs: 5000,
            propose_timeout: Duration::from_secs(10),
            idle_after: Some(Duration::from_secs(2)),
            net: Arc::new(NetControl::default()),
        }
    }
}

/// A group hosted here.
pub struct Group {
    pub spec: GroupSpec,
    pub raft: Raft,
    pub replica: Arc<Replica>,
    /// Last error of an apply or fetch being retried, if any.
    pub last_error: Arc<Mutex<Option<String>>>,
    /// Whether the group's Raft ticks are off because it is idle (see `hibernate`).
    pub(crate) quiesced: std::sync::atomic::AtomicBool,
    /// Failed fetch and apply attempts, each retried with backoff.
    pub retries: Arc<std::sync::atomic::AtomicU64>,
    /// Held from choosing a merge's sources until its entry applied here,
    /// which registers it as running: two selections on one node never
    /// pick the same parts.
    pub(crate) merge_lock: tokio::sync::Mutex<()>,
    /// No merge is chosen before this (term, index) applied here: a
    /// proposal that failed may still commit, and its sources look free
    /// until it applies. Only within its term, see `merge_assign::merge_fenced`.
    pub(crate) merge_fence: Mutex<(u64, u64)>,
    /// The highest log index of an insert this node acknowledged before it
    /// applied it (0: none pending): reads here wait for it, see
    /// [`Group::read_your_writes`].
    pub(crate) ack_fence: std::sync::atomic::AtomicU64,
}

impl Group {
    /// Whether the group is quiesced: idle, with no heartbeats or election timers.
    pub fn is_quiesced(&self) -> bool {
        self.quiesced.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The last error of a command being retried here.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

pub(crate) struct NodeInner {
    pub(crate) id: NodeId,
    dir: PathBuf,
    pub(crate) db: Arc<LogDb>,
    pub(crate) peers: Arc<Peers>,
    groups: RwLock<HashMap<GroupId, Arc<Group>>>,
    creating: tokio::sync::Mutex<()>,
    tables: Arc<dyn TableResolver>,
    pub(crate) raft_config: Arc<openraft::Config>,
    pub(crate) propose_timeout: Duration,
    stopped: std::sync::atomic::AtomicBool,
    /// Small inserts waiting to share an entry, per group.
    pub(crate) group_commit: crate::group_commit::Queues,
    /// Small blocks this node handed to another node's group commit.
    pub(crate) forwarded: std::sync::atomic::AtomicU64,
    /// The metadata group, once started ([`ReplicationNode::start_meta`]).
    pub(crate) meta: RwLock<Option<Arc<crate::meta_group::MetaGroup>>>,
}

/// How long a read waits for this node to apply an insert it acknowledged.
pub(crate) const READ_YOUR_WRITES_WAIT: Duration = Duration::from_secs(1);

/// How an insert waits (`insert_quorum`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Quorum {
    /// Majority commit, applied on the leader.
    #[default]
    Majority,
    /// At least this many replicas have applied it.
    Replicas(usize),
    /// Every replica has applied it.
    All,
}

/// The outcome of a replicated insert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InsertOutcome {
    pub response: Response,
    pub index: u64,
}

/// One node's replication: its groups and its gRPC service.
pub struct ReplicationNode {
    pub(crate) inner: Arc<NodeInner>,
    addr: SocketAddr,
    server: Mutex<Option<(tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>)>>,
    hibernate: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for ReplicationNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicationNode").field("id", &self.inner.id).field("addr", &self.addr).finish()
    }
}

/// How often a node still opening one group at startup says so.
const OPEN_SLOW: Duration = Duration::from_secs(10);

pub(crate) fn majority(n: usize) -> usize {
    n / 2 + 1
}

pub(crate) fn raft_err(e: impl std::fmt::Display) -> ReplicationError {
    ReplicationError::Raft(e.to_string())
}

impl ReplicationNode {
    /// Opens the node's database, starts its gRPC service and reopens every
    /// group it hosted.
    pub async fn start(cfg: NodeConfig, tables: Arc<dyn TableResolver>) -> Result<ReplicationNode> {
        std::fs::create_dir_all(&cfg.dir).map_err(|e| ReplicationError::io(&cfg.dir, e))?;
        let db = open_db_retrying(&cfg.dir.join("raft-db")).await?;
        let listener =
            tokio::net::TcpListener::bind(cfg.listen).await.map_err(|e| ReplicationError::io(&cfg.dir, e))?;
        let addr = listener.local_addr().map_err(|e| ReplicationError::io(&cfg.dir, e))?;
        let mut peers = cfg.peers.clone();
        peers.insert(cfg.id, addr.to_string());
        let raft_config = openraft::Config {
            cluster_name: cfg.cluster.clone(),
            heartbeat_interval: cfg.heartbeat_ms,
            election_timeout_min: cfg.election_timeout_ms.0,
            election_timeout_max: cfg.election_timeout_ms.1,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(cfg.snapshot_logs),
            max_in_snapshot_log_to_keep: cfg.snapshot_logs / 2,
            install_snapshot_timeout: 2000,
            // Entries carry small inserts' parts (up to INLINE_MAX_BYTES
            // each, base64): openraft's 300 could exceed MAX_MESSAGE.
            max_payload_entries: 64,
            ..Default::default()
        }
        .validate()
        .map_err(raft_err)?;
        let inner = Arc::new(NodeInner {
            id: cfg.id,
            dir: cfg.dir.clone(),
            db,
            peers: Arc::new(Peers::new(cfg.id, &cfg.cluster, peers, cfg.net.clone())),
            groups: RwLock::new(HashMap::new()),
            creating: tokio::sync::Mutex::new(()),
            tables,
            raft_config: Arc::new(raft_config),
            propose_timeout: cfg.propose_timeout,
            stopped: Default::default(),
            group_commit: Default::default(),
            forwarded: Default::default(),
            meta: Default::default(),
        });
        // Reopen every group before serving: a peer's request must never
        // find a group missing and recreate it while it is being reopened
        // (two replicas of one group on one directory).
        {
            let _g = inner.creating.lock().await;
            for (_, spec) in inner.db.groups_with(MetaTag::Spec).map_err(raft_err)? {
                let spec: GroupSpec = crate::log_store::decode(&spec).map_err(ReplicationError::Corrupted)?;
                let group = spec.group;
                let t0 = std::time::Instant::now();
                let open = inner.open_group(spec, false);
                tokio::pin!(open);
                // Opening re-applies committed entries (openraft does, in
                // `Raft::new`), which may wait for merges or part fetches: a
                // node that does not come up must say which group holds it.
                let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + OPEN_SLOW, OPEN_SLOW);
                loop {
                    tokio::select! {
                        r = &mut open => {
                            r?;
                            break;
                        }
                        _ = tick.tick() => {
                            tracing::warn!(group, secs = t0.elapsed().as_secs(), "still opening a group (re-applying its committed entries)");
                        }
                    }
                }
                if t0.elapsed() >= Duration::from_secs(1) {
                    tracing::info!(group, ms = t0.elapsed().as_millis() as u64, "group reopened");
                }
            }
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let server = crate::transport::serve(inner.clone(), listener, rx);
        let hibernate = cfg.idle_after.map(|idle| crate::hibernate::spawn(Arc::downgrade(&inner), idle));
        Ok(ReplicationNode { inner, addr, server: Mutex::new(Some((tx, server))), hibernate: Mutex::new(hibernate) })
    }

    /// Starts this node's replica of the metadata group over `nodes` (every
    /// node of the cluster; the lowest ids vote), applying its entries with
    /// `applier`. Once per node.
    pub async fn start_meta(
        &self,
        nodes: Vec<NodeId>,
        applier: Arc<dyn crate::meta_group::MetaApplier>,
    ) -> Result<Arc<crate::meta_group::MetaGroup>> {
        if let Some(m) = self.meta() {
            return Ok(m);
        }
        let m = self.inner.open_meta(nodes, applier).await?;
        *self.inner.meta.write().unwrap_or_else(|p| p.into_inner()) = Some(m.clone());
        Ok(m)
    }

    /// The metadata group, once started.
    pub fn meta(&self) -> Option<Arc<crate::meta_group::MetaGroup>> {
        self.inner.meta.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Proposes a metadata entry; its index and the applier's reply (on the
    /// node that applied it first). Fails with
    /// [`ReplicationError::MetaTimeout`] without a quorum within `timeout`.
    pub async fn propose_meta(
        &self,
        entry: String,
        timeout: Duration,
    ) -> Result<(u64, std::result::Result<String, String>)> {
        let meta = self.meta().ok_or(ReplicationError::NoSuchGroup(crate::meta_group::META_GROUP))?;
        self.inner.propose_meta(&meta, entry, timeout).await
    }

    /// Waits until every node of the metadata group that answers a ping
    /// applied `index` (a node that is down applies it when it is back).
    pub async fn wait_meta_hosts(&self, index: u64, timeout: Duration) -> Result<()> {
        let meta = self.meta().ok_or(ReplicationError::NoSuchGroup(crate::meta_group::META_GROUP))?;
        let deadline = tokio::time::Instant::now() + timeout;
        for &m in meta.nodes() {
            loop {
                let applied = if m == self.inner.id {
                    meta.raft.metrics().borrow().last_applied.map(|l| l.index)
                } else if !self.inner.peers.ping(m, Duration::from_millis(300)).await {
                    break;
                } else {
                    self.inner.peers.applied(m, crate::meta_group::META_GROUP).await.ok().flatten()
                };
                if applied.is_some_and(|a| a >= index) {
                    break;
                }
                if tokio::time::Instant::now() >= deadline {
                    return Err(ReplicationError::MetaTimeout {
                        seconds: timeout.as_secs(),
                        reason: format!("node {m} is up but did not apply catalog entry {index} in time"),
                    });
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(())
    }

    /// Small blocks this node handed to their group leader's group commit
    /// since it started.
    pub fn forwarded_blocks(&self) -> u64 {
        self.inner.forwarded.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    /// The gRPC address the node listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A hosted group.
    pub fn group(&self, group: GroupId) -> Option<Arc<Group>> {
        self.inner.group(group)
    }

    /// Every hosted group.
    pub fn groups(&self) -> Vec<Arc<Group>> {
        self.inner.all_groups()
    }

    /// Learns (or changes) a peer's address.
    pub fn set_peer(&self, node: NodeId, addr: String) {
        self.inner.peers.set_addr(node, addr);
    }

    /// Creates the group on every member that can be reached; a majority must be.
    pub async fn ensure_group(&self, spec: &GroupSpec) -> Result<Arc<Group>> {
        if let Some(g) = self.inner.group(spec.group) {
            return Ok(g);
        }
        let mut ok = 0;
        let mut last_err = None;
        let futs = spec.members.iter().map(|&m| {
            let inner = self.inner.clone();
            let spec = spec.clone();
            async move {
                if m == inner.id {
                    inner.create_local(spec).await.map(|_| ())
                } else {
                    inner.peers.create_group(m, &spec).await
                }
            }
        });
        for r in futures::future::join_all(futs).await {
            match r {
                Ok(()) => ok += 1,
                Err(e) => last_err = Some(e),
            }
        }
        if ok < majority(spec.members.len()) {
            return Err(last_err
                .unwrap_or(ReplicationError::TooFewLiveReplicas { alive: ok, needed: majority(spec.members.len()) }));
        }
        self.inner.group(spec.group).ok_or(ReplicationError::NoSuchGroup(spec.group))
    }

    /// Adds `node` to a group as a voter (learner first, then promoted).
    pub async fn add_member(&self, group: GroupId, node: NodeId) -> Result<()> {
        let g = self.inner.group(group).ok_or(ReplicationError::NoSuchGroup(group))?;
        let addr = self.inner.peers.addr(node).unwrap_or_default();
        g.raft.add_learner(node, BasicNode { addr }, true).await.map_err(raft_err)?;
        g.raft.change_membership(ChangeMembers::AddVoterIds([node].into()), false).await.map_err(raft_err)?;
        Ok(())
    }

    /// Stops and deletes every group of `table` hosted here: its log, state and parts.
    pub async fn remove_groups_of(&self, table: &str) -> Result<()> {
        let doomed: Vec<Arc<Group>> = {
            let mut groups = self.inner.groups.write().unwrap_or_else(|p| p.into_inner());
            let ids: Vec<GroupId> = groups.values().filter(|g| g.spec.table == table).map(|g| g.spec.group).collect();
            ids.iter().filter_map(|id| groups.remove(id)).collect()
        };
        for g in doomed {
            let _ = g.raft.shutdown().await;
            self.inner.db.remove_group(g.spec.group).map_err(raft_err)?;
            let dir = self.inner.dir.join("groups").join(g.spec.group.to_string());
            if let Err(e) = std::fs::remove_dir_all(&dir)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                return Err(ReplicationError::io(&dir, e));
            }
        }
        Ok(())
    }

    /// Stops every group and the gRPC service (a clean shutdown, or a
    /// simulated crash in tests: nothing is flushed beyond what was synced).
    pub async fn shutdown(&self) {
        self.inner.stopped.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(h) = self.hibernate.lock().unwrap_or_else(|p| p.into_inner()).take() {
            h.abort();
        }
        let taken = self.server.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some((tx, handle)) = taken {
            let _ = tx.send(());
            handle.abort();
            let _ = handle.await;
        }
        let groups: Vec<Arc<Group>> =
            self.inner.groups.write().unwrap_or_else(|p| p.into_inner()).drain().map(|(_, g)| g).collect();
        for g in groups {
            g.replica.stopped.store(true, std::sync::atomic::Ordering::SeqCst);
            let _ = g.raft.shutdown().await;
        }
        let meta = self.inner.meta.write().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(m) = meta {
            m.shutdown().await;
        }
    }
}

/// RocksDB holds a lock file until every handle is gone; a node restarted in
/// the same process may briefly still see the previous instance's lock.
async fn open_db_retrying(path: &Path) -> Result<Arc<LogDb>> {
    let mut tries = 0;
    loop {
        match LogDb::open(path) {
            Ok(db) => return Ok(db),
            Err(ReplicationError::Rocks(e)) if tries < 50 && e.to_string().contains("lock") => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

pub(crate) fn chrono_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

impl NodeInner {
    pub(crate) fn stopped(&self) -> bool {
        self.stopped.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub(crate) fn all_groups(&self) -> Vec<Arc<Group>> {
        self.groups.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }

    pub(crate) fn group(&self, group: GroupId) -> Option<Arc<Group>> {
        self.groups.read().unwrap_or_else(|p| p.into_inner()).get(&group).cloned()
    }

    /// Creates the group here if it is not yet hosted.
    pub(crate) async fn create_local(&self, spec: GroupSpec) -> Result<Arc<Group>> {
        let _g = self.creating.lock().await;
        if let Some(g) = self.group(spec.group) {
            return Ok(g);
        }
        self.open_group(spec, true).await
    }

    async fn open_group(&self, spec: GroupSpec, initialize: bool) -> Result<Arc<Group>> {
        let table = self.tables.table(&spec.table).ok_or_else(|| ReplicationError::NoSuchTable(spec.table.clone()))?;
        let dir = self.dir.join("groups").join(spec.group.to_string());
        // Part recovery reads and may delete directories: off the runtime
        // that carries every group's heartbeats (issue 18).
        let (group, id, settings, db) = (spec.group, self.id, spec.settings.clone(), self.db.clone());
        let replica = tokio::task::spawn_blocking(move || Replica::open(group, id, &dir, table, settings, db))
            .await
            .map_err(|e| ReplicationError::Raft(format!("opening group {group}: {e}")))??;
        let replica = Arc::new(replica);
        let fetcher: Arc<dyn crate::fetch::PartFetcher> = Arc::new(TransportFetcher { peers: self.peers.clone() });
        let sm = GroupStateMachine::new(replica.clone(), fetcher.clone(), spec.members.clone());
        replica.resume_merges()?;
        crate::fetch::spawn_peer_merges(&replica, &fetcher);
        let last_error = sm.last_error.clone();
        let retries = sm.retries.clone();
        let network = self.peers.network(spec.clone());
        let raft = Raft::new(self.id, self.raft_config.clone(), network, self.db.group(spec.group), sm)
            .await
            .map_err(raft_err)?;
        if initialize {
            let spec_bytes = crate::log_store::encode(&spec).map_err(|e| ReplicationError::Corrupted(e.to_string()))?;
            let (db, group) = (self.db.clone(), spec.group);
            // An fsynced write: off the runtime too.
            tokio::task::spawn_blocking(move || db.put_meta(group, MetaTag::Spec, &spec_bytes, true).map_err(raft_err))
                .await
                .map_err(|e| ReplicationError::Raft(format!("group {group} spec: {e}")))??;
            if !raft.is_initialized().await.map_err(raft_err)? {
                let members: BTreeMap<NodeId, BasicNode> = spec
                    .members
                    .iter()
                    .map(|&m| (m, BasicNode { addr: self.peers.addr(m).unwrap_or_default() }))
                    .collect();
                if let Err(e) = raft.initialize(members).await {
                    tracing::debug!(group = spec.group, error = %e, "initialize: already initialized");
                }
            }
        }
        let g = Arc::new(Group {
            spec: spec.clone(),
            raft,
            replica,
            last_error,
            quiesced: Default::default(),
            retries,
            merge_lock: Default::default(),
            merge_fence: Mutex::new((0, 0)),
            ack_fence: Default::default(),
        });
        self.groups.write().unwrap_or_else(|p| p.into_inner()).insert(spec.group, g.clone());
        Ok(g)
    }
}
