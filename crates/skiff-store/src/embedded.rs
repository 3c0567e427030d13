//! The embedded engine: the default store, a single redb database file.
//!
//! Layout (three tables):
//! - `current`: key -> live value with its create and mod revisions (fast gets/lists);
//! - `log`: revision -> the full event of that write (key, value, and the previous
//!   value), used to replay watches and to serve lists at older revisions;
//! - `meta`: the current and the compacted revision.
//!
//! Durability: every write is committed with redb's default (immediate) durability
//! before it is acknowledged. Writes go through one writer thread that drains all
//! pending requests into a single transaction and commits once (group commit), so
//! concurrent writers share the fsync.
//!
//! Watches subscribe to a broadcast of committed events and replay history from the
//! log first; a watcher that falls behind the broadcast re-reads the log, so no event
//! is lost or duplicated.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc as std_mpsc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::{Error, Event, EventKind, KeyValue, ListOptions, ListResult, Result, Revision, Store, WatchStream};

const CURRENT: TableDefinition<&str, &[u8]> = TableDefinition::new("current");
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const META_REVISION: &str = "revision";
const META_COMPACTED: &str = "compacted";

/// Capacity of the live-event broadcast; a slower watcher catches up from the log.
const BROADCAST_CAPACITY: usize = 4096;
/// Events read from the log per catch-up batch.
const REPLAY_BATCH: usize = 1024;

fn backend(e: impl std::fmt::Display) -> Error {
    Error::Backend(e.to_string())
}

// ---- encoding ----------------------------------------------------------------

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.0.len() < n {
            return Err(Error::Backend("corrupt record: truncated".into()));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    fn bytes(&mut self) -> Result<&'a [u8]> {
        let n = u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")) as usize;
        self.take(n)
    }
}

/// `current` value: create_rev, mod_rev, value.
fn encode_current(kv: &KeyValue) -> Vec<u8> {
    let mut out = Vec::with_capacity(20 + kv.value.len());
    put_kv(&mut out, kv);
    out
}

fn decode_current(key: &str, raw: &[u8]) -> Result<KeyValue> {
    read_kv(&mut Reader(raw), key)
}

fn put_kv(out: &mut Vec<u8>, kv: &KeyValue) {
    out.extend_from_slice(&kv.create_revision.to_le_bytes());
    out.extend_from_slice(&kv.mod_revision.to_le_bytes());
    put_bytes(out, &kv.value);
}

fn read_kv(r: &mut Reader<'_>, key: &str) -> Result<KeyValue> {
    let create_revision = r.i64()?;
    let mod_revision = r.i64()?;
    let value = r.bytes()?.to_vec();
    Ok(KeyValue {
        key: key.to_string(),
        value,
        create_revision,
        mod_revision,
    })
}

/// `log` value: kind, key, kv, optional prev kv.
fn encode_event(ev: &Event) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + ev.kv.value.len() * 2);
    out.push(match ev.kind {
        EventKind::Created => 0,
        EventKind::Updated => 1,
        EventKind::Deleted => 2,
    });
    put_bytes(&mut out, ev.kv.key.as_bytes());
    put_kv(&mut out, &ev.kv);
    match &ev.prev {
        Some(p) => {
            out.push(1);
            put_kv(&mut out, p);
        }
        None => out.push(0),
    }
    out
}

fn decode_event(raw: &[u8]) -> Result<Event> {
    let mut r = Reader(raw);
    let kind = match r.u8()? {
        0 => EventKind::Created,
        1 => EventKind::Updated,
        2 => EventKind::Deleted,
        k => return Err(Error::Backend(format!("corrupt record: event kind {k}"))),
    };
    let key = String::from_utf8(r.bytes()?.to_vec()).map_err(backend)?;
    let kv = read_kv(&mut r, &key)?;
    let prev = if r.u8()? == 1 {
        Some(read_kv(&mut r, &key)?)
    } else {
        None
    };
    Ok(Event { kind, kv, prev })
}

