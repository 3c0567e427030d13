//! The root CA publisher against a real apiserver: every namespace gets
//! `kube-root-ca.crt` holding the cluster CA, and it comes back when deleted or
//! edited.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use support::{ControlPlane, eventually};

const NAME: &str = "kube-root-ca.crt";
const DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";

async fn published(api: &Api<ConfigMap>, ca: &str) -> Option<ConfigMap> {
    let cm = api.get_opt(NAME).await.ok()??;
    let data = cm.data.clone()?;
    let described = cm
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("kubernetes.io/description"))
        .is_some_and(|d| d == DESCRIPTION);
    (data.len() == 1 && data.get("ca.crt").map(String::as_str) == Some(ca) && described).then_some(cm)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_namespace_gets_the_cluster_ca_and_keeps_it() {
    let cp = ControlPlane::start().await;
    cp.start_controllers(cp.shutdown.child_token());
    let ca = cp.ca_pem.clone();
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"));
    let wait = Duration::from_secs(30);

    for ns in ["default", "kube-system", "kube-public"] {
        let api: Api<ConfigMap> = Api::namespaced(cp.client.clone(), ns);
        eventually(&format!("{NAME} in {ns}"), wait, || published(&api, &ca)).await;
    }

    let nss: Api<Namespace> = Api::all(cp.client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "team-a"}})).unwrap();
    nss.create(&PostParams::default(), &ns).await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(cp.client.clone(), "team-a");
    let first = eventually("kube-root-ca.crt in a new namespace", wait, || published(&api, &ca)).await;

    // Deleted: recreated (a new object).
    api.delete(NAME, &DeleteParams::default()).await.unwrap();
    let again = eventually("kube-root-ca.crt recreated", wait, || published(&api, &ca)).await;
    assert_ne!(again.metadata.uid, first.metadata.uid);

    // Edited: the data and the description are put back; other annotations stay.
    api.patch(
        NAME,
        &PatchParams::default(),
        &Patch::Merge(json!({
            "metadata": {"annotations": {"kubernetes.io/description": null, "team": "a"}},
            "data": {"ca.crt": "tampered", "extra": "x"}
        })),
    )
    .await
    .unwrap();
    let fixed = eventually("kube-root-ca.crt fixed", wait, || published(&api, &ca)).await;
    assert_eq!(fixed.metadata.annotations.unwrap()["team"], "a");
}
