//! Streaming a part directory in chunks, and receiving one: every file's
//! CRC32 travels on its last chunk and is checked on arrival, and the part is
//! loaded and fully verified against its metadata before it is used.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use futures::{Stream, StreamExt};
use storage::part::meta::META_FILE;

use super::CHUNK;
use super::pb::PartChunk;
use crate::error::{ReplicationError, Result};

/// The files of a part directory, data first and metadata last, so a
/// receiver that stops early never holds metadata without its data.
fn part_files(dir: &Path) -> Result<Vec<String>> {
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let meta = storage::part::meta::PartMeta::read(dir, name)?;
    let mut files: Vec<String> = meta.files.keys().cloned().collect();
    files.push(META_FILE.to_string());
    Ok(files)
}

/// Streams the part in `dir`; each chunk's `part` is `label`. A file with an
/// entry in `skip` is sent from that offset on (the receiver holds the rest
/// from a broken-off transfer); its CRC32 still covers the whole file, and
/// its last chunk is always sent, empty if need be.
pub(crate) fn stream_part(
    group: u64,
    label: String,
    dir: PathBuf,
    skip: std::collections::HashMap<String, u64>,
) -> tokio_stream::wrappers::ReceiverStream<Result<PartChunk, tonic::Status>> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::task::spawn_blocking(move || {
        let send = |c: Result<PartChunk, tonic::Status>| tx.blocking_send(c).is_ok();
        let files = match part_files(&dir) {
            Ok(f) => f,
            Err(e) => {
                send(Err(tonic::Status::not_found(e.to_string())));
                return;
            }
        };
        for file in files {
            let path = dir.join(&file);
            let mut f = match std::fs::File::open(&path) {
                Ok(f) => f,
                Err(e) => {
                    send(Err(tonic::Status::internal(format!("{}: {e}", path.display()))));
                    return;
                }
            };
            let mut crc = crc32fast::Hasher::new();
            let mut offset = 0u64;
            let mut buf = vec![0u8; CHUNK];
            loop {
                let n = match read_full(&mut f, &mut buf) {
                    Ok(n) => n,
                    Err(e) => {
                        send(Err(tonic::Status::internal(format!("{}: {e}", path.display()))));
                        return;
                    }
                };
                crc.update(&buf[..n]);
                let last = n < buf.len();
                // Bytes of this piece the receiver already holds.
                let from = skip.get(&file).copied().unwrap_or(0).saturating_sub(offset).min(n as u64) as usize;
                if from < n || last {
                    let chunk = PartChunk {
                        group,
                        part: label.clone(),
                        file: file.clone(),
                        offset: offset + from as u64,
                        data: buf[from..n].to_vec(),
                        last,
                        crc32: if last { crc.clone().finalize() } else { 0 },
                        table: String::new(),
                    };
                    if !send(Ok(chunk)) {
                        return;
                    }
                }
                offset += n as u64;
                if last {
                    break;
                }
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Bytes not sent again because a receiver resumed a transfer (a metric).
pub static RESUMED_BYTES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Opens a file a broken-off transfer left, to append from `offset`:
/// it must hold exactly that many bytes; returns their CRC32 so far.
fn reopen_prefix(path: &Path, offset: u64) -> std::io::Result<(std::fs::File, crc32fast::Hasher)> {
    let mut f = std::fs::OpenOptions::new().read(true).append(true).open(path)?;
    if f.metadata()?.len() != offset {
        return Err(std::io::Error::other("the file kept has another length"));
    }
    let mut crc = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match f.read(&mut buf)? {
            0 => break,
            n => crc.update(&buf[..n]),
        }
    }
    Ok((f, crc))
}

/// Removes every entry of `dest` except `keep` (the first component of a
/// label).
fn remove_all_but(dest: &Path, keep: &str) -> Result<()> {
    let keep = keep.split('/').next().unwrap_or(keep);
    let Ok(entries) = std::fs::read_dir(dest) else { return Ok(()) };
    for e in entries.flatten() {
        if e.file_name().to_str() != Some(keep) {
            let p = e.path();
            let r = if p.is_dir() { std::fs::remove_dir_all(&p) } else { std::fs::remove_file(&p) };
            r.map_err(|err| ReplicationError::io(&p, err))?;
        }
    }
    Ok(())
}

/// What a directory kept from a broken-off fetch holds: the part directory
/// name and the bytes of each of its files (metadata excluded: it comes
/// last, so a directory holding it was complete).
pub(crate) fn resume_point(dest: &Path) -> Option<(String, std::collections::HashMap<String, u64>)> {
    let dir = crate::replica::part_dir_in(dest)?;
    let label = dir.file_name()?.to_str()?.to_string();
    let mut offsets = std::collections::HashMap::new();
    for e in std::fs::read_dir(&dir).ok()?.flatten() {
        let name = e.file_name().to_str()?.to_string();
        if name != META_FILE && safe_file(&name) {
            offsets.insert(name, e.metadata().ok()?.len());
        }
    }
    Some((label, offsets))
}

/// A chunk label must be one or two plain path components.
fn safe_label(label: &str) -> bool {
    !label.is_empty()
        && label.split('/').count() <= 2
        && label.split('/').all(|c| !c.is_empty() && c != "." && c != ".." && !c.contains('\\'))
}

fn safe_file(file: &str) -> bool {
    !file.is_empty() && !file.contains('/') && file != "." && file != ".."
}

/// Receives a streamed part under `dest` (as `dest/<label>`), fsyncing every
/// file and checking its CRC32, then loads and verifies the part. Returns the
/// part's directory.
pub(crate) async fn receive_part<S, E>(mut stream: S, dest: &Path) -> Result<(u64, PathBuf)>
where
    S: Stream<Item = Result<PartChunk, E>> + Unpin,
    E: std::fmt::Display,
{
    let bad = |m: String| ReplicationError::Corrupted(m);
    let mut open: Option<(String, std::fs::File, crc32fast::Hasher, u64)> = None;
    let mut label: Option<String> = None;
    let mut group = 0;
    let mut finished_files = 0;
    // What each file turned out to be, checked against the part's metadata
    // at the end instead of reading every file back.
    let mut received = std::collections::BTreeMap::new();
    // Fsynced at the end, off the runtime's workers (which carry every
    // group's Raft traffic).
    let mut to_sync = Vec::new();
    while let Some(chunk) = stream.next().await {
        let c = chunk.map_err(|e| bad(format!("part stream broke: {e}")))?;
        group = c.group;
        if !safe_label(&c.part) || !safe_file(&c.file) {
            return Err(bad(format!("refusing part path {}/{}", c.part, c.file)));
        }
        match &label {
            None => {
                label = Some(c.part.clone());
                // What an earlier, broken-off transfer of another part left.
                remove_all_but(dest, &c.part)?;
            }
            Some(l) if *l != c.part => return Err(bad("a part stream changed parts".into())),
            _ => {}
        }
        let dir = dest.join(&c.part);
        if open.as_ref().is_none_or(|(f, ..)| *f != c.file) {
            std::fs::create_dir_all(&dir).map_err(|e| ReplicationError::io(&dir, e))?;
            let path = dir.join(&c.file);
            open = Some(if c.offset == 0 {
                let f = std::fs::File::create(&path).map_err(|e| ReplicationError::io(&path, e))?;
                (c.file.clone(), f, crc32fast::Hasher::new(), 0)
            } else {
                // A resumed transfer: the first `offset` bytes are ours already.
                let (f, crc) = reopen_prefix(&path, c.offset)
                    .map_err(|e| bad(format!("file {} resumes at offset {}: {e}", c.file, c.offset)))?;
                RESUMED_BYTES.fetch_add(c.offset, std::sync::atomic::Ordering::Relaxed);
                (c.file.clone(), f, crc, c.offset)
            });
        }
        let Some((file, f, crc, written)) = open.as_mut() else { continue };
        if c.offset != *written {
            return Err(bad(format!("file {file}: chunk at {} after {written} bytes", c.offset)));
        }
        f.write_all(&c.data).map_err(|e| ReplicationError::io(&dir.join(&*file), e))?;
        start_writeback(f, *written, c.data.len());
        // A transfer cut off midway: the receiver must discard what it got.
        fail::fail_point!("fetch:mid", |_| Err(ReplicationError::Unreachable {
            node: 0,
            reason: "failpoint fetch:mid".into()
        }));
        crc.update(&c.data);
        *written += c.data.len() as u64;
        if c.last {
            let got = crc.clone().finalize();
            if got != c.crc32 {
                return Err(bad(format!("file {file}: crc32 {got:08x}, sender said {:08x}", c.crc32)));
            }
            to_sync.push(dir.join(&*file));
            received.insert(file.clone(), storage::part::checksum::FileChecksum { size: *written, crc32: got });
            finished_files += 1;
            open = None;
        }
    }
    if open.is_some() {
        return Err(bad("part stream ended inside a file".into()));
    }
    let label = label.ok_or_else(|| bad("empty part stream".into()))?;
    if finished_files == 0 {
        return Err(bad("part stream had no files".into()));
    }
    let dir = dest.join(&label);
    let part_dir = if dir.join(META_FILE).exists() {
        dir
    } else {
        crate::replica::part_dir_in(&dir).ok_or_else(|| bad(format!("no part in {label}")))?
    };
    let part = storage::Part::load(&part_dir)?;
    // Every file of the part must have come whole in this stream (a resumed
    // file's checksum covers its kept prefix too) and match the metadata.
    for (file, want) in &part.meta.files {
        match received.get(file) {
            Some(got) if got == want => {}
            // Not in this stream (sent by an earlier, broken-off one): read it.
            None => {
                let got = storage::part::checksum::checksum_file(&part_dir.join(file))?;
                if got != *want {
                    return Err(bad(format!("file {file}: {got:?}, the part's metadata says {want:?}")));
                }
            }
            Some(got) => return Err(bad(format!("file {file}: {got:?}, the part's metadata says {want:?}"))),
        }
    }
    to_sync.push(part_dir.clone());
    to_sync.extend(part_dir.parent().map(Path::to_path_buf));
    tokio::task::spawn_blocking(move || storage::part::writer::sync_paths(&to_sync))
        .await
        .map_err(|e| ReplicationError::Raft(format!("fsync task: {e}")))??;
    Ok((group, part_dir))
}

/// Starts writing `len` bytes at `offset` back to disk without waiting, so the
/// fsync at the end of the file has little left to do (RocksDB's
/// `bytes_per_sync`): a pushed part's fsync was most of its push time.
fn start_writeback(f: &std::fs::File, offset: u64, len: usize) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: a plain syscall on an open descriptor; failure only means
        // the final fsync does all the work, as without this call.
        unsafe {
            libc::sync_file_range(f.as_raw_fd(), offset as i64, len as i64, libc::SYNC_FILE_RANGE_WRITE);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (f, offset, len);
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, RecordBatch};
    use arrow::datatypes::{DataType, Field, Schema};
    use storage::PartName;
    use storage::table::{Engine, MergeTreeSettings, TableDef};

    fn sent_part(dir: &std::path::Path) -> std::path::PathBuf {
        let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, false)]));
        let def = TableDef {
            schema: schema.clone(),
            engine: Engine::MergeTree,
            partition_by: None,
            order_by: vec!["a".into()],
            settings: MergeTreeSettings::default(),
        };
        let table = storage::Table::new(def).unwrap();
        let batch =
            RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from((0..1000).collect::<Vec<i64>>()))]).unwrap();
        let name = PartName::new_insert("all", 3);
        storage::part::writer::write_block(&table, dir, name, vec![], &batch).unwrap().dir
    }

    /// The receiver checks what it got against the part's metadata from the
    /// checksums it computed while writing, not by reading the files back:
    /// data that changed after its metadata was written is still refused,
    /// though the sender's own CRCs agree with the bytes sent.
    #[tokio::test]
    async fn received_part_is_checked_against_its_metadata() {
        let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let part = sent_part(src.path());
        let label = part.file_name().unwrap().to_str().unwrap().to_string();
        let stream = super::stream_part(1, label.clone(), part.clone(), Default::default());
        let (_, got) = super::receive_part(stream, dst.path()).await.unwrap();
        storage::Part::load(&got).unwrap().verify().unwrap();

        let data = part.join(storage::part::meta::DATA_FILE);
        let mut bytes = std::fs::read(&data).unwrap();
        bytes[100] ^= 0xff;
        std::fs::write(&data, bytes).unwrap();
        let stream = super::stream_part(1, label, part, Default::default());
        let err = super::receive_part(stream, dst.path()).await.unwrap_err().to_string();
        assert!(err.contains("metadata says"), "{err}");
    }
}
