//! The versioned metadata file of a part (`meta.json`): what the part holds and
//! the checksum of every file, followed by a CRC32 of the metadata itself.
//!
//! Layout: one line of JSON, then `crc32 <8 hex digits>\n` over that line's bytes.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::checksum::FileChecksum;
use crate::error::{Result, StorageError};

/// Current metadata format version. Readers accept every version up to this.
pub const META_FORMAT_VERSION: u32 = 1;
/// File name of the metadata inside a part directory.
pub const META_FILE: &str = "meta.json";
/// File name of the column data inside a part directory.
pub const DATA_FILE: &str = "data.parquet";
/// File name of the lightweight-delete row mask (a roaring bitmap of row offsets).
pub const MASK_FILE: &str = "row_mask.bin";

/// One column's type and, for key and partition columns, its min and max as
/// text (parsed back with the column's type).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnMeta {
    pub name: String,
    pub data_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<String>,
}

/// Everything known about a part without reading its data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartMeta {
    pub format_version: u32,
    pub name: String,
    pub partition_id: String,
    /// The partition key's values, as text (`system.parts.partition`).
    pub partition_value: Vec<String>,
    /// Rows in the data file, masked ones included.
    pub rows: u64,
    /// Rows hidden by the lightweight-delete mask.
    pub masked_rows: u64,
    pub bytes_on_disk: u64,
    pub uncompressed_bytes: u64,
    pub min_block: i64,
    pub max_block: i64,
    pub level: u32,
    pub data_version: i64,
    pub columns: Vec<ColumnMeta>,
    pub files: BTreeMap<String, FileChecksum>,
    pub modification_time_ms: i64,
    /// How many inserted blocks' rows the part holds: 1 for an inserted
    /// part, the sum of its sources for a merge, its source's for a
    /// mutation, 0 for the empty part a drop leaves. A replica checks its
    /// parts' blocks against the blocks committed to it (see the
    /// replication crate's invariant), which catches a part whose name
    /// claims blocks whose rows it lacks. `None` in parts written before
    /// the count existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocks: Option<u64>,
}

impl PartMeta {
    /// Live rows: what a read returns.
    pub fn live_rows(&self) -> u64 {
        self.rows - self.masked_rows
    }

    /// The metadata file's bytes.
    pub fn encode(&self) -> Vec<u8> {
        // Serializing plain data to JSON cannot fail.
        let body = serde_json::to_string(self).unwrap_or_default();
        let crc = crc32fast::hash(body.as_bytes());
        format!("{body}\ncrc32 {crc:08x}\n").into_bytes()
    }

    /// Parses and checks a metadata file's bytes; `part` names the part in errors.
    pub fn decode(part: &str, bytes: &[u8]) -> Result<PartMeta> {
        let corrupt = |reason: String| StorageError::CorruptedPart { part: part.to_string(), reason };
        let text = std::str::from_utf8(bytes).map_err(|_| corrupt("meta.json is not UTF-8".into()))?;
        let (body, trailer) = text.split_once('\n').ok_or_else(|| corrupt("meta.json has no checksum line".into()))?;
        let want = trailer
            .strip_suffix('\n')
            .and_then(|t| t.strip_prefix("crc32 "))
            .filter(|h| h.len() == 8)
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .ok_or_else(|| corrupt("meta.json checksum line is malformed".into()))?;
        let got = crc32fast::hash(body.as_bytes());
        if got != want {
            return Err(corrupt(format!("meta.json checksum mismatch: expected {want:08x}, got {got:08x}")));
        }
        let meta: PartMeta =
            serde_json::from_str(body).map_err(|e| corrupt(format!("meta.json does not parse: {e}")))?;
        if meta.format_version == 0 || meta.format_version > META_FORMAT_VERSION {
            return Err(corrupt(format!("unsupported meta format version {}", meta.format_version)));
        }
        if meta.name != part {
            return Err(corrupt(format!("meta.json names part {}", meta.name)));
        }
        Ok(meta)
    }

    /// Reads and checks `dir/meta.json`.
    pub fn read(dir: &Path, part: &str) -> Result<PartMeta> {
        let path = dir.join(META_FILE);
        let bytes = std::fs::read(&path).map_err(|e| StorageError::CorruptedPart {
            part: part.to_string(),
            reason: format!("cannot read meta.json: {e}"),
        })?;
        Self::decode(part, &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> PartMeta {
        PartMeta {
            format_version: META_FORMAT_VERSION,
            name: "all_1_1_0".into(),
            partition_id: "all".into(),
            partition_value: vec![],
            rows: 3,
            masked_rows: 0,
            bytes_on_disk: 10,
            uncompressed_bytes: 20,
            min_block: 1,
            max_block: 1,
            level: 0,
            data_version: 1,
            columns: vec![ColumnMeta {
                name: "a".into(),
                data_type: "Int64".into(),
                min: Some("1".into()),
                max: Some("3".into()),
            }],
            files: [("data.parquet".to_string(), FileChecksum { size: 10, crc32: 7 })].into_iter().collect(),
            modification_time_ms: 0,
            blocks: None,
        }
    }

    #[test]
    fn round_trip_and_every_flipped_byte_is_detected() {
        let m = sample();
        let bytes = m.encode();
        assert_eq!(PartMeta::decode("all_1_1_0", &bytes).unwrap(), m);
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x01;
            assert!(PartMeta::decode("all_1_1_0", &b).is_err(), "flip at {i} not detected");
        }
    }

    /// The version-1 layout, written by the first release; must stay readable.
    #[test]
    fn reads_version_1_fixture() {
        let fixture = include_bytes!("../../tests/fixtures/meta_v1.json");
        let m = PartMeta::decode("201306_1_1_0", fixture).unwrap();
        assert_eq!(m.format_version, 1);
        assert_eq!(m.rows, 2);
    }
}
