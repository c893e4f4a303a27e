//! The cluster's system tables: `system.clusters` (every logical cluster of
//! `[remote_servers]`, one row per replica, with ClickHouse's columns) and
//! `system.macros` (this node's `{shard}`, `{replica}` and configured
//! macros).

use std::sync::Arc;

use arrow::array::{ArrayRef, StringArray, UInt8Array, UInt16Array, UInt32Array, UInt64Array};
use arrow::datatypes::{DataType, Field};
use datafusion::catalog::TableProvider;
use datafusion::error::Result;

use super::catalog::Server;
use super::system::table_of;

/// The tables' names.
pub const TABLES: &[&str] = &["clusters", "macros"];

/// One of [`TABLES`].
pub fn table(server: &Server, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
    Ok(Some(match name {
        "clusters" => clusters(server)?,
        "macros" => {
            let (names, values): (Vec<String>, Vec<String>) =
                server.macros.iter().map(|(k, v)| (k.clone(), v.clone())).unzip();
            table_of(
                vec![Field::new("macro", DataType::Utf8, false), Field::new("substitution", DataType::Utf8, false)],
                vec![Arc::new(StringArray::from(names)), Arc::new(StringArray::from(values))],
            )?
        }
        _ => return Ok(None),
    }))
}

fn clusters(server: &Server) -> Result<Arc<dyn TableProvider>> {
    let me = server.replication.config().node_id;
    let nodes = &server.replication.config().nodes;
    // (cluster, shard_num, weight, replica_num, node)
    let mut rows: Vec<(String, u32, u32, u32, u64)> = Vec::new();
    for (name, c) in &server.remote_servers {
        for (i, s) in c.shards.iter().enumerate() {
            for (j, r) in s.replicas.iter().enumerate() {
                rows.push((name.clone(), i as u32 + 1, s.weight as u32, j as u32 + 1, *r));
            }
        }
    }
    // Where clients reach a replica: its HTTP address (the only client
    // interface), or this server's own for the one-node default.
    let address = |node: u64| -> (String, u16) {
        let http = nodes.iter().find(|n| n.id == node).and_then(|n| n.http.clone());
        let http = http.unwrap_or_else(|| server.http_address.clone());
        match http.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p.parse().unwrap_or(0)),
            None => (http, 0),
        }
    };
    let addrs: Vec<(String, u16)> = rows.iter().map(|r| address(r.4)).collect();
    let n = rows.len();
    let strs =
        |f: &dyn Fn(usize) -> String| -> ArrayRef { Arc::new(StringArray::from((0..n).map(f).collect::<Vec<_>>())) };
    let u32s =
        |f: &dyn Fn(usize) -> u32| -> ArrayRef { Arc::new(UInt32Array::from((0..n).map(f).collect::<Vec<_>>())) };
    let u8s = |f: &dyn Fn(usize) -> u8| -> ArrayRef { Arc::new(UInt8Array::from((0..n).map(f).collect::<Vec<_>>())) };
    let nulls_u8: ArrayRef = Arc::new(UInt8Array::from(vec![None::<u8>; n]));
    let fields = vec![
        Field::new("cluster", DataType::Utf8, false),
        Field::new("shard_num", DataType::UInt32, false),
        Field::new("shard_name", DataType::Utf8, false),
        Field::new("shard_weight", DataType::UInt32, false),
        Field::new("internal_replication", DataType::UInt8, false),
        Field::new("replica_num", DataType::UInt32, false),
        Field::new("host_name", DataType::Utf8, false),
        Field::new("host_address", DataType::Utf8, false),
        Field::new("port", DataType::UInt16, false),
        Field::new("is_local", DataType::UInt8, false),
        Field::new("user", DataType::Utf8, false),
        Field::new("default_database", DataType::Utf8, false),
        Field::new("errors_count", DataType::UInt32, false),
        Field::new("slowdowns_count", DataType::UInt32, false),
        Field::new("estimated_recovery_time", DataType::UInt32, false),
        Field::new("database_shard_name", DataType::Utf8, false),
        Field::new("database_replica_name", DataType::Utf8, false),
        Field::new("is_shared_catalog_cluster", DataType::UInt8, false),
        Field::new("is_active", DataType::UInt8, true),
        Field::new("unsynced_after_recovery", DataType::UInt8, true),
        Field::new("replication_lag", DataType::UInt32, true),
        Field::new("recovery_time", DataType::UInt64, true),
    ];
    let cols: Vec<ArrayRef> = vec![
        strs(&|i| rows[i].0.clone()),
        u32s(&|i| rows[i].1),
        strs(&|_| String::new()),
        u32s(&|i| rows[i].2),
        // Each shard's replicas share one Raft group per partition: the
        // replication is the table's own, as ClickHouse's
        // internal_replication = true.
        u8s(&|_| 1),
        u32s(&|i| rows[i].3),
        strs(&|i| addrs[i].0.clone()),
        strs(&|i| addrs[i].0.clone()),
        Arc::new(UInt16Array::from(addrs.iter().map(|a| a.1).collect::<Vec<_>>())),
        u8s(&|i| (rows[i].4 == me) as u8),
        strs(&|_| "default".to_string()),
        strs(&|_| String::new()),
        u32s(&|_| 0),
        u32s(&|_| 0),
        u32s(&|_| 0),
        strs(&|_| String::new()),
        strs(&|_| String::new()),
        u8s(&|_| 0),
        nulls_u8.clone(),
        nulls_u8,
        Arc::new(UInt32Array::from(vec![None::<u32>; n])),
        Arc::new(UInt64Array::from(vec![None::<u64>; n])),
    ];
    table_of(fields, cols)
}
