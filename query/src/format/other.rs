//! JSON, JSONCompact, Pretty and the binary Arrow-family formats (Parquet,
//! Arrow file, ArrowStream).

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::compute::cast;
use arrow::datatypes::{Schema, SchemaRef};

use super::value::{Style, write_value};
use super::{Format, ch_type_name};
use crate::error::QueryError;
use crate::parse::types::CH_TYPE_KEY;

fn ch_type(schema: &Schema, i: usize) -> Option<String> {
    schema.field(i).metadata().get(CH_TYPE_KEY).cloned()
}

/// `JSON` / `JSONCompact`: meta, data, rows.
pub fn json(batches: &[RecordBatch], schema: &Schema, compact: bool) -> Vec<u8> {
    let mut out = String::from("{\n\t\"meta\":\n\t[\n");
    let meta: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| {
            format!(
                "\t\t{{\n\t\t\t\"name\": {},\n\t\t\t\"type\": {}\n\t\t}}",
                serde_json::to_string(f.name()).unwrap_or_default(),
                serde_json::to_string(&ch_type_name(f)).unwrap_or_default()
            )
        })
        .collect();
    out.push_str(&meta.join(",\n"));
    out.push_str("\n\t],\n\n\t\"data\":\n\t[\n");
    let mut rows = Vec::new();
    for b in batches {
        for r in 0..b.num_rows() {
            let mut row = String::from(if compact { "\t\t[" } else { "\t\t{" });
            for (c, col) in b.columns().iter().enumerate() {
                if c > 0 {
                    row.push_str(", ");
                }
                if !compact {
                    row.push_str(&serde_json::to_string(schema.field(c).name()).unwrap_or_default());
                    row.push_str(": ");
                }
                write_value(&mut row, col, r, Style::Json, ch_type(schema, c).as_deref());
            }
            row.push(if compact { ']' } else { '}' });
            rows.push(row);
        }
    }
    out.push_str(&rows.join(",\n"));
    out.push_str(&format!("\n\t],\n\n\t\"rows\": {}\n}}\n", rows.len()));
    out.into_bytes()
}

/// `Pretty` (bold frame) and `PrettyCompact`.
pub fn pretty(batches: &[RecordBatch], schema: &Schema, bold: bool) -> Vec<u8> {
    let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let mut cells: Vec<Vec<String>> = Vec::new();
    for b in batches {
        for r in 0..b.num_rows() {
            cells.push(
                b.columns()
                    .iter()
                    .enumerate()
                    .map(|(c, col)| {
                        let mut s = String::new();
                        write_value(&mut s, col, r, Style::Quoted, ch_type(schema, c).as_deref());
                        s.trim_matches('\'').replace("NULL", "ᴺᵁᴸᴸ")
                    })
                    .collect(),
            );
        }
    }
    let width: Vec<usize> = (0..names.len())
        .map(|c| cells.iter().map(|r| r[c].chars().count()).chain([names[c].chars().count()]).max().unwrap_or(0))
        .collect();
    let line = |l: &str, m: &str, r: &str, fill: &str| -> String {
        let parts: Vec<String> = width.iter().map(|w| fill.repeat(w + 2)).collect();
        format!("{l}{}{r}\n", parts.join(m))
    };
    let row = |vals: &[String], sep: &str| -> String {
        let parts: Vec<String> =
            vals.iter().zip(&width).map(|(v, w)| format!(" {v}{} ", " ".repeat(w - v.chars().count()))).collect();
        format!("{sep}{}{sep}\n", parts.join(sep))
    };
    let mut out = String::new();
    if bold {
        out.push_str(&line("┏", "┳", "┓", "━"));
        out.push_str(&row(&names, "┃"));
        out.push_str(&line("┡", "╇", "┩", "━"));
    } else {
        out.push_str(&line("┌", "┬", "┐", "─"));
        out.push_str(&row(&names, "│"));
        out.push_str(&line("├", "┼", "┤", "─"));
    }
    for r in &cells {
        out.push_str(&row(r, "│"));
    }
    out.push_str(&line("└", "┴", "┘", "─"));
    out.into_bytes()
}

fn arrow_err(e: impl std::fmt::Display) -> QueryError {
    QueryError { code: 1002, name: "UNKNOWN_EXCEPTION", message: e.to_string() }
}

/// Parquet, Arrow file or ArrowStream output.
pub fn binary(format: Format, batches: &[RecordBatch], schema: &Schema) -> Result<Vec<u8>, QueryError> {
    let schema = Arc::new(schema.clone());
    let mut buf = Vec::new();
    match format {
        Format::Parquet => {
            let mut w = parquet::arrow::ArrowWriter::try_new(&mut buf, schema, None).map_err(arrow_err)?;
            for b in batches {
                w.write(b).map_err(arrow_err)?;
            }
            w.close().map_err(arrow_err)?;
        }
        Format::Arrow => {
            let mut w = arrow::ipc::writer::FileWriter::try_new(&mut buf, &schema).map_err(arrow_err)?;
            for b in batches {
                w.write(b).map_err(arrow_err)?;
            }
            w.finish().map_err(arrow_err)?;
        }
        _ => {
            let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut buf, &schema).map_err(arrow_err)?;
            for b in batches {
                w.write(b).map_err(arrow_err)?;
            }
            w.finish().map_err(arrow_err)?;
        }
    }
    Ok(buf)
}

