//! Each engine's merge rules, checked against ClickHouse's documented behaviour.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int8Array, Int64Array, RecordBatch, UInt8Array, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema};
use storage::Engine;
use storage::agg::{AggState, AggregateFunction, Value};
use storage::merge::{ReduceMode, merge_parts};

use crate::common::*;

fn with_col(b: &RecordBatch, name: &str, a: ArrayRef) -> RecordBatch {
    let i = b.schema().index_of(name).unwrap();
    let mut cols = b.columns().to_vec();
    cols[i] = a;
    RecordBatch::try_new(b.schema(), cols).unwrap()
}

fn replacing(version: bool) -> Arc<storage::Table> {
    kv_table(
        Engine::Replacing {
            version: version.then(|| "ver".to_string()),
            is_deleted: version.then(|| "del".to_string()),
        },
        vec![Field::new("ver", DataType::UInt64, false), Field::new("del", DataType::UInt8, false)],
    )
}

fn rows_kvs(b: &RecordBatch) -> Vec<(i64, i64)> {
    i64s(b, "k").into_iter().zip(i64s(b, "v")).collect()
}

#[test]
fn replacing_highest_version_wins_ties_go_to_later_insert() {
    let t = replacing(true);
    let d = tmp();
    let b1 = kv_batch(&t, &[1, 1, 1, 2, 3], &[10, 11, 12, 20, 30]);
    let b1 = with_col(&b1, "ver", Arc::new(UInt64Array::from(vec![3, 5, 5, 9, 1])));
    let b2 = kv_batch(&t, &[2, 3], &[21, 31]);
    let b2 = with_col(&b2, "ver", Arc::new(UInt64Array::from(vec![1, 1])));
    let b2 = with_col(&b2, "del", Arc::new(UInt8Array::from(vec![0, 1])));
    let p1 = insert(&t, d.path(), 1, &b1);
    let p2 = insert(&t, d.path(), 2, &b2);
    let m = merge_parts(&t, d.path(), &[p1.clone(), p2.clone()], ReduceMode::default()).unwrap();
    // k=1: ver 5 twice, the later row wins; k=2: ver 9 beats the newer ver 1;
    // k=3: a tie, the later insert (is_deleted=1) wins and stays without CLEANUP.
    assert_eq!(rows_kvs(&read(&m)), vec![(1, 12), (2, 20), (3, 31)]);
    let cleanup = ReduceMode { cleanup: true, ..Default::default() };
    let elsewhere = tmp();
    let m2 = merge_parts(&t, elsewhere.path(), &[p1, p2], cleanup).unwrap();
    assert_eq!(rows_kvs(&read(&m2)), vec![(1, 12), (2, 20)]);
}

#[test]
fn replacing_without_version_keeps_last_inserted() {
    let t = replacing(false);
    let d = tmp();
    let p1 = insert(&t, d.path(), 1, &kv_batch(&t, &[1, 2, 2], &[10, 20, 21]));
    let p2 = insert(&t, d.path(), 2, &kv_batch(&t, &[1], &[11]));
    let m = merge_parts(&t, d.path(), &[p1, p2], ReduceMode::default()).unwrap();
    assert_eq!(rows_kvs(&read(&m)), vec![(1, 11), (2, 21)]);
}

#[test]
fn summing_sums_and_drops_all_zero_rows() {
    let t = kv_table(Engine::Summing { columns: None }, vec![]);
    let d = tmp();
    let p1 = insert(&t, d.path(), 1, &kv_batch(&t, &[1, 2, 3], &[5, 1, 7]));
    let p2 = insert(&t, d.path(), 2, &kv_batch(&t, &[1, 2], &[-5, 2]));
    let m = merge_parts(&t, d.path(), &[p1.clone(), p2.clone()], ReduceMode::default()).unwrap();
    let b = read(&m);
    assert_eq!(rows_kvs(&b), vec![(2, 3), (3, 7)]);
    // SELECT … FINAL sums on read, the same way.
    let req = storage::scan::ScanRequest { final_: true, ..Default::default() };
    let fin: Vec<RecordBatch> = storage::scan::Scan::new(&t, vec![p1, p2], &req).unwrap().map(|b| b.unwrap()).collect();
    assert_eq!(rows_kvs(&concat(&fin)), vec![(2, 3), (3, 7)]);
    // Non-summed columns come from the first row of the key.
    assert_eq!(strs(&b, "s"), vec!["s2", "s3"]);
    // Explicit columns: only those are summed; a key column can't be summed.
    let bad = storage::Table::new(storage::TableDef {
        engine: Engine::Summing { columns: Some(vec!["k".into()]) },
        ..t.def.clone()
    });
    assert!(bad.is_err());
}

