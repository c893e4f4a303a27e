//! Parsing text formats into one Arrow batch. Values are cast column by
//! column; a value that does not parse is reported with its row, column and
//! text, and nothing of the block is accepted.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BinaryArray, FixedSizeBinaryBuilder, RecordBatch, StringArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, SchemaRef};

use super::Format;
use crate::error::QueryError;
use crate::parse::types::CH_TYPE_KEY;

fn parse_error(message: String) -> QueryError {
    QueryError { code: 27, name: "CANNOT_PARSE_INPUT_ASSERTION_FAILED", message }
}

fn text_error(message: String) -> QueryError {
    QueryError { code: 6, name: "CANNOT_PARSE_TEXT", message }
}

/// Rows of optional field texts, plus the column each field goes to.
struct Table {
    columns: Vec<usize>,
    rows: Vec<Vec<Option<String>>>,
}

/// Undoes TabSeparated escaping (`\\t`, `\\n`, `\\\\`, …).
pub(crate) fn unescape_tsv(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('0') => out.push('\0'),
            Some('b') => out.push('\x08'),
            Some('f') => out.push('\x0c'),
            Some(o) => out.push(o),
            None => out.push('\\'),
        }
    }
    out
}

fn header_columns(names: &[String], schema: &SchemaRef) -> Result<Vec<usize>, QueryError> {
    names
        .iter()
        .map(|n| {
            schema.index_of(n).map_err(|_| QueryError {
                code: 16,
                name: "NO_SUCH_COLUMN_IN_TABLE",
                message: format!("There is no column `{n}` in table (from the header)"),
            })
        })
        .collect()
}

fn tsv(text: &str, schema: &SchemaRef, names: bool, types: bool) -> Result<Table, QueryError> {
    let mut lines = text.split('\n').collect::<Vec<_>>();
    if lines.last() == Some(&"") {
        lines.pop();
    }
    let mut lines = lines.into_iter();
    let columns = if names {
        let header: Vec<String> = lines.next().unwrap_or_default().split('\t').map(unescape_tsv).collect();
        if types {
            lines.next();
        }
        header_columns(&header, schema)?
    } else {
        (0..schema.fields().len()).collect()
    };
    let mut rows = Vec::new();
    for (r, line) in lines.enumerate() {
        let fields: Vec<&str> = line.split('\t').collect();
        if fields.len() != columns.len() {
            return Err(parse_error(format!(
                "Cannot parse input: expected {} tab-separated fields, got {} (at row {})",
                columns.len(),
                fields.len(),
                r + 1
            )));
        }
        rows.push(fields.into_iter().map(|f| (f != "\\N").then(|| unescape_tsv(f))).collect());
    }
    Ok(Table { columns, rows })
}

/// Splits CSV into records of fields; `None` is an unquoted `\N`.
fn csv_records(text: &str) -> Result<Vec<Vec<Option<String>>>, QueryError> {
    let mut records = Vec::new();
    let mut chars = text.chars().peekable();
    let mut row: Vec<Option<String>> = Vec::new();
    let mut at_row_start = true;
    loop {
        if at_row_start && chars.peek().is_none() {
            break;
        }
        at_row_start = false;
        let mut field = String::new();
        let mut quoted = false;
        if chars.peek() == Some(&'"') {
            quoted = true;
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                    None => {
                        return Err(parse_error(format!(
                            "Cannot parse input: unterminated quoted field (at row {})",
                            records.len() + 1
                        )));
                    }
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' || c == '\n' || c == '\r' {
                    break;
                }
                field.push(c);
                chars.next();
            }
        }
        row.push(if !quoted && field == "\\N" { None } else { Some(field) });
        match chars.next() {
            Some(',') => {}
            Some('\r') => {
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
                records.push(std::mem::take(&mut row));
                at_row_start = true;
            }
            Some('\n') | None => {
                records.push(std::mem::take(&mut row));
                at_row_start = true;
                if chars.peek().is_none() {
                    break;
                }
            }
            Some(c) => {
                return Err(parse_error(format!(
                    "Cannot parse input: expected ',' after a quoted field, got '{c}' (at row {})",
                    records.len() + 1
                )));
            }
        }
    }
    Ok(records)
}

