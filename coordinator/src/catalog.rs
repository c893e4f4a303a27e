//! The catalog: databases and the definition of every table, as the CREATE
//! statement text the SQL layer parses (ClickHouse keeps `metadata/*.sql`
//! and its Replicated database keeps the same text in Keeper). Behind the
//! [`Catalog`] trait so the cluster-wide catalog (a Raft group, issue 19)
//! replaces [`DiskCatalog`] without touching the server.
//!
//! Reads are local and synchronous; writes are async (in a replicated
//! catalog each is a log entry) and never block a runtime thread.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use storage::StorageError;

use crate::error::{EngineError, Result};

/// Databases and table definitions.
#[async_trait]
pub trait Catalog: Send + Sync + std::fmt::Debug {
    /// The databases, sorted.
    fn databases(&self) -> Result<Vec<String>>;
    /// The tables of `db` as (name, CREATE statement), sorted by name.
    fn tables(&self, db: &str) -> Result<Vec<(String, String)>>;
    /// Creates a database (idempotent).
    async fn create_database(&self, db: &str) -> Result<()>;
    /// Forgets a database and every table definition in it.
    async fn drop_database(&self, db: &str) -> Result<()>;
    /// Records (or replaces) a table's definition, durably.
    async fn put_table(&self, db: &str, name: &str, create_sql: &str) -> Result<()>;
    /// Renames a table: after a crash the catalog holds the old name or
    /// the new one, never both or neither. `create_sql` is the definition
    /// under its new name.
    async fn rename_table(&self, from: (&str, &str), to: (&str, &str), create_sql: &str) -> Result<()>;
    /// Forgets a table's definition.
    async fn drop_table(&self, db: &str, name: &str) -> Result<()>;
}

/// The catalog of one node: `metadata/<db>/<table>.sql`. The file's name is
/// the table's name, so a RENAME is one atomic file rename.
#[derive(Debug, Clone)]
pub struct DiskCatalog {
    dir: PathBuf,
}

fn io(path: &Path, e: std::io::Error) -> EngineError {
    EngineError::Storage(StorageError::io(path, e))
}

fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io(dir, e))
}

/// Writes a file atomically and durably (temp file, fsync, rename, fsync dir).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)
        .and_then(|_| std::fs::File::open(&tmp)?.sync_all())
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| io(path, e))?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

impl DiskCatalog {
    /// The catalog under `dir` (the server's `metadata/`), with the
    /// `default` database created if missing.
    pub fn open(dir: &Path) -> Result<DiskCatalog> {
        std::fs::create_dir_all(dir.join("default")).map_err(|e| io(dir, e))?;
        Ok(DiskCatalog { dir: dir.to_path_buf() })
    }

    /// The file holding `db.name`'s definition.
    pub fn table_path(&self, db: &str, name: &str) -> PathBuf {
        self.dir.join(db).join(format!("{name}.sql"))
    }

    /// `put_table` for code that is already off the runtime (start-up).
    pub fn put_table_blocking(&self, db: &str, name: &str, create_sql: &str) -> Result<()> {
        write_atomic(&self.table_path(db, name), create_sql.as_bytes())
    }

    async fn off_runtime<T: Send + 'static>(
        &self,
        f: impl FnOnce(DiskCatalog) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || f(me)).await.map_err(|e| EngineError::Task(e.to_string()))?
    }
}

#[async_trait]
impl Catalog for DiskCatalog {
    fn databases(&self) -> Result<Vec<String>> {
        let mut dbs: Vec<String> = std::fs::read_dir(&self.dir)
            .map_err(|e| io(&self.dir, e))?
            .flatten()
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect();
        dbs.sort();
        Ok(dbs)
    }

    fn tables(&self, db: &str) -> Result<Vec<(String, String)>> {
        let dir = self.dir.join(db);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(|e| io(&dir, e))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "sql"))
            .collect();
        files.sort();
        let mut out = Vec::with_capacity(files.len());
        for f in files {
            let Some(name) = f.file_stem().and_then(|s| s.to_str()) else { continue };
            let sql = std::fs::read_to_string(&f).map_err(|e| io(&f, e))?;
            out.push((name.to_string(), sql));
        }
        Ok(out)
    }

    async fn create_database(&self, db: &str) -> Result<()> {
        let dir = self.dir.join(db);
        self.off_runtime(move |c| {
            std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
            sync_dir(&c.dir)
        })
        .await
    }

    async fn drop_database(&self, db: &str) -> Result<()> {
        let dir = self.dir.join(db);
        self.off_runtime(move |c| {
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(&dir, e)),
            }
            sync_dir(&c.dir)
        })
        .await
    }

    async fn put_table(&self, db: &str, name: &str, create_sql: &str) -> Result<()> {
        let (db, name, sql) = (db.to_string(), name.to_string(), create_sql.to_string());
        self.off_runtime(move |c| c.put_table_blocking(&db, &name, &sql)).await
    }

    async fn rename_table(&self, from: (&str, &str), to: (&str, &str), create_sql: &str) -> Result<()> {
        let (old, new) = (self.table_path(from.0, from.1), self.table_path(to.0, to.1));
        let sql = create_sql.to_string();
        self.off_runtime(move |_| {
            // The one atomic step: a crash leaves the old file or the new one.
            std::fs::rename(&old, &new).map_err(|e| io(&old, e))?;
            for d in [old.parent(), new.parent()].into_iter().flatten() {
                sync_dir(d)?;
            }
            // The name inside the file follows (only a reader of the file sees it).
            write_atomic(&new, sql.as_bytes())
        })
        .await
    }

    async fn drop_table(&self, db: &str, name: &str) -> Result<()> {
        let path = self.table_path(db, name);
        self.off_runtime(move |_| {
            std::fs::remove_file(&path).map_err(|e| io(&path, e))?;
            sync_dir(path.parent().unwrap_or(Path::new(".")))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn definitions_survive_reopen_and_rename_moves_one_file() {
        let dir = tempfile::tempdir().unwrap();
        let c = DiskCatalog::open(dir.path()).unwrap();
        c.create_database("db").await.unwrap();
        c.put_table("db", "a", "CREATE TABLE a (x UInt8) ENGINE = MergeTree ORDER BY x").await.unwrap();
        c.rename_table(("db", "a"), ("default", "b"), "CREATE TABLE b (x UInt8) ENGINE = MergeTree ORDER BY x")
            .await
            .unwrap();
        let c = DiskCatalog::open(dir.path()).unwrap();
        assert_eq!(c.databases().unwrap(), vec!["db".to_string(), "default".to_string()]);
        assert!(c.tables("db").unwrap().is_empty());
        let t = c.tables("default").unwrap();
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].0, "b");
        assert!(t[0].1.starts_with("CREATE TABLE b"));
        c.drop_table("default", "b").await.unwrap();
        c.drop_database("db").await.unwrap();
        assert_eq!(c.databases().unwrap(), vec!["default".to_string()]);
        assert!(c.tables("default").unwrap().is_empty());
    }
}
