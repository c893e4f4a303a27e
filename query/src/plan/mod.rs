//! Planning: ClickHouse's SQL functions rewritten onto DataFusion's before
//! planning.

pub mod count;
pub mod functions;
