//! The ServiceAccount admission step for pod creation (upstream
//! `plugin/pkg/admission/serviceaccount`): every new pod runs as a ServiceAccount
//! that exists, and, unless automounting is switched off, gets the projected
//! `kube-api-access-*` volume (a bound token, the cluster CA and the namespace)
//! mounted at [`TOKEN_MOUNT_PATH`] in each of its containers, which is what
//! in-cluster clients (client-go's `rest.InClusterConfig`, the Python client's
//! `load_incluster_config`, kube-rs `Config::incluster`) read.
//!
//! Only creation is mutated, as upstream; mirror pods (annotation
//! [`MIRROR_POD_ANNOTATION`]) are left alone.

use std::time::Duration;

use serde_json::{Value, json};
use skiff_api::registry::{self, ResourceInfo};

use crate::objects::{Objects, generate_name};
use crate::status::ApiError;

/// The ServiceAccount a pod that names none runs as.
pub const DEFAULT_SERVICE_ACCOUNT: &str = "default";
/// Where the token volume is mounted in every container (upstream
/// `DefaultAPITokenMountPath`).
pub const TOKEN_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The prefix of the token volume's name; five random characters follow.
pub const TOKEN_VOLUME_PREFIX: &str = "kube-api-access-";
/// The lifetime the token projection asks for (seconds; upstream
/// `WarnOnlyBoundTokenExpirationSeconds`, one hour plus seven seconds).
pub const TOKEN_EXPIRATION_SECONDS: i64 = 3607;
/// The ConfigMap holding the cluster CA in every namespace.
pub const ROOT_CA_CONFIGMAP: &str = "kube-root-ca.crt";
/// The annotation marking a mirror pod (a static pod's API mirror).
pub const MIRROR_POD_ANNOTATION: &str = "kubernetes.io/config.mirror";
/// How many times the `default` ServiceAccount is looked up before the pod is
/// rejected: the ServiceAccount controller creates it shortly after its namespace.
/// Upstream tries ten times 100–200 ms apart; Skiff allows a longer window (about
/// ten seconds) because its controller manager shares the machine with the
/// containers being started.
const DEFAULT_SA_ATTEMPTS: u32 = 50;
/// Pause between two lookups of the `default` ServiceAccount.
const RETRY_INTERVAL: Duration = Duration::from_millis(200);

fn pods() -> &'static ResourceInfo {
    registry::lookup("", "v1", "pods").expect("pods are served")
}

fn service_accounts() -> &'static ResourceInfo {
    registry::lookup("", "v1", "serviceaccounts").expect("serviceaccounts are served")
}

/// The projected volume source upstream's `TokenVolumeSource` builds: a
/// serviceAccountToken (`token`, [`TOKEN_EXPIRATION_SECONDS`]), the `ca.crt` key
/// of [`ROOT_CA_CONFIGMAP`] and the pod's namespace from the downward API, with
/// `defaultMode` 0644 (420) spelled out.
pub fn token_volume_source() -> Value {
    json!({
        "defaultMode": 420,
        "sources": [
            {"serviceAccountToken": {"expirationSeconds": TOKEN_EXPIRATION_SECONDS, "path": "token"}},
            {"configMap": {"name": ROOT_CA_CONFIGMAP, "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [
                {"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}
            ]}}
        ]
    })
}

/// Whether the token is mounted: the pod's `automountServiceAccountToken` wins,
/// then the ServiceAccount's; both unset means yes (upstream `shouldAutomount`).
pub fn should_automount(sa: &Value, pod: &Value) -> bool {
    pod.pointer("/spec/automountServiceAccountToken")
        .and_then(Value::as_bool)
        .or_else(|| sa.get("automountServiceAccountToken").and_then(Value::as_bool))
        .unwrap_or(true)
}

