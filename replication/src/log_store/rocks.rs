//! One RocksDB per node shared by every group: column family `log` holds
//! entries under `[group][index]` (big-endian, so a group's entries are one
//! contiguous, ordered range) and `meta` holds per-group vote, committed id,
//! purge point and state-machine state under `[group][tag]`.
//!
//! Group commit: `append` writes its batch without syncing (so the entries are
//! readable at once, as openraft requires) and queues its flush callback; one
//! syncer thread drains every queued callback, of every group, and completes
//! them all after a single WAL fsync.

// openraft's StorageError is large, and its traits return it: boxing it here
// would only add a conversion at every call.
#![allow(clippy::result_large_err)]

use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{Entry, LogId, LogState, RaftLogReader, StorageError, StorageIOError, Vote};
use rocksdb::{ColumnFamilyDescriptor, DB, Direction, IteratorMode, Options, WriteBatch, WriteOptions};

use crate::{GroupId, NodeId, TypeConfig};

const CF_LOG: &str = "log";
const CF_META: &str = "meta";
/// Format byte in front of every stored value; bump it when the encoding changes.
const FORMAT_V1: u8 = 1;

/// Keys of a group's rows in the `meta` column family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum MetaTag {
    Vote = 1,
    Committed = 2,
    LastPurged = 3,
    /// The state machine's applied state (see `replica`).
    Applied = 4,
    /// The group's spec: table, partition, members.
    Spec = 5,
    /// Dedup window entries, one row each under `[group][6][seq]`.
    DedupRow = 6,
}

type FlushDone = Box<dyn FnOnce(std::io::Result<()>) + Send>;

/// The node's RocksDB and its WAL syncer.
pub struct LogDb {
    db: Arc<DB>,
    flush: Option<mpsc::Sender<FlushDone>>,
    syncer: Option<std::thread::JoinHandle<()>>,
}

/// Closes the database in the dropping thread: the syncer is stopped and
/// joined first, so RocksDB is never still closing on a detached thread when
/// the process exits (its static destructors then abort with "pthread lock:
/// Invalid argument" — seen in CI at the end of a test binary).
impl Drop for LogDb {
    fn drop(&mut self) {
        self.flush.take();
        if let Some(h) = self.syncer.take()
            && h.thread().id() != std::thread::current().id()
        {
            let _ = h.join();
        }
    }
}

impl std::fmt::Debug for LogDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogDb").field("path", &self.db.path()).finish()
    }
}

fn log_key(group: GroupId, index: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&group.to_be_bytes());
    k[8..].copy_from_slice(&index.to_be_bytes());
    k
}

fn meta_key(group: GroupId, tag: MetaTag) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[..8].copy_from_slice(&group.to_be_bytes());
    k[8] = tag as u8;
    k
}

fn dedup_key(group: GroupId, seq: u64) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[..9].copy_from_slice(&meta_key(group, MetaTag::DedupRow));
    k[9..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn index_of(key: &[u8]) -> Option<(GroupId, u64)> {
    let g = u64::from_be_bytes(key.get(..8)?.try_into().ok()?);
    let i = u64::from_be_bytes(key.get(8..16)?.try_into().ok()?);
    Some((g, i))
}

/// Encodes a value with its format byte.
pub(crate) fn encode<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = vec![FORMAT_V1];
    serde_json::to_writer(&mut out, v)?;
    Ok(out)
}

/// Decodes a value written by [`encode`].
pub(crate) fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    match bytes.split_first() {
        Some((&FORMAT_V1, body)) => serde_json::from_slice(body).map_err(|e| e.to_string()),
        Some((v, _)) => Err(format!("unsupported format version {v}")),
        None => Err("empty value".into()),
    }
}

fn read_err(e: impl ToString) -> StorageError<NodeId> {
    StorageIOError::read(&std::io::Error::other(e.to_string())).into()
}

fn write_err(e: impl ToString) -> StorageError<NodeId> {
    StorageIOError::write(&std::io::Error::other(e.to_string())).into()
}

