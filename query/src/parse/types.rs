//! ClickHouse data types: parsed from their SQL spelling, printed canonically,
//! and mapped onto Arrow. Every field keeps its ClickHouse type in the field
//! metadata ([`CH_TYPE_KEY`]) so `DESCRIBE` shows what the user declared
//! (Date vs Date32, LowCardinality, UUID) though Arrow has fewer types.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, TimeUnit};
use storage::agg::{AGG_META_KEY, AggregateFunction};

use super::lexer::{Tok, Token, lex};
use crate::error::QueryError;

/// Field metadata key holding the declared ClickHouse type.
pub const CH_TYPE_KEY: &str = "clickhouse.type";

/// A ClickHouse data type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChType {
    UInt8,
    UInt16,
    UInt32,
    UInt64,
    Int8,
    Int16,
    Int32,
    Int64,
    Float32,
    Float64,
    Decimal { precision: u8, scale: i8 },
    Bool,
    String,
    FixedString(usize),
    Uuid,
    Date,
    Date32,
    DateTime(Option<String>),
    DateTime64(u8, Option<String>),
    Nullable(Box<ChType>),
    LowCardinality(Box<ChType>),
    Array(Box<ChType>),
    AggregateFunction(AggregateFunction, Vec<ChType>),
}

impl fmt::Display for ChType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ChType::*;
        match self {
            UInt8 => write!(f, "UInt8"),
            UInt16 => write!(f, "UInt16"),
            UInt32 => write!(f, "UInt32"),
            UInt64 => write!(f, "UInt64"),
            Int8 => write!(f, "Int8"),
            Int16 => write!(f, "Int16"),
            Int32 => write!(f, "Int32"),
            Int64 => write!(f, "Int64"),
            Float32 => write!(f, "Float32"),
            Float64 => write!(f, "Float64"),
            Decimal { precision, scale } => write!(f, "Decimal({precision}, {scale})"),
            Bool => write!(f, "Bool"),
            String => write!(f, "String"),
            FixedString(n) => write!(f, "FixedString({n})"),
            Uuid => write!(f, "UUID"),
            Date => write!(f, "Date"),
            Date32 => write!(f, "Date32"),
            DateTime(None) => write!(f, "DateTime"),
            DateTime(Some(tz)) => write!(f, "DateTime('{tz}')"),
            DateTime64(p, None) => write!(f, "DateTime64({p})"),
            DateTime64(p, Some(tz)) => write!(f, "DateTime64({p}, '{tz}')"),
            Nullable(t) => write!(f, "Nullable({t})"),
            LowCardinality(t) => write!(f, "LowCardinality({t})"),
            Array(t) => write!(f, "Array({t})"),
            AggregateFunction(func, args) => {
                write!(f, "AggregateFunction({}", func.name())?;
                for a in args {
                    write!(f, ", {a}")?;
                }
                write!(f, ")")
            }
        }
    }
}

/// A type argument: a nested type, a number, a string or a bare name.
#[derive(Debug, Clone, PartialEq)]
enum Arg {
    Type(ChType),
    Number(String),
    Str(String),
    Name(String),
}

struct TypeParser<'a> {
    toks: &'a [Token],
    pos: usize,
}

impl TypeParser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.toks.get(self.pos)
    }

    fn args(&mut self) -> Result<Vec<Arg>, QueryError> {
        let mut out = Vec::new();
        if !self.peek().is_some_and(|t| t.is_punct("(")) {
            return Ok(out);
        }
        self.pos += 1;
        if self.peek().is_some_and(|t| t.is_punct(")")) {
            self.pos += 1;
            return Ok(out);
        }
        loop {
            let t = self.peek().cloned().ok_or_else(|| QueryError::syntax("unexpected end of data type"))?;
            let arg = match &t.tok {
                Tok::Number(n) => {
                    self.pos += 1;
                    Arg::Number(n.clone())
                }
                Tok::Str(s) => {
                    self.pos += 1;
                    Arg::Str(s.clone())
                }
                Tok::Word(w) | Tok::Quoted(w) => match self.parse_type() {
                    Ok(ty) => Arg::Type(ty),
                    Err(e) if e.code == 50 => {
                        // Not a type: a bare name such as an aggregate function;
                        // its parameters, if any, are skipped.
                        self.pos += 1;
                        let _ = self.args()?;
                        Arg::Name(w.clone())
                    }
                    Err(e) => return Err(e),
                },
                _ => return Err(QueryError::syntax("unexpected token in data type arguments")),
            };
            out.push(arg);
            match self.peek() {
                Some(t) if t.is_punct(",") => self.pos += 1,
                Some(t) if t.is_punct(")") => {
                    self.pos += 1;
                    return Ok(out);
                }
                _ => return Err(QueryError::syntax("expected ',' or ')' in data type arguments")),
            }
        }
    }

    fn parse_type(&mut self) -> Result<ChType, QueryError> {
        let start = self.pos;
        let name = match self.peek().and_then(|t| t.ident()) {
            Some(n) => n.to_string(),
            None => return Err(QueryError::syntax("expected a data type")),
        };
        self.pos += 1;
        if let Some(t) = simple_type(&name) {
            no_args(&name, &self.args()?)?;
            return Ok(t);
        }
        if is_string_alias(&name) {
            self.args()?;
            return Ok(ChType::String);
        }
        match complex(&name) {
            Some(ctor) => {
                let args = self.args()?;
                ctor(&name, args)
            }
            None => {
                self.pos = start;
                Err(QueryError::unknown_type(&name))
            }
        }
    }
}

