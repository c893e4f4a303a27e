//! Mutations: ALTER DELETE / UPDATE rewrites, ordering, versions, hard links,
//! lightweight deletes.

use std::os::unix::fs::MetadataExt;

use storage::merge::{ReduceMode, merge_parts};
use storage::mutation::{Mutation, MutationCommand, mutate_part};
use storage::{Engine, StorageError};

use crate::common::*;

fn delete(version: i64, p: &str) -> Mutation {
    Mutation { version, commands: vec![MutationCommand::Delete { predicate: p.into() }] }
}

fn update(version: i64, col: &str, e: &str, p: &str) -> Mutation {
    Mutation {
        version,
        commands: vec![MutationCommand::Update { assignments: vec![(col.into(), e.into())], predicate: p.into() }],
    }
}

#[test]
fn delete_and_update_rewrite_into_versioned_part() {
    let t = kv_table(Engine::MergeTree, vec![]);
    let d = tmp();
    let p = insert(&t, d.path(), 1, &kv_batch(&t, &[1, 2, 3, 4], &[10, 20, 30, 40]));
    let muts = vec![delete(5, "k = 2"), update(6, "v", "v * 100", "k >= 3")];
    let m = mutate_part(&t, d.path(), &p, &muts).unwrap().unwrap();
    assert_eq!(m.name.to_string(), "all_1_1_0_6");
    assert_eq!(m.meta.data_version, 6);
    let b = read(&m);
    assert_eq!(i64s(&b, "k"), vec![1, 3, 4]);
    assert_eq!(i64s(&b, "v"), vec![10, 3000, 4000]);
    // Applied again: nothing pending.
    assert!(mutate_part(&t, d.path(), &std::sync::Arc::new(m), &muts).unwrap().is_none());
}

#[test]
fn pending_mutations_apply_in_version_order() {
    let t = kv_table(Engine::MergeTree, vec![]);
    let d = tmp();
    let p = insert(&t, d.path(), 1, &kv_batch(&t, &[1, 2], &[10, 20]));
    // Given out of order: update (v=5 where k=1) then delete where v=5 must both apply.
    let muts = vec![delete(8, "v = 5"), update(7, "v", "5", "k = 1")];
    let b = read(&mutate_part(&t, d.path(), &p, &muts).unwrap().unwrap());
    assert_eq!(i64s(&b, "k"), vec![2]);
}

#[test]
fn mutation_skips_parts_inserted_after_it() {
    let t = kv_table(Engine::MergeTree, vec![]);
    let d = tmp();
    let newer = insert(&t, d.path(), 9, &kv_batch(&t, &[1], &[1]));
    assert!(mutate_part(&t, d.path(), &newer, &[delete(5, "k = 1")]).unwrap().is_none());
}

#[test]
fn unmatched_part_is_carried_over_by_hard_link() {
    let t = kv_table(Engine::MergeTree, vec![]);
    let d = tmp();
    let p = insert(&t, d.path(), 1, &kv_batch(&t, &[1, 2], &[10, 20]));
    let m = mutate_part(&t, d.path(), &p, &[delete(3, "k = 99")]).unwrap().unwrap();
    assert_eq!(m.name.to_string(), "all_1_1_0_3");
    let (a, b) = (std::fs::metadata(p.data_path()).unwrap(), std::fs::metadata(m.data_path()).unwrap());
    assert_eq!(a.ino(), b.ino(), "data file is shared");
    m.verify().unwrap();
    assert_eq!(read(&m).num_rows(), 2);
}

#[test]
fn update_of_a_key_column_is_refused() {
    let t = kv_table(Engine::MergeTree, vec![]);
    let d = tmp();
    let p = insert(&t, d.path(), 1, &kv_batch(&t, &[1], &[1]));
    let e = mutate_part(&t, d.path(), &p, &[update(2, "k", "k + 1", "1 = 1")]).unwrap_err();
    assert!(matches!(e, StorageError::UpdateKeyColumn(_)), "{e}");
    let e = mutate_part(&t, d.path(), &p, &[delete(2, "nope = 1")]).unwrap_err();
    assert!(matches!(e, StorageError::BadExpression { .. }), "{e}");
}

#[test]
fn lightweight_delete_masks_rows_until_the_next_merge() {
    let t = kv_table(Engine::MergeTree, vec![]);
    let d = tmp();
    let p = insert(&t, d.path(), 1, &kv_batch(&t, &[1, 2, 3, 4], &[10, 20, 30, 40]));
    let lw = |v: i64, pred: &str| Mutation {
        version: v,
        commands: vec![MutationCommand::LightweightDelete { predicate: pred.into() }],
    };
    let m1 = std::sync::Arc::new(mutate_part(&t, d.path(), &p, &[lw(2, "k = 2")]).unwrap().unwrap());
    assert_eq!(m1.meta.masked_rows, 1);
    assert_eq!(i64s(&read(&m1), "k"), vec![1, 3, 4]);
    let m2 = std::sync::Arc::new(mutate_part(&t, d.path(), &m1, &[lw(2, "k = 2"), lw(3, "v >= 40")]).unwrap().unwrap());
    assert_eq!(m2.name.to_string(), "all_1_1_0_3");
    assert_eq!(m2.meta.masked_rows, 2);
    assert_eq!(i64s(&read(&m2), "k"), vec![1, 3]);
    // The data file is shared; only the mask is new.
    assert_eq!(std::fs::metadata(p.data_path()).unwrap().ino(), std::fs::metadata(m2.data_path()).unwrap().ino());
    // A scan honours the mask too.
    let scan = storage::scan::Scan::new(&t, vec![m2.clone()], &Default::default()).unwrap();
    assert_eq!(scan.map(|b| b.unwrap().num_rows()).sum::<usize>(), 2);
    // The next merge drops masked rows for good.
    let other = insert(&t, d.path(), 4, &kv_batch(&t, &[5], &[50]));
    let merged = merge_parts(&t, d.path(), &[m2, other], ReduceMode::default()).unwrap();
    assert_eq!(merged.meta.masked_rows, 0);
    assert_eq!(i64s(&read(&merged), "k"), vec![1, 3, 5]);
    assert_eq!(merged.name.to_string(), "all_1_4_1_3");
}