// ---- writer --------------------------------------------------------------------

enum Op {
    Create {
        key: String,
        value: Vec<u8>,
    },
    Update {
        key: String,
        expected: Revision,
        value: Vec<u8>,
    },
    Delete {
        key: String,
        expected: Option<Revision>,
    },
    Compact {
        revision: Revision,
    },
}

/// Where the writer answers one request.
type Reply = oneshot::Sender<Result<Option<KeyValue>>>;

struct Request {
    op: Op,
    reply: Reply,
}

struct Shared {
    db: Database,
    events: broadcast::Sender<Arc<Event>>,
}

/// The embedded store. Cheap to share behind an `Arc`; all methods take `&self`.
pub struct EmbeddedStore {
    shared: Arc<Shared>,
    writer: std_mpsc::Sender<Request>,
}

/// `(current, compacted)` revisions from an open `meta` table.
fn revisions_in(meta: &impl ReadableTable<&'static str, u64>) -> Result<(Revision, Revision)> {
    let get =
        |k: &str| -> Result<Revision> { Ok(meta.get(k).map_err(backend)?.map(|v| v.value()).unwrap_or(0) as i64) };
    Ok((get(META_REVISION)?, get(META_COMPACTED)?))
}

fn read_meta(db: &Database) -> Result<(Revision, Revision)> {
    let tx = db.begin_read().map_err(backend)?;
    let meta = match tx.open_table(META) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok((0, 0)),
        Err(e) => return Err(backend(e)),
    };
    revisions_in(&meta)
}

impl EmbeddedStore {
    /// Opens (or creates) the store in directory `dir` (file `dir/state.redb`).
    ///
    /// Errors: [`Error::Backend`] if the directory cannot be created or the database
    /// cannot be opened (e.g. another process holds it).
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::Backend(format!("{}: {e}", dir.display())))?;
        let db = Database::create(dir.join("state.redb")).map_err(backend)?;
        {
            let tx = db.begin_write().map_err(backend)?;
            tx.open_table(CURRENT).map_err(backend)?;
            tx.open_table(LOG).map_err(backend)?;
            tx.open_table(META).map_err(backend)?;
            tx.commit().map_err(backend)?;
        }
        let (events, _) = broadcast::channel(BROADCAST_CAPACITY);
        let shared = Arc::new(Shared { db, events });
        let (tx, rx) = std_mpsc::channel::<Request>();
        let w = shared.clone();
        std::thread::Builder::new()
            .name("skiff-store-writer".into())
            .spawn(move || writer_loop(&w, rx))
            .map_err(backend)?;
        Ok(Self { shared, writer: tx })
    }

    async fn submit(&self, op: Op) -> Result<Option<KeyValue>> {
        let (reply, rx) = oneshot::channel();
        self.writer
            .send(Request { op, reply })
            .map_err(|_| Error::Backend("store writer stopped".into()))?;
        rx.await.map_err(|_| Error::Backend("store writer stopped".into()))?
    }

    async fn read<T: Send + 'static>(&self, f: impl FnOnce(&Database) -> Result<T> + Send + 'static) -> Result<T> {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || f(&shared.db))
            .await
            .map_err(backend)?
    }
}

