//! The metadata group: one Raft group per cluster, id [`META_GROUP`], whose
//! log carries the entries of the layer above (the catalog's DDL) as opaque
//! text. Its voters are at most [`MAX_VOTERS`] nodes; every other node
//! follows as a non-voting learner, so every node applies every entry — a
//! node that was down applies what it missed when it comes back (from the
//! log, or from a snapshot of the applier's whole state).
//!
//! The applier ([`MetaApplier`]) persists its own state together with the
//! index it applied, and skips entries at or below it: the state machine's
//! own record of the applied log id may lag behind the applier's after a
//! crash, and re-applying is then a no-op.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::storage::RaftStateMachine;
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageIOError,
    StoredMembership,
};
use serde::{Deserialize, Serialize};

use crate::command::{Command, Response};
use crate::error::{ReplicationError, Result};
use crate::log_store::{LogDb, MetaTag};
use crate::registry::{GroupSpec, NodeInner, raft_err};
use crate::{GroupId, NodeId, Raft, StorageError, TypeConfig};

/// The metadata group's id (data groups hash table and partition names to
/// ids; this one is reserved).
pub const META_GROUP: GroupId = u64::MAX;

/// Most voters of the metadata group; further nodes are learners.
pub const MAX_VOTERS: usize = 5;

/// The metadata group's voters among `nodes`: the lowest ids, at most
/// [`MAX_VOTERS`]. Every node computes the same set from the same list.
pub fn voters_of(nodes: &[NodeId]) -> Vec<NodeId> {
    let mut v = nodes.to_vec();
    v.sort_unstable();
    v.dedup();
    v.truncate(MAX_VOTERS);
    v
}

/// What applies the metadata group's entries on one node.
pub trait MetaApplier: Send + Sync + 'static {
    /// The index of the last entry applied (persisted with the state); 0
    /// for none.
    fn applied_index(&self) -> u64;
    /// Applies the entry at `index` and persists the result with `index`
    /// before returning; an entry at or below [`Self::applied_index`] must
    /// change nothing. The reply goes back to the proposer. An error is the
    /// entry's outcome (e.g. "table exists"), not a failure to apply: the
    /// applier records `index` either way, so every node agrees.
    fn apply(&self, index: u64, entry: &str) -> std::result::Result<String, String>;
    /// The whole state, for a snapshot.
    fn snapshot(&self) -> std::result::Result<String, String>;
    /// Replaces the whole state by a snapshot's, taken at `index`.
    fn install(&self, index: u64, state: &str) -> std::result::Result<(), String>;
}

/// The state machine's own record: the applied log id and membership.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Applied {
    log_id: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
}

/// A snapshot's bytes.
#[derive(Debug, Serialize, Deserialize)]
struct MetaSnapshot {
    format: u32,
    applied: Applied,
    state: String,
}

/// Version of [`MetaSnapshot`]'s encoding.
const SNAPSHOT_FORMAT: u32 = 1;

type Current = Arc<std::sync::Mutex<Option<(SnapshotMeta<NodeId, BasicNode>, Vec<u8>)>>>;

/// openraft's state machine of the metadata group.
pub(crate) struct MetaStateMachine {
    db: Arc<LogDb>,
    applier: Arc<dyn MetaApplier>,
    applied: Applied,
    current: Current,
}

fn sm_err(e: impl ToString) -> StorageError {
    StorageIOError::write_state_machine(&std::io::Error::other(e.to_string())).into()
}

impl MetaStateMachine {
    fn open(db: Arc<LogDb>, applier: Arc<dyn MetaApplier>) -> Result<Self> {
        let applied = match db.get_meta(META_GROUP, MetaTag::Applied).map_err(raft_err)? {
            Some(b) => crate::log_store::decode(&b).map_err(ReplicationError::Corrupted)?,
            None => Applied::default(),
        };
        Ok(MetaStateMachine { db, applier, applied, current: Default::default() })
    }

    // openraft's StorageError is what the trait's methods return anyway.
    #[allow(clippy::result_large_err)]
    fn persist(&self) -> std::result::Result<(), StorageError> {
        let bytes = crate::log_store::encode(&self.applied).map_err(sm_err)?;
        self.db.put_meta(META_GROUP, MetaTag::Applied, &bytes, false)
    }
}

