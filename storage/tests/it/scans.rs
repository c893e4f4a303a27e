//! Scans: projection, filters, part and page pruning, FINAL.

use std::sync::Arc;

use arrow::array::{ArrayRef, Date32Array, Int64Array, RecordBatch, UInt32Array};
use arrow::datatypes::{DataType, Field, Schema};
use storage::Engine;
use storage::scan::{Scan, ScanRequest};

use crate::common::*;

fn events() -> (Arc<storage::Table>, Arc<Schema>) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("d", DataType::Date32, false),
        Field::new("counter_id", DataType::UInt32, false),
        Field::new("x", DataType::Int64, false),
    ]));
    let t = table(schema.clone(), Engine::MergeTree, Some("toYYYYMM(d)"), vec!["counter_id".into(), "d".into()]);
    (t, schema)
}

#[test]
fn partition_and_primary_key_pruning_read_only_what_matches() {
    let (t, schema) = events();
    let d = tmp();
    let mut parts = Vec::new();
    // Two months, 40k rows each, counter_id 0..999 sorted.
    for (block, base) in [(1i64, 15857i32), (2, 15887)] {
        let n = 40_000;
        let b = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Date32Array::from((0..n).map(|i| base + (i % 28)).collect::<Vec<_>>())) as ArrayRef,
                Arc::new(UInt32Array::from((0..n).map(|i| (i / 40) as u32).collect::<Vec<_>>())),
                Arc::new(Int64Array::from((0..n as i64).collect::<Vec<_>>())),
            ],
        )
        .unwrap();
        parts.push(insert(&t, d.path(), block, &b));
    }
    let run = |filter: &str| {
        let req =
            ScanRequest { columns: Some(vec!["x".into()]), ..Default::default() }.with_filter_sql(&t, filter).unwrap();
        let s = Scan::new(&t, parts.clone(), &req).unwrap();
        let stats = s.stats().clone();
        let rows: usize = s.map(|b| b.unwrap().num_rows()).sum();
        (stats, rows)
    };
    // Partition pruning by the date range.
    let (st, rows) = run("d >= '2013-07-01'");
    assert_eq!((st.parts_total, st.parts_selected), (2, 1));
    assert_eq!(rows, 40_000);
    // Primary-key pruning by the page index: one granule of 8192 per part.
    let (st, rows) = run("counter_id = 62");
    assert_eq!(rows, 80);
    assert_eq!(st.parts_selected, 2);
    assert!(st.rows_selected <= 2 * 8192, "{st:?}");
    // Both, plus a filter that can't prune.
    let (st, rows) = run("counter_id = 62 AND d < '2013-07-01' AND x % 2 = 0");
    assert_eq!(st.parts_selected, 1);
    assert_eq!(rows, 20);
    // Nothing matches: nothing is read.
    let (st, rows) = run("counter_id > 5000");
    assert_eq!((st.parts_selected, rows), (0, 0));
}

#[test]
fn projection_returns_requested_columns_in_order() {
    let t = kv_table(Engine::MergeTree, vec![]);
    let d = tmp();
    let p = insert(&t, d.path(), 1, &kv_batch(&t, &[2, 1], &[20, 10]));
    let req = ScanRequest { columns: Some(vec!["v".into(), "k".into()]), ..Default::default() }
        .with_filter_sql(&t, "s = 's2'")
        .unwrap();
    let b = concat(&Scan::new(&t, vec![p], &req).unwrap().map(|b| b.unwrap()).collect::<Vec<_>>());
    assert_eq!(b.schema().fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>(), vec!["v", "k"]);
    assert_eq!((i64s(&b, "v"), i64s(&b, "k")), (vec![20], vec![2]));
    let bad = ScanRequest { columns: Some(vec!["nope".into()]), ..Default::default() };
    assert!(Scan::new(&t, vec![], &bad).is_err());
}

#[test]
fn final_merges_on_read_and_filters_after_merging() {
    let t = kv_table(Engine::Replacing { version: None, is_deleted: None }, vec![]);
    let d = tmp();
    let p1 = insert(&t, d.path(), 1, &kv_batch(&t, &[1, 2], &[10, 20]));
    let p2 = insert(&t, d.path(), 2, &kv_batch(&t, &[1], &[11]));
    let read = |final_: bool, filter: Option<&str>| {
        let mut req = ScanRequest { final_, ..Default::default() };
        if let Some(f) = filter {
            req = req.with_filter_sql(&t, f).unwrap();
        }
        let batches: Vec<_> = Scan::new(&t, vec![p1.clone(), p2.clone()], &req).unwrap().map(|b| b.unwrap()).collect();
        if batches.is_empty() { vec![] } else { i64s(&concat(&batches), "v") }
    };
    let mut plain = read(false, None);
    plain.sort();
    assert_eq!(plain, vec![10, 11, 20]);
    assert_eq!(read(true, None), vec![11, 20]);
    // A filter on a non-key column applies after FINAL: the old version must not resurface.
    assert_eq!(read(true, Some("v = 10")), Vec::<i64>::new());
    assert_eq!(read(true, Some("k = 1")), vec![11]);
}

/// A part of many row groups split over several scans (the parallel read of
/// one big part) returns exactly the rows one scan of the whole part does,
/// with page pruning and a lightweight-delete mask cut to each slice.
#[test]
fn row_group_slices_of_one_part_read_every_row_once() {
    let schema =
        Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, false), Field::new("v", DataType::Int64, false)]));
    let t = storage::Table::new(storage::TableDef {
        schema: schema.clone(),
        engine: Engine::MergeTree,
        partition_by: None,
        order_by: vec!["k".into()],
        settings: storage::MergeTreeSettings {
            row_group_size: 1000,
            index_granularity: 100,
            merge_batch_rows: 300,
            ..Default::default()
        },
    })
    .unwrap();
    let d = tmp();
    let n = 10_000i64;
    let b = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from((0..n).collect::<Vec<_>>())) as ArrayRef,
            Arc::new(Int64Array::from((0..n).map(|i| i * 7 % 10).collect::<Vec<_>>())),
        ],
    )
    .unwrap();
    let written = insert(&t, d.path(), 1, &b);
    let mut part = storage::Part::load(&written.dir).unwrap();
    part.mask = Some((0..n as u32).filter(|i| i % 13 == 0).collect());
    let part = Arc::new(part);
    for filter in [None, Some("k >= 1234 AND k < 8765"), Some("k >= 1234 AND k < 8765 AND v % 3 = 0"), Some("k = 4321")]
    {
        let mut req = ScanRequest { columns: Some(vec!["k".into()]), ..Default::default() };
        if let Some(f) = filter {
            req = req.with_filter_sql(&t, f).unwrap();
        }
        let keys = |s: Scan| -> Vec<i64> {
            s.flat_map(|b| b.unwrap().column(0).as_any().downcast_ref::<Int64Array>().unwrap().values().to_vec())
                .collect()
        };
        let whole = keys(Scan::new(&t, vec![part.clone()], &req).unwrap());
        assert!(!whole.is_empty());
        assert!(whole.iter().all(|k| k % 13 != 0), "the mask applies");
        for streams in 1..=4 {
            let lists = storage::scan::split(vec![part.clone()], streams).unwrap();
            assert_eq!(lists.len(), streams, "10 row groups fill {streams} streams");
            let mut got: Vec<i64> =
                lists.into_iter().flat_map(|l| keys(Scan::new_slices(&t, l, &req).unwrap())).collect();
            got.sort();
            assert_eq!(got, whole, "filter {filter:?}, {streams} streams");
        }
    }
}
