//! A small read-only reader of bbolt database files (`go.etcd.io/bbolt`, etcd's
//! backend), enough to read the buckets of an etcd snapshot. It never writes, maps or
//! locks the file: pages are read on demand with positioned reads, and every offset
//! is checked against the page and file bounds, so a damaged file yields
//! [`BoltError::Corrupt`] rather than a panic or a runaway read.
//!
//! The format (bbolt v1.3/v1.4, "version 2"; integers in the writer's byte order,
//! little-endian on every platform etcd ships for):
//! - The file is an array of pages of `page_size` bytes (the writer's OS page size).
//!   Page `n` starts at `n * page_size`. A page may span `1 + overflow` pages.
//! - Page header, 16 bytes: `id: u64`, `flags: u16` (`0x01` branch, `0x02` leaf,
//!   `0x04` meta, `0x10` freelist), `count: u16` (elements), `overflow: u32`.
//! - Pages 0 and 1 are meta pages; after the header: `magic: u32` (`0xED0CDAED`),
//!   `version: u32` (2), `page_size: u32`, `flags: u32`, the root bucket
//!   (`root: u64` page id, `sequence: u64`), `freelist: u64`, `pgid: u64` (the high
//!   water mark: pages `0..pgid` are in use), `txid: u64`, `checksum: u64` (FNV-1a
//!   64 of the 56 bytes before it). The valid meta with the higher `txid` is current.
//! - Branch pages: `count` elements of 16 bytes (`pos: u32`, `ksize: u32`,
//!   `pgid: u64`), each the first key of a child page; the key starts `pos` bytes
//!   after its element.
//! - Leaf pages: `count` elements of 16 bytes (`flags: u32`, `pos: u32`,
//!   `ksize: u32`, `vsize: u32`); the key starts `pos` bytes after its element and the
//!   value follows the key. Flag `0x01` marks a nested bucket, whose value is a
//!   bucket header (`root: u64`, `sequence: u64`); a bucket with `root == 0` is
//!   inline: its one leaf page follows the header inside the value.
//! - The root bucket (the meta's `root`) holds the top-level buckets by name. Keys
//!   within a bucket are in ascending byte order across its leaves.
//!
//! Upstream: `go.etcd.io/bbolt` `page.go`, `db.go` (meta), `bucket.go`, `node.go`.

use std::fs::File;
use std::os::unix::fs::FileExt;

/// bbolt's magic number (in each meta page).
const MAGIC: u32 = 0xED0C_DAED;
/// The data file version bbolt writes.
const VERSION: u32 = 2;
const PAGE_HEADER: usize = 16;
const ELEMENT: usize = 16;
const META_LEN: usize = 64;
/// Bytes of the meta covered by its checksum.
const META_CHECKSUMMED: usize = 56;
const BRANCH: u16 = 0x01;
const LEAF: u16 = 0x02;
const META: u16 = 0x04;
const BUCKET_FLAG: u32 = 0x01;
const BUCKET_HEADER: usize = 16;
/// Deeper trees than this mean a cycle in a damaged file (a real tree of 2^64 keys is
/// far shallower).
const MAX_DEPTH: usize = 64;

/// Errors reading a bbolt file.
#[derive(Debug, thiserror::Error)]
pub enum BoltError {
    /// Reading the file failed.
    #[error("reading the file: {0}")]
    Io(#[from] std::io::Error),
    /// The bytes are not a consistent bbolt database (truncated, damaged, or another
    /// format).
    #[error("{0}")]
    Corrupt(String),
}

fn corrupt(m: impl Into<String>) -> BoltError {
    BoltError::Corrupt(m.into())
}

/// The current meta page of a database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// Page size in bytes.
    pub page_size: u64,
    /// Page id of the root bucket's tree.
    pub root: u64,
    /// High water mark: pages `0..pgid` are in use.
    pub pgid: u64,
    /// The transaction that wrote this meta.
    pub txid: u64,
}

impl Meta {
    /// Parses and checks a meta at the start of `b` (the bytes after a page header).
    fn parse(b: &[u8]) -> Result<Self, String> {
        if b.len() < META_LEN {
            return Err("the meta page is cut short".into());
        }
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"));
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"));
        if u32_at(0) != MAGIC {
            return Err("no bbolt magic number in the meta page".into());
        }
        if u32_at(4) != VERSION {
            return Err(format!(
                "bbolt data version {} is not supported (expected {VERSION})",
                u32_at(4)
            ));
        }
        if fnv1a64(&b[..META_CHECKSUMMED]) != u64_at(56) {
            return Err("meta page checksum mismatch".into());
        }
        let page_size = u64::from(u32_at(8));
        if !(512..=(1 << 20)).contains(&page_size) || !page_size.is_power_of_two() {
            return Err(format!("invalid page size {page_size}"));
        }
        Ok(Self {
            page_size,
            root: u64_at(16),
            pgid: u64_at(40),
            txid: u64_at(48),
        })
    }
}

