//! Part names, parsed and printed exactly as ClickHouse's `MergeTreePartInfo`:
//! `<partition_id>_<min_block>_<max_block>_<level>[_<mutation>]`.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use crate::error::StorageError;

/// The identity of a part: which blocks of which partition it holds, how many
/// merges deep it is, and which mutation produced it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PartName {
    pub partition_id: String,
    pub min_block: i64,
    pub max_block: i64,
    pub level: u32,
    /// Version of the last mutation applied; 0 when none (printed only when non-zero).
    pub mutation: i64,
}

impl PartName {
    /// The name of the level-0 part of a freshly inserted block.
    pub fn new_insert(partition_id: impl Into<String>, block: i64) -> Self {
        PartName { partition_id: partition_id.into(), min_block: block, max_block: block, level: 0, mutation: 0 }
    }

    /// The version of the data in this part: the mutation that produced it, or
    /// its first block. A mutation applies to parts whose data version is lower.
    pub fn data_version(&self) -> i64 {
        if self.mutation != 0 { self.mutation } else { self.min_block }
    }

    /// ClickHouse's covering rule: `self` contains every row `other` can hold.
    pub fn contains(&self, other: &PartName) -> bool {
        self.partition_id == other.partition_id
            && self.min_block <= other.min_block
            && self.max_block >= other.max_block
            && self.level >= other.level
            && self.mutation >= other.mutation
    }

    /// Whether the block ranges of two parts of one partition overlap.
    pub fn intersects(&self, other: &PartName) -> bool {
        self.partition_id == other.partition_id
            && self.min_block <= other.max_block
            && other.min_block <= self.max_block
    }

    /// The name of the part a merge of `sources` produces (ClickHouse's
    /// `FutureMergedMutatedPart::assign`): the covering block range, one level
    /// above the deepest source, the highest mutation. `None` for an empty list
    /// or sources from different partitions.
    pub fn merged(sources: &[PartName]) -> Option<PartName> {
        let first = sources.first()?;
        if sources.iter().any(|s| s.partition_id != first.partition_id) {
            return None;
        }
        Some(PartName {
            partition_id: first.partition_id.clone(),
            min_block: sources.iter().map(|s| s.min_block).min()?,
            max_block: sources.iter().map(|s| s.max_block).max()?,
            level: sources.iter().map(|s| s.level).max()? + 1,
            mutation: sources.iter().map(|s| s.mutation).max()?,
        })
    }

    /// The name of this part after mutation `version` rewrote it.
    pub fn mutated(&self, version: i64) -> PartName {
        PartName { mutation: version, ..self.clone() }
    }
}

impl Ord for PartName {
    fn cmp(&self, other: &Self) -> Ordering {
        (&self.partition_id, self.min_block, self.max_block, self.level, self.mutation).cmp(&(
            &other.partition_id,
            other.min_block,
            other.max_block,
            other.level,
            other.mutation,
        ))
    }
}

impl PartialOrd for PartName {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for PartName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}_{}_{}_{}", self.partition_id, self.min_block, self.max_block, self.level)?;
        if self.mutation != 0 {
            write!(f, "_{}", self.mutation)?;
        }
        Ok(())
    }
}

impl FromStr for PartName {
    type Err = StorageError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || StorageError::BadPartName(s.to_string());
        let fields: Vec<&str> = s.split('_').collect();
        if !(4..=5).contains(&fields.len()) || fields[0].is_empty() {
            return Err(bad());
        }
        // ClickHouse reads numbers strictly: no sign on level, no leading '+'.
        let int = |t: &str| -> Result<i64, StorageError> {
            if t.is_empty() || t.starts_with('+') {
                return Err(bad());
            }
            t.parse::<i64>().map_err(|_| bad())
        };
        let min_block = int(fields[1])?;
        let max_block = int(fields[2])?;
        if fields[3].starts_with(['+', '-']) {
            return Err(bad());
        }
        let level = fields[3].parse::<u32>().map_err(|_| bad())?;
        let mutation = if fields.len() == 5 { int(fields[4])? } else { 0 };
        if min_block > max_block {
            return Err(bad());
        }
        Ok(PartName { partition_id: fields[0].to_string(), min_block, max_block, level, mutation })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_clickhouse_names() {
        let p: PartName = "202306_1_5_2".parse().unwrap();
        assert_eq!(p, PartName { partition_id: "202306".into(), min_block: 1, max_block: 5, level: 2, mutation: 0 });
        let m: PartName = "all_3_3_0_7".parse().unwrap();
        assert_eq!(m.mutation, 7);
        assert_eq!(m.data_version(), 7);
        assert_eq!(m.to_string(), "all_3_3_0_7");
        for bad in
            ["", "all", "all_1_2", "all_2_1_0", "all_1_2_x", "_1_2_0", "all_1_2_0_1_2", "all_1_2_-1", "all_+1_2_0"]
        {
            assert!(bad.parse::<PartName>().is_err(), "{bad}");
        }
    }

    #[test]
    fn covering_follows_clickhouse() {
        let n = |s: &str| s.parse::<PartName>().unwrap();
        assert!(n("all_1_5_1").contains(&n("all_2_3_0")));
        assert!(!n("all_1_5_1").contains(&n("all_2_3_0_9")));
        assert!(n("all_2_3_0_9").contains(&n("all_2_3_0")));
        assert!(!n("all_1_5_1").contains(&n("other_2_3_0")));
        assert!(n("all_1_5_1").intersects(&n("all_5_6_1")));
        let merged = PartName::merged(&[n("all_1_1_0"), n("all_2_2_0_4"), n("all_3_4_2")]).unwrap();
        assert_eq!(merged.to_string(), "all_1_4_3_4");
    }

    proptest! {
        #[test]
        fn print_parse_round_trip(pid in "[a-z0-9]{1,12}", a in 0i64..1_000_000, len in 0i64..1000, level in 0u32..50, mutation in prop_oneof![Just(0i64), 1i64..1_000_000]) {
            let p = PartName { partition_id: pid, min_block: a, max_block: a + len, level, mutation };
            let s = p.to_string();
            prop_assert_eq!(s.parse::<PartName>().unwrap(), p);
        }

        #[test]
        fn merged_name_covers_every_source(blocks in proptest::collection::vec((0i64..100, 0i64..5, 0u32..4, 0i64..3), 1..8)) {
            let sources: Vec<PartName> = blocks.iter().map(|&(a, l, lv, m)| PartName { partition_id: "p".into(), min_block: a, max_block: a + l, level: lv, mutation: m }).collect();
            let r = PartName::merged(&sources).unwrap();
            for s in &sources {
                prop_assert!(r.contains(s));
                prop_assert!(!s.contains(&r) || s == &r);
            }
        }
    }
}
