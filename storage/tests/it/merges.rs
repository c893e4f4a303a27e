//! Merges: k-way correctness, determinism, bounded batches, OPTIMIZE, crashes.

use std::sync::Arc;

use proptest::prelude::*;
use storage::merge::selector::{Candidate, select_optimize};
use storage::merge::{ReduceMode, merge_parts};
use storage::part_set;
use storage::{Engine, StorageError, failpoint};

use crate::common::*;

#[test]
fn merge_is_sorted_complete_and_deterministic() {
    let t = kv_table(Engine::MergeTree, vec![]);
    let d = tmp();
    let mut parts = Vec::new();
    for block in 1..=5i64 {
        let ks: Vec<i64> = (0..3000).map(|i| (i * 7919 + block * 13) % 5000).collect();
        let vs: Vec<i64> = ks.iter().map(|k| k * 10 + block).collect();
        parts.push(insert(&t, d.path(), block, &kv_batch(&t, &ks, &vs)));
    }
    let m = merge_parts(&t, d.path(), &parts, ReduceMode::default()).unwrap();
    assert_eq!(m.name.to_string(), "all_1_5_1");
    let b = read(&m);
    assert_eq!(b.num_rows(), 15_000);
    let ks = i64s(&b, "k");
    assert!(ks.windows(2).all(|w| w[0] <= w[1]));
    // Equal keys come out in block order (older first).
    let vs = i64s(&b, "v");
    for i in 1..ks.len() {
        if ks[i] == ks[i - 1] {
            assert!(vs[i] % 10 > vs[i - 1] % 10);
        }
    }
    // Byte-identical on a second run elsewhere (a replica).
    let d2 = tmp();
    let mut parts2 = Vec::new();
    for p in &parts {
        let to = d2.path().join(p.name.to_string());
        std::fs::create_dir_all(&to).unwrap();
        for f in std::fs::read_dir(&p.dir).unwrap() {
            let f = f.unwrap();
            std::fs::copy(f.path(), to.join(f.file_name())).unwrap();
        }
        parts2.push(Arc::new(storage::Part::load(&to).unwrap()));
    }
    let m2 = merge_parts(&t, d2.path(), &parts2, ReduceMode::default()).unwrap();
    assert_eq!(std::fs::read(m.data_path()).unwrap(), std::fs::read(m2.data_path()).unwrap());
    assert_eq!(m.meta.files, m2.meta.files);
}

#[test]
fn optimize_semantics() {
    let c = |pid: &str, b: i64| Candidate {
        name: storage::PartName::new_insert(pid, b),
        bytes: 10,
        barrier: 0,
        busy: false,
    };
    let parts = vec![c("a", 1), c("a", 2), c("b", 3)];
    assert_eq!(select_optimize(&parts, None, false, 100).len(), 1, "b has one part: nothing to do without FINAL");
    assert_eq!(select_optimize(&parts, None, true, 100).len(), 2, "FINAL merges a single part too");
    let only_b = select_optimize(&parts, Some("b"), true, 100);
    assert_eq!(only_b, vec![vec![storage::PartName::new_insert("b", 3)]]);
}

#[test]
fn final_merge_of_a_single_part_and_deduplicate() {
    let t = kv_table(Engine::MergeTree, vec![]);
    let d = tmp();
    let p = insert(&t, d.path(), 1, &kv_batch(&t, &[1, 1, 2, 1], &[5, 5, 6, 7]));
    let p2 = insert(&t, d.path(), 2, &kv_batch(&t, &[1, 2], &[5, 6]));
    let single = merge_parts(&t, d.path(), std::slice::from_ref(&p), ReduceMode::default()).unwrap();
    assert_eq!(single.name.to_string(), "all_1_1_1");
    assert_eq!(read(&single).num_rows(), 4);
    let mode = ReduceMode { deduplicate: true, ..Default::default() };
    let dd = merge_parts(&t, d.path(), &[p, p2], mode).unwrap();
    let b = read(&dd);
    assert_eq!(i64s(&b, "k"), vec![1, 1, 2]);
    assert_eq!(i64s(&b, "v"), vec![5, 7, 6]);
}

#[test]
fn crash_mid_merge_leaves_sources_active() {
    let mut t = kv_table(Engine::MergeTree, vec![]).def.clone();
    t.settings.merge_batch_rows = 100;
    let t = storage::Table::new(t).unwrap();
    let d = tmp();
    let ks: Vec<i64> = (0..1000).collect();
    let a = insert(&t, d.path(), 1, &kv_batch(&t, &ks, &ks));
    let b = insert(&t, d.path(), 2, &kv_batch(&t, &ks, &ks));
    for point in ["merge:mid", "part_write:before_rename"] {
        failpoint::arm(point);
        let r = merge_parts(&t, d.path(), &[a.clone(), b.clone()], ReduceMode::default());
        failpoint::disarm_all();
        assert!(matches!(r, Err(StorageError::SimulatedCrash(_))));
        let (set, report) = part_set::recover(d.path()).unwrap();
        let names: Vec<String> = set.snapshot().iter().map(|p| p.name.to_string()).collect();
        assert_eq!(names, vec!["all_1_1_0", "all_2_2_0"], "{point}");
        assert_eq!(report.removed_temp.len(), 1, "{point}");
    }
    // Crash after the rename: the result is durable and covers its sources.
    failpoint::arm("part_write:after_rename");
    assert!(merge_parts(&t, d.path(), &[a.clone(), b.clone()], ReduceMode::default()).is_err());
    failpoint::disarm_all();
    drop((a, b));
    let (set, _) = part_set::recover(d.path()).unwrap();
    let names: Vec<String> = set.snapshot().iter().map(|p| p.name.to_string()).collect();
    assert_eq!(names, vec!["all_1_2_1"]);
    assert_eq!(read(set.snapshot()[0].as_ref()).num_rows(), 2000);
}

