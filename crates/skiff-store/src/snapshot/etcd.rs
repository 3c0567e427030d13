//! Reading etcd snapshot files (what etcd's Maintenance `Snapshot` API streams and
//! `etcdctl snapshot save` writes) into a [`Snapshot`], the migration path from an
//! etcd datastore to the embedded engine.
//!
//! The file is etcd's bbolt backend database (read with [`crate::bbolt`]) followed by
//! the SHA-256 of the database bytes, which etcd's server appends to the stream
//! (`v3rpc/maintenance.go`). As `etcdctl snapshot restore` does, a file whose length
//! is 32 bytes past a multiple of 512 carries that checksum and must match it; a
//! file without one (a member's raw `member/snap/db`, or a snapshot cut short at a
//! page boundary) is refused unless the caller skips the check, as etcdctl's
//! `--skip-hash-check` does.
//!
//! The MVCC layout (etcd `server/storage/mvcc`, `schema`):
//! - bucket `key`: one entry per revision of every key. The bucket key is the
//!   revision: 8-byte big-endian main revision, `_`, 8-byte big-endian sub revision,
//!   and a trailing `t` for a tombstone (a delete). The value is an `mvccpb.KeyValue`
//!   protobuf (key, create_revision, mod_revision, version, value, lease); a
//!   tombstone's carries only the key.
//! - bucket `meta`: `finishedCompactRev` and `scheduledCompactRev` (revisions in the
//!   same 17-byte form), `consistent_index`, and others not needed here.
//!
//! Compaction removes the older revisions of each key, so entries in revision order
//! with the last one per key winning give every key as of the newest revision; a key
//! whose last entry is a tombstone is deleted. The snapshot's revision is the newest
//! main revision in `key`, or the compacted revision when it is newer (a compaction
//! may have removed the tombstones of the last writes), as etcd's own restore
//! computes it (`mvcc.store.restore`).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use crate::bbolt::{Bolt, BoltError};
use crate::{KeyValue, Revision};

use super::{Snapshot, SnapshotError};

/// Length of etcd's SHA-256 trailer.
const HASH_LEN: u64 = 32;
const REV_LEN: usize = 17;

/// An etcd snapshot file, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdSnapshot {
    /// Every live key as of the snapshot's revision.
    pub snapshot: Snapshot,
    /// etcd's compacted revision (`finishedCompactRev`; 0 if never compacted).
    pub compacted: Revision,
    /// Whether the file carried etcd's SHA-256 trailer (it was verified).
    pub checksum_verified: bool,
    /// Keys that were attached to an etcd lease; they are restored without one.
    pub leased_keys: usize,
}

/// `mvccpb.KeyValue` (etcd `api/mvccpb/kv.proto`).
#[derive(Clone, PartialEq, prost::Message)]
struct MvccKeyValue {
    #[prost(bytes = "vec", tag = "1")]
    key: Vec<u8>,
    #[prost(int64, tag = "2")]
    create_revision: i64,
    #[prost(int64, tag = "3")]
    mod_revision: i64,
    #[prost(int64, tag = "4")]
    version: i64,
    #[prost(bytes = "vec", tag = "5")]
    value: Vec<u8>,
    #[prost(int64, tag = "6")]
    lease: i64,
}

/// Whether `head` (the first bytes of a file) looks like a bbolt database: a meta
/// page (flag `0x04`) with bbolt's magic number.
pub fn looks_like_bbolt(head: &[u8]) -> bool {
    head.len() >= 20 && u16::from_le_bytes([head[8], head[9]]) == 0x04 && head[16..20] == 0xED0C_DAEDu32.to_le_bytes()
}

/// Reads and verifies the etcd snapshot file at `path`: the SHA-256 trailer, then the
/// bbolt pages, then every `key` bucket entry. With `skip_hash_check` a file without
/// the trailer (a member's `member/snap/db`) is read too.
///
/// Errors: [`SnapshotError::Io`] if the file cannot be read;
/// [`SnapshotError::Invalid`] naming the file if it is truncated (its length is not a
/// whole number of pages, with or without the trailer, it has no trailer and
/// `skip_hash_check` is off, or the pages in use run past its end), the checksum
/// does not match, a page or record is damaged, a key is not UTF-8 (the embedded
/// engine's keys are strings), or it lacks etcd's buckets.
pub fn read_file(path: &Path, skip_hash_check: bool) -> Result<EtcdSnapshot, SnapshotError> {
    let io = |source| SnapshotError::Io {
        path: path.display().to_string(),
        source,
    };
    let invalid = |m: String| SnapshotError::Invalid(format!("{}: {m}", path.display()));
    let file = File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    let checksum_verified = match len % 512 {
        32 => true,
        0 if skip_hash_check => false,
        0 => {
            return Err(invalid(
                "no sha256 checksum after the database (truncated, or a member's db file: \
                 pass --skip-hash-check to restore one)"
                    .into(),
            ));
        }
        _ => {
            return Err(invalid(format!(
                "truncated: {len} bytes is neither whole database pages nor pages followed by etcd's 32-byte checksum"
            )));
        }
    };
    let db_len = if checksum_verified { len - HASH_LEN } else { len };
    if checksum_verified {
        verify_sha256(&file, db_len).map_err(|e| match e {
            BoltError::Io(source) => io(source),
            e => invalid(e.to_string()),
        })?;
    }
    let bolt = Bolt::open(file.try_clone().map_err(io)?, db_len).map_err(|e| invalid(e.to_string()))?;
    read_mvcc(&bolt)
        .map(|(snapshot, compacted, leased_keys)| EtcdSnapshot {
            snapshot,
            compacted,
            checksum_verified,
            leased_keys,
        })
        .map_err(|e| invalid(e.to_string()))
}

