//! Running a merge applied from the log: on a thread of its own, or — with
//! single-replica merges — by fetching the merging replica's result, with a
//! local merge as the fallback when it does not come in time.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use storage::part::adopt::adopt_part;
use storage::part_set;
use storage::{Part, PartName};

use crate::NodeId;
use crate::error::Result;
use crate::replica::{Replica, part_dir_in};

/// A merge whose result a peer makes: the state machine fetches it
/// ([`crate::fetch::spawn_peer_merges`]), so the replica itself does no
/// network I/O.
pub(crate) struct PeerMerge {
    pub from: NodeId,
    pub result: PartName,
    pub names: Vec<PartName>,
    pub parts: Vec<Arc<Part>>,
    pub mode: storage::ReduceMode,
}

impl Replica {
    /// Merges started since the last call whose result a peer makes.
    pub(crate) fn take_peer_merges(&self) -> Vec<PeerMerge> {
        std::mem::take(&mut *self.lock_peer_merges())
    }

    fn lock_peer_merges(&self) -> std::sync::MutexGuard<'_, Vec<PeerMerge>> {
        self.peer_merges.lock().unwrap_or_else(|e| e.into_inner())
    }

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
        match merger {
            // The state machine fetches it once this apply returns.
            Some(from) if self.fetches_merges.load(Ordering::SeqCst) => {
                self.lock_peer_merges().push(PeerMerge { from, result, names, parts, mode })
            }
            _ => self.spawn_local_merge(result, names, parts, mode),
        }
    }

    /// Runs a registered merge on its own thread, retrying failures, and
    /// swaps the result in if its sources are all still active.
    pub(crate) fn spawn_local_merge(
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

    /// The fetched part in `dir` as our result, or `None` when the peer sent
    /// a part covering more than `result`.
    pub(crate) fn adopt_fetched_merge(&self, dir: &Path, result: &PartName) -> Result<Option<Part>> {
        let Some(src) = part_dir_in(dir) else { return Ok(None) };
        let name = src.file_name().and_then(|n| n.to_str()).unwrap_or_default().parse::<PartName>()?;
        if name != *result {
            return Ok(None);
        }
        Ok(Some(adopt_part(&src, &self.parts_dir(), result)?))
    }
}
