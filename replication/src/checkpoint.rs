//! Deferred durability of inline inserts.
//!
//! A small insert's part is kept in memory on every replica (see
//! `storage::Part::in_memory`): its bytes are durable in the Raft log entry
//! that carries them (see `command::INLINE_MAX_BYTES`), and most such parts
//! are merged away within seconds without ever being written. A checkpoint
//! writes out, fsynced, those still active (and fsyncs parts written without
//! fsync by older versions), then forgets them; it runs from the cleanup sweep
//! (about once a second) and before every snapshot, so the log is never
//! purged past a part only the log holds.
//!
//! At open, every part the state lists as unsynced and that no part on disk
//! covers is written again from its log entry (a process crash lost it from
//! memory; a power loss may have torn an older version's unsynced file: every
//! listed part, and every level-0 part newer than the applied index, is
//! verified and a torn one quarantined first).

use serde::{Deserialize, Serialize};
use std::sync::Arc;
use storage::PartName;

use storage::part::Part;
use storage::part::adopt::{adopt_in_memory, write_in_memory};
use storage::part::writer::sync_part;

use crate::command::Command;
use crate::error::{ReplicationError, Result};
use crate::replica::Replica;

/// A part written without fsync, durable only through its log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnsyncedPart {
    /// The `Insert` entry that carries the part's bytes.
    pub index: u64,
    pub part: String,
}

fn st(e: storage::StorageError) -> ReplicationError {
    ReplicationError::Storage(e)
}

impl Replica {
    /// The parts written without fsync since the last checkpoint.
    pub fn unsynced_parts(&self) -> Vec<String> {
        self.state().persisted.unsynced.iter().map(|u| u.part.clone()).collect()
    }

    /// Writes out every in-memory part still active (fsyncs parts written
    /// without fsync) and forgets them; returns how many were pending. Parts
    /// already merged away are skipped (merge results are synced).
    pub fn checkpoint(&self) -> Result<usize> {
        let pending = self.state().persisted.unsynced.clone();
        if pending.is_empty() {
            return Ok(0);
        }
        // A part merged away needs nothing: the merge result covering it
        // was fsynced.
        let active: Vec<(&UnsyncedPart, Arc<Part>)> = {
            let s = self.state();
            pending
                .iter()
                .filter_map(|u| u.part.parse::<PartName>().ok().and_then(|n| s.parts.get(&n).cloned()).map(|p| (u, p)))
                .collect()
        };
        for (u, part) in active {
            if part.is_in_memory() {
                self.store_in_memory(&part)?;
                continue;
            }
            let dir = self.parts_dir().join(&u.part);
            match sync_part(&dir, &[]) {
                Ok(()) => {}
                // Removed meanwhile, or renamed for deletion.
                Err(_) if !dir.exists() => {}
                Err(e) => return Err(st(e)),
            }
        }
        self.state().persisted.unsynced.retain(|u| !pending.contains(u));
        self.persist()?;
        Ok(pending.len())
    }

    /// Writes an in-memory part out, fsynced, and puts the stored copy in its
    /// place in the part set; false (and nothing left on disk) when the set
    /// no longer holds the part.
    pub(crate) fn store_in_memory(&self, part: &Part) -> Result<bool> {
        let _g = self.store_lock.lock().unwrap_or_else(|e| e.into_inner());
        let stored = Arc::new(write_in_memory(part).map_err(st)?);
        if self.state().parts.swap_stored(stored.clone()) {
            return Ok(true);
        }
        // Merged away and gone meanwhile: nothing tracks these files.
        storage::part_set::remove_part_files(&stored).map_err(st)?;
        Ok(false)
    }

    /// At open: verifies the parts a power loss may have torn, quarantines
    /// torn ones and writes unsynced ones again from their log entries.
    pub(crate) fn recover_unsynced(&self) -> Result<()> {
        let (unsynced, applied) = {
            let s = self.state();
            (s.persisted.unsynced.clone(), s.persisted.applied.map(|l| l.index).unwrap_or(0))
        };
        let suspects: Vec<_> = {
            let s = self.state();
            s.parts
                .active()
                .filter(|p| {
                    let listed = unsynced.iter().any(|u| u.part == p.name.to_string());
                    listed || (p.name.level == 0 && p.name.min_block > 0 && p.name.min_block as u64 > applied)
                })
                .cloned()
                .collect()
        };
        for p in suspects {
            if let Err(e) = p.verify() {
                tracing::warn!(group = self.group, part = %p.name, error = %e, "part torn since its last fsync");
                self.state().parts.quarantine(&p.name, &e.to_string()).map_err(st)?;
            }
        }
        for u in &unsynced {
            let name: PartName = u.part.parse().map_err(st)?;
            if self.state().parts.covering(&name).is_some() {
                continue;
            }
            let entry =
                self.db.get_entry(self.group, u.index).map_err(|e| ReplicationError::Corrupted(e.to_string()))?;
            let Some(openraft::EntryPayload::Normal(Command::Insert { files, inline: Some(inline), .. })) =
                entry.map(|e| e.payload)
            else {
                tracing::error!(group = self.group, part = %name, index = u.index, "unsynced part lost and its log entry is gone");
                continue;
            };
            let bytes = crate::command::inline::decode(&inline)?;
            let part =
                write_in_memory(&adopt_in_memory(&bytes, &files, &self.parts_dir(), &name).map_err(st)?).map_err(st)?;
            part.verify().map_err(st)?;
            tracing::info!(group = self.group, part = %name, index = u.index, "part restored from its log entry");
            self.state().parts.add(std::sync::Arc::new(part)).map_err(st)?;
        }
        self.checkpoint()?;
        Ok(())
    }
}
