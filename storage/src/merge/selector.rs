//! Merge selection modelled on ClickHouse's `SimpleMergeSelector`: among ranges
//! of adjacent parts of one partition, allow a range when it is big enough
//! relative to its largest part (the base, lowered for partitions with many
//! small parts), and pick the allowed range with the lowest cost per part.
//! Its two heuristics are kept: tiny parts at the right end of a range are
//! left out (else a stream of small inserts rewrites the big part at their
//! left every few inserts), and a range whose size matches the part at its
//! left scores better (parts grow in aligned steps).

use crate::part::name::PartName;

/// A part the selector may consider.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub name: PartName,
    pub bytes: u64,
    /// Parts merge together only when their barriers are equal — the caller
    /// sets it to the first mutation each part still needs, so a merge never
    /// mixes parts on different sides of a pending mutation.
    pub barrier: i64,
    /// The part is being merged or mutated: it is not merged again, and no
    /// merge spans it. A merge's result is named by the block range of its
    /// sources, so a merge of the parts on both sides of a busy part would
    /// claim that part's blocks without holding its rows — and swapping it
    /// in would make them disappear. Busy parts are passed, not left out.
    pub busy: bool,
}

/// The maximal runs of adjacent, non-busy parts of one partition with one
/// barrier, in name order: what a merge may take a range of.
fn runs<'a>(sorted: &[&'a Candidate]) -> Vec<Vec<&'a Candidate>> {
    let mut out: Vec<Vec<&Candidate>> = Vec::new();
    let mut cur: Vec<&Candidate> = Vec::new();
    for c in sorted {
        let breaks = cur.last().is_some_and(|l| l.name.partition_id != c.name.partition_id || l.barrier != c.barrier);
        if c.busy || breaks {
            out.extend((!cur.is_empty()).then(|| std::mem::take(&mut cur)));
        }
        if !c.busy {
            cur.push(c);
        }
    }
    out.extend((!cur.is_empty()).then_some(cur));
    out
}

/// `SimpleMergeSelector` settings: ClickHouse's defaults but for the fixed
/// cost per part, 1 MiB instead of 5 MiB. With 5 MiB every part below a few
/// MiB counts as the same size, so a stream of small inserts rewrites one
/// growing part every few inserts: bytes merged per byte inserted were ~40
/// over 3,000 small parts (the `write_amplification` test), ~11 with 1 MiB,
/// for about one more active part on average.
#[derive(Debug, Clone)]
pub struct SelectorSettings {
    pub base: f64,
    pub min_parts_to_lower_base: f64,
    pub max_parts_to_lower_base: f64,
    pub size_fixed_cost_to_add: f64,
    pub max_parts_to_merge_at_once: usize,
    pub max_total_bytes: u64,
    /// Parts at the right end of a range smaller than this share of the
    /// range's bytes are left out of it (0 disables).
    pub remove_small_parts_at_right_max_ratio: f64,
    /// Align heuristic: a range whose bytes are at least this share of the
    /// part at its left, and within this many powers of two of it, has its
    /// score lowered by up to this factor.
    pub align_min_ratio_to_prev_part: f64,
    pub align_max_difference_in_powers_of_two: f64,
    pub align_max_score_adjustment: f64,
}

impl Default for SelectorSettings {
    fn default() -> Self {
        SelectorSettings {
            base: 5.0,
            min_parts_to_lower_base: 10.0,
            max_parts_to_lower_base: 50.0,
            size_fixed_cost_to_add: 1024.0 * 1024.0,
            max_parts_to_merge_at_once: 100,
            max_total_bytes: 150 << 30,
            remove_small_parts_at_right_max_ratio: 0.01,
            align_min_ratio_to_prev_part: 0.9,
            align_max_difference_in_powers_of_two: 0.5,
            align_max_score_adjustment: 0.75,
        }
    }
}

fn map_to_unit(value: f64, min: f64, max: f64) -> f64 {
    if value <= min {
        0.0
    } else if value >= max {
        1.0
    } else {
        (value - min) / (max - min)
    }
}

