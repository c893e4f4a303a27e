//! openraft's state machine around a [`Replica`]: applying entries (fetching
//! part bytes from peers when this replica lacks them) and snapshots, which
//! are a manifest of parts plus the replicated state; installing one fetches
//! the parts this replica lacks.

use std::io::Cursor;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::storage::RaftStateMachine;
use openraft::{
    Entry, EntryPayload, LogId, RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageIOError, StoredMembership,
};

use crate::command::Response;
use crate::error::{ReplicationError, Result};
pub use crate::fetch::PartFetcher;
use crate::replica::{Manifest, Missing, Replica, Step};
use crate::{NodeId, StorageError, TypeConfig};

/// The latest snapshot: its meta and the manifest bytes.
type Current = Arc<Mutex<Option<(SnapshotMeta<NodeId, openraft::BasicNode>, Vec<u8>)>>>;

/// The state machine of one group.
pub struct GroupStateMachine {
    replica: Arc<Replica>,
    fetcher: Arc<dyn PartFetcher>,
    members: Vec<NodeId>,
    current: Current,
    /// The last error of a fetch that is being retried (`system.replicas`).
    pub last_error: Arc<Mutex<Option<String>>>,
    /// Failed fetch and apply attempts since start (each was retried).
    pub retries: Arc<std::sync::atomic::AtomicU64>,
}

impl GroupStateMachine {
    /// A state machine applying to `replica`, fetching from `members`.
    pub fn new(replica: Arc<Replica>, fetcher: Arc<dyn PartFetcher>, members: Vec<NodeId>) -> Self {
        replica.fetches_merges.store(true, std::sync::atomic::Ordering::SeqCst);
        GroupStateMachine {
            replica,
            fetcher,
            members,
            current: Arc::new(Mutex::new(None)),
            last_error: Arc::new(Mutex::new(None)),
            retries: Default::default(),
        }
    }

