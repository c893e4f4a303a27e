//! Insert deduplication: a block's id is the xxh3-128 of its canonical bytes
//! (the Arrow IPC encoding of the block), or of `insert_deduplication_token`
//! and the block's index. A table keeps the ids of its last N blocks in
//! `dedup_log.txt`; an insert whose id is there is acknowledged and skipped,
//! so retrying an insert after a timeout cannot double it.

use std::collections::{HashSet, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;
use xxhash_rust::xxh3::Xxh3;

use crate::error::{Result, StorageError};

const HEADER: &str = "shardhouse dedup log v1";
const FILE: &str = "dedup_log.txt";

struct HashWriter(Xxh3);

impl Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The id of a block from its content.
pub fn block_id(batch: &RecordBatch) -> Result<String> {
    let mut h = HashWriter(Xxh3::new());
    {
        let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut h, &batch.schema())?;
        w.write(batch)?;
        w.finish()?;
    }
    Ok(format!("{:032x}", h.0.digest128()))
}

/// The id of the `index`-th block of an insert with a deduplication token.
pub fn token_block_id(token: &str, index: usize) -> String {
    format!("{:032x}", xxhash_rust::xxh3::xxh3_128(format!("{token}_{index}").as_bytes()))
}

/// The ids of a table's most recent blocks, persisted in its directory.
#[derive(Debug)]
pub struct DedupLog {
    path: PathBuf,
    window: usize,
    order: VecDeque<String>,
    ids: HashSet<String>,
    /// Lines in the file (compacted when it grows past twice the window).
    lines: usize,
}

fn io(path: &Path, e: std::io::Error) -> StorageError {
    StorageError::io(path, e)
}

impl DedupLog {
    /// Loads the log of the table in `dir`, keeping the last `window` ids.
    pub fn open(dir: &Path, window: usize) -> Result<DedupLog> {
        let path = dir.join(FILE);
        let mut log = DedupLog { path, window, order: VecDeque::new(), ids: HashSet::new(), lines: 0 };
        let text = match std::fs::read_to_string(&log.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(log),
            Err(e) => return Err(io(&log.path, e)),
        };
        let mut lines = text.lines();
        if lines.next() != Some(HEADER) {
            return Err(StorageError::CorruptedFile { path: log.path.clone(), reason: "not a v1 dedup log".into() });
        }
        for id in lines {
            // A torn last line (crash mid-append) is not an id.
            if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
                log.remember(id.to_string());
                log.lines += 1;
            }
        }
        Ok(log)
    }

    fn remember(&mut self, id: String) {
        if self.ids.insert(id.clone()) {
            self.order.push_back(id);
        }
        while self.order.len() > self.window {
            if let Some(old) = self.order.pop_front() {
                self.ids.remove(&old);
            }
        }
    }

    /// Whether the window holds `id`.
    pub fn contains(&self, id: &str) -> bool {
        self.window > 0 && self.ids.contains(id)
    }

    /// Records `id` durably (after its part was committed).
    pub fn add(&mut self, id: &str) -> Result<()> {
        if self.window == 0 {
            return Ok(());
        }
        self.remember(id.to_string());
        if self.lines >= 2 * self.window.max(16) {
            let mut text = format!("{HEADER}\n");
            for id in &self.order {
                text.push_str(id);
                text.push('\n');
            }
            let tmp = self.path.with_extension("tmp");
            std::fs::write(&tmp, text)
                .and_then(|_| std::fs::File::open(&tmp)?.sync_all())
                .and_then(|_| std::fs::rename(&tmp, &self.path))
                .map_err(|e| io(&self.path, e))?;
            self.lines = self.order.len();
            return Ok(());
        }
        let fresh = !self.path.exists();
        let mut f =
            std::fs::OpenOptions::new().create(true).append(true).open(&self.path).map_err(|e| io(&self.path, e))?;
        let line = if fresh { format!("{HEADER}\n{id}\n") } else { format!("{id}\n") };
        f.write_all(line.as_bytes()).and_then(|_| f.sync_data()).map_err(|e| io(&self.path, e))?;
        self.lines += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn batch(v: i64) -> RecordBatch {
        let s = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int64, false),
            Field::new("s", DataType::Utf8, false),
        ]));
        RecordBatch::try_new(
            s,
            vec![Arc::new(Int64Array::from(vec![v, 2])), Arc::new(StringArray::from(vec!["x", "y"]))],
        )
        .unwrap()
    }

    #[test]
    fn ids_follow_content_and_tokens() {
        assert_eq!(block_id(&batch(1)).unwrap(), block_id(&batch(1)).unwrap());
        assert_ne!(block_id(&batch(1)).unwrap(), block_id(&batch(3)).unwrap());
        // A slice has the id of the same rows built directly.
        let two = RecordBatch::try_new(
            batch(1).schema(),
            vec![Arc::new(Int64Array::from(vec![2])), Arc::new(StringArray::from(vec!["y"]))],
        )
        .unwrap();
        assert_eq!(block_id(&batch(1).slice(1, 1)).unwrap(), block_id(&two).unwrap());
        assert_ne!(token_block_id("t", 0), token_block_id("t", 1));
    }

    #[test]
    fn window_survives_reopen_and_compaction_and_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = DedupLog::open(dir.path(), 20).unwrap();
        for i in 0..100 {
            log.add(&token_block_id("x", i)).unwrap();
        }
        assert!(log.contains(&token_block_id("x", 99)) && log.contains(&token_block_id("x", 80)));
        assert!(!log.contains(&token_block_id("x", 79)));
        std::fs::OpenOptions::new().append(true).open(dir.path().join(FILE)).unwrap().write_all(b"abc").unwrap();
        let log = DedupLog::open(dir.path(), 20).unwrap();
        assert!(log.contains(&token_block_id("x", 99)) && log.contains(&token_block_id("x", 80)));
        assert!(!log.contains(&token_block_id("x", 79)));
        // Window 0 (the default) never deduplicates.
        let off = DedupLog::open(dir.path(), 0).unwrap();
        assert!(!off.contains(&token_block_id("x", 99)));
    }
}
