//! The one-node MergeTree engine: a table's parts in one directory, its
//! inserts (with the non-replicated deduplication window), background merges
//! and mutations recorded as `mutation_<version>.txt` and rewritten one part
//! at a time. The table-engine interface the SQL layer sees
//! (`coordinator::engine`) wraps it and keeps its work off async runtimes.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use arrow::array::RecordBatch;

use crate::error::{Result, StorageError};
use crate::merge::selector::{Candidate, SelectorSettings, select_merge, select_optimize};
use crate::merge::{ReduceMode, merge_parts};
use crate::mutation::{Mutation, MutationCommand, mutate_part};
use crate::part::writer::write_block;
use crate::part_set::{self, PartSet};
use crate::partition::split_by_partition;
use crate::{Part, PartName, backpressure};

/// `OPTIMIZE TABLE` options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OptimizeOptions {
    /// A partition id; `None` is every partition.
    pub partition_id: Option<String>,
    pub final_: bool,
    pub deduplicate: bool,
    pub cleanup: bool,
}

/// How one block of an insert is deduplicated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockDedup {
    /// `insert_deduplicate`; the table's window decides whether at all.
    pub deduplicate: bool,
    /// `insert_deduplication_token`.
    pub token: Option<String>,
    /// The block's index within its insert (with a token, the id is token + index).
    pub index: usize,
}

/// A merge in progress (`system.merges`).
#[derive(Debug, Clone)]
pub struct MergeInfo {
    pub partition_id: String,
    pub result_part_name: String,
    pub source_part_names: Vec<String>,
    pub is_mutation: bool,
    pub total_size_bytes_compressed: u64,
    pub total_rows: u64,
    pub started: std::time::Instant,
}

/// A mutation (`system.mutations`), as this replica sees it.
#[derive(Debug, Clone, Default)]
pub struct MutationInfo {
    pub mutation_id: String,
    /// The statement that recorded the mutation, as it was sent.
    pub statement: String,
    pub create_time: i64,
    pub block_number: i64,
    /// Parts this replica still has to rewrite.
    pub parts_to_do_names: Vec<String>,
    pub parts_to_do: u64,
    pub is_done: bool,
    /// The part whose rewrite failed last, when, and why (empty: none).
    pub latest_failed_part: String,
    pub latest_fail_time: i64,
    pub latest_fail_reason: String,
}

/// Turns a recorded mutation statement back into storage commands (the SQL
/// layer's parser: storage does not parse SQL).
pub type MutationParser = dyn Fn(&str) -> std::result::Result<Vec<MutationCommand>, String> + Send + Sync;

#[derive(Debug)]
struct State {
    parts: PartSet,
    next_block: i64,
    mutations: Vec<Mutation>,
    /// Block numbers given to inserts whose parts are not in `parts` yet.
    /// No merge may span one (its result would cover, and so swallow, the
    /// part when it arrives), and mutations and drops wait for those below
    /// them — ClickHouse's ephemeral block-number locks.
    inflight: std::collections::BTreeSet<i64>,
}

/// Releases an insert's in-flight block numbers when it ends, added or failed.
struct InflightBlocks<'a> {
    table: &'a LocalTable,
    blocks: std::ops::Range<i64>,
}

impl Drop for InflightBlocks<'_> {
    fn drop(&mut self) {
        let mut s = self.table.state();
        for b in self.blocks.clone() {
            s.inflight.remove(&b);
        }
    }
}

/// A MergeTree table on this node.
#[derive(Debug)]
pub struct LocalTable {
    /// `db.table`, for logs.
    name: String,
    table: Arc<crate::Table>,
    dir: PathBuf,
    state: Mutex<State>,
    /// Serialises merges and mutations of this table.
    rewrite: Mutex<()>,
    merges_stopped: AtomicBool,
    /// Ids of recent blocks (`non_replicated_deduplication_window`); held
    /// for the whole insert so a concurrent retry cannot slip past.
    dedup: Mutex<crate::dedup::DedupLog>,
    /// The merge or part mutation running now, for `system.merges`.
    running: Mutex<Option<MergeInfo>>,
    /// The latest failed part rewrite of each mutation.
    failures: Mutex<std::collections::BTreeMap<i64, Failure>>,
    /// A failed rewrite is retried no sooner than this.
    retry_at: Mutex<Option<std::time::Instant>>,
}

/// A part rewrite that failed (`system.mutations`' `latest_fail_*`).
#[derive(Debug, Clone)]
struct Failure {
    part: String,
    reason: String,
    time: i64,
}