    fn set_error(&self, e: Option<String>) {
        if e.is_some() {
            self.retries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = e;
    }

    /// Fetches what a command needs (see [`crate::fetch::fetch_missing`]).
    async fn fetch(&self, missing: &Missing) -> Option<PathBuf> {
        crate::fetch::fetch_missing(&self.replica, &*self.fetcher, &self.members, missing, |e| self.set_error(e)).await
    }

    async fn apply_one(&self, log_id: LogId<NodeId>, cmd: crate::Command) -> Result<Response> {
        let mut fetched: Option<PathBuf> = None;
        loop {
            let (r, c, f) = (self.replica.clone(), cmd.clone(), fetched.clone());
            let t0 = std::time::Instant::now();
            let step = tokio::task::spawn_blocking(move || {
                let t1 = std::time::Instant::now();
                let s = r.apply(log_id, &c, f.as_deref());
                (s, t1.elapsed())
            })
            .await
            .map_err(|e| ReplicationError::Raft(format!("apply task: {e}")))?;
            let (step, ran) = step;
            tracing::debug!(
                index = log_id.index,
                total_ms = t0.elapsed().as_secs_f64() * 1e3,
                ran_ms = ran.as_secs_f64() * 1e3,
                "apply timing"
            );
            if let Some(f) = fetched.take() {
                let _ = std::fs::remove_dir_all(f);
            }
            match step {
                Ok(Step::Done(resp)) => {
                    crate::fetch::spawn_peer_merges(&self.replica, &self.fetcher);
                    return Ok(resp);
                }
                Ok(Step::Need(missing)) => match self.fetch(&missing).await {
                    Some(dir) => fetched = Some(dir),
                    None => {
                        self.replica.skip(log_id, &missing.part.to_string());
                        return Ok(Response::Done);
                    }
                },
                Err(e) if e.deterministic_apply_error() => {
                    // The entry itself is bad (a part name that does not
                    // parse, inline bytes that do not decode): every retry
                    // fails alike, so the group stops here with the error
                    // in its last error, instead of retrying forever.
                    let msg = format!("entry {} cannot be applied: {e}", log_id.index);
                    tracing::error!(
                        group = self.replica.group,
                        index = log_id.index,
                        "{msg}; the group stops on this replica"
                    );
                    self.set_error(Some(msg.clone()));
                    return Err(e);
                }
                Err(ReplicationError::InvariantViolated(msg)) => {
                    // The parts no longer hold what the log committed: stop
                    // the group here rather than serve wrong rows or build
                    // on them (openraft stops on a state machine error).
                    tracing::error!(
                        group = self.replica.group,
                        index = log_id.index,
                        "{msg}; the group stops on this replica"
                    );
                    self.set_error(Some(format!("Replica invariant violated: {msg}")));
                    self.replica.broken.set(msg.clone()).ok();
                    return Err(ReplicationError::InvariantViolated(msg));
                }
                Err(e) => {
                    // A command that fails to apply (a disk error) is retried,
                    // never skipped: skipping would fork this replica's state.
                    self.set_error(Some(format!("applying {}: {e}", log_id.index)));
                    tracing::error!(group = self.replica.group, index = log_id.index, error = %e, "apply failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
}

/// A test failpoint: `apply:stall` configured as `return(<node id>)` makes
/// that node apply 2 s late (a slow replica that still answers pings);
/// `return(<node id>:<ms>)` that many milliseconds late. The caller waits
/// asynchronously: a thread sleep here froze a worker of the runtime every
/// node of an in-process cluster shares (issue 18).
fn stall_for(node: NodeId) -> Option<Duration> {
    let _ = node; // used only with failpoints compiled in
    fail::fail_point!("apply:stall", |arg: Option<String>| {
        let arg = arg.unwrap_or_default();
        let (who, ms) = arg.split_once(':').unwrap_or((arg.as_str(), "2000"));
        (who.parse::<NodeId>().ok() == Some(node)).then(|| Duration::from_millis(ms.parse().unwrap_or(2000)))
    });
    None
}

fn sm_err(e: impl ToString) -> StorageError {
    StorageIOError::write_state_machine(&std::io::Error::other(e.to_string())).into()
}

impl RaftStateMachine<TypeConfig> for GroupStateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, openraft::BasicNode>), StorageError> {
        Ok(self.replica.applied())
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut out = Vec::new();
        for e in entries {
            match e.payload {
                EntryPayload::Blank => {
                    self.replica.apply_meta(e.log_id, None).map_err(sm_err)?;
                    out.push(Response::None);
                }
                EntryPayload::Membership(m) => {
                    self.replica
                        .apply_meta(e.log_id, Some(StoredMembership::new(Some(e.log_id), m)))
                        .map_err(sm_err)?;
                    out.push(Response::None);
                }
                EntryPayload::Normal(cmd) => {
                    // A crash after commit, before apply: the entry is re-applied at restart.
                    fail::fail_point!("apply:before");
                    if let Some(d) = stall_for(self.replica.node) {
                        tokio::time::sleep(d).await;
                    }
                    out.push(self.apply_one(e.log_id, cmd).await.map_err(sm_err)?)
                }
            }
        }
        let t0 = std::time::Instant::now();
        self.replica.persist().map_err(sm_err)?;
        tracing::debug!(persist_ms = t0.elapsed().as_secs_f64() * 1e3, "persist timing");
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder { replica: self.replica.clone(), current: self.current.clone() }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, openraft::BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let bytes = snapshot.into_inner();
        let manifest: Manifest = crate::log_store::decode(&bytes).map_err(sm_err)?;
        let missing = self.replica.missing_for(&manifest).map_err(sm_err)?;
        let mut dirs = Vec::new();
        for part in missing {
            let m = Missing { part, staged_id: None, from: vec![manifest.source], may_not_exist: false };
            dirs.extend(self.fetch(&m).await);
        }
        let r = self.replica.clone();
        tokio::task::spawn_blocking(move || r.install(&manifest, &dirs)).await.map_err(sm_err)?.map_err(sm_err)?;
        tracing::info!(group = self.replica.group, snapshot = %meta.snapshot_id, "snapshot installed");
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some((meta.clone(), bytes));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let cur = self.current.lock().unwrap_or_else(|p| p.into_inner()).clone();
        Ok(cur.map(|(meta, bytes)| Snapshot { meta, snapshot: Box::new(Cursor::new(bytes)) }))
    }
}

/// Builds snapshots of a replica's current applied state.
pub struct SnapshotBuilder {
    replica: Arc<Replica>,
    current: Current,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let mut manifest = self.replica.manifest();
        // openraft purges the log up to the snapshot: every part only the log
        // held until now (applied at or before the manifest) is fsynced first.
        let replica = self.replica.clone();
        tokio::task::spawn_blocking(move || replica.checkpoint()).await.map_err(sm_err)?.map_err(sm_err)?;
        manifest.state.unsynced.clear();
        let bytes = crate::log_store::encode(&manifest).map_err(sm_err)?;
        let last = manifest.state.applied;
        let meta = SnapshotMeta {
            last_log_id: last,
            last_membership: manifest.state.membership.clone(),
            snapshot_id: format!(
                "{}-{}-{}",
                self.replica.group,
                last.map(|l| l.index).unwrap_or(0),
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
            ),
        };
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some((meta.clone(), bytes.clone()));
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(bytes)) })
    }
}
