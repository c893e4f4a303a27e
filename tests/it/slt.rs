//! SQL behaviour as sqllogictest files (`tests/slt/*.slt`), run against a
//! server in this process. Supported records:
//!
//! * `statement ok` / `statement error <text the error must contain>`, then the SQL;
//! * `query <column types> [rowsort]`, the SQL, `----`, then the expected rows
//!   (TabSeparated output with each tab shown as one space);
//! * `restart` — reopen the server on the same data directory;
//! * `# comments` and blank lines between records.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use shardhouse::server::Server;

struct Runner {
    dir: PathBuf,
    rt: tokio::runtime::Runtime,
    server: Option<Arc<Server>>,
}

impl Runner {
    fn server(&mut self) -> Arc<Server> {
        if self.server.is_none() {
            self.server = Some(Server::open(&self.dir).expect("server opens"));
        }
        self.server.clone().unwrap()
    }

    fn run(&mut self, sql: &str) -> Result<String, String> {
        let server = self.server();
        let out = self.rt.block_on(server.execute(sql, "default")).map_err(|e| e.to_string())?;
        match &out.schema {
            Some(schema) => query::format::write(query::format::Format::TabSeparated, &out.batches, schema)
                .map(|b| String::from_utf8_lossy(&b).to_string())
                .map_err(|e| e.to_string()),
            None => Ok(String::new()),
        }
    }

    fn restart(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown();
            self.rt.block_on(s.replication().shutdown());
        }
    }
}

fn run_file(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut r = Runner { dir: dir.path().to_path_buf(), rt: tokio::runtime::Runtime::new().unwrap(), server: None };
    let lines: Vec<&str> = text.lines().collect();
    let mut failures = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim_end();
        let at = format!("{}:{}", path.file_name().unwrap().to_string_lossy(), i + 1);
        i += 1;
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line == "restart" {
            r.restart();
            continue;
        }
        // The SQL runs to a blank line or `----`.
        let mut sql = Vec::new();
        while i < lines.len() && !lines[i].trim().is_empty() && lines[i].trim() != "----" {
            sql.push(lines[i]);
            i += 1;
        }
        let sql = sql.join("\n");
        if let Some(rest) = line.strip_prefix("statement ") {
            match (rest.trim(), r.run(&sql)) {
                ("ok", Err(e)) => failures.push(format!("{at}: {sql}\n  expected ok, got: {e}")),
                (expect, Ok(_)) if expect.starts_with("error") => {
                    failures.push(format!("{at}: {sql}\n  expected an error, got ok"))
                }
                (expect, Err(e)) if expect.starts_with("error") => {
                    let want = expect.trim_start_matches("error").trim();
                    if !e.contains(want) {
                        failures.push(format!("{at}: {sql}\n  expected an error containing '{want}', got: {e}"));
                    }
                }
                _ => {}
            }
        } else if let Some(rest) = line.strip_prefix("query ") {
            let rowsort = rest.split_whitespace().any(|w| w == "rowsort");
            let mut expected = Vec::new();
            if i < lines.len() && lines[i].trim() == "----" {
                i += 1;
                while i < lines.len() && !lines[i].trim().is_empty() {
                    expected.push(lines[i].trim_end().to_string());
                    i += 1;
                }
            }
            match r.run(&sql) {
                Err(e) => failures.push(format!("{at}: {sql}\n  expected rows, got: {e}")),
                Ok(out) => {
                    let mut got: Vec<String> =
                        out.lines().map(|l| l.replace('\t', " ").trim_end().to_string()).collect();
                    if rowsort {
                        got.sort();
                        expected.sort();
                    }
                    if got != expected {
                        failures.push(format!(
                            "{at}: {sql}\n  expected:\n    {}\n  got:\n    {}",
                            expected.join("\n    "),
                            got.join("\n    ")
                        ));
                    }
                }
            }
        } else {
            failures.push(format!("{at}: unknown record '{line}'"));
        }
    }
    r.restart();
    failures
}

#[test]
fn sqllogictest_files() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/slt");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.path()).collect();
    files.retain(|p| p.extension().is_some_and(|x| x == "slt"));
    files.sort();
    assert!(files.len() >= 5, "the .slt files are missing from {}", dir.display());
    let failures: Vec<String> = files.iter().flat_map(|f| run_file(f)).collect();
    assert!(failures.is_empty(), "{} sqllogictest failures:\n{}", failures.len(), failures.join("\n"));
}
