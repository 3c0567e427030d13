//! The single writer: group commit of every pending write into one redb transaction.
//!
//! Requests arrive on a channel. The writer thread takes everything pending (up to
//! [`MAX_BATCH`]), applies the requests in arrival order inside one write transaction
//! (each sees the effects of the ones before it), commits once with immediate
//! durability (fsync), then publishes the committed events and answers every request.
//! A request whose precondition fails (exists, not found, revision conflict) is
//! answered with that error and changes nothing; a storage failure aborts the whole
//! transaction and fails every request of the batch, so nothing half-applied is ever
//! committed.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc as std_mpsc;

use redb::{Database, ReadableTable, Table};
use tokio::sync::{broadcast, oneshot};

use super::codec::{decode_current, encode_current, encode_event};
use super::{CURRENT, LOG, META, backend, revisions_in};
use crate::{Error, Event, EventKind, KeyValue, Result, Revision};

/// Most requests committed in one transaction.
pub(super) const MAX_BATCH: usize = 1024;

/// One write request.
pub(super) enum Op {
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

/// Where the writer answers one request: the written key (`None` for compaction).
pub(super) type Reply = oneshot::Sender<Result<Option<KeyValue>>>;

/// A write request and where to answer it.
pub(super) struct Request {
    pub(super) op: Op,
    pub(super) reply: Reply,
}

/// What the writer publishes after each commit.
pub(super) struct Published {
    /// Committed events, in revision order, for watchers.
    pub(super) events: broadcast::Sender<Arc<Event>>,
    /// The latest committed revision.
    pub(super) revision: Arc<AtomicI64>,
    /// The latest committed compacted revision.
    pub(super) compacted: Arc<AtomicI64>,
}

/// Free space always left on the store's filesystem: a batch that would leave less
/// is refused with [`Error::NoSpace`] before redb writes anything.
pub(super) const RESERVED_SPACE: u64 = 4 << 20;
/// Pages a single write may copy (B-tree path of two tables plus the meta table).
const PER_OP_SPACE: u64 = 32 << 10;

/// Bytes of free space the batch `ops` needs, reserve included.
fn space_needed(ops: &[Op]) -> u64 {
    let payload: u64 = ops
        .iter()
        .map(|op| match op {
            Op::Create { key, value } | Op::Update { key, value, .. } => (key.len() + value.len()) as u64,
            Op::Delete { key, .. } => key.len() as u64,
            Op::Compact { .. } => 0,
        })
        .sum();
    RESERVED_SPACE + 3 * payload + PER_OP_SPACE * ops.len() as u64
}

/// Checks that the filesystem holding `path` has room for the batch.
///
/// redb treats a failed write as fatal for the open database (every later read
/// fails too, until it is reopened), so running out of space must be caught before
/// the transaction, not by its error: with the check, writes fail with
/// [`Error::NoSpace`] while reads keep working, and writes resume once space is freed.
fn check_space(path: &Path, ops: &[Op]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let Ok(st) = rustix::fs::statvfs(dir) else {
        // Unknown: let the write try.
        return Ok(());
    };
    let free = st.f_bavail.saturating_mul(st.f_frsize);
    let needed = space_needed(ops);
    if free < needed {
        return Err(Error::NoSpace(format!(
            "the filesystem holding {} has {} KiB free and this write needs {} KiB (including a {} MiB reserve); \
             free disk space and retry: writes resume by themselves, reads keep working",
            path.display(),
            free >> 10,
            needed >> 10,
            RESERVED_SPACE >> 20
        )));
    }
    Ok(())
}

/// Runs until every sender of `rx` is dropped.
pub(super) fn run(db: &Database, path: &Path, rx: std_mpsc::Receiver<Request>, out: &Published) {
    while let Ok(first) = rx.recv() {
        let mut ops = vec![first.op];
        let mut replies = vec![first.reply];
        while ops.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(req) => {
                    ops.push(req.op);
                    replies.push(req.reply);
                }
                Err(_) => break,
            }
        }
        let outcome = check_space(path, &ops).and_then(|()| commit_batch(db, ops));
        match outcome {
            Ok(committed) => {
                // Revision first: a watcher that subscribed to the broadcast and then
                // read the revision either sees this commit's revision or receives its
                // events.
                out.compacted.store(committed.compacted, Ordering::Release);
                out.revision.store(committed.revision, Ordering::Release);
                for ev in committed.events {
                    // No receivers is fine.
                    let _ = out.events.send(Arc::new(ev));
                }
                for (reply, result) in replies.into_iter().zip(committed.results) {
                    // The caller may have stopped waiting.
                    let _ = reply.send(result);
                }
            }
            Err(Error::NoSpace(msg)) => {
                tracing::warn!(error = %msg, "store write refused: disk full");
                for reply in replies {
                    let _ = reply.send(Err(Error::NoSpace(msg.clone())));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "store commit failed");
                let msg = e.to_string();
                for reply in replies {
                    let _ = reply.send(Err(classify(&msg)));
                }
            }
        }
    }
}

