//! Garbage collector (pkg/controller/garbagecollector): deletes dependents whose
//! owners are gone (background propagation), and carries out `foregroundDeletion`
//! and `orphan` finalizers on owners being deleted.
//!
//! Candidates come from watch caches of the tracked kinds; before deleting, the
//! absence of every owner is confirmed with a live read, as upstream's GC does, so a
//! lagging cache never deletes an object whose owner exists.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::StreamExt;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, Preconditions,
    PropagationPolicy,
};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Kinds whose objects are tracked as owners and dependents.
pub fn tracked() -> Vec<ApiResource> {
    [
        ("apps", "v1", "Deployment", "deployments"),
        ("apps", "v1", "ReplicaSet", "replicasets"),
        ("", "v1", "Pod", "pods"),
    ]
    .iter()
    .map(|(g, v, k, p)| ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(g, v, k), p))
    .collect()
}

/// What the collector should do with one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Leave it alone.
    Keep,
    /// Its owners are (probably) all gone: confirm and delete it.
    DeleteIfOwnersGone,
}

/// Decides on a dependent from the set of owner uids known to exist.
pub fn decide(owner_uids: &[String], known: &HashSet<String>) -> Decision {
    if owner_uids.is_empty() || owner_uids.iter().any(|u| known.contains(u)) {
        Decision::Keep
    } else {
        Decision::DeleteIfOwnersGone
    }
}

struct Tracked {
    ar: ApiResource,
    store: reflector::Store<DynamicObject>,
}

fn api_for(client: &kube::Client, ar: &ApiResource, ns: Option<&str>) -> Api<DynamicObject> {
    match ns {
        Some(ns) => Api::namespaced_with(client.clone(), ns, ar),
        None => Api::all_with(client.clone(), ar),
    }
}

async fn owner_exists(
    client: &kube::Client,
    kinds: &[Tracked],
    ns: Option<&str>,
    r: &k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference,
) -> bool {
    let Some(t) = kinds
        .iter()
        .find(|t| t.ar.kind == r.kind && t.ar.api_version == r.api_version)
    else {
        // Owners of kinds we do not track are assumed to exist.
        return true;
    };
    match api_for(client, &t.ar, ns).get_opt(&r.name).await {
        Ok(Some(o)) => o.metadata.uid.as_deref() == Some(r.uid.as_str()),
        Ok(None) => false,
        Err(_) => true,
    }
}

async fn remove_finalizer(client: &kube::Client, ar: &ApiResource, obj: &DynamicObject, finalizer: &str) {
    let remaining: Vec<String> = obj
        .metadata
        .finalizers
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|f| f != finalizer)
        .collect();
    let patch = json!({"metadata": {"finalizers": remaining, "resourceVersion": obj.metadata.resource_version}});
    let name = obj.metadata.name.clone().unwrap_or_default();
    if let Err(e) = api_for(client, ar, obj.metadata.namespace.as_deref())
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        tracing::debug!(error = %e, "removing finalizer failed");
    }
}

