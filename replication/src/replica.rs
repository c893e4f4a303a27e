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

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::{LogId, StoredMembership};
use serde::{Deserialize, Serialize};
use storage::merge::selector::Candidate;
use storage::mutation::MutationCommand;
use storage::part::adopt::{adopt_in_memory, adopt_part};
use storage::part::checksum::FileChecksum;
use storage::part_set::{self, PartSet};
use storage::{Part, PartName};

use crate::command::{Command, Response};
use crate::dedup::{DedupEntry, DedupWindow};
use crate::error::{ReplicationError, Result};
use crate::log_store::{LogDb, MetaTag};
use crate::{GroupId, NodeId};

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

/// One part in a snapshot manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestPart {
    pub name: String,
    pub files: std::collections::BTreeMap<String, FileChecksum>,
}

/// A snapshot: the applied state plus the names and checksums of the active
/// parts; the bytes are fetched from `source` (or any member) on install.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub state: PersistedState,
    pub parts: Vec<ManifestPart>,
    pub source: NodeId,
}

/// The fields of an `Insert` command, borrowed.
struct InsertBlock<'a> {
    block_id: &'a str,
    staged_id: &'a str,
    partition_id: &'a str,
    files: &'a std::collections::BTreeMap<String, FileChecksum>,
    holders: &'a [NodeId],
    ts: i64,
    inline: &'a Option<std::collections::BTreeMap<String, String>>,
    batched: &'a [String],
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
    pub(crate) fetcher: std::sync::OnceLock<Arc<dyn crate::state_machine::PartFetcher>>,
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

