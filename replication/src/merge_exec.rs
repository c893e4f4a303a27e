//! Running a merge applied from the log: on a thread of its own, or — with
//! single-replica merges — by fetching the merging replica's result, with a
//! local merge as the fallback when it does not come in time.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use storage::part::adopt::adopt_part;
use storage::part_set;
use storage::{Part, PartName};

use crate::NodeId;
use crate::error::Result;
use crate::replica::{Replica, part_dir_in};
use crate::state_machine::PartFetcher;

impl Replica {
    /// Starts the merge of `parts` (named `names`) in the background:
    /// fetched from `merger` when set, else merged here.
    pub(crate) fn start_merge(
        self: &Arc<Self>,
        names: Vec<PartName>,
        parts: Vec<Arc<Part>>,
        mode: storage::ReduceMode,
        merger: Option<NodeId>,
    ) {
        let Some(result) = PartName::merged(&names) else { return };
        self.merges.start(result.clone(), names.clone());
        let runtime = tokio::runtime::Handle::try_current().ok();
        match (merger, self.fetcher.get().cloned(), runtime) {
            (Some(from), Some(fetcher), Some(rt)) => {
                let me = self.clone();
                rt.spawn(async move { me.fetch_merge(from, fetcher, result, names, parts, mode).await });
            }
            _ => self.spawn_local_merge(result, names, parts, mode),
        }
    }

    /// Runs a registered merge on its own thread, retrying failures, and
    /// swaps the result in if its sources are all still active.
    fn spawn_local_merge(
        self: &Arc<Self>,
        result: PartName,
        names: Vec<PartName>,
        parts: Vec<Arc<Part>>,
        mode: storage::ReduceMode,
    ) {
        let me = self.clone();
        let job = result.clone();
        let spawned = std::thread::Builder::new().name(format!("merge-{}", self.group)).spawn(move || {
            storage::background::enter_merge_thread();
            let merged = loop {
                let attempt = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    let m = storage::merge::merge_parts(&me.merge_table(), &me.parts_dir(), &parts, mode)?;
                    // A crash with the merged part written but not yet swapped in.
                    fail::fail_point!("merge:before-swap");
                    Ok::<_, storage::StorageError>(m)
                }));
                match attempt {
                    Ok(Ok(m)) => break m,
                    Ok(Err(e)) => tracing::error!(group = me.group, part = %job, error = %e, "merge failed; retrying"),
                    Err(_) => tracing::error!(group = me.group, part = %job, "merge panicked; retrying"),
                }
                me.merges.retries.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(200));
            };
            me.swap_in_merge(&names, merged);
            me.merges.finish(&job);
        });
        if let Err(e) = spawned {
            tracing::error!(group = self.group, error = %e, "cannot start a merge thread");
            self.merges.finish(&result);
        }
    }

    /// Puts a merge result in place of its sources when they are all still
    /// active (else a snapshot or a covering part replaced them: the result
    /// is dropped), and forgets the pending merge.
    pub(crate) fn swap_in_merge(&self, names: &[PartName], merged: Part) {
        {
            let mut s = self.state();
            if names.iter().all(|n| s.parts.get(n).is_some()) {
                let merged = Arc::new(merged);
                if let Err(e) = s.parts.replace(names, merged.clone()) {
                    tracing::error!(group = self.group, error = %e, "merge result not swapped in");
                    // Left on disk, the result would cover its sources at
                    // the next start, and whatever else its range holds.
                    if let Err(e) = part_set::remove_part_files(&merged) {
                        tracing::warn!(group = self.group, error = %e, "cannot remove an unused merge result");
                    }
                }
            } else if let Err(e) = part_set::remove_part_files(&merged) {
                tracing::warn!(group = self.group, error = %e, "cannot remove an unused merge result");
            }
            let srcs: Vec<String> = names.iter().map(|n| n.to_string()).collect();
            s.persisted.pending_merges.retain(|p| p.sources != srcs);
        }
        if let Err(e) = self.persist() {
            tracing::warn!(group = self.group, error = %e, "cannot persist after a merge");
        }
    }

    /// Waits for `from`'s result of a merge, polling it with backoff, and
    /// swaps it in; merges here instead once the threshold has passed, when
    /// a command waits for this merge, or when `from` has already merged the
    /// result further (its covering part cannot replace our sources), or
    /// when a live mutation still has to rewrite the sources.
    async fn fetch_merge(
        self: Arc<Self>,
        from: NodeId,
        fetcher: Arc<dyn PartFetcher>,
        result: PartName,
        names: Vec<PartName>,
        parts: Vec<Arc<Part>>,
        mode: storage::ReduceMode,
    ) {
        let threshold = Duration::from_secs(self.settings.execute_merges_on_single_replica_time_threshold);
        let start = Instant::now();
        let mut backoff = Duration::from_millis(50);
        let mut attempt = 0u64;
        loop {
            if self.stopped.load(Ordering::SeqCst) {
                // Still pending in the persisted state: resumed at restart.
                self.merges.finish(&result);
                return;
            }
            // A mutation waiting for these parts would wait for the peer too.
            if self.merges.is_urgent() || start.elapsed() >= threshold || self.mutation_needs(&names) {
                break;
            }
            attempt += 1;
            let dest = self.parts_dir().join(format!("tmp_fetch_merge_{result}_{attempt}"));
            match fetcher.fetch(self.group, from, &result.to_string(), &dest).await {
                Ok(()) => {
                    let (me, res, srcs, d) = (self.clone(), result.clone(), names.clone(), dest.clone());
                    let done = tokio::task::spawn_blocking(move || {
                        let part = me.adopt_fetched_merge(&d, &res);
                        let _ = std::fs::remove_dir_all(&d);
                        match part? {
                            Some(p) => {
                                me.swap_in_merge(&srcs, p);
                                Ok(true)
                            }
                            None => Ok::<_, crate::ReplicationError>(false),
                        }
                    })
                    .await;
                    match done {
                        Ok(Ok(true)) => {
                            self.merges.fetched.fetch_add(1, Ordering::Relaxed);
                            self.merges.finish(&result);
                            return;
                        }
                        Ok(Ok(false)) => break,
                        Ok(Err(e)) => {
                            tracing::warn!(group = self.group, part = %result, error = %e, "fetched merge result unusable")
                        }
                        Err(e) => {
                            tracing::warn!(group = self.group, part = %result, error = %e, "fetched merge result task")
                        }
                    }
                }
                Err(e) => {
                    let _ = std::fs::remove_dir_all(&dest);
                    tracing::debug!(group = self.group, part = %result, node = from, error = %e, "merge result not there yet");
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
        tracing::debug!(group = self.group, part = %result, "merging here instead of fetching");
        self.spawn_local_merge(result, names, parts, mode);
    }

    /// The fetched part in `dir` as our result, or `None` when the peer sent
    /// a part covering more than `result`.
    fn adopt_fetched_merge(&self, dir: &Path, result: &PartName) -> Result<Option<Part>> {
        let Some(src) = part_dir_in(dir) else { return Ok(None) };
        let name = src.file_name().and_then(|n| n.to_str()).unwrap_or_default().parse::<PartName>()?;
        if name != *result {
            return Ok(None);
        }
        Ok(Some(adopt_part(&src, &self.parts_dir(), result)?))
    }
}
