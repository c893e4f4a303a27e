//! Tables as the statement executor sees them: a [`Table`] is a parsed
//! CREATE statement and the engine (`coordinator::engine`) that stores it;
//! [`EngineProvider`] shows it to DataFusion.

pub mod distributed;
mod mutation_text;
mod provider;

use std::sync::Arc;

pub use coordinator::engine::{
    EngineKind, InsertOptions, LocalEngine, MergeInfo, MutationInfo, MutationSync, OptimizeOptions, ReplicatedTable,
    TableEngine,
};
pub use mutation_text::{command_text, mutation_commands};
pub use provider::EngineProvider;

use crate::parse::CreateTable;

/// A table in the catalog: its definition and its engine.
#[derive(Debug)]
pub struct Table {
    create: CreateTable,
    engine: Arc<dyn TableEngine>,
}

impl Table {
    /// The table `create` defines, stored by `engine`.
    pub fn new(create: CreateTable, engine: Arc<dyn TableEngine>) -> Table {
        Table { create, engine }
    }

    /// The parsed CREATE statement the table was made with.
    pub fn create(&self) -> &CreateTable {
        &self.create
    }

    /// The engine, shared with readers that outlive a catalog lookup.
    pub fn engine(&self) -> &Arc<dyn TableEngine> {
        &self.engine
    }
}

impl std::ops::Deref for Table {
    type Target = dyn TableEngine;

    fn deref(&self) -> &Self::Target {
        self.engine.as_ref()
    }
}

/// Marks a query that must read through a read barrier, as a DataFusion
/// session-config extension seen by table scans.
#[derive(Debug, Default)]
pub struct SequentialConsistency;

/// `skip_unavailable_shards = 1`: a Distributed table's read leaves out a
/// shard with no reachable replica instead of failing.
#[derive(Debug, Default)]
pub struct SkipUnavailableShards;

/// `optimize_skip_unused_shards = 1`: a Distributed read whose filters pin
/// the sharding key asks only the shards those values go to.
#[derive(Debug, Default)]
pub struct SkipUnusedShards;

/// `load_balancing` and `prefer_localhost_replica` of a query, for its
/// Distributed reads.
#[derive(Debug, Default)]
pub struct ReplicaChoice(pub coordinator::engine::distributed::ReplicaOrder);