/// Pause before a failed part rewrite is tried again.
const MUTATION_RETRY: Duration = Duration::from_secs(1);

fn io(path: &Path, e: std::io::Error) -> StorageError {
    StorageError::io(path, e)
}

fn write_durably(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes)
        .and_then(|_| std::fs::File::open(path)?.sync_all())
        .and_then(|_| std::fs::File::open(path.parent().unwrap_or(Path::new(".")))?.sync_all())
        .map_err(|e| io(path, e))
}

fn remove_durably(path: &Path) -> Result<()> {
    std::fs::remove_file(path)
        .and_then(|_| std::fs::File::open(path.parent().unwrap_or(Path::new(".")))?.sync_all())
        .map_err(|e| io(path, e))
}

/// Deletes the parts of inserts that were cut off before all their parts
/// were written (`insert_<first>_<last>.pending` still present): an insert
/// is all its partitions' parts or none of them.
fn roll_back_pending_inserts(dir: &Path) -> Result<()> {
    let mut ranges = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| io(dir, e))?.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if let Some((a, b)) =
            name.strip_prefix("insert_").and_then(|n| n.strip_suffix(".pending")).and_then(|r| r.split_once('_'))
            && let (Ok(a), Ok(b)) = (a.parse::<i64>(), b.parse::<i64>())
        {
            ranges.push((a, b, e.path()));
        }
    }
    for (a, b, marker) in ranges {
        for e in std::fs::read_dir(dir).map_err(|e| io(dir, e))?.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if let Ok(p) = name.parse::<PartName>()
                && p.level == 0
                && p.min_block >= a
                && p.max_block <= b
            {
                tracing::warn!(part = %name, "removing a part of an insert that did not complete");
                std::fs::remove_dir_all(e.path()).map_err(|x| io(&e.path(), x))?;
            }
        }
        remove_durably(&marker)?;
    }
    Ok(())
}

