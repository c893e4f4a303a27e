//! shardhouse's storage engine: the MergeTree model on one node.
//!
//! * [`part`] — immutable sorted parts (Parquet data + versioned metadata);
//! * [`part_set`] — the active parts of one partition-shard, as a value a Raft
//!   state machine can own, and its recovery from disk;
//! * [`merge`] — merge selection, the streaming k-way merge and each engine's rules;
//! * [`mutation`] — ALTER DELETE/UPDATE rewrites and lightweight-delete masks;
//! * [`scan`] — reads with pruning and FINAL;
//! * [`expr`] — table expressions compiled with DataFusion, ClickHouse functions;
//! * [`local`] — the one-node MergeTree engine (a table's parts in one directory).
//!
//! No Raft and no networking live here.

pub mod agg;
pub mod background;
pub mod backpressure;
pub mod cpu;
pub mod dedup;
pub mod error;
pub mod expr;
pub mod failpoint;
pub mod local;
pub mod merge;
pub mod mutation;
pub mod part;
pub mod part_set;
pub mod partition;
pub mod pruning;
pub mod scan;
pub mod table;

pub use error::{Result, StorageError};
pub use merge::ReduceMode;
pub use part::Part;
pub use part::name::PartName;
pub use part_set::PartSet;
pub use table::{Engine, MergeTreeSettings, Table, TableDef};

/// The cores this process may use, asked once: `available_parallelism`
/// reads cgroup files on every call, which showed in profiles of small
/// inserts (each part write asked it).
pub fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}
