//! Namespace controller (upstream pkg/controller/namespace): when a namespace is
//! being deleted, deletes every object of every namespaced resource the apiserver
//! serves (from discovery) in it, reports progress in the namespace's status
//! conditions, and once nothing is left removes the `kubernetes` finalizer through
//! `namespaces/{name}/finalize` so the apiserver can remove the namespace.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::Error;
use crate::discovery;

/// The finalizer this controller owns.
pub const FINALIZER: &str = "kubernetes";

struct Ctx {
    client: kube::Client,
}

/// What was found in a namespace being emptied.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Remaining {
    /// `resource.group` -> objects still present.
    pub resources: BTreeMap<String, usize>,
    /// finalizer -> objects still carrying it.
    pub finalizers: BTreeMap<String, usize>,
    /// Errors while deleting.
    pub errors: Vec<String>,
    /// Discovery failed (message).
    pub discovery_error: Option<String>,
}

fn condition(type_: &str, failing: bool, true_reason: &str, false_reason: &str, message: String, now: &str) -> Value {
    json!({"type": type_, "status": if failing {"True"} else {"False"},
        "reason": if failing {true_reason} else {false_reason}, "message": message, "lastTransitionTime": now})
}

/// The namespace status conditions upstream reports while deleting content
/// (`NamespaceDeletionDiscoveryFailure`, `NamespaceDeletionContentFailure`,
/// `NamespaceContentRemaining`, `NamespaceFinalizersRemaining`).
pub fn conditions(r: &Remaining, now: &str) -> Vec<Value> {
    let resources: Vec<String> = r
        .resources
        .iter()
        .map(|(res, n)| format!("{res} has {n} resource instances"))
        .collect();
    let finalizers: Vec<String> = r
        .finalizers
        .iter()
        .map(|(f, n)| format!("{f} in {n} resource instances"))
        .collect();
    vec![
        condition(
            "NamespaceDeletionDiscoveryFailure",
            r.discovery_error.is_some(),
            "DiscoveryFailed",
            "ResourcesDiscovered",
            r.discovery_error
                .clone()
                .map(|e| format!("Discovery failed for some groups: {e}"))
                .unwrap_or_else(|| "All resources successfully discovered".into()),
            now,
        ),
        condition(
            "NamespaceDeletionContentFailure",
            !r.errors.is_empty(),
            "ContentDeletionFailed",
            "ContentDeleted",
            if r.errors.is_empty() {
                "All content successfully deleted, may be waiting on finalization".into()
            } else {
                format!(
                    "Failed to delete all resource types, {} remaining: {}",
                    r.errors.len(),
                    r.errors.join(", ")
                )
            },
            now,
        ),
        condition(
            "NamespaceContentRemaining",
            !resources.is_empty(),
            "SomeResourcesRemain",
            "ContentRemoved",
            if resources.is_empty() {
                "All content successfully removed".into()
            } else {
                format!("Some resources are remaining: {}", resources.join(", "))
            },
            now,
        ),
        condition(
            "NamespaceFinalizersRemaining",
            !finalizers.is_empty(),
            "SomeFinalizersRemain",
            "ContentHasNoFinalizers",
            if finalizers.is_empty() {
                "All content-preserving finalizers finished".into()
            } else {
                format!(
                    "Some content in the namespace has finalizers remaining: {}",
                    finalizers.join(", ")
                )
            },
            now,
        ),
    ]
}

