//! Snapshots: every key of a store at one revision, in a self-checking file.
//!
//! A snapshot is taken through the [`Store`] trait only (the current revision, then a
//! paginated list of `/` at that revision), so it is consistent — one revision, as a
//! single etcd range read would be — and works for any engine. It is restored into a
//! new embedded store with [`crate::EmbeddedStore::restore`], which keeps every key's
//! `create_revision` and `mod_revision` (so the resourceVersions that clients hold
//! keep their meaning) and continues the revision counter after the snapshot's.
//!
//! File format (version 1, all integers little-endian):
//! - header: the magic `SKIFFSNP`, `version: u32`, `revision: i64`, `key_count: u64`;
//! - `key_count` records, in ascending key order: `key_len: u32`, `key`,
//!   `create_revision: i64`, `mod_revision: i64`, `value_len: u32`, `value`;
//! - trailer: the SHA-256 of everything before it.
//!
//! A truncated, corrupt or foreign file fails the checksum or the header checks and
//! is refused with [`SnapshotError`] before anything is restored.
//!
//! Engines with a snapshot format of their own serve it instead
//! ([`Store::native_snapshot`]): the etcd engine streams etcd's snapshot (a bbolt
//! database and its SHA-256, exactly what `etcdctl snapshot save` writes), which
//! `etcdctl snapshot restore` turns back into an etcd cluster. [`save`] takes
//! whichever the store has; [`read_any_file`] reads either format (module [`etcd`]
//! for etcd's), so an etcd snapshot also restores into the embedded engine.

pub mod etcd;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use futures::{Stream, StreamExt};
use tokio::io::AsyncWriteExt;

use crate::{KeyValue, ListOptions, Revision, Store};

/// The first bytes of every snapshot file.
pub const MAGIC: &[u8; 8] = b"SKIFFSNP";
/// The format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Keys read per list page while taking a snapshot.
pub const PAGE_SIZE: usize = 500;

const HEADER_LEN: usize = 8 + 4 + 8 + 8;
const CHECKSUM_LEN: usize = 32;

/// Errors taking, reading, writing or restoring a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Reading the store failed.
    #[error("reading the store: {0}")]
    Store(#[from] crate::Error),
    /// The snapshot file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not a valid snapshot (truncated, corrupted or another format).
    #[error("not a valid skiff snapshot: {0}")]
    Invalid(String),
    /// The restore target already holds data.
    #[error("{0} is not empty: restore into a new directory, or move the existing one aside first")]
    TargetNotEmpty(String),
    /// The snapshot's bytes stopped arriving before the end (the store or the
    /// connection failed mid-stream); nothing was written in place of the file.
    #[error("the snapshot stream failed: {0}")]
    Stream(String),
}

/// A snapshot file's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Skiff's own format (this module's docs), from any engine without a native one.
    Skiff,
    /// etcd's snapshot: its bbolt database, then the SHA-256 of it (module [`etcd`]).
    Etcd,
}

impl Format {
    /// Recognizes a format by a file's first 24 bytes or more.
    pub fn detect(head: &[u8]) -> Option<Self> {
        if head.starts_with(MAGIC) {
            Some(Self::Skiff)
        } else if etcd::looks_like_bbolt(head) {
            Some(Self::Etcd)
        } else {
            None
        }
    }

    /// A short name (`skiff`, `etcd`), also sent as the `x-skiff-snapshot-format` header.
    pub fn name(self) -> &'static str {
        match self {
            Self::Skiff => "skiff",
            Self::Etcd => "etcd",
        }
    }
}

/// An engine's own snapshot, as it streams out of the engine ([`Store::native_snapshot`]).
pub struct NativeSnapshot {
    /// Its format.
    pub format: Format,
    /// The store's revision when the snapshot was requested. The snapshot holds at
    /// least every write up to it (writes that land while it starts may be in it too;
    /// the file itself records its exact revision, see [`read_any_file`]).
    pub revision: Revision,
    /// The file's bytes in order. The stream ends after the last byte; an error item
    /// means the snapshot is incomplete and must be discarded.
    pub chunks: Pin<Box<dyn Stream<Item = crate::Result<Vec<u8>>> + Send>>,
}

impl std::fmt::Debug for NativeSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NativeSnapshot")
            .field("format", &self.format)
            .field("revision", &self.revision)
            .finish_non_exhaustive()
    }
}

