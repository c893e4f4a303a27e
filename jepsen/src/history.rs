//! What the clients did and saw, and the check of the final state against
//! it: every acknowledged insert present, each insert whole or absent and
//! never twice, nothing that was never written, every replica the same, and
//! no sequentially consistent read older than an acknowledged insert.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The writer id of the blocks written before the load, which the run's
/// mutation deletes.
pub const PRELOAD_WRITER: u64 = 99;
/// How many blocks of [`PRELOAD_WRITER`] are written.
pub const PRELOAD_BLOCKS: u64 = 20;

/// How an insert ended, as its client knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A 200: it must be there.
    Acked,
    /// Every attempt failed or timed out: it may or may not be there.
    Unknown,
}

/// The history of one run.
#[derive(Debug, Default)]
pub struct History {
    /// (writer, seq) → rows of the insert and its outcome.
    pub inserts: Mutex<BTreeMap<(u64, u64), (u64, Outcome)>>,
    /// Rows of acknowledged inserts so far.
    pub acked_rows: AtomicU64,
    pub reads: AtomicU64,
    /// Sequentially consistent reads that saw fewer rows than were
    /// acknowledged before they started.
    pub stale_reads: Mutex<Vec<String>>,
    pub faults: Mutex<Vec<String>>,
    /// Faults injected (the preload and the mutation are recorded in
    /// `faults` too, but not counted here).
    pub faults_injected: AtomicU64,
    pub optimized: AtomicU64,
    pub optimize_failed: AtomicU64,
    /// The deleting mutation was acknowledged: no preloaded row may remain.
    pub mutation_acked: AtomicBool,
    /// Acknowledged mutations that match no row (`w = 98`), each followed
    /// by a KILL MUTATION: they rewrite (or are stopped on) every part, and
    /// must change no row.
    pub noop_mutations: AtomicU64,
    /// Acknowledged KILL MUTATIONs that stopped at least one mutation.
    pub mutation_kills: AtomicU64,
}

impl History {
    pub fn record(&self, writer: u64, seq: u64, rows: u64, outcome: Outcome) {
        if outcome == Outcome::Acked {
            self.acked_rows.fetch_add(rows, Ordering::SeqCst);
        }
        self.inserts.lock().unwrap_or_else(|p| p.into_inner()).insert((writer, seq), (rows, outcome));
    }

    pub fn fault(&self, f: String) {
        self.faults.lock().unwrap_or_else(|p| p.into_inner()).push(f);
    }

    /// Checks one replica's `w, s, count(), uniqExact(k)` rows (TSV, ordered)
    /// against the history; returns the anomalies.
    pub fn check(&self, answer: &str) -> Vec<String> {
        let inserts = self.inserts.lock().unwrap_or_else(|p| p.into_inner());
        let mut bad = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for line in answer.lines().filter(|l| !l.is_empty()) {
            let f: Vec<u64> = line.split('\t').filter_map(|x| x.parse().ok()).collect();
            let [w, s, count, uniq] = f[..] else {
                bad.push(format!("unreadable row {line:?}"));
                continue;
            };
            if w == PRELOAD_WRITER {
                if self.mutation_acked.load(Ordering::SeqCst) {
                    bad.push(format!("block w{w} s{s} survived the acknowledged DELETE WHERE w = {w} ({count} rows)"));
                }
                continue;
            }
            seen.insert((w, s));
            match inserts.get(&(w, s)) {
                None => bad.push(format!("insert w{w} s{s} is present but was never attempted")),
                Some((rows, _)) if count != *rows || uniq != *rows => {
                    bad.push(format!("insert w{w} s{s}: {count} rows ({uniq} distinct), wrote {rows}"))
                }
                Some(_) => {}
            }
        }
        for ((w, s), (_, outcome)) in inserts.iter() {
            if *outcome == Outcome::Acked && !seen.contains(&(*w, *s)) {
                bad.push(format!("acknowledged insert w{w} s{s} is lost"));
            }
        }
        bad
    }

