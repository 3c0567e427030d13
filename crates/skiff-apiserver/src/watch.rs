//! WATCH: a stream of `{"type": ..., "object": ...}` JSON lines
//! (k8s.io/apimachinery/pkg/watch, `metav1.WatchEvent`), with selectors,
//! `resourceVersion` semantics, bookmarks, `sendInitialEvents` and `timeoutSeconds`.

use std::collections::HashMap;
use std::convert::Infallible;
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

fn line(kind: &str, object: &Value) -> Bytes {
    let mut s = json!({"type": kind, "object": object}).to_string();
    s.push('\n');
    Bytes::from(s)
}

fn bookmark(res: &ResourceInfo, rev: i64, initial_end: bool) -> Value {
    let mut meta = json!({"resourceVersion": rev.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    json!({"kind": res.kind, "apiVersion": res.api_version(), "metadata": meta})
}

/// Starts a watch; returns a channel of encoded event lines. `render` converts each
/// object for output (identity, or a one-row `Table`).
pub async fn start(
    objects: &Objects,
    res: &'static ResourceInfo,
    ns: Option<&str>,
    q: &HashMap<String, String>,
    sel: Selectors,
    render: impl Fn(&Value) -> Value + Send + 'static,
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
    tokio::spawn(async move {
        let mut stream = stream;
        for obj in &initial {
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
                    let Ok(mut new) = decode(&ev.kv) else { continue };
                    let old = ev.prev.as_ref().and_then(|kv| decode(kv).ok());
                    let out = match ev.kind {
                        EventKind::Created => sel.matches(&new).then_some("ADDED"),
                        EventKind::Updated => {
                            let was = old.as_ref().is_some_and(|o| sel.matches(o));
                            match (was, sel.matches(&new)) {
                                (true, true) => Some("MODIFIED"),
                                (false, true) => Some("ADDED"),
                                (true, false) => Some("DELETED"),
                                (false, false) => None,
                            }
                        }
                        EventKind::Deleted => {
                            if let Some(m) = new.get_mut("metadata").and_then(Value::as_object_mut) {
                                m.insert("resourceVersion".into(), json!(ev.revision().to_string()));
                            }
                            (sel.matches(&new) || old.as_ref().is_some_and(|o| sel.matches(o))).then_some("DELETED")
                        }
                    };
                    if let Some(kind) = out
                        && tx.send(Ok(line(kind, &render(&new)))).await.is_err() {
                            return;
                        }
                }
            }
        }
    });
    Ok(rx)
}
