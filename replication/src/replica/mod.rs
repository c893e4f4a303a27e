//! The applied state of one partition-shard group on this node: its active
//! parts (files under `parts/`), the dedup window and the mutations, plus the
//! applied log id. Applying a command is deterministic given the parts a
//! replica holds; when a replica lacks bytes a command needs (a block staged
//! elsewhere, the sources of a merge) it reports what to fetch, and the caller
//! fetches and applies again.
//!
//! Persistence: part files are published (fsynced, renamed) before the applied
//! state naming them is written, and re-applying any command is a no-op for
//! what is already there, so a crash between the two only re-applies.
//!
//! This module holds the state and its persistence; `apply` applies log
//! entries, `snapshot` makes and installs snapshot manifests, `serve` hands
//! parts to peers and cleans up (merges and rewrites run in `merge_exec` and
//! `mutation_exec`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::{LogId, StoredMembership};
use serde::{Deserialize, Serialize};
use storage::merge::selector::Candidate;
use storage::mutation::MutationCommand;
use storage::part_set::{self, PartSet};
use storage::{Part, PartName};

use crate::command::Response;
use crate::dedup::{DedupEntry, DedupWindow};
use crate::error::{ReplicationError, Result};
use crate::log_store::{LogDb, MetaTag};
use crate::{GroupId, NodeId};

mod apply;
mod serve;
mod snapshot;

pub use snapshot::{Manifest, ManifestPart};

/// Replication settings of a table (ClickHouse's names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaSettings {
    pub replicated_deduplication_window: usize,
    pub replicated_deduplication_window_seconds: i64,
    /// Seconds a replica waits for the merging replica's result before
    /// merging itself; 0 (the default, as in ClickHouse): every replica merges.
    #[serde(default)]
    pub execute_merges_on_single_replica_time_threshold: u64,
}

impl Default for ReplicaSettings {
    fn default() -> Self {
        ReplicaSettings {
            replicated_deduplication_window: crate::dedup::DEFAULT_WINDOW,
            replicated_deduplication_window_seconds: crate::dedup::DEFAULT_WINDOW_SECONDS,
            execute_merges_on_single_replica_time_threshold: 0,
        }
    }
}

/// A mutation as the replicated state records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MutationRecord {
    pub version: i64,
    pub commands: Vec<MutationCommand>,
    pub text: String,
    pub create_time: i64,
    pub killed: bool,
}

/// A merge result whose bytes differed from the leader's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mismatch {
    pub part: String,
    pub expected_crc32: u32,
    pub got_crc32: u32,
    /// The leader's part replaced ours.
    pub repaired: bool,
}

/// Mismatches kept for `system.part_checksum_mismatches`.
const MAX_MISMATCHES: usize = 100;

/// What survives a restart besides the part files.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PersistedState {
    pub applied: Option<LogId<NodeId>>,
    pub membership: StoredMembership<NodeId, openraft::BasicNode>,
    pub dedup: DedupWindow,
    pub mutations: Vec<MutationRecord>,
    #[serde(default)]
    pub mismatches: Vec<Mismatch>,
    /// Mismatches seen since the replica was created (the metric).
    #[serde(default)]
    pub mismatch_count: u64,
    /// Merges applied from the log and still running (restarted on open).
    #[serde(default)]
    pub pending_merges: Vec<crate::merge_jobs::PendingMerge>,
    /// Inline-inserted parts not fsynced yet (see `checkpoint`).
    #[serde(default)]
    pub unsynced: Vec<crate::checkpoint::UnsyncedPart>,
    /// Inserted blocks committed to the group and not dropped since: what
    /// its active parts must hold (see [`Replica::check_blocks`]). `None`
    /// for a replica created before the count existed (not checked).
    #[serde(default)]
    pub blocks: Option<u64>,
}

/// Bytes a command needs that this replica does not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    /// The part wanted (or any active part covering it).
    pub part: PartName,
    /// A staging directory name to ask for first.
    pub staged_id: Option<String>,
    /// Nodes to ask, in order.
    pub from: Vec<NodeId>,
    /// A merge result: when no member has it (nor anything covering it)
    /// round after round, nobody will make it — its sources were merged
    /// into something else — and the merge is skipped instead.
    pub may_not_exist: bool,
}

/// Outcome of one attempt to apply a command.
#[derive(Debug)]
pub enum Step {
    Done(Response),
    Need(Missing),
}

pub(crate) struct State {
    pub(crate) persisted: PersistedState,
    pub(crate) parts: PartSet,
    /// Until the applied index reaches this, the active parts may hold
    /// blocks not applied here yet (parts found on disk at open, or a
    /// peer's part covering blocks further on in the log), so the block
    /// count is not checked.
    pub(crate) catch_up_to: i64,
}

