//! WATCH: a stream of `{"type": ..., "object": ...}` JSON lines
//! (k8s.io/apimachinery/pkg/watch, `metav1.WatchEvent`), with selectors,
//! `resourceVersion` semantics, bookmarks, `sendInitialEvents` and `timeoutSeconds`.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Value, json};
use skiff_api::registry::ResourceInfo;
use skiff_store::{EventKind, ListOptions};
use tokio::sync::mpsc;

use crate::list::Selectors;
use crate::objects::{Objects, decode};
use crate::request::flag;
use crate::status::ApiError;

/// How often a bookmark is sent when the client allows them.
const BOOKMARK_INTERVAL: Duration = Duration::from_secs(30);
/// Number of recent events whose encoded line [`SharedLines`] keeps.
const SHARED_LINES: usize = 4096;

/// A converter of each watched object for output (a one-row `Table`); `None` sends
/// objects as they are.
pub type Render = Option<Box<dyn Fn(Value) -> Value + Send>>;

/// The encoded lines of recent events, shared by the watches of one apiserver: a
/// watch without selectors that sends objects as they are gets the line another
/// watch already encoded for the same event, so each event is decoded and
/// serialized once however many such watchers there are (as upstream's watch
/// cache serializes an event once per encoding). Bounded to the last
/// [`SHARED_LINES`] events; entries are keyed by revision and checked by key.
#[derive(Default)]
pub struct SharedLines {
    inner: Mutex<LinesInner>,
}

#[derive(Default)]
struct LinesInner {
    lines: HashMap<i64, (String, Bytes)>,
    order: VecDeque<i64>,
}

impl SharedLines {
    /// The line of the event at `rev` on `key`, encoded by `encode` if no watcher
    /// did yet (outside the lock, so watchers never wait on each other's encoding).
    fn get_or_encode(&self, rev: i64, key: &str, encode: impl FnOnce() -> Option<Bytes>) -> Option<Bytes> {
        if let Some((k, line)) = self.inner.lock().expect("shared watch lines").lines.get(&rev)
            && k == key
        {
            return Some(line.clone());
        }
        let line = encode()?;
        let mut inner = self.inner.lock().expect("shared watch lines");
        if inner.lines.insert(rev, (key.to_string(), line.clone())).is_none() {
            inner.order.push_back(rev);
            if inner.order.len() > SHARED_LINES
                && let Some(old) = inner.order.pop_front()
            {
                inner.lines.remove(&old);
            }
        }
        Some(line)
    }
}

/// One event line, `{"type":KIND,"object":OBJECT}` and a newline, serialized
/// straight from `object` (no intermediate copy of it).
fn line(kind: &str, object: &Value) -> Bytes {
    let mut out = Vec::with_capacity(64 + 4096);
    out.extend_from_slice(b"{\"type\":");
    serde_json::to_writer(&mut out, kind).expect("a string always serializes");
    out.extend_from_slice(b",\"object\":");
    serde_json::to_writer(&mut out, object).expect("JSON values always serialize");
    out.extend_from_slice(b"}\n");
    Bytes::from(out)
}

/// A deleted object carries the revision of its deletion as its resourceVersion.
fn deleted_at(obj: &mut Value, rev: i64) {
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        m.insert("resourceVersion".into(), json!(rev.to_string()));
    }
}