impl RaftStateMachine<TypeConfig> for MetaStateMachine {
    type SnapshotBuilder = MetaSnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> std::result::Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>), StorageError> {
        Ok((self.applied.log_id, self.applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> std::result::Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut out = Vec::new();
        for e in entries {
            self.applied.log_id = Some(e.log_id);
            match e.payload {
                EntryPayload::Blank => out.push(Response::None),
                EntryPayload::Membership(m) => {
                    self.applied.membership = StoredMembership::new(Some(e.log_id), m);
                    out.push(Response::None);
                }
                EntryPayload::Normal(Command::Meta { entry }) => {
                    let (applier, index) = (self.applier.clone(), e.log_id.index);
                    // The applier writes files and opens tables: off the
                    // runtime that carries every group's heartbeats.
                    let reply =
                        tokio::task::spawn_blocking(move || applier.apply(index, &entry)).await.map_err(sm_err)?;
                    out.push(Response::Meta { reply });
                }
                EntryPayload::Normal(other) => {
                    tracing::error!(command = ?other, "a data command in the metadata group: ignored");
                    out.push(Response::None);
                }
            }
        }
        self.persist()?;
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        MetaSnapshotBuilder {
            applier: self.applier.clone(),
            applied: self.applied.clone(),
            current: self.current.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> std::result::Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> std::result::Result<(), StorageError> {
        let bytes = snapshot.into_inner();
        let snap: MetaSnapshot = crate::log_store::decode(&bytes).map_err(sm_err)?;
        if snap.format != SNAPSHOT_FORMAT {
            return Err(sm_err(format!("metadata snapshot format {} is not {SNAPSHOT_FORMAT}", snap.format)));
        }
        let index = snap.applied.log_id.map(|l| l.index).unwrap_or(0);
        let applier = self.applier.clone();
        let state = snap.state.clone();
        tokio::task::spawn_blocking(move || applier.install(index, &state)).await.map_err(sm_err)?.map_err(sm_err)?;
        self.applied = snap.applied;
        self.persist()?;
        tracing::info!(snapshot = %meta.snapshot_id, index, "metadata snapshot installed");
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some((meta.clone(), bytes));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> std::result::Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let cur = self.current.lock().unwrap_or_else(|p| p.into_inner()).clone();
        Ok(cur.map(|(meta, bytes)| Snapshot { meta, snapshot: Box::new(Cursor::new(bytes)) }))
    }
}

/// Builds a snapshot of the applier's state.
pub(crate) struct MetaSnapshotBuilder {
    applier: Arc<dyn MetaApplier>,
    applied: Applied,
    current: Current,
}

impl RaftSnapshotBuilder<TypeConfig> for MetaSnapshotBuilder {
    async fn build_snapshot(&mut self) -> std::result::Result<Snapshot<TypeConfig>, StorageError> {
        let applier = self.applier.clone();
        let state = tokio::task::spawn_blocking(move || applier.snapshot()).await.map_err(sm_err)?.map_err(sm_err)?;
        let snap = MetaSnapshot { format: SNAPSHOT_FORMAT, applied: self.applied.clone(), state };
        let bytes = crate::log_store::encode(&snap).map_err(sm_err)?;
        let last = self.applied.log_id;
        let meta = SnapshotMeta {
            last_log_id: last,
            last_membership: self.applied.membership.clone(),
            snapshot_id: format!(
                "meta-{}-{}",
                last.map(|l| l.index).unwrap_or(0),
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
            ),
        };
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some((meta.clone(), bytes.clone()));
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(bytes)) })
    }
}

/// The metadata group on this node.
pub struct MetaGroup {
    pub(crate) raft: Raft,
    nodes: Vec<NodeId>,
    learners_task: tokio::task::JoinHandle<()>,
}

