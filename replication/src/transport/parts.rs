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
            f.sync_all().map_err(|e| ReplicationError::io(&dir.join(&*file), e))?;
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
    part.verify()?;
    for d in [Some(part_dir.as_path()), part_dir.parent()].into_iter().flatten() {
        std::fs::File::open(d).and_then(|f| f.sync_all()).map_err(|e| ReplicationError::io(d, e))?;
    }
    Ok((group, part_dir))
}
