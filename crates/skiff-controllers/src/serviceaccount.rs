//! ServiceAccount controller (pkg/controller/serviceaccount): every active namespace
//! has a `default` ServiceAccount; it is recreated if deleted.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::Error;

/// Name of the ServiceAccount every namespace gets.
pub const DEFAULT: &str = "default";

struct Ctx {
    client: kube::Client,
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if ns.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let name = ns.metadata.name.clone().unwrap_or_default();
    let api: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), &name);
    if api.get_opt(DEFAULT).await?.is_none() {
        let sa: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": DEFAULT, "namespace": name}}))?;
        match api.create(&PostParams::default(), &sa).await {
            Ok(_) => tracing::debug!(namespace = %name, "created the default ServiceAccount"),
            Err(kube::Error::Api(s)) if s.code == 409 || s.code == 403 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Action::await_change())
}

fn error_policy(_ns: Arc<Namespace>, e: &Error, _ctx: Arc<Ctx>) -> Action {
    tracing::warn!(error = %e, "serviceaccount sync failed");
    Action::requeue(Duration::from_secs(2))
}

/// Runs the ServiceAccount controller until `shutdown`.
pub async fn run(client: kube::Client, shutdown: CancellationToken) {
    let ctx = Arc::new(Ctx { client: client.clone() });
    Controller::new(Api::<Namespace>::all(client.clone()), watcher::Config::default())
        .watches(Api::<ServiceAccount>::all(client), watcher::Config::default(), |sa| {
            sa.metadata.namespace.map(|ns| ObjectRef::<Namespace>::new(&ns))
        })
        .graceful_shutdown_on(async move { shutdown.cancelled().await })
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {})
        .await;
}
