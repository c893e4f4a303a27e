//! `shardhouse benchmark`: what `clickhouse-benchmark` is to ClickHouse.
//! Reads queries from stdin, one per line, and sends them from `concurrency`
//! threads, each holding one keep-alive HTTP connection per host (queries go
//! to the hosts in turn), then prints queries/s and latency percentiles.
//!
//! A load generator written in Python spends more time in its own GIL and
//! connection setup than a small insert takes in the server; this one keeps
//! the client out of the measurement.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Options of `shardhouse benchmark`.
#[derive(Debug, Clone)]
pub struct BenchmarkOptions {
    /// `host:port` of each server; query `i` goes to `hosts[i % len]`.
    pub hosts: Vec<String>,
    pub concurrency: usize,
    /// Print one JSON object instead of text.
    pub json: bool,
}

/// Latency and throughput of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub queries: usize,
    pub errors: usize,
    pub seconds: f64,
    /// Milliseconds at 50, 90, 99 and 99.9 %.
    pub percentiles_ms: [f64; 4],
    pub first_error: Option<String>,
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One keep-alive connection.
struct Conn {
    host: String,
    reader: BufReader<TcpStream>,
}

impl Conn {
    fn open(host: &str) -> std::io::Result<Conn> {
        let s = TcpStream::connect(host)?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(300)))?;
        Ok(Conn { host: host.to_string(), reader: BufReader::new(s) })
    }

    /// Sends one query; returns the status and the body.
    fn query(&mut self, sql: &str) -> std::io::Result<(u16, Vec<u8>)> {
        let req = format!("POST /?query={} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\n\r\n", encode(sql), self.host);
        self.reader.get_mut().write_all(req.as_bytes())?;
        let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let status: u16 =
            line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| bad("no status"))?;
        let (mut len, mut chunked) = (None, false);
        loop {
            line.clear();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(bad("connection closed in headers"));
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let lower = l.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                len = v.trim().parse::<usize>().ok();
            } else if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
                chunked = true;
            }
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                line.clear();
                self.reader.read_line(&mut line)?;
                let n = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                    .map_err(|_| bad("bad chunk size"))?;
                if n > 1 << 30 {
                    return Err(bad("chunk over 1 GiB"));
                }
                let mut chunk = vec![0; n + 2];
                self.reader.read_exact(&mut chunk)?;
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..n]);
            }
        } else if let Some(n) = len {
            if n > 1 << 30 {
                return Err(bad("body over 1 GiB"));
            }
            body.resize(n, 0);
            self.reader.read_exact(&mut body)?;
        }
        Ok((status, body))
    }
}

/// Runs `queries` and measures each one's latency.
pub fn run_benchmark(opts: &BenchmarkOptions, queries: &[String]) -> Report {
    let next = AtomicUsize::new(0);
    let latencies = Mutex::new(Vec::with_capacity(queries.len()));
    let errors = AtomicUsize::new(0);
    let first_error = Mutex::new(None);
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..opts.concurrency.max(1) {
            s.spawn(|| {
                let mut conns: Vec<Option<Conn>> = opts.hosts.iter().map(|_| None).collect();
                let mut mine = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(sql) = queries.get(i) else { break };
                    let h = i % opts.hosts.len().max(1);
                    let t = Instant::now();
                    let r = match conns[h].take() {
                        Some(c) => Ok(c),
                        None => Conn::open(&opts.hosts[h]),
                    }
                    .and_then(|mut c| c.query(sql).map(|r| (c, r)));
                    let failure = match r {
                        Ok((c, (200, _))) => {
                            conns[h] = Some(c);
                            None
                        }
                        Ok((c, (status, body))) => {
                            conns[h] = Some(c);
                            Some(format!("HTTP {status}: {}", String::from_utf8_lossy(&body).trim()))
                        }
                        Err(e) => Some(e.to_string()),
                    };
                    mine.push(t.elapsed());
                    if let Some(e) = failure {
                        errors.fetch_add(1, Ordering::Relaxed);
                        first_error.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e);
                    }
                }
                latencies.lock().unwrap_or_else(|p| p.into_inner()).extend(mine);
            });
        }
    });
    let seconds = started.elapsed().as_secs_f64();
    let mut lat: Vec<f64> = latencies.into_inner().unwrap_or_default().iter().map(|d| d.as_secs_f64() * 1e3).collect();
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| -> f64 {
        if lat.is_empty() {
            return 0.0;
        }
        let i = ((p / 100.0) * (lat.len() - 1) as f64).round() as usize;
        lat[i.min(lat.len() - 1)]
    };
    Report {
        queries: lat.len(),
        errors: errors.into_inner(),
        seconds,
        percentiles_ms: [pct(50.0), pct(90.0), pct(99.0), pct(99.9)],
        first_error: first_error.into_inner().unwrap_or(None),
    }
}

/// `shardhouse benchmark`: queries from stdin, the report on stdout. Exit
/// code 1 when any query failed.
pub fn run(opts: &BenchmarkOptions) -> i32 {
    let queries: Vec<String> =
        std::io::stdin().lock().lines().map_while(Result::ok).filter(|l| !l.trim().is_empty()).collect();
    let r = run_benchmark(opts, &queries);
    let qps = r.queries as f64 / r.seconds.max(1e-9);
    let [p50, p90, p99, p999] = r.percentiles_ms;
    if opts.json {
        let err = r.first_error.as_deref().map(|e| format!("{e:?}")).unwrap_or_else(|| "null".into());
        println!(
            "{{\"queries\": {}, \"errors\": {}, \"seconds\": {:.3}, \"qps\": {qps:.1}, \"p50_ms\": {p50:.3}, \
             \"p90_ms\": {p90:.3}, \"p99_ms\": {p99:.3}, \"p999_ms\": {p999:.3}, \"first_error\": {err}}}",
            r.queries, r.errors, r.seconds
        );
    } else {
        println!("queries {}, errors {}, {:.1} QPS, concurrency {}", r.queries, r.errors, qps, opts.concurrency);
        println!("50%\t{p50:.3} ms\n90%\t{p90:.3} ms\n99%\t{p99:.3} ms\n99.9%\t{p999:.3} ms");
        if let Some(e) = &r.first_error {
            println!("first error: {e}");
        }
    }
    i32::from(r.errors > 0)
}
