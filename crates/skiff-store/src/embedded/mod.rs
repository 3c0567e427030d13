//! The embedded engine: the default store, a single redb database file.
//!
//! Layout (three tables):
//! - `current`: key -> live value with its create and mod revisions (gets and lists);
//! - `log`: revision -> the full event of that write (key, value after, and the value
//!   before), used to replay watches and to serve lists at older revisions; entries
//!   at or below the compacted revision are deleted by [`Store::compact`];
//! - `meta`: the current and the compacted revision.
//!
//! Durability: a write is acknowledged only after the transaction that holds it has
//! been committed with redb's immediate durability (data and header fsync'd). One
//! writer thread drains every pending request into a single transaction and commits
//! once (group commit), so concurrent writers share the fsync (module `writer`).
//! After an unclean shutdown, opening the file runs redb's repair, which verifies the
//! checksums of the last commit and rebuilds the allocator state in time proportional
//! to the file size; the crash test (`tests/crash.rs`) kills a writer process with
//! SIGKILL and checks that every acknowledged write survives.
//!
//! Watches subscribe to a broadcast of committed events and replay history from the
//! log first; a watcher that falls behind the broadcast re-reads the log, so no event
//! is lost or duplicated (module `watch`).
//!
//! Why redb: a pure-Rust, crash-safe B-tree with ACID transactions, one file, no C
//! toolchain; its single-writer model matches a store whose revisions are a single
//! sequence anyway.

mod codec;
mod read;
mod watch;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;

use redb::{Database, ReadableTable, TableDefinition};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::snapshot::{Snapshot, SnapshotError};
use crate::{Error, Event, KeyValue, ListOptions, ListResult, Result, Revision, Store, WatchStream};
use writer::{Op, Request};

const CURRENT: TableDefinition<&str, &[u8]> = TableDefinition::new("current");
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const META_REVISION: &str = "revision";
const META_COMPACTED: &str = "compacted";

/// Name of the database file inside the store directory.
pub const DATABASE_FILE: &str = "state.redb";

/// Default size of redb's page cache ([`EmbeddedStore::open`]), in bytes: 128 MiB
/// (redb's own default, 1 GiB, is kept resident once the data written reaches it).
pub const DEFAULT_CACHE_BYTES: usize = 128 << 20;

/// Capacity of the live-event broadcast; a watcher further behind catches up from the log.
const BROADCAST_CAPACITY: usize = 4096;

fn backend(e: impl std::fmt::Display) -> Error {
    Error::Backend(e.to_string())
}

/// `(current, compacted)` revisions from an open `meta` table.
fn revisions_in(meta: &impl ReadableTable<&'static str, u64>) -> Result<(Revision, Revision)> {
    let get = |k: &str| -> Result<Revision> { Ok(meta.get(k).map_err(backend)?.map_or(0, |v| v.value()) as i64) };
    Ok((get(META_REVISION)?, get(META_COMPACTED)?))
}

/// The embedded store. Share it behind an `Arc`; all methods take `&self`.
///
/// Dropping it stops the writer thread (after it has committed and answered every
/// write already submitted) and ends every watch stream once the events committed
/// before the drop have been delivered. The database file is closed as soon as the
/// store and any read still in flight are gone (watch streams do not keep it open).
pub struct EmbeddedStore {
    db: Arc<Database>,
    path: PathBuf,
    writer: Option<std_mpsc::Sender<Request>>,
    writer_thread: Option<JoinHandle<()>>,
    events: broadcast::Sender<Arc<Event>>,
    revision: Arc<AtomicI64>,
    compacted: Arc<AtomicI64>,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.path)
            .field("revision", &self.revision.load(Ordering::Acquire))
            .field("compacted", &self.compacted.load(Ordering::Acquire))
            .finish()
    }
}

/// The recovery advice printed when the database file is unusable. The store
/// directory is `<data-dir>/db` for `skiff server`, which is what
/// `skiff snapshot restore --data-dir` recreates.
fn recovery_hint(path: &Path) -> String {
    let dir = path.parent().unwrap_or(Path::new("."));
    let data_dir = dir.parent().unwrap_or(Path::new("."));
    format!(
        "nothing was changed. To recover, move {} aside and restore the latest snapshot: \
         `skiff snapshot restore FILE --data-dir {}` (scheduled snapshots are kept in {}/snapshots)",
        dir.display(),
        data_dir.display(),
        data_dir.display()
    )
}

fn init_tables(db: &Database) -> Result<()> {
    let tx = db.begin_write().map_err(backend)?;
    tx.open_table(CURRENT).map_err(backend)?;
    tx.open_table(LOG).map_err(backend)?;
    tx.open_table(META).map_err(backend)?;
    tx.commit().map_err(backend)
}

