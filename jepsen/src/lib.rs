//! jepsen: drives a cluster of real `shardhouse server` processes through
//! faults — SIGKILL and restart, network partitions cut by TCP proxies on
//! every gRPC link — while clients insert and read, then checks the final
//! state of every replica against what the clients were told.
//!
//! Each insert is a block of one writer's rows with its own
//! `insert_deduplication_token`; a client that gets no answer retries the
//! same block (on any node) until it does, as a ClickHouse client should.
//! The fault schedule comes from the seed; timing does not.

pub mod history;
pub mod http;
pub mod procs;
pub mod proxy;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use history::{History, Outcome};
use procs::ProcCluster;

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The `shardhouse` binary.
    pub bin: PathBuf,
    /// Where the nodes keep their data and logs.
    pub dir: PathBuf,
    /// How long clients write under faults.
    pub seconds: u64,
    pub seed: u64,
    pub writers: u64,
}

/// splitmix64: a seeded, dependency-free generator.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo).max(1)
    }
}

const TABLE: &str = "CREATE TABLE jt (w UInt64, s UInt64, k UInt64) \
    ENGINE = ReplicatedMergeTree('/clickhouse/tables/jt', '{replica}') PARTITION BY w % 2 ORDER BY k";

/// Runs the workload under faults and checks it. `Ok` carries a summary;
/// `Err` lists the anomalies found.
pub fn run(opts: &Options) -> Result<String, String> {
    let mut cluster = ProcCluster::start(&opts.bin, &opts.dir, 3)?;
    for port in cluster.ports() {
        let (status, body) = http::post(port, "", TABLE, b"", Duration::from_secs(30)).map_err(|e| e.to_string())?;
        if status != 200 {
            return Err(format!("CREATE TABLE: {status} {body}"));
        }
    }
    let history = Arc::new(History::default());
    let stop = Arc::new(AtomicBool::new(false));
    let ports = cluster.ports();
    let mut clients = Vec::new();
    for w in 0..opts.writers {
        let (h, stop, ports) = (history.clone(), stop.clone(), ports.clone());
        let seed = opts.seed.wrapping_mul(31).wrapping_add(w);
        clients.push(std::thread::spawn(move || writer(w, seed, &ports, &h, &stop)));
    }
    {
        let (h, stop, ports) = (history.clone(), stop.clone(), ports.clone());
        let seed = opts.seed ^ 0x5EED;
        clients.push(std::thread::spawn(move || reader(seed, &ports, &h, &stop)));
    }
    nemesis(&mut cluster, opts, &history);
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        let _ = c.join();
    }
    cluster.heal();
    for id in 1..=3 {
        // A node whose restart failed during the run gets one more try.
        if !cluster.node(id).answers() {
            cluster.node(id).kill9();
            cluster.node(id).start()?;
        }
    }
    let anomalies = settle_and_check(&cluster, &history);
    let mut all: Vec<String> = history.stale_reads.lock().unwrap_or_else(|p| p.into_inner()).clone();
    all.extend(anomalies);
    match all.is_empty() {
        true => Ok(history.summary()),
        false => Err(format!("{}\n{}", history.summary(), all.join("\n"))),
    }
}

