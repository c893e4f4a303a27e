//! Typed errors of the storage engine. The protocol boundary maps them to
//! ClickHouse-style codes; [`StorageError::code`] gives the stable code here so
//! every front end maps them the same way.

use std::path::PathBuf;

/// Result alias for the storage crate.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// Everything the storage engine can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Parquet error in {context}: {source}")]
    Parquet {
        context: String,
        #[source]
        source: parquet::errors::ParquetError,
    },
    #[error("Arrow error: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("{0}")]
    DataFusion(#[from] datafusion::error::DataFusionError),
    #[error("Invalid part name '{0}'")]
    BadPartName(String),
    #[error("Part {part} is corrupted: {reason}")]
    CorruptedPart { part: String, reason: String },
    #[error("Part {new} intersects active part {existing}: neither covers the other")]
    IntersectingParts { new: String, existing: String },
    #[error("Part {0} is not active")]
    PartNotActive(String),
    #[error("Part {part} does not cover {source_part}")]
    DoesNotCover { part: String, source_part: String },
    #[error("Part {part} would cover active part {other}, which is not one of its sources: its rows would be lost")]
    CoversOtherPart { part: String, other: String },
    #[error(
        "Too many parts ({parts}) in partition {partition}. Merges are processing significantly slower than inserts"
    )]
    TooManyParts { partition: String, parts: usize },
    #[error("Cannot compile expression '{expr}': {reason}")]
    BadExpression { expr: String, reason: String },
    #[error("Cannot UPDATE key column `{0}`")]
    UpdateKeyColumn(String),
    #[error("There is no column `{0}` in table")]
    NoSuchColumn(String),
    #[error("Invalid table definition: {0}")]
    BadTable(String),
    #[error("Bad aggregate state: {0}")]
    BadAggregateState(String),
    #[error("{path} is corrupted: {reason}")]
    CorruptedFile { path: PathBuf, reason: String },
    #[error("simulated crash at failpoint {0}")]
    SimulatedCrash(&'static str),
}

impl StorageError {
    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StorageError::Io { path: path.into(), source }
    }

    /// Wraps a Parquet error with what was being done.
    pub fn parquet(context: impl Into<String>, source: parquet::errors::ParquetError) -> Self {
        StorageError::Parquet { context: context.into(), source }
    }

    /// Whether the disk is full (ENOSPC), directly or under a Parquet writer.
    pub fn out_of_space(&self) -> bool {
        let full = |e: &std::io::Error| e.kind() == std::io::ErrorKind::StorageFull || e.raw_os_error() == Some(28);
        match self {
            StorageError::Io { source, .. } => full(source),
            StorageError::Parquet { source: parquet::errors::ParquetError::External(inner), .. } => {
                inner.downcast_ref::<std::io::Error>().is_some_and(full)
            }
            _ => false,
        }
    }

    /// ClickHouse error code and name for this error.
    pub fn code(&self) -> (u32, &'static str) {
        if self.out_of_space() {
            return (243, "NOT_ENOUGH_SPACE");
        }
        match self {
            StorageError::Io { .. } => (1001, "STD_EXCEPTION"),
            StorageError::Parquet { .. } => (1002, "UNKNOWN_EXCEPTION"),
            StorageError::Arrow(_) | StorageError::DataFusion(_) => (1002, "UNKNOWN_EXCEPTION"),
            StorageError::BadPartName(_) => (233, "BAD_DATA_PART_NAME"),
            StorageError::CorruptedPart { .. } => (40, "CHECKSUM_DOESNT_MATCH"),
            StorageError::IntersectingParts { .. } => (49, "LOGICAL_ERROR"),
            StorageError::PartNotActive(_)
            | StorageError::DoesNotCover { .. }
            | StorageError::CoversOtherPart { .. } => (49, "LOGICAL_ERROR"),
            StorageError::TooManyParts { .. } => (252, "TOO_MANY_PARTS"),
            StorageError::BadExpression { .. } => (36, "BAD_ARGUMENTS"),
            StorageError::UpdateKeyColumn(_) => (420, "CANNOT_UPDATE_COLUMN"),
            StorageError::NoSuchColumn(_) => (16, "NO_SUCH_COLUMN_IN_TABLE"),
            StorageError::BadTable(_) => (36, "BAD_ARGUMENTS"),
            StorageError::BadAggregateState(_) => (117, "INCORRECT_DATA"),
            StorageError::CorruptedFile { .. } => (246, "CORRUPTED_DATA"),
            StorageError::SimulatedCrash(_) => (1002, "UNKNOWN_EXCEPTION"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A full disk is NOT_ENOUGH_SPACE (243), as in ClickHouse, whether the
    /// write failed in our code or inside the Parquet writer.
    #[test]
    fn a_full_disk_is_not_enough_space() {
        let enospc = || std::io::Error::from_raw_os_error(28);
        assert_eq!(StorageError::io("/x", enospc()).code(), (243, "NOT_ENOUGH_SPACE"));
        let pq = StorageError::parquet(
            "writing part all_1_1_0",
            parquet::errors::ParquetError::External(Box::new(enospc())),
        );
        assert_eq!(pq.code(), (243, "NOT_ENOUGH_SPACE"));
        assert_eq!(StorageError::io("/x", std::io::Error::other("boom")).code(), (1001, "STD_EXCEPTION"));
    }
}