/// A snapshot file read for a restore, in either format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadSnapshot {
    /// The file's format.
    pub format: Format,
    /// Every live key at the snapshot's revision.
    pub snapshot: Snapshot,
    /// For etcd snapshots, the number of keys attached to an etcd lease (restored
    /// without one: the embedded engine has no leases); 0 otherwise.
    pub leased_keys: usize,
}

/// Reads and verifies a snapshot file of either format (recognized by its first
/// bytes), for `skiff snapshot restore`. `skip_hash_check` accepts an etcd database
/// without the checksum etcd's snapshots end with (see [`etcd::read_file`]).
///
/// Errors: [`SnapshotError::Io`]; [`SnapshotError::Invalid`] naming the file if it is
/// neither format, or truncated or damaged (see [`Snapshot::decode`] and
/// [`etcd::read_file`]).
pub fn read_any_file(path: &Path, skip_hash_check: bool) -> Result<ReadSnapshot, SnapshotError> {
    let io = |source| SnapshotError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut head = Vec::with_capacity(64);
    std::io::Read::read_to_end(
        &mut std::io::Read::take(std::fs::File::open(path).map_err(io)?, 64),
        &mut head,
    )
    .map_err(io)?;
    match Format::detect(&head) {
        Some(Format::Skiff) => Ok(ReadSnapshot {
            format: Format::Skiff,
            snapshot: Snapshot::read_file(path)?,
            leased_keys: 0,
        }),
        Some(Format::Etcd) => {
            let e = etcd::read_file(path, skip_hash_check)?;
            Ok(ReadSnapshot {
                format: Format::Etcd,
                snapshot: e.snapshot,
                leased_keys: e.leased_keys,
            })
        }
        None => Err(SnapshotError::Invalid(format!(
            "{}: neither a skiff snapshot (no SKIFFSNP header) nor an etcd snapshot (no bbolt meta page)",
            path.display()
        ))),
    }
}

/// A snapshot file written by [`save`] or [`save_stream`], verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Saved {
    /// The file's format.
    pub format: Format,
    /// The revision the file holds the store at.
    pub revision: Revision,
    /// Number of live keys in it.
    pub keys: usize,
    /// The file's size in bytes.
    pub bytes: u64,
}

/// Takes a snapshot of `store` into `path`: the engine's own snapshot if it has one
/// ([`Store::native_snapshot`], streamed to the file), else a [`Snapshot`] in
/// Skiff's format. Either way the file is written under a temporary name, verified
/// and then renamed into place, so `path` is never a partial snapshot.
///
/// Errors: those of [`Snapshot::take`] and [`save_stream`].
pub async fn save(store: &dyn Store, path: &Path) -> Result<Saved, SnapshotError> {
    if let Some(native) = store.native_snapshot().await? {
        return save_stream(path, native.chunks.map(|c| c.map_err(|e| e.to_string()))).await;
    }
    let snap = Snapshot::take(store).await?;
    let bytes = snap.write_file(path)?;
    Ok(Saved {
        format: Format::Skiff,
        revision: snap.revision,
        keys: snap.items.len(),
        bytes,
    })
}

/// Writes a snapshot file that arrives in chunks to `path`: into a temporary file
/// beside it, fsync'd, verified with [`read_any_file`] (so a damaged or incomplete
/// transfer is refused), then renamed over `path`. Only one chunk is held in memory.
///
/// Errors: [`SnapshotError::Stream`] if the stream yields an error (the temporary
/// file is removed); [`SnapshotError::Io`] naming the file; [`SnapshotError::Invalid`]
/// if the bytes are not a complete snapshot.
pub async fn save_stream<S, B, E>(path: &Path, mut chunks: S) -> Result<Saved, SnapshotError>
where
    S: Stream<Item = Result<B, E>> + Unpin,
    B: AsRef<[u8]>,
    E: std::fmt::Display,
{
    let io = |source| SnapshotError::Io {
        path: path.display().to_string(),
        source,
    };
    let (dir, tmp) = temporary_beside(path);
    let written: Result<(u64, ReadSnapshot), SnapshotError> = async {
        let mut f = tokio::fs::File::create(&tmp).await.map_err(io)?;
        let mut bytes = 0u64;
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|e| SnapshotError::Stream(e.to_string()))?;
            f.write_all(chunk.as_ref()).await.map_err(io)?;
            bytes += chunk.as_ref().len() as u64;
        }
        f.sync_all().await.map_err(io)?;
        drop(f);
        let check = tmp.clone();
        let read = tokio::task::spawn_blocking(move || read_any_file(&check, false))
            .await
            .map_err(|e| SnapshotError::Stream(format!("verifying the snapshot: {e}")))?
            .map_err(|e| match e {
                SnapshotError::Invalid(m) => {
                    SnapshotError::Invalid(m.replace(&tmp.display().to_string(), "the snapshot"))
                }
                e => e,
            })?;
        Ok((bytes, read))
    }
    .await;
    let (bytes, read) = match written {
        Ok(w) => w,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    if let Err(e) = std::fs::rename(&tmp, path).and_then(|()| std::fs::File::open(&dir)?.sync_all()) {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(e));
    }
    Ok(Saved {
        format: read.format,
        revision: read.snapshot.revision,
        keys: read.snapshot.items.len(),
        bytes,
    })
}

