//! A progress line on stderr for a running statement: bytes uploaded (with
//! a bar when the total is known) or, while waiting for the answer, the time
//! elapsed. Only drawn on a terminal, and only once a statement has run for
//! half a second, so quick statements print nothing extra.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Shared {
    done: AtomicBool,
    sent: AtomicU64,
    total: AtomicU64,
    drawn: AtomicBool,
    lock: Mutex<()>,
}

/// The progress of one statement.
pub struct Progress {
    shared: Option<Arc<Shared>>,
}

fn draw(s: &Shared, started: Instant) {
    let _g = s.lock.lock().unwrap_or_else(|e| e.into_inner());
    if s.done.load(Ordering::SeqCst) {
        return;
    }
    let secs = started.elapsed().as_secs_f64();
    let (sent, total) = (s.sent.load(Ordering::SeqCst), s.total.load(Ordering::SeqCst));
    let line = if total > 0 && sent < total {
        let frac = sent as f64 / total as f64;
        let filled = (frac * 30.0) as usize;
        format!(
            "[{}{}] {:.1}/{:.1} MB ({:.0} MB/s) {secs:.1}s",
            "#".repeat(filled),
            " ".repeat(30 - filled),
            sent as f64 / 1e6,
            total as f64 / 1e6,
            sent as f64 / 1e6 / secs.max(1e-9)
        )
    } else {
        format!("running… {secs:.1}s")
    };
    let mut e = std::io::stderr().lock();
    let _ = write!(e, "\r\x1b[2K{line}");
    let _ = e.flush();
    s.drawn.store(true, Ordering::SeqCst);
}

impl Progress {
    /// Starts the ticker (a no-op progress when `show` is false).
    pub fn start(show: bool) -> Progress {
        if !show {
            return Progress { shared: None };
        }
        let shared = Arc::new(Shared {
            done: AtomicBool::new(false),
            sent: AtomicU64::new(0),
            total: AtomicU64::new(0),
            drawn: AtomicBool::new(false),
            lock: Mutex::new(()),
        });
        let s = shared.clone();
        let started = Instant::now();
        let _ = std::thread::Builder::new().name("progress".into()).spawn(move || {
            std::thread::sleep(Duration::from_millis(500));
            while !s.done.load(Ordering::SeqCst) {
                draw(&s, started);
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Progress { shared: Some(shared) }
    }

    /// Records upload progress.
    pub fn uploaded(&self, sent: u64, total: u64) {
        if let Some(s) = &self.shared {
            s.sent.store(sent, Ordering::SeqCst);
            s.total.store(total, Ordering::SeqCst);
        }
    }

    /// Stops and erases the line.
    pub fn finish(&self) {
        if let Some(s) = &self.shared {
            let _g = s.lock.lock().unwrap_or_else(|e| e.into_inner());
            s.done.store(true, Ordering::SeqCst);
            if s.drawn.load(Ordering::SeqCst) {
                let _ = write!(std::io::stderr(), "\r\x1b[2K");
            }
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}