/// Above this many dedup rows to delete at once, one range tombstone.
const MAX_POINT_DELETES: u64 = 256;

impl LogDb {
    /// Opens (or creates) the node's database in `path`.
    pub fn open(path: &Path) -> crate::Result<Arc<LogDb>> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_max_background_jobs(2);
        opts.set_keep_log_file_num(4);
        let cfs = [CF_LOG, CF_META].map(|n| ColumnFamilyDescriptor::new(n, Options::default()));
        let db = Arc::new(DB::open_cf_descriptors(&opts, path, cfs)?);
        let (tx, rx) = mpsc::channel::<FlushDone>();
        let syncer = db.clone();
        let handle = std::thread::Builder::new()
            .name("raft-wal-sync".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut waiting = vec![first];
                    waiting.extend(rx.try_iter());
                    let r = syncer.flush_wal(true).map_err(|e| e.to_string());
                    for done in waiting {
                        done(r.clone().map_err(std::io::Error::other));
                    }
                }
            })
            .map_err(|e| crate::ReplicationError::io(path, e))?;
        Ok(Arc::new(LogDb { db, flush: Some(tx), syncer: Some(handle) }))
    }

    fn cf(&self, name: &str) -> Result<&rocksdb::ColumnFamily, StorageError<NodeId>> {
        self.db.cf_handle(name).ok_or_else(|| read_err(format!("column family {name} missing")))
    }

    /// The log store of one group.
    pub fn group(self: &Arc<Self>, group: GroupId) -> GroupLogStore {
        GroupLogStore { group, db: self.clone() }
    }

    /// Reads a group's meta row.
    pub fn get_meta(&self, group: GroupId, tag: MetaTag) -> Result<Option<Vec<u8>>, StorageError<NodeId>> {
        self.db.get_cf(self.cf(CF_META)?, meta_key(group, tag)).map_err(read_err)
    }

    /// Writes a group's meta row; `sync` waits for the WAL fsync.
    pub fn put_meta(&self, group: GroupId, tag: MetaTag, value: &[u8], sync: bool) -> Result<(), StorageError<NodeId>> {
        let mut wo = WriteOptions::default();
        wo.set_sync(sync);
        self.db.put_cf_opt(self.cf(CF_META)?, meta_key(group, tag), value, &wo).map_err(write_err)
    }

    /// A group's log entry at `index`, if the log still holds it.
    pub fn get_entry(&self, group: GroupId, index: u64) -> Result<Option<Entry<TypeConfig>>, StorageError<NodeId>> {
        match self.db.get_cf(self.cf(CF_LOG)?, log_key(group, index)).map_err(read_err)? {
            Some(v) => decode(&v).map(Some).map_err(read_err),
            None => Ok(None),
        }
    }

    /// Writes a group's applied state and its dedup rows in one batch (not
    /// synced: the log is the record): the rows numbered in `delete` are
    /// deleted, `rows` are added.
    pub fn put_state(
        &self,
        group: GroupId,
        state: &[u8],
        delete: std::ops::Range<u64>,
        rows: &[(u64, Vec<u8>)],
    ) -> Result<(), StorageError<NodeId>> {
        let cf = self.cf(CF_META)?;
        let mut b = WriteBatch::default();
        b.put_cf(cf, meta_key(group, MetaTag::Applied), state);
        // The few rows one apply pushes out of the window go as point
        // deletes: a range tombstone per apply (thousands per memtable)
        // made every flush of this column family re-fragment them all.
        if delete.end.saturating_sub(delete.start) <= MAX_POINT_DELETES {
            for seq in delete {
                b.delete_cf(cf, dedup_key(group, seq));
            }
        } else {
            b.delete_range_cf(cf, dedup_key(group, delete.start), dedup_key(group, delete.end));
        }
        for (seq, v) in rows {
            b.put_cf(cf, dedup_key(group, *seq), v);
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(false);
        self.db.write_opt(b, &wo).map_err(write_err)
    }

    /// A group's dedup rows, in sequence order.
    pub fn dedup_rows(&self, group: GroupId) -> Result<Vec<(u64, Vec<u8>)>, StorageError<NodeId>> {
        let cf = self.cf(CF_META)?;
        let start = dedup_key(group, 0);
        let mut out = Vec::new();
        for item in self.db.iterator_cf(cf, IteratorMode::From(&start, Direction::Forward)) {
            let (k, v) = item.map_err(read_err)?;
            if k.len() != 17 || k[..9] != start[..9] {
                break;
            }
            let seq = u64::from_be_bytes(k[9..17].try_into().map_err(read_err)?);
            out.push((seq, v.to_vec()));
        }
        Ok(out)
    }

    /// Every group that has a spec row, i.e. every group this node hosts.
    pub fn groups_with(&self, tag: MetaTag) -> Result<Vec<(GroupId, Vec<u8>)>, StorageError<NodeId>> {
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_META)?, IteratorMode::Start) {
            let (k, v) = item.map_err(read_err)?;
            if k.len() == 9 && k[8] == tag as u8 {
                let g = u64::from_be_bytes(k[..8].try_into().map_err(read_err)?);
                out.push((g, v.to_vec()));
            }
        }
        Ok(out)
    }

    /// Deletes everything of a group (its log and meta rows).
    pub fn remove_group(&self, group: GroupId) -> Result<(), StorageError<NodeId>> {
        let mut b = WriteBatch::default();
        b.delete_range_cf(self.cf(CF_LOG)?, log_key(group, 0), log_key(group, u64::MAX));
        b.delete_cf(self.cf(CF_LOG)?, log_key(group, u64::MAX));
        b.delete_range_cf(self.cf(CF_META)?, meta_key(group, MetaTag::Vote), {
            let mut end = meta_key(group, MetaTag::Vote);
            end[8] = 255;
            end
        });
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db.write_opt(b, &wo).map_err(write_err)
    }
}