fn csv(text: &str, schema: &SchemaRef, names: bool) -> Result<Table, QueryError> {
    let mut records = csv_records(text)?.into_iter();
    let columns = if names {
        let header: Vec<String> =
            records.next().unwrap_or_default().into_iter().map(|f| f.unwrap_or_default()).collect();
        header_columns(&header, schema)?
    } else {
        (0..schema.fields().len()).collect()
    };
    let mut rows = Vec::new();
    for (r, rec) in records.enumerate() {
        if rec.len() != columns.len() {
            return Err(parse_error(format!(
                "Cannot parse input: expected {} comma-separated fields, got {} (at row {})",
                columns.len(),
                rec.len(),
                r + 1
            )));
        }
        // An empty unquoted field means the column's default.
        rows.push(rec.into_iter().map(|f| f.filter(|v| !v.is_empty())).collect());
    }
    Ok(Table { columns, rows })
}

fn json_each_row(text: &str, schema: &SchemaRef) -> Result<Table, QueryError> {
    let columns: Vec<usize> = (0..schema.fields().len()).collect();
    let mut rows = Vec::new();
    let stream = serde_json::Deserializer::from_str(text).into_iter::<serde_json::Value>();
    for (r, v) in stream.enumerate() {
        let v = v.map_err(|e| QueryError {
            code: 117,
            name: "INCORRECT_DATA",
            message: format!("Cannot parse JSON object at row {}: {e}", r + 1),
        })?;
        let serde_json::Value::Object(obj) = v else {
            return Err(QueryError {
                code: 117,
                name: "INCORRECT_DATA",
                message: format!("Cannot parse JSON object at row {}: expected '{{'", r + 1),
            });
        };
        // Unknown keys are skipped (ClickHouse's input_format_skip_unknown_fields = 1).
        let row = schema
            .fields()
            .iter()
            .map(|f| match obj.get(f.name()) {
                None | Some(serde_json::Value::Null) => None,
                Some(serde_json::Value::String(s)) => Some(s.clone()),
                Some(other) => Some(other.to_string()),
            })
            .collect();
        rows.push(row);
    }
    Ok(Table { columns, rows })
}

/// NULLs in a non-Nullable column become the column's default, as
/// ClickHouse's `input_format_null_as_default` (on by default) does.
pub fn null_as_default(field: &Field, col: ArrayRef) -> Result<ArrayRef, QueryError> {
    if field.is_nullable() || col.null_count() == 0 {
        return Ok(col);
    }
    let present = arrow::compute::is_not_null(&col).map_err(|e| parse_error(e.to_string()))?;
    let defaults = default_column(field, col.len())?;
    arrow::compute::kernels::zip::zip(&present, &col, &defaults).map_err(|e| parse_error(e.to_string()))
}

/// A column of `n` default values (NULL for Nullable columns).
pub fn default_column(field: &Field, n: usize) -> Result<ArrayRef, QueryError> {
    column_array(field, vec![None; n], 0)
}

/// The text of a column's default value (what a missing or NULL value
/// becomes in a non-Nullable column).
fn default_text(t: &DataType) -> &'static str {
    match t {
        DataType::Utf8 | DataType::Binary | DataType::LargeUtf8 => "",
        DataType::Boolean => "false",
        DataType::Date32 => "1970-01-01",
        DataType::Timestamp(..) => "1970-01-01 00:00:00",
        _ => "0",
    }
}

