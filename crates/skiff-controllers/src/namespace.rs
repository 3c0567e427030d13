//! Namespace controller (pkg/controller/namespace): when a namespace is being deleted,
//! deletes every namespaced object in it, then removes the `kubernetes` finalizer
//! through `namespaces/{name}/finalize` so the apiserver can remove the namespace.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use tokio_util::sync::CancellationToken;

use crate::Error;

/// Namespaced resources emptied before a namespace goes away.
fn namespaced() -> Vec<ApiResource> {
    [
        ("apps", "v1", "Deployment", "deployments"),
        ("apps", "v1", "ReplicaSet", "replicasets"),
        ("", "v1", "Pod", "pods"),
        ("", "v1", "Service", "services"),
        ("", "v1", "Endpoints", "endpoints"),
        ("", "v1", "ConfigMap", "configmaps"),
        ("", "v1", "Secret", "secrets"),
        ("", "v1", "ServiceAccount", "serviceaccounts"),
        ("coordination.k8s.io", "v1", "Lease", "leases"),
        ("", "v1", "Event", "events"),
    ]
    .iter()
    .map(|(g, v, k, p)| ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(g, v, k), p))
    .collect()
}

struct Ctx {
    client: kube::Client,
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if ns.metadata.deletion_timestamp.is_none() {
        return Ok(Action::await_change());
    }
    let name = ns.metadata.name.clone().unwrap_or_default();
    let has_finalizer = ns
        .spec
        .as_ref()
        .and_then(|s| s.finalizers.as_ref())
        .is_some_and(|f| f.iter().any(|f| f == "kubernetes"));
    if !has_finalizer {
        return Ok(Action::await_change());
    }
    let mut remaining = 0;
    for ar in namespaced() {
        let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &name, &ar);
        let items = api.list(&ListParams::default()).await?.items;
        remaining += items.len();
        for o in items.iter().filter(|o| o.metadata.deletion_timestamp.is_none()) {
            let _ = api
                .delete(
                    o.metadata.name.as_deref().unwrap_or_default(),
                    &DeleteParams::background(),
                )
                .await;
        }
    }
    if remaining > 0 {
        return Ok(Action::requeue(Duration::from_secs(2)));
    }
    let mut finalized = (*ns).clone();
    if let Some(spec) = finalized.spec.as_mut() {
        spec.finalizers = Some(
            spec.finalizers
                .clone()
                .unwrap_or_default()
                .into_iter()
                .filter(|f| f != "kubernetes")
                .collect(),
        );
    }
    Api::<Namespace>::all(ctx.client.clone())
        .replace_subresource::<Namespace>("finalize", &name, &PostParams::default(), &finalized)
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
