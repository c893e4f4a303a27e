//! Planning: ClickHouse's SQL functions rewritten onto DataFusion's before
//! planning.

pub mod functions;
pub mod count;
