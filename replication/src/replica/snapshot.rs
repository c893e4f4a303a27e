//! Snapshots: the manifest of a replica's applied state and active parts,
//! and installing a peer's manifest once its missing parts are fetched.

use std::path::PathBuf;
use std::sync::Arc;

use storage::PartName;
use storage::part::adopt::adopt_part;
use storage::part::checksum::FileChecksum;

use super::{PersistedState, Replica, part_dir_in, remove_dir, st};
use crate::NodeId;
use crate::error::Result;
use serde::{Deserialize, Serialize};

/// One part in a snapshot manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestPart {
    pub name: String,
    pub files: std::collections::BTreeMap<String, FileChecksum>,
}

/// A snapshot: the applied state plus the names and checksums of the active
/// parts; the bytes are fetched from `source` (or any member) on install.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub state: PersistedState,
    pub parts: Vec<ManifestPart>,
    pub source: NodeId,
}

impl Replica {
    /// The snapshot manifest of the current applied state.
    pub fn manifest(&self) -> Manifest {
        let s = self.state();
        Manifest {
            state: s.persisted.clone(),
            parts: s
                .parts
                .active()
                .map(|p| ManifestPart { name: p.name.to_string(), files: p.meta.files.clone() })
                .collect(),
            source: self.node,
        }
    }

    /// Parts of `manifest` this replica lacks.
    pub fn missing_for(&self, manifest: &Manifest) -> Result<Vec<PartName>> {
        let s = self.state();
        let mut out = Vec::new();
        for p in &manifest.parts {
            let name: PartName = p.name.parse().map_err(st)?;
            let have = s.parts.get(&name).is_some_and(|x| x.meta.files == p.files);
            if !have {
                out.push(name);
            }
        }
        Ok(out)
    }

    /// Installs a snapshot whose missing parts were fetched into the
    /// directories of `fetched`: the active set becomes exactly the manifest's.
    pub fn install(&self, manifest: &Manifest, fetched: &[PathBuf]) -> Result<()> {
        let _g = self.apply_lock.lock().unwrap_or_else(|e| e.into_inner());
        self.merges.wait_all(true);
        for dir in fetched {
            let Some(src) = part_dir_in(dir) else { continue };
            let name = src.file_name().and_then(|n| n.to_str()).unwrap_or_default().parse::<PartName>().map_err(st)?;
            let part = adopt_part(&src, &self.parts_dir(), &name).map_err(st)?;
            remove_dir(dir);
            let mut s = self.state();
            let intersecting: Vec<PartName> =
                s.parts.active().filter(|p| p.name.intersects(&name)).map(|p| p.name.clone()).collect();
            for n in intersecting {
                s.parts.remove(&n);
            }
            s.parts.add(Arc::new(part)).map_err(st)?;
        }
        let mut s = self.state();
        let keep: std::collections::HashSet<&str> = manifest.parts.iter().map(|p| p.name.as_str()).collect();
        let extra: Vec<PartName> =
            s.parts.active().filter(|p| !keep.contains(p.name.to_string().as_str())).map(|p| p.name.clone()).collect();
        for n in extra {
            s.parts.remove(&n);
        }
        let mut persisted = manifest.state.clone();
        persisted.dedup.reindex();
        s.persisted = persisted;
        s.catch_up_to = s.parts.active().map(|p| p.name.max_block).max().unwrap_or(0);
        drop(s);
        *self.dedup_rows.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.persist()
    }
}