#[test]
fn update_rewrites_only_the_updated_column_and_keeps_page_index_and_mask() {
    let mut def = kv_table(Engine::MergeTree, vec![]).def.clone();
    def.settings.row_group_size = 3000; // several row groups
    def.settings.index_granularity = 500;
    let t = storage::Table::new(def).unwrap();
    let d = tmp();
    let ks: Vec<i64> = (0..10_000).collect();
    let p = insert(&t, d.path(), 1, &kv_batch(&t, &ks, &ks));
    let lw = Mutation { version: 2, commands: vec![MutationCommand::LightweightDelete { predicate: "k < 10".into() }] };
    let masked = std::sync::Arc::new(mutate_part(&t, d.path(), &p, std::slice::from_ref(&lw)).unwrap().unwrap());
    let up = update(3, "v", "v * 2 + 1", "k % 2 = 0");
    let m = std::sync::Arc::new(mutate_part(&t, d.path(), &masked, &[lw, up]).unwrap().unwrap());
    assert_eq!(m.name.to_string(), "all_1_1_0_3");
    m.verify().unwrap();
    assert_eq!(m.meta.masked_rows, 10, "the mask carries over");
    let b = read(&m);
    assert_eq!(b.num_rows(), 9_990);
    for (k, v) in i64s(&b, "k").into_iter().zip(i64s(&b, "v")) {
        assert_eq!(v, if k % 2 == 0 { k * 2 + 1 } else { k }, "k={k}");
    }
    assert_eq!(strs(&b, "s")[0], "s10");
    // Untouched column chunks are byte copies of the old ones.
    let old = storage::part::reader::builder(&p).unwrap().metadata().clone();
    let new = storage::part::reader::builder(&m).unwrap().metadata().clone();
    assert_eq!(old.num_row_groups(), 4);
    for rg in 0..old.num_row_groups() {
        for c in [0usize, 2] {
            let (a, b) = (old.row_group(rg).column(c), new.row_group(rg).column(c));
            assert_eq!(a.compressed_size(), b.compressed_size());
            let bytes = |path: &std::path::Path, m: &parquet::file::metadata::ColumnChunkMetaData| {
                let all = std::fs::read(path).unwrap();
                let start = m.dictionary_page_offset().unwrap_or(m.data_page_offset()) as usize;
                all[start..start + m.compressed_size() as usize].to_vec()
            };
            assert_eq!(bytes(&p.data_path(), a), bytes(&m.data_path(), b));
        }
    }
    // The page index still prunes on the rewritten part.
    let req = storage::scan::ScanRequest::default().with_filter_sql(&t, "k = 5000").unwrap();
    let s = storage::scan::Scan::new(&t, vec![m.clone()], &req).unwrap();
    assert!(s.stats().rows_selected <= 500, "{:?}", s.stats());
    let rows: Vec<_> = s.map(|b| b.unwrap()).collect();
    assert_eq!(i64s(&concat(&rows), "v"), vec![10_001]);
}

#[test]
fn crash_during_a_mutation_leaves_the_source_part_active() {
    use storage::{failpoint, part_set};
    let t = kv_table(Engine::MergeTree, vec![]);
    // Hard-link path, column-rewrite path, full-rewrite path.
    for (m, point) in [
        (delete(5, "k = 99"), "mutate:before_rename"),
        (update(5, "v", "0", "k = 1"), "mutate:before_rename"),
        (delete(5, "k = 1"), "part_write:before_rename"),
        (delete(5, "k = 1"), "part_write:after_data"),
    ] {
        let d = tmp();
        let p = insert(&t, d.path(), 1, &kv_batch(&t, &[1, 2], &[10, 20]));
        failpoint::arm(point);
        let r = mutate_part(&t, d.path(), &p, std::slice::from_ref(&m));
        failpoint::disarm_all();
        assert!(matches!(r, Err(StorageError::SimulatedCrash(_))), "{point}: {r:?}");
        drop(p);
        let (set, report) = part_set::recover(d.path()).unwrap();
        let names: Vec<String> = set.snapshot().iter().map(|p| p.name.to_string()).collect();
        assert_eq!(names, vec!["all_1_1_0"], "{point}");
        assert_eq!(report.removed_temp.len(), 1, "{point}");
        // Re-running the mutation after the restart completes it.
        let p = set.snapshot()[0].clone();
        let done = mutate_part(&t, d.path(), &p, &[m]).unwrap().unwrap();
        assert_eq!(done.name.to_string(), "all_1_1_0_5");
    }
}
