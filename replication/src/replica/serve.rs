//! What a replica does for others and for itself between entries: finds
//! the part a peer asks for (writing an in-memory part out first), and
//! deletes expired outdated parts and abandoned staged blocks.

use std::path::PathBuf;

use storage::PartName;
use storage::part_set;

use super::{Replica, part_dir_in, remove_dir, st};
use crate::error::Result;

impl Replica {
    /// Deletes outdated parts no reader holds any more, and staged blocks
    /// older than `staging_ttl` whose proposal never committed.
    pub fn cleanup(&self, grace: std::time::Duration, staging_ttl: std::time::Duration) -> Result<()> {
        self.checkpoint()?;
        let expired = self.state().parts.take_expired(grace);
        for p in expired {
            part_set::remove_part_files(&p).map_err(st)?;
        }
        {
            let mut swept = self.staging_swept.lock().unwrap_or_else(|e| e.into_inner());
            let due = swept.is_none_or(|t| t.elapsed() >= staging_ttl.min(std::time::Duration::from_secs(60)));
            if !due {
                return Ok(());
            }
            *swept = Some(std::time::Instant::now());
        }
        if let Ok(rd) = std::fs::read_dir(self.staging_dir()) {
            for e in rd.flatten() {
                let old = e.metadata().and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok());
                if old.is_some_and(|age| age > staging_ttl) {
                    tracing::info!(group = self.group, staged = ?e.file_name(), "removing a staged block that never committed");
                    remove_dir(&e.path());
                }
            }
        }
        Ok(())
    }

    /// Whether `want` names the result of a merge running here.
    pub fn is_merging(&self, want: &str) -> bool {
        want.parse::<PartName>().is_ok_and(|name| self.merges.running().iter().any(|(r, _)| *r == name))
    }

    /// Finds what a peer asks for: a staged block by id, or the active part
    /// containing `part`. Returns the part directory to stream.
    pub fn find_for_fetch(&self, want: &str) -> Option<PathBuf> {
        if !want.contains('/')
            && !want.contains("..")
            && let Some(d) = part_dir_in(&self.staging_dir().join(want))
        {
            return Some(d);
        }
        let name: PartName = want.parse().ok()?;
        let part = {
            let s = self.state();
            // A merge result the merging replica has already merged further is
            // still on disk for a while: a replica fetching it wants that one.
            s.parts.covering(&name).or_else(|| s.parts.outdated().find(|p| p.name == name)).cloned()?
        };
        if part.is_in_memory() {
            return match self.store_in_memory(&part) {
                Ok(true) => Some(part.dir.clone()),
                Ok(false) => None,
                Err(e) => {
                    tracing::warn!(group = self.group, part = %part.name, error = %e, "cannot write out a part to send");
                    None
                }
            };
        }
        Some(part.dir.clone())
    }
}
