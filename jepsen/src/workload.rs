//! The clients of a run: writers, a sequentially consistent reader, an
//! `OPTIMIZE … FINAL` loop, one deleting mutation, and mutations that match
//! nothing, each killed soon after.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::Rng;
use crate::history::{History, Outcome, PRELOAD_BLOCKS, PRELOAD_WRITER};
use crate::http;

/// Inserts one block with its dedup token, retrying it (same token) on the
/// next node until one answers 200, for up to 30 s.
fn insert(ports: &[u16], first: usize, w: u64, seq: u64, rows: u64) -> Outcome {
    let body: String = (0..rows).map(|i| format!("{w}\t{seq}\t{}\n", (w << 40) | (seq << 12) | i)).collect();
    let params = format!("insert_deduplication_token=w{w}s{seq}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut attempt = first;
    while Instant::now() < deadline {
        let port = ports[attempt % ports.len()];
        attempt += 1;
        match http::post(port, &params, "INSERT INTO jt FORMAT TSV", body.as_bytes(), Duration::from_secs(15)) {
            Ok((200, _)) => return Outcome::Acked,
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    Outcome::Unknown
}

/// The blocks the mutation deletes, written before the load.
pub fn preload(ports: &[u16], history: &History) -> Result<(), String> {
    for seq in 1..=PRELOAD_BLOCKS {
        if insert(ports, seq as usize, PRELOAD_WRITER, seq, 5) != Outcome::Acked {
            return Err(format!("preloading block {seq} was never acknowledged"));
        }
    }
    history.fault(format!("{PRELOAD_BLOCKS} blocks of w{PRELOAD_WRITER} preloaded"));
    Ok(())
}

pub fn writer(w: u64, seed: u64, ports: &[u16], history: &History, stop: &AtomicBool) {
    let mut rng = Rng::new(seed);
    let mut seq = 0;
    while !stop.load(Ordering::SeqCst) {
        seq += 1;
        let rows = rng.range(1, 20);
        let first = rng.range(0, ports.len() as u64) as usize;
        // An insert with no answer stays unknown: it may or may not be there.
        let outcome = insert(ports, first, w, seq, rows);
        history.record(w, seq, rows, outcome);
    }
}

/// Sequentially consistent counts: never fewer of the writers' rows than
/// were acknowledged before the read began.
pub fn reader(seed: u64, ports: &[u16], history: &History, stop: &AtomicBool) {
    let mut rng = Rng::new(seed);
    let sql = format!("SELECT count() FROM jt WHERE w != {PRELOAD_WRITER}");
    while !stop.load(Ordering::SeqCst) {
        let port = ports[rng.range(0, ports.len() as u64) as usize];
        let before = history.acked_rows.load(Ordering::SeqCst);
        let r = http::post(port, "select_sequential_consistency=1", &sql, b"", Duration::from_secs(15));
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

/// `OPTIMIZE TABLE jt FINAL` through a random node every `every` (a range
/// of milliseconds).
pub fn optimizer(seed: u64, every: (u64, u64), ports: &[u16], history: &History, stop: &AtomicBool) {
    let mut rng = Rng::new(seed);
    loop {
        let until = Instant::now() + Duration::from_millis(rng.range(every.0, every.1));
        while Instant::now() < until {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let port = ports[rng.range(0, ports.len() as u64) as usize];
        match http::post(port, "", "OPTIMIZE TABLE jt FINAL", b"", Duration::from_secs(30)) {
            Ok((200, _)) => history.optimized.fetch_add(1, Ordering::SeqCst),
            _ => history.optimize_failed.fetch_add(1, Ordering::SeqCst),
        };
    }
}

/// After `after`, `ALTER TABLE jt DELETE WHERE w = 99` through a random
/// node, retried until a node answers 200 (for at most 60 s past the end
/// of the load).
pub fn mutator(seed: u64, after: Duration, ports: &[u16], history: &History, stop: &AtomicBool) {
    let mut rng = Rng::new(seed);
    let start = Instant::now();
    while start.elapsed() < after && !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let sql = format!("ALTER TABLE jt DELETE WHERE w = {PRELOAD_WRITER}");
    let mut stopped_at: Option<Instant> = None;
    loop {
        let port = ports[rng.range(0, ports.len() as u64) as usize];
        if let Ok((200, _)) = http::post(port, "", &sql, b"", Duration::from_secs(30)) {
            history.mutation_acked.store(true, Ordering::SeqCst);
            history.fault(format!("mutation acknowledged by port {port}"));
            return;
        }
        if stop.load(Ordering::SeqCst)
            && stopped_at.get_or_insert_with(Instant::now).elapsed() > Duration::from_secs(60)
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Every 1–3 s, `ALTER TABLE jt DELETE WHERE w = 98 AND s = n` (no block
/// has writer 98: it must change no row, whether it rewrites every part or
/// is killed half-way) through a random node, then after 0.2–1.5 s
/// `KILL MUTATION` of it through another random node.
pub fn mutation_killer(seed: u64, ports: &[u16], history: &History, stop: &AtomicBool) {
    let mut rng = Rng::new(seed);
    let pick = |rng: &mut Rng| ports[rng.range(0, ports.len() as u64) as usize];
    let nap = |ms: u64, stop: &AtomicBool| {
        let until = Instant::now() + Duration::from_millis(ms);
        while Instant::now() < until && !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        nap(rng.range(1000, 3000), stop);
        n += 1;
        let sql = format!("ALTER TABLE jt DELETE WHERE w = 98 AND s = {n}");
        if !matches!(http::post(pick(&mut rng), "", &sql, b"", Duration::from_secs(15)), Ok((200, _))) {
            continue;
        }
        history.noop_mutations.fetch_add(1, Ordering::SeqCst);
        nap(rng.range(200, 1500), stop);
        let kill = format!("KILL MUTATION WHERE table = 'jt' AND command LIKE '%w = 98 AND s = {n}%'");
        if let Ok((200, body)) = http::post(pick(&mut rng), "", &kill, b"", Duration::from_secs(15))
            && body.starts_with("waiting")
        {
            history.mutation_kills.fetch_add(1, Ordering::SeqCst);
        }
    }
}
