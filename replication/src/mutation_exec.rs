//! Mutations in the background (ClickHouse's model): a `Mutate` entry only
//! records the mutation — its version is the entry's index, and it applies
//! to every part whose data version is below that. The group's leader then
//! assigns the parts one at a time (`MutatePart`), and each replica rewrites
//! the part on a thread of its own at the merge threads' CPU priority and
//! swaps the result in the way a merge's is: the log, and every insert, merge
//! and read behind the entry, never waits for a rewrite.
//!
//! Every replica makes the same part from the same entry: the mutations a
//! rewrite applies are fixed when its entry applies (a later kill does not
//! change them), and a rewrite that fails is retried, never skipped. It is
//! given up only when the failure is the data's (an expression that fails on
//! some value fails on every replica alike) and a command asks for it: a
//! `KillMutation` of one of its mutations, or a drop or snapshot install
//! waiting for it (which replace the part anyway).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use storage::mutation::{Mutation, mutate_part};
use storage::part::adopt::adopt_part;
use storage::{Part, PartName, StorageError};

use storage::mutation::MutationCommand;

use crate::command::Response;
use crate::error::Result;
use crate::merge_jobs::PendingMerge;
use crate::replica::{Missing, MutationRecord, Replica, Step, part_dir_in};

/// Why a part's rewrite failed last (`system.mutations`' `latest_fail_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MutationFailure {
    pub part: String,
    pub reason: String,
    /// Unix seconds.
    pub time: i64,
    /// The failure comes from the data (an expression failing on a value),
    /// so every replica fails alike: the rewrite may be given up.
    pub deterministic: bool,
}

/// The longest pause between two attempts of a failing rewrite.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Whether every replica fails the same way: not an I/O error, a corrupted
/// file of this replica's, or a simulated crash.
fn deterministic(e: &StorageError) -> bool {
    !matches!(
        e,
        StorageError::Io { .. }
            | StorageError::Parquet { .. }
            | StorageError::CorruptedPart { .. }
            | StorageError::CorruptedFile { .. }
            | StorageError::SimulatedCrash(_)
    )
}

impl Replica {
    /// Applies `Mutate`: records the mutation; nothing is rewritten here.
    pub(crate) fn apply_mutate(&self, index: i64, commands: &[MutationCommand], text: &str, ts: i64) -> Step {
        let mut s = self.state();
        if !s.persisted.mutations.iter().any(|m| m.version == index) {
            s.persisted.mutations.push(MutationRecord {
                version: index,
                commands: commands.to_vec(),
                text: text.to_string(),
                create_time: ts,
                killed: false,
            });
        }
        Step::Done(Response::Mutation { version: index })
    }

    /// Applies `KillMutation`: no part is assigned to it any more, and a
    /// rewrite failing on it gives up (see the module docs).
    pub(crate) fn apply_kill(&self, version: i64) -> Step {
        let mut s = self.state();
        for m in s.persisted.mutations.iter_mut().filter(|m| m.version == version) {
            m.killed = true;
        }
        Step::Done(Response::Done)
    }

