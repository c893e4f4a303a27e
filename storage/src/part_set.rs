//! The active part set of one partition-shard, as a value: commands add parts,
//! swap merge sources for their result and replace mutated parts. It owns no
//! files; [`recover`] rebuilds exactly the active set from a directory after a
//! crash at any point, and [`remove_part_files`] deletes outdated parts.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Result, StorageError};
use crate::part::Part;
use crate::part::name::PartName;
use crate::part::writer::TMP_PREFIX;

/// Name of the directory holding parts taken out of service.
pub const DETACHED_DIR: &str = "detached";
/// A file in a part directory saying the part left the active set without
/// a part covering it (see [`PartSet::remove`]): recovery deletes it.
pub const OUTDATED_MARKER: &str = "outdated";
const DELETE_PREFIX: &str = "delete_tmp_";

/// Active parts plus the outdated ones waiting out their grace period.
#[derive(Debug, Default)]
pub struct PartSet {
    active: BTreeMap<PartName, Arc<Part>>,
    outdated: Vec<(Arc<Part>, Instant)>,
}

impl PartSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Active parts in name order.
    pub fn active(&self) -> impl Iterator<Item = &Arc<Part>> {
        self.active.values()
    }

    /// A snapshot of the active parts, for readers.
    pub fn snapshot(&self) -> Vec<Arc<Part>> {
        self.active.values().cloned().collect()
    }

    /// The active part with this name.
    pub fn get(&self, name: &PartName) -> Option<&Arc<Part>> {
        self.active.get(name)
    }

    /// Number of active parts in one partition.
    pub fn parts_in_partition(&self, partition_id: &str) -> usize {
        self.active.keys().filter(|n| n.partition_id == partition_id).count()
    }

    /// Outdated parts still on disk.
    pub fn outdated(&self) -> impl Iterator<Item = &Arc<Part>> {
        self.outdated.iter().map(|(p, _)| p)
    }

    /// Adds a part. Active parts it covers become outdated. A part covered by an
    /// active part, or intersecting one without covering it, is rejected and
    /// the set is left unchanged.
    pub fn add(&mut self, part: Arc<Part>) -> Result<Vec<Arc<Part>>> {
        let name = part.name.clone();
        let mut covered = Vec::new();
        for existing in self.active.keys().filter(|e| e.intersects(&name)) {
            if existing.contains(&name) {
                return Err(StorageError::IntersectingParts { new: name.to_string(), existing: existing.to_string() });
            } else if name.contains(existing) {
                covered.push(existing.clone());
            } else {
                return Err(StorageError::IntersectingParts { new: name.to_string(), existing: existing.to_string() });
            }
        }
        let now = Instant::now();
        let mut removed = Vec::new();
        for c in covered {
            if let Some(p) = self.active.remove(&c) {
                self.outdated.push((p.clone(), now));
                removed.push(p);
            }
        }
        self.active.insert(name, part);
        Ok(removed)
    }

    /// Atomically swaps `sources` for `result` (a merge or a mutation): every
    /// source must be active and covered by the result, and no other active
    /// part may lie in the result's block range, or nothing changes.
    ///
    /// The invariant this keeps: a part holds the rows of exactly the parts
    /// it replaced. A result's name claims every block of its range, so one
    /// that swapped out a part that was not its source would hide that
    /// part's rows for good (issue 16: a merge chosen around a part that a
    /// running merge took, swapped in after that merge finished).
    pub fn replace(&mut self, sources: &[PartName], result: Arc<Part>) -> Result<()> {
        for s in sources {
            if !self.active.contains_key(s) {
                return Err(StorageError::PartNotActive(s.to_string()));
            }
            if !result.name.contains(s) {
                return Err(StorageError::DoesNotCover { part: result.name.to_string(), source_part: s.to_string() });
            }
        }
        if let Some(other) = self.active.keys().find(|a| a.intersects(&result.name) && !sources.contains(a)) {
            return Err(StorageError::CoversOtherPart { part: result.name.to_string(), other: other.to_string() });
        }
        let removed = self.add(result)?;
        debug_assert!(sources.iter().all(|s| removed.iter().any(|r| &r.name == s)));
        Ok(())
    }

    /// Takes one part out of the active set, making it outdated (a replica
    /// installing a snapshot that does not have it).
    ///
    /// No active part covers it, so recovery could not tell it is outdated
    /// from its name: found on disk after a crash, it would be taken back,
    /// and a part of the new set that intersects it detached — with its
    /// rows, some of which may be nowhere else (in-memory parts a merge
    /// absorbed). A marker in its directory tells recovery to delete it.
    pub fn remove(&mut self, name: &PartName) -> Option<Arc<Part>> {
        let p = self.active.remove(name)?;
        if !p.is_in_memory() {
            let marker = p.dir.join(OUTDATED_MARKER);
            if let Err(e) = fs::File::create(&marker).and_then(|f| f.sync_all()) {
                tracing::warn!(part = %name, error = %e, "cannot mark a removed part outdated");
            }
        }
        self.outdated.push((p.clone(), Instant::now()));
        Some(p)
    }

    /// The active part that contains `name` (itself, or a merge or mutation of it).
    pub fn covering(&self, name: &PartName) -> Option<&Arc<Part>> {
        self.active.iter().find(|(n, _)| n.contains(name)).map(|(_, p)| p)
    }

    /// Drops every active part of a partition (`DROP PARTITION`), making them outdated.
    pub fn drop_partition(&mut self, partition_id: &str) -> Vec<Arc<Part>> {
        let names: Vec<PartName> = self.active.keys().filter(|n| n.partition_id == partition_id).cloned().collect();
        let now = Instant::now();
        names
            .into_iter()
            .filter_map(|n| self.active.remove(&n))
            .inspect(|p| self.outdated.push((p.clone(), now)))
            .collect()
    }

    /// Takes a part found corrupted out of the active set and moves its files to
    /// `detached/broken_<name>` with the reason, so nothing reads it again. A
    /// replica then fetches the part from a peer.
    pub fn quarantine(&mut self, name: &PartName, reason: &str) -> Result<Arc<Part>> {
        let part = self.active.remove(name).ok_or_else(|| StorageError::PartNotActive(name.to_string()))?;
        tracing::error!(part = %name, reason, "corrupted part quarantined");
        if let Some(dir) = part.dir.parent().filter(|_| !part.is_in_memory()) {
            detach(dir, &part.dir, &name.to_string(), "broken", reason)?;
        }
        Ok(part)
    }

    /// Puts `stored`, the on-disk copy of an in-memory part, where that part
    /// is (active or outdated); false when the set no longer holds it.
    pub fn swap_stored(&mut self, stored: Arc<Part>) -> bool {
        if let Some(p) = self.active.get_mut(&stored.name) {
            if p.is_in_memory() {
                *p = stored;
            }
            return true;
        }
        match self.outdated.iter_mut().find(|(p, _)| p.name == stored.name && p.is_in_memory()) {
            Some((p, _)) => {
                *p = stored;
                true
            }
            None => false,
        }
    }

    /// Takes the outdated parts older than `grace` that no reader still holds.
    pub fn take_expired(&mut self, grace: Duration) -> Vec<Arc<Part>> {
        let now = Instant::now();
        let (expired, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.outdated)
            .into_iter()
            .partition(|(p, t)| now.duration_since(*t) >= grace && Arc::strong_count(p) == 1);
        self.outdated = keep;
        expired.into_iter().map(|(p, _)| p).collect()
    }
}

