//! The server's integration tests (one binary): the HTTP interface, real
//! clients, the catalog on disk, clusters of shards, and SQL behaviour as
//! sqllogictest files.

mod admission;
mod catalog;
mod clients;
mod http;
mod slt;
mod topology;

/// Runs `sql` on `server` in `default`: the rows as tab-separated lines.
pub(crate) fn rows(server: &std::sync::Arc<shardhouse::server::Server>, sql: &str) -> Result<String, String> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    let out = rt.block_on(server.execute(sql, "default")).map_err(|e| e.to_string())?;
    Ok(out
        .batches
        .iter()
        .flat_map(|b| {
            (0..b.num_rows()).map(move |r| {
                (0..b.num_columns())
                    .map(|c| arrow::util::display::array_value_to_string(b.column(c), r).unwrap_or_default())
                    .collect::<Vec<_>>()
                    .join("\t")
            })
        })
        .collect::<Vec<_>>()
        .join("\n"))
}