/// Deletes everything in `ns`; reports what is still there.
async fn empty_namespace(client: &kube::Client, ns: &str) -> Remaining {
    let mut r = Remaining::default();
    let served = match discovery::served(client, false).await {
        Ok(s) => s,
        Err(e) => {
            r.discovery_error = Some(e.to_string());
            return r;
        }
    };
    for s in served.into_iter().filter(|s| s.namespaced) {
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &s.ar);
        let items = match api.list(&ListParams::default()).await {
            Ok(l) => l.items,
            Err(e) => {
                r.errors.push(format!("{}.{}: {e}", s.ar.plural, s.ar.group));
                continue;
            }
        };
        if items.is_empty() {
            continue;
        }
        r.resources
            .insert(format!("{}.{}", s.ar.plural, s.ar.group), items.len());
        for o in &items {
            for f in o.metadata.finalizers.iter().flatten() {
                *r.finalizers.entry(f.clone()).or_default() += 1;
            }
            if o.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let name = o.metadata.name.clone().unwrap_or_default();
            match api.delete(&name, &DeleteParams::background()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => r.errors.push(format!("{}.{} {name}: {e}", s.ar.plural, s.ar.group)),
            }
        }
    }
    r
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if ns.metadata.deletion_timestamp.is_none() {
        return Ok(Action::await_change());
    }
    let name = ns.metadata.name.clone().unwrap_or_default();
    let finalizers = ns.spec.as_ref().and_then(|s| s.finalizers.clone()).unwrap_or_default();
    if !finalizers.iter().any(|f| f == FINALIZER) {
        return Ok(Action::await_change());
    }
    let remaining = empty_namespace(&ctx.client, &name).await;
    let api: Api<Namespace> = Api::all(ctx.client.clone());
    let conds = conditions(&remaining, &skiff_api::events::now_string());
    let current: Vec<Value> = ns
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .map(|c| c.iter().filter_map(|c| serde_json::to_value(c).ok()).collect())
        .unwrap_or_default();
    let same = |a: &Value, b: &Value| ["type", "status", "reason", "message"].iter().all(|k| a[k] == b[k]);
    let unchanged = current.len() == conds.len() && current.iter().zip(&conds).all(|(a, b)| same(a, b));
    if !unchanged
        && let Err(e) = api
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"conditions": conds}})),
            )
            .await
    {
        tracing::debug!(error = %e, namespace = %name, "updating namespace conditions failed");
    }
    if !remaining.resources.is_empty() || !remaining.errors.is_empty() || remaining.discovery_error.is_some() {
        return Ok(Action::requeue(Duration::from_secs(2)));
    }
    let mut finalized = api.get(&name).await?;
    if let Some(spec) = finalized.spec.as_mut() {
        spec.finalizers = Some(finalizers.into_iter().filter(|f| f != FINALIZER).collect());
    }
    api.replace_subresource::<Namespace>("finalize", &name, &PostParams::default(), &finalized)
        .await?;
    Ok(Action::await_change())
}

fn error_policy(_ns: Arc<Namespace>, e: &Error, _ctx: Arc<Ctx>) -> Action {
    tracing::warn!(error = %e, "namespace sync failed");
    Action::requeue(Duration::from_secs(2))
}

/// Runs the namespace controller until `shutdown`.
pub async fn run(client: kube::Client, shutdown: CancellationToken) {
    let ctx = Arc::new(Ctx { client: client.clone() });
    Controller::new(Api::<Namespace>::all(client), watcher::Config::default())
        .graceful_shutdown_on(async move { shutdown.cancelled().await })
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {})
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_report_what_remains_like_upstream() {
        let r = Remaining {
            resources: [("pods.".to_string(), 2), ("replicasets.apps".to_string(), 1)].into(),
            finalizers: [("foregroundDeletion".to_string(), 1)].into(),
            ..Default::default()
        };
        let c = conditions(&r, "2026-01-01T00:00:00Z");
        assert_eq!(c[0]["status"], "False");
        assert_eq!(c[2]["status"], "True");
        assert_eq!(
            c[2]["message"],
            "Some resources are remaining: pods. has 2 resource instances, replicasets.apps has 1 resource instances"
        );
        assert_eq!(
            c[3]["message"],
            "Some content in the namespace has finalizers remaining: foregroundDeletion in 1 resource instances"
        );
        let done = conditions(&Remaining::default(), "2026-01-01T00:00:00Z");
        assert!(done.iter().all(|c| c["status"] == "False"));
    }
}