fn input_error(format: Format, e: impl std::fmt::Display) -> QueryError {
    QueryError {
        code: 27,
        name: "CANNOT_PARSE_INPUT_ASSERTION_FAILED",
        message: format!("Cannot read {} input: {e}", format.name()),
    }
}

/// Reads Parquet / Arrow / ArrowStream input; columns are matched by name and
/// cast to the table's types.
pub fn read_binary(format: Format, body: &[u8], schema: &SchemaRef) -> Result<RecordBatch, QueryError> {
    let batches: Vec<RecordBatch> = match format {
        Format::Parquet => read_parquet(body).map_err(|e| input_error(format, e))?,
        Format::Arrow => {
            let r = arrow::ipc::reader::FileReader::try_new(std::io::Cursor::new(body), None)
                .map_err(|e| input_error(format, e))?;
            r.collect::<Result<_, _>>().map_err(|e| input_error(format, e))?
        }
        Format::ArrowStream => {
            let r = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(body), None)
                .map_err(|e| input_error(format, e))?;
            r.collect::<Result<_, _>>().map_err(|e| input_error(format, e))?
        }
        Format::RowBinary => vec![super::binary::read_row_binary(body, schema, false)?],
        Format::RowBinaryWithNamesAndTypes => vec![super::binary::read_row_binary(body, schema, true)?],
        Format::Native => super::binary::read_native(body)?,
        f => return Err(input_error(f, "the format is not suitable for input")),
    };
    conform(format, batches, schema)
}

/// Decodes a Parquet body, its row groups spread over the cores (a bulk
/// load's decoding was single-threaded and the load's longest step), the
/// batches in row-group order so that a retried insert cuts the same blocks.
fn read_parquet(body: &[u8]) -> Result<Vec<RecordBatch>, parquet::errors::ParquetError> {
    use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ParquetRecordBatchReaderBuilder};
    let bytes = bytes::Bytes::copy_from_slice(body);
    let meta = ArrowReaderMetadata::load(&bytes, Default::default())?;
    let groups = meta.metadata().num_row_groups();
    let read = |rg: usize| -> Result<Vec<RecordBatch>, parquet::errors::ParquetError> {
        ParquetRecordBatchReaderBuilder::new_with_metadata(bytes.clone(), meta.clone())
            .with_row_groups(vec![rg])
            .with_batch_size(64 * 1024)
            .build()?
            .map(|b| b.map_err(parquet::errors::ParquetError::from))
            .collect()
    };
    let threads = storage::cores().min(groups).max(1);
    if threads == 1 {
        return Ok((0..groups).map(read).collect::<Result<Vec<_>, _>>()?.into_iter().flatten().collect());
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut done: Vec<(usize, Vec<RecordBatch>)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    storage::cpu::timed(|| -> Result<Vec<(usize, Vec<RecordBatch>)>, parquet::errors::ParquetError> {
                        let mut mine = Vec::new();
                        loop {
                            let rg = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            if rg >= groups {
                                return Ok(mine);
                            }
                            mine.push((rg, read(rg)?));
                        }
                    })
                })
            })
            .collect();
        let mut all = Vec::new();
        for w in workers {
            match w.join() {
                Ok((r, cpu)) => {
                    // The query log counts the decoding threads' CPU too.
                    storage::cpu::charge_helpers(cpu);
                    all.extend(r?)
                }
                Err(_) => return Err(parquet::errors::ParquetError::General("a decoding thread panicked".into())),
            }
        }
        Ok(all)
    })?;
    done.sort_by_key(|(rg, _)| *rg);
    Ok(done.into_iter().flat_map(|(_, b)| b).collect())
}

/// Matches input batches' columns to `schema` by name, casting each to the
/// table's type; columns the input lacks get their defaults.
fn conform(format: Format, batches: Vec<RecordBatch>, schema: &SchemaRef) -> Result<RecordBatch, QueryError> {
    let n: usize = batches.iter().map(|b| b.num_rows()).sum();
    let mut cols = Vec::with_capacity(schema.fields().len());
    for f in schema.fields() {
        let mut parts = Vec::new();
        for b in &batches {
            match b.column_by_name(f.name()) {
                Some(c) => parts.push(cast(c, f.data_type()).map_err(|e| QueryError {
                    code: 53,
                    name: "TYPE_MISMATCH",
                    message: format!("column `{}`: {e}", f.name()),
                })?),
                None => parts.push(super::read::default_column(f, b.num_rows())?),
            }
        }
        let refs: Vec<&dyn arrow::array::Array> = parts.iter().map(|a| a.as_ref()).collect();
        let mut col = if refs.is_empty() {
            super::read::default_column(f, 0)?
        } else {
            arrow::compute::concat(&refs).map_err(arrow_err)?
        };
        col = super::read::null_as_default(f, col)?;
        cols.push(col);
    }
    RecordBatch::try_new_with_options(
        schema.clone(),
        cols,
        &arrow::array::RecordBatchOptions::new().with_row_count(Some(n)),
    )
    .map_err(|e| input_error(format, e))
}