type Ctor = fn(&str, Vec<Arg>) -> Result<ChType, QueryError>;

fn no_args(name: &str, args: &[Arg]) -> Result<(), QueryError> {
    if args.is_empty() { Ok(()) } else { Err(QueryError::arguments(format!("Data type {name} cannot have arguments"))) }
}

fn one_type(name: &str, args: Vec<Arg>) -> Result<ChType, QueryError> {
    match <[Arg; 1]>::try_from(args) {
        Ok([Arg::Type(t)]) => Ok(t),
        _ => Err(QueryError::arguments(format!("{name} data type family must have exactly one type argument"))),
    }
}

fn number<T: std::str::FromStr>(name: &str, a: &Arg) -> Result<T, QueryError> {
    match a {
        Arg::Number(n) => n.parse().map_err(|_| QueryError::bad_arguments(format!("{name}: bad argument {n}"))),
        _ => Err(QueryError::bad_arguments(format!("{name}: expected a number argument"))),
    }
}

/// Types without parameters, by name; the SQL-standard aliases are
/// case-insensitive, as in ClickHouse.
fn simple_type(name: &str) -> Option<ChType> {
    Some(match name {
        "UInt8" => ChType::UInt8,
        "UInt16" => ChType::UInt16,
        "UInt32" => ChType::UInt32,
        "UInt64" => ChType::UInt64,
        "Int8" => ChType::Int8,
        "Int16" => ChType::Int16,
        "Int32" => ChType::Int32,
        "Int64" => ChType::Int64,
        "Float32" => ChType::Float32,
        "Float64" => ChType::Float64,
        "Bool" => ChType::Bool,
        "String" => ChType::String,
        "UUID" => ChType::Uuid,
        "Date" => ChType::Date,
        "Date32" => ChType::Date32,
        _ => match name.to_ascii_uppercase().as_str() {
            "TINYINT" | "INT1" => ChType::Int8,
            "SMALLINT" => ChType::Int16,
            "INT" | "INTEGER" => ChType::Int32,
            "BIGINT" => ChType::Int64,
            "FLOAT" | "REAL" => ChType::Float32,
            "DOUBLE" => ChType::Float64,
            "BOOLEAN" => ChType::Bool,
            _ => return None,
        },
    })
}

/// Whether `name` is a string alias that accepts and ignores a length.
fn is_string_alias(name: &str) -> bool {
    matches!(name.to_ascii_uppercase().as_str(), "TEXT" | "VARCHAR" | "CHAR")
}

