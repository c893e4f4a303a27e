//! Merges run in the background on every replica: applying a `Merge` entry
//! starts the merge and returns, so inserts behind it in the log are not
//! held up by it. The sources stay active until the result swaps in. Any
//! later command that touches existing parts (a mutation, a drop, a merge
//! of the same parts, a checksum check, a snapshot) first waits for the
//! running merges, so every replica reaches the same part set in the same
//! log order. Running merges are part of the persisted state and restart
//! with the replica.

use std::sync::{Condvar, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use storage::PartName;

/// A merge applied from the log whose result has not swapped in yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingMerge {
    pub sources: Vec<String>,
    pub mode: storage::ReduceMode,
}

/// The merges running on this replica.
#[derive(Debug, Default)]
pub struct MergeJobs {
    running: Mutex<Vec<(PartName, Vec<PartName>)>>,
    done: Condvar,
    /// Failed attempts, each retried (a metric, and evidence in tests).
    pub retries: std::sync::atomic::AtomicU64,
}

impl MergeJobs {
    /// Registers a merge about to run.
    pub fn start(&self, result: PartName, sources: Vec<PartName>) {
        self.running.lock().unwrap_or_else(|p| p.into_inner()).push((result, sources));
    }

    /// Marks a merge finished (swapped in or discarded).
    pub fn finish(&self, result: &PartName) {
        let mut r = self.running.lock().unwrap_or_else(|p| p.into_inner());
        r.retain(|(n, _)| n != result);
        self.done.notify_all();
    }

    /// Whether `part` is a source of a running merge.
    pub fn is_source(&self, part: &PartName) -> bool {
        self.running.lock().unwrap_or_else(|p| p.into_inner()).iter().any(|(_, s)| s.contains(part))
    }

    /// Whether any of `parts` is a source of a running merge.
    pub fn overlaps(&self, parts: &[PartName]) -> bool {
        parts.iter().any(|p| self.is_source(p))
    }

    /// Running merges: result and sources.
    pub fn running(&self) -> Vec<(PartName, Vec<PartName>)> {
        self.running.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Blocks until no merge is running.
    pub fn wait_all(&self) {
        let mut r = self.running.lock().unwrap_or_else(|p| p.into_inner());
        while !r.is_empty() {
            r = match self.done.wait_timeout(r, Duration::from_millis(100)) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
    }
}
