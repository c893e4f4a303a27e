//! ClickHouse formats in and out of Arrow: TabSeparated (+WithNames,
//! +WithNamesAndTypes), CSV (+WithNames), JSONEachRow, JSON, Pretty, Parquet,
//! Arrow, ArrowStream, RowBinary (+WithNamesAndTypes) and Native.

pub mod binary;
mod other;
mod read;
pub mod value;
pub mod values;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, TimeUnit};

use crate::error::QueryError;
use crate::parse::types::CH_TYPE_KEY;
pub(crate) use read::unescape_tsv;
pub use read::{default_column, null_as_default, read};
use value::{Style, write_value};

/// A data format by its ClickHouse name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    TabSeparated,
    TabSeparatedWithNames,
    TabSeparatedWithNamesAndTypes,
    Csv,
    CsvWithNames,
    JsonEachRow,
    Json,
    JsonCompact,
    Pretty,
    PrettyCompact,
    Parquet,
    Arrow,
    ArrowStream,
    RowBinary,
    RowBinaryWithNamesAndTypes,
    Native,
}

impl Format {
    /// Parses a format name as ClickHouse does (`TSV` is `TabSeparated`, …).
    pub fn from_name(name: &str) -> Result<Format, QueryError> {
        Ok(match name {
            "TabSeparated" | "TSV" => Format::TabSeparated,
            "TabSeparatedWithNames" | "TSVWithNames" => Format::TabSeparatedWithNames,
            "TabSeparatedWithNamesAndTypes" | "TSVWithNamesAndTypes" => Format::TabSeparatedWithNamesAndTypes,
            "CSV" => Format::Csv,
            "CSVWithNames" => Format::CsvWithNames,
            "JSONEachRow" | "JSONLines" | "NDJSON" => Format::JsonEachRow,
            "JSON" => Format::Json,
            "JSONCompact" => Format::JsonCompact,
            "Pretty" => Format::Pretty,
            "PrettyCompact" => Format::PrettyCompact,
            "Parquet" => Format::Parquet,
            "Arrow" => Format::Arrow,
            "ArrowStream" => Format::ArrowStream,
            "RowBinary" => Format::RowBinary,
            "RowBinaryWithNamesAndTypes" => Format::RowBinaryWithNamesAndTypes,
            "Native" => Format::Native,
            other => {
                return Err(QueryError {
                    code: 73,
                    name: "UNKNOWN_FORMAT",
                    message: format!("Unknown format {other}"),
                });
            }
        })
    }

    /// The canonical ClickHouse name.
    pub fn name(self) -> &'static str {
        match self {
            Format::TabSeparated => "TabSeparated",
            Format::TabSeparatedWithNames => "TabSeparatedWithNames",
            Format::TabSeparatedWithNamesAndTypes => "TabSeparatedWithNamesAndTypes",
            Format::Csv => "CSV",
            Format::CsvWithNames => "CSVWithNames",
            Format::JsonEachRow => "JSONEachRow",
            Format::Json => "JSON",
            Format::JsonCompact => "JSONCompact",
            Format::Pretty => "Pretty",
            Format::PrettyCompact => "PrettyCompact",
            Format::Parquet => "Parquet",
            Format::Arrow => "Arrow",
            Format::ArrowStream => "ArrowStream",
            Format::RowBinary => "RowBinary",
            Format::RowBinaryWithNamesAndTypes => "RowBinaryWithNamesAndTypes",
            Format::Native => "Native",
        }
    }

    /// The `Content-Type` ClickHouse answers with.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Csv | Format::CsvWithNames => "text/csv; charset=UTF-8; header=absent",
            Format::JsonEachRow => "application/x-ndjson; charset=UTF-8",
            Format::Json | Format::JsonCompact => "application/json; charset=UTF-8",
            Format::Pretty | Format::PrettyCompact => "text/plain; charset=UTF-8",
            Format::Parquet
            | Format::Arrow
            | Format::ArrowStream
            | Format::RowBinary
            | Format::RowBinaryWithNamesAndTypes
            | Format::Native => "application/octet-stream",
            _ => "text/tab-separated-values; charset=UTF-8",
        }
    }
}

