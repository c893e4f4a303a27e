//! Crash points for tests: a named point that, when armed, makes the operation
//! stop right there and return [`StorageError::SimulatedCrash`], leaving the disk
//! exactly as a crash at that instant would (nothing is cleaned up).
//!
//! Points are armed per thread, so tests running in parallel don't trip over
//! each other's; the storage operations they exercise run on the caller's thread.

use std::cell::RefCell;
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::error::{Result, StorageError};

static ARMED_ANYWHERE: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static ARMED: RefCell<HashSet<&'static str>> = RefCell::new(HashSet::new());
}

/// Arms a failpoint on this thread; it fires once.
pub fn arm(name: &'static str) {
    if ARMED.with(|a| a.borrow_mut().insert(name)) {
        ARMED_ANYWHERE.fetch_add(1, Ordering::SeqCst);
    }
}

/// Disarms every failpoint of this thread.
pub fn disarm_all() {
    let n = ARMED.with(|a| std::mem::take(&mut *a.borrow_mut()).len());
    ARMED_ANYWHERE.fetch_sub(n, Ordering::SeqCst);
}

/// Checks a failpoint; cheap when nothing is armed anywhere.
pub fn hit(name: &'static str) -> Result<()> {
    if ARMED_ANYWHERE.load(Ordering::Relaxed) == 0 {
        return Ok(());
    }
    if ARMED.with(|a| a.borrow_mut().remove(name)) {
        ARMED_ANYWHERE.fetch_sub(1, Ordering::SeqCst);
        tracing::warn!(failpoint = name, "simulated crash");
        return Err(StorageError::SimulatedCrash(name));
    }
    Ok(())
}