#[test]
fn aggregating_merges_every_state_kind() {
    use AggregateFunction::*;
    let funcs = [Sum, Min, Max, Count, Avg, Any, AnyLast, UniqExact, GroupBitmap];
    let mut fields = vec![Field::new("k", DataType::Int64, false)];
    fields.extend(funcs.iter().map(|f| f.field(f.name())));
    let schema = Arc::new(Schema::new(fields));
    let t = table(schema.clone(), Engine::Aggregating, None, vec!["k".into()]);
    let d = tmp();
    let mk = |ks: &[i64], xs: &[u64]| {
        let x: ArrayRef = Arc::new(UInt64Array::from(xs.to_vec()));
        let mut cols: Vec<ArrayRef> = vec![Arc::new(Int64Array::from(ks.to_vec()))];
        for f in funcs {
            cols.push(f.states_from_values(&x).unwrap());
        }
        RecordBatch::try_new(schema.clone(), cols).unwrap()
    };
    let p1 = insert(&t, d.path(), 1, &mk(&[1, 1, 2], &[4, 9, 100]));
    let p2 = insert(&t, d.path(), 2, &mk(&[1, 1], &[4, 2]));
    let m = merge_parts(&t, d.path(), &[p1.clone(), p2.clone()], ReduceMode::default()).unwrap();
    let b = read(&m);
    // FINAL merges the states on read into the same bytes the merge wrote.
    let req = storage::scan::ScanRequest { final_: true, ..Default::default() };
    let fin: Vec<RecordBatch> = storage::scan::Scan::new(&t, vec![p1, p2], &req).unwrap().map(|b| b.unwrap()).collect();
    assert_eq!(concat(&fin), b);
    assert_eq!(i64s(&b, "k"), vec![1, 2]);
    let fin = |f: AggregateFunction| {
        let col = b.column_by_name(f.name()).unwrap().as_binary::<i32>();
        AggState::from_bytes(f, col.value(0)).unwrap().finalize()
    };
    assert_eq!(fin(Sum), Value::UInt(19));
    assert_eq!(fin(Min), Value::UInt(2));
    assert_eq!(fin(Max), Value::UInt(9));
    assert_eq!(fin(Count), Value::UInt(4));
    assert_eq!(fin(Avg), Value::Float(19.0 / 4.0));
    assert_eq!(fin(Any), Value::UInt(4));
    assert_eq!(fin(AnyLast), Value::UInt(2));
    assert_eq!(fin(UniqExact), Value::UInt(3));
    assert_eq!(fin(GroupBitmap), Value::UInt(3));
}

fn collapsing() -> Arc<storage::Table> {
    kv_table(Engine::Collapsing { sign: "sign".into() }, vec![Field::new("sign", DataType::Int8, false)])
}

fn signed(t: &storage::Table, ks: &[i64], vs: &[i64], signs: &[i8]) -> RecordBatch {
    with_col(&kv_batch(t, ks, vs), "sign", Arc::new(Int8Array::from(signs.to_vec())))
}

#[test]
fn collapsing_follows_clickhouse_order_dependent_rules() {
    let t = collapsing();
    let d = tmp();
    // The documented example: state, its cancellation, the new state.
    // k=1: +5 -5 +6 -> +6. k=2: +1 -1 -> gone. k=3: -1 +1 (wrong order) -> both stay.
    // k=4: a lone -1 stays. k=5: +1 +2 -> last positive.
    let p1 = insert(&t, d.path(), 1, &signed(&t, &[1, 2, 3, 4, 5], &[5, 1, 7, 9, 1], &[1, 1, -1, -1, 1]));
    let p2 = insert(&t, d.path(), 2, &signed(&t, &[1, 1, 2, 3, 5], &[5, 6, 1, 7, 2], &[-1, 1, -1, 1, 1]));
    let m = merge_parts(&t, d.path(), &[p1.clone(), p2.clone()], ReduceMode::default()).unwrap();
    let b = read(&m);
    let got: Vec<(i64, i64, i8)> = i64s(&b, "k")
        .into_iter()
        .zip(i64s(&b, "v"))
        .zip(b.column_by_name("sign").unwrap().as_primitive::<arrow::datatypes::Int8Type>().values().iter().copied())
        .map(|((k, v), s)| (k, v, s))
        .collect();
    assert_eq!(got, vec![(1, 6, 1), (3, 7, -1), (3, 7, 1), (4, 9, -1), (5, 2, 1)]);

    // FINAL keeps only positive rows.
    let scan =
        storage::scan::Scan::new(&t, vec![p1, p2], &storage::scan::ScanRequest { final_: true, ..Default::default() })
            .unwrap();
    let rows: Vec<RecordBatch> = scan.map(|b| b.unwrap()).collect();
    let b = concat(&rows);
    assert_eq!(rows_kvs(&b), vec![(1, 6), (3, 7), (5, 2)]);
    assert!(b.column_by_name("sign").unwrap().null_count() == 0);
}

