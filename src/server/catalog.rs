//! Databases and tables on disk: `metadata/<db>/<table>.sql` holds each
//! table's CREATE statement, `data/<db>/<table>/` its parts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use coordinator::catalog::Catalog;

use query::error::QueryError;
use query::parse::{Statement, parse_statement};
use query::table::{LocalEngine, ReplicatedTable, Table};

/// Tables by database, then by name.
pub(crate) type Tables = BTreeMap<String, BTreeMap<String, Arc<Table>>>;

/// The server's state: its data directory, tables and SQL session.
pub struct Server {
    pub data_dir: PathBuf,
    /// The SQL session and the tables it resolves.
    pub(crate) planner: query::plan::planner::Planner,
    tables: Mutex<Tables>,
    stop: Arc<AtomicBool>,
    pub(crate) sessions: query::session::Sessions,
    pub(crate) query_log: super::query_log::QueryLog,
    /// Users and their passwords (`default` with no password unless configured).
    users: Mutex<BTreeMap<String, String>>,
    /// Settings every query starts from (the configuration's `[settings]`).
    pub(crate) default_settings: query::settings::Settings,
    /// Logical clusters of shards (`[remote_servers]`).
    pub(crate) remote_servers: coordinator::topology::RemoteServers,
    /// This node's macros (`system.macros`).
    pub(crate) macros: BTreeMap<String, String>,
    /// Where this server's HTTP interface listens.
    pub(crate) http_address: String,
    /// Query slots (`max_concurrent_queries`).
    pub(crate) admission: super::admission::Admission,
    /// `ON CLUSTER` statements applied here (the metadata group's applier).
    pub(crate) ddl_log: Arc<coordinator::ddl_log::DdlLog>,
    /// Databases and table definitions.
    catalog: Arc<dyn coordinator::catalog::Catalog>,
    /// The cluster and this node's replication (Replicated* tables).
    pub(crate) replication: Arc<coordinator::cluster::Replication>,
}

/// Tables by `db.table`, for groups a peer creates on this node.
struct ServerTables(std::sync::Weak<Server>);

impl coordinator::replication::TableResolver for ServerTables {
    fn table(&self, name: &str) -> Option<Arc<storage::Table>> {
        let server = self.0.upgrade()?;
        let (db, t) = name.split_once('.')?;
        server.table(db, t).ok().map(|t| t.storage().clone())
    }
}

fn io(path: &Path, e: std::io::Error) -> QueryError {
    QueryError::storage(&storage::StorageError::io(path, e))
}

pub(crate) fn unknown_table(db: &str, t: &str) -> QueryError {
    QueryError { code: 60, name: "UNKNOWN_TABLE", message: format!("Table {db}.{t} does not exist") }
}

pub(crate) fn unknown_database(db: &str) -> QueryError {
    QueryError { code: 81, name: "UNKNOWN_DATABASE", message: format!("Database {db} does not exist") }
}

impl Server {
    /// Opens the data directory, loading every database and table, and starts
    /// the background merge thread.
    pub fn open(data_dir: &Path) -> Result<Arc<Server>, QueryError> {
        let mut config = super::config::Config::default();
        config.server.data_dir = data_dir.to_path_buf();
        Server::open_with(&config)
    }

