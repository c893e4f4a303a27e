//! CPU priority of background merge threads (ClickHouse's server setting
//! `os_threads_nice_value_merge_mutate`, RocksDB's lowered compaction pool
//! priority). Inserts and queries wait on their CPU; a merge only has to
//! finish before parts pile up, and too-many-parts backpressure bounds that.
//! So merge threads run at a higher nice value: under contention the
//! scheduler gives the foreground most of the cores, and idle cores still
//! go to merges.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

/// The nice value merge threads take unless the server is configured
/// otherwise: under full load the scheduler weighs a merge thread at 110
/// against a busy foreground thread's 1024: about a tenth of the core they share.
pub const DEFAULT_MERGE_NICE: i32 = 10;

static MERGE_NICE: AtomicI32 = AtomicI32::new(DEFAULT_MERGE_NICE);
static WARNED: AtomicBool = AtomicBool::new(false);

/// Sets the nice value (-20..=19) of merge threads started from now on.
pub fn set_merge_nice(nice: i32) {
    MERGE_NICE.store(nice.clamp(-20, 19), Ordering::Relaxed);
}

/// The configured nice value of merge threads.
pub fn merge_nice() -> i32 {
    MERGE_NICE.load(Ordering::Relaxed)
}

/// Gives the calling thread the merge nice value. Call it first thing on a
/// thread that only merges: threads it spawns (the part encoder's workers)
/// inherit the value. A value the process may not take (below its own
/// without CAP_SYS_NICE) leaves the thread as it is, with one warning.
pub fn enter_merge_thread() {
    set_current_thread_nice(merge_nice());
}

/// Sets the calling thread's nice value; false when the OS refused it.
pub fn set_current_thread_nice(nice: i32) -> bool {
    let ok = set_nice(nice);
    if !ok && !WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!(nice, "cannot set the nice value of merge threads (needs CAP_SYS_NICE below the current one)");
    }
    ok
}

#[cfg(target_os = "linux")]
fn set_nice(nice: i32) -> bool {
    // On Linux a nice value belongs to a thread: PRIO_PROCESS with a thread
    // id changes that thread alone.
    // SAFETY: gettid and setpriority take and return plain integers.
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice) == 0
    }
}

#[cfg(not(target_os = "linux"))]
fn set_nice(_nice: i32) -> bool {
    true
}

/// The calling thread's nice value.
#[cfg(target_os = "linux")]
pub fn current_thread_nice() -> i32 {
    // SAFETY: as above; errno is cleared first since -1 is a valid value.
    unsafe {
        *libc::__errno_location() = 0;
        libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t)
    }
}

/// The calling thread's nice value.
#[cfg(not(target_os = "linux"))]
pub fn current_thread_nice() -> i32 {
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_merge_thread_and_the_threads_it_starts_run_at_the_merge_nice_value() {
        let base = current_thread_nice();
        let (own, child) = std::thread::spawn(move || {
            // Raising the value is always allowed.
            assert!(set_current_thread_nice((base + 3).min(19)));
            let own = current_thread_nice();
            let child = std::thread::spawn(current_thread_nice).join().unwrap();
            (own, child)
        })
        .join()
        .unwrap();
        assert_eq!(own, (base + 3).min(19));
        assert_eq!(child, own, "spawned threads inherit the nice value");
        assert_eq!(current_thread_nice(), base, "other threads keep theirs");
    }
}
