//! The replicated deduplication window: ids of the last inserted blocks, by
//! count (`replicated_deduplication_window`) and age
//! (`replicated_deduplication_window_seconds`, measured with the proposer's
//! clock carried in each entry, so every replica keeps the same ids).

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};

/// ClickHouse's default `replicated_deduplication_window`.
pub const DEFAULT_WINDOW: usize = 1000;
/// ClickHouse's default `replicated_deduplication_window_seconds` (one week).
pub const DEFAULT_WINDOW_SECONDS: i64 = 7 * 24 * 3600;

/// One remembered block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DedupEntry {
    pub block_id: String,
    pub part: String,
    pub ts: i64,
}

/// The window, oldest first.
///
/// Every entry has a sequence number (`first_seq` + its position), so the
/// replica can persist the window as one RocksDB row per entry and write only
/// what changed: re-encoding a thousand ids after every insert was a third of
/// a small insert's CPU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct DedupWindow {
    entries: VecDeque<DedupEntry>,
    /// Sequence number of the oldest entry.
    #[serde(default)]
    first_seq: u64,
    #[serde(skip)]
    index: HashMap<String, usize>,
}

impl DedupWindow {
    /// Rebuilds the lookup index after deserializing.
    pub fn reindex(&mut self) {
        self.index.clear();
        for e in &self.entries {
            *self.index.entry(e.block_id.clone()).or_default() += 1;
        }
    }

    /// Whether `block_id` is inside the window.
    pub fn contains(&self, block_id: &str) -> bool {
        self.index.contains_key(block_id)
    }

    /// Records a block and evicts what falls out of the window.
    pub fn add(&mut self, entry: DedupEntry, window: usize, window_seconds: i64) {
        let now = entry.ts;
        *self.index.entry(entry.block_id.clone()).or_default() += 1;
        self.entries.push_back(entry);
        while self.entries.len() > window
            || self.entries.front().is_some_and(|e| window_seconds > 0 && e.ts < now - window_seconds)
        {
            let Some(old) = self.entries.pop_front() else { break };
            self.first_seq += 1;
            if let Some(n) = self.index.get_mut(&old.block_id) {
                *n -= 1;
                if *n == 0 {
                    self.index.remove(&old.block_id);
                }
            }
        }
    }

    /// Sequence numbers of the entries held: `first..end`.
    pub fn seq_range(&self) -> std::ops::Range<u64> {
        self.first_seq..self.first_seq + self.entries.len() as u64
    }

    /// The entries from sequence number `seq` on.
    pub fn entries_from(&self, seq: u64) -> impl Iterator<Item = (u64, &DedupEntry)> {
        let skip = seq.saturating_sub(self.first_seq) as usize;
        self.entries.iter().enumerate().skip(skip).map(|(i, e)| (self.first_seq + i as u64, e))
    }

    /// Moves the entries out (the rest of the state is encoded without
    /// them); [`DedupWindow::restore`] puts them back.
    pub fn take_entries(&mut self) -> VecDeque<DedupEntry> {
        std::mem::take(&mut self.entries)
    }

    /// Puts back what [`DedupWindow::take_entries`] took.
    pub fn restore(&mut self, entries: VecDeque<DedupEntry>) {
        self.entries = entries;
    }

    /// Rebuilds a window from rows persisted one per entry, in sequence order.
    pub fn from_rows(first_seq: u64, entries: Vec<DedupEntry>) -> DedupWindow {
        let mut w = DedupWindow { entries: entries.into(), first_seq, index: HashMap::new() };
        w.reindex();
        w
    }

    /// Number of ids held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the window is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(id: &str, ts: i64) -> DedupEntry {
        DedupEntry { block_id: id.into(), part: format!("all_{id}_{id}_0"), ts }
    }

    #[test]
    fn evicts_by_count_and_by_age() {
        let mut w = DedupWindow::default();
        for i in 0..5 {
            w.add(e(&i.to_string(), 100), 3, 0);
        }
        assert!(!w.contains("1") && w.contains("2") && w.contains("4"));
        w.add(e("late", 100 + 50), 100, 10);
        assert!(!w.contains("2") && w.contains("late"));
        let json = serde_json::to_string(&w).unwrap();
        let mut back: DedupWindow = serde_json::from_str(&json).unwrap();
        back.reindex();
        assert!(back.contains("late") && back.len() == 1);
        // 6 added, 5 evicted: the survivor is number 5.
        assert_eq!(back.seq_range(), 5..6);
        assert_eq!(back.entries_from(5).map(|(s, e)| (s, e.block_id.as_str())).collect::<Vec<_>>(), vec![(5, "late")]);
        assert_eq!(back.entries_from(6).count(), 0);
    }
}