    /// Opens the server a configuration describes.
    pub fn open_with(cfg: &super::config::Config) -> Result<Arc<Server>, QueryError> {
        let data_dir = cfg.server.data_dir.as_path();
        let disk = coordinator::catalog::DiskCatalog::open(&data_dir.join("metadata"))?;
        let server = Arc::new(Server {
            data_dir: data_dir.to_path_buf(),
            planner: query::plan::planner::Planner::new(),
            tables: Mutex::new(BTreeMap::new()),
            stop: Arc::new(AtomicBool::new(false)),
            sessions: Default::default(),
            query_log: Default::default(),
            users: Mutex::new(cfg.user_passwords()),
            default_settings: cfg.default_settings()?,
            remote_servers: cfg.remote_servers.clone(),
            macros: cfg.node_macros(),
            http_address: cfg.server.http_listen.to_string(),
            admission: super::admission::Admission::new(cfg.server.max_concurrent_queries),
            ddl_log: coordinator::ddl_log::DdlLog::open(&data_dir.join("ddl")).map_err(QueryError::bad_arguments)?,
            catalog: Arc::new(disk.clone()),
            replication: Arc::new(coordinator::cluster::Replication::new(
                cfg.cluster.clone(),
                data_dir.join("replication"),
            )),
        });
        server.replication.set_tables(Arc::new(ServerTables(Arc::downgrade(&server))));
        server.ddl_log.set_executor(Arc::new(super::on_cluster::ServerDdl(Arc::downgrade(&server))));
        server.replication.set_meta_applier(server.ddl_log.clone());
        for db in disk.databases()? {
            server.register_database(&db)?;
            for (name, sql) in disk.tables(&db)? {
                let create = server.load_metadata(&disk, &db, &name, &sql)?;
                let table = server.open_engine(&db, &server.table_dir(&create), create.clone())?;
                server.register_table(&db, &create.name, table)?;
            }
        }
        server
            .planner
            .register_schema("system", Arc::new(super::system::SystemSchema { server: Arc::downgrade(&server) }))?;
        storage::background::set_merge_nice(cfg.server.os_threads_nice_value_merge_mutate);
        for i in 0..cfg.server.merge_threads {
            server.start_merges(i, cfg.server.merge_threads);
        }
        Ok(server)
    }

    /// Opens a table with its engine: `Replicated*` tables replicate
    /// through Raft groups, the others are local to this node.
    pub(crate) fn open_engine(
        &self,
        db: &str,
        dir: &Path,
        create: query::parse::CreateTable,
    ) -> Result<Arc<Table>, QueryError> {
        let table = storage::Table::new(create.table_def()?).map_err(|e| QueryError::storage(&e))?;
        let engine: Arc<dyn query::table::TableEngine> = match create.engine_kind() {
            query::parse::EngineKind::Replicated => {
                let shard = self.shard_of(&create);
                Arc::new(ReplicatedTable::open(
                    db,
                    &create.name,
                    table,
                    &create.settings,
                    self.replication.clone(),
                    shard,
                )?)
            }
            query::parse::EngineKind::Distributed => Arc::new(self.open_distributed(db, &create, table)?),
            query::parse::EngineKind::Local => {
                let parse = |text: &str| query::table::mutation_commands(text).map_err(|e| e.to_string());
                Arc::new(LocalEngine::open(dir, &format!("{db}.{}", create.name), table, &parse)?)
            }
        };
        Ok(Arc::new(Table::new(create, engine)))
    }

    /// A Distributed table over the shards of its cluster: `[remote_servers]`
    /// or, for the `[cluster]` name, every node as a shard of its own.
    fn open_distributed(
        &self,
        db: &str,
        create: &query::parse::CreateTable,
        table: Arc<storage::Table>,
    ) -> Result<coordinator::engine::distributed::DistributedTable, QueryError> {
        use coordinator::engine::distributed::{DistributedTable, ShardTarget};
        let (cluster, remote_db, remote_table, key) = create.distributed_args()?;
        let remote_db = if remote_db.eq_ignore_ascii_case("currentDatabase()") { db.to_string() } else { remote_db };
        let cfg = self.replication.config();
        let http = |node: u64| -> String {
            cfg.nodes
                .iter()
                .find(|n| n.id == node)
                .and_then(|n| n.http.clone())
                .unwrap_or_else(|| self.http_address.clone())
        };
        let shards: Vec<ShardTarget> = if let Some(c) = self.remote_servers.get(&cluster) {
            c.shards
                .iter()
                .enumerate()
                .map(|(i, s)| ShardTarget {
                    num: i + 1,
                    weight: s.weight,
                    replicas: s.replicas.iter().map(|r| (*r, http(*r))).collect(),
                })
                .collect()
        } else if cluster == cfg.name {
            self.replication
                .node_ids()
                .iter()
                .enumerate()
                .map(|(i, n)| ShardTarget { num: i + 1, weight: 1, replicas: vec![(*n, http(*n))] })
                .collect()
        } else {
            return Err(QueryError {
                code: 701,
                name: "CLUSTER_DOESNT_EXIST",
                message: format!("Requested cluster '{cluster}' not found"),
            });
        };
        Ok(DistributedTable::new(table, &cluster, &remote_db, &remote_table, key, shards, self.replication.node_id())?)
    }

