//! `INSERT INTO t [(cols)] FROM INFILE 'file' [COMPRESSION 'c'] [FORMAT f]`:
//! the client streams a local file as the body of `INSERT INTO t [(cols)]
//! FORMAT f`. The format defaults from the file's extension (.csv, .tsv,
//! .parquet, .arrow, .jsonl/.ndjson), the compression too (.gz, .zst, .lz4),
//! and the server decodes the compression (Content-Encoding).

use super::{Answer, ClientOptions, progress::Progress};
use query::error::QueryError;
use query::parse::cursor::Cursor;

/// A parsed `FROM INFILE` insert.
#[derive(Debug, PartialEq)]
pub struct Upload {
    /// `INSERT INTO t (cols) FORMAT f`, the statement the server gets.
    pub statement: String,
    pub path: String,
    pub encoding: Option<String>,
}

fn format_of(path: &str) -> Option<&'static str> {
    let p = path.to_ascii_lowercase();
    let p = p.trim_end_matches(".gz").trim_end_matches(".zst").trim_end_matches(".lz4");
    Some(match p.rsplit('.').next()? {
        "csv" => "CSVWithNames",
        "tsv" | "tab" => "TabSeparated",
        "parquet" => "Parquet",
        "arrow" => "Arrow",
        "jsonl" | "ndjson" | "json" => "JSONEachRow",
        _ => return None,
    })
}

fn encoding_of(path: &str, declared: Option<&str>) -> Option<String> {
    match declared.map(|d| d.to_ascii_lowercase()) {
        Some(d) if d == "none" => None,
        Some(d) => Some(if d == "zst" { "zstd".into() } else { d }),
        None => {
            let p = path.to_ascii_lowercase();
            [(".gz", "gzip"), (".zst", "zstd"), (".lz4", "lz4")]
                .iter()
                .find(|(ext, _)| p.ends_with(ext))
                .map(|(_, e)| e.to_string())
        }
    }
}

/// Recognises an INSERT … FROM INFILE; `None` for any other statement.
pub fn parse(sql: &str) -> Result<Option<Upload>, String> {
    parse_inner(sql).map_err(|e| e.to_string())
}

fn parse_inner(sql: &str) -> Result<Option<Upload>, QueryError> {
    let Ok(mut c) = Cursor::new(sql) else { return Ok(None) };
    if !c.eat_kws(&["INSERT", "INTO"]) {
        return Ok(None);
    }
    let Some(from) = c.toks.iter().position(|t| t.is_kw("FROM")) else { return Ok(None) };
    if !c.toks.get(from + 1).is_some_and(|t| t.is_kw("INFILE")) {
        return Ok(None);
    }
    let head = sql[..c.toks[from].start].trim().to_string();
    c.pos = from + 2;
    let path = c.string()?;
    let mut declared = None;
    if c.eat_kws(&["COMPRESSION"]) {
        declared = Some(c.string()?);
    }
    let format = if c.eat_kws(&["FORMAT"]) {
        c.ident()?
    } else {
        format_of(&path)
            .ok_or_else(|| QueryError::bad_arguments(format!("Cannot tell the format of '{path}': add FORMAT <name>")))?
            .to_string()
    };
    c.finish()?;
    let encoding = encoding_of(&path, declared.as_deref());
    Ok(Some(Upload { statement: format!("{head} FORMAT {format}"), path, encoding }))
}

impl Upload {
    /// Streams the file to the server.
    pub fn send(&self, opts: &ClientOptions, format: &str, progress: Option<&Progress>) -> std::io::Result<Answer> {
        let mut f = std::fs::File::open(&self.path)
            .map_err(|e| std::io::Error::new(e.kind(), format!("cannot open {}: {e}", self.path)))?;
        let len = f.metadata()?.len();
        super::send_body(opts, Some(&self.statement), format, &mut f, len, self.encoding.as_deref(), progress)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_infile_inserts() {
        let u = parse("INSERT INTO t (a, b) FROM INFILE '/tmp/x.csv.gz'").unwrap().unwrap();
        assert_eq!(u.statement, "INSERT INTO t (a, b) FORMAT CSVWithNames");
        assert_eq!((u.path.as_str(), u.encoding.as_deref()), ("/tmp/x.csv.gz", Some("gzip")));
        let u = parse("insert into db.t from infile 'data.bin' compression 'zstd' format Native").unwrap().unwrap();
        assert_eq!(u.statement, "insert into db.t FORMAT Native");
        assert_eq!(u.encoding.as_deref(), Some("zstd"));
        assert!(parse("INSERT INTO t SELECT * FROM s").unwrap().is_none());
        assert!(parse("SELECT 1").unwrap().is_none());
        assert!(parse("INSERT INTO t FROM INFILE 'x.unknown'").unwrap_err().contains("FORMAT"));
    }
}