fn allow(sum: f64, max: f64, range_len: usize, partition_parts: usize, s: &SelectorSettings) -> bool {
    // ClickHouse also lowers the base for old parts; merges here are chosen by a
    // group leader and must not depend on wall-clock age, so only the number of
    // parts in the partition lowers it.
    let combined = map_to_unit(partition_parts as f64, s.min_parts_to_lower_base, s.max_parts_to_lower_base);
    let lowered_base = s.base + (2.0f64.min(s.base) - s.base) * combined;
    (sum + range_len as f64 * s.size_fixed_cost_to_add) / (max + s.size_fixed_cost_to_add) >= lowered_base
}

fn score(sum: f64, count: usize, s: &SelectorSettings) -> f64 {
    (sum + s.size_fixed_cost_to_add * count as f64) / (count as f64 - 1.9)
}

/// The score of the allowed range `range` (bytes of its parts, in order) whose
/// left neighbour has `prev_at_left` bytes (0 at the partition's start), and
/// how many of its parts to merge once tiny parts at its right are left out.
fn consider(range: &[u64], prev_at_left: u64, s: &SelectorSettings) -> (f64, usize) {
    let mut sum: u64 = range.iter().sum();
    let mut len = range.len();
    while len >= 3 && (range[len - 1] as f64) < s.remove_small_parts_at_right_max_ratio * sum as f64 {
        len -= 1;
        sum -= range[len];
    }
    let mut sc = score(sum as f64, len, s);
    let prev = prev_at_left as f64;
    if prev > sum as f64 * s.align_min_ratio_to_prev_part && sum > 0 {
        let difference = (sum as f64 / prev).log2().abs();
        if difference < s.align_max_difference_in_powers_of_two {
            let t = difference / s.align_max_difference_in_powers_of_two;
            sc *= s.align_max_score_adjustment + (1.0 - s.align_max_score_adjustment) * t;
        }
    }
    (sc, len)
}

/// Chooses one merge among `parts` (any order, any partitions), or `None`.
pub fn select_merge(parts: &[Candidate], s: &SelectorSettings) -> Option<Vec<PartName>> {
    let mut sorted: Vec<&Candidate> = parts.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let mut best: Option<(f64, Vec<PartName>)> = None;
    let mut start = 0;
    while start < sorted.len() {
        let pid = &sorted[start].name.partition_id;
        let mut end = start;
        while end < sorted.len() && &sorted[end].name.partition_id == pid {
            end += 1;
        }
        let partition = &sorted[start..end];
        let sizes: Vec<u64> = partition.iter().map(|c| c.bytes).collect();
        for i in 0..partition.len() {
            if partition[i].busy {
                continue;
            }
            let prev_at_left = if i == 0 { 0 } else { sizes[i - 1] };
            let (mut sum, mut max) = (0u64, 0u64);
            for j in i..partition.len().min(i + s.max_parts_to_merge_at_once) {
                if partition[j].busy || partition[j].barrier != partition[i].barrier {
                    break;
                }
                sum += partition[j].bytes;
                max = max.max(partition[j].bytes);
                if sum > s.max_total_bytes {
                    break;
                }
                let len = j - i + 1;
                if len < 2 {
                    continue;
                }
                if allow(sum as f64, max as f64, len, partition.len(), s) {
                    let (sc, keep) = consider(&sizes[i..=j], prev_at_left, s);
                    if best.as_ref().is_none_or(|(b, _)| sc < *b) {
                        best = Some((sc, partition[i..i + keep].iter().map(|c| c.name.clone()).collect()));
                    }
                }
            }
        }
        start = end;
    }
    best.map(|(_, v)| v)
}