/// The log of one group: a view of the shared database.
#[derive(Debug, Clone)]
pub struct GroupLogStore {
    group: GroupId,
    db: Arc<LogDb>,
}

impl GroupLogStore {
    fn last_purged(&self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        match self.db.get_meta(self.group, MetaTag::LastPurged)? {
            Some(v) => decode(&v).map_err(read_err),
            None => Ok(None),
        }
    }
}

impl RaftLogReader<TypeConfig> for GroupLogStore {
    async fn try_get_log_entries<RB: std::ops::RangeBounds<u64> + Clone + std::fmt::Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        use std::ops::Bound;
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let cf = self.db.cf(CF_LOG)?;
        let mut out = Vec::new();
        let iter = self.db.db.iterator_cf(cf, IteratorMode::From(&log_key(self.group, start), Direction::Forward));
        for item in iter {
            let (k, v) = item.map_err(read_err)?;
            let Some((g, idx)) = index_of(&k) else { break };
            if g != self.group || !range.contains(&idx) {
                break;
            }
            out.push(decode::<Entry<TypeConfig>>(&v).map_err(read_err)?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for GroupLogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let last_purged = self.last_purged()?;
        let cf = self.db.cf(CF_LOG)?;
        let mut iter =
            self.db.db.iterator_cf(cf, IteratorMode::From(&log_key(self.group, u64::MAX), Direction::Reverse));
        let last = match iter.next() {
            Some(item) => {
                let (k, v) = item.map_err(read_err)?;
                match index_of(&k) {
                    Some((g, _)) if g == self.group => Some(decode::<Entry<TypeConfig>>(&v).map_err(read_err)?.log_id),
                    _ => None,
                }
            }
            None => None,
        };
        Ok(LogState { last_purged_log_id: last_purged, last_log_id: last.or(last_purged) })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        let v = encode(vote).map_err(write_err)?;
        // An fsync: on a blocking thread, not on a worker of the runtime
        // every group's heartbeats share (issue 18).
        let (db, group) = (self.db.clone(), self.group);
        tokio::task::spawn_blocking(move || db.put_meta(group, MetaTag::Vote, &v, true).map_err(Box::new))
            .await
            .map_err(write_err)?
            .map_err(|e| *e)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        match self.db.get_meta(self.group, MetaTag::Vote)? {
            Some(v) => decode(&v).map(Some).map_err(read_err),
            None => Ok(None),
        }
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> Result<(), StorageError<NodeId>> {
        // Not synced: a lost update only makes a restarted node re-learn the
        // commit point from the leader; it can never make it serve older state
        // than it had applied, which the state machine persists itself.
        let v = encode(&committed).map_err(write_err)?;
        self.db.put_meta(self.group, MetaTag::Committed, &v, false)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        match self.db.get_meta(self.group, MetaTag::Committed)? {
            Some(v) => decode(&v).map_err(read_err),
            None => Ok(None),
        }
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let cf = self.db.cf(CF_LOG)?;
        let mut b = WriteBatch::default();
        for e in entries {
            b.put_cf(cf, log_key(self.group, e.log_id.index), encode(&e).map_err(write_err)?);
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(false);
        self.db.db.write_opt(b, &wo).map_err(write_err)?;
        let done: FlushDone = Box::new(move |r| callback.log_io_completed(r));
        let sent = match &self.db.flush {
            Some(tx) => tx.send(done).map_err(|mpsc::SendError(done)| done),
            None => Err(done),
        };
        if let Err(done) = sent {
            done(Err(std::io::Error::other("WAL syncer stopped")));
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let cf = self.db.cf(CF_LOG)?;
        let mut b = WriteBatch::default();
        b.delete_range_cf(cf, log_key(self.group, log_id.index), log_key(self.group, u64::MAX));
        self.db.db.write(b).map_err(write_err)
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let cf = self.db.cf(CF_LOG)?;
        let mut b = WriteBatch::default();
        b.put_cf(
            self.db.cf(CF_META)?,
            meta_key(self.group, MetaTag::LastPurged),
            encode(&Some(log_id)).map_err(write_err)?,
        );
        b.delete_range_cf(cf, log_key(self.group, 0), log_key(self.group, log_id.index.saturating_add(1)));
        self.db.db.write(b).map_err(write_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Point deletes in the memtable (RocksDB has no property counting
    /// range tombstones: a slide that wrote one shows here as none).
    fn point_deletes(db: &LogDb) -> u64 {
        let cf = db.cf(CF_META).unwrap();
        db.db.property_int_value_cf(cf, "rocksdb.num-deletes-active-mem-table").unwrap().unwrap_or(0)
    }

    /// Found profiling small inserts on a 3-node cluster: every apply wrote
    /// a range tombstone for the rows leaving the dedup window, and the
    /// memtable flushes that re-fragmented them took 45% of the CPU.
    #[test]
    fn regression_rows_leaving_the_dedup_window_are_point_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let db = LogDb::open(dir.path()).unwrap();
        let row = |seq: u64| (seq, vec![seq as u8]);
        db.put_state(7, b"s", 0..0, &(0..10).map(row).collect::<Vec<_>>()).unwrap();
        // The window slides by a few rows per apply.
        for next in 10..400 {
            db.put_state(7, b"s", next - 10..next - 9, &[row(next)]).unwrap();
        }
        assert_eq!(point_deletes(&db), 390, "one point delete per row that left");
        let seqs: Vec<u64> = db.dedup_rows(7).unwrap().into_iter().map(|(s, _)| s).collect();
        assert_eq!(seqs, (390..400).collect::<Vec<_>>());
        // A full rewrite still clears everything at once.
        db.put_state(7, b"s", 0..u64::MAX, &[row(500)]).unwrap();
        assert_eq!(db.dedup_rows(7).unwrap(), vec![row(500)]);
    }
}
