//! Giving a finished part a new name: a replicated insert is written and
//! fsynced under a staging name before its block number (the Raft log index of
//! its commit) is known, then adopted as `<partition>_<index>_<index>_0`.
//! The data files are hard-linked, never copied, and only the metadata is
//! rewritten, so adopting is cheap and the staged copy stays valid until the
//! adopted part is durably in place.

use std::fs;
use std::path::Path;

use super::Part;
use super::meta::{META_FILE, PartMeta};
use super::name::PartName;
use super::writer::{Durability, TMP_PREFIX, publish_with, sync_dir, write_file};
use crate::error::{Result, StorageError};

/// Publishes the part in `src` under `parent` as `name`. Idempotent: when
/// `name` already exists and loads, it is kept (a command re-applied after a
/// restart). `src` is left untouched.
pub fn adopt_part(src: &Path, parent: &Path, name: &PartName) -> Result<Part> {
    adopt_part_with(src, parent, name, Durability::Synced)
}

/// The metadata of a part renamed to `name`.
fn rename_meta(meta: &mut PartMeta, name: &PartName) {
    meta.name = name.to_string();
    meta.min_block = name.min_block;
    meta.max_block = name.max_block;
    meta.level = name.level;
    meta.data_version = name.data_version();
}

/// A part given as its files' bytes (`meta.json` included, under the staged
/// name `<partition>_0_0_0`, the others matching `checksums`) as the
/// in-memory part `name` under `parent` (see [`Part::in_memory`]): nothing is
/// written; [`write_in_memory`] writes it out if it is still needed.
pub fn adopt_in_memory(
    files: &std::collections::BTreeMap<String, Vec<u8>>,
    checksums: &std::collections::BTreeMap<String, super::checksum::FileChecksum>,
    parent: &Path,
    name: &PartName,
) -> Result<Part> {
    let bad = |reason: String| StorageError::CorruptedPart { part: name.to_string(), reason };
    let meta_bytes = files.get(META_FILE).ok_or_else(|| bad("no metadata".into()))?;
    let staged = PartName::new_insert(&name.partition_id, 0);
    let mut meta = PartMeta::decode(&staged.to_string(), meta_bytes)?;
    if meta.partition_id != name.partition_id || meta.files != *checksums {
        return Err(bad(format!("metadata of partition {} does not match what was sent", meta.partition_id)));
    }
    rename_meta(&mut meta, name);
    let mut mem = std::collections::BTreeMap::new();
    for file in checksums.keys() {
        if file.contains('/') || file.contains("..") || file == META_FILE {
            return Err(bad(format!("file name {file:?}")));
        }
        let bytes = files.get(file).ok_or_else(|| bad(format!("file {file} missing")))?;
        mem.insert(file.clone(), bytes::Bytes::copy_from_slice(bytes));
    }
    Part::in_memory(parent.join(name.to_string()), meta, mem)
}

/// Writes an in-memory part's files to its directory, fsynced, and returns
/// the part as loaded from there (already there: loaded as it is).
pub fn write_in_memory(part: &Part) -> Result<Part> {
    let bad = |reason: &str| StorageError::CorruptedPart { part: part.name.to_string(), reason: reason.into() };
    let files = part.mem_files().ok_or_else(|| bad("not an in-memory part"))?;
    let parent = part.dir.parent().ok_or_else(|| bad("no parent directory"))?;
    if let Some(p) = existing(parent, &part.name) {
        return Ok(p);
    }
    let tmp = fresh_tmp(parent, &part.name)?;
    for (file, bytes) in files.iter() {
        write_file(&tmp.join(file), bytes, true)?;
    }
    let stored = finish(&tmp, part.meta.clone(), parent, &part.name, Durability::Synced)?;
    stored.mark_verified();
    Ok(stored)
}

/// [`adopt_part`] with a choice of [`Durability`].
pub fn adopt_part_with(src: &Path, parent: &Path, name: &PartName, durability: Durability) -> Result<Part> {
    if let Some(p) = existing(parent, name) {
        return Ok(p);
    }
    let src_name = src.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
    let meta = PartMeta::read(src, &src_name)?;
    if meta.partition_id != name.partition_id {
        return Err(StorageError::BadTable(format!(
            "cannot adopt part {src_name} of partition {} as {name}",
            meta.partition_id
        )));
    }
    let tmp = fresh_tmp(parent, name)?;
    for file in meta.files.keys() {
        let (from, to) = (src.join(file), tmp.join(file));
        fs::hard_link(&from, &to)
            .or_else(|_| fs::copy(&from, &to).map(|_| ()))
            .map_err(|e| StorageError::io(&to, e))?;
    }
    finish(&tmp, meta, parent, name, durability)
}

/// The part already published as `name` (a command re-applied after a restart).
fn existing(parent: &Path, name: &PartName) -> Option<Part> {
    let dir = parent.join(name.to_string());
    if dir.exists() { Part::load(&dir).ok() } else { None }
}

