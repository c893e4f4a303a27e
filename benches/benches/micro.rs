//! Micro-benchmarks of the hot paths (criterion): part write, k-way merge,
//! primary-key range lookup, block hash, and the Raft append path (propose →
//! RocksDB append with group commit → apply) of a one-node group, and the
//! replica's block-count invariant that every apply runs.
//!
//! `cargo bench -p benches --bench micro` (add `-- --quick` for a short run).

use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use benches::hits;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use storage::part::writer::write_block;
use storage::scan::{Scan, ScanRequest};
use storage::{Engine, MergeTreeSettings, PartName, Table, TableDef};

fn table() -> Arc<Table> {
    Table::new(TableDef {
        schema: hits::schema(),
        engine: Engine::MergeTree,
        partition_by: None,
        order_by: vec!["counter_id".into(), "event_date".into(), "user_id".into()],
        settings: MergeTreeSettings::default(),
    })
    .expect("table")
}

fn block(rows: usize) -> RecordBatch {
    let b = hits::generate(rows, rows);
    arrow::compute::concat_batches(&hits::schema(), &b).expect("concat")
}

fn part_write(c: &mut Criterion) {
    let t = table();
    let b = block(100_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut g = c.benchmark_group("part_write");
    g.throughput(Throughput::Elements(b.num_rows() as u64)).sample_size(10);
    let mut n = 0;
    g.bench_function("100k_rows_sort_encode_fsync", |bench| {
        bench.iter(|| {
            n += 1;
            let p = write_block(&t, dir.path(), PartName::new_insert("all", n), vec![], &b).expect("write");
            std::fs::remove_dir_all(&p.dir).expect("rm");
        })
    });
    g.finish();
}

fn merge_and_lookup(c: &mut Criterion) {
    let t = table();
    let dir = tempfile::tempdir().expect("tempdir");
    let parts: Vec<Arc<storage::Part>> = (1..=4)
        .map(|i| {
            let b = block(50_000);
            Arc::new(write_block(&t, dir.path(), PartName::new_insert("all", i), vec![], &b).expect("write"))
        })
        .collect();
    let mut g = c.benchmark_group("merge");
    g.throughput(Throughput::Elements(200_000)).sample_size(10);
    let out = tempfile::tempdir().expect("tempdir");
    g.bench_function("kway_4x50k_rows", |bench| {
        bench.iter(|| {
            let p = storage::merge::merge_parts(&t, out.path(), &parts, Default::default()).expect("merge");
            std::fs::remove_dir_all(&p.dir).expect("rm");
        })
    });
    g.finish();
    let merged = Arc::new(storage::merge::merge_parts(&t, out.path(), &parts, Default::default()).expect("merge"));
    let mut g = c.benchmark_group("primary_key");
    g.bench_function("range_lookup_counter_id_eq", |bench| {
        let req = ScanRequest { columns: Some(vec!["user_id".into()]), ..Default::default() }
            .with_filter_sql(&t, "counter_id = 62")
            .expect("filter");
        bench.iter(|| {
            let scan = Scan::new(&t, vec![merged.clone()], &req).expect("scan");
            scan.map(|b| b.expect("batch").num_rows()).sum::<usize>()
        })
    });
    g.finish();
}

fn block_hash(c: &mut Criterion) {
    let b = block(100_000);
    let mut g = c.benchmark_group("block_hash");
    g.throughput(Throughput::Elements(b.num_rows() as u64));
    g.bench_function("xxh3_128_of_100k_rows", |bench| bench.iter(|| storage::dedup::block_id(&b).expect("hash")));
    g.finish();
}

struct OneTable(Arc<Table>);

impl replication::TableResolver for OneTable {
    fn table(&self, _: &str) -> Option<Arc<Table>> {
        Some(self.0.clone())
    }
}

fn raft_append(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let node = rt.block_on(async {
        let cfg = replication::NodeConfig::new(1, dir.path(), "127.0.0.1:0".parse().expect("addr"));
        replication::ReplicationNode::start(cfg, Arc::new(OneTable(table()))).await.expect("node")
    });
    let spec = replication::GroupSpec {
        group: 1,
        table: "t".into(),
        partition_id: "all".into(),
        members: vec![1],
        settings: Default::default(),
    };
    rt.block_on(async {
        node.ensure_group(&spec).await.expect("group");
        while node.group(1).expect("group").raft.current_leader().await != Some(1) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let mut g = c.benchmark_group("raft");
    g.sample_size(20);
    // A command that changes nothing: measures propose, the RocksDB append
    // with its WAL fsync, commit and apply.
    g.bench_function("propose_commit_apply_one_entry", |bench| {
        bench.iter(|| rt.block_on(node.propose(1, replication::Command::KillMutation { version: 0 })).expect("propose"))
    });
    g.bench_function("propose_64_concurrent_entries_group_commit", |bench| {
        bench.iter(|| {
            rt.block_on(async {
                let futs = (0..64).map(|_| node.propose(1, replication::Command::KillMutation { version: 0 }));
                for r in futures::future::join_all(futs).await {
                    r.expect("propose");
                }
            })
        })
    });
    // The replica's invariant (issue 16) runs after every applied entry: it
    // sums the inserted blocks of the group's active parts. Measured with
    // 300 active parts (ClickHouse's default parts_to_throw_insert), alone
    // and inside the apply of an entry.
    rt.block_on(async {
        for i in 0..300 {
            let quorum = replication::registry::Quorum::Majority;
            let b = block(10);
            node.insert(&spec, vec![], b, format!("b{i}"), quorum, Duration::from_secs(10)).await.expect("insert");
        }
    });
    let replica = node.group(1).expect("group").replica.clone();
    assert_eq!(replica.snapshot().len(), 300, "one part per insert");
    g.bench_function("check_blocks_300_parts", |bench| bench.iter(|| replica.check_blocks().expect("invariant")));
    g.bench_function("propose_commit_apply_one_entry_300_parts", |bench| {
        bench.iter(|| rt.block_on(node.propose(1, replication::Command::KillMutation { version: 0 })).expect("propose"))
    });
    g.finish();
    rt.block_on(node.shutdown());
}

criterion_group!(micro, part_write, merge_and_lookup, block_hash, raft_append);
criterion_main!(micro);
