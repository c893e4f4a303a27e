//! Merges: choosing parts ([`selector`]), the streaming k-way merge ([`kway`]),
//! each engine's rules ([`engine`]) and running a merge into a new part.

pub mod engine;
pub mod kway;
pub mod selector;

use std::path::Path;
use std::sync::Arc;

use crate::error::{Result, StorageError};
use crate::failpoint;
use crate::part::Part;
use crate::part::name::PartName;
use crate::part::writer::PartWriter;
use crate::table::Table;
pub use engine::ReduceMode;

/// Merges `sources` (in block order) into one new part under `parent`. The
/// sources stay untouched; the caller swaps them for the result in its part set.
pub fn merge_parts(table: &Arc<Table>, parent: &Path, sources: &[Arc<Part>], mode: ReduceMode) -> Result<Part> {
    let names: Vec<PartName> = sources.iter().map(|p| p.name.clone()).collect();
    let result = PartName::merged(&names)
        .ok_or_else(|| StorageError::BadTable("merge sources must be non-empty and of one partition".into()))?;
    let mut sources = sources.to_vec();
    sources.sort_by(|a, b| a.name.cmp(&b.name));
    let partition_value = sources[0].meta.partition_value.clone();
    let keep_runs = engine::needs_runs(table, mode);
    let chunk_rows = table.def.settings.merge_batch_rows;
    let merger = kway::KWayMerge::new(table.clone(), &sources, None, chunk_rows, keep_runs)?;
    let blocks = sources.iter().map(|p| p.meta.blocks).sum::<Option<u64>>();
    let mut w = PartWriter::create(table, parent, result, "merge")?.with_blocks(blocks);
    for chunk in merger {
        let out = engine::reduce(table, chunk?, mode)?;
        w.write(&out)?;
        if let Err(e) = failpoint::hit("merge:mid") {
            // A crash leaves the temp directory behind; don't let Drop tidy it.
            std::mem::forget(w);
            return Err(e);
        }
    }
    w.finish(partition_value, None)
}
