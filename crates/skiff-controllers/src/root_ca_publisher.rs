//! Root CA certificate publisher (upstream
//! `pkg/controller/certificates/rootcacertpublisher`): every namespace holds the
//! ConfigMap [`CONFIGMAP_NAME`] whose key `ca.crt` is the CA bundle clients verify
//! the apiserver with. It is created for every namespace, recreated when deleted,
//! and put back when its data or its `kubernetes.io/description` annotation is
//! edited. Pods read it through the `kube-api-access-*` projected volume.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use tokio_util::sync::CancellationToken;

use crate::Error;

/// Name of the ConfigMap published in every namespace.
pub const CONFIGMAP_NAME: &str = "kube-root-ca.crt";
/// The key holding the PEM bundle.
pub const CA_KEY: &str = "ca.crt";
/// The annotation describing the ConfigMap's purpose.
pub const DESCRIPTION_ANNOTATION: &str = "kubernetes.io/description";
/// The annotation's value, as upstream words it.
pub const DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";

struct Ctx {
    client: kube::Client,
    root_ca: String,
}

/// The ConfigMap as it should be, given the one in the namespace (if any): `None`
/// when `current` already carries exactly `{ca.crt: root_ca}` as its data and a
/// non-empty description; otherwise the object to create or to write back (other
/// annotations, labels and `binaryData` of an existing object are kept).
pub fn desired(current: Option<&ConfigMap>, namespace: &str, root_ca: &str) -> Option<ConfigMap> {
    let data = BTreeMap::from([(CA_KEY.to_string(), root_ca.to_string())]);
    let mut cm = match current {
        Some(cm) => {
            let described = cm
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(DESCRIPTION_ANNOTATION))
                .is_some_and(|d| !d.is_empty());
            if cm.data.as_ref() == Some(&data) && described {
                return None;
            }
            cm.clone()
        }
        None => {
            let mut cm = ConfigMap::default();
            cm.metadata.name = Some(CONFIGMAP_NAME.into());
            cm.metadata.namespace = Some(namespace.into());
            cm
        }
    };
    cm.data = Some(data);
    cm.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(DESCRIPTION_ANNOTATION.into(), DESCRIPTION.into());
    Some(cm)
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let active = ns
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_none_or(|p| p == "Active");
    if ns.metadata.deletion_timestamp.is_some() || !active {
        return Ok(Action::await_change());
    }
    let name = ns.metadata.name.clone().unwrap_or_default();
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &name);
    let current = api.get_opt(CONFIGMAP_NAME).await?;
    let Some(want) = desired(current.as_ref(), &name, &ctx.root_ca) else {
        return Ok(Action::await_change());
    };
    let result = if current.is_some() {
        api.replace(CONFIGMAP_NAME, &PostParams::default(), &want).await
    } else {
        api.create(&PostParams::default(), &want).await
    };
    match result {
        Ok(_) => tracing::debug!(namespace = %name, "published {CONFIGMAP_NAME}"),
        // The namespace is gone or terminating: nothing to publish into. Any other
        // refusal (e.g. a ResourceQuota on configmaps that is full or not yet
        // computed) is an error and retried, as upstream's publisher does.
        Err(kube::Error::Api(s))
            if current.is_none()
                && (s.code == 404 || (s.code == 403 && s.message.contains("because it is being terminated"))) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(Action::await_change())
}

fn error_policy(_ns: Arc<Namespace>, e: &Error, _ctx: Arc<Ctx>) -> Action {
    tracing::warn!(error = %e, "root CA publishing failed");
    Action::requeue(Duration::from_secs(2))
}

/// Runs the publisher until `shutdown`, publishing `root_ca` (PEM) into every
/// namespace. Namespaces are reconciled when they appear or change and when their
/// [`CONFIGMAP_NAME`] ConfigMap is edited or deleted.
pub async fn run(client: kube::Client, root_ca: String, shutdown: CancellationToken) {
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        root_ca,
    });
    let cms = watcher::Config::default().fields(&format!("metadata.name={CONFIGMAP_NAME}"));
    Controller::new(Api::<Namespace>::all(client.clone()), watcher::Config::default())
        .watches(Api::<ConfigMap>::all(client), cms, |cm| {
            cm.metadata.namespace.map(|ns| ObjectRef::<Namespace>::new(&ns))
        })
        .graceful_shutdown_on(async move { shutdown.cancelled().await })
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {})
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_drifted_configmap_is_rewritten() {
        let fresh = desired(None, "team", "PEM").unwrap();
        assert_eq!(fresh.metadata.name.as_deref(), Some(CONFIGMAP_NAME));
        assert_eq!(fresh.metadata.namespace.as_deref(), Some("team"));
        assert_eq!(fresh.data.as_ref().unwrap()[CA_KEY], "PEM");
        assert_eq!(
            fresh.metadata.annotations.as_ref().unwrap()[DESCRIPTION_ANNOTATION],
            DESCRIPTION
        );
        assert!(desired(Some(&fresh), "team", "PEM").is_none());

        let mut edited = fresh.clone();
        edited.data.as_mut().unwrap().insert("extra".into(), "x".into());
        edited
            .metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert("owner".into(), "me".into());
        let fixed = desired(Some(&edited), "team", "PEM").unwrap();
        assert_eq!(fixed.data, fresh.data);
        assert_eq!(fixed.metadata.annotations.as_ref().unwrap()["owner"], "me");

        let rotated = desired(Some(&fresh), "team", "NEW").unwrap();
        assert_eq!(rotated.data.unwrap()[CA_KEY], "NEW");
    }
}