    /// The shard of its cluster a table created `ON CLUSTER` holds here
    /// (none for the `[cluster]` name itself or a node outside the cluster:
    /// today's placement).
    fn shard_of(&self, create: &query::parse::CreateTable) -> Option<coordinator::engine::ShardPlacement> {
        let cluster = self.remote_servers.get(create.cluster.as_deref()?)?;
        let (shard_num, _) = cluster.position_of(self.replication.node_id())?;
        Some(coordinator::engine::ShardPlacement {
            shard_num,
            replicas: cluster.shards[shard_num - 1].replicas.clone(),
        })
    }

    /// A Replicated table's replication path and replica name (its first
    /// two engine arguments, ClickHouse's defaults when absent) with this
    /// node's macros and `{database}`, `{table}`, `{uuid}` expanded; `None`
    /// for other engines. An unknown macro fails the CREATE, as in
    /// ClickHouse.
    pub(crate) fn replica_path(
        &self,
        db: &str,
        create: &query::parse::CreateTable,
    ) -> Result<Option<(String, String)>, QueryError> {
        if create.engine_kind() != query::parse::EngineKind::Replicated {
            return Ok(None);
        }
        let args = create.engine.as_ref().map(|e| e.args.clone()).unwrap_or_default();
        let text = |i: usize, default: &str| {
            args.get(i).map_or(default.to_string(), |a| a.trim().trim_matches('\'').to_string())
        };
        let mut macros = self.macros.clone();
        macros.insert("database".into(), db.to_string());
        macros.insert("table".into(), create.name.clone());
        macros.insert("uuid".into(), create.uuid.clone().unwrap_or_default());
        let expand = |t: String| {
            coordinator::topology::expand_macros(&t, &macros).map_err(|message| QueryError {
                code: 139,
                name: "NO_ELEMENTS_IN_CONFIG",
                message,
            })
        };
        Ok(Some((expand(text(0, "/clickhouse/tables/{uuid}/{shard}"))?, expand(text(1, "{replica}"))?)))
    }

    /// The cluster and this node's replication.
    pub fn replication(&self) -> &Arc<coordinator::cluster::Replication> {
        &self.replication
    }

    /// A table's data directory: `store/<uuid>`, named by its stable id
    /// (ClickHouse's Atomic database), so a RENAME moves no data.
    pub(crate) fn table_dir(&self, create: &query::parse::CreateTable) -> PathBuf {
        match &create.uuid {
            Some(u) => self.data_dir.join("store").join(u),
            None => self.data_dir.join("data").join("_no_uuid").join(&create.name),
        }
    }

    /// Parses the catalog's definition of `db.name` (the catalog's name
    /// wins over the one inside the text: a RENAME changes the name first).
    /// A table of the layout before UUIDs (data in `data/<db>/<name>`) gets
    /// one: the definition is rewritten with it first, then the data
    /// directory moves to `store/<uuid>` — and a start after a crash in
    /// between finishes the move.
    fn load_metadata(
        &self,
        disk: &coordinator::catalog::DiskCatalog,
        db: &str,
        name: &str,
        sql: &str,
    ) -> Result<query::parse::CreateTable, QueryError> {
        let Statement::CreateTable(create) = parse_statement(sql)? else {
            return Err(QueryError::bad_arguments(format!("the definition of {db}.{name} is not a CREATE TABLE")));
        };
        let mut create = *create;
        create.name = name.to_string();
        create.database = None;
        if create.uuid.is_none() {
            create.uuid = Some(query::session::new_query_id());
            disk.put_table_blocking(db, name, &super::execute::render_metadata(&create))?;
        }
        let legacy = self.data_dir.join("data").join(db).join(&create.name);
        let dir = self.table_dir(&create);
        if legacy.is_dir() && !dir.exists() {
            let store = self.data_dir.join("store");
            std::fs::create_dir_all(&store).map_err(|e| io(&store, e))?;
            std::fs::rename(&legacy, &dir).map_err(|e| io(&legacy, e))?;
            std::fs::File::open(&store).and_then(|d| d.sync_all()).map_err(|e| io(&store, e))?;
            tracing::info!(table = %format!("{db}.{}", create.name), dir = %dir.display(), "table data moved to its UUID directory");
        }
        Ok(create)
    }

