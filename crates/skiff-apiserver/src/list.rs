//! LIST: selectors, `limit`/`continue` pagination, `resourceVersion` semantics,
//! and `Table` output.

use std::collections::HashMap;

use base64::Engine;
use serde_json::{Value, json};
use skiff_api::registry::ResourceInfo;
use skiff_api::selector::{FieldSelector, LabelSelector};
use skiff_store::ListOptions;

use crate::objects::{Objects, decode};
use crate::status::ApiError;

/// Label and field selectors of a request.
#[derive(Debug, Clone, Default)]
pub struct Selectors {
    /// `labelSelector`.
    pub label: LabelSelector,
    /// `fieldSelector`.
    pub field: FieldSelector,
}

impl Selectors {
    /// Parses `labelSelector` and `fieldSelector` (400 BadRequest when malformed).
    pub fn from_query(q: &HashMap<String, String>) -> Result<Self, ApiError> {
        let label = LabelSelector::parse(q.get("labelSelector").map(String::as_str).unwrap_or(""))
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let field = FieldSelector::parse(q.get("fieldSelector").map(String::as_str).unwrap_or(""))
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        Ok(Self { label, field })
    }

    /// Whether an object matches both selectors.
    pub fn matches(&self, obj: &Value) -> bool {
        self.label.matches_object(obj) && self.field.matches_object(obj)
    }

    /// Whether both selectors are empty.
    pub fn is_empty(&self) -> bool {
        self.label.is_empty() && self.field.is_empty()
    }
}

fn encode_continue(rev: i64, key: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json!({"rv": rev, "start": key}).to_string())
}

fn decode_continue(token: &str) -> Result<(i64, String), ApiError> {
    let bad = || ApiError::bad_request("invalid continue token");
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    Ok((
        v["rv"].as_i64().ok_or_else(bad)?,
        v["start"].as_str().ok_or_else(bad)?.to_string(),
    ))
}

/// The result of a list: matching objects, the list's resourceVersion and continue token.
pub struct Listed {
    /// Matching objects, in key order.
    pub items: Vec<Value>,
    /// The revision the list was served at.
    pub revision: i64,
    /// Continue token when more items remain.
    pub continue_token: Option<String>,
    /// Items remaining after this page (only known without selectors).
    pub remaining: Option<usize>,
}

/// Lists `res` in `ns` (all namespaces for `None`) per the query.
pub async fn list(
    objects: &Objects,
    res: &ResourceInfo,
    ns: Option<&str>,
    q: &HashMap<String, String>,
    sel: &Selectors,
) -> Result<Listed, ApiError> {
    let limit = q.get("limit").and_then(|l| l.parse::<usize>().ok()).filter(|l| *l > 0);
    let mut opts = ListOptions::default();
    if let Some(token) = q.get("continue").filter(|t| !t.is_empty()) {
        let (rev, start) = decode_continue(token)?;
        opts.revision = Some(rev);
        opts.start_after = Some(start);
    } else if let Some(rv) = q.get("resourceVersion").filter(|v| !v.is_empty() && *v != "0") {
        let rev: i64 = rv
            .parse()
            .map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv}")))?;
        if q.get("resourceVersionMatch").map(String::as_str) == Some("Exact") {
            opts.revision = Some(rev);
        } else {
            // NotOlderThan (the default for a set resourceVersion): the latest state is
            // never older; a revision from the future is an error.
            let current = objects.store().current_revision().await?;
            if rev > current {
                return Err(skiff_store::Error::FutureRevision {
                    requested: rev,
                    current,
                }
                .into());
            }
        }
    }
    let prefix = res.namespace_prefix(ns);
    let mut items = Vec::new();
    let mut revision;
    let mut continue_token = None;
    let mut remaining = None;
    // Read pages from the store until the page is full of matches.
    loop {
        let page = objects
            .store()
            .list(
                &prefix,
                ListOptions {
                    limit: limit.map(|l| l.max(64)),
                    ..opts.clone()
                },
            )
            .await?;
        revision = page.revision;
        let mut last_key = None;
        for kv in &page.items {
            last_key = Some(kv.key.clone());
            let obj = decode(kv)?;
            if sel.matches(&obj) {
                items.push(obj);
                if limit.is_some_and(|l| items.len() >= l) {
                    break;
                }
            }
        }
        let consumed_all = last_key.as_ref() == page.items.last().map(|kv| &kv.key);
        let more = !consumed_all || page.remaining > 0;
        if limit.is_some_and(|l| items.len() >= l) {
            if more {
                continue_token = last_key.map(|k| encode_continue(revision, &k));
            }
            break;
        }
        if !more || limit.is_none() {
            break;
        }
        opts.revision = Some(revision);
        opts.start_after = last_key;
    }
    if continue_token.is_some() && sel.is_empty() {
        // Count what is left exactly (cheap for the embedded engine's index).
        let start = decode_continue(continue_token.as_deref().unwrap_or_default())?.1;
        let rest = objects
            .store()
            .list(
                &prefix,
                ListOptions {
                    revision: Some(revision),
                    start_after: Some(start),
                    limit: Some(1),
                },
            )
            .await?;
        remaining = Some(rest.items.len() + rest.remaining);
    }
    Ok(Listed {
        items,
        revision,
        continue_token,
        remaining,
    })
}

/// The list object (`PodList` etc.).
pub fn list_object(res: &ResourceInfo, l: Listed) -> Value {
    json!({"kind": res.list_kind(), "apiVersion": res.api_version(), "metadata": list_meta(&l), "items": l.items})
}

/// `ListMeta` of a list result.
pub fn list_meta(l: &Listed) -> Value {
    let mut m = json!({"resourceVersion": l.revision.to_string()});
    if let Some(c) = &l.continue_token {
        m["continue"] = json!(c);
    }
    if let Some(r) = l.remaining {
        m["remainingItemCount"] = json!(r);
    }
    m
}
