//! The single-node table: a part set in a directory, written and merged
//! locally. Mutations are recorded as `mutation_<version>.txt` (the ALTER
//! text) before they run, so a restart finishes any that were interrupted.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use arrow::array::RecordBatch;
use storage::merge::selector::{Candidate, SelectorSettings, select_merge, select_optimize};
use storage::merge::{ReduceMode, merge_parts};
use storage::mutation::{Mutation, MutationCommand, mutate_part};
use storage::part::writer::write_block;
use storage::part_set::{self, PartSet};
use storage::partition::split_by_partition;
use storage::{Part, PartName, backpressure};

use super::{InsertOptions, MergeInfo, MutationInfo, OptimizeOptions, TableEngine};
use crate::error::QueryError;
use crate::parse::{AlterCommand, CreateTable, Statement, parse_statement};

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
    create: CreateTable,
    table: Arc<storage::Table>,
    dir: PathBuf,
    state: Mutex<State>,
    /// Serialises merges and mutations of this table.
    rewrite: Mutex<()>,
    merges_stopped: AtomicBool,
    /// Ids of recent blocks (`non_replicated_deduplication_window`); held
    /// for the whole insert so a concurrent retry cannot slip past.
    dedup: Mutex<storage::dedup::DedupLog>,
    /// The merge or part mutation running now, for `system.merges`.
    running: Mutex<Option<MergeInfo>>,
}

fn st(e: storage::StorageError) -> QueryError {
    QueryError::storage(&e)
}

fn io(path: &Path, e: std::io::Error) -> QueryError {
    QueryError::storage(&storage::StorageError::io(path, e))
}

/// Storage commands of an ALTER's mutation text (conditions with
/// ClickHouse truthiness).
use crate::plan::truthiness::condition_text;

pub(crate) fn mutation_commands(text: &str) -> Result<Vec<MutationCommand>, QueryError> {
    Ok(match parse_statement(text)? {
        Statement::Alter { commands, .. } => commands
            .into_iter()
            .filter_map(|c| match c {
                AlterCommand::Delete { predicate } => {
                    Some(MutationCommand::Delete { predicate: condition_text(&predicate) })
                }
                AlterCommand::Update { assignments, predicate } => {
                    Some(MutationCommand::Update { assignments, predicate: condition_text(&predicate) })
                }
                AlterCommand::DropPartition(_) => None,
            })
            .collect(),
        Statement::Delete { predicate, .. } => {
            vec![MutationCommand::LightweightDelete { predicate: condition_text(&predicate) }]
        }
        _ => return Err(QueryError::bad_arguments(format!("not a mutation: {text}"))),
    })
}

/// The commands of a recorded ALTER/DELETE as `system.mutations` shows them.
pub(crate) fn command_text(text: &str) -> String {
    let Ok(mut c) = crate::parse::cursor::Cursor::new(text) else { return text.to_string() };
    if c.eat_kws(&["ALTER", "TABLE"]) && c.qualified_name().is_ok() {
        return c.rest();
    }
    if c.eat_kws(&["DELETE", "FROM"]) && c.qualified_name().is_ok() {
        let rest = c.rest();
        let cond = rest.strip_prefix("WHERE").or_else(|| rest.strip_prefix("where")).unwrap_or(&rest);
        return format!("UPDATE _row_exists = 0 WHERE{cond}");
    }
    text.to_string()
}

fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), QueryError> {
    std::fs::write(path, bytes)
        .and_then(|_| std::fs::File::open(path)?.sync_all())
        .and_then(|_| std::fs::File::open(path.parent().unwrap_or(Path::new(".")))?.sync_all())
        .map_err(|e| io(path, e))
}

fn remove_durably(path: &Path) -> Result<(), QueryError> {
    std::fs::remove_file(path)
        .and_then(|_| std::fs::File::open(path.parent().unwrap_or(Path::new(".")))?.sync_all())
        .map_err(|e| io(path, e))
}

