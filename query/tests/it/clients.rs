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
