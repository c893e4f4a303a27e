//! Query: the ClickHouse SQL dialect, DataFusion integration and the front ends (issue 4).

pub use coordinator;
