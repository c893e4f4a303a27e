//! FastAggregateExec against DataFusion's own aggregation.

use super::*;
use arrow::array::{Date32Array, Float64Array, Int32Array, StringArray, UInt8Array, UInt16Array, UInt64Array};
use arrow::datatypes::{Field, Schema};
use datafusion::datasource::MemTable;
use datafusion::execution::SessionStateBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};

fn table(rows: usize) -> Arc<MemTable> {
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let schema = Arc::new(Schema::new(vec![
        Field::new("a", DataType::UInt8, false),
        Field::new("b", DataType::UInt16, false),
        Field::new("c", DataType::Int32, false),
        Field::new("d", DataType::UInt64, false),
        Field::new("e", DataType::Date32, false),
        Field::new("n", DataType::Int32, true),
        Field::new("v", DataType::Float64, true),
        Field::new("s", DataType::Utf8, true),
    ]));
    let mut batches = Vec::new();
    for chunk in 0..rows.div_ceil(1000) {
        let n = 1000.min(rows - chunk * 1000);
        let r: Vec<u64> = (0..n * 8).map(|_| next()).collect();
        let col = |k: usize| r[k * n..(k + 1) * n].to_vec();
        // Sorted runs in `a`, like a primary key.
        let a: Vec<u8> = (0..n).map(|i| ((chunk * 1000 + i) / 700 % 7) as u8).collect();
        let cols: Vec<ArrayRef> = vec![
            Arc::new(UInt8Array::from(a)),
            Arc::new(UInt16Array::from(col(1).iter().map(|v| (v % 50) as u16).collect::<Vec<_>>())),
            Arc::new(Int32Array::from(col(2).iter().map(|v| (v % 40) as i32 - 20).collect::<Vec<_>>())),
            Arc::new(UInt64Array::from(col(3).iter().map(|v| v % 3000 * 0x1_0000_0001).collect::<Vec<_>>())),
            Arc::new(Date32Array::from(col(4).iter().map(|v| 15000 + (v % 90) as i32).collect::<Vec<_>>())),
            Arc::new(Int32Array::from(
                col(5).iter().map(|v| (v % 4 != 0).then_some((v % 5) as i32)).collect::<Vec<_>>(),
            )),
            Arc::new(Float64Array::from(
                col(6).iter().map(|v| (v % 9 != 0).then_some((v % 1000) as f64 / 8.0)).collect::<Vec<_>>(),
            )),
            Arc::new(StringArray::from(
                col(7).iter().map(|v| (v % 5 != 0).then(|| format!("s{}", v % 77))).collect::<Vec<_>>(),
            )),
        ];
        batches.push(RecordBatch::try_new(schema.clone(), cols).unwrap());
    }
    // Several partitions, so the plan has partial and final stages.
    let parts: Vec<Vec<RecordBatch>> = (0..3).map(|p| batches.iter().skip(p).step_by(3).cloned().collect()).collect();
    Arc::new(MemTable::try_new(schema, parts).unwrap())
}

fn ctx(fast: bool, partitions: usize, t: Arc<MemTable>) -> SessionContext {
    let config = SessionConfig::new().with_target_partitions(partitions).with_batch_size(333);
    let mut b = SessionStateBuilder::new().with_config(config).with_default_features();
    if fast {
        b = b.with_physical_optimizer_rule(Arc::new(FastAggregate));
    }
    let ctx = SessionContext::new_with_state(b.build());
    ctx.register_table("t", t).unwrap();
    ctx
}

async fn run(ctx: &SessionContext, sql: &str) -> (Vec<String>, String) {
    let df = ctx.sql(sql).await.unwrap();
    let plan = df.clone().create_physical_plan().await.unwrap();
    let shown = datafusion::physical_plan::displayable(plan.as_ref()).indent(true).to_string();
    let batches = df.collect().await.unwrap();
    let mut rows = Vec::new();
    for b in &batches {
        let fmts: Vec<_> = b
            .columns()
            .iter()
            .map(|c| arrow::util::display::ArrayFormatter::try_new(c.as_ref(), &Default::default()).unwrap())
            .collect();
        for i in 0..b.num_rows() {
            rows.push(fmts.iter().map(|f| f.value(i).to_string()).collect::<Vec<_>>().join("|"));
        }
    }
    rows.sort();
    (rows, shown)
}

/// Every query answers exactly as DataFusion's own aggregation does, with
/// one partition (single stage) and several (partial + final), and the
/// operator is used where the keys fit and not where they don't.
#[tokio::test]
async fn answers_match_datafusion_hash_aggregation() {
    let t = table(20_000);
    let cases = [
        ("SELECT a, count(*), sum(v), avg(v), min(s), max(c), count(v) FROM t GROUP BY a", true),
        ("SELECT a, b, c, count(*), sum(d) FROM t GROUP BY a, b, c", true),
        ("SELECT d, count(*) AS n FROM t GROUP BY d", true),
        ("SELECT count(DISTINCT d) FROM t", true),
        ("SELECT count(DISTINCT d), count(DISTINCT b) FROM t", false),
        ("SELECT e, count(*) FILTER (WHERE a > 3), sum(v) FILTER (WHERE b < 10) FROM t GROUP BY e", true),
        ("SELECT c % 10 AS k, count(*) FROM t GROUP BY k HAVING count(*) > 5", true),
        ("SELECT b, avg(c), min(e), max(s), bool_and(a > 2), var_samp(v) FROM t GROUP BY b", true),
        ("SELECT b, array_agg(a ORDER BY a) IS NOT NULL, median(c) FROM t GROUP BY b", false),
        ("SELECT a, d, count(*) FROM t GROUP BY a, d", false),
        ("SELECT n, count(*) FROM t GROUP BY n", false),
        ("SELECT s, count(*) FROM t GROUP BY s", false),
    ];
    for partitions in [1, 3] {
        let slow = ctx(false, partitions, t.clone());
        let fast = ctx(true, partitions, t.clone());
        for (sql, expect_fast) in cases {
            let (want, _) = run(&slow, sql).await;
            let (got, plan) = run(&fast, sql).await;
            assert!(!want.is_empty(), "{sql}");
            assert_eq!(got, want, "{sql} with {partitions} partitions");
            assert_eq!(plan.contains("FastAggregateExec"), expect_fast, "{sql}:\n{plan}");
        }
    }
}