/// Creates a new database at `path` atomically: built under a temporary name, then
/// renamed into place, so a file at `path` is always a complete database (a crash
/// during creation leaves no half-made file that a later start would mistake for an
/// empty cluster). `fill` runs on the new database before the rename.
fn create_database(path: &Path, cache_bytes: usize, fill: impl FnOnce(&Database) -> Result<()>) -> Result<()> {
    let tmp = path.with_extension("redb.new");
    let _ = std::fs::remove_file(&tmp);
    let made = (|| -> Result<()> {
        let db = redb::Builder::new()
            .set_cache_size(cache_bytes)
            .create(&tmp)
            .map_err(backend)?;
        init_tables(&db)?;
        fill(&db)?;
        drop(db);
        std::fs::rename(&tmp, path).map_err(backend)?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(backend)?;
        }
        Ok(())
    })();
    if made.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    made.map_err(|e| Error::Backend(format!("creating store database {}: {e}", path.display())))
}

fn open_database(path: &Path, cache_bytes: usize) -> Result<Database> {
    if !path.exists() {
        create_database(path, cache_bytes, |_| Ok(()))?;
    }
    let damaged = |e: &dyn std::fmt::Display| {
        Error::Backend(format!(
            "store database {} is damaged or truncated ({e}); {}",
            path.display(),
            recovery_hint(path)
        ))
    };
    // redb panics on some kinds of damage instead of returning an error: treat a
    // panic while opening and verifying the file as damage too.
    let opened = std::panic::catch_unwind(|| -> Result<Database> {
        let mut db = redb::Builder::new()
            .set_cache_size(cache_bytes)
            .open(path)
            .map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => Error::Backend(format!(
                    "store database {} is already open (is another skiff server using this data dir?)",
                    path.display()
                )),
                e => damaged(&e),
            })?;
        // Verify every page's checksum now rather than fail requests later (and
        // repair what an unclean shutdown left, which redb does by rolling back to
        // the last complete commit).
        match db.check_integrity() {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(path = %path.display(), "store database was repaired after an unclean shutdown")
            }
            Err(e) => return Err(damaged(&e)),
        }
        Ok(db)
    });
    let db = match opened {
        Ok(r) => r?,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "the database reader panicked".into());
            return Err(damaged(&what));
        }
    };
    {
        let tx = redb::ReadableDatabase::begin_read(&db).map_err(|e| damaged(&e))?;
        tx.open_table(CURRENT).map_err(|e| damaged(&e))?;
        tx.open_table(LOG).map_err(|e| damaged(&e))?;
        let meta = tx.open_table(META).map_err(|e| damaged(&e))?;
        revisions_in(&meta).map_err(|e| damaged(&e))?;
    }
    Ok(db)
}

impl EmbeddedStore {
    /// Opens (or creates) the store in directory `dir` (creating `dir` if missing);
    /// the data lives in the file `dir/state.redb` ([`DATABASE_FILE`]). Revisions
    /// continue from the last committed one.
    ///
    /// Blocks on file I/O (and, after an unclean shutdown, on redb's recovery); call
    /// it before serving or from a blocking context.
    ///
    /// Errors: [`Error::Backend`], naming the file, if the directory cannot be
    /// created, the file is not a valid database (damaged or truncated), or another
    /// process (or another `EmbeddedStore` in this one) holds it open.
    pub fn open(dir: &Path) -> Result<Self> {
        Self::open_with_cache(dir, DEFAULT_CACHE_BYTES)
    }