fn complex(name: &str) -> Option<Ctor> {
    Some(match name {
        "Decimal" => |n, a| match a.as_slice() {
            [p] => Ok(ChType::Decimal { precision: decimal_precision(n, number(n, p)?)?, scale: 0 }),
            [p, s] => decimal(n, number(n, p)?, number(n, s)?),
            _ => Err(QueryError::arguments("Decimal data type family must have one or two arguments")),
        },
        "Decimal32" => |n, a| decimal(n, 9, number(n, one(n, &a)?)?),
        "Decimal64" => |n, a| decimal(n, 18, number(n, one(n, &a)?)?),
        "Decimal128" => |n, a| decimal(n, 38, number(n, one(n, &a)?)?),
        "FixedString" => |n, a| {
            let len: usize = number(n, one(n, &a)?)?;
            if len == 0 || len > (1 << 20) {
                return Err(QueryError::bad_arguments("FixedString length must be between 1 and 1048576"));
            }
            Ok(ChType::FixedString(len))
        },
        "DateTime" => |n, a| match a.as_slice() {
            [] => Ok(ChType::DateTime(None)),
            [Arg::Str(tz)] => Ok(ChType::DateTime(Some(tz.clone()))),
            _ => Err(QueryError::arguments(format!("{n} takes at most one time zone argument"))),
        },
        "DateTime64" => |n, a| {
            let (p, tz) = match a.as_slice() {
                [p] => (number::<u8>(n, p)?, None),
                [p, Arg::Str(tz)] => (number::<u8>(n, p)?, Some(tz.clone())),
                _ => return Err(QueryError::arguments("DateTime64 takes a precision and an optional time zone")),
            };
            if p > 9 {
                return Err(QueryError::bad_arguments(format!("DateTime64 precision {p} is too large, maximum 9")));
            }
            Ok(ChType::DateTime64(p, tz))
        },
        "Nullable" => |n, a| {
            let inner = one_type(n, a)?;
            if matches!(
                inner,
                ChType::Array(_) | ChType::Nullable(_) | ChType::LowCardinality(_) | ChType::AggregateFunction(..)
            ) {
                return Err(QueryError::new_illegal(format!("Nested type {inner} cannot be inside Nullable type")));
            }
            Ok(ChType::Nullable(Box::new(inner)))
        },
        "LowCardinality" => |n, a| Ok(ChType::LowCardinality(Box::new(one_type(n, a)?))),
        "Array" => |n, a| Ok(ChType::Array(Box::new(one_type(n, a)?))),
        "AggregateFunction" => |_, a| {
            let mut it = a.into_iter();
            let func = match it.next() {
                Some(Arg::Name(f)) => AggregateFunction::parse(&f)
                    .ok_or_else(|| QueryError::bad_arguments(format!("Unsupported aggregate function {f}")))?,
                _ => return Err(QueryError::arguments("AggregateFunction needs a function name first")),
            };
            let args = it
                .map(|a| match a {
                    Arg::Type(t) => Ok(t),
                    _ => Err(QueryError::bad_arguments("AggregateFunction arguments must be types")),
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(ChType::AggregateFunction(func, args))
        },
        _ => return None,
    })
}

fn one<'a>(name: &str, a: &'a [Arg]) -> Result<&'a Arg, QueryError> {
    match a {
        [x] => Ok(x),
        _ => Err(QueryError::arguments(format!("{name} data type family must have exactly one argument"))),
    }
}

fn decimal_precision(name: &str, p: u8) -> Result<u8, QueryError> {
    if (1..=38).contains(&p) {
        Ok(p)
    } else {
        Err(QueryError::bad_arguments(format!("{name}: precision {p} is out of bounds (1..=38)")))
    }
}

fn decimal(name: &str, p: u8, s: i8) -> Result<ChType, QueryError> {
    let precision = decimal_precision(name, p)?;
    if s < 0 || s as u8 > precision {
        return Err(QueryError::bad_arguments(format!("{name}: scale {s} is out of bounds (0..={precision})")));
    }
    Ok(ChType::Decimal { precision, scale: s })
}

impl QueryError {
    fn new_illegal(message: String) -> Self {
        QueryError { code: 43, name: "ILLEGAL_TYPE_OF_ARGUMENT", message }
    }
}

/// Parses a type from tokens starting at `*pos`, advancing past it.
pub fn parse_type_tokens(toks: &[Token], pos: &mut usize) -> Result<ChType, QueryError> {
    let mut p = TypeParser { toks, pos: *pos };
    let t = p.parse_type()?;
    *pos = p.pos;
    Ok(t)
}

/// Parses a whole type string such as `Nullable(DateTime64(3, 'UTC'))`.
pub fn parse_type(text: &str) -> Result<ChType, QueryError> {
    let toks = lex(text)?;
    let mut pos = 0;
    let t = parse_type_tokens(&toks, &mut pos)?;
    if pos != toks.len() {
        return Err(QueryError::syntax(format!("unexpected text after data type in '{text}'")));
    }
    Ok(t)
}