/// The directory of `path` and a temporary file name beside it (`.NAME.part`).
fn temporary_beside(path: &Path) -> (PathBuf, PathBuf) {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.part"));
    (dir, tmp)
}

/// Every key of a store as of one revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The store revision the snapshot was taken at.
    pub revision: Revision,
    /// Every live key at `revision`, in ascending key order.
    pub items: Vec<KeyValue>,
}

impl Snapshot {
    /// Takes a consistent snapshot of `store`: its current revision, then every key
    /// under `/` at that revision, read in pages of [`PAGE_SIZE`]. Values are taken
    /// as they rest on disk ([`Store::at_rest`]): with encryption at rest, encrypted.
    ///
    /// Errors: [`SnapshotError::Store`] if a read fails, including
    /// [`crate::Error::Compacted`] if compaction passes the snapshot's revision while
    /// it is being read (retrying takes a newer one).
    pub async fn take(store: &dyn Store) -> Result<Self, SnapshotError> {
        let store = store.at_rest().unwrap_or(store);
        let revision = store.current_revision().await?;
        let mut items = Vec::new();
        let mut start_after = None;
        loop {
            let page = store
                .list(
                    "/",
                    ListOptions {
                        revision: Some(revision),
                        start_after: start_after.take(),
                        limit: Some(PAGE_SIZE),
                    },
                )
                .await?;
            let last = page.items.last().map(|kv| kv.key.clone());
            items.extend(page.items);
            match last {
                Some(k) if page.remaining > 0 => start_after = Some(k),
                _ => break,
            }
        }
        Ok(Self { revision, items })
    }

    /// The snapshot in the file format described in the module docs.
    pub fn encode(&self) -> Vec<u8> {
        let size: usize = self.items.iter().map(|kv| 24 + kv.key.len() + kv.value.len()).sum();
        let mut out = Vec::with_capacity(HEADER_LEN + size + CHECKSUM_LEN);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&self.revision.to_le_bytes());
        out.extend_from_slice(&(self.items.len() as u64).to_le_bytes());
        for kv in &self.items {
            put_bytes(&mut out, kv.key.as_bytes());
            out.extend_from_slice(&kv.create_revision.to_le_bytes());
            out.extend_from_slice(&kv.mod_revision.to_le_bytes());
            put_bytes(&mut out, &kv.value);
        }
        let sum = ring::digest::digest(&ring::digest::SHA256, &out);
        out.extend_from_slice(sum.as_ref());
        out
    }

    /// Parses and verifies a snapshot file's bytes.
    ///
    /// Errors: [`SnapshotError::Invalid`] if the magic, version or checksum is wrong
    /// (a truncated or corrupted file), if the records do not match the header's key
    /// count, or if the keys or revisions are inconsistent (keys out of order,
    /// revisions beyond the snapshot's).
    pub fn decode(raw: &[u8]) -> Result<Self, SnapshotError> {
        let invalid = |m: &str| SnapshotError::Invalid(m.to_string());
        if raw.len() < MAGIC.len() || &raw[..MAGIC.len()] != MAGIC {
            return Err(invalid("the file does not start with the snapshot magic bytes"));
        }
        if raw.len() < HEADER_LEN + CHECKSUM_LEN {
            return Err(invalid("the file is truncated (shorter than header and checksum)"));
        }
        let (body, sum) = raw.split_at(raw.len() - CHECKSUM_LEN);
        let mut r = Reader(&body[MAGIC.len()..]);
        let version = u32::from_le_bytes(r.take(4)?.try_into().expect("4 bytes"));
        if version != FORMAT_VERSION {
            return Err(SnapshotError::Invalid(format!(
                "format version {version} is not supported (this build reads version {FORMAT_VERSION})"
            )));
        }
        if ring::digest::digest(&ring::digest::SHA256, body).as_ref() != sum {
            return Err(invalid("checksum mismatch: the file is truncated or corrupted"));
        }
        let revision = r.i64()?;
        let count = r.i64()? as u64;
        let mut items: Vec<KeyValue> = Vec::with_capacity(count.min(1 << 20) as usize);
        for _ in 0..count {
            let key = String::from_utf8(r.bytes()?.to_vec()).map_err(|_| invalid("a key is not UTF-8"))?;
            let create_revision = r.i64()?;
            let mod_revision = r.i64()?;
            let value = r.bytes()?.to_vec();
            if create_revision < 1 || create_revision > mod_revision || mod_revision > revision {
                return Err(SnapshotError::Invalid(format!(
                    "key {key} has revisions {create_revision}/{mod_revision} inconsistent with snapshot revision {revision}"
                )));
            }
            if items.last().is_some_and(|p| p.key >= key) {
                return Err(SnapshotError::Invalid(format!("key {key} is out of order")));
            }
            items.push(KeyValue {
                key,
                value,
                create_revision,
                mod_revision,
            });
        }
        if !r.0.is_empty() {
            return Err(invalid("trailing bytes after the last record"));
        }
        Ok(Self { revision, items })
    }

    /// Writes the snapshot to `path` atomically: into a temporary file beside it,
    /// fsync'd, then renamed over `path`. Returns the file's size in bytes.
    ///
    /// Errors: [`SnapshotError::Io`] naming the file.
    pub fn write_file(&self, path: &Path) -> Result<u64, SnapshotError> {
        write_atomically(path, &self.encode())
    }

    /// Reads and verifies the snapshot file at `path` (see [`Snapshot::decode`]).
    ///
    /// Errors: [`SnapshotError::Io`], or [`SnapshotError::Invalid`] naming the file.
    pub fn read_file(path: &Path) -> Result<Self, SnapshotError> {
        let raw = std::fs::read(path).map_err(|source| SnapshotError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::decode(&raw).map_err(|e| match e {
            SnapshotError::Invalid(m) => SnapshotError::Invalid(format!("{}: {m}", path.display())),
            e => e,
        })
    }
}

