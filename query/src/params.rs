//! Query parameters (`{name:Type}` in the query, `param_name=value` in the
//! URL), substituted as checked literals of their declared type: a value
//! can never become SQL.

use std::collections::HashMap;

use crate::error::QueryError;
use crate::parse::lexer::{Tok, lex};
use crate::parse::types::{ChType, parse_type};

fn bad_value(name: &str, value: &str, t: &ChType) -> QueryError {
    QueryError {
        code: 26,
        name: "CANNOT_PARSE_QUOTED_STRING",
        message: format!("Value '{value}' of query parameter {name} cannot be parsed as {t}"),
    }
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn literal(name: &str, value: &str, t: &ChType) -> Result<String, QueryError> {
    use ChType::*;
    let err = || bad_value(name, value, t);
    Ok(match t {
        Nullable(inner) => {
            if value == "\\N" || value.eq_ignore_ascii_case("null") {
                "NULL".into()
            } else {
                literal(name, value, inner)?
            }
        }
        LowCardinality(inner) => literal(name, value, inner)?,
        UInt8 | UInt16 | UInt32 | UInt64 => {
            let v: u64 = value.trim().parse().map_err(|_| err())?;
            let max = match t {
                UInt8 => u8::MAX as u64,
                UInt16 => u16::MAX as u64,
                UInt32 => u32::MAX as u64,
                _ => u64::MAX,
            };
            if v > max {
                return Err(err());
            }
            v.to_string()
        }
        Int8 | Int16 | Int32 | Int64 => {
            let v: i64 = value.trim().parse().map_err(|_| err())?;
            let (lo, hi) = match t {
                Int8 => (i8::MIN as i64, i8::MAX as i64),
                Int16 => (i16::MIN as i64, i16::MAX as i64),
                Int32 => (i32::MIN as i64, i32::MAX as i64),
                _ => (i64::MIN, i64::MAX),
            };
            if v < lo || v > hi {
                return Err(err());
            }
            v.to_string()
        }
        Float32 | Float64 | Decimal { .. } => {
            let v: f64 = value.trim().parse().map_err(|_| err())?;
            if !v.is_finite() {
                return Err(err());
            }
            value.trim().to_string()
        }
        Bool => match value.trim().to_ascii_lowercase().as_str() {
            "1" | "true" => "true".into(),
            "0" | "false" => "false".into(),
            _ => return Err(err()),
        },
        Array(_) => {
            // Only literals, brackets and commas survive; re-rendered from tokens.
            let toks = lex(value).map_err(|_| err())?;
            let mut out = std::string::String::new();
            for tk in toks {
                match tk.tok {
                    Tok::Number(n) => out.push_str(&n),
                    Tok::Str(s) => out.push_str(&quote(&s)),
                    Tok::Word(w) if w.eq_ignore_ascii_case("null") => out.push_str("NULL"),
                    Tok::Punct(p) if matches!(p.as_str(), "[" | "]" | "," | "-") => out.push_str(&p),
                    _ => return Err(err()),
                }
            }
            if !out.starts_with('[') {
                return Err(err());
            }
            out
        }
        // Values come in the escaped (TabSeparated) form ClickHouse expects.
        _ => quote(&crate::format::unescape_tsv(value)),
    })
}

/// Replaces every `{name:Type}` outside quotes and comments.
pub fn substitute(sql: &str, params: &HashMap<String, String>) -> Result<String, QueryError> {
    let b = sql.as_bytes();
    let mut out = String::with_capacity(sql.len());
    let mut i = 0;
    let mut copied = 0;
    while i < b.len() {
        match b[i] {
            q @ (b'\'' | b'"' | b'`') => {
                i += 1;
                while i < b.len() && b[i] != q {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i = sql[i + 2..].find("*/").map(|e| i + 2 + e + 2).unwrap_or(b.len());
            }
            b'{' => {
                let Some(close) = sql[i..].find('}').map(|e| i + e) else { break };
                let inner = &sql[i + 1..close];
                let Some((name, ty)) = inner.split_once(':') else {
                    i += 1;
                    continue;
                };
                let name = name.trim();
                if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    i += 1;
                    continue;
                }
                let t = parse_type(ty.trim())?;
                let value = params.get(name).ok_or_else(|| QueryError {
                    code: 456,
                    name: "UNKNOWN_QUERY_PARAMETER",
                    message: format!("Substitution `{name}` is not set"),
                })?;
                out.push_str(&sql[copied..i]);
                out.push_str(&literal(name, value, &t)?);
                i = close + 1;
                copied = i;
            }
            _ => i += 1,
        }
    }
    out.push_str(&sql[copied.min(sql.len())..]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(sql: &str, params: &[(&str, &str)]) -> Result<String, QueryError> {
        substitute(sql, &params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    #[test]
    fn substitutes_typed_literals_only() {
        assert_eq!(sub("SELECT {x:UInt8} + 1", &[("x", "7")]).unwrap(), "SELECT 7 + 1");
        assert_eq!(
            sub("SELECT * FROM t WHERE s = {s:String}", &[("s", "o'neil; DROP TABLE t")]).unwrap(),
            "SELECT * FROM t WHERE s = 'o\\'neil; DROP TABLE t'"
        );
        assert_eq!(sub("SELECT '{x:UInt8}'", &[]).unwrap(), "SELECT '{x:UInt8}'");
        assert_eq!(sub("SELECT {a:Array(UInt8)}", &[("a", "[1, 2]")]).unwrap(), "SELECT [1,2]");
        assert_eq!(sub("SELECT {n:Nullable(Int8)}", &[("n", "\\N")]).unwrap(), "SELECT NULL");
        assert_eq!(sub("SELECT {x:UInt8}", &[("x", "300")]).unwrap_err().code, 26);
        assert_eq!(sub("SELECT {x:UInt8}", &[("x", "1 OR 1=1")]).unwrap_err().code, 26);
        assert_eq!(sub("SELECT {a:Array(UInt8)}", &[("a", "[1] OR 1")]).unwrap_err().code, 26);
        assert_eq!(sub("SELECT {y:UInt8}", &[]).unwrap_err().code, 456);
    }
}