/// One group's replica on this node.
pub struct Replica {
    pub group: GroupId,
    pub node: NodeId,
    pub table: Arc<storage::Table>,
    pub settings: ReplicaSettings,
    dir: PathBuf,
    pub(crate) db: Arc<LogDb>,
    state: Mutex<State>,
    /// Serialises applying and snapshot installation.
    apply_lock: Mutex<()>,
    /// Merges running in the background.
    pub merges: crate::merge_jobs::MergeJobs,
    /// When the staging area was last swept (sweeping a thousand idle
    /// groups' directories every few hundred milliseconds costs real CPU).
    staging_swept: Mutex<Option<std::time::Instant>>,
    /// The sequence numbers of the dedup rows in RocksDB (`None`: unknown,
    /// the next write rewrites them all). Held through a whole persist.
    dedup_rows: Mutex<Option<std::ops::Range<u64>>>,
    /// Serializes writing in-memory parts out (checkpoints, fetches).
    pub(crate) store_lock: Mutex<()>,
    /// Fetches merge results from the replica that merged them.
    /// Set by the state machine that fetches merge results from peers
    /// (without one, e.g. in unit tests, every merge runs here).
    pub(crate) fetches_merges: std::sync::atomic::AtomicBool,
    /// Merges started by applying whose result a peer makes, for the state
    /// machine to fetch.
    pub(crate) peer_merges: Mutex<Vec<crate::merge_exec::PeerMerge>>,
    /// Set when the node stops: background fetches give up.
    pub(crate) stopped: std::sync::atomic::AtomicBool,
    /// Set when the replica found its invariant broken: the group stopped
    /// here, and reads refuse to serve its parts.
    pub broken: std::sync::OnceLock<String>,
    /// The latest failure of a part rewrite, by mutation version.
    pub(crate) failures: Mutex<std::collections::BTreeMap<i64, crate::mutation_exec::MutationFailure>>,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica").field("group", &self.group).field("node", &self.node).finish()
    }
}

pub(crate) fn st(e: storage::StorageError) -> ReplicationError {
    ReplicationError::Storage(e)
}

/// Name of the only subdirectory of a staging or fetch directory: the part.
pub fn part_dir_in(dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.is_dir() && p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.parse::<PartName>().is_ok()))
}

impl Replica {
    /// Opens the replica in `dir` (parts under `dir/parts`, staging under
    /// `dir/staging`), recovering parts and the persisted state.
    pub fn open(
        group: GroupId,
        node: NodeId,
        dir: &Path,
        table: Arc<storage::Table>,
        settings: ReplicaSettings,
        db: Arc<LogDb>,
    ) -> Result<Replica> {
        let parts_dir = dir.join("parts");
        let staging = dir.join("staging");
        for d in [&parts_dir, &staging] {
            std::fs::create_dir_all(d).map_err(|e| ReplicationError::io(d, e))?;
        }
        let (parts, report) = part_set::recover(&parts_dir).map_err(st)?;
        if !report.detached.is_empty() {
            tracing::warn!(group, detached = ?report.detached, "parts detached at startup");
        }
        let mut persisted: PersistedState = match db.get_meta(group, MetaTag::Applied).map_err(raft_err)? {
            Some(v) => crate::log_store::decode(&v).map_err(ReplicationError::Corrupted)?,
            None => PersistedState { blocks: Some(0), ..Default::default() },
        };
        // The window lives in its own rows (older states carried it inline:
        // then the first write rewrites it as rows).
        let dedup_rows = if persisted.dedup.is_empty() {
            let rows = db.dedup_rows(group).map_err(raft_err)?;
            if let Some((first, _)) = rows.first() {
                let entries = rows
                    .iter()
                    .map(|(_, v)| crate::log_store::decode::<DedupEntry>(v))
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(ReplicationError::Corrupted)?;
                persisted.dedup = DedupWindow::from_rows(*first, entries);
            }
            let end = persisted.dedup.seq_range().end;
            Some(rows.first().map_or(end, |(first, _)| *first)..end)
        } else {
            persisted.dedup.reindex();
            None
        };
        let replica = Replica {
            group,
            node,
            table,
            settings,
            dir: dir.to_path_buf(),
            db,
            state: Mutex::new(State {
                persisted,
                catch_up_to: parts.active().map(|p| p.name.max_block).max().unwrap_or(0),
                parts,
            }),
            apply_lock: Mutex::new(()),
            merges: Default::default(),
            staging_swept: Mutex::new(None),
            dedup_rows: Mutex::new(dedup_rows),
            store_lock: Mutex::new(()),
            fetches_merges: Default::default(),
            peer_merges: Default::default(),
            stopped: Default::default(),
            broken: Default::default(),
            failures: Default::default(),
        };
        replica.recover_unsynced()?;
        Ok(replica)
    }

