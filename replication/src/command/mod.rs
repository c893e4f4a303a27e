//! The commands a group's log carries. Entries are small: part bytes travel
//! beside the log, only names, ids and checksums go through Raft — except the
//! files of a small inserted block (at most [`INLINE_MAX_BYTES`]), which ride
//! in its `Insert`: one log fsync on a majority then makes the insert durable,
//! instead of staging fsyncs on every replica before the proposal.
//!
//! Entries are stored as JSON behind a format byte (see
//! [`crate::log_store`]); fields added later must be `#[serde(default)]` so
//! logs written by older versions stay readable.

pub mod inline;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use storage::ReduceMode;
use storage::mutation::MutationCommand;
use storage::part::checksum::FileChecksum;

use crate::NodeId;

/// Largest staged part (all files) carried inside its `Insert` entry.
pub const INLINE_MAX_BYTES: u64 = 256 * 1024;

/// One log command of a partition-shard group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Command {
    /// A staged block becomes part `<partition_id>_<index>_<index>_0`, unless
    /// its `block_id` is inside the dedup window.
    Insert {
        block_id: String,
        /// Name of the staging directory holding the part on `holders`.
        staged_id: String,
        partition_id: String,
        rows: u64,
        /// Checksums of the staged part's files, checked by every replica.
        files: BTreeMap<String, FileChecksum>,
        /// Nodes that held the staged part durably when this was proposed.
        holders: Vec<NodeId>,
        /// The proposer's wall clock (seconds), so the time-based dedup window
        /// is the same on every replica.
        ts: i64,
        /// The staged part's files, base64, for a small block: every replica
        /// writes them itself, and the log is their durable copy until the
        /// replica's next checkpoint fsyncs them.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        inline: Option<BTreeMap<String, String>>,
        /// Ids of further inserted blocks whose rows this part also holds
        /// (group commit). If any id of the entry is inside the dedup window
        /// the whole entry is a no-op reported as [`Response::BatchRejected`],
        /// and the proposer proposes the others again.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        batched: Vec<String>,
    },
    /// Replace `sources` by the merge of them, run on every replica — or,
    /// with `merger` set (the table's
    /// `execute_merges_on_single_replica_time_threshold`), run on that node
    /// only while the others fetch its result, merging themselves if it has
    /// not appeared within the threshold.
    Merge {
        sources: Vec<String>,
        mode: ReduceMode,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        merger: Option<NodeId>,
    },
    /// A mutation whose version is this entry's index. Applying it only
    /// records it: the group's leader then assigns its parts one at a time
    /// ([`Command::MutatePart`]), and every replica rewrites them in the
    /// background.
    Mutate { commands: Vec<MutationCommand>, text: String, ts: i64 },
    /// Rewrite `part` in the background with every live mutation up to
    /// `version` it still needs, into `<part>_<version>` (ClickHouse's
    /// MUTATE_PART). Replicas swap the result in as they do a merge's, and
    /// the proposer follows with its checksums ([`Command::CheckPart`]).
    MutatePart { part: String, version: i64 },
    /// Stop a mutation: parts not yet assigned keep their data; a part whose
    /// rewrite keeps failing on this mutation is given up.
    KillMutation { version: i64 },
    /// Drop every part of a partition (covered by an empty part, as ClickHouse's DROP_RANGE).
    DropPartition { partition_id: String },
    /// Reserved for object-storage offload (issue 6): applying it is a no-op today.
    Offload { part: String, key: String },
    /// The leader's checksums of a merge result: a replica whose own result
    /// differs records the mismatch and replaces its part with `source`'s.
    CheckPart { part: String, files: BTreeMap<String, FileChecksum>, source: NodeId },
    /// An entry of the metadata group (the catalog's DDL), opaque here:
    /// only [`crate::meta_group`] applies it.
    Meta { entry: String },
}

/// What applying a command did, as the proposer reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Response {
    /// Membership and blank entries.
    #[default]
    None,
    /// The block became this part.
    Inserted { part: String },
    /// The block id was inside the dedup window: nothing was written.
    Deduplicated { block_id: String },
    /// A group-committed entry some of whose block ids are inside the dedup
    /// window: nothing was written.
    BatchRejected { duplicates: Vec<String> },
    /// The merge result (or a part covering it) is active; `files` are the
    /// checksums of the part named `part` here, when it is active.
    Merged {
        part: String,
        #[serde(default)]
        files: BTreeMap<String, FileChecksum>,
    },
    /// The mutation's version.
    Mutation { version: i64 },
    /// A metadata entry's outcome as its applier reported it.
    Meta { reply: std::result::Result<String, String> },
    /// The command was applied and changed nothing (a drop of an empty partition,
    /// a merge whose sources are gone).
    Done,
}
