//! The CustomResourceDefinition lifecycle in the apiserver (upstream's
//! apiextensions-apiserver controllers): every stored CRD is served
//! ([`skiff_api::crd::register`]) and gets the `NamesAccepted` and `Established`
//! conditions, `acceptedNames` and `storedVersions`, plus the
//! `customresourcecleanup.apiextensions.k8s.io` finalizer. Deleting a CRD deletes
//! all its custom objects, then the finalizer is removed and the CRD disappears.
//!
//! The loop watches the store directly (it is part of the apiserver, the only
//! component that touches the store).

use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use skiff_api::registry;
use skiff_store::EventKind;
use tokio_util::sync::CancellationToken;

use crate::objects::{Objects, decode, now_rfc3339};
use crate::status::ApiError;

/// The finalizer that holds a CRD until its custom objects are deleted.
pub const CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";

fn crd_resource() -> &'static registry::ResourceInfo {
    registry::lookup("apiextensions.k8s.io", "v1", "customresourcedefinitions").expect("CRDs are served")
}

/// Registers every stored CRD; returns the revision the listing was taken at.
/// Called before the apiserver serves, so custom resources are available at once.
pub async fn load(objects: &Objects) -> Result<i64, ApiError> {
    let res = crd_resource();
    let list = objects.store().list(&res.key_prefix(), Default::default()).await?;
    for kv in &list.items {
        if let Ok(crd) = decode(kv) {
            register(&crd);
        }
    }
    Ok(list.revision)
}

fn register(crd: &Value) {
    if let Err(e) = skiff_api::crd::register(crd) {
        let name = crd
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        tracing::warn!(crd = name, error = %e, "custom resource definition is not served");
    }
}

/// Follows CRD changes from revision `after` until `shutdown`; restarts its watch
/// (relisting) when the store ends it.
pub async fn run(objects: Objects, mut after: i64, shutdown: CancellationToken) {
    let res = crd_resource();
    // Existing CRDs may still need their status or finalizer.
    if let Ok(list) = objects.store().list(&res.key_prefix(), Default::default()).await {
        for kv in &list.items {
            if let Ok(crd) = decode(kv) {
                reconcile(&objects, &crd).await;
            }
        }
    }
    loop {
        let mut watch = match objects.store().watch(&res.key_prefix(), after).await {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "watching CRDs failed; relisting");
                match load(&objects).await {
                    Ok(rev) => after = rev,
                    Err(e) => tracing::warn!(error = %e.message, "listing CRDs failed"),
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        loop {
            let ev = tokio::select! {
                _ = shutdown.cancelled() => return,
                ev = watch.next() => ev,
            };
            let Some(Ok(ev)) = ev else { break };
            after = ev.revision();
            let Ok(crd) = decode(&ev.kv) else { continue };
            if ev.kind == EventKind::Deleted {
                skiff_api::crd::unregister(&crd);
            } else {
                register(&crd);
                reconcile(&objects, &crd).await;
            }
        }
    }
}

fn condition(ty: &str, reason: &str, message: &str, now: &str) -> Value {
    json!({"type": ty, "status": "True", "reason": reason, "message": message, "lastTransitionTime": now})
}

/// Brings one CRD's finalizer and status up to date, or cleans up after it when it
/// is being deleted.
async fn reconcile(objects: &Objects, crd: &Value) {
    let res = crd_resource();
    let name = crd
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let deleting = crd.pointer("/metadata/deletionTimestamp").is_some();
    if deleting {
        if let Err(e) = delete_custom_objects(objects, crd).await {
            tracing::warn!(crd = %name, error = %e.message, "deleting custom objects failed");
            return;
        }
        skiff_api::crd::unregister(crd);
    }
    let result = objects
        .mutate(res, None, &name, None, false, |cur| {
            let mut next = cur.clone();
            let mut finalizers: Vec<Value> = next
                .pointer("/metadata/finalizers")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if deleting {
                finalizers.retain(|f| f != CLEANUP_FINALIZER);
            } else if !finalizers.iter().any(|f| f == CLEANUP_FINALIZER) {
                finalizers.push(json!(CLEANUP_FINALIZER));
            }
            next["metadata"]["finalizers"] = json!(finalizers);
            if !deleting {
                let established = next
                    .pointer("/status/conditions")
                    .and_then(Value::as_array)
                    .is_some_and(|c| c.iter().any(|c| c["type"] == "Established" && c["status"] == "True"));
                let names = next.pointer("/spec/names").cloned().unwrap_or(json!({}));
                let storage: Vec<Value> = next
                    .pointer("/spec/versions")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
                    .filter_map(|v| v.get("name").cloned())
                    .collect();
                let mut stored: Vec<Value> = next
                    .pointer("/status/storedVersions")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                for v in storage {
                    if !stored.contains(&v) {
                        stored.push(v);
                    }
                }
                if !next.get("status").is_some_and(Value::is_object) {
                    next["status"] = json!({});
                }
                if !established {
                    let now = now_rfc3339();
                    next["status"]["conditions"] = json!([
                        condition("NamesAccepted", "NoConflicts", "no conflicts found", &now),
                        condition(
                            "Established",
                            "InitialNamesAccepted",
                            "the initial names have been accepted",
                            &now
                        ),
                    ]);
                }
                next["status"]["acceptedNames"] = names;
                next["status"]["storedVersions"] = json!(stored);
            }
            Ok(next)
        })
        .await;
    if let Err(e) = result
        && e.code != 404
    {
        tracing::warn!(crd = %name, error = %e.message, "updating the CRD failed");
    }
}

/// Deletes every stored object of the CRD's resource (all versions share one
/// storage prefix).
async fn delete_custom_objects(objects: &Objects, crd: &Value) -> Result<(), ApiError> {
    let group = crd.pointer("/spec/group").and_then(Value::as_str).unwrap_or_default();
    let plural = crd
        .pointer("/spec/names/plural")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if group.is_empty() || plural.is_empty() {
        return Ok(());
    }
    let prefix = format!("/registry/{group}/{plural}/");
    let list = objects.store().list(&prefix, Default::default()).await?;
    for kv in &list.items {
        match objects.store().delete(&kv.key, None).await {
            Ok(_) | Err(skiff_store::Error::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
