//! Replication system tables: `system.replicas` (one row per replicated
//! table on this node), `system.replication_queue` (log entries this node
//! has not applied yet), `system.raft_groups` (one row per group hosted) and
//! `system.part_checksum_mismatches` (merge results whose bytes differed from
//! the leader's, and whether the leader's copy replaced them).

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, ListBuilder, StringArray, StringBuilder, UInt8Array, UInt64Array, UInt64Builder,
};
use arrow::datatypes::{DataType, Field};
use datafusion::catalog::TableProvider;
use datafusion::error::Result;
use replication::Command;

use super::catalog::Server;
use super::system::table_of;

/// The replication tables' names.
pub const TABLES: &[&str] = &["replicas", "replication_queue", "raft_groups", "part_checksum_mismatches"];

fn utf8(v: Vec<String>) -> ArrayRef {
    Arc::new(StringArray::from(v))
}

fn u64s(v: Vec<u64>) -> ArrayRef {
    Arc::new(UInt64Array::from(v))
}

fn s(name: &str) -> Field {
    Field::new(name, DataType::Utf8, false)
}

fn u(name: &str) -> Field {
    Field::new(name, DataType::UInt64, false)
}

fn list(name: &str, inner: DataType) -> Field {
    Field::new(name, DataType::List(Arc::new(Field::new("item", inner, true))), false)
}

/// One group as the tables see it.
struct GroupRow {
    db: String,
    table: String,
    group: Arc<replication::registry::Group>,
    metrics: replication::status::GroupStatus,
    pending: Vec<(u64, Command)>,
    committed: Option<u64>,
}

async fn groups(server: &Server) -> Vec<GroupRow> {
    let Some(node) = server.replication.started() else { return Vec::new() };
    let mut out = Vec::new();
    for g in node.groups() {
        let Some((db, table)) = g.spec.table.split_once('.') else { continue };
        let metrics = g.status();
        let pending = node.pending_entries(g.spec.group).await.unwrap_or_default();
        let committed = node.committed(g.spec.group);
        out.push(GroupRow { db: db.to_string(), table: table.to_string(), group: g, metrics, pending, committed });
    }
    out.sort_by(|a, b| {
        (&a.db, &a.table, &a.group.spec.partition_id).cmp(&(&b.db, &b.table, &b.group.spec.partition_id))
    });
    out
}

fn kind(c: &Command) -> &'static str {
    match c {
        Command::Insert { .. } => "GET_PART",
        Command::Merge { .. } => "MERGE_PARTS",
        Command::Mutate { .. } => "ALTER_METADATA",
        Command::MutatePart { .. } => "MUTATE_PART",
        Command::KillMutation { .. } => "KILL_MUTATION",
        Command::DropPartition { .. } => "DROP_RANGE",
        Command::Offload { .. } => "OFFLOAD",
        Command::CheckPart { .. } => "CHECK_PART",
        Command::Meta { .. } => "METADATA",
    }
}

fn new_part(index: u64, c: &Command) -> String {
    match c {
        Command::Insert { partition_id, .. } => format!("{partition_id}_{index}_{index}_0"),
        Command::Merge { sources, .. } => {
            let names: Vec<storage::PartName> = sources.iter().filter_map(|s| s.parse().ok()).collect();
            storage::PartName::merged(&names).map(|n| n.to_string()).unwrap_or_default()
        }
        Command::MutatePart { part, version } => {
            part.parse::<storage::PartName>().map(|n| n.mutated(*version).to_string()).unwrap_or_default()
        }
        _ => String::new(),
    }
}