    /// Applies `MutatePart`: starts the rewrite of `part` with the live
    /// mutations up to `version` it still needs.
    pub(crate) fn apply_mutate_part(
        self: &Arc<Self>,
        part: &str,
        version: i64,
        fetched: Option<&Path>,
    ) -> Result<Step> {
        let name: PartName = part.parse()?;
        let (source, versions) = {
            let s = self.state();
            let dv = name.data_version();
            let versions: Vec<i64> = s
                .persisted
                .mutations
                .iter()
                .filter(|m| !m.killed && m.version > dv && m.version <= version)
                .map(|m| m.version)
                .collect();
            (s.parts.get(&name).cloned(), versions)
        };
        // Every mutation it would apply was killed before it was assigned here.
        let Some(last) = versions.iter().copied().max() else { return Ok(Step::Done(Response::Done)) };
        let result = name.mutated(last);
        if self.state().parts.covering(&result).is_some() {
            return Ok(Step::Done(self.merged(&result)));
        }
        if let Some(src) = fetched.and_then(part_dir_in) {
            let got = src.file_name().and_then(|n| n.to_str()).unwrap_or_default().parse::<PartName>()?;
            self.adopted_from_peer(&got);
            let p = adopt_part(&src, &self.parts_dir(), &got)?;
            self.add_part(p)?;
            return Ok(Step::Done(self.merged(&result)));
        }
        let Some(source) = source else {
            // Gone here: a merge or a drop before this entry took it (its
            // rows, mutated or not, are in the part covering it), or it
            // was quarantined — then a peer may hold the result.
            if self.state().parts.covering(&name).is_some() {
                return Ok(Step::Done(Response::Done));
            }
            return Ok(Step::Need(Missing { part: result, staged_id: None, from: vec![], may_not_exist: true }));
        };
        let pending = PendingMerge {
            sources: vec![part.to_string()],
            mode: Default::default(),
            merger: None,
            mutations: versions.clone(),
        };
        self.state().persisted.pending_merges.push(pending);
        self.start_mutation(source, result.clone(), versions);
        Ok(Step::Done(Response::Merged { part: result.to_string(), files: Default::default() }))
    }

    /// Rewrites `source` into `result` on a thread of its own (registered
    /// as a running merge with one source, so selection skips the part and
    /// commands that touch it wait).
    pub(crate) fn start_mutation(self: &Arc<Self>, source: Arc<Part>, result: PartName, versions: Vec<i64>) {
        self.merges.start(result.clone(), vec![source.name.clone()]);
        let me = self.clone();
        let job = result.clone();
        let spawned = std::thread::Builder::new().name(format!("mutate-{}", self.group)).spawn(move || {
            storage::background::enter_merge_thread();
            me.run_mutation(&source, &job, &versions);
            me.merges.finish(&job);
        });
        if let Err(e) = spawned {
            tracing::error!(group = self.group, error = %e, "cannot start a mutation thread");
            self.merges.finish(&result);
        }
    }

