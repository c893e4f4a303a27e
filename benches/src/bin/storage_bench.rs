//! Storage-engine benchmark on the hits table: 100k-row part writes, OPTIMIZE
//! FINAL, ALTER UPDATE / DELETE, lightweight DELETE, on-disk size and peak RSS.
//! `benches/storage.sh` runs it next to chDB on the same data and prints ratios.
//!
//! Usage: storage-bench --rows N --workdir DIR --out RESULT.json [--parquet-out HITS.parquet]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use benches::hits;
use benches::measure::{dir_size, peak_rss, percentile, reset_peak_rss, rss, secs};
use serde_json::json;
use storage::merge::selector::{Candidate, select_optimize};
use storage::merge::{ReduceMode, merge_parts};
use storage::mutation::{Mutation, MutationCommand, mutate_part};
use storage::part::name::PartName;
use storage::part::writer::write_block;
use storage::partition::split_by_partition;
use storage::{Engine, MergeTreeSettings, PartSet, Table, TableDef, backpressure};

struct Args {
    rows: usize,
    workdir: PathBuf,
    out: PathBuf,
    parquet_out: Option<PathBuf>,
    /// Only write the Parquet file (the query benchmark's input).
    gen_only: bool,
}

fn args() -> Args {
    let mut a = Args {
        rows: 10_000_000,
        workdir: "benches/work".into(),
        out: "storage.json".into(),
        parquet_out: None,
        gen_only: false,
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < v.len() {
        if v[i] == "--gen-only" {
            a.gen_only = true;
            i += 1;
            continue;
        }
        if i + 1 >= v.len() {
            eprintln!("{} needs a value", v[i]);
            std::process::exit(2);
        }
        match v[i].as_str() {
            "--rows" => a.rows = v[i + 1].parse().unwrap_or(a.rows),
            "--workdir" => a.workdir = v[i + 1].clone().into(),
            "--out" => a.out = v[i + 1].clone().into(),
            "--parquet-out" => a.parquet_out = Some(v[i + 1].clone().into()),
            other => {
                eprintln!("unknown argument {other}");
                std::process::exit(2);
            }
        }
        i += 2;
    }
    a
}

fn stats(set: &PartSet) -> serde_json::Value {
    let parts = set.snapshot();
    json!({
        "parts": parts.len(),
        "rows": parts.iter().map(|p| p.live_rows()).sum::<u64>(),
        "bytes_on_disk": parts.iter().map(|p| p.meta.bytes_on_disk).sum::<u64>(),
        "uncompressed": parts.iter().map(|p| p.meta.uncompressed_bytes).sum::<u64>(),
    })
}

/// Applies a mutation to every part on a pool of one thread per core, as
/// ClickHouse's background pool does for `mutations_sync = 1`.
fn mutate_all(t: &Arc<Table>, dir: &std::path::Path, set: &mut PartSet, m: &Mutation) -> f64 {
    let start = Instant::now();
    let parts = set.snapshot();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(parts.len().max(1));
    let results: Vec<(usize, storage::Part)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let Some(part) = parts.get(i) else { break };
                        if let Some(new) = mutate_part(t, dir, part, std::slice::from_ref(m)).expect("mutation") {
                            out.push((i, new));
                        }
                    }
                    out
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("mutation thread")).collect()
    });
    for (i, new) in results {
        set.replace(std::slice::from_ref(&parts[i].name), Arc::new(new)).expect("swap");
    }
    drop(parts);
    let s = secs(start);
    for p in set.take_expired(std::time::Duration::ZERO) {
        storage::part_set::remove_part_files(&p).expect("remove");
    }
    s
}