fn bookmark(res: &ResourceInfo, rev: i64, initial_end: bool) -> Value {
    let mut meta = json!({"resourceVersion": rev.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    json!({"kind": res.kind, "apiVersion": res.api_version(), "metadata": meta})
}

/// Starts a watch; returns a channel of encoded event lines. `render` converts each
/// object for output (`None`: as it is). Lines of watches without selectors and
/// without `render` come from `shared`.
pub async fn start(
    objects: &Objects,
    res: &'static ResourceInfo,
    ns: Option<&str>,
    q: &HashMap<String, String>,
    sel: Selectors,
    render: Render,
    shared: std::sync::Arc<SharedLines>,
) -> Result<mpsc::Receiver<Result<Bytes, Infallible>>, ApiError> {
    let prefix = res.namespace_prefix(ns);
    let rv = q.get("resourceVersion").cloned().unwrap_or_default();
    let send_initial = q.get("sendInitialEvents").map(|v| v == "true");
    let bookmarks = flag(q, "allowWatchBookmarks");
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs);
    let store = objects.store().clone();
    let mut initial = Vec::new();
    let start_rev;
    if rv.is_empty() || rv == "0" || send_initial == Some(true) {
        // Start with the current state as synthetic ADDED events.
        let list = store.list(&prefix, ListOptions::default()).await?;
        start_rev = list.revision;
        for kv in &list.items {
            let obj = decode(kv)?;
            if sel.matches(&obj) {
                initial.push(obj);
            }
        }
        if send_initial == Some(false) {
            initial.clear();
        }
    } else {
        start_rev = rv
            .parse()
            .map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv}")))?;
    }
    let render_is_identity = render.is_none();
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(256);
    let stream = match store.watch(&prefix, start_rev).await {
        Ok(s) => s,
        Err(skiff_store::Error::Compacted { requested, compacted }) => {
            // Upstream answers 200 and a single ERROR event carrying 410 Expired.
            let status = ApiError::expired(format!("too old resource version: {requested} ({compacted})")).to_status();
            let _ = tx.send(Ok(line("ERROR", &status))).await;
            return Ok(rx);
        }
        Err(e) => return Err(e.into()),
    };
    let render = move |obj: Value| match &render {
        Some(r) => r(obj),
        None => obj,
    };
    let shareable = render_is_identity && sel.is_empty();
    tokio::spawn(async move {
        let mut stream = stream;
        for obj in initial {
            if tx.send(Ok(line("ADDED", &render(obj)))).await.is_err() {
                return;
            }
        }
        let mut last_rev = start_rev;
        if send_initial == Some(true)
            && bookmarks
            && tx
                .send(Ok(line("BOOKMARK", &bookmark(res, last_rev, true))))
                .await
                .is_err()
        {
            return;
        }
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        let mut ticker = tokio::time::interval(BOOKMARK_INTERVAL);
        ticker.tick().await;
        loop {
            let sleep_until = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => futures::future::pending().await,
                }
            };
            tokio::select! {
                _ = sleep_until => return,
                _ = tx.closed() => return,
                _ = ticker.tick() => {
                    if bookmarks && tx.send(Ok(line("BOOKMARK", &bookmark(res, last_rev, false)))).await.is_err() {
                        return;
                    }
                }
                ev = stream.next() => {
                    let Some(ev) = ev else { return };
                    let ev = match ev {
                        Ok(ev) => ev,
                        Err(e) => {
                            let status = ApiError::from(e).to_status();
                            let _ = tx.send(Ok(line("ERROR", &status))).await;
                            return;
                        }
                    };
                    last_rev = ev.revision();
                    if shareable {
                        let kind = match ev.kind {
                            EventKind::Created => "ADDED",
                            EventKind::Updated => "MODIFIED",
                            EventKind::Deleted => "DELETED",
                        };
                        let encoded = shared.get_or_encode(last_rev, &ev.kv.key, || {
                            let mut obj = decode(&ev.kv).ok()?;
                            if ev.kind == EventKind::Deleted {
                                deleted_at(&mut obj, last_rev);
                            }
                            Some(line(kind, &obj))
                        });
                        if let Some(encoded) = encoded
                            && tx.send(Ok(encoded)).await.is_err()
                        {
                            return;
                        }
                        continue;
                    }
                    let Ok(mut new) = decode(&ev.kv) else { continue };
                    // The previous version matters only to decide whether it matched
                    // the selectors; without selectors everything matches.
                    let everything = sel.is_empty();
                    let old = if everything {
                        None
                    } else {
                        ev.prev.as_ref().and_then(|kv| decode(kv).ok())
                    };
                    let out = match ev.kind {
                        EventKind::Created => sel.matches(&new).then_some("ADDED"),
                        EventKind::Updated => {
                            let was = everything || old.as_ref().is_some_and(|o| sel.matches(o));
                            match (was, sel.matches(&new)) {
                                (true, true) => Some("MODIFIED"),
                                (false, true) => Some("ADDED"),
                                (true, false) => Some("DELETED"),
                                (false, false) => None,
                            }
                        }
                        EventKind::Deleted => {
                            deleted_at(&mut new, ev.revision());
                            (sel.matches(&new) || old.as_ref().is_some_and(|o| sel.matches(o))).then_some("DELETED")
                        }
                    };
                    if let Some(kind) = out
                        && tx.send(Ok(line(kind, &render(new)))).await.is_err() {
                            return;
                        }
                }
            }
        }
    });
    Ok(rx)
}