    fn run_mutation(&self, source: &Arc<Part>, result: &PartName, versions: &[i64]) {
        let mutations: Vec<Mutation> = {
            let s = self.state();
            s.persisted
                .mutations
                .iter()
                .filter(|m| versions.contains(&m.version))
                .map(|m| Mutation { version: m.version, commands: m.commands.clone() })
                .collect()
        };
        let mut backoff = Duration::from_millis(200);
        loop {
            let attempt = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                fail::fail_point!("mutate:fail", |_| Err(StorageError::BadExpression {
                    expr: "failpoint".into(),
                    reason: "mutate:fail".into()
                }));
                mutate_part(&self.merge_table(), &self.parts_dir(), source, &mutations)
            }));
            let (reason, det) = match attempt {
                Ok(Ok(Some(new))) if new.name == *result => {
                    self.mutation_failures().retain(|_, f| f.part != source.name.to_string());
                    self.swap_in_merge(std::slice::from_ref(&source.name), new);
                    return;
                }
                Ok(Ok(other)) => {
                    // Not what the entry named (cannot happen: the entry's
                    // versions are all above the part's data version).
                    let got = other.map(|p| p.name.to_string()).unwrap_or_default();
                    tracing::error!(group = self.group, part = %result, got, "mutation made another part");
                    self.forget_pending(&source.name);
                    return;
                }
                Ok(Err(e)) => (e.to_string(), deterministic(&e)),
                Err(_) => ("the rewrite panicked".to_string(), false),
            };
            tracing::error!(group = self.group, part = %source.name, error = %reason, "mutation failed; retrying");
            self.merges.retries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let failure = MutationFailure {
                part: source.name.to_string(),
                reason,
                time: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() as i64),
                deterministic: det,
            };
            {
                let mut f = self.mutation_failures();
                for v in versions {
                    f.insert(*v, failure.clone());
                }
            }
            let until = std::time::Instant::now() + backoff;
            while std::time::Instant::now() < until {
                if self.stopped.load(std::sync::atomic::Ordering::SeqCst) {
                    // Still pending in the persisted state: resumed at restart.
                    return;
                }
                if det && (self.merges.is_urgent() || self.any_killed(versions)) {
                    tracing::warn!(group = self.group, part = %source.name, "failing mutation given up");
                    self.forget_pending(&source.name);
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    fn any_killed(&self, versions: &[i64]) -> bool {
        self.state().persisted.mutations.iter().any(|m| m.killed && versions.contains(&m.version))
    }

    /// Drops the pending rewrite of `source` (given up).
    fn forget_pending(&self, source: &PartName) {
        let src = vec![source.to_string()];
        self.state().persisted.pending_merges.retain(|p| p.sources != src);
        if let Err(e) = self.persist() {
            tracing::warn!(group = self.group, error = %e, "cannot persist after a mutation");
        }
    }

    /// The failures of running rewrites, by mutation version.
    pub(crate) fn mutation_failures(&self) -> std::sync::MutexGuard<'_, BTreeMap<i64, MutationFailure>> {
        self.failures.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The latest failure of a rewrite for mutation `version` here.
    pub fn mutation_failure(&self, version: i64) -> Option<MutationFailure> {
        self.mutation_failures().get(&version).cloned()
    }

    /// Parts a mutation still has to rewrite here (none once it is killed).
    pub fn parts_to_do(&self, version: i64) -> u64 {
        let s = self.state();
        if s.persisted.mutations.iter().any(|m| m.version == version && m.killed) {
            return 0;
        }
        s.parts.active().filter(|p| p.name.data_version() < version && p.name.min_block < version).count() as u64
    }

    /// Names of the parts a mutation still has to rewrite here.
    pub fn parts_to_do_names(&self, version: i64) -> Vec<String> {
        let s = self.state();
        if s.persisted.mutations.iter().any(|m| m.version == version && m.killed) {
            return Vec::new();
        }
        s.parts
            .active()
            .filter(|p| p.name.data_version() < version && p.name.min_block < version)
            .map(|p| p.name.to_string())
            .collect()
    }

    /// Whether a live mutation still has a part to rewrite here: the
    /// leader keeps assigning while the group is otherwise idle.
    pub fn has_mutation_work(&self) -> bool {
        let s = self.state();
        let Some(newest) = s.persisted.mutations.iter().filter(|m| !m.killed).map(|m| m.version).max() else {
            return false;
        };
        s.parts.active().any(|p| p.name.data_version() < newest)
    }

    /// A live mutation that some of `sources` still need and others do not:
    /// their merge would be named as if it applied (its name takes the
    /// highest source's mutation) while holding rows it never rewrote.
    pub(crate) fn straddled_mutation(&self, sources: &[PartName]) -> Option<i64> {
        let s = self.state();
        s.persisted.mutations.iter().filter(|m| !m.killed).map(|m| m.version).find(|v| {
            let needs = sources.iter().filter(|p| p.data_version() < *v).count();
            needs != 0 && needs != sources.len()
        })
    }

    /// Whether a live mutation still has to rewrite one of `parts`.
    pub(crate) fn mutation_needs(&self, parts: &[PartName]) -> bool {
        let s = self.state();
        let Some(newest) = s.persisted.mutations.iter().filter(|m| !m.killed).map(|m| m.version).max() else {
            return false;
        };
        parts.iter().any(|p| p.data_version() < newest)
    }

    /// The part the leader assigns next, with the newest live mutation it
    /// needs: none while a rewrite runs here (one part at a time per group),
    /// and never a part a merge takes.
    pub fn next_part_to_mutate(&self) -> Option<(String, i64)> {
        if self.merges.rewriting() {
            return None;
        }
        let s = self.state();
        let live: Vec<i64> = s.persisted.mutations.iter().filter(|m| !m.killed).map(|m| m.version).collect();
        s.parts.active().filter(|p| !self.merges.is_source(&p.name)).find_map(|p| {
            let dv = p.name.data_version();
            let target = live.iter().copied().filter(|v| *v > dv).max()?;
            Some((p.name.to_string(), target))
        })
    }
}
