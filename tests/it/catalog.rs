//! Tables on disk: data in `store/<uuid>`, metadata in `metadata/<db>/<name>.sql`
//! (issue 18: RENAME changes metadata only, as ClickHouse's Atomic database).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use shardhouse::server::Server;

fn run(server: &Arc<Server>, sql: &str) -> String {
    crate::rows(server, sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
}

fn with_server<T>(dir: &Path, f: impl FnOnce(&Arc<Server>) -> T) -> T {
    let server = Server::open(dir).unwrap();
    let out = f(&server);
    server.shutdown();
    out
}

fn store_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> =
        std::fs::read_dir(dir.join("store")).map(|r| r.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    v.sort();
    v
}

/// Issue 18: RENAME deregistered the table, then moved its data directory,
/// then wrote the new metadata: a crash in between reopened the old name
/// over a missing directory — an empty table — and orphaned the data. Now
/// the data stays in `store/<uuid>` and the RENAME is one atomic rename of
/// the metadata file; whichever side of it a crash falls, the rows are there.
#[test]
fn regression_rename_moves_no_data_and_a_crash_leaves_one_whole_table() {
    let dir = tempfile::tempdir().unwrap();
    let store = with_server(dir.path(), |s| {
        run(s, "CREATE TABLE t (k UInt32) ENGINE = MergeTree ORDER BY k");
        run(s, "INSERT INTO t SELECT number FROM numbers(100)");
        let store = store_dirs(dir.path());
        assert_eq!(store.len(), 1, "one table, one data directory: {store:?}");
        let old_meta = std::fs::read_to_string(dir.path().join("metadata/default/t.sql")).unwrap();
        assert!(old_meta.contains("UUID '"), "{old_meta}");
        run(s, "RENAME TABLE t TO t2");
        assert_eq!(store_dirs(dir.path()), store, "RENAME moved the data");
        assert_eq!(run(s, "SELECT count() FROM t2"), "100");
        assert!(!run(s, "SHOW CREATE TABLE t2").contains("UUID"), "SHOW CREATE TABLE shows no UUID, as ClickHouse");
        assert!(!dir.path().join("metadata/default/t.sql").exists());
        // A crash right after the rename of the file, before its text named
        // the new table: the file's name is the table's name.
        std::fs::write(dir.path().join("metadata/default/t2.sql"), old_meta).unwrap();
        store
    });
    with_server(dir.path(), |s| {
        assert_eq!(run(s, "SELECT count() FROM t2"), "100");
        assert_eq!(run(s, "SELECT count() FROM system.tables WHERE name = 't'"), "0");
        assert_eq!(store_dirs(dir.path()), store);
        run(s, "DROP TABLE t2");
        assert!(store_dirs(dir.path()).is_empty(), "DROP TABLE removes the data directory");
    });
}

/// A data directory of the layout before UUIDs (`data/<db>/<table>`,
/// metadata without a UUID) is given a UUID and moved to `store/<uuid>` at
/// start; a start interrupted between the two finishes the move.
#[test]
fn tables_of_the_layout_before_uuids_are_moved_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let meta = dir.path().join("metadata/default/old.sql");
    let legacy = dir.path().join("data/default/old");
    let store = with_server(dir.path(), |s| {
        run(s, "CREATE TABLE old (k UInt32) ENGINE = MergeTree ORDER BY k");
        run(s, "INSERT INTO old SELECT number FROM numbers(50)");
        store_dirs(dir.path())
    });
    // Back to the old layout: no UUID in the metadata, data under data/.
    let text = std::fs::read_to_string(&meta).unwrap();
    let start = text.find(" UUID '").unwrap();
    let end = start + text[start + 7..].find('\'').unwrap() + 8;
    std::fs::write(&meta, format!("{}{}", &text[..start], &text[end..])).unwrap();
    std::fs::create_dir_all(legacy.parent().unwrap()).unwrap();
    std::fs::rename(&store[0], &legacy).unwrap();
    with_server(dir.path(), |s| {
        assert_eq!(run(s, "SELECT count() FROM old"), "50");
    });
    assert!(!legacy.exists());
    assert_eq!(store_dirs(dir.path()).len(), 1);
    assert!(std::fs::read_to_string(&meta).unwrap().contains("UUID '"));
    // Interrupted: the metadata has its UUID, the data is still under data/.
    let moved = store_dirs(dir.path()).remove(0);
    std::fs::rename(&moved, &legacy).unwrap();
    with_server(dir.path(), |s| {
        assert_eq!(run(s, "SELECT count() FROM old"), "50");
    });
    assert_eq!(store_dirs(dir.path()), vec![moved]);
}