/// An empty temp directory to assemble the adopted part in.
fn fresh_tmp(parent: &Path, name: &PartName) -> Result<std::path::PathBuf> {
    let tmp = parent.join(format!("{TMP_PREFIX}adopt_{name}"));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(|e| StorageError::io(&tmp, e))?;
    }
    fs::create_dir_all(&tmp).map_err(|e| StorageError::io(&tmp, e))?;
    Ok(tmp)
}

/// Writes the renamed metadata into `tmp` and publishes it as `name`.
fn finish(tmp: &Path, mut meta: PartMeta, parent: &Path, name: &PartName, durability: Durability) -> Result<Part> {
    let sync = durability == Durability::Synced;
    rename_meta(&mut meta, name);
    write_file(&tmp.join(META_FILE), &meta.encode(), sync)?;
    if sync {
        sync_dir(tmp)?;
    }
    let final_dir = parent.join(name.to_string());
    publish_with(tmp, &final_dir, parent, durability)?;
    Part::load(&final_dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::part::writer::write_block;
    use crate::table::{Engine, MergeTreeSettings, TableDef};
    use arrow::array::{Int64Array, RecordBatch};
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    #[test]
    fn adopted_part_has_new_name_same_data_and_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, false)]));
        let table = crate::Table::new(TableDef {
            schema: schema.clone(),
            engine: Engine::MergeTree,
            partition_by: None,
            order_by: vec!["a".into()],
            settings: MergeTreeSettings::default(),
        })
        .unwrap();
        let batch = RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![3, 1, 2]))]).unwrap();
        let staging = dir.path().join("staging");
        fs::create_dir_all(&staging).unwrap();
        let staged = write_block(&table, &staging, PartName::new_insert("all", 1), vec![], &batch).unwrap();
        let parts = dir.path().join("parts");
        fs::create_dir_all(&parts).unwrap();
        let name = PartName::new_insert("all", 17);
        let p = adopt_part(&staged.dir, &parts, &name).unwrap();
        assert_eq!(p.name, name);
        assert_eq!(p.meta.min_block, 17);
        p.verify().unwrap();
        assert_eq!(crate::part::reader::read_all(&p).unwrap()[0].num_rows(), 3);
        // Re-applying keeps the existing part.
        let again = adopt_part(&staged.dir, &parts, &name).unwrap();
        assert_eq!(again.meta, p.meta);
        assert!(staged.dir.exists());
    }

    /// A part encoded in memory (a small insert's log entry) adopts as the
    /// same data as the part written to disk from the same block.
    #[test]
    fn part_encoded_in_memory_adopts_with_the_data_written_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, false)]));
        let def = TableDef {
            schema: schema.clone(),
            engine: Engine::MergeTree,
            partition_by: None,
            order_by: vec!["a".into()],
            settings: MergeTreeSettings::default(),
        };
        let table = crate::Table::new(def).unwrap();
        let batch = RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![5, 3, 9, 1]))]).unwrap();
        let staged = PartName::new_insert("all", 0);
        let (meta, bytes) = crate::part::writer::encode_block(&table, staged.clone(), vec![], &batch).unwrap();
        assert_eq!(meta.rows, 4);
        let on_disk = write_block(&table, dir.path(), staged, vec![], &batch).unwrap();
        assert_eq!(
            bytes[crate::part::meta::DATA_FILE],
            fs::read(on_disk.dir.join(crate::part::meta::DATA_FILE)).unwrap()
        );
        assert_eq!(meta.files, on_disk.meta.files);
        let parts = dir.path().join("parts");
        fs::create_dir_all(&parts).unwrap();
        let name = PartName::new_insert("all", 7);
        let p = write_in_memory(&adopt_in_memory(&bytes, &meta.files, &parts, &name).unwrap()).unwrap();
        p.verify().unwrap();
        assert_eq!(p.meta.rows, 4);
        let rows = crate::part::reader::read_all(&p).unwrap();
        let a = rows[0].column(0).as_any().downcast_ref::<Int64Array>().unwrap();
        assert_eq!(a.values(), &[1, 3, 5, 9]);

        // Kept in memory: nothing on disk, the same rows, written out on demand.
        let name = PartName::new_insert("all", 8);
        let m = adopt_in_memory(&bytes, &meta.files, &parts, &name).unwrap();
        assert!(m.is_in_memory() && !m.dir.exists());
        m.verify().unwrap();
        assert_eq!(m.meta.min_block, 8);
        assert_eq!(crate::part::reader::read_all(&m).unwrap(), rows);
        crate::part_set::remove_part_files(&m).unwrap();
        let stored = write_in_memory(&m).unwrap();
        assert!(!stored.is_in_memory() && stored.dir.exists());
        stored.verify().unwrap();
        assert_eq!(stored.meta, m.meta);
        assert_eq!(crate::part::reader::read_all(&stored).unwrap(), rows);
        // A bit flipped in transit is caught before the part exists.
        let mut bad = bytes.clone();
        bad.get_mut(crate::part::meta::DATA_FILE).unwrap()[10] ^= 1;
        assert!(adopt_in_memory(&bad, &meta.files, &parts, &PartName::new_insert("all", 9)).is_err());
    }
}
