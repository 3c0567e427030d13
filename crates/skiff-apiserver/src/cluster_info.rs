//! The `kube-public/cluster-info` ConfigMap new nodes discover the cluster from, as
//! kubeadm publishes it (<https://kubernetes.io/docs/reference/access-authn-authz/bootstrap-tokens/#configmap-signing>):
//! its `kubeconfig` key holds a kubeconfig with one cluster (the API server URL and
//! the CA as `certificate-authority-data`) and no users. Anyone may read it
//! (`kubeadm:bootstrap-signer-clusterinfo`); the bootstrap signer controller adds a
//! `jws-kubeconfig-<token-id>` signature per signing token so that a joining node can
//! check it with its token.

use base64::Engine;
use serde_json::{Value, json};
use skiff_api::registry;

use crate::objects::{FieldValidation, Objects, WriteOptions};
use crate::status::ApiError;

/// The namespace of the ConfigMap.
pub const NAMESPACE: &str = "kube-public";
/// The name of the ConfigMap.
pub const NAME: &str = "cluster-info";
/// The data key of the kubeconfig.
pub const KUBECONFIG_KEY: &str = "kubeconfig";

/// The kubeconfig published in cluster-info: `server` (e.g. `https://10.0.0.1:6443`)
/// and the CA certificate (PEM).
pub fn kubeconfig(server: &str, ca_pem: &str) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    format!(
        "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: {ca}\n    server: {server}\n  name: \"\"\ncontexts: null\ncurrent-context: \"\"\nkind: Config\npreferences: {{}}\nusers: null\n"
    )
}

/// Creates cluster-info when it is missing. An existing one is left alone unless it
/// no longer names `ca_pem` (the CA was replaced), so that with several servers the
/// first one's URL stays published and signatures stay valid.
pub async fn ensure(objects: &Objects, server: &str, ca_pem: &str) -> Result<(), ApiError> {
    let res = registry::lookup("", "v1", "configmaps").expect("configmaps are served");
    let wanted = kubeconfig(server, ca_pem);
    let opts = WriteOptions {
        dry_run: false,
        field_validation: FieldValidation::Strict,
    };
    let obj = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": NAME, "namespace": NAMESPACE}, "data": {KUBECONFIG_KEY: wanted}});
    match objects.create(res, Some(NAMESPACE), obj, opts).await {
        Ok(_) => return Ok(()),
        Err(e) if e.code == 409 => {}
        Err(e) => return Err(e),
    }
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    objects
        .mutate(res, Some(NAMESPACE), NAME, None, false, |cur| {
            let current = cur
                .pointer(&format!("/data/{KUBECONFIG_KEY}"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            let mut next = cur.clone();
            if !current.contains(&ca) {
                // New contents: the old signatures no longer apply.
                next["data"] = json!({KUBECONFIG_KEY: wanted});
            }
            Ok(next)
        })
        .await?;
    Ok(())
}