/// Applies one op inside the open write transaction; returns the result and the
/// event to publish after commit.
fn apply(
    current: &mut redb::Table<&str, &[u8]>,
    log: &mut redb::Table<u64, &[u8]>,
    rev: &mut Revision,
    compacted: &mut Revision,
    op: Op,
) -> Result<(Option<KeyValue>, Option<Event>)> {
    match op {
        Op::Create { key, value } => {
            if current.get(key.as_str()).map_err(backend)?.is_some() {
                return Err(Error::AlreadyExists(key));
            }
            *rev += 1;
            let kv = KeyValue {
                key: key.clone(),
                value,
                create_revision: *rev,
                mod_revision: *rev,
            };
            current
                .insert(key.as_str(), encode_current(&kv).as_slice())
                .map_err(backend)?;
            let ev = Event {
                kind: EventKind::Created,
                kv: kv.clone(),
                prev: None,
            };
            log.insert(*rev as u64, encode_event(&ev).as_slice()).map_err(backend)?;
            Ok((Some(kv), Some(ev)))
        }
        Op::Update { key, expected, value } => {
            let prev = match current.get(key.as_str()).map_err(backend)? {
                Some(v) => decode_current(&key, v.value())?,
                None => return Err(Error::NotFound(key)),
            };
            if prev.mod_revision != expected {
                return Err(Error::Conflict {
                    key,
                    expected,
                    current: Box::new(prev),
                });
            }
            *rev += 1;
            let kv = KeyValue {
                key: key.clone(),
                value,
                create_revision: prev.create_revision,
                mod_revision: *rev,
            };
            current
                .insert(key.as_str(), encode_current(&kv).as_slice())
                .map_err(backend)?;
            let ev = Event {
                kind: EventKind::Updated,
                kv: kv.clone(),
                prev: Some(prev),
            };
            log.insert(*rev as u64, encode_event(&ev).as_slice()).map_err(backend)?;
            Ok((Some(kv), Some(ev)))
        }
        Op::Delete { key, expected } => {
            let prev = match current.get(key.as_str()).map_err(backend)? {
                Some(v) => decode_current(&key, v.value())?,
                None => return Err(Error::NotFound(key)),
            };
            if let Some(e) = expected
                && prev.mod_revision != e
            {
                return Err(Error::Conflict {
                    key,
                    expected: e,
                    current: Box::new(prev),
                });
            }
            *rev += 1;
            current.remove(key.as_str()).map_err(backend)?;
            let kv = KeyValue {
                mod_revision: *rev,
                ..prev.clone()
            };
            let ev = Event {
                kind: EventKind::Deleted,
                kv: kv.clone(),
                prev: Some(prev),
            };
            log.insert(*rev as u64, encode_event(&ev).as_slice()).map_err(backend)?;
            Ok((Some(kv), Some(ev)))
        }
        Op::Compact { revision } => {
            let target = revision.min(*rev);
            if target > *compacted {
                log.retain_in(..=(target as u64), |_, _| false).map_err(backend)?;
                *compacted = target;
            }
            Ok((None, None))
        }
    }
}

fn writer_loop(shared: &Shared, rx: std_mpsc::Receiver<Request>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
            if batch.len() >= 512 {
                break;
            }
        }
        let mut results: Vec<(Reply, Result<Option<KeyValue>>)> = Vec::new();
        let mut events = Vec::new();
        let outcome = (|| -> Result<()> {
            let (mut rev, mut compacted) = read_meta(&shared.db)?;
            let tx = shared.db.begin_write().map_err(backend)?;
            {
                let mut current = tx.open_table(CURRENT).map_err(backend)?;
                let mut log = tx.open_table(LOG).map_err(backend)?;
                for req in batch.drain(..) {
                    match apply(&mut current, &mut log, &mut rev, &mut compacted, req.op) {
                        Ok((kv, ev)) => {
                            events.extend(ev);
                            results.push((req.reply, Ok(kv)));
                        }
                        Err(e) => results.push((req.reply, Err(e))),
                    }
                }
                let mut meta = tx.open_table(META).map_err(backend)?;
                meta.insert(META_REVISION, rev as u64).map_err(backend)?;
                meta.insert(META_COMPACTED, compacted as u64).map_err(backend)?;
            }
            tx.commit().map_err(backend)?;
            Ok(())
        })();
        match outcome {
            Ok(()) => {
                for ev in events {
                    let _ = shared.events.send(Arc::new(ev));
                }
                for (reply, r) in results {
                    let _ = reply.send(r);
                }
            }
            Err(e) => {
                // Nothing was committed: every write in the batch fails.
                tracing::error!(error = %e, "store commit failed");
                for (reply, _) in results {
                    let _ = reply.send(Err(e.clone_backend()));
                }
                for req in batch {
                    let _ = req.reply.send(Err(e.clone_backend()));
                }
            }
        }
    }
}