impl LocalTable {
    /// Opens (or creates) the table in `dir`, recovering its parts and
    /// finishing interrupted mutations.
    pub fn open(dir: &Path, name: &str, table: Arc<crate::Table>, parse: &MutationParser) -> Result<LocalTable> {
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        roll_back_pending_inserts(dir)?;
        let (parts, report) = part_set::recover(dir)?;
        if !report.detached.is_empty() {
            tracing::warn!(table = %name, detached = ?report.detached, "parts detached at startup");
        }
        let mut mutations = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| io(dir, e))?.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if let Some(v) = name.strip_prefix("mutation_").and_then(|n| n.strip_suffix(".txt")) {
                let corrupted = |reason: String| StorageError::CorruptedFile { path: entry.path(), reason };
                let version: i64 = v.parse().map_err(|_| corrupted("not a mutation file name".into()))?;
                let text = std::fs::read_to_string(entry.path()).map_err(|e| io(&entry.path(), e))?;
                mutations.push(Mutation { version, commands: parse(&text).map_err(corrupted)? });
            }
        }
        mutations.sort_by_key(|m| m.version);
        let max_block = parts.active().map(|p| p.name.max_block.max(p.name.mutation)).max().unwrap_or(0);
        let max_mutation = mutations.last().map(|m| m.version).unwrap_or(0);
        let dedup = crate::dedup::DedupLog::open(dir, table.def.settings.non_replicated_deduplication_window)?;
        Ok(LocalTable {
            dedup: Mutex::new(dedup),
            running: Mutex::new(None),
            failures: Default::default(),
            retry_at: Mutex::new(None),
            name: name.to_string(),
            table,
            dir: dir.to_path_buf(),
            state: Mutex::new(State {
                parts,
                next_block: max_block.max(max_mutation) + 1,
                mutations,
                inflight: Default::default(),
            }),
            rewrite: Mutex::new(()),
            merges_stopped: AtomicBool::new(false),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn rewrite_lock(&self) -> MutexGuard<'_, ()> {
        self.rewrite.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Shows a merge in `system.merges` until the guard drops.
    fn track(&self, sources: &[Arc<Part>], result: String, is_mutation: bool) -> impl Drop + '_ {
        struct Clear<'a>(&'a Mutex<Option<MergeInfo>>);
        impl Drop for Clear<'_> {
            fn drop(&mut self) {
                *self.0.lock().unwrap_or_else(|e| e.into_inner()) = None;
            }
        }
        *self.running.lock().unwrap_or_else(|e| e.into_inner()) = Some(MergeInfo {
            partition_id: sources.first().map(|p| p.name.partition_id.clone()).unwrap_or_default(),
            result_part_name: result,
            source_part_names: sources.iter().map(|p| p.name.to_string()).collect(),
            is_mutation,
            total_size_bytes_compressed: sources.iter().map(|p| p.meta.bytes_on_disk).sum(),
            total_rows: sources.iter().map(|p| p.meta.rows).sum(),
            started: std::time::Instant::now(),
        });
        Clear(&self.running)
    }

    /// Rewrites one part that a recorded mutation still applies to (with
    /// every mutation it needs); true if it did. A failure is recorded for
    /// `system.mutations` and retried after a pause, never skipped.
    fn mutate_step(&self) -> Result<bool> {
        if self.retry_at.lock().unwrap_or_else(|e| e.into_inner()).is_some_and(|t| std::time::Instant::now() < t) {
            return Ok(false);
        }
        let _g = self.rewrite_lock();
        let (part, mutations) = {
            let s = self.state();
            let part = s.parts.active().find(|p| !crate::mutation::pending_for(p, &s.mutations).is_empty()).cloned();
            (part, s.mutations.clone())
        };
        let Some(part) = part else { return Ok(false) };
        let _running = self.track(std::slice::from_ref(&part), format!("{} (mutation)", part.name), true);
        match mutate_part(&self.table, &self.dir, &part, &mutations) {
            Ok(Some(new)) => {
                self.state().parts.replace(std::slice::from_ref(&part.name), Arc::new(new))?;
                let name = part.name.to_string();
                self.failures.lock().unwrap_or_else(|e| e.into_inner()).retain(|_, f| f.part != name);
                Ok(true)
            }
            Ok(None) => Ok(false),
            Err(e) => {
                tracing::error!(table = %self.name, part = %part.name, error = %e, "mutation failed; retrying");
                let failure = Failure {
                    part: part.name.to_string(),
                    reason: e.to_string(),
                    time: chrono::Utc::now().timestamp(),
                };
                let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
                for m in crate::mutation::pending_for(&part, &mutations) {
                    f.insert(m.version, failure.clone());
                }
                *self.retry_at.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some(std::time::Instant::now() + MUTATION_RETRY);
                Ok(false)
            }
        }
    }

    fn mutation_file(&self, version: i64) -> PathBuf {
        self.dir.join(format!("mutation_{version}.txt"))
    }

    /// Drops the parts of matching partitions by covering each partition's
    /// parts with an empty part, as ClickHouse's DROP_RANGE does: the drop
    /// survives a restart (recovery sees the covering part) and readers that
    /// still hold the old parts finish undisturbed.
    /// Waits until no insert holds a block number below `bound`.
    fn wait_inflight_below(&self, bound: i64) {
        while self.state().inflight.range(..bound).next().is_some() {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    fn drop_partitions(&self, matches: impl Fn(&str) -> bool) -> Result<()> {
        self.wait_inflight_below(i64::MAX);
        let mut by_partition: std::collections::BTreeMap<String, Vec<PartName>> = Default::default();
        for p in self.state().parts.active() {
            if matches(&p.name.partition_id) {
                by_partition.entry(p.name.partition_id.clone()).or_default().push(p.name.clone());
            }
        }
        for (_, names) in by_partition {
            let Some(cover) = PartName::merged(&names) else { continue };
            let w =
                crate::part::writer::PartWriter::create(&self.table, &self.dir, cover, "drop")?.with_blocks(Some(0));
            let empty = w.finish(vec![], None)?;
            self.state().parts.replace(&names, Arc::new(empty))?;
        }
        Ok(())
    }

    fn candidates(&self, s: &State) -> Vec<Candidate> {
        let lowest_inflight = s.inflight.first().copied().unwrap_or(i64::MAX);
        s.parts
            .active()
            .filter(|p| p.name.max_block < lowest_inflight)
            .map(|p| {
                // The first mutation a part still needs: parts merge only with
                // parts on the same side of every mutation.
                let dv = p.name.data_version();
                let barrier = s.mutations.iter().map(|m| m.version).find(|v| *v > dv).unwrap_or(i64::MAX);
                Candidate { name: p.name.clone(), bytes: p.meta.bytes_on_disk, barrier, busy: false }
            })
            .collect()
    }

    fn run_merge(&self, names: &[PartName], mode: ReduceMode) -> Result<()> {
        let sources: Vec<Arc<Part>> = {
            let s = self.state();
            names.iter().filter_map(|n| s.parts.get(n).cloned()).collect()
        };
        if sources.len() != names.len() || sources.is_empty() {
            return Ok(());
        }
        let result = PartName::merged(names).map(|n| n.to_string()).unwrap_or_default();
        let _running = self.track(&sources, result, false);
        let merged = merge_parts(&self.table, &self.dir, &sources, mode)?;
        self.state().parts.replace(names, Arc::new(merged))
    }

    /// The compiled table definition.
    pub fn storage(&self) -> &Arc<crate::Table> {
        &self.table
    }

    /// Inserts a block; returns the rows written (0 when the block was a
    /// duplicate inside the deduplication window).
    pub fn insert(&self, batch: &RecordBatch, opts: &BlockDedup) -> Result<usize> {
        let settings = &self.table.def.settings;
        // The dedup log is locked through the whole insert only when dedup is
        // on (two concurrent copies of a block must not both get in); without
        // it, inserts into one table write their parts in parallel.
        let dedup_on = opts.deduplicate && settings.non_replicated_deduplication_window > 0;
        let mut dedup = dedup_on.then(|| self.dedup.lock().unwrap_or_else(|e| e.into_inner()));
        let block_id = if let Some(dedup) = &dedup {
            let id = match &opts.token {
                Some(t) => crate::dedup::token_block_id(t, opts.index),
                None => crate::dedup::block_id(batch)?,
            };
            if dedup.contains(&id) {
                tracing::info!(table = %self.name, block_id = %id, "duplicate block skipped");
                return Ok(0);
            }
            Some(id)
        } else {
            None
        };
        let pieces = split_by_partition(&self.table, batch)?;
        for piece in &pieces {
            let count = self.state().parts.parts_in_partition(&piece.partition_id);
            if let Some(delay) = backpressure::check_insert(&piece.partition_id, count, settings)? {
                std::thread::sleep(delay);
            }
        }
        let first = {
            let mut s = self.state();
            s.next_block += pieces.len() as i64;
            let first = s.next_block - pieces.len() as i64;
            let end = s.next_block;
            s.inflight.extend(first..end);
            first
        };
        let _inflight = InflightBlocks { table: self, blocks: first..first + pieces.len() as i64 };
        // An insert spanning partitions writes several parts; a marker makes
        // them one unit: if the process dies before the marker is gone, the
        // next start deletes them all (see `roll_back_pending_inserts`).
        let marker = (pieces.len() > 1)
            .then(|| self.dir.join(format!("insert_{first}_{}.pending", first + pieces.len() as i64 - 1)));
        if let Some(m) = &marker {
            write_durably(m, b"")?;
        }
        let mut parts = Vec::with_capacity(pieces.len());
        let mut rows = 0;
        for (i, piece) in pieces.into_iter().enumerate() {
            let name = PartName::new_insert(piece.partition_id.clone(), first + i as i64);
            parts.push(write_block(&self.table, &self.dir, name, piece.value, &piece.batch)?);
            rows += piece.batch.num_rows();
        }
        if let Some(m) = &marker {
            remove_durably(m)?;
        }
        for part in parts {
            self.state().parts.add(Arc::new(part))?;
        }
        if let (Some(id), Some(dedup)) = (block_id, dedup.as_mut()) {
            dedup.add(&id)?;
        }
        Ok(rows)
    }

    /// The active parts, for reads.
    pub fn snapshot(&self) -> Vec<Arc<Part>> {
        self.state().parts.snapshot()
    }

    /// Runs one part rewrite or one merge the selector finds; true if it did.
    pub fn merge_step(&self) -> Result<bool> {
        if self.merges_stopped.load(Ordering::SeqCst) {
            return Ok(false);
        }
        if self.mutate_step()? {
            return Ok(true);
        }
        let _g = self.rewrite_lock();
        let settings = SelectorSettings {
            max_parts_to_merge_at_once: self.table.def.settings.max_parts_to_merge_at_once,
            max_total_bytes: self.table.def.settings.max_bytes_to_merge_at_max_space_in_pool,
            ..Default::default()
        };
        let pick = {
            let s = self.state();
            select_merge(&self.candidates(&s), &settings)
        };
        match pick {
            Some(names) => self.run_merge(&names, ReduceMode::default()).map(|_| true),
            None => Ok(false),
        }
    }

    /// `OPTIMIZE TABLE`.
    pub fn optimize(&self, opts: &OptimizeOptions) -> Result<()> {
        let _g = self.rewrite_lock();
        let groups = {
            let s = self.state();
            let cands = self.candidates(&s);
            select_optimize(
                &cands,
                opts.partition_id.as_deref(),
                opts.final_,
                self.table.def.settings.max_parts_to_merge_at_once,
            )
        };
        let mode = ReduceMode { final_read: false, cleanup: opts.cleanup, deduplicate: opts.deduplicate };
        for names in groups {
            self.run_merge(&names, mode)?;
        }
        Ok(())
    }

    /// Records a mutation (the merge thread rewrites its parts); returns
    /// its id (`mutation_<version>.txt`, as ClickHouse names them).
    pub fn record_mutation(&self, commands: Vec<MutationCommand>, text: &str) -> Result<String> {
        // Check the commands compile before recording anything.
        crate::mutation::validate(&self.table, &Mutation { version: i64::MAX, commands: commands.clone() })?;
        let _g = self.rewrite_lock();
        let version = {
            let mut s = self.state();
            s.next_block += 1;
            s.next_block - 1
        };
        // Inserts given lower block numbers are part of what it mutates.
        self.wait_inflight_below(version);
        write_durably(&self.mutation_file(version), text.as_bytes())?;
        self.state().mutations.push(Mutation { version, commands });
        Ok(format!("mutation_{version}.txt"))
    }

    /// `KILL MUTATION`: forgets mutation `id` (parts already rewritten stay
    /// rewritten). False when there is no such mutation.
    pub fn kill_mutation(&self, id: &str) -> Result<bool> {
        let Some(version) = id.strip_prefix("mutation_").and_then(|v| v.strip_suffix(".txt")) else {
            return Ok(false);
        };
        let Ok(version) = version.parse::<i64>() else { return Ok(false) };
        // A rewrite running now finishes (its part stays rewritten).
        let _g = self.rewrite_lock();
        let found = {
            let mut s = self.state();
            let before = s.mutations.len();
            s.mutations.retain(|m| m.version != version);
            s.mutations.len() != before
        };
        if found {
            remove_durably(&self.mutation_file(version))?;
            self.failures.lock().unwrap_or_else(|e| e.into_inner()).remove(&version);
        }
        Ok(found)
    }

    /// `ALTER TABLE … DROP PARTITION`.
    pub fn drop_partition(&self, partition_id: &str) -> Result<()> {
        let _g = self.rewrite_lock();
        self.drop_partitions(|id| id == partition_id)
    }

    /// `TRUNCATE TABLE`.
    pub fn truncate(&self) -> Result<()> {
        let _g = self.rewrite_lock();
        self.drop_partitions(|_| true)
    }

    /// Outdated parts still on disk.
    pub fn outdated(&self) -> Vec<Arc<Part>> {
        self.state().parts.outdated().cloned().collect()
    }

    /// The merge or part rewrite running now.
    pub fn merges(&self) -> Vec<MergeInfo> {
        self.running.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect()
    }

    /// The recorded (not killed) mutations, oldest first.
    pub fn mutations(&self) -> Vec<MutationInfo> {
        let (parts, versions) = {
            let s = self.state();
            (s.parts.snapshot(), s.mutations.iter().map(|m| m.version).collect::<Vec<_>>())
        };
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut out = Vec::new();
        for version in versions {
            let path = self.mutation_file(version);
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let create_time = std::fs::metadata(&path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            let todo: Vec<String> = parts
                .iter()
                .filter(|p| p.name.data_version() < version && p.name.min_block < version)
                .map(|p| p.name.to_string())
                .collect();
            let failure = failures.get(&version);
            out.push(MutationInfo {
                mutation_id: format!("mutation_{version}.txt"),
                statement: text,
                create_time,
                block_number: version,
                parts_to_do: todo.len() as u64,
                is_done: todo.is_empty(),
                parts_to_do_names: todo,
                latest_failed_part: failure.map(|f| f.part.clone()).unwrap_or_default(),
                latest_fail_time: failure.map_or(0, |f| f.time),
                latest_fail_reason: failure.map(|f| f.reason.clone()).unwrap_or_default(),
            });
        }
        out
    }

    /// Stops or restarts background merges.
    pub fn set_merges_stopped(&self, stopped: bool) {
        self.merges_stopped.store(stopped, Ordering::SeqCst);
    }

    /// Deletes outdated parts whose grace period is over.
    pub fn cleanup(&self) -> Result<()> {
        let grace = Duration::from_secs(self.table.def.settings.old_parts_lifetime_secs);
        let expired = self.state().parts.take_expired(grace);
        for p in expired {
            part_set::remove_part_files(&p)?;
        }
        Ok(())
    }
}
