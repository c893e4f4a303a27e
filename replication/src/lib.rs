//! Replication: the log commands, the state machine over storage, and the multi-raft registry (issue 5).

pub use storage;
