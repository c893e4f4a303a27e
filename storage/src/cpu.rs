//! Thread CPU time, and CPU that helper threads spend for the thread that
//! started them (a Parquet body decoded on every core): the query log's
//! accounting (the server's `metering::measured`) adds it to the query.

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

    fn spin(ns: u64) -> u64 {
        let start = thread_cpu_ns();
        let mut x = 0u64;
        while thread_cpu_ns() - start < ns {
            x = x.wrapping_mul(31).wrapping_add(1);
        }
        x
    }

    /// CPU a helper thread reports is charged to the thread that asked, once.
    #[test]
    fn helper_cpu_is_charged_to_the_caller_once() {
        take_helpers();
        let (_, cpu) = std::thread::scope(|s| s.spawn(|| timed(|| spin(30_000_000))).join().unwrap());
        assert!(cpu >= 30_000_000, "helper CPU not measured: {cpu} ns");
        charge_helpers(cpu);
        assert_eq!(take_helpers(), cpu);
        assert_eq!(take_helpers(), 0, "the charge is consumed");
    }
}