/// Adds the token volume and its read-only mount at [`TOKEN_MOUNT_PATH`] to every
/// init container and container that does not already mount something there
/// (upstream `mountServiceAccountToken`). A volume named `kube-api-access-*`
/// already in the pod is reused; otherwise one is added, named with five random
/// characters, when at least one container needs it.
pub fn mount_token(pod: &mut Value) {
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let existing = spec
        .get("volumes")
        .and_then(Value::as_array)
        .and_then(|vs| {
            vs.iter()
                .filter_map(|v| v.get("name").and_then(Value::as_str))
                .find(|n| n.starts_with(TOKEN_VOLUME_PREFIX))
        })
        .map(str::to_string);
    let has_volume = existing.is_some();
    let volume_name = existing.unwrap_or_else(|| generate_name(TOKEN_VOLUME_PREFIX));
    let mount = json!({"name": volume_name, "readOnly": true, "mountPath": TOKEN_MOUNT_PATH});
    let mut needs_volume = false;
    for list in ["initContainers", "containers"] {
        let Some(containers) = spec.get_mut(list).and_then(Value::as_array_mut) else {
            continue;
        };
        for c in containers {
            let Some(c) = c.as_object_mut() else { continue };
            let mounts = c.entry("volumeMounts").or_insert_with(|| json!([]));
            if !mounts.is_array() {
                *mounts = json!([]);
            }
            let mounts = mounts.as_array_mut().expect("an array");
            let taken = mounts
                .iter()
                .any(|m| m.get("mountPath").and_then(Value::as_str) == Some(TOKEN_MOUNT_PATH));
            if !taken {
                mounts.push(mount.clone());
                needs_volume = true;
            }
        }
    }
    if needs_volume && !has_volume {
        let volumes = spec.entry("volumes").or_insert_with(|| json!([]));
        if !volumes.is_array() {
            *volumes = json!([]);
        }
        volumes
            .as_array_mut()
            .expect("an array")
            .push(json!({"name": volume_name, "projected": token_volume_source()}));
    }
}

