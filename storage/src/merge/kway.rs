//! A streaming k-way merge of sorted parts. Memory holds one batch per input
//! plus the output chunk, whatever the size of the inputs. Ties between equal
//! keys go to the input listed first (older blocks first), so the output is a
//! pure function of the inputs: replicas produce byte-identical parts.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::compute::interleave_record_batch;
use arrow::datatypes::SchemaRef;
use arrow::row::{OwnedRow, RowConverter, Rows};
use parquet::arrow::arrow_reader::ParquetRecordBatchReader;

use crate::error::{Result, StorageError};
use crate::part::{Part, reader};
use crate::table::Table;

struct Input {
    part: Arc<Part>,
    reader: Option<ParquetRecordBatchReader>,
    batch: RecordBatch,
    rows: Rows,
    pos: usize,
    /// Slot of `batch` in the merger's batch list.
    slot: usize,
}

/// Merges sorted parts into sorted chunks of about `chunk_rows` rows.
pub struct KWayMerge {
    table: Arc<Table>,
    schema: SchemaRef,
    conv: RowConverter,
    inputs: Vec<Input>,
    /// Min-heap of input indices by (current key, input index).
    heap: Vec<usize>,
    batches: Vec<RecordBatch>,
    chunk_rows: usize,
    /// Chunks end only between different keys (engines reduce runs of equal keys).
    keep_runs_whole: bool,
}

impl KWayMerge {
    /// Opens every source. `columns` restricts the columns read (table indices,
    /// must include every ORDER BY column), `None` reads all.
    pub fn new(
        table: Arc<Table>,
        parts: &[Arc<Part>],
        columns: Option<&[usize]>,
        chunk_rows: usize,
        keep_runs_whole: bool,
    ) -> Result<Self> {
        let conv = table.sort_key_converter()?;
        let batch_rows = table.def.settings.merge_batch_rows;
        let schema = match columns {
            Some(c) => Arc::new(table.schema().project(c)?),
            None => table.schema().clone(),
        };
        let mut m = KWayMerge {
            table,
            schema,
            conv,
            inputs: Vec::new(),
            heap: Vec::new(),
            batches: Vec::new(),
            chunk_rows,
            keep_runs_whole,
        };
        for part in parts {
            let reader = reader::open(part, columns, None, batch_rows)?;
            m.inputs.push(Input {
                part: part.clone(),
                reader: Some(reader),
                batch: RecordBatch::new_empty(m.schema.clone()),
                rows: m.conv.empty_rows(0, 0),
                pos: 0,
                slot: 0,
            });
        }
        let mut live = Vec::new();
        for i in 0..m.inputs.len() {
            if m.load_next(i)? {
                live.push(i);
            }
        }
        for i in live {
            m.heap.push(i);
            m.sift_up(m.heap.len() - 1);
        }
        Ok(m)
    }

    /// The schema of the chunks.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Loads input `i`'s next non-empty batch; false when it is exhausted.
    fn load_next(&mut self, i: usize) -> Result<bool> {
        loop {
            let Some(reader) = self.inputs[i].reader.as_mut() else { return Ok(false) };
            match reader.next() {
                None => {
                    self.inputs[i].reader = None;
                    return Ok(false);
                }
                Some(Err(e)) => {
                    let part = self.inputs[i].part.name.to_string();
                    return Err(StorageError::CorruptedPart { part, reason: e.to_string() });
                }
                Some(Ok(b)) if b.num_rows() == 0 => continue,
                Some(Ok(b)) => {
                    let b = b.with_schema(self.schema.clone())?;
                    let rows = self.key_rows(&b)?;
                    let slot = self.batches.len();
                    self.batches.push(b.clone());
                    let input = &mut self.inputs[i];
                    input.rows = rows;
                    input.batch = b;
                    input.pos = 0;
                    input.slot = slot;
                    return Ok(true);
                }
            }
        }
    }

    fn key_rows(&self, b: &RecordBatch) -> Result<Rows> {
        if self.schema.fields().len() == self.table.schema().fields().len() {
            return self.table.sort_key_rows(&self.conv, b);
        }
        // Evaluate the key on a batch padded to the table schema with nulls.
        let full = pad_to_table(&self.table, b)?;
        self.table.sort_key_rows(&self.conv, &full)
    }

