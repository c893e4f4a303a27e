//! Planning: ClickHouse's SQL functions rewritten onto DataFusion's before
//! planning.

pub mod count;
pub mod fast_agg;
pub mod functions;
pub mod numbers;
pub mod planner;
pub mod shard_agg;
pub mod truthiness;