/// Looks the ServiceAccount up, retrying for a while when it is the namespace's
/// `default` one (upstream `getServiceAccount`); `Ok(None)` when it does not exist.
async fn lookup(objects: &Objects, ns: &str, name: &str) -> Result<Option<Value>, ApiError> {
    let attempts = if name == DEFAULT_SERVICE_ACCOUNT {
        DEFAULT_SA_ATTEMPTS
    } else {
        1
    };
    for attempt in 0..attempts {
        if attempt > 0 {
            tokio::time::sleep(RETRY_INTERVAL).await;
        }
        match objects.get(service_accounts(), Some(ns), name).await {
            Ok(sa) => return Ok(Some(sa)),
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// Admits a pod being created in `ns`: defaults `spec.serviceAccountName` (from the
/// deprecated `spec.serviceAccount`, else [`DEFAULT_SERVICE_ACCOUNT`]), requires the
/// ServiceAccount to exist, mounts the token volume when [`should_automount`], and
/// copies the ServiceAccount's `imagePullSecrets` into a pod that lists none.
///
/// Errors: 403 Forbidden `pods "<name>" is forbidden: error looking up service
/// account <ns>/<sa>: serviceaccount "<sa>" not found` when the ServiceAccount does
/// not exist (the `default` one is waited for, see the module docs); store errors.
pub async fn admit(objects: &Objects, ns: &str, pod: &mut Value) -> Result<(), ApiError> {
    if pod
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .is_some_and(|a| a.contains_key(MIRROR_POD_ANNOTATION))
    {
        return Ok(());
    }
    if !pod.get("spec").is_some_and(Value::is_object) {
        return Ok(());
    }
    let named = |k: &str, pod: &Value| {
        pod.pointer(&format!("/spec/{k}"))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let sa_name = named("serviceAccountName", pod)
        .or_else(|| named("serviceAccount", pod))
        .unwrap_or_else(|| DEFAULT_SERVICE_ACCOUNT.to_string());
    pod["spec"]["serviceAccountName"] = json!(sa_name);
    let Some(sa) = lookup(objects, ns, &sa_name).await? else {
        let meta = pod.get("metadata");
        let pod_name = meta
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .or_else(|| meta.and_then(|m| m.get("generateName")).and_then(Value::as_str))
            .unwrap_or_default()
            .to_string();
        return Err(ApiError {
            details: Some(json!({"name": pod_name, "kind": pods().plural})),
            ..ApiError::forbidden(format!(
                "{} \"{pod_name}\" is forbidden: error looking up service account {ns}/{sa_name}: serviceaccount \"{sa_name}\" not found",
                pods().plural
            ))
        });
    };
    if should_automount(&sa, pod) {
        mount_token(pod);
    }
    let pull_secrets_empty = pod
        .pointer("/spec/imagePullSecrets")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty);
    if pull_secrets_empty
        && let Some(secrets) = sa
            .get("imagePullSecrets")
            .and_then(Value::as_array)
            .filter(|s| !s.is_empty())
    {
        let refs: Vec<Value> = secrets
            .iter()
            .map(|s| json!({"name": s.get("name").cloned().unwrap_or(json!(""))}))
            .collect();
        pod["spec"]["imagePullSecrets"] = json!(refs);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Value {
        json!({"spec": {
            "initContainers": [{"name": "init", "image": "busybox"}],
            "containers": [
                {"name": "a", "image": "busybox"},
                {"name": "b", "image": "busybox",
                 "volumeMounts": [{"name": "own", "mountPath": TOKEN_MOUNT_PATH}]}
            ],
            "volumes": [{"name": "own", "emptyDir": {}}]
        }})
    }

    #[test]
    fn the_token_volume_is_added_once_and_mounted_where_free() {
        let mut p = pod();
        mount_token(&mut p);
        let vols = p["spec"]["volumes"].as_array().unwrap();
        assert_eq!(vols.len(), 2);
        let name = vols[1]["name"].as_str().unwrap();
        assert!(name.starts_with(TOKEN_VOLUME_PREFIX) && name.len() == TOKEN_VOLUME_PREFIX.len() + 5);
        assert_eq!(vols[1]["projected"], token_volume_source());
        let want = json!([{"name": name, "readOnly": true, "mountPath": TOKEN_MOUNT_PATH}]);
        assert_eq!(p["spec"]["initContainers"][0]["volumeMounts"], want);
        assert_eq!(p["spec"]["containers"][0]["volumeMounts"], want);
        assert_eq!(
            p["spec"]["containers"][1]["volumeMounts"],
            json!([{"name": "own", "mountPath": TOKEN_MOUNT_PATH}]),
            "a container that mounts the path itself keeps its own mount"
        );
        // Admitting again (e.g. a pod copied from another) reuses the volume.
        let before = p.clone();
        mount_token(&mut p);
        assert_eq!(p, before);
    }

    #[test]
    fn no_volume_when_every_container_mounts_the_path() {
        let mut p = json!({"spec": {"containers": [
            {"name": "b", "volumeMounts": [{"name": "own", "mountPath": TOKEN_MOUNT_PATH}]}
        ], "volumes": [{"name": "own", "emptyDir": {}}]}});
        mount_token(&mut p);
        assert_eq!(p["spec"]["volumes"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn the_pod_setting_wins_over_the_service_account() {
        let sa_off = json!({"automountServiceAccountToken": false});
        let sa_on = json!({"automountServiceAccountToken": true});
        let unset = json!({"spec": {}});
        let pod_off = json!({"spec": {"automountServiceAccountToken": false}});
        let pod_on = json!({"spec": {"automountServiceAccountToken": true}});
        assert!(should_automount(&json!({}), &unset));
        assert!(!should_automount(&sa_off, &unset));
        assert!(should_automount(&sa_off, &pod_on));
        assert!(!should_automount(&sa_on, &pod_off));
    }
}