mod properties {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    fn blocks() -> impl Strategy<Value = Vec<Vec<(i64, u64, i64)>>> {
        proptest::collection::vec(proptest::collection::vec((0i64..12, 0u64..4, -3i64..4), 1..25), 1..5)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

        /// ReplacingMergeTree(ver): per key, the highest ver; ties to the later insert.
        #[test]
        fn replacing_matches_model(blocks in blocks()) {
            let t = replacing(true);
            let d = tmp();
            let mut model: BTreeMap<i64, (u64, i64)> = BTreeMap::new();
            let mut parts = Vec::new();
            for (bi, rows) in blocks.iter().enumerate() {
                let ks: Vec<i64> = rows.iter().map(|r| r.0).collect();
                let vs: Vec<i64> = rows.iter().map(|r| r.2).collect();
                let b = with_col(&kv_batch(&t, &ks, &vs), "ver", Arc::new(UInt64Array::from(rows.iter().map(|r| r.1).collect::<Vec<_>>())));
                parts.push(insert(&t, d.path(), bi as i64 + 1, &b));
                for &(k, ver, v) in rows {
                    match model.get(&k) {
                        Some((mv, _)) if *mv > ver => {}
                        _ => { model.insert(k, (ver, v)); }
                    }
                }
            }
            let m = merge_parts(&t, d.path(), &parts, ReduceMode::default()).unwrap();
            let want: Vec<(i64, i64)> = model.iter().map(|(k, (_, v))| (*k, *v)).collect();
            prop_assert_eq!(rows_kvs(&read(&m)), want.clone());
            // FINAL on the unmerged parts agrees with the merge.
            let scan = storage::scan::Scan::new(&t, parts, &storage::scan::ScanRequest { final_: true, ..Default::default() }).unwrap();
            let got: Vec<RecordBatch> = scan.map(|b| b.unwrap()).collect();
            prop_assert_eq!(rows_kvs(&concat(&got)), want);
        }

        /// SummingMergeTree: per key, the sum; zero sums vanish. Merging in
        /// stages gives the same as merging at once.
        #[test]
        fn summing_matches_model_and_is_associative(blocks in blocks()) {
            let t = kv_table(Engine::Summing { columns: None }, vec![]);
            let d = tmp();
            let mut model: BTreeMap<i64, i64> = BTreeMap::new();
            let mut parts = Vec::new();
            for (bi, rows) in blocks.iter().enumerate() {
                let ks: Vec<i64> = rows.iter().map(|r| r.0).collect();
                let vs: Vec<i64> = rows.iter().map(|r| r.2).collect();
                parts.push(insert(&t, d.path(), bi as i64 + 1, &kv_batch(&t, &ks, &vs)));
                for &(k, _, v) in rows { *model.entry(k).or_default() += v; }
            }
            let want: Vec<(i64, i64)> = model.into_iter().filter(|(_, v)| *v != 0).collect();
            let m = merge_parts(&t, d.path(), &parts, ReduceMode::default()).unwrap();
            prop_assert_eq!(rows_kvs(&read(&m)), want.clone());
            if parts.len() >= 2 {
                let d2 = tmp();
                let first = Arc::new(merge_parts(&t, d2.path(), &parts[..parts.len() - 1], ReduceMode::default()).unwrap());
                let staged = merge_parts(&t, d2.path(), &[first, parts[parts.len() - 1].clone()], ReduceMode::default()).unwrap();
                prop_assert_eq!(rows_kvs(&read(&staged)), want);
            }
        }

        /// DEDUPLICATE leaves exactly the distinct rows.
        #[test]
        fn deduplicate_leaves_distinct_rows(blocks in blocks()) {
            let t = kv_table(Engine::MergeTree, vec![]);
            let d = tmp();
            let mut model = std::collections::BTreeSet::new();
            let mut parts = Vec::new();
            for (bi, rows) in blocks.iter().enumerate() {
                let ks: Vec<i64> = rows.iter().map(|r| r.0).collect();
                let vs: Vec<i64> = rows.iter().map(|r| r.2).collect();
                parts.push(insert(&t, d.path(), bi as i64 + 1, &kv_batch(&t, &ks, &vs)));
                for &(k, _, v) in rows { model.insert((k, v)); }
            }
            let m = merge_parts(&t, d.path(), &parts, ReduceMode { deduplicate: true, ..Default::default() }).unwrap();
            let mut got = rows_kvs(&read(&m));
            got.sort();
            prop_assert_eq!(got, model.into_iter().collect::<Vec<_>>());
        }
    }
}
