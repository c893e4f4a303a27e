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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct DedupWindow {
    entries: VecDeque<DedupEntry>,
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
            if let Some(n) = self.index.get_mut(&old.block_id) {
                *n -= 1;
                if *n == 0 {
                    self.index.remove(&old.block_id);
                }
            }
        }
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
    }
}
