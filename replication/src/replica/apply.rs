//! Applying one log entry to the replica's state: inserts, merges (started
//! in the background), part rewrites, checksum checks, drops; and the
//! invariant checked after every entry.

use std::path::Path;
use std::sync::Arc;

use openraft::LogId;
use storage::part::adopt::{adopt_in_memory, adopt_part};
use storage::part::checksum::FileChecksum;
use storage::{Part, PartName};

use super::{MAX_MISMATCHES, Mismatch, Missing, Replica, Step, part_dir_in, remove_dir, st};
use crate::NodeId;
use crate::command::{Command, Response};
use crate::dedup::DedupEntry;
use crate::error::{ReplicationError, Result};

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

impl Replica {
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
            Command::Insert { .. } | Command::Offload { .. } | Command::KillMutation { .. } | Command::Meta { .. } => {}
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
            // Never proposed to a data group.
            Command::Meta { .. } => Step::Done(Response::Done),
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
                let bytes = crate::command::inline::decode(files)?;
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
