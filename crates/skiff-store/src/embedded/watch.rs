//! Watches: replay from the log, then follow the broadcast of committed events.
//!
//! The receiver of the broadcast is created before the watch's start revision is
//! fixed, so every event committed after that point is either in the log when it is
//! replayed or arrives on the broadcast; events the replay already delivered are
//! skipped by revision. A gap on the broadcast (the watcher lagged past its capacity,
//! or an event arrives out of sequence) sends the watcher back to the log, which has
//! every revision until compaction. Only if the log has been compacted past the
//! watcher's position does the stream end with [`crate::Error::Compacted`].

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Weak};

use redb::Database;
use tokio::sync::{broadcast, mpsc};

use super::{backend, read};
use crate::Error::Backend;
use crate::{Event, Result, Revision};

/// Events buffered between the watch task and the consumer of the stream.
pub(super) const STREAM_BUFFER: usize = 256;

/// Feeds `tx` with every event for `prefix` after revision `after`, until the
/// consumer drops the stream, the store is dropped, or an error ends the stream.
///
/// The task holds the database only while it reads the log, so a dropped store
/// closes its file even while streams are still open. After the store is dropped the
/// watcher delivers what the broadcast still holds; if that leaves a gap (it had
/// fallen behind and would need the log), the stream ends with an
/// [`crate::Error::Backend`] item instead of silently skipping events.
pub(super) async fn run(
    db: Weak<Database>,
    revision: Arc<AtomicI64>,
    mut live: broadcast::Receiver<Arc<Event>>,
    prefix: String,
    after: Revision,
    tx: mpsc::Sender<Result<Event>>,
) {
    let closed_behind = || Backend("the store was closed before this watch caught up".into());
    let mut last = after;
    // Whether the broadcast skipped events that only the log has.
    let mut behind = false;
    loop {
        // Catch up from the log until it has nothing newer.
        loop {
            let (db, p) = (db.clone(), prefix.clone());
            let from = last;
            let read = tokio::task::spawn_blocking(move || db.upgrade().map(|db| read::replay(&db, &p, from))).await;
            let (events, upto) = match read.map_err(backend) {
                Ok(Some(Ok(x))) => x,
                // The store is gone (and so is its writer: no more commits).
                Ok(None) if !behind => break,
                Ok(None) => {
                    let _ = tx.send(Err(closed_behind())).await;
                    return;
                }
                Ok(Some(Err(e))) | Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            behind = false;
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
        // Then follow the broadcast until a gap sends us back to the log.
        loop {
            let received = tokio::select! {
                _ = tx.closed() => return,
                r = live.recv() => r,
            };
            match received {
                Ok(ev) => {
                    let r = ev.revision();
                    if r <= last {
                        continue;
                    }
                    if r != last + 1 {
                        behind = true;
                        break;
                    }
                    last = r;
                    if ev.kv.key.starts_with(&prefix) && tx.send(Ok(Event::clone(&ev))).await.is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    behind = true;
                    break;
                }
                // The store was dropped and its writer has stopped, so `revision` is
                // final: end cleanly if everything up to it was delivered.
                Err(broadcast::error::RecvError::Closed) => {
                    if last < revision.load(Ordering::Acquire) {
                        let _ = tx.send(Err(closed_behind())).await;
                    }
                    return;
                }
            }
        }
    }
}
