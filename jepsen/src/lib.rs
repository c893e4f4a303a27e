//! jepsen: drives a cluster of real `shardhouse server` processes through
//! faults — SIGKILL and restart, SIGSTOP pauses, network partitions (cut or
//! black-holed) by TCP proxies on every gRPC link — while clients insert,
//! read, run `OPTIMIZE … FINAL` and a deleting mutation, then checks the
//! final state of every replica, block by block, against what the clients
//! were told.
//!
//! Each insert is a block of one writer's rows with its own
//! `insert_deduplication_token`; a client that gets no answer retries the
//! same block (on any node) until it does, as a ClickHouse client should.
//! The fault schedule comes from the seed; timing does not.

pub mod history;
pub mod http;
pub mod nemesis;
pub mod procs;
pub mod proxy;
pub mod workload;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use history::History;
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
    pub faults: Faults,
    /// Milliseconds between two `OPTIMIZE … FINAL`s: uniform in this range
    /// (3–7 s by default, as the issue 16 report ran them).
    pub optimize_ms: (u64, u64),
}

/// What the run does besides inserting and reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Faults {
    /// kill -9 of one node, or of all, then restart.
    pub kills: bool,
    /// SIGSTOP of one node, SIGCONT after the hold.
    pub pauses: bool,
    /// One node cut off from the others: connections closed, or a black
    /// hole that drops everything (calls time out).
    pub partitions: bool,
    /// `OPTIMIZE TABLE … FINAL` through a random node every 3–7 s.
    pub optimize: bool,
    /// `ALTER TABLE … DELETE WHERE w = 99` once, about 30% into the run,
    /// through a random node, retried until acknowledged; it deletes
    /// blocks written before the load, never a writer's. And every 1–3 s
    /// a mutation that matches no row, killed 0.2–1.5 s later.
    pub mutation: bool,
}

impl Faults {
    /// Everything.
    pub fn all() -> Faults {
        Faults { kills: true, pauses: true, partitions: true, optimize: true, mutation: true }
    }

    /// A comma-separated list of `kills`, `pauses`, `partitions`,
    /// `optimize`, `mutation` (or `all`).
    pub fn parse(s: &str) -> Result<Faults, String> {
        let mut f = Faults { kills: false, pauses: false, partitions: false, optimize: false, mutation: false };
        for w in s.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            match w {
                "all" => f = Faults::all(),
                "kills" => f.kills = true,
                "pauses" => f.pauses = true,
                "partitions" => f.partitions = true,
                "optimize" => f.optimize = true,
                "mutation" => f.mutation = true,
                other => return Err(format!("unknown fault {other:?}")),
            }
        }
        Ok(f)
    }
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

/// The table of the run: three partitions, so three Raft groups.
const TABLE: &str = "CREATE TABLE jt (w UInt64, s UInt64, k UInt64) \
    ENGINE = ReplicatedMergeTree('/clickhouse/tables/jt', '{replica}') PARTITION BY w % 3 ORDER BY (w, s, k)";

/// Runs the workload under faults and checks it. `Ok` carries a summary;
/// `Err` lists the anomalies found — including a run that made too little
/// progress to show anything (no acknowledged insert, no read, no fault).
pub fn run(opts: &Options) -> Result<String, String> {
    let mut cluster = ProcCluster::start(&opts.bin, &opts.dir, 3)?;
    for port in cluster.ports() {
        let (status, body) = http::post(port, "", TABLE, b"", Duration::from_secs(30)).map_err(|e| e.to_string())?;
        if status != 200 {
            return Err(format!("CREATE TABLE: {status} {body}"));
        }
    }
    let history = Arc::new(History::default());
    let ports = cluster.ports();
    if opts.faults.mutation {
        workload::preload(&ports, &history)?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for w in 0..opts.writers {
        let (h, stop, ports) = (history.clone(), stop.clone(), ports.clone());
        let seed = opts.seed.wrapping_mul(31).wrapping_add(w);
        clients.push(std::thread::spawn(move || workload::writer(w, seed, &ports, &h, &stop)));
    }
    {
        let (h, stop, ports) = (history.clone(), stop.clone(), ports.clone());
        let seed = opts.seed ^ 0x5EED;
        clients.push(std::thread::spawn(move || workload::reader(seed, &ports, &h, &stop)));
    }
    if opts.faults.optimize {
        let (h, stop, ports) = (history.clone(), stop.clone(), ports.clone());
        let (seed, every) = (opts.seed ^ 0x0971, opts.optimize_ms);
        clients.push(std::thread::spawn(move || workload::optimizer(seed, every, &ports, &h, &stop)));
    }
    if opts.faults.mutation {
        let (h, stop, ports) = (history.clone(), stop.clone(), ports.clone());
        let seed = opts.seed ^ 0xA17E;
        let after = Duration::from_millis(opts.seconds * 300);
        clients.push(std::thread::spawn(move || workload::mutator(seed, after, &ports, &h, &stop)));
    }
    if opts.faults.mutation {
        let (h, stop, ports) = (history.clone(), stop.clone(), ports.clone());
        let seed = opts.seed ^ 0x4B11;
        clients.push(std::thread::spawn(move || workload::mutation_killer(seed, &ports, &h, &stop)));
    }
    nemesis::run(&mut cluster, opts, &history);
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        let _ = c.join();
    }
    cluster.heal();
    for id in 1..=3 {
        cluster.node(id).resume();
        // A node whose restart failed during the run gets one more try.
        if !cluster.node(id).answers() {
            cluster.node(id).kill9();
            cluster.node(id).start()?;
        }
    }
    let mut all = settle_and_check(&cluster, &history);
    all.extend(history.stale_reads.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned());
    all.extend(history.too_little_progress(&opts.faults));
    if !all.is_empty() {
        for id in 1..=3 {
            let n = cluster.node(id);
            all.push(format!("n{id} warnings and errors:\n{}", n.log_problems(15)));
        }
    }
    match all.is_empty() {
        true => Ok(history.summary()),
        false => Err(format!("{}\n{}", history.summary(), all.join("\n"))),
    }
}

/// Waits until every replica answers the same, then checks that answer
/// block by block (every replica's own rows, read locally).
fn settle_and_check(cluster: &ProcCluster, history: &History) -> Vec<String> {
    let sql = "SELECT w, s, count(), uniqExact(k) FROM jt GROUP BY w, s ORDER BY w, s";
    let t = Instant::now();
    let mut last = Vec::new();
    while t.elapsed() < Duration::from_secs(120) {
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
        out.push("replicas did not converge on the same rows within 120 s".into());
    }
    out
}