    /// Restarts the merges that were running when the replica stopped.
    pub fn resume_merges(self: &Arc<Self>) -> Result<()> {
        let pending = self.state().persisted.pending_merges.clone();
        for p in pending {
            let names: Vec<PartName> = p.sources.iter().map(|s| s.parse()).collect::<Result<_, _>>().map_err(st)?;
            let parts: Vec<Arc<Part>> = {
                let s = self.state();
                names.iter().filter_map(|n| s.parts.get(n).cloned()).collect()
            };
            if parts.len() == names.len() && !p.mutations.is_empty() {
                let (Some(source), Some(last)) = (parts.into_iter().next(), p.mutations.iter().max()) else { continue };
                let result = source.name.mutated(*last);
                self.start_mutation(source, result, p.mutations.clone());
            } else if parts.len() == names.len() {
                self.start_merge(names, parts, p.mode, p.merger);
            } else {
                // Recovery already found the result (it covers the sources).
                self.state().persisted.pending_merges.retain(|x| *x != p);
            }
        }
        Ok(())
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Where the active parts live.
    pub fn parts_dir(&self) -> PathBuf {
        self.dir.join("parts")
    }

    /// Where staged blocks wait for their commit.
    pub fn staging_dir(&self) -> PathBuf {
        self.dir.join("staging")
    }

    /// The active parts, for reads.
    pub fn snapshot(&self) -> Vec<Arc<Part>> {
        self.state().parts.snapshot()
    }

    /// Outdated parts still on disk.
    pub fn outdated(&self) -> Vec<Arc<Part>> {
        self.state().parts.outdated().cloned().collect()
    }

    /// The last applied log id and membership.
    pub fn applied(&self) -> (Option<LogId<NodeId>>, StoredMembership<NodeId, openraft::BasicNode>) {
        let s = self.state();
        (s.persisted.applied, s.persisted.membership.clone())
    }

    /// The recorded mutations, oldest first.
    pub fn mutations(&self) -> Vec<MutationRecord> {
        self.state().persisted.mutations.clone()
    }

    /// Ids held by the dedup window.
    pub fn dedup_len(&self) -> usize {
        self.state().persisted.dedup.len()
    }

    /// Merge candidates for the selector: parts merge only with parts on the
    /// same side of every pending mutation, and never with or across a part
    /// a running merge takes (passed as busy, see [`Candidate::busy`]).
    pub fn merge_candidates(&self) -> Vec<Candidate> {
        let s = self.state();
        let live: Vec<i64> = s.persisted.mutations.iter().filter(|m| !m.killed).map(|m| m.version).collect();
        s.parts
            .active()
            .map(|p| {
                let dv = p.name.data_version();
                let barrier = live.iter().copied().find(|v| *v > dv).unwrap_or(i64::MAX);
                let busy = self.merges.is_source(&p.name);
                Candidate { name: p.name.clone(), bytes: p.meta.bytes_on_disk, barrier, busy }
            })
            .collect()
    }

    /// Records a non-state entry (blank, membership) as applied.
    pub fn apply_meta(
        &self,
        log_id: LogId<NodeId>,
        membership: Option<StoredMembership<NodeId, openraft::BasicNode>>,
    ) -> Result<()> {
        let mut s = self.state();
        s.persisted.applied = Some(log_id);
        if let Some(m) = membership {
            s.persisted.membership = m;
        }
        Ok(())
    }

    /// Writes the applied state (not synced: the log is the durable record
    /// and re-applying is idempotent).
    /// The dedup window goes as one row per entry, and only the rows added
    /// since the last write are written.
    pub fn persist(&self) -> Result<()> {
        let corrupt = |e: serde_json::Error| ReplicationError::Corrupted(e.to_string());
        let mut written = self.dedup_rows.lock().unwrap_or_else(|e| e.into_inner());
        let (bytes, delete, rows, kept) = {
            let mut s = self.state();
            // Parts merged away since need no checkpoint (merge results are
            // synced); dropping them here keeps the state this encodes small
            // — it grew by one entry per small insert until the next checkpoint.
            let State { parts, persisted, .. } = &mut *s;
            persisted.unsynced.retain(|u| u.part.parse::<PartName>().is_ok_and(|n| parts.get(&n).is_some()));
            let range = s.persisted.dedup.seq_range();
            let incremental =
                written.clone().filter(|w| w.start <= range.start && range.start <= w.end && w.end <= range.end);
            let rows = s
                .persisted
                .dedup
                .entries_from(incremental.as_ref().map_or(range.start, |w| w.end))
                .map(|(q, e)| crate::log_store::encode(e).map(|v| (q, v)))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(corrupt)?;
            let entries = s.persisted.dedup.take_entries();
            let bytes = crate::log_store::encode(&s.persisted);
            s.persisted.dedup.restore(entries);
            // Only the rows that left the window are deleted; a full
            // rewrite first deletes every old row.
            let delete = incremental.map_or(0..u64::MAX, |w| w.start..range.start);
            (bytes.map_err(corrupt)?, delete, rows, range)
        };
        self.db.put_state(self.group, &bytes, delete, &rows).map_err(raft_err)?;
        *written = Some(kept);
        Ok(())
    }
}

pub(crate) fn remove_dir(d: &Path) {
    if d.exists()
        && let Err(e) = std::fs::remove_dir_all(d)
    {
        tracing::warn!(dir = %d.display(), error = %e, "cannot remove directory");
    }
}

pub(crate) fn raft_err(e: openraft::StorageError<NodeId>) -> ReplicationError {
    ReplicationError::Raft(e.to_string())
}
