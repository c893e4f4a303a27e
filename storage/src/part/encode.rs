//! Parallel Parquet encoding: the columns of a part are encoded by a few worker
//! threads (each owns a fixed set of columns) while the caller sorts or merges
//! the next batch. Column chunks are appended in schema order, so the file is
//! byte-identical to a sequential write with the same properties.

use std::io::Write;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_writer::{
    ArrowColumnChunk, ArrowColumnWriter, ArrowLeafColumn, ArrowRowGroupWriterFactory, compute_leaves,
};
use parquet::errors::{ParquetError, Result};
use parquet::file::metadata::ParquetMetaData;
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;

enum Msg {
    Start(Vec<(usize, ArrowColumnWriter)>),
    Write(Vec<(usize, ArrowLeafColumn)>),
    Close(SyncSender<Result<Vec<(usize, ArrowColumnChunk)>>>),
}

/// An encoder of some columns: on a thread of its own, or — for a part
/// too small to be worth a thread — run by the caller.
enum Worker {
    Thread { tx: SyncSender<Msg>, handle: Option<JoinHandle<()>> },
    Inline(Columns),
}

/// The column writers one worker owns.
#[derive(Default)]
struct Columns {
    writers: Vec<(usize, ArrowColumnWriter)>,
    failed: Option<ParquetError>,
}

impl Columns {
    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Start(w) => self.writers = w,
            Msg::Write(leaves) => {
                if self.failed.is_some() {
                    return;
                }
                for (idx, leaf) in leaves {
                    if let Some((_, w)) = self.writers.iter_mut().find(|(i, _)| *i == idx)
                        && let Err(e) = w.write(&leaf)
                    {
                        self.failed = Some(e);
                        break;
                    }
                }
            }
            Msg::Close(reply) => {
                let result = match self.failed.take() {
                    Some(e) => Err(e),
                    None => std::mem::take(&mut self.writers)
                        .into_iter()
                        .map(|(i, w)| w.close().map(|c| (i, c)))
                        .collect::<Result<Vec<_>>>(),
                };
                let _ = reply.send(result);
            }
        }
    }
}

fn worker_loop(rx: Receiver<Msg>) {
    let mut columns = Columns::default();
    for msg in rx {
        columns.handle(msg);
    }
}

/// Writes record batches to a Parquet file, encoding columns in parallel.
pub struct ParallelEncoder<W: Write + Send> {
    file: SerializedFileWriter<W>,
    factory: ArrowRowGroupWriterFactory,
    schema: SchemaRef,
    workers: Vec<Worker>,
    /// Worker of each leaf column.
    owner: Vec<usize>,
    row_group_size: usize,
    rows_in_group: usize,
    row_groups: usize,
}

/// Encoding threads to use: one per core, at most four.
fn worker_count() -> usize {
    crate::cores().clamp(1, 4)
}

fn weight(t: &DataType) -> usize {
    match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Binary | DataType::LargeBinary | DataType::Utf8View => 4,
        _ => 1,
    }
}

impl<W: Write + Send> ParallelEncoder<W> {
    pub fn try_new(sink: W, schema: SchemaRef, props: WriterProperties, row_group_size: usize) -> Result<Self> {
        Self::with_workers(sink, schema, props, row_group_size, worker_count())
    }

    /// An encoder with at most `max_workers` threads; with one, the caller
    /// encodes (starting threads costs more than encoding a small part).
    pub fn with_workers(
        sink: W,
        schema: SchemaRef,
        props: WriterProperties,
        row_group_size: usize,
        max_workers: usize,
    ) -> Result<Self> {
        let (file, factory) = ArrowWriter::try_new(sink, schema.clone(), Some(props))?.into_serialized_writer()?;
        // Leaves in schema order, each given to the least loaded worker.
        let mut weights = Vec::new();
        for f in schema.fields() {
            let leaves = parquet_leaf_count(f.data_type());
            for _ in 0..leaves {
                weights.push(weight(f.data_type()));
            }
        }
        let n = max_workers.clamp(1, worker_count()).min(weights.len().max(1));
        let mut load = vec![0usize; n];
        let mut order: Vec<usize> = (0..weights.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(weights[i]));
        let mut owner = vec![0usize; weights.len()];
        for i in order {
            let w = (0..n).min_by_key(|&w| load[w]).unwrap_or(0);
            owner[i] = w;
            load[w] += weights[i];
        }
        let workers = match n {
            1 => vec![Worker::Inline(Columns::default())],
            _ => (0..n)
                .map(|_| {
                    let (tx, rx) = sync_channel::<Msg>(2);
                    let handle = std::thread::Builder::new()
                        .name("part-encode".into())
                        .spawn(move || worker_loop(rx))
                        .map_err(|e| ParquetError::External(Box::new(e)))?;
                    Ok(Worker::Thread { tx, handle: Some(handle) })
                })
                .collect::<Result<Vec<_>>>()?,
        };
        let mut enc = ParallelEncoder {
            file,
            factory,
            schema,
            workers,
            owner,
            row_group_size: row_group_size.max(1),
            rows_in_group: 0,
            row_groups: 0,
        };
        enc.start_row_group()?;
        Ok(enc)
    }