    fn less(&self, a: usize, b: usize) -> bool {
        let (x, y) = (&self.inputs[a], &self.inputs[b]);
        match x.rows.row(x.pos).cmp(&y.rows.row(y.pos)) {
            std::cmp::Ordering::Equal => a < b,
            o => o.is_lt(),
        }
    }

    fn sift_up(&mut self, mut i: usize) {
        while i > 0 {
            let p = (i - 1) / 2;
            if self.less(self.heap[i], self.heap[p]) {
                self.heap.swap(i, p);
                i = p;
            } else {
                break;
            }
        }
    }

    fn sift_down(&mut self, mut i: usize) {
        let n = self.heap.len();
        loop {
            let (l, r) = (2 * i + 1, 2 * i + 2);
            let mut m = i;
            if l < n && self.less(self.heap[l], self.heap[m]) {
                m = l;
            }
            if r < n && self.less(self.heap[r], self.heap[m]) {
                m = r;
            }
            if m == i {
                break;
            }
            self.heap.swap(i, m);
            i = m;
        }
    }

    /// Advances the top input past its current row; returns the row taken.
    fn pop(&mut self) -> Result<(usize, usize)> {
        let top = self.heap[0];
        let taken = (self.inputs[top].slot, self.inputs[top].pos);
        self.inputs[top].pos += 1;
        if self.inputs[top].pos >= self.inputs[top].batch.num_rows() && !self.load_next(top)? {
            let last = self.heap.len() - 1;
            self.heap.swap(0, last);
            self.heap.pop();
            if !self.heap.is_empty() {
                self.sift_down(0);
            }
            return Ok(taken);
        }
        self.sift_down(0);
        Ok(taken)
    }

    fn top_row_equals(&self, key: &OwnedRow) -> bool {
        match self.heap.first() {
            Some(&i) => self.inputs[i].rows.row(self.inputs[i].pos) == key.row(),
            None => false,
        }
    }

    /// The next sorted chunk, or `None` when every input is exhausted.
    pub fn next_chunk(&mut self) -> Result<Option<RecordBatch>> {
        if self.heap.is_empty() {
            return Ok(None);
        }
        // Fast path: one input left — pass its batches through.
        if self.heap.len() == 1 {
            let i = self.heap[0];
            let input = &mut self.inputs[i];
            let rest = input.batch.slice(input.pos, input.batch.num_rows() - input.pos);
            self.batches.clear();
            if !self.load_next(i)? {
                self.heap.clear();
            }
            return Ok(Some(rest));
        }
        let mut indices = Vec::with_capacity(self.chunk_rows);
        while !self.heap.is_empty() && indices.len() < self.chunk_rows {
            indices.push(self.pop()?);
        }
        if self.keep_runs_whole && !self.heap.is_empty() {
            let (slot, row) = *indices.last().unwrap_or(&(0, 0));
            let last_key = self.key_rows(&self.batches[slot].slice(row, 1))?.row(0).owned();
            while self.top_row_equals(&last_key) {
                indices.push(self.pop()?);
            }
        }
        let refs: Vec<&RecordBatch> = self.batches.iter().collect();
        let out = interleave_record_batch(&refs, &indices)?;
        // Keep only the batches inputs still point into.
        let live: Vec<usize> = self.heap.clone();
        let mut new_batches = Vec::with_capacity(live.len());
        for &i in &live {
            self.inputs[i].slot = new_batches.len();
            new_batches.push(self.inputs[i].batch.clone());
        }
        self.batches = new_batches;
        Ok(Some(out))
    }
}

impl Iterator for KWayMerge {
    type Item = Result<RecordBatch>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_chunk().transpose()
    }
}

/// Widens a projected batch to the table schema with null columns, so table
/// expressions can be evaluated on it.
pub(crate) fn pad_to_table(table: &Table, b: &RecordBatch) -> Result<RecordBatch> {
    let schema = table.schema();
    let cols = schema
        .fields()
        .iter()
        .map(|f| match b.schema().index_of(f.name()) {
            Ok(i) => b.column(i).clone(),
            Err(_) => arrow::array::new_null_array(f.data_type(), b.num_rows()),
        })
        .collect();
    let nullable: Vec<_> = schema.fields().iter().map(|f| f.as_ref().clone().with_nullable(true)).collect();
    Ok(RecordBatch::try_new(Arc::new(arrow::datatypes::Schema::new(nullable)), cols)?)
}