fn main() {
    let a = args();
    let dir = a.workdir.join("shardhouse_hits");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("workdir");
    let t = Table::new(TableDef {
        schema: hits::schema(),
        engine: Engine::MergeTree,
        partition_by: Some("toYYYYMM(event_date)".into()),
        order_by: vec!["counter_id".into(), "event_date".into(), "user_id".into()],
        settings: MergeTreeSettings::default(),
    })
    .expect("table");

    let g = Instant::now();
    let batches = hits::generate(a.rows, 100_000);
    let gen_s = secs(g);
    eprintln!("generated {} rows in {gen_s:.1}s", a.rows);
    if let Some(p) = &a.parquet_out {
        let f = std::fs::File::create(p).expect("parquet out");
        let props = parquet::file::properties::WriterProperties::builder()
            .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
            .build();
        let mut w = parquet::arrow::ArrowWriter::try_new(f, hits::schema(), Some(props)).expect("writer");
        for b in &batches {
            w.write(b).expect("write");
        }
        w.close().expect("close");
    }
    if a.gen_only {
        return;
    }

    // 1. 100k-row inserts, merges stopped: one part per partition per insert.
    let mut set = PartSet::new();
    let mut block = 0i64;
    let mut lat = Vec::new();
    reset_peak_rss();
    let start = Instant::now();
    for b in &batches {
        let s = Instant::now();
        for piece in split_by_partition(&t, b).expect("split") {
            backpressure::check_insert(
                &piece.partition_id,
                set.parts_in_partition(&piece.partition_id),
                &t.def.settings,
            )
            .expect("too many parts");
            block += 1;
            let name = PartName::new_insert(piece.partition_id.clone(), block);
            let part = write_block(&t, &dir, name, piece.value, &piece.batch).expect("write part");
            set.add(Arc::new(part)).expect("add");
        }
        lat.push(secs(s));
    }
    let insert_s = secs(start);
    let insert_peak = peak_rss();
    let before = stats(&set);
    eprintln!("inserted in {insert_s:.2}s: {before}");
    drop(batches);

    // 2. OPTIMIZE TABLE FINAL: every partition into one part.
    let baseline = rss();
    reset_peak_rss();
    let start = Instant::now();
    let cands: Vec<Candidate> = set
        .active()
        .map(|p| Candidate { name: p.name.clone(), bytes: p.meta.bytes_on_disk, barrier: 0, busy: false })
        .collect();
    for names in select_optimize(&cands, None, true, usize::MAX) {
        let sources: Vec<_> = names.iter().filter_map(|n| set.get(n).cloned()).collect();
        let merged = merge_parts(&t, &dir, &sources, ReduceMode::default()).expect("merge");
        set.replace(&names, Arc::new(merged)).expect("swap");
    }
    let merge_s = secs(start);
    let merge_peak = peak_rss();
    for p in set.take_expired(std::time::Duration::ZERO) {
        storage::part_set::remove_part_files(&p).expect("remove");
    }
    let after = stats(&set);
    eprintln!("optimized in {merge_s:.2}s: {after}");

    // 3. Mutations, as the peer benchmark runs them.
    block += 1;
    let upd = Mutation {
        version: block,
        commands: vec![MutationCommand::Update {
            assignments: vec![("revenue".into(), "revenue * 2".into())],
            predicate: "region = 7".into(),
        }],
    };
    let update_s = mutate_all(&t, &dir, &mut set, &upd);
    block += 1;
    let del = Mutation {
        version: block,
        commands: vec![MutationCommand::Delete { predicate: "is_mobile = 1 AND duration < 5".into() }],
    };
    let delete_s = mutate_all(&t, &dir, &mut set, &del);
    let rows_after_delete = stats(&set)["rows"].clone();
    block += 1;
    let lw = Mutation {
        version: block,
        commands: vec![MutationCommand::LightweightDelete { predicate: "region = 11".into() }],
    };
    let lw_s = mutate_all(&t, &dir, &mut set, &lw);
    eprintln!("update {update_s:.2}s, delete {delete_s:.2}s, lightweight delete {lw_s:.2}s");

    let rows = a.rows as f64;
    let out = json!({
        "engine": "shardhouse",
        "rows": a.rows,
        "generate_s": gen_s,
        "insert_batches_100k": {
            "batches": lat.len(), "total_s": insert_s, "rows_per_s": rows / insert_s,
            "batch_ms_median": percentile(&lat, 50.0) * 1e3, "batch_ms_p99": percentile(&lat, 99.0) * 1e3,
            "parts_after": before, "peak_rss": insert_peak,
        },
        "optimize_final": {
            "seconds": merge_s, "rows_per_s": rows / merge_s,
            "uncompressed_MB_per_s": before["uncompressed"].as_f64().unwrap_or(0.0) / merge_s / 1e6,
            "compressed_MB_per_s": before["bytes_on_disk"].as_f64().unwrap_or(0.0) / merge_s / 1e6,
            "after": after, "peak_rss": merge_peak, "rss_before": baseline,
        },
        "alter_update": { "seconds": update_s },
        "alter_delete": { "seconds": delete_s, "rows_left": rows_after_delete },
        "lightweight_delete": { "seconds": lw_s },
        "dir_bytes_final": dir_size(&dir),
    });
    std::fs::write(&a.out, serde_json::to_string_pretty(&out).unwrap_or_default()).expect("write result");
    println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
}