/// OPTIMIZE: the parts to merge in each partition (or only `partition`). With
/// `final_` every run of adjacent parts that may merge (see [`Candidate`]:
/// busy parts and mutation barriers split a partition) is merged, a single
/// part too (re-applying the engine's rules); without it, the first run of
/// two parts or more in each partition.
pub fn select_optimize(
    parts: &[Candidate],
    partition: Option<&str>,
    final_: bool,
    max_parts: usize,
) -> Vec<Vec<PartName>> {
    let mut by_partition: std::collections::BTreeMap<&str, Vec<&Candidate>> = Default::default();
    for c in parts {
        if partition.is_none_or(|p| p == c.name.partition_id) {
            by_partition.entry(c.name.partition_id.as_str()).or_default().push(c);
        }
    }
    let mut out = Vec::new();
    for (_, mut v) in by_partition {
        v.sort_by(|a, b| a.name.cmp(&b.name));
        let names = |r: &[&Candidate]| r.iter().map(|c| c.name.clone()).collect::<Vec<_>>();
        if final_ {
            out.extend(runs(&v).iter().map(|r| names(r)));
        } else if let Some(r) = runs(&v).into_iter().find(|r| r.len() >= 2) {
            out.push(names(&r[..r.len().min(max_parts.max(2))]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cands(sizes: &[u64]) -> Vec<Candidate> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, &b)| Candidate {
                name: PartName::new_insert("all", i as i64 + 1),
                bytes: b,
                barrier: 0,
                busy: false,
            })
            .collect()
    }

    #[test]
    fn merges_small_equal_parts_and_not_one_huge_with_a_tiny() {
        let picked = select_merge(&cands(&[1000; 6]), &SelectorSettings::default()).unwrap();
        assert!(picked.len() >= 5, "{picked:?}");
        // A 10 GB part next to one small part: the range is not base times its max.
        assert!(select_merge(&cands(&[10 << 30, 1 << 20]), &SelectorSettings::default()).is_none());
    }

    #[test]
    fn never_mixes_partitions_or_barriers() {
        let mut c = cands(&[100; 4]);
        c[2].name.partition_id = "other".into();
        c[3].name.partition_id = "other".into();
        let mut c2 = cands(&[100; 8]);
        for x in c2.iter_mut().skip(4) {
            x.barrier = 7;
        }
        for set in [c, c2] {
            if let Some(p) = select_merge(&set, &SelectorSettings::default()) {
                let first = set.iter().find(|x| x.name == p[0]).unwrap();
                for n in &p {
                    let x = set.iter().find(|x| &x.name == n).unwrap();
                    assert_eq!(x.name.partition_id, first.name.partition_id);
                    assert_eq!(x.barrier, first.barrier);
                }
            }
        }
    }

    /// Bytes written by merges per byte inserted when `inserts` equal small
    /// parts arrive one at a time and the selector runs after each.
    fn write_amplification(inserts: usize, part_bytes: u64, s: &SelectorSettings) -> f64 {
        let mut parts: Vec<u64> = Vec::new();
        let mut merged = 0u64;
        for _ in 0..inserts {
            parts.push(part_bytes);
            // One merge per insert at most, as one merge slot would.
            if let Some(p) = select_merge(&cands(&parts), s) {
                let (first, n) = ((p[0].min_block - 1) as usize, p.len());
                let bytes: u64 = parts[first..first + n].iter().sum();
                merged += bytes;
                parts.splice(first..first + n, [bytes]);
            }
        }
        merged as f64 / (inserts as u64 * part_bytes) as f64
    }

    /// A stream of small inserts next to a bigger part: the tiny parts merge
    /// among themselves instead of rewriting the big one every few inserts.
    #[test]
    fn tiny_parts_at_the_right_do_not_rewrite_a_big_part() {
        let s = SelectorSettings::default();
        let mut sizes = vec![480 << 10];
        sizes.extend([4 << 10; 6]);
        let picked = select_merge(&cands(&sizes), &s).unwrap();
        assert_eq!(picked[0].min_block, 2, "{picked:?}");
        let off = SelectorSettings { remove_small_parts_at_right_max_ratio: 0.0, ..s.clone() };
        assert_eq!(select_merge(&cands(&sizes), &off).unwrap()[0].min_block, 1);
    }

    /// ClickHouse's 5 MiB fixed cost per part merged a stream of small parts
    /// into one growing part over and over.
    #[test]
    fn small_inserts_are_not_merged_over_and_over() {
        let s = SelectorSettings::default();
        let clickhouse = SelectorSettings { size_fixed_cost_to_add: 5.0 * 1024.0 * 1024.0, ..s.clone() };
        let (ours, theirs) = (write_amplification(3000, 3000, &s), write_amplification(3000, 3000, &clickhouse));
        assert!(ours * 3.0 < theirs && ours < 15.0, "write amplification {ours:.1}, {theirs:.1} with 5 MiB");
    }

    /// Issue 16: OPTIMIZE FINAL on a partition whose middle parts were being
    /// merged picked the parts on both sides; the merge result named their
    /// block range, covered the running merge's parts and made their rows
    /// disappear when it swapped in.
    #[test]
    fn regression_optimize_final_does_not_span_a_part_being_merged() {
        let mut c = cands(&[100; 5]);
        c[2].busy = true;
        let picks = select_optimize(&c, None, true, 100);
        let names: Vec<Vec<i64>> = picks.iter().map(|p| p.iter().map(|n| n.min_block).collect()).collect();
        assert_eq!(names, vec![vec![1, 2], vec![4, 5]]);
        let picks = select_optimize(&c, None, false, 100);
        assert_eq!(picks.len(), 1);
        assert_eq!(picks[0].iter().map(|n| n.min_block).collect::<Vec<_>>(), vec![1, 2]);
        c[1].busy = true;
        c[3].busy = true;
        assert_eq!(select_optimize(&c, None, false, 100), Vec::<Vec<PartName>>::new());
        assert!(select_merge(&c, &SelectorSettings::default()).is_none());
    }

    proptest! {
        /// No pick's block range contains a part that is not one of its
        /// sources: merging it would drop that part's rows.
        #[test]
        fn a_pick_covers_only_its_own_sources(
            parts in proptest::collection::vec((1u64..1_000_000, any::<bool>(), 0i64..2), 1..60),
            final_ in any::<bool>(),
        ) {
            let c: Vec<Candidate> = parts
                .iter()
                .enumerate()
                .map(|(i, &(bytes, busy, barrier))| Candidate {
                    name: PartName::new_insert("all", i as i64 + 1),
                    bytes,
                    barrier,
                    busy,
                })
                .collect();
            let mut picks = select_optimize(&c, None, final_, 100);
            picks.extend(select_merge(&c, &SelectorSettings { base: 1.0, ..Default::default() }));
            for p in picks {
                let result = PartName::merged(&p).unwrap();
                for x in &c {
                    let inside = result.min_block <= x.name.min_block && x.name.max_block <= result.max_block;
                    prop_assert_eq!(inside, p.contains(&x.name), "{:?} vs {:?}", result, x.name);
                    prop_assert!(!(inside && x.busy));
                }
                let b0 = c.iter().find(|x| x.name == p[0]).map(|x| x.barrier);
                prop_assert!(p.iter().all(|n| c.iter().any(|x| &x.name == n && Some(x.barrier) == b0 && !x.busy)));
            }
        }

        #[test]
        fn selection_is_a_contiguous_range_within_limits(sizes in proptest::collection::vec(1u64..1_000_000_000, 0..300)) {
            let s = SelectorSettings::default();
            let c = cands(&sizes);
            if let Some(p) = select_merge(&c, &s) {
                prop_assert!(p.len() >= 2 && p.len() <= s.max_parts_to_merge_at_once);
                for w in p.windows(2) {
                    prop_assert_eq!(w[0].max_block + 1, w[1].min_block);
                }
                let total: u64 = p.iter().map(|n| sizes[(n.min_block - 1) as usize]).sum();
                prop_assert!(total <= s.max_total_bytes);
            }
        }
    }
}