impl Error {
    fn clone_backend(&self) -> Error {
        Error::Backend(self.to_string())
    }
}

// ---- reads ---------------------------------------------------------------------------

fn prefix_end(prefix: &str) -> Option<String> {
    // The smallest string greater than every string with this prefix.
    let mut bytes = prefix.as_bytes().to_vec();
    while let Some(last) = bytes.pop() {
        if last < 0xff {
            bytes.push(last + 1);
            return String::from_utf8(bytes).ok();
        }
    }
    None
}

fn list_blocking(db: &Database, prefix: &str, opts: &ListOptions) -> Result<ListResult> {
    let tx = db.begin_read().map_err(backend)?;
    let (rev, compacted) = revisions_in(&tx.open_table(META).map_err(backend)?)?;
    let at = opts.revision.filter(|r| *r > 0).unwrap_or(rev);
    if at > rev {
        return Err(Error::FutureRevision {
            requested: at,
            current: rev,
        });
    }
    if at < compacted {
        return Err(Error::Compacted {
            requested: at,
            compacted,
        });
    }
    let current = tx.open_table(CURRENT).map_err(backend)?;
    let start = match &opts.start_after {
        Some(s) if s.as_str() >= prefix => s.clone(),
        _ => prefix.to_string(),
    };
    let end = prefix_end(prefix);
    let mut items: BTreeMap<String, KeyValue> = BTreeMap::new();
    let in_range = |k: &str| k.starts_with(prefix) && opts.start_after.as_deref().is_none_or(|s| k > s);
    {
        let range = match &end {
            Some(e) => current.range::<&str>(start.as_str()..e.as_str()),
            None => current.range::<&str>(start.as_str()..),
        }
        .map_err(backend)?;
        for entry in range {
            let (k, v) = entry.map_err(backend)?;
            let key = k.value();
            if !in_range(key) {
                continue;
            }
            items.insert(key.to_string(), decode_current(key, v.value())?);
        }
    }
    if at < rev {
        // Undo the writes after `at`, newest first.
        let log = tx.open_table(LOG).map_err(backend)?;
        let entries: Vec<Event> = log
            .range((at as u64 + 1)..=(rev as u64))
            .map_err(backend)?
            .map(|e| e.map_err(backend).and_then(|(_, v)| decode_event(v.value())))
            .collect::<Result<_>>()?;
        for ev in entries.into_iter().rev() {
            if !in_range(&ev.kv.key) {
                continue;
            }
            match ev.prev {
                Some(p) => {
                    items.insert(p.key.clone(), p);
                }
                None => {
                    items.remove(&ev.kv.key);
                }
            }
        }
    }
    let total = items.len();
    let limit = opts.limit.unwrap_or(usize::MAX);
    let items: Vec<KeyValue> = items.into_values().take(limit).collect();
    Ok(ListResult {
        remaining: total - items.len(),
        items,
        revision: at,
    })
}

/// Reads up to `REPLAY_BATCH` log events after `after`, for keys under `prefix`.
/// Returns the events and the last revision examined.
fn replay_blocking(db: &Database, prefix: &str, after: Revision) -> Result<(Vec<Event>, Revision)> {
    let tx = db.begin_read().map_err(backend)?;
    let (_, compacted) = revisions_in(&tx.open_table(META).map_err(backend)?)?;
    if after < compacted {
        return Err(Error::Compacted {
            requested: after,
            compacted,
        });
    }
    let log = tx.open_table(LOG).map_err(backend)?;
    let mut out = Vec::new();
    let mut last = after;
    for (n, entry) in log.range((after as u64 + 1)..).map_err(backend)?.enumerate() {
        if n >= REPLAY_BATCH {
            break;
        }
        let (k, v) = entry.map_err(backend)?;
        last = k.value() as i64;
        let ev = decode_event(v.value())?;
        if ev.kv.key.starts_with(prefix) {
            out.push(ev);
        }
    }
    Ok((out, last))
}

