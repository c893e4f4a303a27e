//! Staging: an inserted block is sorted and written as a part under the
//! group's `staging/<staged_id>/` and fsynced before anything is proposed;
//! the same bytes are pushed to the other replicas' staging areas. Only when
//! a majority holds them durably is the `Insert` proposed.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::RecordBatch;
use storage::PartName;
use storage::part::checksum::FileChecksum;
use storage::part::writer::{Durability, write_block_with};

use crate::NodeId;
use crate::error::{ReplicationError, Result};
use crate::replica::Replica;

static SEQ: AtomicU64 = AtomicU64::new(0);

/// A block written to this node's staging area.
#[derive(Debug, Clone)]
pub struct Staged {
    pub staged_id: String,
    /// The part directory inside `staging/<staged_id>/`.
    pub part_dir: PathBuf,
    pub rows: u64,
    pub files: BTreeMap<String, FileChecksum>,
}

/// A staging id unique across the cluster: node, wall clock, sequence.
pub fn new_staged_id(node: NodeId) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{node}-{nanos}-{}", SEQ.fetch_add(1, Ordering::Relaxed))
}

/// Sorts and writes one block of one partition into the staging area.
/// Staged parts are named with block 0, which no committed part has, so a
/// staged part can never be taken for a committed one.
pub fn stage_block(
    replica: &Replica,
    partition_id: &str,
    partition_value: Vec<String>,
    batch: &RecordBatch,
    durability: Durability,
) -> Result<Staged> {
    let staged_id = new_staged_id(replica.node);
    let parent = replica.staging_dir().join(&staged_id);
    std::fs::create_dir_all(&parent).map_err(|e| ReplicationError::io(&parent, e))?;
    let name = PartName::new_insert(partition_id, 0);
    let part = write_block_with(&replica.table, &parent, name, partition_value, batch, durability)?;
    Ok(Staged { staged_id, part_dir: part.dir.clone(), rows: part.meta.rows, files: part.meta.files.clone() })
}

/// A small block encoded in memory as the files of an inline `Insert`
/// (base64, metadata included) — nothing written to staging — or `None`
/// when its files together exceed `max` bytes. The `Staged` names no
/// directory: a staging id for the entry, the rows and the checksums.
pub fn encode_inline(
    replica: &Replica,
    partition_id: &str,
    partition_value: Vec<String>,
    batch: &RecordBatch,
    max: u64,
) -> Result<Option<(Staged, BTreeMap<String, String>)>> {
    let name = PartName::new_insert(partition_id, 0);
    let (meta, bytes) = storage::part::writer::encode_block(&replica.table, name, partition_value, batch)?;
    if meta.files.values().map(|f| f.size).sum::<u64>() > max {
        return Ok(None);
    }
    let staged = Staged {
        staged_id: new_staged_id(replica.node),
        part_dir: PathBuf::new(),
        rows: meta.rows,
        files: meta.files.clone(),
    };
    Ok(Some((staged, crate::command::inline::encode(&bytes))))
}