impl NodeInner {
    /// Opens (or creates) this node's replica of the metadata group over
    /// `nodes` (every node of the cluster).
    pub(crate) async fn open_meta(
        self: &Arc<Self>,
        nodes: Vec<NodeId>,
        applier: Arc<dyn MetaApplier>,
    ) -> Result<Arc<MetaGroup>> {
        let voters = voters_of(&nodes);
        let sm = MetaStateMachine::open(self.db.clone(), applier)?;
        let spec = GroupSpec {
            group: META_GROUP,
            table: String::new(),
            partition_id: String::new(),
            members: nodes.clone(),
            settings: Default::default(),
        };
        let network = self.peers.network(spec);
        let raft = Raft::new(self.id, self.raft_config.clone(), network, self.db.group(META_GROUP), sm)
            .await
            .map_err(raft_err)?;
        if voters.contains(&self.id) && !raft.is_initialized().await.map_err(raft_err)? {
            let members: BTreeMap<NodeId, BasicNode> =
                voters.iter().map(|&m| (m, BasicNode { addr: self.peers.addr(m).unwrap_or_default() })).collect();
            // Every voter initializes with the same set: the same first
            // entry everywhere, whichever comes up first.
            if let Err(e) = raft.initialize(members).await {
                tracing::debug!(error = %e, "metadata group: already initialized");
            }
        }
        let learners: Vec<NodeId> = nodes.iter().copied().filter(|n| !voters.contains(n)).collect();
        let learners_task = tokio::spawn(keep_learners(self.clone(), raft.clone(), learners));
        Ok(Arc::new(MetaGroup { raft, nodes, learners_task }))
    }

    /// Proposes `entry` to the metadata group (through its leader) and
    /// returns its index and the applier's reply; gives up after `timeout`
    /// without a quorum.
    pub(crate) async fn propose_meta(
        &self,
        meta: &MetaGroup,
        entry: String,
        timeout: Duration,
    ) -> Result<(u64, std::result::Result<String, String>)> {
        let cmd = Command::Meta { entry };
        let deadline = tokio::time::Instant::now() + timeout;
        let mut last = String::from("no leader");
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Err(ReplicationError::MetaTimeout { seconds: timeout.as_secs(), reason: last });
            }
            let attempt = match meta.raft.current_leader().await {
                Some(l) if l == self.id => {
                    match tokio::time::timeout(left, meta.raft.client_write(cmd.clone())).await {
                        Ok(Ok(r)) => Ok((r.log_id.index, r.data)),
                        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => {
                            Err("leadership moved".to_string())
                        }
                        Ok(Err(e)) => Err(e.to_string()),
                        Err(_) => Err("not committed in time: no quorum of the catalog's voters".to_string()),
                    }
                }
                Some(l) => self
                    .peers
                    .propose(l, META_GROUP, &cmd, left)
                    .await
                    .map(|o| (o.index, o.response))
                    .map_err(|e| e.to_string()),
                None => Err("no leader of the catalog group".to_string()),
            };
            match attempt {
                Ok((index, Response::Meta { reply })) => return Ok((index, reply)),
                Ok((index, other)) => return Ok((index, Err(format!("unexpected reply {other:?}")))),
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(50).min(left)).await;
        }
    }
}

impl MetaGroup {
    /// Every node of the group (voters and learners).
    pub fn nodes(&self) -> &[NodeId] {
        &self.nodes
    }

    /// Waits until this node applied `index` (or `timeout` passes).
    pub async fn wait_applied(&self, index: u64, timeout: Duration) -> Result<()> {
        self.raft
            .wait(Some(timeout))
            .applied_index_at_least(Some(index), "metadata entry applied here")
            .await
            .map(|_| ())
            .map_err(|e| ReplicationError::MetaTimeout { seconds: timeout.as_secs(), reason: e.to_string() })
    }

    /// The current leader, if known.
    pub async fn leader(&self) -> Option<NodeId> {
        self.raft.current_leader().await
    }

    pub(crate) async fn shutdown(&self) {
        self.learners_task.abort();
        let _ = self.raft.shutdown().await;
    }
}

/// While this node leads the metadata group, makes every non-voter a
/// learner (a learner added while it is down catches up when it comes back).
async fn keep_learners(node: Arc<NodeInner>, raft: Raft, learners: Vec<NodeId>) {
    if learners.is_empty() {
        return;
    }
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if node.stopped() {
            return;
        }
        if raft.current_leader().await != Some(node.id) {
            continue;
        }
        let known = raft.metrics().borrow().membership_config.membership().clone();
        for l in &learners {
            if known.get_node(l).is_none() {
                let addr = BasicNode { addr: node.peers.addr(*l).unwrap_or_default() };
                if let Err(e) = raft.add_learner(*l, addr, false).await {
                    tracing::debug!(node = l, error = %e, "metadata group: adding a learner");
                }
            }
        }
    }
}