/// Deletes a part's directory crash-safely: renamed first, so a half-deleted
/// part can never be loaded as a part.
pub fn remove_part_files(part: &Part) -> Result<()> {
    let Some(parent) = part.dir.parent() else { return Ok(()) };
    if part.is_in_memory() && !part.dir.exists() {
        return Ok(());
    }
    let doomed = parent.join(format!("{DELETE_PREFIX}{}", part.name));
    fs::rename(&part.dir, &doomed).map_err(|e| StorageError::io(&part.dir, e))?;
    fs::remove_dir_all(&doomed).map_err(|e| StorageError::io(&doomed, e))
}

/// What [`recover`] found besides the active set.
#[derive(Debug, Default)]
pub struct RecoveryReport {
    /// Temp and half-deleted directories removed.
    pub removed_temp: Vec<String>,
    /// Parts moved to `detached/` with the reason.
    pub detached: Vec<(String, String)>,
    /// Covered parts deleted (outdated before the crash).
    pub removed_outdated: Vec<String>,
}

/// Rebuilds the active set from `dir` after a restart or crash: temp
/// directories are removed, parts that fail to load are moved to `detached/`
/// with a reason, and parts covered by another part are deleted.
pub fn recover(dir: &Path) -> Result<(PartSet, RecoveryReport)> {
    fs::create_dir_all(dir).map_err(|e| StorageError::io(dir, e))?;
    let mut report = RecoveryReport::default();
    let mut loaded: Vec<Part> = Vec::new();
    let entries = fs::read_dir(dir).map_err(|e| StorageError::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| StorageError::io(dir, e))?;
        let path = entry.path();
        let Some(file_name) = path.file_name().and_then(|n| n.to_str()).map(str::to_string) else { continue };
        if !path.is_dir() || file_name == DETACHED_DIR {
            continue;
        }
        if file_name.starts_with(TMP_PREFIX) || file_name.starts_with(DELETE_PREFIX) {
            fs::remove_dir_all(&path).map_err(|e| StorageError::io(&path, e))?;
            report.removed_temp.push(file_name);
            continue;
        }
        if file_name.parse::<PartName>().is_err() {
            detach(dir, &path, &file_name, "unexpected", "not a part name")?;
            report.detached.push((file_name, "not a part name".into()));
            continue;
        }
        if path.join(OUTDATED_MARKER).exists() {
            fs::remove_dir_all(&path).map_err(|e| StorageError::io(&path, e))?;
            report.removed_outdated.push(file_name);
            continue;
        }
        match Part::load(&path) {
            Ok(p) => loaded.push(p),
            Err(e) => {
                let reason = e.to_string();
                tracing::error!(part = %file_name, %reason, "broken part detached");
                detach(dir, &path, &file_name, "broken", &reason)?;
                report.detached.push((file_name, reason));
            }
        }
    }
    // Widest parts first, so a covering part is added before what it covers.
    loaded.sort_by(|a, b| {
        let (x, y) = (&a.name, &b.name);
        (
            &x.partition_id,
            x.min_block,
            std::cmp::Reverse(x.max_block),
            std::cmp::Reverse(x.level),
            std::cmp::Reverse(x.mutation),
        )
            .cmp(&(
                &y.partition_id,
                y.min_block,
                std::cmp::Reverse(y.max_block),
                std::cmp::Reverse(y.level),
                std::cmp::Reverse(y.mutation),
            ))
    });
    let mut set = PartSet::new();
    for part in loaded {
        let name = part.name.clone();
        if set.active.keys().any(|a| a.contains(&name)) {
            remove_part_files(&part)?;
            report.removed_outdated.push(name.to_string());
            continue;
        }
        let part = Arc::new(part);
        match set.add(part.clone()) {
            Ok(covered) => {
                for c in covered {
                    set.outdated.retain(|(p, _)| p.name != c.name);
                    remove_part_files(&c)?;
                    report.removed_outdated.push(c.name.to_string());
                }
            }
            Err(e) => {
                let reason = e.to_string();
                detach(dir, &part.dir, &name.to_string(), "intersecting", &reason)?;
                report.detached.push((name.to_string(), reason));
            }
        }
    }
    Ok((set, report))
}

/// Moves a directory to `detached/<prefix>_<name>` and records why.
fn detach(dir: &Path, path: &Path, name: &str, prefix: &str, reason: &str) -> Result<()> {
    let detached = dir.join(DETACHED_DIR);
    fs::create_dir_all(&detached).map_err(|e| StorageError::io(&detached, e))?;
    let mut target = detached.join(format!("{prefix}_{name}"));
    let mut n = 1;
    while target.exists() {
        target = detached.join(format!("{prefix}_{name}_try{n}"));
        n += 1;
    }
    fs::rename(path, &target).map_err(|e| StorageError::io(path, e))?;
    let _ = fs::write(target.join("detached_reason.txt"), reason);
    Ok(())
}
