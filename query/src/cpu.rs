//! Thread CPU time, and CPU that helper threads spend for the thread that
//! started them (a Parquet body decoded on every core): the query log's
//! accounting (`server::metering::measured`) adds it to the query.

use std::cell::Cell;

/// CPU time this thread has used, in nanoseconds.
pub fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we own.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if r != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

thread_local! {
    static HELPERS_NS: Cell<u64> = const { Cell::new(0) };
}

/// Records `ns` of CPU that helper threads spent on this thread's behalf.
pub fn charge_helpers(ns: u64) {
    HELPERS_NS.with(|c| c.set(c.get().saturating_add(ns)));
}

/// Takes the helper CPU recorded on this thread so far.
pub fn take_helpers() -> u64 {
    HELPERS_NS.with(|c| c.replace(0))
}

/// Runs `f` on a helper thread, returning its result and the CPU it used.
pub fn timed<T>(f: impl FnOnce() -> T) -> (T, u64) {
    let start = thread_cpu_ns();
    let out = f();
    (out, thread_cpu_ns().saturating_sub(start))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::metering::{QueryStats, measured};

    fn spin(ns: u64) -> u64 {
        let start = thread_cpu_ns();
        let mut x = 0u64;
        while thread_cpu_ns() - start < ns {
            x = x.wrapping_mul(31).wrapping_add(1);
        }
        x
    }

    /// Regression guard: CPU spent on helper threads (Parquet decoding on
    /// every core) is counted in the query's CPU, not only the caller's.
    #[test]
    fn helper_threads_cpu_counts_in_the_measured_query() {
        let stats = QueryStats::default();
        measured(&stats, || {
            let (_, cpu) = std::thread::scope(|s| s.spawn(|| timed(|| spin(30_000_000))).join().unwrap());
            charge_helpers(cpu);
        });
        let counted = stats.cpu_ns.load(std::sync::atomic::Ordering::Relaxed);
        assert!(counted >= 30_000_000, "helper CPU not counted: {counted} ns");
        assert_eq!(take_helpers(), 0, "the charge was consumed by the measurement");
    }
}