/// Builds one of [`TABLES`].
pub async fn table(server: &Server, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
    let rows = groups(server).await;
    let me = server.replication.node_id();
    Ok(Some(match name {
        "replicas" => {
            let mut tables: std::collections::BTreeMap<(String, String), Vec<&GroupRow>> = Default::default();
            for r in &rows {
                tables.entry((r.db.clone(), r.table.clone())).or_default().push(r);
            }
            // Replicated tables without data yet have no groups but are replicas too.
            for (db, ts) in server.tables().iter() {
                for (t, engine) in ts {
                    if engine.kind() == query::table::EngineKind::Replicated {
                        tables.entry((db.clone(), t.clone())).or_default();
                    }
                }
            }
            let t: Vec<_> = tables.into_iter().collect();
            let paths: Vec<(String, String)> = t
                .iter()
                .map(|((d, n), _)| {
                    let create = server.table(d, n).ok().map(|t| t.create().clone());
                    create.and_then(|c| server.replica_path(d, &c).ok().flatten()).unwrap_or_default()
                })
                .collect();
            let agg = |f: &dyn Fn(&GroupRow) -> u64| -> ArrayRef {
                u64s(t.iter().map(|(_, gs)| gs.iter().map(|g| f(g)).sum()).collect())
            };
            let max = |f: &dyn Fn(&GroupRow) -> u64| -> ArrayRef {
                u64s(t.iter().map(|(_, gs)| gs.iter().map(|g| f(g)).max().unwrap_or(0)).collect())
            };
            let count = |k: &'static str| -> Box<dyn Fn(&GroupRow) -> u64> {
                Box::new(move |g: &GroupRow| g.pending.iter().filter(|(_, c)| kind(c) == k).count() as u64)
            };
            let total_replicas = |g: &GroupRow| g.group.spec.members.len() as u64;
            // Replicas the leader heard from within an election timeout; a
            // follower reports the replicas it knows of.
            let active = |g: &GroupRow| g.metrics.acknowledging.unwrap_or(g.group.spec.members.len() as u64);
            table_of(
                vec![
                    s("database"),
                    s("table"),
                    Field::new("is_leader", DataType::UInt8, false),
                    Field::new("is_readonly", DataType::UInt8, false),
                    u("total_replicas"),
                    u("active_replicas"),
                    u("log_max_index"),
                    u("log_pointer"),
                    u("absolute_delay"),
                    u("queue_size"),
                    u("inserts_in_queue"),
                    u("merges_in_queue"),
                    u("part_mutations_in_queue"),
                    s("last_queue_update_exception"),
                    u("groups"),
                    u("checksum_mismatches"),
                    s("zookeeper_path"),
                    s("replica_name"),
                ],
                vec![
                    utf8(t.iter().map(|((d, _), _)| d.clone()).collect()),
                    utf8(t.iter().map(|((_, n), _)| n.clone()).collect()),
                    Arc::new(UInt8Array::from(
                        t.iter()
                            .map(|(_, gs)| gs.iter().any(|g| g.metrics.leader == Some(me)) as u8)
                            .collect::<Vec<_>>(),
                    )),
                    // Never read-only: a table keeps serving reads without a leader.
                    Arc::new(UInt8Array::from(vec![0u8; t.len()])),
                    max(&total_replicas),
                    max(&active),
                    agg(&|g| g.metrics.last_log_index),
                    agg(&|g| g.metrics.last_applied),
                    u64s(vec![0; t.len()]),
                    agg(&|g| g.pending.len() as u64),
                    agg(&*count("GET_PART")),
                    agg(&*count("MERGE_PARTS")),
                    agg(&*count("MUTATE_PART")),
                    utf8(
                        t.iter()
                            .map(|(_, gs)| gs.iter().find_map(|g| g.group.last_error()).unwrap_or_default())
                            .collect(),
                    ),
                    u64s(t.iter().map(|(_, gs)| gs.len() as u64).collect()),
                    agg(&|g| g.group.replica.mismatches().0),
                    utf8(paths.iter().map(|p| p.0.clone()).collect()),
                    utf8(paths.iter().map(|p| p.1.clone()).collect()),
                ],
            )?
        }
        "replication_queue" => {
            let q: Vec<(&GroupRow, usize, &(u64, Command))> =
                rows.iter().flat_map(|r| r.pending.iter().enumerate().map(move |(i, e)| (r, i, e))).collect();
            let mut merge = ListBuilder::new(StringBuilder::new());
            for (_, _, (_, c)) in &q {
                if let Command::Merge { sources, .. } = c {
                    for p in sources {
                        merge.values().append_value(p);
                    }
                }
                merge.append(true);
            }
            table_of(
                vec![
                    s("database"),
                    s("table"),
                    s("replica_name"),
                    u("position"),
                    s("node_name"),
                    s("type"),
                    s("new_part_name"),
                    list("parts_to_merge", DataType::Utf8),
                    u("num_tries"),
                    s("last_exception"),
                    s("postpone_reason"),
                ],
                vec![
                    utf8(q.iter().map(|(r, _, _)| r.db.clone()).collect()),
                    utf8(q.iter().map(|(r, _, _)| r.table.clone()).collect()),
                    utf8(q.iter().map(|_| me.to_string()).collect()),
                    u64s(q.iter().map(|(_, i, _)| *i as u64).collect()),
                    utf8(q.iter().map(|(r, _, (idx, _))| format!("log-{}-{idx:010}", r.group.spec.group)).collect()),
                    utf8(q.iter().map(|(_, _, (_, c))| kind(c).to_string()).collect()),
                    utf8(q.iter().map(|(_, _, (idx, c))| new_part(*idx, c)).collect()),
                    Arc::new(merge.finish()),
                    // The head entry is being worked on; with an error, it has been retried.
                    u64s(
                        q.iter()
                            .map(|(r, i, _)| u64::from(*i == 0) + u64::from(*i == 0 && r.group.last_error().is_some()))
                            .collect(),
                    ),
                    utf8(
                        q.iter()
                            .map(
                                |(r, i, _)| {
                                    if *i == 0 { r.group.last_error().unwrap_or_default() } else { String::new() }
                                },
                            )
                            .collect(),
                    ),
                    utf8(
                        q.iter()
                            .map(|(r, i, idx)| {
                                if *i == 0 {
                                    String::new()
                                } else if r.committed.is_some_and(|c| idx.0 > c) {
                                    "not committed yet".into()
                                } else {
                                    "waiting for earlier entries".into()
                                }
                            })
                            .collect(),
                    ),
                ],
            )?
        }
        "raft_groups" => {
            let mut members = ListBuilder::new(UInt64Builder::new());
            for r in &rows {
                for m in &r.group.spec.members {
                    members.values().append_value(*m);
                }
                members.append(true);
            }
            table_of(
                vec![
                    u("group_id"),
                    s("database"),
                    s("table"),
                    s("partition_id"),
                    list("members", DataType::UInt64),
                    Field::new("leader", DataType::UInt64, true),
                    s("state"),
                    u("term"),
                    u("last_log_index"),
                    u("committed_index"),
                    u("applied_index"),
                    u("snapshot_index"),
                    u("purged_index"),
                    Field::new("quiesced", DataType::Boolean, false),
                ],
                vec![
                    u64s(rows.iter().map(|r| r.group.spec.group).collect()),
                    utf8(rows.iter().map(|r| r.db.clone()).collect()),
                    utf8(rows.iter().map(|r| r.table.clone()).collect()),
                    utf8(rows.iter().map(|r| r.group.spec.partition_id.clone()).collect()),
                    Arc::new(members.finish()),
                    Arc::new(UInt64Array::from(rows.iter().map(|r| r.metrics.leader).collect::<Vec<_>>())),
                    utf8(rows.iter().map(|r| r.metrics.state.clone()).collect()),
                    u64s(rows.iter().map(|r| r.metrics.term).collect()),
                    u64s(rows.iter().map(|r| r.metrics.last_log_index).collect()),
                    u64s(rows.iter().map(|r| r.committed.unwrap_or(0)).collect()),
                    u64s(rows.iter().map(|r| r.metrics.last_applied).collect()),
                    u64s(rows.iter().map(|r| r.metrics.snapshot_index).collect()),
                    u64s(rows.iter().map(|r| r.metrics.purged_index).collect()),
                    Arc::new(BooleanArray::from(rows.iter().map(|r| r.group.is_quiesced()).collect::<Vec<_>>())),
                ],
            )?
        }
        "part_checksum_mismatches" => {
            let m: Vec<(&GroupRow, replication::replica::Mismatch)> =
                rows.iter().flat_map(|r| r.group.replica.mismatches().1.into_iter().map(move |m| (r, m))).collect();
            table_of(
                vec![
                    s("database"),
                    s("table"),
                    s("part_name"),
                    Field::new("expected_crc32", DataType::UInt32, false),
                    Field::new("got_crc32", DataType::UInt32, false),
                    Field::new("repaired", DataType::Boolean, false),
                ],
                vec![
                    utf8(m.iter().map(|(r, _)| r.db.clone()).collect()),
                    utf8(m.iter().map(|(r, _)| r.table.clone()).collect()),
                    utf8(m.iter().map(|(_, x)| x.part.clone()).collect()),
                    Arc::new(arrow::array::UInt32Array::from(
                        m.iter().map(|(_, x)| x.expected_crc32).collect::<Vec<_>>(),
                    )),
                    Arc::new(arrow::array::UInt32Array::from(m.iter().map(|(_, x)| x.got_crc32).collect::<Vec<_>>())),
                    Arc::new(BooleanArray::from(m.iter().map(|(_, x)| x.repaired).collect::<Vec<_>>())),
                ],
            )?
        }
        _ => return Ok(None),
    }))
}
