//! Crash tests on real processes: `shardhouse server` is killed with SIGKILL
//! during a stream of large INSERTs and during OPTIMIZE, restarted on the
//! same data directory, and must then serve every acknowledged row exactly
//! once, each insert either whole or absent, and no broken part active.
//! The same for a cluster of three processes with a ReplicatedMergeTree
//! table: a leader killed mid-stream, then every node killed at once.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Proc {
    child: Child,
    port: u16,
}

/// A port for a server that may restart on it: below the ephemeral range
/// (see `jepsen::procs::free_port`).
fn free_port() -> u16 {
    jepsen::procs::free_port().unwrap()
}

fn start(dir: &Path) -> Proc {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_shardhouse"))
        .args(["server", "--data"])
        .arg(dir)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("server starts");
    let p = Proc { child, port };
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(30) {
        if matches!(post(port, "SELECT 1", b""), Ok((200, _))) {
            return p;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("server did not come up");
}

impl Proc {
    fn kill9(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A bare HTTP/1.0 POST: the query in the URL when there is a body.
fn post(port: u16, sql: &str, body: &[u8]) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(120)))?;
    let (path, body) = if body.is_empty() {
        ("/".to_string(), sql.as_bytes())
    } else {
        let enc: String = sql
            .bytes()
            .map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") })
            .collect();
        (format!("/?query={enc}"), body)
    };
    write!(s, "POST {path} HTTP/1.0\r\nContent-Length: {}\r\n\r\n", body.len())?;
    s.write_all(body)?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((status, body))
}

fn ok(port: u16, sql: &str) -> String {
    let (status, body) = post(port, sql, b"").unwrap();
    assert_eq!(status, 200, "{sql}: {body}");
    body
}

const ROWS: u64 = 50_000;

/// TSV rows of insert number `b`: keys unique across inserts.
fn block(b: u64) -> Vec<u8> {
    let mut out = String::new();
    for i in 0..ROWS {
        out.push_str(&format!("{b}\t{}\t2024-0{}-01\tvalue-{i}-padding-padding\n", b * ROWS + i, 1 + (i % 3)));
    }
    out.into_bytes()
}

/// Every acknowledged insert is there once; any other is whole or absent.
fn check(port: u16, acked: &[u64]) {
    let per_block = ok(port, "SELECT b, count(), uniqExact(k) FROM t GROUP BY b ORDER BY b");
    let mut seen = std::collections::BTreeSet::new();
    for line in per_block.lines() {
        let f: Vec<u64> = line.split('\t').map(|x| x.parse().unwrap()).collect();
        assert_eq!((f[1], f[2]), (ROWS, ROWS), "insert {} is partial or doubled: {line}", f[0]);
        seen.insert(f[0]);
    }
    for b in acked {
        assert!(seen.contains(b), "acknowledged insert {b} was lost; present: {seen:?}");
    }
    assert_eq!(ok(port, "CHECK TABLE t").lines().next().unwrap().split('\t').next(), Some("1"));
}

#[test]
fn kill_9_during_inserts_and_optimize_loses_no_acknowledged_row() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = start(dir.path());
    ok(
        p.port,
        "CREATE TABLE t (b UInt64, k UInt64, d Date, s String) ENGINE = MergeTree PARTITION BY toYYYYMM(d) ORDER BY k",
    );
    let mut acked = Vec::new();
    let mut next = 0u64;
    for round in 0..3u64 {
        // Inserts stream in; the kill lands at a moment that moves each round.
        let port = p.port;
        let first = next;
        let (started, first_ack) = std::sync::mpsc::channel();
        let writer = std::thread::spawn(move || {
            let mut acked = Vec::new();
            let mut b = first;
            loop {
                match post(port, "INSERT INTO t FORMAT TSV", &block(b)) {
                    Ok((200, _)) => acked.push(b),
                    _ => return (acked, b + 1),
                }
                let _ = started.send(());
                b += 1;
            }
        });
        // Counted from the first acknowledgement: on a loaded machine (the
        // whole suite at once) a debug server's first insert alone took
        // longer than the pause, and nothing was acknowledged to check.
        let _ = first_ack.recv_timeout(Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(700 + 450 * round));
        p.kill9();
        let (a, n) = writer.join().unwrap();
        assert!(!a.is_empty() || round > 0, "no insert was acknowledged before the kill");
        acked.extend(a);
        next = n;
        p = start(dir.path());
        check(p.port, &acked);
    }
    for round in 0..2u64 {
        let port = p.port;
        let optimize = std::thread::spawn(move || post(port, "OPTIMIZE TABLE t FINAL", b""));
        std::thread::sleep(Duration::from_millis(100 + 150 * round));
        p.kill9();
        let _ = optimize.join();
        p = start(dir.path());
        check(p.port, &acked);
    }
    ok(p.port, "OPTIMIZE TABLE t FINAL");
    check(p.port, &acked);
    let total: u64 = ok(p.port, "SELECT count() FROM t").trim().parse().unwrap();
    assert!(total >= acked.len() as u64 * ROWS);
    p.kill9();
}

