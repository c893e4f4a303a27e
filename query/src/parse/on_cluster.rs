//! `… ON CLUSTER name …` in a DDL statement: ClickHouse's distributed DDL.
//! The clause is taken out and the rest is what every host of the cluster
//! runs — except CREATE TABLE, which keeps it (a table remembers its
//! cluster) and, without a UUID, gets one: every host's table has the same
//! UUID (and `SHOW CREATE TABLE` the same text).

use crate::error::QueryError;
use crate::parse::cursor::Cursor;
use crate::parse::lexer::Tok;

/// A statement issued `ON CLUSTER`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnCluster {
    pub cluster: String,
    /// The statement without the clause (with a UUID for CREATE TABLE).
    pub local_sql: String,
}

/// Statements that may be issued `ON CLUSTER`.
const DDL: &[&str] = &["CREATE", "DROP", "ALTER", "RENAME", "TRUNCATE", "OPTIMIZE", "ATTACH", "DETACH"];

/// The `ON CLUSTER` clause of a DDL statement, if it has one; `uuid` is
/// used for a CREATE TABLE that names none.
pub fn on_cluster(sql: &str, uuid: &str) -> Result<Option<OnCluster>, QueryError> {
    // Every statement passes here: look at the first word before lexing,
    // and leave text the lexer cannot read to the statement's own parser.
    let first = sql.trim_start().split(|c: char| !c.is_ascii_alphabetic()).next().unwrap_or("");
    if !DDL.iter().any(|k| k.eq_ignore_ascii_case(first)) {
        return Ok(None);
    }
    let Ok(c) = Cursor::new(sql) else { return Ok(None) };
    let toks = &c.toks;
    // Only in the statement's head: before any parenthesis (a column list,
    // an expression) so a column named `cluster` is never taken for it.
    let head_end = toks.iter().position(|t| t.is_punct("(")).unwrap_or(toks.len());
    let Some(at) = (0..head_end.saturating_sub(1)).find(|&i| toks[i].is_kw("ON") && toks[i + 1].is_kw("CLUSTER"))
    else {
        return Ok(None);
    };
    let name_tok = toks.get(at + 2).ok_or_else(|| QueryError::syntax("ON CLUSTER needs a cluster name"))?;
    let cluster = match &name_tok.tok {
        Tok::Str(s) => s.clone(),
        _ => name_tok.ident().ok_or_else(|| QueryError::syntax("ON CLUSTER needs a cluster name"))?.to_string(),
    };
    let is_create_table = toks[0].is_kw("CREATE") && toks[1..at].iter().any(|t| t.is_kw("TABLE"));
    // A table keeps its cluster (see CreateTable::cluster); anything else
    // loses the clause.
    let local_sql = if is_create_table {
        let with_uuid =
            if toks[1..at].iter().any(|t| t.is_kw("UUID")) { String::new() } else { format!("UUID '{uuid}' ") };
        format!("{}{with_uuid}{}", &sql[..toks[at].start], &sql[toks[at].start..])
    } else {
        format!("{}{}", &sql[..toks[at].start], &sql[name_tok.end..])
    };
    Ok(Some(OnCluster { cluster, local_sql }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clause_is_taken_out_and_a_create_table_gets_the_uuid() {
        let u = "0d1f0a5c-0000-4000-8000-000000000001";
        let oc = on_cluster("CREATE TABLE db.t ON CLUSTER c (k UInt64) ENGINE = MergeTree ORDER BY k", u).unwrap();
        assert_eq!(
            oc,
            Some(OnCluster {
                cluster: "c".into(),
                local_sql: format!(
                    "CREATE TABLE db.t UUID '{u}' ON CLUSTER c (k UInt64) ENGINE = MergeTree ORDER BY k"
                )
            })
        );
        let oc = on_cluster("DROP TABLE IF EXISTS t ON CLUSTER 'my-c' SYNC", u).unwrap().unwrap();
        assert_eq!((oc.cluster.as_str(), oc.local_sql.as_str()), ("my-c", "DROP TABLE IF EXISTS t  SYNC"));
        let oc = on_cluster("CREATE TABLE t UUID 'x' ON CLUSTER c AS s", u).unwrap().unwrap();
        assert_eq!(oc.local_sql, "CREATE TABLE t UUID 'x' ON CLUSTER c AS s");
        let oc = on_cluster("ALTER TABLE t ON CLUSTER `c` DELETE WHERE k = 1", u).unwrap().unwrap();
        assert_eq!(oc.local_sql, "ALTER TABLE t  DELETE WHERE k = 1");
        let oc = on_cluster("CREATE DATABASE d ON CLUSTER c", u).unwrap().unwrap();
        assert_eq!(oc.local_sql, "CREATE DATABASE d ");
        assert_eq!(on_cluster("CREATE TABLE t (on UInt8, cluster UInt8) ENGINE = Memory", u).unwrap(), None);
        assert_eq!(on_cluster("SELECT 1 ON CLUSTER c", u).unwrap(), None);
        assert!(on_cluster("DROP TABLE t ON CLUSTER", u).is_err());
    }
}