    /// A run that did too little to have tested anything is a failed run.
    pub fn too_little_progress(&self, faults: &crate::Faults) -> Vec<String> {
        let acked = {
            let inserts = self.inserts.lock().unwrap_or_else(|p| p.into_inner());
            inserts.values().filter(|(_, o)| *o == Outcome::Acked).count()
        };
        let mut out = Vec::new();
        if acked < 10 {
            out.push(format!("too little progress: {acked} acknowledged inserts"));
        }
        if self.reads.load(Ordering::SeqCst) == 0 {
            out.push("too little progress: no sequentially consistent read succeeded".into());
        }
        if (faults.kills || faults.pauses || faults.partitions) && self.faults_injected.load(Ordering::SeqCst) == 0 {
            out.push("too little progress: no fault was injected".into());
        }
        if faults.optimize && self.optimized.load(Ordering::SeqCst) == 0 {
            out.push("too little progress: no OPTIMIZE … FINAL succeeded".into());
        }
        if faults.mutation && !self.mutation_acked.load(Ordering::SeqCst) {
            out.push("the mutation was never acknowledged".into());
        }
        if faults.mutation && self.noop_mutations.load(Ordering::SeqCst) == 0 {
            out.push("too little progress: no mutation matching nothing was acknowledged".into());
        }
        if faults.mutation && self.mutation_kills.load(Ordering::SeqCst) == 0 {
            out.push("too little progress: no KILL MUTATION stopped a mutation".into());
        }
        out
    }

    pub fn summary(&self) -> String {
        let inserts = self.inserts.lock().unwrap_or_else(|p| p.into_inner());
        let acked = inserts.values().filter(|(_, o)| *o == Outcome::Acked).count();
        format!(
            "{} inserts ({acked} acknowledged, {} unknown), {} sequentially consistent reads ({} stale), \
             {} OPTIMIZE FINAL ok ({} failed), mutation {}, {} no-op mutations ({} killed), faults: {}",
            inserts.len(),
            inserts.len() - acked,
            self.reads.load(Ordering::SeqCst),
            self.stale_reads.lock().unwrap_or_else(|p| p.into_inner()).len(),
            self.optimized.load(Ordering::SeqCst),
            self.optimize_failed.load(Ordering::SeqCst),
            if self.mutation_acked.load(Ordering::SeqCst) { "acknowledged" } else { "not acknowledged" },
            self.noop_mutations.load(Ordering::SeqCst),
            self.mutation_kills.load(Ordering::SeqCst),
            self.faults.lock().unwrap_or_else(|p| p.into_inner()).join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_finds_lost_partial_duplicated_and_invented_inserts() {
        let h = History::default();
        h.record(0, 1, 3, Outcome::Acked);
        h.record(0, 2, 2, Outcome::Acked);
        h.record(1, 1, 4, Outcome::Unknown);
        h.record(1, 2, 5, Outcome::Unknown);
        // All acknowledged present whole; an unknown one present, one absent.
        assert!(h.check("0\t1\t3\t3\n0\t2\t2\t2\n1\t1\t4\t4\n").is_empty());
        let bad = h.check("0\t1\t3\t3\n1\t1\t8\t4\n1\t2\t2\t2\n7\t7\t1\t1\n");
        assert_eq!(bad.len(), 4, "{bad:?}");
        assert!(bad.iter().any(|b| b.contains("w0 s2 is lost")));
        assert!(bad.iter().any(|b| b.contains("w1 s1: 8 rows (4 distinct)")));
        assert!(bad.iter().any(|b| b.contains("w1 s2: 2 rows")));
        assert!(bad.iter().any(|b| b.contains("w7 s7 is present but was never attempted")));
    }

    #[test]
    fn preloaded_blocks_must_be_gone_once_the_mutation_was_acknowledged() {
        let h = History::default();
        h.record(0, 1, 3, Outcome::Acked);
        assert!(h.check("0\t1\t3\t3\n99\t1\t5\t5\n").is_empty());
        h.mutation_acked.store(true, Ordering::SeqCst);
        let bad = h.check("0\t1\t3\t3\n99\t1\t5\t5\n");
        assert_eq!(bad.len(), 1, "{bad:?}");
        assert!(bad[0].contains("survived the acknowledged DELETE"));
    }
}
