//! Deferred durability of inline inserts.
//!
//! A small insert's part is written on every replica without fsync: its
//! bytes are durable in the Raft log entry that carries them (see
//! `command::INLINE_MAX_BYTES`). A checkpoint fsyncs those parts and forgets
//! them; it runs from the cleanup sweep (about once a second) and before every
//! snapshot, so the log is never purged past a part only the log holds.
//!
//! A process crash loses nothing (the page cache survives it). After a power
//! loss a part may be torn: at open, every part the state lists as unsynced,
//! and every level-0 part newer than the applied index, is verified; a torn
//! one is quarantined and written again from its log entry (or, when the
//! state had not recorded it, re-applied by Raft).

use serde::{Deserialize, Serialize};
use storage::PartName;
use storage::part::adopt::adopt_bytes;
use storage::part::writer::{Durability, sync_part};

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

    /// Fsyncs every part written without fsync and forgets them; returns how
    /// many. Parts already merged away are skipped (merge results are synced).
    pub fn checkpoint(&self) -> Result<usize> {
        let pending = self.state().persisted.unsynced.clone();
        if pending.is_empty() {
            return Ok(0);
        }
        // A part merged away needs nothing: the merge result covering it
        // was fsynced.
        let active: Vec<&UnsyncedPart> = {
            let s = self.state();
            pending.iter().filter(|u| u.part.parse::<PartName>().is_ok_and(|n| s.parts.get(&n).is_some())).collect()
        };
        for u in active {
            let dir = self.parts_dir().join(&u.part);
            match sync_part(&dir) {
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
            let bytes = crate::staging::decode_inline(&inline)?;
            let part = adopt_bytes(&bytes, &files, &self.parts_dir(), &name, Durability::Synced).map_err(st)?;
            part.verify().map_err(st)?;
            tracing::info!(group = self.group, part = %name, index = u.index, "part restored from its log entry");
            self.state().parts.add(std::sync::Arc::new(part)).map_err(st)?;
        }
        self.checkpoint()?;
        Ok(())
    }
}