/// The error for a failed commit: running out of space that the pre-check did not
/// foresee (another process filled the disk meanwhile) is [`Error::NoSpace`]; redb
/// then refuses the open database until it is reopened, which the message says.
fn classify(msg: &str) -> Error {
    if msg.contains("No space left on device") || msg.contains("os error 28") {
        Error::NoSpace(format!(
            "{msg}; the disk filled up during a commit, which the store cannot recover from while running: \
             free disk space and restart skiff server (acknowledged writes are safe)"
        ))
    } else if msg.contains("Previous I/O error") {
        Error::Backend(format!(
            "{msg}; an earlier write failed, so the store stopped: restart skiff server (acknowledged writes are safe)"
        ))
    } else {
        Error::Backend(msg.to_string())
    }
}

/// The outcome of one committed transaction.
struct Committed {
    results: Vec<Result<Option<KeyValue>>>,
    events: Vec<Event>,
    revision: Revision,
    compacted: Revision,
}

fn commit_batch(db: &Database, ops: Vec<Op>) -> Result<Committed> {
    let tx = db.begin_write().map_err(backend)?;
    let mut results = Vec::with_capacity(ops.len());
    let mut events = Vec::with_capacity(ops.len());
    let (revision, compacted) = {
        let mut meta = tx.open_table(META).map_err(backend)?;
        let (start, start_compacted) = revisions_in(&meta)?;
        let mut state = Revisions {
            current: start,
            compacted: start_compacted,
        };
        let mut current = tx.open_table(CURRENT).map_err(backend)?;
        let mut log = tx.open_table(LOG).map_err(backend)?;
        for op in ops {
            match apply(&mut current, &mut log, &mut state, op) {
                Ok((kv, ev)) => {
                    events.extend(ev);
                    results.push(Ok(kv));
                }
                // A storage failure may leave the op half-applied: abort the batch.
                Err(e @ Error::Backend(_)) => return Err(e),
                Err(e) => results.push(Err(e)),
            }
        }
        if state.current != start {
            meta.insert(super::META_REVISION, state.current as u64)
                .map_err(backend)?;
        }
        if state.compacted != start_compacted {
            meta.insert(super::META_COMPACTED, state.compacted as u64)
                .map_err(backend)?;
        }
        (state.current, state.compacted)
    };
    tx.commit().map_err(backend)?;
    Ok(Committed {
        results,
        events,
        revision,
        compacted,
    })
}

struct Revisions {
    current: Revision,
    compacted: Revision,
}

type Applied = (Option<KeyValue>, Option<Event>);

fn get_current(current: &Table<&str, &[u8]>, key: &str) -> Result<Option<KeyValue>> {
    match current.get(key).map_err(backend)? {
        Some(v) => Ok(Some(decode_current(key, v.value())?)),
        None => Ok(None),
    }
}

/// Applies one op inside the open write transaction. Preconditions are checked
/// before anything is written, so every non-[`Error::Backend`] error leaves the
/// transaction untouched.
fn apply(
    current: &mut Table<&str, &[u8]>,
    log: &mut Table<u64, &[u8]>,
    rev: &mut Revisions,
    op: Op,
) -> Result<Applied> {
    let (kind, kv, prev) = match op {
        Op::Create { key, value } => {
            if current.get(key.as_str()).map_err(backend)?.is_some() {
                return Err(Error::AlreadyExists(key));
            }
            let r = rev.current + 1;
            let kv = KeyValue {
                key,
                value,
                create_revision: r,
                mod_revision: r,
            };
            (EventKind::Created, kv, None)
        }
        Op::Update { key, expected, value } => {
            let Some(prev) = get_current(current, &key)? else {
                return Err(Error::NotFound(key));
            };
            if prev.mod_revision != expected {
                return Err(Error::Conflict {
                    key,
                    expected,
                    current: Box::new(prev),
                });
            }
            let kv = KeyValue {
                key,
                value,
                create_revision: prev.create_revision,
                mod_revision: rev.current + 1,
            };
            (EventKind::Updated, kv, Some(prev))
        }
        Op::Delete { key, expected } => {
            let Some(prev) = get_current(current, &key)? else {
                return Err(Error::NotFound(key));
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
            let kv = KeyValue {
                mod_revision: rev.current + 1,
                ..prev.clone()
            };
            (EventKind::Deleted, kv, Some(prev))
        }
        Op::Compact { revision } => {
            let target = revision.min(rev.current);
            if target > rev.compacted {
                log.retain_in(..=(target as u64), |_, _| false).map_err(backend)?;
                rev.compacted = target;
            }
            return Ok((None, None));
        }
    };
    rev.current += 1;
    if kind == EventKind::Deleted {
        current.remove(kv.key.as_str()).map_err(backend)?;
    } else {
        current
            .insert(kv.key.as_str(), encode_current(&kv).as_slice())
            .map_err(backend)?;
    }
    let ev = Event { kind, kv, prev };
    log.insert(rev.current as u64, encode_event(&ev).as_slice())
        .map_err(backend)?;
    Ok((Some(ev.kv.clone()), Some(ev)))
}