    /// Databases and table definitions.
    pub(crate) fn catalog(&self) -> &Arc<dyn coordinator::catalog::Catalog> {
        &self.catalog
    }

    pub(crate) fn tables(&self) -> MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn register_database(&self, db: &str) -> Result<(), QueryError> {
        self.planner.register_database(db)?;
        self.tables().entry(db.to_string()).or_default();
        Ok(())
    }

    pub(crate) fn register_table(&self, db: &str, name: &str, table: Arc<Table>) -> Result<(), QueryError> {
        self.planner.register_table(db, name, table.engine())?;
        self.tables().entry(db.to_string()).or_default().insert(name.to_string(), table);
        Ok(())
    }

    pub(crate) fn deregister_table(&self, db: &str, name: &str) -> Option<Arc<Table>> {
        self.planner.deregister_table(db, name);
        self.tables().get_mut(db).and_then(|t| t.remove(name))
    }

    /// The table `db.name`.
    pub fn table(&self, db: &str, name: &str) -> Result<Arc<Table>, QueryError> {
        let tables = self.tables();
        let d = tables.get(db).ok_or_else(|| unknown_database(db))?;
        d.get(name).cloned().ok_or_else(|| unknown_table(db, name))
    }

    /// Merge thread `i` of `n`: it merges the parts of every n-th table
    /// (tables never wait on one another's merges) and deletes outdated ones.
    fn start_merges(self: &Arc<Self>, i: usize, n: usize) {
        let weak = Arc::downgrade(self);
        let stop = self.stop.clone();
        let _ = std::thread::Builder::new().name(format!("merges-{i}")).spawn(move || {
            storage::background::enter_merge_thread();
            while !stop.load(Ordering::SeqCst) {
                let Some(server) = weak.upgrade() else { break };
                let all: Vec<Arc<Table>> = server
                    .tables()
                    .values()
                    .flat_map(|t| t.values().cloned())
                    .enumerate()
                    .filter(|(k, _)| k % n == i)
                    .map(|(_, t)| t)
                    .collect();
                drop(server);
                let mut merged = false;
                for t in all {
                    match t.merge_step() {
                        Ok(m) => merged |= m,
                        Err(e) => tracing::error!(table = %t.create().name, error = %e, "background merge failed"),
                    }
                    if let Err(e) = t.cleanup() {
                        tracing::error!(table = %t.create().name, error = %e, "cleanup failed");
                    }
                }
                if !merged {
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        });
    }

    /// Replaces the users and passwords the server accepts.
    pub fn set_users(&self, users: BTreeMap<String, String>) {
        *self.users.lock().unwrap_or_else(|e| e.into_inner()) = users;
    }

    /// Checks a user's password (AUTHENTICATION_FAILED, 516, otherwise).
    pub fn authenticate(&self, user: &str, password: &str) -> Result<(), QueryError> {
        let users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        match users.get(user) {
            Some(p) if p == password => Ok(()),
            _ => Err(QueryError {
                code: 516,
                name: "AUTHENTICATION_FAILED",
                message: format!(
                    "{user}: Authentication failed: password is incorrect, or there is no user with such name"
                ),
            }),
        }
    }

    /// Stops background work.
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nice values of this process's threads named `merges-*` (Linux: the
    /// 19th field of /proc/self/task/<tid>/stat).
    fn merge_thread_nices() -> Vec<i32> {
        let mut out = Vec::new();
        for task in std::fs::read_dir("/proc/self/task").into_iter().flatten().flatten() {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if !comm.starts_with("merges-") {
                continue;
            }
            let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
            // Fields after the parenthesised name: state is field 3, nice field 19.
            let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
            if let Some(n) = rest.split_whitespace().nth(16).and_then(|v| v.parse().ok()) {
                out.push(n);
            }
        }
        out
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_servers_merge_threads_run_at_the_configured_nice_value() {
        let dir = tempfile::tempdir().unwrap();
        let base = storage::background::current_thread_nice();
        let _server = Server::open(dir.path()).unwrap();
        // Raising the value always works; below the process's own it needs CAP_SYS_NICE.
        let want = base.max(storage::background::DEFAULT_MERGE_NICE);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let nices = merge_thread_nices();
            if !nices.is_empty() && nices.iter().all(|n| *n == want) {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "merge threads at nice {nices:?}, want {want}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
