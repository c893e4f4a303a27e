//! System tables, built from the server's state when a query reads them:
//! `one`, `numbers`, `databases`, `tables`, `columns`, `parts`, `settings`,
//! `merges`, `mutations` (this replica's progress) and `query_log`; the
//! replication tables are in `system_replication`.

use std::sync::{Arc, Weak};

use arrow::array::{
    ArrayRef, Float64Array, Int64Array, ListBuilder, RecordBatch, StringArray, StringBuilder, TimestampSecondArray,
    UInt8Array, UInt32Array, UInt64Array,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use async_trait::async_trait;
use datafusion::catalog::{MemTable, SchemaProvider, TableProvider};
use datafusion::error::{DataFusionError, Result};

use super::catalog::Server;

const TABLES: &[&str] =
    &["one", "numbers", "databases", "tables", "columns", "parts", "settings", "merges", "mutations", "query_log"];

/// The `system` database.
#[derive(Debug)]
pub struct SystemSchema {
    pub server: Weak<Server>,
}

fn utf8(v: Vec<String>) -> ArrayRef {
    Arc::new(StringArray::from(v))
}

pub(crate) fn table_of(fields: Vec<Field>, cols: Vec<ArrayRef>) -> Result<Arc<dyn TableProvider>> {
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(schema.clone(), cols)?;
    Ok(Arc::new(MemTable::try_new(schema, vec![vec![batch]])?))
}

fn s(name: &str) -> Field {
    Field::new(name, DataType::Utf8, false)
}

fn all_tables(server: &Server) -> Vec<(String, String, Arc<query::table::Table>)> {
    server
        .tables()
        .iter()
        .flat_map(|(db, ts)| ts.iter().map(move |(n, t)| (db.clone(), n.clone(), t.clone())))
        .collect()
}

fn build(server: &Server, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
    Ok(Some(match name {
        "one" => {
            table_of(vec![Field::new("dummy", DataType::UInt8, false)], vec![Arc::new(UInt8Array::from(vec![0u8]))])?
        }
        "databases" => {
            let mut names: Vec<String> = server.tables().keys().cloned().collect();
            names.push("system".into());
            names.sort();
            let n = names.len();
            let dir = server.data_dir.display().to_string();
            table_of(
                vec![s("name"), s("engine"), s("data_path"), s("metadata_path")],
                vec![
                    utf8(names.clone()),
                    utf8(vec!["Atomic".into(); n]),
                    utf8(names.iter().map(|d| format!("{dir}/data/{d}/")).collect()),
                    utf8(names.iter().map(|d| format!("{dir}/metadata/{d}/")).collect()),
                ],
            )?
        }
        "tables" => {
            let ts = all_tables(server);
            fn create(t: &Arc<query::table::Table>) -> &query::parse::CreateTable {
                t.create()
            }
            let rows: Vec<u64> = ts.iter().map(|(_, _, t)| t.snapshot().iter().map(|p| p.live_rows()).sum()).collect();
            let bytes: Vec<u64> =
                ts.iter().map(|(_, _, t)| t.snapshot().iter().map(|p| p.meta.bytes_on_disk).sum()).collect();
            table_of(
                vec![
                    s("database"),
                    s("name"),
                    s("engine"),
                    s("partition_key"),
                    s("sorting_key"),
                    s("primary_key"),
                    Field::new("total_rows", DataType::UInt64, false),
                    Field::new("total_bytes", DataType::UInt64, false),
                    s("create_table_query"),
                ],
                vec![
                    utf8(ts.iter().map(|(d, _, _)| d.clone()).collect()),
                    utf8(ts.iter().map(|(_, n, _)| n.clone()).collect()),
                    utf8(
                        ts.iter()
                            .map(|(_, _, t)| create(t).engine.as_ref().map(|e| e.name.clone()).unwrap_or_default())
                            .collect(),
                    ),
                    utf8(ts.iter().map(|(_, _, t)| create(t).partition_by.clone().unwrap_or_default()).collect()),
                    utf8(ts.iter().map(|(_, _, t)| t.storage().def.order_by.join(", ")).collect()),
                    utf8(
                        ts.iter()
                            .map(|(_, _, t)| {
                                create(t).primary_key.clone().unwrap_or_else(|| t.storage().def.order_by.join(", "))
                            })
                            .collect(),
                    ),
                    Arc::new(UInt64Array::from(rows)),
                    Arc::new(UInt64Array::from(bytes)),
                    utf8(
                        ts.iter()
                            .map(|(d, _, t)| {
                                let mut c = create(t).clone();
                                c.database = Some(d.clone());
                                super::execute::render_create(&c)
                            })
                            .collect(),
                    ),
                ],
            )?
        }
        "columns" => {
            let mut v: [Vec<String>; 7] = Default::default();
            let mut pos = Vec::new();
            let mut flags: [Vec<u8>; 2] = Default::default();
            for (db, name, t) in all_tables(server) {
                for (i, c) in t.create().columns.iter().enumerate() {
                    v[0].push(db.clone());
                    v[1].push(name.clone());
                    v[2].push(c.name.clone());
                    v[3].push(c.ty.to_string());
                    v[4].push(c.default.as_ref().map(|d| d.0.as_str().to_string()).unwrap_or_default());
                    v[5].push(c.default.as_ref().map(|d| d.1.clone()).unwrap_or_default());
                    v[6].push(c.comment.clone().unwrap_or_default());
                    pos.push(i as u64 + 1);
                    flags[0].push(t.storage().partition_columns().contains(&c.name) as u8);
                    flags[1].push(t.storage().key_columns().contains(&c.name) as u8);
                }
            }
            let [database, table, name, ty, default_kind, default_expression, comment] = v;
            let [in_partition, in_sorting] = flags;
            table_of(
                vec![
                    s("database"),
                    s("table"),
                    s("name"),
                    s("type"),
                    Field::new("position", DataType::UInt64, false),
                    s("default_kind"),
                    s("default_expression"),
                    s("comment"),
                    Field::new("is_in_partition_key", DataType::UInt8, false),
                    Field::new("is_in_sorting_key", DataType::UInt8, false),
                ],
                vec![
                    utf8(database),
                    utf8(table),
                    utf8(name),
                    utf8(ty),
                    Arc::new(UInt64Array::from(pos)),
                    utf8(default_kind),
                    utf8(default_expression),
                    utf8(comment),
                    Arc::new(UInt8Array::from(in_partition)),
                    Arc::new(UInt8Array::from(in_sorting)),
                ],
            )?
        }
        "settings" => {
            use query::settings::KNOWN;
            let col = |f: &dyn Fn(&query::settings::Known) -> String| utf8(KNOWN.iter().map(f).collect());
            let n = KNOWN.len();
            table_of(
                vec![
                    s("name"),
                    s("value"),
                    Field::new("changed", DataType::UInt8, false),
                    s("description"),
                    Field::new("readonly", DataType::UInt8, false),
                    s("type"),
                ],
                vec![
                    col(&|k| k.name.into()),
                    col(&|k| k.default.into()),
                    Arc::new(UInt8Array::from(vec![0u8; n])),
                    col(&|k| {
                        if k.applied {
                            k.description.into()
                        } else {
                            format!("{} (accepted, not acted on yet)", k.description)
                        }
                    }),
                    Arc::new(UInt8Array::from(vec![0u8; n])),
                    col(&|k| k.ty.into()),
                ],
            )?
        }
        "parts" => {
            let mut rows = Vec::new();
            for (db, name, t) in all_tables(server) {
                for (p, active) in
                    t.snapshot().into_iter().map(|p| (p, true)).chain(t.outdated().into_iter().map(|p| (p, false)))
                {
                    rows.push((db.clone(), name.clone(), p, active));
                }
            }
            let m = |f: &dyn Fn(&Arc<storage::Part>) -> String| utf8(rows.iter().map(|r| f(&r.2)).collect());
            table_of(
                vec![
                    s("database"),
                    s("table"),
                    s("partition"),
                    s("partition_id"),
                    s("name"),
                    Field::new("active", DataType::UInt8, false),
                    Field::new("rows", DataType::UInt64, false),
                    Field::new("bytes_on_disk", DataType::UInt64, false),
                    Field::new("data_compressed_bytes", DataType::UInt64, false),
                    Field::new("data_uncompressed_bytes", DataType::UInt64, false),
                    Field::new("level", DataType::UInt32, false),
                    Field::new("min_block_number", DataType::Int64, false),
                    Field::new("max_block_number", DataType::Int64, false),
                    Field::new("data_version", DataType::Int64, false),
                    Field::new("modification_time", DataType::Timestamp(TimeUnit::Second, None), false),
                    s("path"),
                    s("part_type"),
                ],
                vec![
                    utf8(rows.iter().map(|r| r.0.clone()).collect()),
                    utf8(rows.iter().map(|r| r.1.clone()).collect()),
                    m(&|p| match p.meta.partition_value.len() {
                        0 => "tuple()".to_string(),
                        1 => p.meta.partition_value[0].clone(),
                        _ => format!("({})", p.meta.partition_value.join(", ")),
                    }),
                    m(&|p| p.name.partition_id.clone()),
                    m(&|p| p.name.to_string()),
                    Arc::new(UInt8Array::from(rows.iter().map(|r| r.3 as u8).collect::<Vec<_>>())),
                    Arc::new(UInt64Array::from(rows.iter().map(|r| r.2.live_rows()).collect::<Vec<_>>())),
                    Arc::new(UInt64Array::from(rows.iter().map(|r| r.2.meta.bytes_on_disk).collect::<Vec<_>>())),
                    Arc::new(UInt64Array::from(rows.iter().map(|r| r.2.meta.bytes_on_disk).collect::<Vec<_>>())),
                    Arc::new(UInt64Array::from(rows.iter().map(|r| r.2.meta.uncompressed_bytes).collect::<Vec<_>>())),
                    Arc::new(UInt32Array::from(rows.iter().map(|r| r.2.name.level).collect::<Vec<_>>())),
                    Arc::new(Int64Array::from(rows.iter().map(|r| r.2.name.min_block).collect::<Vec<_>>())),
                    Arc::new(Int64Array::from(rows.iter().map(|r| r.2.name.max_block).collect::<Vec<_>>())),
                    Arc::new(Int64Array::from(rows.iter().map(|r| r.2.name.data_version()).collect::<Vec<_>>())),
                    Arc::new(TimestampSecondArray::from(
                        rows.iter().map(|r| r.2.meta.modification_time_ms / 1000).collect::<Vec<_>>(),
                    )),
                    m(&|p| format!("{}/", p.dir.display())),
                    // ClickHouse's names: one data file for every column is
                    // its Compact format; InMemory is a small replicated
                    // insert not written out yet.
                    m(&|p| if p.is_in_memory() { "InMemory" } else { "Compact" }.to_string()),
                ],
            )?
        }
        "numbers" => Arc::new(query::plan::numbers::Numbers { start: 0, count: None }),
        "merges" => {
            let rows: Vec<(String, String, query::table::MergeInfo)> = all_tables(server)
                .into_iter()
                .flat_map(|(d, n, t)| t.merges().into_iter().map(move |m| (d.clone(), n.clone(), m)))
                .collect();
            let u64s = |f: &dyn Fn(&query::table::MergeInfo) -> u64| -> ArrayRef {
                Arc::new(UInt64Array::from(rows.iter().map(|r| f(&r.2)).collect::<Vec<_>>()))
            };
            let mut sources = ListBuilder::new(StringBuilder::new());
            for r in &rows {
                for p in &r.2.source_part_names {
                    sources.values().append_value(p);
                }
                sources.append(true);
            }
            table_of(
                vec![
                    s("database"),
                    s("table"),
                    Field::new("elapsed", DataType::Float64, false),
                    Field::new("progress", DataType::Float64, false),
                    Field::new("num_parts", DataType::UInt64, false),
                    Field::new(
                        "source_part_names",
                        DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
                        false,
                    ),
                    s("result_part_name"),
                    s("partition_id"),
                    Field::new("is_mutation", DataType::UInt8, false),
                    Field::new("total_size_bytes_compressed", DataType::UInt64, false),
                    Field::new("rows_read", DataType::UInt64, false),
                ],
                vec![
                    utf8(rows.iter().map(|r| r.0.clone()).collect()),
                    utf8(rows.iter().map(|r| r.1.clone()).collect()),
                    Arc::new(Float64Array::from(
                        rows.iter().map(|r| r.2.started.elapsed().as_secs_f64()).collect::<Vec<_>>(),
                    )),
                    // Progress inside one merge is not tracked yet.
                    Arc::new(Float64Array::from(vec![0.0; rows.len()])),
                    u64s(&|m| m.source_part_names.len() as u64),
                    Arc::new(sources.finish()),
                    utf8(rows.iter().map(|r| r.2.result_part_name.clone()).collect()),
                    utf8(rows.iter().map(|r| r.2.partition_id.clone()).collect()),
                    Arc::new(UInt8Array::from(rows.iter().map(|r| r.2.is_mutation as u8).collect::<Vec<_>>())),
                    u64s(&|m| m.total_size_bytes_compressed),
                    u64s(&|_| 0),
                ],
            )?
        }
        "mutations" => {
            let rows: Vec<(String, String, query::table::MutationInfo)> = all_tables(server)
                .into_iter()
                .flat_map(|(d, n, t)| t.mutations().into_iter().map(move |m| (d.clone(), n.clone(), m)))
                .collect();
            let m = |f: &dyn Fn(&query::table::MutationInfo) -> String| utf8(rows.iter().map(|r| f(&r.2)).collect());
            let time = |f: &dyn Fn(&query::table::MutationInfo) -> i64| -> ArrayRef {
                Arc::new(TimestampSecondArray::from(rows.iter().map(|r| f(&r.2)).collect::<Vec<_>>()))
            };
            let mut todo_names = ListBuilder::new(StringBuilder::new());
            for r in &rows {
                for n in &r.2.parts_to_do_names {
                    todo_names.values().append_value(n);
                }
                todo_names.append(true);
            }
            let ts =
                |name: &str| Field::new(name, DataType::Timestamp(arrow::datatypes::TimeUnit::Second, None), false);
            table_of(
                vec![
                    s("database"),
                    s("table"),
                    s("mutation_id"),
                    s("command"),
                    ts("create_time"),
                    Field::new("block_number", DataType::Int64, false),
                    Field::new(
                        "parts_to_do_names",
                        DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
                        false,
                    ),
                    Field::new("parts_to_do", DataType::Int64, false),
                    Field::new("is_done", DataType::UInt8, false),
                    Field::new("is_killed", DataType::UInt8, false),
                    s("latest_failed_part"),
                    ts("latest_fail_time"),
                    s("latest_fail_reason"),
                ],
                vec![
                    utf8(rows.iter().map(|r| r.0.clone()).collect()),
                    utf8(rows.iter().map(|r| r.1.clone()).collect()),
                    m(&|x| x.mutation_id.clone()),
                    m(&|x| query::table::command_text(&x.statement)),
                    time(&|x| x.create_time),
                    Arc::new(Int64Array::from(rows.iter().map(|r| r.2.block_number).collect::<Vec<_>>())),
                    Arc::new(todo_names.finish()),
                    Arc::new(Int64Array::from(rows.iter().map(|r| r.2.parts_to_do as i64).collect::<Vec<_>>())),
                    Arc::new(UInt8Array::from(rows.iter().map(|r| r.2.is_done as u8).collect::<Vec<_>>())),
                    // Killed mutations are gone from the table, as in ClickHouse.
                    Arc::new(UInt8Array::from(vec![0u8; rows.len()])),
                    m(&|x| x.latest_failed_part.clone()),
                    time(&|x| x.latest_fail_time),
                    m(&|x| x.latest_fail_reason.clone()),
                ],
            )?
        }
        "query_log" => super::query_log::table(server)?,
        _ => return Ok(None),
    }))
}

#[async_trait]
impl SchemaProvider for SystemSchema {
    fn table_names(&self) -> Vec<String> {
        TABLES
            .iter()
            .chain(super::system_replication::TABLES)
            .chain(super::system_cluster::TABLES)
            .map(|t| t.to_string())
            .collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>, DataFusionError> {
        match self.server.upgrade() {
            Some(server) if super::system_replication::TABLES.contains(&name) => {
                super::system_replication::table(&server, name).await
            }
            Some(server) if super::system_cluster::TABLES.contains(&name) => {
                super::system_cluster::table(&server, name)
            }
            Some(server) => {
                if matches!(name, "parts" | "tables") {
                    for (_, _, t) in all_tables(&server) {
                        t.read_your_writes().await;
                    }
                }
                build(&server, name)
            }
            None => Ok(None),
        }
    }

    fn table_exist(&self, name: &str) -> bool {
        TABLES.contains(&name)
            || super::system_replication::TABLES.contains(&name)
            || super::system_cluster::TABLES.contains(&name)
    }
}
