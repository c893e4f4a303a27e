//! What the clients did and saw, and the check of the final state against
//! it: every acknowledged insert present, each insert whole or absent and
//! never twice, nothing that was never written, every replica the same, and
//! no sequentially consistent read older than an acknowledged insert.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

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

    pub fn summary(&self) -> String {
        let inserts = self.inserts.lock().unwrap_or_else(|p| p.into_inner());
        let acked = inserts.values().filter(|(_, o)| *o == Outcome::Acked).count();
        format!(
            "{} inserts ({acked} acknowledged, {} unknown), {} sequentially consistent reads ({} stale), faults: {}",
            inserts.len(),
            inserts.len() - acked,
            self.reads.load(Ordering::SeqCst),
            self.stale_reads.lock().unwrap_or_else(|p| p.into_inner()).len(),
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
}
