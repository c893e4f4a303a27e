//! The Raft log of every group on a node, in one RocksDB.

mod rocks;

pub use rocks::{GroupLogStore, LogDb, MetaTag};
pub(crate) use rocks::{decode, encode};