/// One fault at a time, each healed before the next, so a majority is
/// usually up and the clients make progress.
fn nemesis(cluster: &mut ProcCluster, opts: &Options, history: &History) {
    let mut rng = Rng::new(opts.seed);
    let end = Instant::now() + Duration::from_secs(opts.seconds);
    std::thread::sleep(Duration::from_millis(500));
    while Instant::now() < end {
        let victim = rng.range(1, 4);
        let hold = Duration::from_millis(rng.range(500, 2500));
        match rng.range(0, 3) {
            0 => {
                history.fault(format!("kill -9 n{victim}"));
                cluster.node(victim).kill9();
                std::thread::sleep(hold);
                if let Err(e) = cluster.node(victim).start() {
                    history.fault(format!("restart of n{victim} failed: {e}"));
                }
            }
            1 => {
                history.fault(format!("isolate n{victim}"));
                cluster.partition(&[victim]);
                std::thread::sleep(hold);
                cluster.heal();
            }
            _ => {
                // Every node killed at once, then all restarted.
                if rng.range(0, 4) == 0 {
                    history.fault("kill -9 all".into());
                    for id in 1..=3 {
                        cluster.node(id).kill9();
                    }
                    for id in 1..=3 {
                        if let Err(e) = cluster.node(id).start() {
                            history.fault(format!("restart of n{id} failed: {e}"));
                        }
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(rng.range(300, 1500)));
    }
}

fn writer(w: u64, seed: u64, ports: &[u16], history: &History, stop: &AtomicBool) {
    let mut rng = Rng::new(seed);
    let mut seq = 0;
    while !stop.load(Ordering::SeqCst) {
        seq += 1;
        let rows = rng.range(1, 60);
        let body: String = (0..rows).map(|i| format!("{w}\t{seq}\t{}\n", (w << 40) | (seq << 12) | i)).collect();
        let params = format!("insert_deduplication_token=w{w}s{seq}");
        // An insert with no answer is retried (same token) until it gets
        // one, for up to 30 s; after that its outcome stays unknown.
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut outcome = Outcome::Unknown;
        let mut attempt = rng.range(0, ports.len() as u64) as usize;
        while Instant::now() < deadline {
            let port = ports[attempt % ports.len()];
            attempt += 1;
            match http::post(port, &params, "INSERT INTO jt FORMAT TSV", body.as_bytes(), Duration::from_secs(15)) {
                Ok((200, _)) => {
                    outcome = Outcome::Acked;
                    break;
                }
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        }
        history.record(w, seq, rows, outcome);
    }
}

/// Sequentially consistent counts: never fewer rows than were acknowledged
/// before the read began.
fn reader(seed: u64, ports: &[u16], history: &History, stop: &AtomicBool) {
    let mut rng = Rng::new(seed);
    while !stop.load(Ordering::SeqCst) {
        let port = ports[rng.range(0, ports.len() as u64) as usize];
        let before = history.acked_rows.load(Ordering::SeqCst);
        let r =
            http::post(port, "select_sequential_consistency=1", "SELECT count() FROM jt", b"", Duration::from_secs(15));
        if let Ok((200, body)) = r {
            history.reads.fetch_add(1, Ordering::SeqCst);
            if let Ok(seen) = body.trim().parse::<u64>()
                && seen < before
            {
                let msg = format!("stale read on port {port}: {seen} rows, {before} acknowledged before the read");
                history.stale_reads.lock().unwrap_or_else(|p| p.into_inner()).push(msg);
            }
        }
        std::thread::sleep(Duration::from_millis(rng.range(20, 200)));
    }
}

/// Waits until every replica answers the same, then checks that answer.
fn settle_and_check(cluster: &ProcCluster, history: &History) -> Vec<String> {
    let sql = "SELECT w, s, count(), uniqExact(k) FROM jt GROUP BY w, s ORDER BY w, s";
    let t = Instant::now();
    let mut last = Vec::new();
    while t.elapsed() < Duration::from_secs(90) {
        let answers: Vec<String> = cluster
            .ports()
            .iter()
            .map(|p| match http::post(*p, "", sql, b"", Duration::from_secs(30)) {
                Ok((200, b)) => b,
                other => format!("error: {other:?}"),
            })
            .collect();
        let agree = answers.windows(2).all(|w| w[0] == w[1]) && !answers[0].starts_with("error");
        if agree && history.check(&answers[0]).is_empty() {
            return Vec::new();
        }
        last = answers;
        std::thread::sleep(Duration::from_millis(500));
    }
    let mut out = Vec::new();
    for (i, a) in last.iter().enumerate() {
        for bad in history.check(a) {
            out.push(format!("n{}: {bad}", i + 1));
        }
    }
    if last.windows(2).any(|w| w[0] != w[1]) {
        out.push("replicas did not converge on the same rows within 90 s".into());
    }
    out
}