/// Checks the SHA-256 of the first `db_len` bytes against the 32 bytes after them.
fn verify_sha256(file: &File, db_len: u64) -> Result<(), BoltError> {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut r = std::io::BufReader::with_capacity(1 << 20, file.take(db_len));
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
    }
    let mut trailer = [0u8; HASH_LEN as usize];
    std::os::unix::fs::FileExt::read_exact_at(file, &mut trailer, db_len)?;
    if ctx.finish().as_ref() != trailer {
        return Err(BoltError::Corrupt(
            "sha256 checksum mismatch: the file is truncated or corrupted".into(),
        ));
    }
    Ok(())
}

/// The main revision of a 17- or 18-byte bucket key; with whether it is a tombstone.
fn revision_of(k: &[u8]) -> Result<(Revision, bool), BoltError> {
    let tombstone = match k.len() {
        REV_LEN => false,
        18 if k[REV_LEN] == b't' => true,
        _ => {
            return Err(BoltError::Corrupt(format!(
                "invalid revision key {k:?} in the key bucket"
            )));
        }
    };
    if k[8] != b'_' {
        return Err(BoltError::Corrupt(format!(
            "invalid revision key {k:?} in the key bucket"
        )));
    }
    let main = i64::from_be_bytes(k[..8].try_into().expect("8 bytes"));
    Ok((main, tombstone))
}

/// Every live key, the compacted revision, and the number of leased keys.
fn read_mvcc(bolt: &Bolt) -> Result<(Snapshot, Revision, usize), BoltError> {
    let not_etcd = |b: &str| BoltError::Corrupt(format!("no `{b}` bucket: not an etcd database"));
    let meta = bolt.bucket(b"meta")?.ok_or_else(|| not_etcd("meta"))?;
    let keys = bolt.bucket(b"key")?.ok_or_else(|| not_etcd("key"))?;
    let (mut finished, mut scheduled) = (0, 0);
    bolt.for_each(&meta, &mut |k, v| {
        let slot = match k {
            b"finishedCompactRev" => &mut finished,
            b"scheduledCompactRev" => &mut scheduled,
            _ => return Ok(()),
        };
        if v.len() < REV_LEN {
            return Err(BoltError::Corrupt(format!(
                "meta {} is not a revision",
                String::from_utf8_lossy(k)
            )));
        }
        *slot = revision_of(&v[..REV_LEN])?.0;
        Ok(())
    })?;

    let mut live: BTreeMap<Vec<u8>, MvccKeyValue> = BTreeMap::new();
    let mut newest: Revision = 0;
    bolt.for_each(&keys, &mut |k, v| {
        let (main, tombstone) = revision_of(k)?;
        newest = newest.max(main);
        let kv = <MvccKeyValue as prost::Message>::decode(v)
            .map_err(|e| BoltError::Corrupt(format!("revision {main}: not an mvccpb.KeyValue: {e}")))?;
        if tombstone {
            live.remove(&kv.key);
        } else {
            if kv.mod_revision != main {
                return Err(BoltError::Corrupt(format!(
                    "revision {main} holds a key value of mod revision {}",
                    kv.mod_revision
                )));
            }
            live.insert(kv.key.clone(), kv);
        }
        Ok(())
    })?;
    let revision = newest.max(finished).max(scheduled);
    let mut leased = 0;
    let mut items = Vec::with_capacity(live.len());
    for (key, kv) in live {
        let key = String::from_utf8(key).map_err(|e| {
            BoltError::Corrupt(format!(
                "key {:?} is not UTF-8; the embedded engine stores only UTF-8 keys",
                String::from_utf8_lossy(e.as_bytes())
            ))
        })?;
        if kv.create_revision < 1 || kv.create_revision > kv.mod_revision {
            return Err(BoltError::Corrupt(format!(
                "key {key} has create revision {} and mod revision {}",
                kv.create_revision, kv.mod_revision
            )));
        }
        leased += usize::from(kv.lease != 0);
        items.push(KeyValue {
            key,
            value: kv.value,
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
        });
    }
    Ok((Snapshot { revision, items }, finished, leased))
}