#[async_trait::async_trait]
impl Store for EmbeddedStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let key = key.to_string();
        self.read(move |db| {
            let tx = db.begin_read().map_err(backend)?;
            let t = tx.open_table(CURRENT).map_err(backend)?;
            match t.get(key.as_str()).map_err(backend)? {
                Some(v) => Ok(Some(decode_current(&key, v.value())?)),
                None => Ok(None),
            }
        })
        .await
    }

    async fn list(&self, prefix: &str, opts: ListOptions) -> Result<ListResult> {
        let prefix = prefix.to_string();
        self.read(move |db| list_blocking(db, &prefix, &opts)).await
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue> {
        self.submit(Op::Create {
            key: key.to_string(),
            value,
        })
        .await
        .map(|kv| kv.expect("create returns the key"))
    }

    async fn update(&self, key: &str, expected: Revision, value: Vec<u8>) -> Result<KeyValue> {
        self.submit(Op::Update {
            key: key.to_string(),
            expected,
            value,
        })
        .await
        .map(|kv| kv.expect("update returns the key"))
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue> {
        self.submit(Op::Delete {
            key: key.to_string(),
            expected,
        })
        .await
        .map(|kv| kv.expect("delete returns the key"))
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        // Subscribe before reading the revision so nothing committed in between is missed.
        let mut live = self.shared.events.subscribe();
        let shared = self.shared.clone();
        let (rev, compacted) = self.read(read_meta).await?;
        let after = if after <= 0 { rev } else { after };
        if after < compacted {
            return Err(Error::Compacted {
                requested: after,
                compacted,
            });
        }
        let prefix = prefix.to_string();
        let (tx, rx) = mpsc::channel::<Result<Event>>(1024);
        tokio::spawn(async move {
            let mut last = after;
            'outer: loop {
                // Catch up from the log until it has nothing newer.
                loop {
                    let p = prefix.clone();
                    let s = shared.clone();
                    let from = last;
                    let r = tokio::task::spawn_blocking(move || replay_blocking(&s.db, &p, from)).await;
                    let (events, upto) = match r {
                        Ok(Ok(x)) => x,
                        Ok(Err(e)) => {
                            let _ = tx.send(Err(e)).await;
                            return;
                        }
                        Err(e) => {
                            let _ = tx.send(Err(backend(e))).await;
                            return;
                        }
                    };
                    for ev in events {
                        if tx.send(Ok(ev)).await.is_err() {
                            return;
                        }
                    }
                    if upto == last {
                        break;
                    }
                    last = upto;
                }
                // Then follow the broadcast; any gap sends us back to the log.
                loop {
                    tokio::select! {
                        _ = tx.closed() => return,
                        r = live.recv() => match r {
                            Ok(ev) => {
                                let r = ev.revision();
                                if r <= last {
                                    continue;
                                }
                                if r != last + 1 {
                                    continue 'outer;
                                }
                                last = r;
                                if ev.kv.key.starts_with(&prefix) && tx.send(Ok((*ev).clone())).await.is_err() {
                                    return;
                                }
                            }
                            Err(broadcast::error::RecvError::Lagged(_)) => continue 'outer,
                            Err(broadcast::error::RecvError::Closed) => return,
                        }
                    }
                }
            }
        });
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }

    async fn current_revision(&self) -> Result<Revision> {
        Ok(self.read(read_meta).await?.0)
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        self.submit(Op::Compact { revision }).await.map(|_| ())
    }
}
