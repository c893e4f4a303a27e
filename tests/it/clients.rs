//! Real, unmodified ClickHouse clients against an in-process server:
//! clickhouse-connect from PyPI (installed into a venv by
//! `tests/clients/setup.sh`) and the `clickhouse` crate.

use std::path::PathBuf;
use std::process::Command;

use crate::http::Running;

fn clients_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

/// The venv's python, set up by the project's own script (fails loudly: a
/// client test that silently skips would prove nothing).
fn python() -> String {
    let out = Command::new("bash").arg(clients_dir().join("setup.sh")).output().expect("bash runs");
    assert!(out.status.success(), "tests/clients/setup.sh failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn clickhouse_connect_from_pypi() {
    let py = python();
    let dir = tempfile::tempdir().unwrap();
    let s = Running::start(dir.path());
    let out = Command::new(py)
        .arg(clients_dir().join("connect.py"))
        .arg(s.addr.port().to_string())
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "clickhouse-connect failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

mod rust_client {
    use clickhouse::{Client, Row};
    use serde::{Deserialize, Serialize};

    use crate::http::Running;

    #[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
    struct Event {
        id: u64,
        name: String,
        score: Option<f64>,
        tags: Vec<String>,
        small: i8,
        flag: bool,
    }

    async fn scenario(url: String) -> clickhouse::error::Result<()> {
        let client = Client::default().with_url(url).with_compression(clickhouse::Compression::None);
        client.query("DROP TABLE IF EXISTS rs_events").execute().await?;
        client
            .query(
                "CREATE TABLE rs_events (id UInt64, name String, score Nullable(Float64), tags Array(String), \
                 small Int8, flag Bool) ENGINE = MergeTree ORDER BY id",
            )
            .execute()
            .await?;
        let rows: Vec<Event> = (0..1000)
            .map(|i| Event {
                id: i,
                name: format!("event-{i}"),
                score: (i % 3 != 0).then_some(i as f64 / 4.0),
                tags: (0..i % 3).map(|t| format!("t{t}")).collect(),
                small: ((i % 200) as i16 - 100) as i8,
                flag: i % 2 == 0,
            })
            .collect();
        // Validated inserts (RowBinaryWithNamesAndTypes, schema from DESCRIBE) and plain RowBinary.
        let mut insert = client.insert::<Event>("rs_events").await?;
        for r in &rows[..500] {
            insert.write(r).await?;
        }
        insert.end().await?;
        let plain = client.clone().with_validation(false);
        let mut insert = plain.insert::<Event>("rs_events").await?;
        for r in &rows[500..] {
            insert.write(r).await?;
        }
        insert.end().await?;

        let back = client.query("SELECT ?fields FROM rs_events ORDER BY id").fetch_all::<Event>().await?;
        assert_eq!(back, rows);
        let some = plain
            .query("SELECT ?fields FROM rs_events WHERE id >= ? AND name != ? ORDER BY id")
            .bind(990)
            .bind("event-995")
            .fetch_all::<Event>()
            .await?;
        assert_eq!(some.len(), 9);
        let n: u64 = client.query("SELECT count() FROM rs_events WHERE flag").fetch_one::<u64>().await?;
        assert_eq!(n, 500);
        Ok(())
    }

    #[test]
    fn clickhouse_crate_inserts_and_fetches() {
        let dir = tempfile::tempdir().unwrap();
        let s = Running::start(dir.path());
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(scenario(format!("http://{}", s.addr))).unwrap();
    }
}
