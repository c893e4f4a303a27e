//! Merges run in the background on every replica: applying a `Merge` entry
//! starts the merge and returns, so inserts behind it in the log are not
//! held up by it. The sources stay active until the result swaps in. A
//! later command that touches existing parts first waits for the running
//! merges it touches — a mutation or a drop for all of them, a merge for
//! those taking its sources, a checksum check for the one making its part —
//! so every replica reaches the same part set in the same log order, and the
//! log never waits on an unrelated merge (merges run at a lower CPU
//! priority). Running merges are part of the persisted state and restart
//! with the replica.
//!
//! With `execute_merges_on_single_replica_time_threshold` set, only the
//! proposer merges; the other replicas fetch its result (ClickHouse's
//! single-replica merges), cutting the cluster's merge CPU and disk writes
//! by the replication factor. A replica that has not got the result within
//! the threshold, or that must wait for the merge before applying a command
//! that changes its parts, merges itself: waiting on a peer must never stall
//! the log.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use storage::PartName;

/// A merge applied from the log whose result has not swapped in yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingMerge {
    pub sources: Vec<String>,
    pub mode: storage::ReduceMode,
    /// The node whose result this replica fetches (single-replica merges).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merger: Option<crate::NodeId>,
    /// A part mutation (one source): the versions of the mutations it
    /// applies, fixed when its entry applied (a later kill does not change
    /// what an assigned rewrite does, so every replica makes the same part).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mutations: Vec<i64>,
}

/// Whether a running job with these sources is a part rewrite (a mutation
/// applied to one part) rather than a merge, which always takes several.
pub fn is_rewrite(sources: &[PartName]) -> bool {
    sources.len() == 1
}

/// The merges running on this replica.
#[derive(Debug, Default)]
pub struct MergeJobs {
    running: Mutex<Vec<(PartName, Vec<PartName>)>>,
    done: Condvar,
    /// Failed attempts, each retried (a metric, and evidence in tests).
    pub retries: std::sync::atomic::AtomicU64,
    /// Set while a command waits for every merge: a replica waiting for a
    /// peer's result stops waiting and merges itself.
    urgent: AtomicBool,
    /// Merge results fetched from the replica that merged (a metric).
    pub fetched: std::sync::atomic::AtomicU64,
    /// When each running merge started (`system.merges.elapsed`).
    started: Mutex<std::collections::HashMap<PartName, std::time::Instant>>,
}

impl MergeJobs {
    /// Registers a merge about to run.
    pub fn start(&self, result: PartName, sources: Vec<PartName>) {
        self.started.lock().unwrap_or_else(|p| p.into_inner()).insert(result.clone(), std::time::Instant::now());
        self.running.lock().unwrap_or_else(|p| p.into_inner()).push((result, sources));
    }

    /// When the running merge making `result` started.
    pub fn started(&self, result: &PartName) -> Option<std::time::Instant> {
        self.started.lock().unwrap_or_else(|p| p.into_inner()).get(result).copied()
    }

    /// Marks a merge finished (swapped in or discarded).
    pub fn finish(&self, result: &PartName) {
        self.started.lock().unwrap_or_else(|p| p.into_inner()).remove(result);
        let mut r = self.running.lock().unwrap_or_else(|p| p.into_inner());
        r.retain(|(n, _)| n != result);
        self.done.notify_all();
    }

    /// Whether a part rewrite (a mutation's job: one source) runs here.
    pub fn rewriting(&self) -> bool {
        self.running.lock().unwrap_or_else(|p| p.into_inner()).iter().any(|(_, s)| is_rewrite(s))
    }

    /// Whether `part` is a source of a running merge.
    pub fn is_source(&self, part: &PartName) -> bool {
        self.running.lock().unwrap_or_else(|p| p.into_inner()).iter().any(|(_, s)| s.contains(part))
    }

    /// Running merges: result and sources.
    pub fn running(&self) -> Vec<(PartName, Vec<PartName>)> {
        self.running.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether a command is waiting for every merge to finish.
    pub fn is_urgent(&self) -> bool {
        self.urgent.load(Ordering::SeqCst)
    }

    /// Blocks while a running merge makes one of `results` or takes one of
    /// `sources` (never urgent: the merges waited for run here or come from
    /// a peer).
    pub fn wait_for(&self, results: &[PartName], sources: &[PartName]) {
        let r = self.running.lock().unwrap_or_else(|p| p.into_inner());
        drop(self.wait_while(r, |(n, s)| results.contains(n) || s.iter().any(|x| sources.contains(x))));
    }

    /// Blocks while a part rewrite (a running job with one source) makes
    /// one of `results`.
    pub fn wait_for_mutations(&self, results: &[PartName]) {
        let r = self.running.lock().unwrap_or_else(|p| p.into_inner());
        drop(self.wait_while(r, |(n, s)| is_rewrite(s) && results.contains(n)));
    }

    /// Blocks until no merge is running. `urgent`: replicas waiting for a
    /// peer's merge result merge themselves instead (the peer may be gone);
    /// otherwise they keep waiting for it up to their threshold.
    pub fn wait_all(&self, urgent: bool) {
        let r = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if urgent && !r.is_empty() {
            self.urgent.store(true, Ordering::SeqCst);
        }
        let r = self.wait_while(r, |_| true);
        self.urgent.store(false, Ordering::SeqCst);
        drop(r);
    }

    /// Waits while some running merge matches `busy`. The group's log waits
    /// meanwhile: a merge that never ends must show in the log, not be a
    /// silently stuck queue.
    fn wait_while<'a>(
        &self,
        mut r: std::sync::MutexGuard<'a, Vec<(PartName, Vec<PartName>)>>,
        busy: impl Fn(&(PartName, Vec<PartName>)) -> bool,
    ) -> std::sync::MutexGuard<'a, Vec<(PartName, Vec<PartName>)>> {
        let t0 = std::time::Instant::now();
        let mut warned = Duration::ZERO;
        while r.iter().any(&busy) {
            r = match self.done.wait_timeout(r, Duration::from_millis(100)) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
            if t0.elapsed() >= warned + Duration::from_secs(10) && r.iter().any(&busy) {
                warned = t0.elapsed();
                let merges: Vec<String> = r.iter().filter(|m| busy(m)).map(|(n, _)| n.to_string()).collect();
                tracing::warn!(secs = warned.as_secs(), ?merges, "a command still waits for running merges");
            }
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 18: `system.merges.elapsed` of a replicated table was always 0
    /// (its start was taken when the table was read).
    #[test]
    fn regression_a_running_merge_keeps_its_start_time() {
        let jobs = MergeJobs::default();
        let result: PartName = "all_1_2_1".parse().unwrap();
        jobs.start(result.clone(), vec!["all_1_1_0".parse().unwrap(), "all_2_2_0".parse().unwrap()]);
        std::thread::sleep(Duration::from_millis(30));
        let started = jobs.started(&result).expect("running");
        assert!(started.elapsed() >= Duration::from_millis(30));
        jobs.finish(&result);
        assert_eq!(jobs.started(&result), None);
    }
}