#[test]
fn merge_holds_one_batch_per_input_not_the_whole_input() {
    // 40 inputs of 2000 rows merged with 100-row batches: every chunk the merge
    // yields is bounded by the batch size, whatever the input size.
    let mut def = kv_table(Engine::MergeTree, vec![]).def.clone();
    def.settings.merge_batch_rows = 100;
    let t = storage::Table::new(def).unwrap();
    let d = tmp();
    let parts: Vec<_> = (1..=40i64)
        .map(|b| {
            let ks: Vec<i64> = (0..2000).map(|i| i * 40 + b).collect();
            insert(&t, d.path(), b, &kv_batch(&t, &ks, &ks))
        })
        .collect();
    let m = storage::merge::kway::KWayMerge::new(t.clone(), &parts, None, 100, false).unwrap();
    let mut total = 0;
    for c in m {
        let c = c.unwrap();
        assert!(c.num_rows() <= 100);
        total += c.num_rows();
    }
    assert_eq!(total, 80_000);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]
    #[test]
    fn merge_equals_stable_sort_of_concatenation(blocks in proptest::collection::vec(proptest::collection::vec(0i64..50, 1..60), 1..6), batch in 1usize..40) {
        let mut def = kv_table(Engine::MergeTree, vec![]).def.clone();
        def.settings.merge_batch_rows = batch;
        let t = storage::Table::new(def).unwrap();
        let d = tmp();
        let mut expected = Vec::new();
        let mut parts = Vec::new();
        for (bi, ks) in blocks.iter().enumerate() {
            let vs: Vec<i64> = (0..ks.len() as i64).map(|i| bi as i64 * 1000 + i).collect();
            parts.push(insert(&t, d.path(), bi as i64 + 1, &kv_batch(&t, ks, &vs)));
            let mut sorted: Vec<(i64, i64)> = ks.iter().copied().zip(vs).collect();
            sorted.sort_by_key(|x| x.0);
            expected.extend(sorted);
        }
        expected.sort_by_key(|x| x.0); // stable: block order within equal keys
        let m = merge_parts(&t, d.path(), &parts, ReduceMode::default()).unwrap();
        let b = read(&m);
        let got: Vec<(i64, i64)> = i64s(&b, "k").into_iter().zip(i64s(&b, "v")).collect();
        prop_assert_eq!(got, expected);
    }
}

/// Regression: merging parts of an `ORDER BY tuple()` table panicked with
/// "row index out of bounds" (the empty sort key had no rows).
#[test]
fn regression_merge_without_sort_key() {
    let kv = kv_table(Engine::MergeTree, vec![]);
    let t = table(kv.schema().clone(), Engine::MergeTree, None, vec![]);
    let d = tmp();
    let parts = vec![
        insert(&t, d.path(), 1, &kv_batch(&t, &[3, 1], &[30, 10])),
        insert(&t, d.path(), 2, &kv_batch(&t, &[2], &[20])),
    ];
    let m = merge_parts(&t, d.path(), &parts, ReduceMode::default()).unwrap();
    let b = read(&m);
    // No key: rows keep insertion order, part by part.
    assert_eq!(i64s(&b, "k"), vec![3, 1, 2]);
}

/// Issue 16: a merge of the parts on both sides of a part a running merge
/// took, swapped in after that merge finished, covered its result and made
/// its rows disappear. The swap is refused now, whatever the order.
#[test]
fn regression_a_merge_result_never_swaps_out_a_part_that_is_not_its_source() {
    let t = kv_table(Engine::MergeTree, vec![]);
    let d = tmp();
    let parts: Vec<_> = (1..=4).map(|b| insert(&t, d.path(), b, &kv_batch(&t, &[b], &[b]))).collect();
    let mut set = storage::part_set::PartSet::new();
    for p in &parts {
        set.add(p.clone()).unwrap();
    }
    let merge = |ps: &[&std::sync::Arc<storage::Part>]| {
        let v: Vec<_> = ps.iter().map(|p| (*p).clone()).collect();
        storage::merge::merge_parts(&t, d.path(), &v, Default::default()).unwrap()
    };
    // Blocks 2 and 3 merged; then a merge chosen around them (1 and 4).
    let inner = merge(&[&parts[1], &parts[2]]);
    assert_eq!(inner.meta.blocks, Some(2));
    let outer = merge(&[&parts[0], &parts[3]]);
    assert_eq!(outer.name.to_string(), "all_1_4_1");
    set.replace(&[parts[1].name.clone(), parts[2].name.clone()], std::sync::Arc::new(inner)).unwrap();
    let err = set.replace(&[parts[0].name.clone(), parts[3].name.clone()], std::sync::Arc::new(outer)).unwrap_err();
    assert!(matches!(err, StorageError::CoversOtherPart { .. }), "{err}");
    let rows: u64 = set.active().map(|p| p.meta.rows).sum();
    assert_eq!(rows, 4, "every block's row is still active");
    assert_eq!(set.active().map(|p| p.meta.blocks.unwrap()).sum::<u64>(), 4);
}