/// A node of a three-process cluster: its config, data and HTTP port survive restarts.
struct ClusterNode {
    config: std::path::PathBuf,
    http: u16,
    proc: Option<Child>,
}

impl ClusterNode {
    fn start(&mut self) {
        let child = Command::new(env!("CARGO_BIN_EXE_shardhouse"))
            .args(["server", "-c"])
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("server starts");
        self.proc = Some(child);
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(30) {
            if matches!(post(self.http, "SELECT 1", b""), Ok((200, _))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("cluster node did not come up");
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.proc.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for ClusterNode {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn cluster_of_three(root: &Path) -> Vec<ClusterNode> {
    let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    let mut nodes_toml = String::new();
    for (i, (raft, http)) in ports.iter().enumerate() {
        nodes_toml.push_str(&format!(
            "[[cluster.nodes]]\nid = {}\nraft = \"127.0.0.1:{raft}\"\nhttp = \"127.0.0.1:{http}\"\n",
            i + 1
        ));
    }
    let mut out = Vec::new();
    for (i, (_, http)) in ports.iter().enumerate() {
        let dir = root.join(format!("n{}", i + 1));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("shardhouse.toml");
        let text = format!(
            "[server]\ndata_dir = \"{}\"\nhttp_listen = \"127.0.0.1:{http}\"\n\n[cluster]\nnode_id = {}\nheartbeat_ms = 50\nelection_timeout_ms = 300\n{nodes_toml}",
            dir.join("data").display(),
            i + 1
        );
        std::fs::write(&config, text).unwrap();
        let mut n = ClusterNode { config, http: *http, proc: None };
        n.start();
        out.push(n);
    }
    out
}

/// POST with URL parameters (settings) and the query in the body.
fn post_with(port: u16, params: &str, sql: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    write!(s, "POST /?{params} HTTP/1.0\r\nContent-Length: {}\r\n\r\n{sql}", sql.len()).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
}

const CROWS: u64 = 5_000;

fn cblock(b: u64) -> Vec<u8> {
    let mut out = String::new();
    for i in 0..CROWS {
        out.push_str(&format!("{b}\t{}\t2024-0{}-01\n", b * CROWS + i, 1 + (i % 2)));
    }
    out.into_bytes()
}

/// Waits until every live node serves exactly the acknowledged blocks, each whole.
fn converge(nodes: &[ClusterNode], acked: &[u64]) {
    let t = Instant::now();
    let mut last = String::new();
    while t.elapsed() < Duration::from_secs(60) {
        let answers: Vec<String> = nodes
            .iter()
            .filter(|n| n.proc.is_some())
            .map(|n| {
                post(n.http, "SELECT b, count(), uniqExact(k) FROM rt GROUP BY b ORDER BY b", b"")
                    .map(|r| r.1)
                    .unwrap_or_default()
            })
            .collect();
        let agree = answers.windows(2).all(|w| w[0] == w[1]);
        let mut seen = std::collections::BTreeSet::new();
        let mut whole = true;
        for line in answers[0].lines() {
            let f: Vec<u64> = line.split('\t').filter_map(|x| x.parse().ok()).collect();
            whole &= f.len() == 3 && f[1] == CROWS && f[2] == CROWS;
            seen.extend(f.first().copied());
        }
        if agree && whole && acked.iter().all(|b| seen.contains(b)) {
            return;
        }
        last = format!("{answers:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("the cluster did not converge on the acknowledged inserts {acked:?}: {last}");
}

#[test]
fn replicated_cluster_of_three_processes_survives_kill_9_of_a_leader() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = cluster_of_three(dir.path());
    for n in &nodes {
        ok(
            n.http,
            "CREATE TABLE rt (b UInt64, k UInt64, d Date) ENGINE = ReplicatedMergeTree('/ch/rt', '{replica}') PARTITION BY toYYYYMM(d) ORDER BY k",
        );
    }
    let mut acked = Vec::new();
    for b in 0..6 {
        let (status, body) = post(nodes[(b % 3) as usize].http, "INSERT INTO rt FORMAT TSV", &cblock(b)).unwrap();
        assert_eq!(status, 200, "{body}");
        acked.push(b);
    }
    converge(&nodes, &acked);
    // insert_quorum beyond the replica count fails up front, writing nothing.
    let (status, body) = post_with(nodes[0].http, "insert_quorum=4", "INSERT INTO rt VALUES (99, 1, '2024-01-01')");
    assert!(status >= 400 && body.contains("TOO_FEW_LIVE_REPLICAS"), "{status} {body}");

    // Kill -9 the node leading the first partition's group while inserts stream in.
    let leader: usize =
        ok(nodes[0].http, "SELECT leader FROM system.raft_groups WHERE table = 'rt' ORDER BY partition_id LIMIT 1")
            .trim()
            .parse()
            .unwrap();
    let ports: Vec<u16> = nodes.iter().map(|n| n.http).collect();
    let writer = std::thread::spawn(move || {
        let mut acked = Vec::new();
        for b in 10..40u64 {
            // A client retries an insert whose outcome it does not know: the
            // same block is deduplicated if it had committed.
            for attempt in 0..20 {
                let port = ports[((b as usize) + attempt) % 3];
                if let Ok((200, _)) = post(port, "INSERT INTO rt FORMAT TSV", &cblock(b)) {
                    acked.push(b);
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        acked
    });
    std::thread::sleep(Duration::from_millis(600));
    nodes[leader - 1].kill9();
    let more = writer.join().unwrap();
    assert!(more.len() >= 25, "too few inserts acknowledged with two of three nodes up: {more:?}");
    acked.extend(more);
    // With a node down, insert_quorum = 'all' cannot be met.
    let live = nodes.iter().find(|n| n.proc.is_some()).unwrap().http;
    let (status, body) = post_with(live, "insert_quorum=all", "INSERT INTO rt VALUES (98, 2, '2024-01-01')");
    assert!(status >= 400 && body.contains("TOO_FEW_LIVE_REPLICAS"), "{status} {body}");
    nodes[leader - 1].start();
    converge(&nodes, &acked);
    // Every node restarted at once: everything acknowledged is still there.
    for n in nodes.iter_mut() {
        n.kill9();
    }
    for n in nodes.iter_mut() {
        n.start();
    }
    converge(&nodes, &acked);
    let (status, body) = post(nodes[1].http, "INSERT INTO rt FORMAT TSV", &cblock(50)).unwrap();
    assert_eq!(status, 200, "{body}");
    acked.push(50);
    converge(&nodes, &acked);
}