/// Writes `bytes` to `path` through a temporary file in the same directory, fsync'd
/// and renamed into place, so `path` is either absent or complete. Returns the size.
///
/// Errors: [`SnapshotError::Io`] naming the file.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<u64, SnapshotError> {
    let io = |source| SnapshotError::Io {
        path: path.display().to_string(),
        source,
    };
    let (dir, tmp) = temporary_beside(path);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(&dir)?.sync_all()
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(e));
    }
    Ok(bytes.len() as u64)
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    let len = u32::try_from(b.len()).expect("keys and values are far below 4 GiB");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(b);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], SnapshotError> {
        if self.0.len() < n {
            return Err(SnapshotError::Invalid("a record runs past the end of the file".into()));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }

    fn i64(&mut self) -> Result<i64, SnapshotError> {
        Ok(i64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }

    fn bytes(&mut self) -> Result<&'a [u8], SnapshotError> {
        let n = u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")) as usize;
        self.take(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Snapshot {
        Snapshot {
            revision: 9,
            items: vec![
                KeyValue {
                    key: "/registry/namespaces/default".into(),
                    value: b"{\"kind\":\"Namespace\"}".to_vec(),
                    create_revision: 1,
                    mod_revision: 4,
                },
                KeyValue {
                    key: "/registry/pods/default/web".into(),
                    value: vec![0, 1, 2, 255],
                    create_revision: 7,
                    mod_revision: 9,
                },
            ],
        }
    }

    #[test]
    fn encode_decode_round_trip() {
        let s = sample();
        assert_eq!(Snapshot::decode(&s.encode()).unwrap(), s);
        let empty = Snapshot {
            revision: 0,
            items: vec![],
        };
        assert_eq!(Snapshot::decode(&empty.encode()).unwrap(), empty);
    }

    #[test]
    fn truncated_or_corrupted_files_are_refused() {
        let raw = sample().encode();
        for n in 0..raw.len() {
            let err = Snapshot::decode(&raw[..n]).unwrap_err();
            assert!(matches!(err, SnapshotError::Invalid(_)), "prefix of {n} bytes: {err}");
        }
        for i in MAGIC.len()..raw.len() {
            let mut bad = raw.clone();
            bad[i] ^= 0x40;
            assert!(Snapshot::decode(&bad).is_err(), "flipped byte {i} was accepted");
        }
        let err =
            Snapshot::decode(b"SQLite format 3\0......................................................").unwrap_err();
        assert!(err.to_string().contains("magic"), "{err}");
    }
}