fn column_array(field: &Field, texts: Vec<Option<String>>, col: usize) -> Result<ArrayRef, QueryError> {
    let t = field.data_type();
    let texts: Vec<Option<String>> = if field.is_nullable() {
        texts
    } else {
        texts.into_iter().map(|v| Some(v.unwrap_or_else(|| default_text(t).to_string()))).collect()
    };
    let bad = |row: usize, v: &str| {
        let ch = field.metadata().get(CH_TYPE_KEY).cloned().unwrap_or_else(|| t.to_string());
        text_error(format!("Cannot parse '{v}' as {ch} (at row {}, column {}: {})", row + 1, col + 1, field.name()))
    };
    match t {
        DataType::Utf8 => return Ok(Arc::new(StringArray::from(texts))),
        DataType::Binary => {
            return Ok(Arc::new(texts.iter().map(|v| v.as_deref().map(str::as_bytes)).collect::<BinaryArray>()));
        }
        DataType::FixedSizeBinary(n) => {
            let uuid = field.metadata().get(CH_TYPE_KEY).is_some_and(|t| t == "UUID");
            let mut b = FixedSizeBinaryBuilder::with_capacity(texts.len(), *n);
            for (r, v) in texts.iter().enumerate() {
                match v {
                    None => b.append_null(),
                    Some(v) if uuid => {
                        let hex: String = v.chars().filter(|c| *c != '-').collect();
                        let bytes = (0..hex.len())
                            .step_by(2)
                            .map(|i| hex.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
                            .collect::<Option<Vec<u8>>>()
                            .filter(|b| b.len() == 16)
                            .ok_or_else(|| bad(r, v))?;
                        b.append_value(&bytes).map_err(|_| bad(r, v))?;
                    }
                    Some(v) => {
                        if v.len() > *n as usize {
                            return Err(QueryError {
                                code: 131,
                                name: "TOO_LARGE_STRING_SIZE",
                                message: format!(
                                    "Too large value for FixedString({n}) at row {}, column {}",
                                    r + 1,
                                    col + 1
                                ),
                            });
                        }
                        let mut bytes = v.as_bytes().to_vec();
                        bytes.resize(*n as usize, 0);
                        b.append_value(&bytes).map_err(|_| bad(r, v))?;
                    }
                }
            }
            return Ok(Arc::new(b.finish()));
        }
        DataType::List(_) => {
            return Err(QueryError::bad_arguments(format!(
                "Reading Array column `{}` from text formats is not supported yet",
                field.name()
            )));
        }
        _ => {}
    }
    let strings: ArrayRef = Arc::new(StringArray::from(texts.clone()));
    let out = cast(&strings, t).map_err(|e| bad(0, &e.to_string()))?;
    // A value that became NULL in the cast did not parse.
    if out.null_count() > strings.null_count() {
        for (r, v) in texts.iter().enumerate() {
            if let Some(v) = v
                && out.is_null(r)
            {
                return Err(bad(r, v));
            }
        }
    }
    Ok(out)
}

/// Parses a request body in `format` into a batch with `schema`.
pub fn read(format: Format, body: &[u8], schema: &SchemaRef) -> Result<RecordBatch, QueryError> {
    if matches!(
        format,
        Format::Parquet
            | Format::Arrow
            | Format::ArrowStream
            | Format::RowBinary
            | Format::RowBinaryWithNamesAndTypes
            | Format::Native
    ) {
        return super::other::read_binary(format, body, schema);
    }
    let text = std::str::from_utf8(body).map_err(|e| {
        parse_error(format!("Cannot parse input: the data is not valid UTF-8 at byte {}", e.valid_up_to()))
    })?;
    let table = match format {
        Format::TabSeparated => tsv(text, schema, false, false)?,
        Format::TabSeparatedWithNames => tsv(text, schema, true, false)?,
        Format::TabSeparatedWithNamesAndTypes => tsv(text, schema, true, true)?,
        Format::Csv => csv(text, schema, false)?,
        Format::CsvWithNames => csv(text, schema, true)?,
        Format::JsonEachRow => json_each_row(text, schema)?,
        f => {
            return Err(QueryError {
                code: 73,
                name: "UNKNOWN_FORMAT",
                message: format!("Format {} is not suitable for input", f.name()),
            });
        }
    };
    rows_to_batch(table.columns, table.rows, schema)
}

/// Builds a batch from rows of cell texts; `columns[k]` is the schema column
/// of each row's `k`-th cell.
pub(crate) fn rows_to_batch(
    columns: Vec<usize>,
    rows: Vec<Vec<Option<String>>>,
    schema: &SchemaRef,
) -> Result<RecordBatch, QueryError> {
    let n = rows.len();
    let mut per_col: Vec<Vec<Option<String>>> = vec![vec![None; n]; schema.fields().len()];
    for (r, row) in rows.into_iter().enumerate() {
        for (k, v) in row.into_iter().enumerate() {
            per_col[columns[k]][r] = v;
        }
    }
    let arrays = schema
        .fields()
        .iter()
        .zip(per_col)
        .enumerate()
        .map(|(c, (f, texts))| column_array(f, texts, c))
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new_with_options(
        schema.clone(),
        arrays,
        &arrow::array::RecordBatchOptions::new().with_row_count(Some(n)),
    )
    .map_err(|e| parse_error(e.to_string()))
}