    fn send(&mut self, worker: usize, msg: Msg) -> Result<()> {
        match &mut self.workers[worker] {
            Worker::Thread { tx, .. } => {
                tx.send(msg).map_err(|_| ParquetError::General("encoder worker stopped".into()))
            }
            Worker::Inline(columns) => {
                columns.handle(msg);
                Ok(())
            }
        }
    }

    fn start_row_group(&mut self) -> Result<()> {
        let writers = self.factory.create_column_writers(self.row_groups)?;
        let mut per: Vec<Vec<(usize, ArrowColumnWriter)>> = (0..self.workers.len()).map(|_| Vec::new()).collect();
        for (i, w) in writers.into_iter().enumerate() {
            per[self.owner[i]].push((i, w));
        }
        for (wi, ws) in per.into_iter().enumerate() {
            self.send(wi, Msg::Start(ws))?;
        }
        Ok(())
    }

    fn flush_row_group(&mut self) -> Result<()> {
        if self.rows_in_group == 0 {
            return Ok(());
        }
        let mut replies = Vec::new();
        for wi in 0..self.workers.len() {
            let (tx, rx) = sync_channel(1);
            self.send(wi, Msg::Close(tx))?;
            replies.push(rx);
        }
        let mut chunks = Vec::new();
        for rx in replies {
            chunks.extend(rx.recv().map_err(|_| ParquetError::General("encoder worker stopped".into()))??);
        }
        chunks.sort_by_key(|(i, _)| *i);
        let mut rg = self.file.next_row_group()?;
        for (_, c) in chunks {
            c.append_to_row_group(&mut rg)?;
        }
        rg.close()?;
        self.rows_in_group = 0;
        self.row_groups += 1;
        Ok(())
    }

    /// Encodes a batch (split across row groups as needed).
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let mut offset = 0;
        while offset < batch.num_rows() {
            let room = self.row_group_size - self.rows_in_group;
            let n = room.min(batch.num_rows() - offset);
            let slice = batch.slice(offset, n);
            let mut per: Vec<Vec<(usize, ArrowLeafColumn)>> = (0..self.workers.len()).map(|_| Vec::new()).collect();
            let mut leaf = 0;
            for (field, col) in self.schema.fields().iter().zip(slice.columns()) {
                for l in compute_leaves(field, col)? {
                    per[self.owner[leaf]].push((leaf, l));
                    leaf += 1;
                }
            }
            for (wi, leaves) in per.into_iter().enumerate() {
                if !leaves.is_empty() {
                    self.send(wi, Msg::Write(leaves))?;
                }
            }
            self.rows_in_group += n;
            offset += n;
            if self.rows_in_group == self.row_group_size {
                self.flush_row_group()?;
                self.start_row_group()?;
            }
        }
        Ok(())
    }

    /// Writes the last row group and the footer; the sink stays open.
    pub fn finish(&mut self) -> Result<ParquetMetaData> {
        self.flush_row_group()?;
        self.stop_workers();
        self.file.finish()
    }

    /// The sink.
    pub fn inner_mut(&mut self) -> &mut W {
        self.file.inner_mut()
    }

    fn stop_workers(&mut self) {
        for w in &mut self.workers {
            if let Worker::Thread { tx, handle } = w {
                // Replacing the sender closes the channel; the worker then exits.
                *tx = sync_channel(0).0;
                if let Some(h) = handle.take() {
                    let _ = h.join();
                }
            }
        }
    }
}

impl<W: Write + Send> Drop for ParallelEncoder<W> {
    fn drop(&mut self) {
        self.stop_workers();
    }
}

/// Number of Parquet leaf columns an Arrow type maps to.
fn parquet_leaf_count(t: &DataType) -> usize {
    match t {
        DataType::Struct(fields) => fields.iter().map(|f| parquet_leaf_count(f.data_type())).sum(),
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => parquet_leaf_count(f.data_type()),
        DataType::Map(f, _) => parquet_leaf_count(f.data_type()),
        DataType::Dictionary(_, v) => parquet_leaf_count(v),
        _ => 1,
    }
}
