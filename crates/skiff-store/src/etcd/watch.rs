//! Watches: etcd watches on the prefix's range with `prev_kv`, turned into the
//! store's [`Event`]s.
//!
//! etcd delivers a watch's events in revision order without gaps from its start
//! revision. When the stream breaks (the member went away, or lost its leader and
//! cancelled the watch because of `require-leader`), the watch is re-created on the
//! cluster from the revision after the last delivered event, so consumers see
//! neither a gap nor a duplicate (the resumption clientv3 does for upstream's
//! apiserver). If no member takes the watch within the request timeout the stream
//! ends with [`Error::Unavailable`]; if the history was compacted past the watcher it
//! ends with [`Error::Compacted`], and the apiserver answers `410 Gone`.

use std::time::Duration;

use etcd_client::{EventType, GetOptions, WatchOptions};
use tokio::sync::mpsc;

use super::error::{Failure, Retry};
use super::list::{compacted_revision, prefix_end, range_start};
use super::{EtcdStore, key_value};
use crate::{Error, Event, EventKind, KeyValue, Result, Revision, WatchStream};

/// Events buffered between the watch task and the consumer of the stream.
const STREAM_BUFFER: usize = 256;

/// Pause between attempts to re-create a broken watch.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

pub(super) async fn watch(s: &EtcdStore, prefix: &str, after: Revision) -> Result<WatchStream> {
    let after = if after <= 0 {
        s.header_revision(s.timeout).await?
    } else {
        check_retained(s, prefix, after).await?;
        after
    };
    let stream = open(s, prefix, after).await?;
    let (tx, rx) = mpsc::channel(STREAM_BUFFER);
    tokio::spawn(run(s.clone(), prefix.to_string(), after, stream, tx));
    Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
}

/// Fails with [`Error::Compacted`] if history after `after` is no longer complete,
/// i.e. `after` is older than etcd's compacted revision (a range at `after` is refused
/// exactly then). A revision in the future is fine: the watch waits for it.
async fn check_retained(s: &EtcdStore, prefix: &str, after: Revision) -> Result<()> {
    let opts = GetOptions::new()
        .with_range(prefix_end(prefix.as_bytes()))
        .with_revision(after)
        .with_count_only();
    let range = || {
        let (mut kv, opts) = (s.kv(), opts.clone());
        async move { kv.get(range_start(prefix), Some(opts)).await }
    };
    match s.call(Retry::Read, range).await {
        Ok(_) | Err(Failure::FutureRevision) => Ok(()),
        Err(Failure::Compacted) => Err(Error::Compacted {
            requested: after,
            compacted: compacted_revision(s).await?,
        }),
        Err(Failure::Other(e)) => Err(e),
    }
}

/// Creates an etcd watch for changes under `prefix` after revision `after` and waits
/// for etcd to confirm it.
///
/// The watch starts *at* `after` (its events at `after` are skipped by [`run`]):
/// etcd cancels a watch whose start revision is below the compacted revision, so
/// this makes "history after `after` is incomplete" (`after` < compacted) end the
/// watch with [`Error::Compacted`], like the embedded engine. Starting at `after + 1`
/// instead would let a watch with `after + 1` equal to the compacted revision run on
/// a history whose deletions at that revision are gone.
async fn open(s: &EtcdStore, prefix: &str, after: Revision) -> Result<etcd_client::WatchStream> {
    let opts = WatchOptions::new()
        .with_range(prefix_end(prefix.as_bytes()))
        .with_start_revision(after.max(1))
        .with_prev_key();
    let created = || async {
        let mut client = s.client.watch_client();
        let mut stream = client.watch(range_start(prefix), Some(opts.clone())).await?;
        match stream.message().await? {
            Some(resp) if resp.created() && !resp.canceled() => Ok(stream),
            Some(resp) => Err(etcd_client::Error::WatchError(format!(
                "etcd cancelled the watch: {}",
                resp.cancel_reason()
            ))),
            None => Err(etcd_client::Error::WatchError("etcd closed the watch".into())),
        }
    };
    Ok(s.call(Retry::Read, created).await?)
}

/// Converts one etcd event. A delete carries the key's last value with the delete's
/// revision, and the value before it in `prev`, as the embedded engine's events do.
fn event(ev: &etcd_client::Event) -> Result<Event> {
    let kv = ev
        .kv()
        .ok_or_else(|| Error::Backend("etcd sent a watch event without a key".into()))?;
    let current = key_value(kv)?;
    let prev = ev.prev_kv().map(key_value).transpose()?;
    Ok(match ev.event_type() {
        EventType::Put if current.create_revision == current.mod_revision => Event {
            kind: EventKind::Created,
            kv: current,
            prev: None,
        },
        EventType::Put => Event {
            kind: EventKind::Updated,
            kv: current,
            prev,
        },
        EventType::Delete => Event {
            kind: EventKind::Deleted,
            kv: match &prev {
                Some(p) => KeyValue {
                    mod_revision: current.mod_revision,
                    ..p.clone()
                },
                None => current,
            },
            prev,
        },
    })
}

/// Feeds `tx` from `stream`, re-creating the watch after the last delivered revision
/// when it breaks, until the consumer drops the stream or an error ends it.
async fn run(
    s: EtcdStore,
    prefix: String,
    mut last: Revision,
    mut stream: etcd_client::WatchStream,
    tx: mpsc::Sender<Result<Event>>,
) {
    // Events at or before the revision the current etcd watch was opened after.
    let mut skip_upto = last;
    loop {
        let message = tokio::select! {
            _ = tx.closed() => return,
            m = stream.message() => m,
        };
        let broken = match message {
            Ok(Some(resp)) if resp.compact_revision() > 0 => {
                let _ = tx
                    .send(Err(Error::Compacted {
                        requested: last,
                        compacted: resp.compact_revision(),
                    }))
                    .await;
                return;
            }
            Ok(Some(resp)) if resp.canceled() => resp.cancel_reason().to_string(),
            Ok(Some(resp)) => {
                for ev in resp.events() {
                    let ev = match event(ev) {
                        Ok(ev) => ev,
                        Err(e) => {
                            let _ = tx.send(Err(e)).await;
                            return;
                        }
                    };
                    if ev.revision() <= skip_upto {
                        continue;
                    }
                    last = ev.revision();
                    if tx.send(Ok(ev)).await.is_err() {
                        return;
                    }
                }
                continue;
            }
            Ok(None) => "stream closed".to_string(),
            Err(e) => e.to_string(),
        };
        tracing::debug!(%prefix, after = last, reason = %broken, "etcd watch broke, re-creating it");
        match reopen(&s, &prefix, last, &tx).await {
            Some(Ok(st)) => {
                stream = st;
                skip_upto = last;
            }
            Some(Err(e)) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
            None => return,
        }
    }
}

/// Re-creates the watch, retrying for up to the request timeout; `None` if the
/// consumer went away meanwhile.
async fn reopen(
    s: &EtcdStore,
    prefix: &str,
    last: Revision,
    tx: &mpsc::Sender<Result<Event>>,
) -> Option<Result<etcd_client::WatchStream>> {
    let deadline = tokio::time::Instant::now() + s.timeout;
    loop {
        if tx.is_closed() {
            return None;
        }
        match open(s, prefix, last).await {
            Ok(st) => return Some(Ok(st)),
            Err(e) if tokio::time::Instant::now() >= deadline => return Some(Err(e)),
            Err(_) => tokio::time::sleep(RETRY_PAUSE).await,
        }
    }
}
