//! Stored aggregate states for AggregatingMergeTree: a column of type
//! `AggregateFunction(f, T)` is Arrow Binary whose field metadata
//! [`AGG_META_KEY`] names `f`; every value is one serialized [`AggState`].
//! Merges combine the states of rows with equal sorting keys.

mod state;

pub use state::{AggState, Value};

use arrow::array::{Array, ArrayRef, BinaryArray, BinaryBuilder};
use arrow::datatypes::{DataType, Field};

use crate::error::{Result, StorageError};

/// Field metadata key naming the aggregate function of a state column.
pub const AGG_META_KEY: &str = "shardhouse.aggregate_function";

/// Aggregate functions whose states storage can merge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AggregateFunction {
    Sum,
    Min,
    Max,
    Count,
    Avg,
    Any,
    AnyLast,
    UniqExact,
    GroupBitmap,
}

impl AggregateFunction {
    /// Parses a ClickHouse aggregate function name (`uniqExact`, `sum`, …).
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "sum" => Self::Sum,
            "min" => Self::Min,
            "max" => Self::Max,
            "count" => Self::Count,
            "avg" => Self::Avg,
            "any" => Self::Any,
            "anyLast" => Self::AnyLast,
            "uniqExact" => Self::UniqExact,
            "groupBitmap" => Self::GroupBitmap,
            _ => return None,
        })
    }

    /// The ClickHouse name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sum => "sum",
            Self::Min => "min",
            Self::Max => "max",
            Self::Count => "count",
            Self::Avg => "avg",
            Self::Any => "any",
            Self::AnyLast => "anyLast",
            Self::UniqExact => "uniqExact",
            Self::GroupBitmap => "groupBitmap",
        }
    }

    /// The aggregate function of a state column, if the field is one.
    pub fn from_field(f: &Field) -> Result<Option<Self>> {
        let Some(name) = f.metadata().get(AGG_META_KEY) else { return Ok(None) };
        if f.data_type() != &DataType::Binary {
            return Err(StorageError::BadTable(format!("aggregate state column `{}` must be Binary", f.name())));
        }
        let func = Self::parse(name).ok_or_else(|| {
            StorageError::BadTable(format!("unsupported aggregate function {name} in column `{}`", f.name()))
        })?;
        Ok(Some(func))
    }

    /// A state column field named `name` for this function.
    pub fn field(self, name: &str) -> Field {
        Field::new(name, DataType::Binary, false)
            .with_metadata([(AGG_META_KEY.to_string(), self.name().to_string())].into_iter().collect())
    }

    /// Builds one state per row from plain values (what `fState(x)` does).
    pub fn states_from_values(self, values: &ArrayRef) -> Result<ArrayRef> {
        let mut b = BinaryBuilder::new();
        for i in 0..values.len() {
            let mut s = AggState::new(self);
            s.add(&Value::from_array(values, i)?)?;
            b.append_value(s.to_bytes());
        }
        Ok(std::sync::Arc::new(b.finish()))
    }

    /// Merges the states of `rows` of a state column into one serialized state.
    pub fn merge_rows(self, col: &BinaryArray, rows: impl Iterator<Item = usize>) -> Result<Vec<u8>> {
        let mut acc = AggState::new(self);
        for r in rows {
            if col.is_null(r) {
                continue;
            }
            acc.merge(&AggState::from_bytes(self, col.value(r))?)?;
        }
        Ok(acc.to_bytes())
    }
}
