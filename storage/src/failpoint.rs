//! Crash points for tests: a named point that, when armed, makes the operation
//! stop right there and return [`StorageError::SimulatedCrash`], leaving the disk
//! exactly as a crash at that instant would (nothing is cleaned up).

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{Result, StorageError};

static ANY_ARMED: AtomicBool = AtomicBool::new(false);
static ARMED: Mutex<Option<HashSet<&'static str>>> = Mutex::new(None);

/// Arms a failpoint: the next time code passes it, the operation stops there.
/// Each arm fires once.
pub fn arm(name: &'static str) {
    let mut g = ARMED.lock().unwrap_or_else(|e| e.into_inner());
    g.get_or_insert_with(HashSet::new).insert(name);
    ANY_ARMED.store(true, Ordering::SeqCst);
}

/// Disarms every failpoint.
pub fn disarm_all() {
    let mut g = ARMED.lock().unwrap_or_else(|e| e.into_inner());
    *g = None;
    ANY_ARMED.store(false, Ordering::SeqCst);
}

/// Checks a failpoint; cheap when nothing is armed.
pub fn hit(name: &'static str) -> Result<()> {
    if !ANY_ARMED.load(Ordering::Relaxed) {
        return Ok(());
    }
    let mut g = ARMED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(set) = g.as_mut()
        && set.remove(name)
    {
        tracing::warn!(failpoint = name, "simulated crash");
        return Err(StorageError::SimulatedCrash(name));
    }
    Ok(())
}