/// Deletes the parts of inserts that were cut off before all their parts
/// were written (`insert_<first>_<last>.pending` still present): an insert
/// is all its partitions' parts or none of them.
fn roll_back_pending_inserts(dir: &Path) -> Result<(), QueryError> {
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
    pub fn open(dir: &Path, create: CreateTable) -> Result<Arc<LocalTable>, QueryError> {
        let def = create.table_def()?;
        let table = storage::Table::new(def).map_err(st)?;
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        roll_back_pending_inserts(dir)?;
        let (parts, report) = part_set::recover(dir).map_err(st)?;
        if !report.detached.is_empty() {
            tracing::warn!(table = %create.name, detached = ?report.detached, "parts detached at startup");
        }
        let mut mutations = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| io(dir, e))?.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if let Some(v) = name.strip_prefix("mutation_").and_then(|n| n.strip_suffix(".txt")) {
                let version: i64 =
                    v.parse().map_err(|_| QueryError::bad_arguments(format!("bad mutation file {name}")))?;
                let text = std::fs::read_to_string(entry.path()).map_err(|e| io(&entry.path(), e))?;
                mutations.push(Mutation { version, commands: mutation_commands(&text)? });
            }
        }
        mutations.sort_by_key(|m| m.version);
        let max_block = parts.active().map(|p| p.name.max_block.max(p.name.mutation)).max().unwrap_or(0);
        let max_mutation = mutations.last().map(|m| m.version).unwrap_or(0);
        let dedup =
            storage::dedup::DedupLog::open(dir, table.def.settings.non_replicated_deduplication_window).map_err(st)?;
        let t = Arc::new(LocalTable {
            dedup: Mutex::new(dedup),
            running: Mutex::new(None),
            create,
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
        });
        t.apply_pending_mutations()?;
        Ok(t)
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

    /// Applies every recorded mutation to the parts that still need it.
    fn apply_pending_mutations(&self) -> Result<(), QueryError> {
        let _g = self.rewrite_lock();
        let (parts, mutations) = {
            let s = self.state();
            (s.parts.snapshot(), s.mutations.clone())
        };
        for part in parts {
            let _running = self.track(std::slice::from_ref(&part), format!("{} (mutation)", part.name), true);
            if let Some(new) = mutate_part(&self.table, &self.dir, &part, &mutations).map_err(st)? {
                self.state().parts.replace(std::slice::from_ref(&part.name), Arc::new(new)).map_err(st)?;
            }
        }
        Ok(())
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

    fn drop_partitions(&self, matches: impl Fn(&str) -> bool) -> Result<(), QueryError> {
        self.wait_inflight_below(i64::MAX);
        let mut by_partition: std::collections::BTreeMap<String, Vec<PartName>> = Default::default();
        for p in self.state().parts.active() {
            if matches(&p.name.partition_id) {
                by_partition.entry(p.name.partition_id.clone()).or_default().push(p.name.clone());
            }
        }
        for (_, names) in by_partition {
            let Some(cover) = PartName::merged(&names) else { continue };
            let w = storage::part::writer::PartWriter::create(&self.table, &self.dir, cover, "drop")
                .map_err(st)?
                .with_blocks(Some(0));
            let empty = w.finish(vec![], None).map_err(st)?;
            self.state().parts.replace(&names, Arc::new(empty)).map_err(st)?;
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

    fn run_merge(&self, names: &[PartName], mode: ReduceMode) -> Result<(), QueryError> {
        let sources: Vec<Arc<Part>> = {
            let s = self.state();
            names.iter().filter_map(|n| s.parts.get(n).cloned()).collect()
        };
        if sources.len() != names.len() || sources.is_empty() {
            return Ok(());
        }
        let result = PartName::merged(names).map(|n| n.to_string()).unwrap_or_default();
        let _running = self.track(&sources, result, false);
        let merged = merge_parts(&self.table, &self.dir, &sources, mode).map_err(st)?;
        self.state().parts.replace(names, Arc::new(merged)).map_err(st)
    }
}

impl TableEngine for LocalTable {
    fn create(&self) -> &CreateTable {
        &self.create
    }

    fn storage(&self) -> &Arc<storage::Table> {
        &self.table
    }

    fn insert(&self, batch: &RecordBatch, opts: &InsertOptions) -> Result<usize, QueryError> {
        let settings = &self.table.def.settings;
        // The dedup log is locked through the whole insert only when dedup is
        // on (two concurrent copies of a block must not both get in); without
        // it, inserts into one table write their parts in parallel.
        let dedup_on = opts.deduplicate && settings.non_replicated_deduplication_window > 0;
        let mut dedup = dedup_on.then(|| self.dedup.lock().unwrap_or_else(|e| e.into_inner()));
        let block_id = if let Some(dedup) = &dedup {
            let id = match &opts.token {
                Some(t) => storage::dedup::token_block_id(t, opts.index),
                None => storage::dedup::block_id(batch).map_err(st)?,
            };
            if dedup.contains(&id) {
                tracing::info!(table = %self.create.name, block_id = %id, "duplicate block skipped");
                return Ok(0);
            }
            Some(id)
        } else {
            None
        };
        let pieces = split_by_partition(&self.table, batch).map_err(st)?;
        for piece in &pieces {
            let count = self.state().parts.parts_in_partition(&piece.partition_id);
            if let Some(delay) = backpressure::check_insert(&piece.partition_id, count, settings).map_err(st)? {
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
            parts.push(write_block(&self.table, &self.dir, name, piece.value, &piece.batch).map_err(st)?);
            rows += piece.batch.num_rows();
        }
        if let Some(m) = &marker {
            remove_durably(m)?;
        }
        for part in parts {
            self.state().parts.add(Arc::new(part)).map_err(st)?;
        }
        if let (Some(id), Some(dedup)) = (block_id, dedup.as_mut()) {
            dedup.add(&id).map_err(st)?;
        }
        Ok(rows)
    }

    fn snapshot(&self) -> Vec<Arc<Part>> {
        self.state().parts.snapshot()
    }

    fn merge_step(&self) -> Result<bool, QueryError> {
        if self.merges_stopped.load(Ordering::SeqCst) {
            return Ok(false);
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

    fn optimize(&self, opts: &OptimizeOptions) -> Result<(), QueryError> {
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

    fn mutate(&self, commands: Vec<MutationCommand>, text: &str) -> Result<i64, QueryError> {
        // Check the commands compile before recording anything.
        storage::mutation::validate(&self.table, &Mutation { version: i64::MAX, commands: commands.clone() })
            .map_err(st)?;
        let _g = self.rewrite_lock();
        let version = {
            let mut s = self.state();
            s.next_block += 1;
            s.next_block - 1
        };
        // Inserts given lower block numbers are part of what it mutates.
        self.wait_inflight_below(version);
        let path = self.dir.join(format!("mutation_{version}.txt"));
        std::fs::write(&path, text).and_then(|_| std::fs::File::open(&path)?.sync_all()).map_err(|e| io(&path, e))?;
        self.state().mutations.push(Mutation { version, commands });
        drop(_g);
        self.apply_pending_mutations()?;
        Ok(version)
    }

    fn drop_partition(&self, partition_id: &str) -> Result<(), QueryError> {
        let _g = self.rewrite_lock();
        self.drop_partitions(|id| id == partition_id)
    }

    fn truncate(&self) -> Result<(), QueryError> {
        let _g = self.rewrite_lock();
        self.drop_partitions(|_| true)
    }

    fn outdated(&self) -> Vec<Arc<Part>> {
        self.state().parts.outdated().cloned().collect()
    }

    fn merges(&self) -> Vec<MergeInfo> {
        self.running.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect()
    }

    fn mutations(&self) -> Vec<MutationInfo> {
        let parts = self.snapshot();
        let mut out = Vec::new();
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return out };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            let Some(v) = name.strip_prefix("mutation_").and_then(|n| n.strip_suffix(".txt")) else { continue };
            let Ok(version) = v.parse::<i64>() else { continue };
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            let create_time = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            let todo = parts.iter().filter(|p| p.name.data_version() < version && p.name.min_block < version).count();
            out.push(MutationInfo {
                mutation_id: name.clone(),
                command: command_text(&text),
                create_time,
                block_number: version,
                parts_to_do: todo as u64,
                is_done: todo == 0,
                latest_fail_reason: String::new(),
            });
        }
        out.sort_by_key(|m| m.block_number);
        out
    }

    fn set_merges_stopped(&self, stopped: bool) {
        self.merges_stopped.store(stopped, Ordering::SeqCst);
    }

    fn cleanup(&self) -> Result<(), QueryError> {
        let grace = Duration::from_secs(self.table.def.settings.old_parts_lifetime_secs);
        let expired = self.state().parts.take_expired(grace);
        for p in expired {
            part_set::remove_part_files(&p).map_err(st)?;
        }
        Ok(())
    }
}
