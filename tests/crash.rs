//! Crash tests on real processes: `shardhouse server` is killed with SIGKILL
//! during a stream of large INSERTs and during OPTIMIZE, restarted on the
//! same data directory, and must then serve every acknowledged row exactly
//! once, each insert either whole or absent, and no broken part active.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Proc {
    child: Child,
    port: u16,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
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
        let writer = std::thread::spawn(move || {
            let mut acked = Vec::new();
            let mut b = first;
            loop {
                match post(port, "INSERT INTO t FORMAT TSV", &block(b)) {
                    Ok((200, _)) => acked.push(b),
                    _ => return (acked, b + 1),
                }
                b += 1;
            }
        });
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
