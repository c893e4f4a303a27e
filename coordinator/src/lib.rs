//! Coordinator: the catalog group, placement, and distributed insert routing.

pub use replication;