impl ChType {
    /// The Arrow type values of this type are stored as.
    pub fn arrow_type(&self) -> DataType {
        use ChType::*;
        match self {
            UInt8 => DataType::UInt8,
            UInt16 => DataType::UInt16,
            UInt32 => DataType::UInt32,
            UInt64 => DataType::UInt64,
            Int8 => DataType::Int8,
            Int16 => DataType::Int16,
            Int32 => DataType::Int32,
            Int64 => DataType::Int64,
            Float32 => DataType::Float32,
            Float64 => DataType::Float64,
            Decimal { precision, scale } => DataType::Decimal128(*precision, *scale),
            Bool => DataType::Boolean,
            String => DataType::Utf8,
            FixedString(n) => DataType::FixedSizeBinary(*n as i32),
            Uuid => DataType::FixedSizeBinary(16),
            Date | Date32 => DataType::Date32,
            DateTime(tz) => DataType::Timestamp(TimeUnit::Second, tz.as_deref().map(Arc::from)),
            DateTime64(p, tz) => {
                let unit = match p {
                    0 => TimeUnit::Second,
                    1..=3 => TimeUnit::Millisecond,
                    4..=6 => TimeUnit::Microsecond,
                    _ => TimeUnit::Nanosecond,
                };
                DataType::Timestamp(unit, tz.as_deref().map(Arc::from))
            }
            Nullable(t) | LowCardinality(t) => t.arrow_type(),
            Array(t) => DataType::List(Arc::new(Field::new("item", t.arrow_type(), t.is_nullable()))),
            AggregateFunction(..) => DataType::Binary,
        }
    }

    /// Whether values may be NULL.
    pub fn is_nullable(&self) -> bool {
        match self {
            ChType::Nullable(_) => true,
            ChType::LowCardinality(t) => t.is_nullable(),
            _ => false,
        }
    }

    /// The Arrow field of a column of this type, carrying the ClickHouse type.
    pub fn field(&self, name: &str) -> Field {
        let mut meta = HashMap::from([(CH_TYPE_KEY.to_string(), self.to_string())]);
        if let ChType::AggregateFunction(f, _) = self {
            meta.insert(AGG_META_KEY.to_string(), f.name().to_string());
        }
        Field::new(name, self.arrow_type(), self.is_nullable()).with_metadata(meta)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_every_listed_type() {
        for t in [
            "UInt8",
            "UInt16",
            "UInt32",
            "UInt64",
            "Int8",
            "Int16",
            "Int32",
            "Int64",
            "Float32",
            "Float64",
            "Decimal(10, 2)",
            "Bool",
            "String",
            "FixedString(16)",
            "UUID",
            "Date",
            "Date32",
            "DateTime",
            "DateTime('Europe/Moscow')",
            "DateTime64(3)",
            "DateTime64(6, 'UTC')",
            "Nullable(String)",
            "LowCardinality(String)",
            "LowCardinality(Nullable(String))",
            "Array(UInt8)",
            "Array(Nullable(Int64))",
            "Array(Array(String))",
            "AggregateFunction(uniqExact, UInt64)",
            "AggregateFunction(sum, Float64)",
        ] {
            assert_eq!(parse_type(t).unwrap().to_string(), t);
        }
        assert_eq!(parse_type("Decimal32(4)").unwrap().to_string(), "Decimal(9, 4)");
        assert_eq!(parse_type("BIGINT").unwrap(), ChType::Int64);
        assert_eq!(parse_type("varchar").unwrap(), ChType::String);
    }

    #[test]
    fn maps_onto_arrow() {
        let f = parse_type("Nullable(DateTime64(3, 'UTC'))").unwrap().field("t");
        assert_eq!(f.data_type(), &DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())));
        assert!(f.is_nullable());
        assert_eq!(f.metadata()[CH_TYPE_KEY], "Nullable(DateTime64(3, 'UTC'))");
        let agg = parse_type("AggregateFunction(uniqExact, UInt64)").unwrap().field("u");
        assert_eq!(AggregateFunction::from_field(&agg).unwrap(), Some(AggregateFunction::UniqExact));
        assert!(!parse_type("UInt8").unwrap().field("x").is_nullable());
    }

    #[test]
    fn bad_types_are_clear_errors() {
        let cases = [
            ("Strin", 50),
            ("Decimal(40, 2)", 36),
            ("Decimal(5, 6)", 36),
            ("FixedString(0)", 36),
            ("Nullable(Array(UInt8))", 43),
            ("UInt8(3)", 42),
            ("DateTime64(12)", 36),
            ("Array(UInt8", 62),
            ("AggregateFunction(median, Float64)", 36),
            ("Array(UInt8) extra", 62),
        ];
        for (t, code) in cases {
            let e = parse_type(t).unwrap_err();
            assert_eq!(e.code, code, "{t}: {e}");
            assert!(e.to_string().starts_with(&format!("Code: {code}. DB::Exception: ")), "{e}");
        }
    }
}