/// The ClickHouse type name of a field: the declared one, else derived from Arrow.
pub fn ch_type_name(f: &Field) -> String {
    if let Some(t) = f.metadata().get(CH_TYPE_KEY) {
        return t.clone();
    }
    let base = match f.data_type() {
        DataType::Int8 => "Int8".to_string(),
        DataType::Int16 => "Int16".into(),
        DataType::Int32 => "Int32".into(),
        DataType::Int64 => "Int64".into(),
        DataType::UInt8 => "UInt8".into(),
        DataType::UInt16 => "UInt16".into(),
        DataType::UInt32 => "UInt32".into(),
        DataType::UInt64 => "UInt64".into(),
        DataType::Float32 => "Float32".into(),
        DataType::Float64 => "Float64".into(),
        DataType::Boolean => "Bool".into(),
        DataType::Decimal128(p, s) => format!("Decimal({p}, {s})"),
        DataType::Date32 => "Date32".into(),
        DataType::Timestamp(TimeUnit::Second, _) => "DateTime".into(),
        DataType::Timestamp(u, _) => format!("DateTime64({})", value::datetime_digits(*u, None)),
        DataType::FixedSizeBinary(n) => format!("FixedString({n})"),
        DataType::List(inner) => format!("Array({})", ch_type_name(inner)),
        _ => "String".into(),
    };
    if f.is_nullable() && !matches!(f.data_type(), DataType::List(_)) { format!("Nullable({base})") } else { base }
}

fn write_header(out: &mut String, names: &[String], style: Style) {
    for (i, n) in names.iter().enumerate() {
        if i > 0 {
            out.push(if style == Style::Csv { ',' } else { '\t' });
        }
        match style {
            Style::Csv => {
                out.push('"');
                out.push_str(&n.replace('"', "\"\""));
                out.push('"');
            }
            _ => out.push_str(n),
        }
    }
    out.push('\n');
}

/// Writes batches in a format.
pub fn write(
    format: Format,
    batches: &[RecordBatch],
    schema: &arrow::datatypes::Schema,
) -> Result<Vec<u8>, QueryError> {
    match format {
        Format::Json | Format::JsonCompact => return Ok(other::json(batches, schema, format == Format::JsonCompact)),
        Format::Pretty | Format::PrettyCompact => return Ok(other::pretty(batches, schema, format == Format::Pretty)),
        Format::Parquet | Format::Arrow | Format::ArrowStream => return other::binary(format, batches, schema),
        Format::RowBinary => return binary::write_row_binary(batches, schema, false),
        Format::RowBinaryWithNamesAndTypes => return binary::write_row_binary(batches, schema, true),
        Format::Native => return binary::write_native(batches, schema),
        _ => {}
    }
    Ok(write_text(format, batches, schema))
}

fn write_text(format: Format, batches: &[RecordBatch], schema: &arrow::datatypes::Schema) -> Vec<u8> {
    let mut out = String::new();
    let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let types: Vec<Option<String>> = schema.fields().iter().map(|f| f.metadata().get(CH_TYPE_KEY).cloned()).collect();
    let style = match format {
        Format::Csv | Format::CsvWithNames => Style::Csv,
        Format::JsonEachRow => Style::Json,
        _ => Style::Tsv,
    };
    match format {
        Format::TabSeparatedWithNames | Format::TabSeparatedWithNamesAndTypes | Format::CsvWithNames => {
            write_header(&mut out, &names, style)
        }
        _ => {}
    }
    if format == Format::TabSeparatedWithNamesAndTypes {
        let t: Vec<String> = schema.fields().iter().map(|f| ch_type_name(f)).collect();
        write_header(&mut out, &t, style);
    }
    let sep = if style == Style::Csv { ',' } else { '\t' };
    for b in batches {
        for row in 0..b.num_rows() {
            if style == Style::Json {
                out.push('{');
                for (c, col) in b.columns().iter().enumerate() {
                    if c > 0 {
                        out.push(',');
                    }
                    out.push_str(&serde_json::to_string(&names[c]).unwrap_or_default());
                    out.push(':');
                    write_value(&mut out, col, row, style, types[c].as_deref());
                }
                out.push_str("}\n");
            } else {
                for (c, col) in b.columns().iter().enumerate() {
                    if c > 0 {
                        out.push(sep);
                    }
                    write_value(&mut out, col, row, style, types[c].as_deref());
                }
                out.push('\n');
            }
        }
    }
    out.into_bytes()
}
