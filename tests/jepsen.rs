//! Real server processes under network partitions (TCP proxies on every
//! gRPC link) and kills: the `jepsen` harness, seeded.

use std::time::Duration;

use jepsen::http::post;
use jepsen::procs::ProcCluster;

fn bin() -> std::path::PathBuf {
    env!("CARGO_BIN_EXE_shardhouse").into()
}

const T: Duration = Duration::from_secs(30);

/// Three processes, each with `table` (`k UInt64`) as a ReplicatedMergeTree.
fn cluster_with(table: &str) -> (tempfile::TempDir, ProcCluster) {
    let dir = tempfile::tempdir().unwrap();
    let c = ProcCluster::start(&bin(), dir.path(), 3).unwrap();
    let ddl = format!("CREATE TABLE {table} (k UInt64) ENGINE = ReplicatedMergeTree ORDER BY k");
    for port in c.ports() {
        assert_eq!(post(port, "", &ddl, b"", T).unwrap().0, 200);
    }
    (dir, c)
}

/// Issue 5, fault test 5 on real processes: a node cut off from the others
/// acknowledges no insert and serves no sequentially consistent read, while
/// the majority goes on; after healing it has everything.
#[test]
fn a_node_cut_off_from_the_others_cannot_acknowledge_or_read_stale() {
    let (_dir, c) = cluster_with("p");
    let t = T;
    let [p1, p2, p3] = c.ports()[..] else { unreachable!() };
    let (status, body) = post(p1, "", "INSERT INTO p FORMAT TSV", b"1\n", t).unwrap();
    assert_eq!(status, 200, "{body}");
    c.partition(&[1]);
    // Either side may have led: give the majority time to elect.
    let r = post(p1, "", "INSERT INTO p FORMAT TSV", b"2\n", Duration::from_secs(20));
    assert!(!matches!(r, Ok((200, _))), "an isolated node acknowledged an insert: {r:?}");
    let mut majority_ok = false;
    for _ in 0..50 {
        if let Ok((200, _)) = post(p2, "", "INSERT INTO p FORMAT TSV", b"3\n", t) {
            majority_ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(majority_ok, "the majority side did not accept an insert");
    let sc = "select_sequential_consistency=1";
    let read = post(p1, sc, "SELECT count() FROM p WHERE k = 3", b"", Duration::from_secs(20));
    assert!(!matches!(&read, Ok((200, b)) if b.trim() == "0"), "stale read on the isolated node: {read:?}");
    c.heal();
    let mut last = String::new();
    for _ in 0..100 {
        let r = post(p1, sc, "SELECT k FROM p ORDER BY k", b"", t);
        let r3 = post(p3, "", "SELECT k FROM p ORDER BY k", b"", t);
        if let (Ok((200, a)), Ok((200, b))) = (&r, &r3)
            && a == b
            && a.lines().collect::<Vec<_>>() == ["1", "3"]
        {
            return;
        }
        last = format!("{r:?} {r3:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("after healing the replicas do not hold exactly rows 1 and 3: {last}");
}

/// Runs the jepsen workload and fails with its anomalies, keeping the
/// nodes' data and logs for the post-mortem.
fn jepsen_run(seconds: u64, seed: u64, faults: jepsen::Faults, optimize_ms: (u64, u64)) {
    let dir = tempfile::tempdir().unwrap();
    let opts =
        jepsen::Options { bin: bin(), dir: dir.path().to_path_buf(), seconds, seed, writers: 6, faults, optimize_ms };
    match jepsen::run(&opts) {
        Ok(summary) => eprintln!("jepsen: {summary}"),
        Err(report) => {
            let kept = dir.keep();
            panic!("jepsen found anomalies (data and logs kept in {}):\n{report}", kept.display())
        }
    }
}

/// Writers, a sequentially consistent reader, OPTIMIZE FINAL and a
/// deleting mutation under a seeded schedule of kills, whole-cluster
/// restarts, pauses and partitions (cut and black-holed); then every
/// replica is checked block by block against what the clients were told.
#[test]
fn jepsen_inserts_under_kills_and_partitions_lose_nothing_acknowledged() {
    jepsen_run(30, 42, jepsen::Faults::all(), (3000, 7000));
}

/// Issue 16's schedule: pauses and black-holed partitions, no process
/// killed, with a DELETE mutation and OPTIMIZE FINAL every 0.3-1 s (more
/// often than the report's 3-7 s: in debug builds that is what made the
/// loss show within a minute — 50 of 1,557 acknowledged blocks gone on
/// every replica, 15 stale sequentially consistent reads, seed 30).
#[test]
fn jepsen_optimize_and_a_mutation_under_pauses_and_partitions_lose_nothing_acknowledged() {
    let faults = jepsen::Faults { kills: false, ..jepsen::Faults::all() };
    jepsen_run(60, 30, faults, (300, 1000));
}

/// system.mutations shows each replica's own progress (issue 17, as on a
/// ClickHouse replica): with one replica cut off, a mutation is done on the
/// majority side while the cut-off replica has not even recorded it; once
/// the link heals it applies and rewrites too. The ALTER itself returns
/// once the mutation is committed (`mutations_sync = 0`).
#[test]
fn system_mutations_shows_each_replicas_progress() {
    let (_dir, c) = cluster_with("m");
    let t = T;
    let [p1, _, p3] = c.ports()[..] else { unreachable!() };
    let rows: String = (1..=100).map(|k| format!("{k}\n")).collect();
    assert_eq!(post(p1, "", "INSERT INTO m FORMAT TSV", rows.as_bytes(), t).unwrap().0, 200);
    let sc = "select_sequential_consistency=1";
    for _ in 0..100 {
        if matches!(post(p3, sc, "SELECT count() FROM m", b"", t), Ok((200, b)) if b.trim() == "100") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    c.partition(&[3]);
    let mut altered = false;
    for _ in 0..50 {
        if let Ok((200, _)) = post(p1, "", "ALTER TABLE m DELETE WHERE k % 2 = 0", b"", t) {
            altered = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(altered, "the majority side did not take the mutation");
    let status = "SELECT is_done, parts_to_do, latest_fail_reason FROM system.mutations WHERE table = 'm'";
    let wait_done = |port: u16, what: &str| {
        let mut last = String::new();
        for _ in 0..150 {
            let (_, body) = post(port, "", status, b"", t).unwrap();
            if body.starts_with("1\t0\t") {
                return;
            }
            last = body;
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("the mutation never became done {what}: {last}");
    };
    wait_done(p1, "on the majority side");
    let (code, body) = post(p3, "", status, b"", t).unwrap();
    assert_eq!(code, 200, "{body}");
    assert!(!body.starts_with("1\t"), "the cut-off replica shows a mutation it cannot have applied as done: {body}");
    c.heal();
    wait_done(p3, "on the healed replica");
    let mut count = String::new();
    for _ in 0..50 {
        count = post(p3, sc, "SELECT count() FROM m", b"", t).unwrap().1.trim().to_string();
        if count == "50" {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("the healed replica holds {count} rows, not 50");
}

/// Issue 17 on real processes: an ALTER DELETE over a large partition runs
/// in the background on every replica, and inserts into the same table
/// (the same partition) keep being acknowledged while it runs — before,
/// the rewrite ran inside the group's apply and every insert behind it
/// waited for all of it. Rows inserted meanwhile (none matching) are all
/// there afterwards, and every replica deleted the same rows.
#[test]
fn inserts_go_on_while_a_mutation_rewrites_a_large_partition() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let (_dir, c) = cluster_with("big");
    let ports = c.ports();
    let rows = 500_000u64;
    let load = format!("INSERT INTO big SELECT number FROM numbers({rows})");
    let (code, body) = post(ports[0], "", &load, b"", T).unwrap();
    assert_eq!(code, 200, "{body}");
    let sc = "select_sequential_consistency=1";
    for p in &ports {
        assert_eq!(post(*p, sc, "SELECT count() FROM big", b"", T).unwrap().1.trim(), rows.to_string());
    }
    let done = AtomicBool::new(false);
    let (acked, during) = std::thread::scope(|s| {
        let alter = s.spawn(|| {
            let sql = "ALTER TABLE big DELETE WHERE k % 7 = 0 SETTINGS mutations_sync = 2";
            let r = post(ports[0], "", sql, b"", Duration::from_secs(600));
            done.store(true, Ordering::SeqCst);
            r
        });
        let (mut acked, mut during) = (Vec::new(), 0);
        let mut i = 0u64;
        while !done.load(Ordering::SeqCst) {
            let k = 10_000_000 + 7 * i + 1;
            let (code, body) =
                post(ports[i as usize % 3], "", &format!("INSERT INTO big VALUES ({k})"), b"", T).unwrap();
            assert_eq!(code, 200, "{body}");
            acked.push(k);
            if !done.load(Ordering::SeqCst) {
                during += 1;
            }
            i += 1;
        }
        let (code, body) = alter.join().unwrap().unwrap();
        assert_eq!(code, 200, "{body}");
        (acked, during)
    });
    eprintln!("{during} inserts acknowledged while the mutation ran");
    assert!(during >= 10, "only {during} inserts were acknowledged while the mutation ran");
    let kept = rows - rows.div_ceil(7);
    let want = format!("{kept}\t{}", acked.len());
    for p in &ports {
        let q = format!("SELECT countIf(k < {rows}), countIf(k >= 10000000) FROM big");
        assert_eq!(post(*p, sc, &q, b"", T).unwrap().1.trim(), want, "port {p}");
    }
}

/// Read-your-writes on the node that took an insert: a follower
/// acknowledges a small insert once the leader applied it, and a plain
/// SELECT on that follower right after waits until it applied it too.
/// Three clients, one per node, each reading back its own rows after every
/// insert.
#[test]
fn a_select_on_the_node_that_took_an_insert_sees_it() {
    let (_dir, c) = cluster_with("r");
    std::thread::scope(|s| {
        for (n, port) in c.ports().into_iter().enumerate() {
            s.spawn(move || {
                let base = n as u64 * 1_000_000;
                for i in 0..40u64 {
                    let rows: String = (0..5).map(|j| format!("{}\n", base + i * 10 + j)).collect();
                    let (code, body) = post(port, "", "INSERT INTO r FORMAT TSV", rows.as_bytes(), T).unwrap();
                    assert_eq!(code, 200, "{body}");
                    let sql = format!("SELECT count() FROM r WHERE k >= {base} AND k < {}", base + 1_000_000);
                    let (code, body) = post(port, "", &sql, b"", T).unwrap();
                    assert_eq!(
                        (code, body.trim()),
                        (200, ((i + 1) * 5).to_string().as_str()),
                        "port {port}, insert {i}"
                    );
                }
            });
        }
    });
}

/// `(leader, term)` of table `h`'s group as node `port` sees it.
fn leader_and_term(port: u16) -> Option<(u64, u64)> {
    let sql = "SELECT leader, term FROM system.raft_groups WHERE table = 'h'";
    let (status, body) = post(port, "", sql, b"", T).ok()?;
    let mut f = body.split_whitespace();
    (status == 200).then_some(())?;
    Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
}

/// Issue 18, item 2: Raft runs on a runtime of its own, so a big insert body
/// and a long CPU-heavy query on the leader (body decoding, sorting, parts
/// written, DataFusion on every core) do not hold its groups' heartbeats
/// past the election timeout (300 ms in this cluster): no election happens
/// while they run, and small replicated inserts keep being acknowledged.
#[test]
fn a_big_insert_and_a_long_query_on_the_leader_cause_no_election() {
    let (_dir, c) = cluster_with("h");
    let ports = c.ports();
    assert_eq!(post(ports[0], "", "INSERT INTO h FORMAT TSV", b"0\n", T).unwrap().0, 200);
    // Every node agrees on the group's leader and term before the load.
    let mut before = None;
    for _ in 0..100 {
        let seen: Vec<_> = ports.iter().map(|p| leader_and_term(*p)).collect();
        if let Some(Some(first)) = seen.first()
            && first.0 > 0
            && seen.iter().all(|s| s.as_ref() == Some(first))
        {
            before = Some(*first);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let (leader, term) = before.expect("the nodes never agreed on a leader");
    let lp = ports[leader as usize - 1];
    let ddl = "CREATE TABLE big (k UInt64, s String) ENGINE = MergeTree ORDER BY k";
    assert_eq!(post(lp, "", ddl, b"", T).unwrap().0, 200);
    let rows = 1_500_000u64;
    let mut body = Vec::with_capacity(rows as usize * 40);
    for k in 0..rows {
        body.extend_from_slice(format!("{}\tpayload-{:020}\n", (k * 7919) % rows, k).as_bytes());
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Small replicated inserts all along keep the group busy (an idle group
    // would quiesce and stop its heartbeats, proving nothing).
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut acked = 0;
            let mut k = 1;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                if let Ok((200, _)) = post(lp, "", "INSERT INTO h FORMAT TSV", format!("{k}\n").as_bytes(), T) {
                    acked += 1;
                }
                k += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            acked
        })
    };
    let query = std::thread::spawn(move || {
        let t0 = std::time::Instant::now();
        let sql = "SELECT count() FROM numbers(40000000) WHERE xxHash64(number) % 7 = 1";
        let r = post(lp, "", sql, b"", Duration::from_secs(600));
        (r, t0.elapsed())
    });
    let t0 = std::time::Instant::now();
    let (status, out) = post(lp, "", "INSERT INTO big FORMAT TSV", &body, Duration::from_secs(600)).unwrap();
    let insert_took = t0.elapsed();
    assert_eq!(status, 200, "{out}");
    let (q, query_took) = query.join().unwrap();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let acked = writer.join().unwrap();
    assert!(matches!(&q, Ok((200, _))), "the long query failed: {q:?}");
    let (_, count) = post(lp, "", "SELECT count() FROM big", b"", T).unwrap();
    assert_eq!(count.trim(), rows.to_string(), "the big insert did not land whole");
    eprintln!(
        "big insert of {} MB took {insert_took:?}, the query {query_took:?}; {acked} small inserts acknowledged",
        body.len() >> 20
    );
    // Minimum progress: the load lasted well over an election timeout and
    // the group kept committing through it.
    assert!(insert_took.max(query_took) > Duration::from_secs(2), "the load was too light to show anything");
    assert!(acked >= 5, "only {acked} small inserts were acknowledged during the load");
    for p in &ports {
        let now = leader_and_term(*p).expect("raft_groups unreadable");
        assert_eq!(now, (leader, term), "node on port {p}: an election happened during the load");
    }
}

/// Polls `sql` on `port` until it answers `want` (10 s at most); the last
/// answer otherwise.
fn eventually(port: u16, sql: &str, want: &str) -> String {
    let mut last = String::new();
    for _ in 0..100 {
        match post(port, "", sql, b"", T) {
            Ok((200, b)) if b.trim() == want => return want.to_string(),
            Ok((_, b)) => last = b,
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    last
}

/// Issue 19, item 1 on real processes: a statement issued ON CLUSTER once
/// reaches every node with the same definition — a node that was down
/// applies what it missed when it comes back, a node cut off applies it
/// after the heal — and without a quorum it fails with ClickHouse's DDL
/// timeout instead of leaving a table on some nodes only.
#[test]
fn ddl_on_cluster_reaches_every_node_and_never_half_applies() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = ProcCluster::start(&bin(), dir.path(), 3).unwrap();
    let [p1, p2, p3] = c.ports()[..] else { unreachable!() };
    let has = |t: &str| format!("SELECT count() FROM system.tables WHERE database = 'default' AND name = '{t}'");
    let create = |t: &str| format!("CREATE TABLE {t} ON CLUSTER shardhouse (k UInt64) ENGINE = MergeTree ORDER BY k");
    let r = post(p1, "", &create("t"), b"", T).unwrap();
    assert_eq!(r.0, 200, "{}", r.1);
    let shown = post(p1, "", "SHOW CREATE TABLE t", b"", T).unwrap().1;
    for p in [p2, p3] {
        assert_eq!(eventually(p, "SHOW CREATE TABLE t", shown.trim()), shown.trim(), "node on port {p}");
    }
    // The data of such a table is each node's own (MergeTree, not replicated).
    assert_eq!(post(p2, "", "INSERT INTO t VALUES (1)", b"", T).unwrap().0, 200);
    assert_eq!(post(p1, "", "SELECT count() FROM t", b"", T).unwrap().1.trim(), "0");

    // A node down: it applies what it missed when it comes back.
    c.node(3).kill9();
    assert_eq!(post(p2, "", &create("u"), b"", T).unwrap().0, 200);
    let r = post(p1, "", "DROP TABLE t ON CLUSTER shardhouse", b"", T).unwrap();
    assert_eq!(r.0, 200, "{}", r.1);
    c.node(3).start().unwrap();
    assert_eq!(eventually(p3, &has("u"), "1"), "1");
    assert_eq!(eventually(p3, &has("t"), "0"), "0");

    // One node cut off: no quorum there, a clear error in time, nothing applied.
    c.partition(&[1]);
    let t0 = std::time::Instant::now();
    let r = post(p1, "distributed_ddl_task_timeout=2", &create("v"), b"", T).unwrap();
    assert!(r.1.contains("Code: 159") && r.1.contains("TIMEOUT_EXCEEDED"), "{r:?}");
    assert!(t0.elapsed() < Duration::from_secs(15), "answered after {:?}", t0.elapsed());
    // The majority goes on; the cut-off node applies it after the heal.
    let r = post(p2, "", &create("w"), b"", T).unwrap();
    assert_eq!(r.0, 200, "{}", r.1);
    c.heal();
    assert_eq!(eventually(p1, &has("w"), "1"), "1");
    let v: Vec<String> = [p1, p2, p3].iter().map(|p| post(*p, "", &has("v"), b"", T).unwrap().1).collect();
    assert!(v.iter().all(|x| *x == v[0]), "v on some nodes only: {v:?}");

    let r = post(p1, "", "CREATE TABLE x ON CLUSTER nowhere (k UInt64) ENGINE = MergeTree ORDER BY k", b"", T).unwrap();
    assert!(r.1.contains("Code: 701") && r.1.contains("CLUSTER_DOESNT_EXIST"), "{r:?}");
    for i in 1..=3 {
        let problems = c.node(i).log_problems(5);
        assert!(!problems.contains("panicked"), "node {i}: {problems}");
    }
}

/// Issue 19, item 2: a ReplicatedMergeTree created ON CLUSTER c (2 shards
/// of 2 replicas, the tutorial's `{shard}`/`{replica}` path) has, per shard,
/// its own groups on that shard's replicas: rows inserted on one shard are
/// on both its replicas and on neither replica of the other shard.
#[test]
fn a_replicated_table_on_a_cluster_has_groups_per_shard() {
    let dir = tempfile::tempdir().unwrap();
    let extra = "[remote_servers.c]\nshards = [{ replicas = [1, 2] }, { weight = 2, replicas = [3, 4] }]\n";
    let c = ProcCluster::start_with(&bin(), dir.path(), 4, extra).unwrap();
    let [p1, p2, p3, p4] = c.ports()[..] else { unreachable!() };
    let ddl = "CREATE TABLE hits_local ON CLUSTER c (k UInt64) \
               ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/hits', '{replica}') ORDER BY k";
    let r = post(p1, "", ddl, b"", T).unwrap();
    assert_eq!(r.0, 200, "{}", r.1);
    let paths = "SELECT zookeeper_path, replica_name FROM system.replicas WHERE table = 'hits_local'";
    assert_eq!(eventually(p4, paths, "/clickhouse/tables/2/hits\t4"), "/clickhouse/tables/2/hits\t4");
    assert_eq!(eventually(p2, paths, "/clickhouse/tables/1/hits\t2"), "/clickhouse/tables/1/hits\t2");
    let rows = |from: u64, n: u64| (from..from + n).map(|k| format!("{k}\n")).collect::<String>();
    let r = post(p1, "", "INSERT INTO hits_local FORMAT TSV", rows(0, 100).as_bytes(), T).unwrap();
    assert_eq!(r.0, 200, "{}", r.1);
    let r = post(p4, "", "INSERT INTO hits_local FORMAT TSV", rows(1000, 30).as_bytes(), T).unwrap();
    assert_eq!(r.0, 200, "{}", r.1);
    let count = "SELECT count(), min(k) FROM hits_local";
    let sc = "select_sequential_consistency=1";
    for (port, want) in [(p1, "100\t0"), (p2, "100\t0"), (p3, "30\t1000"), (p4, "30\t1000")] {
        let mut got = String::new();
        for _ in 0..50 {
            got = post(port, sc, count, b"", T).map(|r| r.1.trim().to_string()).unwrap_or_default();
            if got == want {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(got, want, "node on port {port}");
    }
    let groups = "SELECT count() FROM system.raft_groups";
    for port in [p1, p2, p3, p4] {
        assert_eq!(post(port, "", groups, b"", T).unwrap().1.trim(), "1", "one group (its shard's) on port {port}");
    }
}

/// Issue 19, items 3 and 4 on real processes: ClickHouse's tutorial flow
/// over 2 shards × 2 replicas with weights 1 and 2 — a ReplicatedMergeTree
/// and a Distributed table over it created once ON CLUSTER, rows inserted
/// through the Distributed table land 1/3 – 2/3 by slot, a retried insert
/// duplicates nothing on any shard, every node reads all rows through it,
/// and a shard with no replica up is an error, never missing rows.
#[test]
fn distributed_tables_route_by_weight_and_read_every_shard() {
    let dir = tempfile::tempdir().unwrap();
    let extra = "[remote_servers.c]\nshards = [{ replicas = [1, 2] }, { weight = 2, replicas = [3, 4] }]\n";
    let mut c = ProcCluster::start_with(&bin(), dir.path(), 4, extra).unwrap();
    let [p1, p2, p3, p4] = c.ports()[..] else { unreachable!() };
    let ok = |port: u16, sql: &str, body: &[u8]| {
        let r = post(port, "", sql, body, T).unwrap();
        assert_eq!(r.0, 200, "{sql}: {}", r.1);
        r.1.trim().to_string()
    };
    ok(
        p1,
        "CREATE TABLE hits_local ON CLUSTER c (k UInt64, v String) \
         ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/hits', '{replica}') ORDER BY k",
        b"",
    );
    ok(p2, "CREATE TABLE hits ON CLUSTER c AS hits_local ENGINE = Distributed(c, default, hits_local, rand())", b"");
    let rows: String = (0..30_000u64).map(|k| format!("{k}\tv{}\n", k % 1000)).collect();
    ok(p1, "INSERT INTO hits FORMAT TSV", rows.as_bytes());
    // The same block again (a client retrying after a lost answer).
    ok(p3, "INSERT INTO hits FORMAT TSV", rows.as_bytes());
    let sc = "select_sequential_consistency=1";
    let local =
        |port: u16| post(port, sc, "SELECT count() FROM hits_local", b"", T).unwrap().1.trim().parse::<u64>().unwrap();
    let (s1, s2) = (local(p1), local(p3));
    assert_eq!(s1 + s2, 30_000, "every row once: shard 1 {s1}, shard 2 {s2}");
    assert!((9_400..=10_600).contains(&s1), "shard 1 (weight 1 of 3) holds {s1}");
    assert_eq!(local(p2), s1, "both replicas of shard 1");
    assert_eq!(local(p4), s2, "both replicas of shard 2");
    let want = format!("30000\t{}\t1000", (0..30_000u64).sum::<u64>());
    for port in [p1, p2, p3, p4] {
        assert_eq!(ok(port, "SELECT count(), sum(k), uniqExact(v) FROM hits", b""), want, "through node on {port}");
    }
    assert_eq!(ok(p4, "SELECT k FROM hits WHERE k >= 29998 ORDER BY k", b""), "29998\n29999");
    // count() alone: each shard counts its own rows.
    assert_eq!(ok(p2, "SELECT count() FROM hits", b""), "30000");
    // Aggregations run on the shards (partial states merged here) and
    // answer as one node holding every row does (a plain MergeTree table
    // created without ON CLUSTER stays on node 1).
    ok(p1, "CREATE TABLE flat (k UInt64, v String) ENGINE = MergeTree ORDER BY k", b"");
    ok(p1, "INSERT INTO flat FORMAT TSV", rows.as_bytes());
    for q in [
        "SELECT uniqExact(v), uniq(k), count(DISTINCT k % 13), avg(k), min(v), max(k) FROM {t}",
        "SELECT argMin(v, k), argMax(v, k), groupBitmap(k % 777), sum(k) FROM {t} WHERE k % 3 = 1",
        "SELECT v, count(), sum(k), uniqExact(k % 7) FROM {t} GROUP BY v ORDER BY count() DESC, v LIMIT 5",
        "SELECT k % 10 AS d, avg(k), countIf(v = 'v7') FROM {t} WHERE k > 100 GROUP BY d ORDER BY d",
        "SELECT count() FROM {t} WHERE v = 'v3'",
        "SELECT count(DISTINCT k % 100) FROM {t}",
    ] {
        let (d, f) = (q.replace("{t}", "hits"), q.replace("{t}", "flat"));
        assert_eq!(ok(p1, &d, b""), ok(p1, &f, b""), "{q}");
        let plan = ok(p1, &format!("EXPLAIN {d}"), b"");
        assert!(plan.contains("ShardAggregate"), "{q} aggregates on the shards:\n{plan}");
    }
    let (qd, qf) = ("SELECT quantile(0.9)(k) FROM hits", "SELECT quantile(0.9)(k) FROM flat");
    let (qd, qf): (f64, f64) = (ok(p1, qd, b"").parse().unwrap(), ok(p1, qf, b"").parse().unwrap());
    assert!((qd - qf).abs() <= 300.0 && (qd - 27_000.0).abs() <= 300.0, "quantile {qd} vs {qf}");
    // A join with a table every node has runs on the shards (ClickHouse's
    // plain JOIN); GLOBAL JOIN joins here. Same answers either way.
    ok(p1, "CREATE TABLE dim ON CLUSTER c (id UInt64, name String) ENGINE = MergeTree ORDER BY id", b"");
    for port in [p1, p2, p3, p4] {
        ok(port, "INSERT INTO dim FORMAT TSV", b"0\tzero\n1\tone\n2\ttwo\n");
    }
    let join = "SELECT name, count(), sum(k) FROM {t} AS h JOIN dim ON h.k % 10 = dim.id GROUP BY name ORDER BY name";
    let want = ok(p1, &join.replace("{t}", "flat"), b"");
    assert_eq!(want.lines().count(), 3, "{want}");
    assert_eq!(ok(p2, &join.replace("{t}", "hits"), b""), want);
    assert!(ok(p2, &format!("EXPLAIN {}", join.replace("{t}", "hits")), b"").contains("ShardAggregate"));
    assert_eq!(ok(p3, &join.replace("{t}", "hits").replace("JOIN", "GLOBAL JOIN"), b""), want);
    let semi = "SELECT count() FROM {t} WHERE k % 10 IN (SELECT id FROM dim)";
    assert_eq!(ok(p4, &semi.replace("{t}", "hits"), b""), ok(p1, &semi.replace("{t}", "flat"), b""));
    // distributed_group_by_no_merge: each shard's own groups, unmerged.
    let r = ok(p1, "SELECT count() FROM hits SETTINGS distributed_group_by_no_merge = 1", b"");
    let per_shard: Vec<u64> = r.lines().map(|l| l.parse().unwrap()).collect();
    assert_eq!((per_shard.len(), per_shard.iter().sum::<u64>()), (2, 30_000), "{r}");

    // By a column: slot = k % 3, slot 0 is shard 1's, slots 1 and 2 shard 2's.
    ok(p1, "CREATE TABLE byk ON CLUSTER c AS hits_local ENGINE = Distributed(c, default, hits_local, k)", b"");
    ok(p1, "TRUNCATE TABLE hits_local ON CLUSTER c", b"");
    let rows: String = (0..300u64).map(|k| format!("{k}\tx\n")).collect();
    ok(p2, "INSERT INTO byk FORMAT TSV", rows.as_bytes());
    assert_eq!(ok(p1, "SELECT count(), countIf(k % 3 = 0) FROM hits_local", b""), "100\t100");
    assert_eq!(ok(p3, "SELECT count(), countIf(k % 3 = 0) FROM hits_local", b""), "200\t0");

    // A whole shard down: an error naming it, not a partial answer.
    c.node(3).kill9();
    c.node(4).kill9();
    let r = post(p1, "", "SELECT count() FROM hits", b"", T).unwrap();
    assert_ne!(r.0, 200, "{r:?}");
    assert!(r.1.contains("ALL_CONNECTION_TRIES_FAILED") && r.1.contains("shard 2"), "{r:?}");
    let skip = "SELECT count() FROM hits SETTINGS skip_unavailable_shards = 1";
    let r = jepsen::http::post_with_headers(p2, "", skip, b"", T).unwrap();
    assert_eq!((r.0, r.2.trim()), (200, "100"), "shard 1's rows alone");
    assert!(r.1.to_ascii_lowercase().contains("x-shardhouse-skipped-shards: 2"), "{}", r.1);
    let logged = "SELECT skipped_shards FROM system.query_log \
                  WHERE query LIKE '%skip_unavailable_shards = 1' AND type = 'QueryFinish'";
    assert_eq!(post(p2, "", logged, b"", T).unwrap().1.trim(), "2", "the query log says which shard was left out");
    // A read pinned to keys of shard 1 (slot k % 3 = 0) needs only shard 1.
    let pinned = "SELECT count() FROM byk WHERE k IN (3, 6) OR k = 9";
    assert!(post(p1, "", pinned, b"", T).unwrap().1.contains("ALL_CONNECTION_TRIES_FAILED"));
    let pinned = "SELECT count() FROM byk WHERE k IN (3, 6)";
    let r = post(p1, "optimize_skip_unused_shards=1", pinned, b"", T).unwrap();
    assert_eq!((r.0, r.1.trim()), (200, "2"), "optimize_skip_unused_shards");
    let r = post(p1, "", "INSERT INTO byk FORMAT TSV", b"1\tx\n", T).unwrap();
    assert!(r.1.contains("ALL_CONNECTION_TRIES_FAILED") && r.1.contains("shard 2"), "{r:?}");
}

/// Issue 19: one replica of each shard killed (and restarted) while a
/// writer inserts through a Distributed table, retrying every failed block
/// with its dedup token until it is acknowledged: every acknowledged block
/// is on its shard afterwards, exactly once. (Each shard has two replicas,
/// so a shard with one down has no quorum: its inserts fail until the
/// replica is back — never acknowledged early, never duplicated by a retry.)
#[test]
fn inserts_through_a_distributed_table_survive_a_replica_of_each_shard_killed() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    let dir = tempfile::tempdir().unwrap();
    let extra = "[remote_servers.c]\nshards = [{ replicas = [1, 2] }, { weight = 2, replicas = [3, 4] }]\n";
    let mut c = ProcCluster::start_with(&bin(), dir.path(), 4, extra).unwrap();
    let [p1, _, p3, _] = c.ports()[..] else { unreachable!() };
    for ddl in [
        "CREATE TABLE kl ON CLUSTER c (k UInt64) ENGINE = ReplicatedMergeTree('/t/{shard}/kl', '{replica}') ORDER BY k",
        "CREATE TABLE kd ON CLUSTER c AS kl ENGINE = Distributed(c, default, kl, k)",
    ] {
        let r = post(p1, "", ddl, b"", T).unwrap();
        assert_eq!(r.0, 200, "{}", r.1);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::<u64>::new()));
    let failures = Arc::new(Mutex::new(0u64));
    let slowest = Arc::new(Mutex::new(Duration::ZERO));
    let writer = {
        let (stop, acked, failures, slowest) = (stop.clone(), acked.clone(), failures.clone(), slowest.clone());
        std::thread::spawn(move || {
            let mut block = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let rows: String = (block * 10..block * 10 + 10).map(|k| format!("{k}\n")).collect();
                let token = format!("insert_deduplication_token=blk{block}");
                // The same block with the same token until acknowledged,
                // through either node that is never killed.
                for attempt in 0..40 {
                    let port = if attempt % 2 == 0 { p1 } else { p3 };
                    let t0 = std::time::Instant::now();
                    let r = post(port, &token, "INSERT INTO kd FORMAT TSV", rows.as_bytes(), T);
                    let took = t0.elapsed();
                    match r {
                        Ok((200, _)) => {
                            let mut s = slowest.lock().unwrap();
                            *s = (*s).max(took);
                            acked.lock().unwrap().push(block);
                            break;
                        }
                        _ => {
                            *failures.lock().unwrap() += 1;
                            std::thread::sleep(Duration::from_millis(200));
                        }
                    }
                }
                block += 1;
            }
        })
    };
    std::thread::sleep(Duration::from_secs(2));
    let before = acked.lock().unwrap().len();
    c.node(2).kill9();
    c.node(4).kill9();
    assert!(!c.node(2).is_up() && !c.node(4).is_up(), "the kills did not happen");
    std::thread::sleep(Duration::from_secs(2));
    c.node(2).start().unwrap();
    c.node(4).start().unwrap();
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    let acked = acked.lock().unwrap().clone();
    let failures = *failures.lock().unwrap();
    let slowest = *slowest.lock().unwrap();
    assert!(before >= 5, "only {before} blocks acknowledged before the kills");
    assert!(acked.len() >= before + 5, "only {} blocks acknowledged after the restart", acked.len() - before);
    // Without a quorum a shard's insert waits (or fails and is retried):
    // the kills must show in the writer's history.
    assert!(
        failures >= 1 || slowest >= Duration::from_secs(1),
        "no insert failed or waited (slowest {slowest:?}): the kills did nothing"
    );
    // Every acknowledged block once, read through the Distributed table
    // from both entry nodes, each shard's replicas agreeing.
    let want: u64 = acked.iter().map(|b| (b * 10..b * 10 + 10).sum::<u64>()).sum();
    for port in [p1, p3] {
        let got = post(port, "", "SELECT count() - uniqExact(k) FROM kd", b"", T).unwrap().1;
        assert_eq!(got.trim(), "0", "duplicated rows through port {port}");
        let keys = post(port, "", "SELECT k FROM kd ORDER BY k FORMAT TSV", b"", T).unwrap().1;
        let have: std::collections::BTreeSet<u64> = keys.lines().filter_map(|l| l.parse().ok()).collect();
        let missing: Vec<u64> = acked.iter().filter(|b| !have.contains(&(**b * 10))).copied().collect();
        assert!(missing.is_empty(), "acknowledged blocks missing through port {port}: {missing:?}");
        let sum: u64 = acked.iter().flat_map(|b| *b * 10..*b * 10 + 10).filter(|k| have.contains(k)).sum();
        assert_eq!(sum, want, "acknowledged rows through port {port}");
    }
    for i in 1..=4 {
        let problems = c.node(i).log_problems(5);
        assert!(!problems.contains("panicked"), "node {i}: {problems}");
    }
}