    /// [`EmbeddedStore::open`] with a page cache of at most `cache_bytes` bytes
    /// (redb's read cache and write buffer together; pages beyond it are read from
    /// the file, i.e. usually from the OS page cache).
    pub fn open_with_cache(dir: &Path, cache_bytes: usize) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::Backend(format!("creating {}: {e}", dir.display())))?;
        let path = dir.join(DATABASE_FILE);
        let db = Arc::new(open_database(&path, cache_bytes)?);
        let (revision, compacted) = {
            let tx = redb::ReadableDatabase::begin_read(&*db).map_err(backend)?;
            revisions_in(&tx.open_table(META).map_err(backend)?)?
        };
        let (events, _) = broadcast::channel(BROADCAST_CAPACITY);
        let published = writer::Published {
            events: events.clone(),
            revision: Arc::new(AtomicI64::new(revision)),
            compacted: Arc::new(AtomicI64::new(compacted)),
        };
        let (revision, compacted) = (published.revision.clone(), published.compacted.clone());
        let (tx, rx) = std_mpsc::channel::<Request>();
        let (w, wpath) = (db.clone(), path.clone());
        let writer_thread = std::thread::Builder::new()
            .name("skiff-store-writer".into())
            .spawn(move || writer::run(&w, &wpath, rx, &published))
            .map_err(|e| Error::Backend(format!("starting the store writer thread: {e}")))?;
        Ok(Self {
            db,
            path,
            writer: Some(tx),
            writer_thread: Some(writer_thread),
            events,
            revision,
            compacted,
        })
    }

    /// Restores `snapshot` into a new store in directory `dir` (created if missing),
    /// for `skiff snapshot restore`. Every key keeps its value, `create_revision` and
    /// `mod_revision`; the store's revision is the snapshot's, so the next write gets
    /// the one after it. History before the snapshot is not in it, so the store
    /// starts compacted at the snapshot's revision: lists at older revisions and
    /// watches from them fail with [`Error::Compacted`] (`410 Gone`; clients re-list),
    /// while a watch from the snapshot's revision itself works.
    ///
    /// The database is built under a temporary name and renamed into place, so an
    /// interrupted restore leaves no database behind.
    ///
    /// Errors: [`SnapshotError::TargetNotEmpty`] if `dir` exists and holds anything;
    /// [`SnapshotError::Store`] if writing the database fails.
    pub fn restore(dir: &Path, snapshot: &Snapshot) -> Result<(), SnapshotError> {
        if let Ok(mut entries) = std::fs::read_dir(dir)
            && entries.next().is_some()
        {
            return Err(SnapshotError::TargetNotEmpty(dir.display().to_string()));
        }
        std::fs::create_dir_all(dir).map_err(|source| SnapshotError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        create_database(&dir.join(DATABASE_FILE), DEFAULT_CACHE_BYTES, |db| {
            let tx = db.begin_write().map_err(backend)?;
            {
                let mut current = tx.open_table(CURRENT).map_err(backend)?;
                for kv in &snapshot.items {
                    current
                        .insert(kv.key.as_str(), codec::encode_current(kv).as_slice())
                        .map_err(backend)?;
                }
                let mut meta = tx.open_table(META).map_err(backend)?;
                let rev = snapshot.revision.max(0) as u64;
                meta.insert(META_REVISION, rev).map_err(backend)?;
                meta.insert(META_COMPACTED, rev).map_err(backend)?;
            }
            tx.commit().map_err(backend)
        })?;
        Ok(())
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The compacted revision: history at and before it is gone (0 if never compacted).
    pub fn compacted_revision(&self) -> Revision {
        self.compacted.load(Ordering::Acquire)
    }

    async fn submit(&self, op: Op) -> Result<Option<KeyValue>> {
        let stopped = || Error::Backend("store writer stopped".into());
        let (reply, rx) = oneshot::channel();
        self.writer
            .as_ref()
            .ok_or_else(stopped)?
            .send(Request { op, reply })
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    async fn read<T: Send + 'static>(&self, f: impl FnOnce(&Database) -> Result<T> + Send + 'static) -> Result<T> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db)).await.map_err(backend)?
    }
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        // Closing the channel lets the writer finish what is queued and exit; joining
        // it means a later `open` of the same directory does not race with it.
        self.writer.take();
        if let Some(t) = self.writer_thread.take() {
            let _ = t.join();
        }
    }
}

fn written(kv: Option<KeyValue>) -> Result<KeyValue> {
    kv.ok_or_else(|| Error::Backend("store writer returned no key for a write".into()))
}

#[async_trait::async_trait]
impl Store for EmbeddedStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let key = key.to_string();
        self.read(move |db| read::get(db, &key)).await
    }

    async fn list(&self, prefix: &str, opts: ListOptions) -> Result<ListResult> {
        let prefix = prefix.to_string();
        self.read(move |db| read::list(db, &prefix, &opts)).await
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue> {
        let key = key.to_string();
        written(self.submit(Op::Create { key, value }).await?)
    }

    async fn update(&self, key: &str, expected: Revision, value: Vec<u8>) -> Result<KeyValue> {
        let key = key.to_string();
        written(self.submit(Op::Update { key, expected, value }).await?)
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue> {
        let key = key.to_string();
        written(self.submit(Op::Delete { key, expected }).await?)
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        // Subscribe before fixing the start revision: anything committed after the
        // revision read below is then either replayed from the log or received live.
        let live = self.events.subscribe();
        let after = if after <= 0 {
            self.revision.load(Ordering::Acquire)
        } else {
            after
        };
        let compacted = self.compacted.load(Ordering::Acquire);
        if after < compacted {
            return Err(Error::Compacted {
                requested: after,
                compacted,
            });
        }
        let (tx, rx) = mpsc::channel::<Result<Event>>(watch::STREAM_BUFFER);
        tokio::spawn(watch::run(
            Arc::downgrade(&self.db),
            self.revision.clone(),
            live,
            prefix.to_string(),
            after,
            tx,
        ));
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }

    async fn current_revision(&self) -> Result<Revision> {
        Ok(self.revision.load(Ordering::Acquire))
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        self.submit(Op::Compact { revision }).await.map(|_| ())
    }
}