/// FNV-1a, 64 bits (Go's `hash/fnv` `New64a`), bbolt's meta checksum.
fn fnv1a64(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325, |h, &x| {
        (h ^ u64::from(x)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// A visitor of a bucket's entries: `(key, value)`.
pub type EntryFn<'a> = dyn FnMut(&[u8], &[u8]) -> Result<(), BoltError> + 'a;

/// A visitor of a page's leaf elements: `(flags, key, value)`.
type ElementFn<'a> = dyn FnMut(u32, &[u8], &[u8]) -> Result<(), BoltError> + 'a;

/// A bucket to iterate: its tree's root page, or an inline bucket's single leaf.
#[derive(Debug, Clone)]
pub enum Bucket {
    /// A bucket whose tree starts at this page.
    Root(u64),
    /// An inline bucket: the bytes of its leaf page (header included).
    Inline(Vec<u8>),
}

/// An open bbolt file, read-only.
#[derive(Debug)]
pub struct Bolt {
    file: File,
    /// Length of the database part of the file (an etcd snapshot has a checksum after it).
    len: u64,
    meta: Meta,
}

impl Bolt {
    /// Opens the database in the first `len` bytes of `file`: reads both meta pages
    /// and keeps the valid one with the higher transaction id.
    ///
    /// Errors: [`BoltError::Corrupt`] if neither meta page is valid (not a bbolt
    /// file, or damaged) or if the pages in use extend past `len` (truncated).
    pub fn open(file: File, len: u64) -> Result<Self, BoltError> {
        let read_meta = |offset: u64| -> Result<Meta, String> {
            let mut buf = [0u8; PAGE_HEADER + META_LEN];
            if offset + buf.len() as u64 > len {
                return Err("the file is shorter than a meta page".into());
            }
            file.read_exact_at(&mut buf, offset).map_err(|e| e.to_string())?;
            let flags = u16::from_le_bytes([buf[8], buf[9]]);
            if flags != META {
                return Err(format!("page at offset {offset} is not a meta page (flags {flags:#x})"));
            }
            Meta::parse(&buf[PAGE_HEADER..])
        };
        let first = read_meta(0);
        // The second meta is one page in; with the first unreadable, try the common size.
        let second = read_meta(first.as_ref().map_or(4096, |m| m.page_size));
        let meta = match (first, second) {
            (Ok(a), Ok(b)) => {
                if a.page_size != b.page_size {
                    return Err(corrupt("the two meta pages disagree on the page size"));
                }
                if a.txid >= b.txid { a } else { b }
            }
            (Ok(m), Err(_)) | (Err(_), Ok(m)) => m,
            (Err(e), Err(_)) => return Err(corrupt(format!("not a bbolt database: {e}"))),
        };
        let used = meta
            .pgid
            .checked_mul(meta.page_size)
            .ok_or_else(|| corrupt("page count overflows"))?;
        if meta.pgid < 2 || used > len {
            return Err(corrupt(format!(
                "truncated: the database uses {used} bytes ({} pages of {}) but the file holds {len}",
                meta.pgid, meta.page_size
            )));
        }
        if meta.root < 2 || meta.root >= meta.pgid {
            return Err(corrupt(format!("root page {} is out of range", meta.root)));
        }
        Ok(Self { file, len, meta })
    }

    /// The current meta page.
    pub fn meta(&self) -> Meta {
        self.meta
    }

    /// Reads page `id` with its overflow pages, checking its header.
    fn page(&self, id: u64) -> Result<Vec<u8>, BoltError> {
        if id < 2 || id >= self.meta.pgid {
            return Err(corrupt(format!("page id {id} is out of range (0..{})", self.meta.pgid)));
        }
        let size = self.meta.page_size as usize;
        let offset = id * self.meta.page_size;
        let mut buf = vec![0u8; size];
        self.file.read_exact_at(&mut buf, offset)?;
        let header_id = u64::from_le_bytes(buf[..8].try_into().expect("8 bytes"));
        if header_id != id {
            return Err(corrupt(format!("page {id} claims to be page {header_id}")));
        }
        let overflow = u64::from(u32::from_le_bytes(buf[12..16].try_into().expect("4 bytes")));
        if overflow > 0 {
            let end = id.checked_add(overflow).filter(|&e| e < self.meta.pgid);
            if end.is_none() || (id + overflow + 1) * self.meta.page_size > self.len {
                return Err(corrupt(format!("page {id} overflows past the end ({overflow} pages)")));
            }
            buf.resize(size * (overflow as usize + 1), 0);
            self.file
                .read_exact_at(&mut buf[size..], offset + self.meta.page_size)?;
        }
        Ok(buf)
    }

    /// The top-level bucket named `name`, if present.
    ///
    /// Errors: [`BoltError::Corrupt`] if the root bucket's pages are damaged.
    pub fn bucket(&self, name: &[u8]) -> Result<Option<Bucket>, BoltError> {
        let mut found = None;
        self.walk(&Bucket::Root(self.meta.root), &mut |flags, k, v| {
            if flags & BUCKET_FLAG != 0 && k == name {
                found = Some(bucket_of(v)?);
            }
            Ok(())
        })?;
        Ok(found)
    }

    /// Calls `f` with every key and value of `bucket` in ascending key order (nested
    /// buckets are skipped).
    ///
    /// Errors: [`BoltError::Corrupt`] for damaged pages or keys out of order; any
    /// error `f` returns.
    pub fn for_each(&self, bucket: &Bucket, f: &mut EntryFn<'_>) -> Result<(), BoltError> {
        let mut last: Option<Vec<u8>> = None;
        self.walk(bucket, &mut |flags, k, v| {
            if last.as_deref().is_some_and(|l| l >= k) {
                return Err(corrupt("keys out of order in a bucket"));
            }
            last = Some(k.to_vec());
            if flags & BUCKET_FLAG == 0 { f(k, v) } else { Ok(()) }
        })
    }

    /// Every leaf element of `bucket`, in order: `(flags, key, value)`.
    fn walk(&self, bucket: &Bucket, f: &mut ElementFn<'_>) -> Result<(), BoltError> {
        match bucket {
            Bucket::Inline(page) => leaf_elements(page, f),
            Bucket::Root(id) => self.walk_page(*id, 0, f),
        }
    }

    fn walk_page(&self, id: u64, depth: usize, f: &mut ElementFn<'_>) -> Result<(), BoltError> {
        if depth > MAX_DEPTH {
            return Err(corrupt("the page tree is deeper than possible (a cycle)"));
        }
        let page = self.page(id)?;
        match page_flags(&page) {
            LEAF => leaf_elements(&page, f),
            BRANCH => {
                let count = page_count(&page);
                for i in 0..count {
                    let e = PAGE_HEADER + i * ELEMENT;
                    let el = page
                        .get(e..e + ELEMENT)
                        .ok_or_else(|| corrupt(format!("page {id}: element {i} is past the end")))?;
                    let child = u64::from_le_bytes(el[8..16].try_into().expect("8 bytes"));
                    self.walk_page(child, depth + 1, f)?;
                }
                Ok(())
            }
            other => Err(corrupt(format!(
                "page {id} is neither a branch nor a leaf (flags {other:#x})"
            ))),
        }
    }
}

fn page_flags(page: &[u8]) -> u16 {
    u16::from_le_bytes([page[8], page[9]])
}

fn page_count(page: &[u8]) -> usize {
    usize::from(u16::from_le_bytes([page[10], page[11]]))
}

/// Calls `f` with each element of a leaf page.
fn leaf_elements(page: &[u8], f: &mut ElementFn<'_>) -> Result<(), BoltError> {
    if page.len() < PAGE_HEADER {
        return Err(corrupt("an inline bucket page is cut short"));
    }
    if page_flags(page) != LEAF {
        return Err(corrupt(format!("expected a leaf page (flags {:#x})", page_flags(page))));
    }
    let u32_at = |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes")) as usize;
    for i in 0..page_count(page) {
        let e = PAGE_HEADER + i * ELEMENT;
        let el = page
            .get(e..e + ELEMENT)
            .ok_or_else(|| corrupt(format!("leaf element {i} is past the end of its page")))?;
        let (flags, pos, ksize, vsize) = (u32_at(el, 0) as u32, u32_at(el, 4), u32_at(el, 8), u32_at(el, 12));
        let k = e + pos;
        let kv = page
            .get(k..k + ksize + vsize)
            .ok_or_else(|| corrupt(format!("leaf element {i}'s key or value is past the end of its page")))?;
        f(flags, &kv[..ksize], &kv[ksize..])?;
    }
    Ok(())
}

/// The bucket described by a bucket header value.
fn bucket_of(v: &[u8]) -> Result<Bucket, BoltError> {
    if v.len() < BUCKET_HEADER {
        return Err(corrupt("a bucket header is cut short"));
    }
    let root = u64::from_le_bytes(v[..8].try_into().expect("8 bytes"));
    Ok(if root == 0 {
        Bucket::Inline(v[BUCKET_HEADER..].to_vec())
    } else {
        Bucket::Root(root)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a64_matches_go() {
        // Go: fnv.New64a() over "" and "a".
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
    }
}