async fn sweep(client: &kube::Client, kinds: &[Tracked]) {
    let objects: Vec<(usize, std::sync::Arc<DynamicObject>)> = kinds
        .iter()
        .enumerate()
        .flat_map(|(i, t)| t.store.state().into_iter().map(move |o| (i, o)))
        .collect();
    let known: HashSet<String> = objects.iter().filter_map(|(_, o)| o.metadata.uid.clone()).collect();
    let mut dependents: HashMap<String, Vec<(usize, std::sync::Arc<DynamicObject>)>> = HashMap::new();
    for (i, o) in &objects {
        for r in o.metadata.owner_references.iter().flatten() {
            dependents.entry(r.uid.clone()).or_default().push((*i, o.clone()));
        }
    }
    for (i, o) in &objects {
        let t = &kinds[*i];
        let ns = o.metadata.namespace.as_deref();
        let name = o.metadata.name.clone().unwrap_or_default();
        let uid = o.metadata.uid.clone().unwrap_or_default();
        let finalizers = o.metadata.finalizers.clone().unwrap_or_default();
        if o.metadata.deletion_timestamp.is_some() {
            let deps = dependents.get(&uid).cloned().unwrap_or_default();
            if finalizers.iter().any(|f| f == "foregroundDeletion") {
                // Delete blocking dependents first; the owner goes when none remain.
                for (j, dep) in &deps {
                    if dep.metadata.deletion_timestamp.is_none() {
                        let dp = DeleteParams {
                            propagation_policy: Some(PropagationPolicy::Foreground),
                            ..Default::default()
                        };
                        let _ = api_for(client, &kinds[*j].ar, dep.metadata.namespace.as_deref())
                            .delete(dep.metadata.name.as_deref().unwrap_or_default(), &dp)
                            .await;
                    }
                }
                if deps.is_empty() {
                    remove_finalizer(client, &t.ar, o, "foregroundDeletion").await;
                }
            } else if finalizers.iter().any(|f| f == "orphan") {
                for (j, dep) in &deps {
                    let refs: Vec<_> = dep
                        .metadata
                        .owner_references
                        .clone()
                        .unwrap_or_default()
                        .into_iter()
                        .filter(|r| r.uid != uid)
                        .collect();
                    let patch = json!({"metadata": {"ownerReferences": refs}});
                    let _ = api_for(client, &kinds[*j].ar, dep.metadata.namespace.as_deref())
                        .patch(
                            dep.metadata.name.as_deref().unwrap_or_default(),
                            &PatchParams::default(),
                            &Patch::Merge(&patch),
                        )
                        .await;
                }
                remove_finalizer(client, &t.ar, o, "orphan").await;
            }
            continue;
        }
        let owners: Vec<String> = o
            .metadata
            .owner_references
            .iter()
            .flatten()
            .map(|r| r.uid.clone())
            .collect();
        if decide(&owners, &known) == Decision::Keep {
            continue;
        }
        let mut all_gone = true;
        for r in o.metadata.owner_references.iter().flatten() {
            if owner_exists(client, kinds, ns, r).await {
                all_gone = false;
                break;
            }
        }
        if all_gone {
            tracing::info!(kind = %t.ar.kind, namespace = ?ns, %name, "deleting object whose owners are gone");
            let dp = DeleteParams {
                propagation_policy: Some(PropagationPolicy::Background),
                preconditions: Some(Preconditions {
                    uid: Some(uid.clone()),
                    resource_version: None,
                }),
                ..Default::default()
            };
            let _ = api_for(client, &t.ar, ns).delete(&name, &dp).await;
        }
    }
}

/// Runs the garbage collector until `shutdown`.
pub async fn run(client: kube::Client, shutdown: CancellationToken) {
    let (wake_tx, mut wake) = mpsc::channel::<()>(1);
    let mut kinds = Vec::new();
    for ar in tracked() {
        let writer = reflector::store::Writer::<DynamicObject>::new(ar.clone());
        let store = writer.as_reader();
        let stream = watcher(
            Api::<DynamicObject>::all_with(client.clone(), &ar),
            watcher::Config::default(),
        )
        .default_backoff()
        .reflect(writer)
        .touched_objects();
        let tx = wake_tx.clone();
        let token = shutdown.clone();
        tokio::spawn(async move {
            let mut stream = stream.boxed();
            loop {
                tokio::select! {
                    _ = token.cancelled() => return,
                    item = stream.next() => match item {
                        Some(_) => { let _ = tx.try_send(()); }
                        None => return,
                    }
                }
            }
        });
        kinds.push(Tracked { ar, store });
    }
    for t in &kinds {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = t.store.wait_until_ready() => {}
        }
    }
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = wake.recv() => {}
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        sweep(&client, &kinds).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orphans_are_candidates_only_when_every_owner_is_unknown() {
        let known: HashSet<String> = ["a".to_string()].into();
        assert_eq!(decide(&[], &known), Decision::Keep);
        assert_eq!(decide(&["a".into()], &known), Decision::Keep);
        assert_eq!(decide(&["b".into(), "a".into()], &known), Decision::Keep);
        assert_eq!(decide(&["b".into()], &known), Decision::DeleteIfOwnersGone);
    }
}