fn st(e: storage::StorageError) -> ReplicationError {
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
            fetcher: Default::default(),
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

    /// Applies one command at `log_id`. `fetched` is a directory holding a
    /// part fetched for an earlier [`Step::Need`] of the same command.
    pub fn apply(self: &Arc<Self>, log_id: LogId<NodeId>, cmd: &Command, fetched: Option<&Path>) -> Result<Step> {
        let _g = self.apply_lock.lock().unwrap_or_else(|e| e.into_inner());
        let index = log_id.index as i64;
        // Commands that change parts wait for the running merges they touch,
        // so every replica reaches the same part set in the same log order.
        // Only those: merges run at a lower CPU priority, and the log (and
        // every insert behind it) must not wait on unrelated ones.
        match cmd {
            Command::Insert { .. } | Command::Offload { .. } | Command::KillMutation { .. } => {}
            // A merge of parts a running merge takes. (One of a running
            // merge's result fetches its own result instead, see `apply_merge`.)
            // And the rewrite of a part it takes, if that still runs here
            // (every replica then merges the same mutated part).
            Command::Merge { sources, .. } => {
                let names: Vec<PartName> = sources.iter().filter_map(|s| s.parse().ok()).collect();
                self.merges.wait_for(&[], &names);
                self.merges.wait_for_mutations(&names);
            }
            Command::MutatePart { part, .. } => {
                let name: Vec<PartName> = part.parse().ok().into_iter().collect();
                self.merges.wait_for(&[], &name);
            }
            // Our copy of the checked part, if we merge it, must be done.
            Command::CheckPart { part, .. } => {
                let name: Vec<PartName> = part.parse().ok().into_iter().collect();
                self.merges.wait_for(&name, &[]);
            }
            // Recording a mutation touches no part.
            Command::Mutate { .. } => {}
            // Drops touch every part: urgent, a replica waiting for a peer's
            // merge result merges itself instead, and a rewrite failing on
            // its data gives up (the drop covers its part anyway).
            Command::DropPartition { .. } => self.merges.wait_all(true),
        }
        let step = match cmd {
            Command::Insert { block_id, staged_id, partition_id, files, holders, ts, inline, batched, .. } => {
                let block = InsertBlock { block_id, staged_id, partition_id, files, holders, ts: *ts, inline, batched };
                self.apply_insert(index, block, fetched)?
            }
            Command::Merge { sources, mode, merger } => self.apply_merge(index, sources, *mode, *merger, fetched)?,
            Command::Mutate { commands, text, ts } => self.apply_mutate(index, commands, text, *ts),
            Command::MutatePart { part, version } => self.apply_mutate_part(part, *version, fetched)?,
            Command::KillMutation { version } => self.apply_kill(*version),
            Command::DropPartition { partition_id } => self.apply_drop(index, partition_id)?,
            Command::Offload { .. } => Step::Done(Response::Done),
            Command::CheckPart { part, files, source } => self.apply_check(part, files, *source, fetched)?,
        };
        if let Step::Done(_) = step {
            self.state().persisted.applied = Some(log_id);
            self.check_blocks()?;
        }
        Ok(step)
    }

    /// The invariant every applied entry keeps (DESIGN §4; issue 16): the
    /// active parts hold exactly the inserted blocks committed to the
    /// group, minus those dropped, and no two of them overlap (the part set
    /// refuses that). Each part counts the blocks whose rows it holds (1
    /// for an insert, the sum of its sources for a merge, its source's for
    /// a mutation), so a merge or mutation result that took the place of a
    /// part it does not hold, or an entry that lost a block, shows as fewer
    /// blocks held than committed — although the parts' names still cover
    /// every block. A violation stops the group on this replica.
    pub fn check_blocks(&self) -> Result<()> {
        let s = self.state();
        let Some(committed) = s.persisted.blocks else { return Ok(()) };
        let applied = s.persisted.applied.map_or(0, |l| l.index as i64);
        if applied < s.catch_up_to {
            return Ok(());
        }
        // Parts written before blocks were counted: nothing to check.
        let Some(held) = s.parts.active().map(|p| p.meta.blocks).sum::<Option<u64>>() else { return Ok(()) };
        if held == committed {
            return Ok(());
        }
        let parts: Vec<String> =
            s.parts.active().map(|p| format!("{} ({})", p.name, p.meta.blocks.unwrap_or(0))).collect();
        Err(ReplicationError::InvariantViolated(format!(
            "group {} at log index {applied}: its active parts hold {held} inserted blocks, {committed} were committed \
             and not dropped; parts (blocks): {}",
            self.group,
            parts.join(", ")
        )))
    }

    /// Notes a part adopted from a peer that may hold blocks this replica
    /// applies only later (see [`State::catch_up_to`]).
    pub(crate) fn adopted_from_peer(&self, name: &PartName) {
        let mut s = self.state();
        s.catch_up_to = s.catch_up_to.max(name.max_block);
    }

    /// Whether every source of a merge that is missing here is held by
    /// an active part covering it: an earlier merge in the log took it (on
    /// every replica: applying this merge waited for merges taking its
    /// sources), or this replica adopted a peer's part of another shape.
    /// Either way its rows are here, and the merge is skipped at once —
    /// not after rounds of asking every member for a result that nobody
    /// will make, with the group's log stuck behind it (for good when
    /// every node restarts at once: each re-applies its log before it
    /// serves its peers). Skipping loses nothing: every part stays active.
    fn missing_sources_are_covered(&self, names: &[PartName]) -> bool {
        let s = self.state();
        names.iter().filter(|n| s.parts.get(n).is_none()).all(|n| s.parts.covering(n).is_some())
    }

    /// Records a merge at `log_id` as applied without doing it: its sources
    /// are gone here and no member has its result `part` — an earlier merge
    /// in the log took them (a leader proposed over parts it did not know
    /// were merging). Every replica comes to the same conclusion, and the
    /// rows are all still there in the parts that took them.
    pub fn skip(&self, log_id: LogId<NodeId>, part: &str) {
        let _g = self.apply_lock.lock().unwrap_or_else(|e| e.into_inner());
        self.skip_stale(log_id.index as i64, part);
        self.state().persisted.applied = Some(log_id);
    }

    fn skip_stale(&self, index: i64, part: &str) {
        tracing::warn!(
            group = self.group,
            index,
            part,
            "merge skipped: its sources were merged by an earlier entry and no replica has its result"
        );
    }

    fn apply_insert(&self, index: i64, b: InsertBlock<'_>, fetched: Option<&Path>) -> Result<Step> {
        let staged = self.staging_dir().join(b.staged_id);
        let name = PartName::new_insert(b.partition_id, index);
        let ids = || std::iter::once(b.block_id).chain(b.batched.iter().map(|s| s.as_str()));
        let duplicates: Vec<String> = {
            let s = self.state();
            ids().filter(|id| s.persisted.dedup.contains(id)).map(str::to_string).collect()
        };
        if !duplicates.is_empty() {
            remove_dir(&staged);
            return Ok(Step::Done(match b.batched.is_empty() {
                true => Response::Deduplicated { block_id: b.block_id.to_string() },
                false => Response::BatchRejected { duplicates },
            }));
        }
        if self.state().parts.covering(&name).is_none() && !lose_part_point(self.node) {
            let part = if let (Some(files), None) = (b.inline, fetched) {
                // Kept in memory: the log holds these bytes until a merge
                // absorbs the part or the next checkpoint writes it out.
                let bytes = crate::staging::decode_inline(files)?;
                let part = adopt_in_memory(&bytes, b.files, &self.parts_dir(), &name).map_err(st)?;
                let unsynced = crate::checkpoint::UnsyncedPart { index: index as u64, part: name.to_string() };
                self.state().persisted.unsynced.push(unsynced);
                part
            } else {
                let src = match fetched.and_then(part_dir_in) {
                    Some(d) => d,
                    None => match part_dir_in(&staged).filter(|d| files_match(d, b.files)) {
                        Some(d) => d,
                        None => {
                            return Ok(Step::Need(Missing {
                                part: name,
                                staged_id: Some(b.staged_id.to_string()),
                                from: b.holders.iter().copied().filter(|n| *n != self.node).collect(),
                                may_not_exist: false,
                            }));
                        }
                    },
                };
                let src_name = src.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
                let fetched_name = src_name.parse::<PartName>().map_err(st)?;
                if fetched.is_some() && fetched_name.contains(&name) && fetched_name != name {
                    // A peer had already merged the block: take its covering part.
                    self.adopted_from_peer(&fetched_name);
                    adopt_part(&src, &self.parts_dir(), &fetched_name).map_err(st)?
                } else {
                    adopt_part(&src, &self.parts_dir(), &name).map_err(st)?
                }
            };
            self.add_part(part)?;
        }
        let window = self.settings.replicated_deduplication_window;
        let seconds = self.settings.replicated_deduplication_window_seconds;
        {
            let mut s = self.state();
            if let Some(b) = s.persisted.blocks.as_mut() {
                *b += 1;
            }
            for id in ids() {
                let entry = DedupEntry { block_id: id.to_string(), part: name.to_string(), ts: b.ts };
                s.persisted.dedup.add(entry, window, seconds);
            }
        }
        remove_dir(&staged);
        Ok(Step::Done(Response::Inserted { part: name.to_string() }))
    }

    /// Adds a part, tolerating one that an active part already covers.
    pub(crate) fn add_part(&self, part: Part) -> Result<()> {
        let mut s = self.state();
        if s.parts.covering(&part.name).is_some() {
            return Ok(());
        }
        s.parts.add(Arc::new(part)).map_err(st)?;
        Ok(())
    }

    fn apply_merge(
        self: &Arc<Self>,
        index: i64,
        sources: &[String],
        mode: storage::ReduceMode,
        merger: Option<NodeId>,
        fetched: Option<&Path>,
    ) -> Result<Step> {
        let names: Vec<PartName> =
            sources.iter().map(|s| s.parse::<PartName>()).collect::<Result<_, _>>().map_err(st)?;
        let Some(result) = PartName::merged(&names) else { return Ok(Step::Done(Response::Done)) };
        if self.state().parts.covering(&result).is_some() {
            return Ok(Step::Done(self.merged(&result)));
        }
        if let Some(src) = fetched.and_then(part_dir_in) {
            let got = src.file_name().and_then(|n| n.to_str()).unwrap_or_default().parse::<PartName>().map_err(st)?;
            self.adopted_from_peer(&got);
            let part = adopt_part(&src, &self.parts_dir(), &got).map_err(st)?;
            self.add_part(part)?;
            return Ok(Step::Done(self.merged(&result)));
        }
        let (parts, foreign): (Vec<Arc<Part>>, Option<PartName>) = {
            let s = self.state();
            let foreign = s.parts.active().find(|p| result.intersects(&p.name) && !names.contains(&p.name));
            (names.iter().filter_map(|n| s.parts.get(n).cloned()).collect(), foreign.map(|p| p.name.clone()))
        };
        if let (true, Some(other)) = (parts.len() == names.len(), foreign) {
            // Its sources are here, but so is a part in its block range that
            // it does not take (it was chosen around a part a running merge
            // had taken). Its result would claim that part's blocks without
            // its rows: the merge is refused, on every replica alike — the
            // running merge's sources or result are in the range everywhere.
            tracing::warn!(
                group = self.group,
                part = %result,
                other = %other,
                "merge refused: its block range holds a part that is not one of its sources"
            );
            return Ok(Step::Done(Response::Done));
        }
        if let (true, Some(version)) = (parts.len() == names.len(), self.straddled_mutation(&names)) {
            // Selection keeps parts on the same side of every live mutation;
            // one that did not would let rows escape it. Refused everywhere
            // alike: every replica applied the same mutations.
            tracing::warn!(
                group = self.group,
                part = %result,
                version,
                "merge refused: it mixes parts that mutation {version} still has to rewrite with parts it has"
            );
            return Ok(Step::Done(Response::Done));
        }
        if parts.len() != names.len() {
            // Some source is gone here (dropped, or this replica fetched a
            // covering part): nothing to merge if nothing of the range is left.
            let any_left = {
                let s = self.state();
                s.parts.active().any(|p| result.contains(&p.name))
            };
            if !any_left {
                return Ok(Step::Done(Response::Done));
            }
            if self.missing_sources_are_covered(&names) {
                self.skip_stale(index, &result.to_string());
                return Ok(Step::Done(Response::Done));
            }
            // A source is gone with nothing covering it (quarantined as
            // torn): another replica may make the result, or hold a part
            // covering it.
            return Ok(Step::Need(Missing { part: result, staged_id: None, from: vec![], may_not_exist: true }));
        }
        let merger =
            merger.filter(|m| *m != self.node && self.settings.execute_merges_on_single_replica_time_threshold > 0);
        let pending = crate::merge_jobs::PendingMerge { sources: sources.to_vec(), mode, merger, mutations: vec![] };
        self.state().persisted.pending_merges.push(pending);
        self.start_merge(names, parts, mode, merger);
        Ok(Step::Done(Response::Merged { part: result.to_string(), files: Default::default() }))
    }

    pub(crate) fn merged(&self, result: &PartName) -> Response {
        let files = self.state().parts.get(result).map(|p| p.meta.files.clone()).unwrap_or_default();
        Response::Merged { part: result.to_string(), files }
    }

    /// The table a merge writes with; a test failpoint swaps in different
    /// page settings, which changes the bytes but not the rows, as a writer
    /// of another version could.
    pub(crate) fn merge_table(&self) -> Arc<storage::Table> {
        fail::fail_point!("merge:nondeterministic", |_| {
            let mut def = self.table.def.clone();
            def.settings.index_granularity = 3;
            storage::Table::new(def).unwrap_or_else(|_| self.table.clone())
        });
        self.table.clone()
    }

    /// Compares our copy of a merge result with the leader's checksums;
    /// a differing copy is detached and replaced by the leader's.
    fn apply_check(
        &self,
        part: &str,
        files: &std::collections::BTreeMap<String, FileChecksum>,
        source: NodeId,
        fetched: Option<&Path>,
    ) -> Result<Step> {
        let name: PartName = part.parse().map_err(st)?;
        let crc = |f: &std::collections::BTreeMap<String, FileChecksum>| {
            f.get(storage::part::meta::DATA_FILE).map(|c| c.crc32).unwrap_or(0)
        };
        if let Some(src) = fetched.and_then(part_dir_in) {
            let got = adopt_part(&src, &self.parts_dir(), &name).map_err(st)?;
            let mut s = self.state();
            s.parts.add(Arc::new(got)).map_err(st)?;
            if let Some(m) = s.persisted.mismatches.iter_mut().rev().find(|m| m.part == part) {
                m.repaired = true;
            }
            tracing::info!(group = self.group, part, "merge result replaced by the leader's copy");
            return Ok(Step::Done(Response::Done));
        }
        let ours = self.state().parts.get(&name).cloned();
        let Some(ours) = ours else { return Ok(Step::Done(Response::Done)) };
        if ours.meta.files == *files {
            return Ok(Step::Done(Response::Done));
        }
        tracing::error!(group = self.group, part, "merge result differs from the leader's: replacing it");
        {
            let mut s = self.state();
            s.persisted.mismatch_count += 1;
            s.persisted.mismatches.push(Mismatch {
                part: part.to_string(),
                expected_crc32: crc(files),
                got_crc32: crc(&ours.meta.files),
                repaired: false,
            });
            let excess = s.persisted.mismatches.len().saturating_sub(MAX_MISMATCHES);
            s.persisted.mismatches.drain(..excess);
            s.parts.quarantine(&name, "checksums differ from the leader's merge result").map_err(st)?;
        }
        Ok(Step::Need(Missing { part: name, staged_id: None, from: vec![source], may_not_exist: false }))
    }

    /// Merge results that differed from the leader's, newest last.
    pub fn mismatches(&self) -> (u64, Vec<Mismatch>) {
        let s = self.state();
        (s.persisted.mismatch_count, s.persisted.mismatches.clone())
    }

    fn apply_drop(&self, index: i64, partition_id: &str) -> Result<Step> {
        let names: Vec<PartName> = self
            .state()
            .parts
            .active()
            .filter(|p| p.name.partition_id == partition_id)
            .map(|p| p.name.clone())
            .collect();
        let Some(mut cover) = PartName::merged(&names) else { return Ok(Step::Done(Response::Done)) };
        // Named by the drop's index, not its parts' mutations: a rewrite
        // given up here may have finished on another replica, and every
        // replica must make the same part.
        cover.mutation = cover.mutation.max(index);
        let w = storage::part::writer::PartWriter::create(&self.table, &self.parts_dir(), cover, "drop")
            .map_err(st)?
            .with_blocks(Some(0));
        let empty = w.finish(vec![], None).map_err(st)?;
        let mut s = self.state();
        s.parts.replace(&names, Arc::new(empty)).map_err(st)?;
        // Every block of the group was in the partition dropped.
        if s.persisted.blocks.is_some() {
            s.persisted.blocks = Some(0);
        }
        Ok(Step::Done(Response::Done))
    }

    /// The snapshot manifest of the current applied state.
    pub fn manifest(&self) -> Manifest {
        let s = self.state();
        Manifest {
            state: s.persisted.clone(),
            parts: s
                .parts
                .active()
                .map(|p| ManifestPart { name: p.name.to_string(), files: p.meta.files.clone() })
                .collect(),
            source: self.node,
        }
    }

    /// Parts of `manifest` this replica lacks.
    pub fn missing_for(&self, manifest: &Manifest) -> Result<Vec<PartName>> {
        let s = self.state();
        let mut out = Vec::new();
        for p in &manifest.parts {
            let name: PartName = p.name.parse().map_err(st)?;
            let have = s.parts.get(&name).is_some_and(|x| x.meta.files == p.files);
            if !have {
                out.push(name);
            }
        }
        Ok(out)
    }

    /// Installs a snapshot whose missing parts were fetched into the
    /// directories of `fetched`: the active set becomes exactly the manifest's.
    pub fn install(&self, manifest: &Manifest, fetched: &[PathBuf]) -> Result<()> {
        let _g = self.apply_lock.lock().unwrap_or_else(|e| e.into_inner());
        self.merges.wait_all(true);
        for dir in fetched {
            let Some(src) = part_dir_in(dir) else { continue };
            let name = src.file_name().and_then(|n| n.to_str()).unwrap_or_default().parse::<PartName>().map_err(st)?;
            let part = adopt_part(&src, &self.parts_dir(), &name).map_err(st)?;
            remove_dir(dir);
            let mut s = self.state();
            let intersecting: Vec<PartName> =
                s.parts.active().filter(|p| p.name.intersects(&name)).map(|p| p.name.clone()).collect();
            for n in intersecting {
                s.parts.remove(&n);
            }
            s.parts.add(Arc::new(part)).map_err(st)?;
        }
        let mut s = self.state();
        let keep: std::collections::HashSet<&str> = manifest.parts.iter().map(|p| p.name.as_str()).collect();
        let extra: Vec<PartName> =
            s.parts.active().filter(|p| !keep.contains(p.name.to_string().as_str())).map(|p| p.name.clone()).collect();
        for n in extra {
            s.parts.remove(&n);
        }
        let mut persisted = manifest.state.clone();
        persisted.dedup.reindex();
        s.persisted = persisted;
        s.catch_up_to = s.parts.active().map(|p| p.name.max_block).max().unwrap_or(0);
        drop(s);
        *self.dedup_rows.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.persist()
    }

    /// Deletes outdated parts no reader holds any more, and staged blocks
    /// older than `staging_ttl` whose proposal never committed.
    pub fn cleanup(&self, grace: std::time::Duration, staging_ttl: std::time::Duration) -> Result<()> {
        self.checkpoint()?;
        let expired = self.state().parts.take_expired(grace);
        for p in expired {
            part_set::remove_part_files(&p).map_err(st)?;
        }
        {
            let mut swept = self.staging_swept.lock().unwrap_or_else(|e| e.into_inner());
            let due = swept.is_none_or(|t| t.elapsed() >= staging_ttl.min(std::time::Duration::from_secs(60)));
            if !due {
                return Ok(());
            }
            *swept = Some(std::time::Instant::now());
        }
        if let Ok(rd) = std::fs::read_dir(self.staging_dir()) {
            for e in rd.flatten() {
                let old = e.metadata().and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok());
                if old.is_some_and(|age| age > staging_ttl) {
                    tracing::info!(group = self.group, staged = ?e.file_name(), "removing a staged block that never committed");
                    remove_dir(&e.path());
                }
            }
        }
        Ok(())
    }

    /// Whether `want` names the result of a merge running here.
    pub fn is_merging(&self, want: &str) -> bool {
        want.parse::<PartName>().is_ok_and(|name| self.merges.running().iter().any(|(r, _)| *r == name))
    }

    /// Finds what a peer asks for: a staged block by id, or the active part
    /// containing `part`. Returns the part directory to stream.
    pub fn find_for_fetch(&self, want: &str) -> Option<PathBuf> {
        if !want.contains('/')
            && !want.contains("..")
            && let Some(d) = part_dir_in(&self.staging_dir().join(want))
        {
            return Some(d);
        }
        let name: PartName = want.parse().ok()?;
        let part = {
            let s = self.state();
            // A merge result the merging replica has already merged further is
            // still on disk for a while: a replica fetching it wants that one.
            s.parts.covering(&name).or_else(|| s.parts.outdated().find(|p| p.name == name)).cloned()?
        };
        if part.is_in_memory() {
            return match self.store_in_memory(&part) {
                Ok(true) => Some(part.dir.clone()),
                Ok(false) => None,
                Err(e) => {
                    tracing::warn!(group = self.group, part = %part.name, error = %e, "cannot write out a part to send");
                    None
                }
            };
        }
        Some(part.dir.clone())
    }
}

/// A test failpoint: `apply:lose-part` configured as `return(<node id>)`
/// makes that node apply an insert without adding its part — a replica
/// that lost a block behind its log's back (the invariant must catch it).
fn lose_part_point(node: NodeId) -> bool {
    let _ = node; // used only with failpoints compiled in
    fail::fail_point!("apply:lose-part", |arg: Option<String>| arg.and_then(|a| a.parse::<NodeId>().ok())
        == Some(node));
    false
}

fn files_match(dir: &Path, files: &std::collections::BTreeMap<String, FileChecksum>) -> bool {
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    storage::part::meta::PartMeta::read(dir, name).is_ok_and(|m| &m.files == files)
}

fn remove_dir(d: &Path) {
    if d.exists()
        && let Err(e) = std::fs::remove_dir_all(d)
    {
        tracing::warn!(dir = %d.display(), error = %e, "cannot remove directory");
    }
}

pub(crate) fn raft_err(e: openraft::StorageError<NodeId>) -> ReplicationError {
    ReplicationError::Raft(e.to_string())
}
